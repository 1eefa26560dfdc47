//! The current text of a document: a rope while it is edited, a plain
//! string while a small one is idle. A rope has a fixed cost of about
//! 1.3 KB, most of the memory of a small file's whole model; edits of a
//! string cost its length. So edits go to a rope, and [`TextBuf::compact`]
//! turns a small one back into a string once they are done.

use std::ops::Range;

use jumprope::JumpRopeBuf;

/// Idle texts up to this many bytes are kept as a string.
const SMALL_MAX: usize = 4096;

/// A text edited by character positions (Unicode scalar values).
#[derive(Clone, Debug)]
pub(crate) enum TextBuf {
    /// A small idle text, with its length in characters.
    Small { text: String, chars: usize },
    /// One being edited, or a large one.
    Rope(Box<JumpRopeBuf>),
}

impl Default for TextBuf {
    fn default() -> Self {
        TextBuf::Small { text: String::new(), chars: 0 }
    }
}

impl TextBuf {
    /// A buffer holding `text`.
    pub(crate) fn from_text(text: &str) -> Self {
        let mut b = TextBuf::default();
        b.insert(0, text);
        b.compact();
        b
    }

    /// Length in characters.
    pub(crate) fn len_chars(&self) -> usize {
        match self {
            TextBuf::Small { chars, .. } => *chars,
            TextBuf::Rope(r) => r.len_chars(),
        }
    }

    /// The rope, made from the string if it is one.
    fn rope(&mut self) -> &mut JumpRopeBuf {
        if let TextBuf::Small { text, .. } = self {
            let mut rope = JumpRopeBuf::new();
            rope.insert(0, text);
            *self = TextBuf::Rope(Box::new(rope));
        }
        match self {
            TextBuf::Rope(r) => r,
            TextBuf::Small { .. } => unreachable!("made a rope above"),
        }
    }

    /// Inserts `s` at character `pos` (at the end when past it).
    pub(crate) fn insert(&mut self, pos: usize, s: &str) {
        let r = self.rope();
        let len = r.len_chars();
        r.insert(pos.min(len), s);
    }

    /// Removes the characters in `range` (clamped to the text).
    pub(crate) fn remove(&mut self, range: Range<usize>) {
        let r = self.rope();
        let len = r.len_chars();
        let end = range.end.min(len);
        r.remove(range.start.min(end)..end);
    }

    /// Turns a small text into a string, holding no spare room: for a
    /// text that is done being edited for now.
    pub(crate) fn compact(&mut self) {
        match self {
            TextBuf::Small { text, .. } => text.shrink_to_fit(),
            TextBuf::Rope(r) if r.len_bytes() <= SMALL_MAX => {
                let text = r.to_string();
                let chars = r.len_chars();
                *self = TextBuf::Small { text, chars };
            }
            TextBuf::Rope(_) => {}
        }
    }
}

impl std::fmt::Display for TextBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextBuf::Small { text, .. } => f.write_str(text),
            TextBuf::Rope(r) => write!(f, "{r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An edit: insert (position, text) or remove (range).
    #[derive(Clone, Debug)]
    enum Op {
        Ins(usize, String),
        Del(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..3000, "[a-zé😀\n]{0,700}").prop_map(|(p, s)| Op::Ins(p, s)),
            (0usize..3000, 0usize..400).prop_map(|(p, n)| Op::Del(p, n)),
        ]
    }

    proptest! {
        /// Whichever form it takes, the buffer edits like a vector of
        /// characters, across switches between string and rope.
        #[test]
        fn edits_like_a_vector_of_characters(ops in proptest::collection::vec(op(), 1..40)) {
            let mut buf = TextBuf::default();
            let mut model: Vec<char> = Vec::new();
            for op in ops {
                match op {
                    Op::Ins(p, s) => {
                        let at = p.min(model.len());
                        buf.insert(p, &s);
                        model.splice(at..at, s.chars());
                    }
                    Op::Del(p, n) => {
                        let end = (p + n).min(model.len());
                        let start = p.min(end);
                        buf.remove(p..p + n);
                        model.drain(start..end);
                    }
                }
                prop_assert_eq!(buf.len_chars(), model.len());
                prop_assert_eq!(buf.to_string(), model.iter().collect::<String>());
                buf.compact();
                prop_assert_eq!(buf.len_chars(), model.len());
                prop_assert_eq!(buf.to_string(), model.iter().collect::<String>());
            }
        }
    }

    #[test]
    fn a_small_idle_text_costs_no_rope() {
        let mut b = TextBuf::from_text("a line\n");
        assert!(matches!(b, TextBuf::Small { .. }));
        b.insert(0, "x");
        assert!(matches!(b, TextBuf::Rope(_)));
        b.compact();
        assert!(matches!(b, TextBuf::Small { .. }));
        let big = TextBuf::from_text(&"x".repeat(SMALL_MAX + 1));
        assert!(matches!(big, TextBuf::Rope(_)));
    }
}
