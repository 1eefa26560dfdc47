//! From two versions of a text to the edits between them.
//!
//! A line diff (imara-diff's histogram) finds the changed hunks; inside each
//! hunk a character diff finds the smallest change, so fixing a typo in a
//! long line is a one-character edit that merges cleanly with a concurrent
//! edit elsewhere on the same line. Edits come last-first, so each position
//! is valid in the old text and after the edits before it.

use std::hash::Hash;

use fsync_core::text::Edit;
use imara_diff::intern::{InternedInput, TokenSource};
use imara_diff::sources::lines_with_terminator;
use imara_diff::{diff, Algorithm};

/// Hunks larger than this (in characters) are not refined to characters:
/// the diff would cost more than it saves.
const REFINE_MAX: usize = 20_000;

struct Chars<'a>(&'a [char]);

impl<'a> TokenSource for Chars<'a> {
    type Token = char;
    type Tokenizer = std::iter::Copied<std::slice::Iter<'a, char>>;
    fn tokenize(&self) -> Self::Tokenizer {
        self.0.iter().copied()
    }
    fn estimate_tokens(&self) -> u32 {
        self.0.len() as u32
    }
}

fn hunks<T: Eq + Hash>(
    input: &InternedInput<T>,
) -> Vec<(std::ops::Range<u32>, std::ops::Range<u32>)> {
    let mut out = Vec::new();
    diff(
        Algorithm::Histogram,
        input,
        |before: std::ops::Range<u32>, after: std::ops::Range<u32>| {
            out.push((before, after));
        },
    );
    out
}

/// How much a line diff changes from `old` to `new`: the characters of
/// the lines it deletes and inserts. Unlike the size of [`text_edits`],
/// a line replaced by another that shares characters counts whole.
pub fn line_change(old: &str, new: &str) -> usize {
    let input = InternedInput::new(lines_with_terminator(old), lines_with_terminator(new));
    let len = |tokens: &[imara_diff::intern::Token]| {
        tokens
            .iter()
            .map(|t| input.interner[*t].chars().count())
            .sum::<usize>()
    };
    hunks(&input)
        .into_iter()
        .map(|(b, a)| {
            len(&input.before[b.start as usize..b.end as usize])
                + len(&input.after[a.start as usize..a.end as usize])
        })
        .sum()
}

/// The edits turning `old` into `new`, last first; positions in Unicode
/// scalar values.
pub fn text_edits(old: &str, new: &str) -> Vec<Edit> {
    if old == new {
        return Vec::new();
    }
    let input = InternedInput::new(lines_with_terminator(old), lines_with_terminator(new));
    // Character offsets of line starts.
    let starts = |tokens: &[imara_diff::intern::Token]| {
        let mut v = Vec::with_capacity(tokens.len() + 1);
        let mut at = 0usize;
        v.push(0);
        for t in tokens {
            at += input.interner[*t].chars().count();
            v.push(at);
        }
        v
    };
    let (old_starts, new_starts) = (starts(&input.before), starts(&input.after));
    let old_chars: Vec<char> = old.chars().collect();
    let new_chars: Vec<char> = new.chars().collect();
    let mut edits = Vec::new();
    for (b, a) in hunks(&input) {
        let (ob, oe) = (old_starts[b.start as usize], old_starts[b.end as usize]);
        let (nb, ne) = (new_starts[a.start as usize], new_starts[a.end as usize]);
        let (o, n) = (&old_chars[ob..oe], &new_chars[nb..ne]);
        if o.len() + n.len() > REFINE_MAX || o.is_empty() || n.is_empty() {
            edits.push(Edit {
                pos: ob,
                del: o.len(),
                ins: n.iter().collect(),
            });
            continue;
        }
        let inner = InternedInput::new(Chars(o), Chars(n));
        for (cb, ca) in hunks(&inner) {
            edits.push(Edit {
                pos: ob + cb.start as usize,
                del: (cb.end - cb.start) as usize,
                ins: n[ca.start as usize..ca.end as usize].iter().collect(),
            });
        }
    }
    edits.reverse();
    edits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str, edits: &[Edit]) -> String {
        let mut c: Vec<char> = text.chars().collect();
        for e in edits {
            c.splice(e.pos..e.pos + e.del, e.ins.chars());
        }
        c.into_iter().collect()
    }

    #[test]
    fn small_change_in_a_long_line_is_small() {
        let old = "fn main() { println!(\"helo world\"); }\nsecond line\n";
        let new = "fn main() { println!(\"hello world\"); }\nsecond line\n";
        let e = text_edits(old, new);
        // One 'l' inserted after "hel" or "hell": either is minimal.
        assert_eq!(e.len(), 1);
        assert!(
            e[0].del == 0 && e[0].ins == "l" && (e[0].pos == 24 || e[0].pos == 25),
            "{e:?}"
        );
        assert_eq!(apply(old, &e), new);
    }

    #[test]
    fn line_change_counts_whole_lines() {
        assert_eq!(line_change("keep\ntok-61\n", "keep\ntok-117\n"), 7 + 8);
        assert_eq!(line_change("keep\n", "keep\ntok-117\n"), 8);
        assert_eq!(line_change("a\n", "a\n"), 0);
    }

    #[test]
    fn round_trips() {
        let cases = [
            ("", "abc"),
            ("abc", ""),
            ("a\nb\nc\n", "a\nB\nc\nd\n"),
            ("héllo\nwörld", "hello\nwörld😀"),
            ("x", "x"),
        ];
        for (o, n) in cases {
            assert_eq!(apply(o, &text_edits(o, n)), n, "{o:?} -> {n:?}");
        }
    }
}
