//! From two versions of a text to the edits between them.
//!
//! A line diff (imara-diff's histogram) finds the changed hunks, and a
//! character diff refines each: fixing a typo in a paragraph is a
//! one-character edit that merges cleanly with a concurrent edit elsewhere
//! in it, and text typed into a line merges with text typed at the same
//! place on another node (both kept, never interleaved).
//!
//! Except: a hunk that both deletes and inserts characters in short lines
//! (under [`REFINE_MIN_LINE`] characters, or a changed number of lines) is
//! replaced whole. A diff cannot tell an edit of `port = 8080` or `tok-136`
//! from a new line typed in place of the old, and characters that happen
//! to be shared would be merged as if they were the same text: two nodes
//! changing one value gave a blend of both, and a line replaced on one node
//! and deleted on another kept only the differing characters (`tok-136` ->
//! `tok-156` gave `5`). Replaced whole, both lines survive. Long lines in
//! place (prose paragraphs) are still refined, where merging edits inside
//! them matters most.
//!
//! Edits come last-first, so each position is valid in the old text and
//! after the edits before it.

use std::hash::Hash;

use crate::text::Edit;
use imara_diff::intern::{InternedInput, TokenSource};
use imara_diff::sources::lines_with_terminator;
use imara_diff::{diff, Algorithm};

/// Hunks larger than this (in characters) are not refined to characters:
/// the diff would cost more than it saves.
const REFINE_MAX: usize = 20_000;

/// Lines shorter than this (in characters, with the line break) are
/// replaced whole when an edit both deletes and inserts in them (see the
/// module docs).
pub const REFINE_MIN_LINE: usize = 60;

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

fn hunks<T: Eq + Hash>(input: &InternedInput<T>) -> Vec<(std::ops::Range<u32>, std::ops::Range<u32>)> {
    let mut out = Vec::new();
    diff(Algorithm::Histogram, input, |before: std::ops::Range<u32>, after: std::ops::Range<u32>| {
        out.push((before, after));
    });
    out
}

/// How much a line diff changes from `old` to `new`: the characters of
/// the lines it deletes and inserts. Unlike the size of [`text_edits`],
/// a line replaced by another that shares characters counts whole.
pub fn line_change(old: &str, new: &str) -> usize {
    let input = InternedInput::new(lines_with_terminator(old), lines_with_terminator(new));
    let len = |tokens: &[imara_diff::intern::Token]| tokens.iter().map(|t| input.interner[*t].chars().count()).sum::<usize>();
    hunks(&input)
        .into_iter()
        .map(|(b, a)| {
            len(&input.before[b.start as usize..b.end as usize]) + len(&input.after[a.start as usize..a.end as usize])
        })
        .sum()
}

/// The edits turning `old` into `new`, last first; positions in Unicode
/// scalar values.
pub fn text_edits(old: &str, new: &str) -> Vec<Edit> {
    edits(old, new, true)
}

/// [`text_edits`] refined to characters everywhere: what shows a change to
/// a reader that keeps no history (a Braid client's editor keeps its
/// cursor), where no merge depends on telling a new line from an edit.
pub fn display_edits(old: &str, new: &str) -> Vec<Edit> {
    edits(old, new, false)
}

/// `whole_short_lines`: replace short lines changed both ways whole (see
/// the module docs).
fn edits(old: &str, new: &str, whole_short_lines: bool) -> Vec<Edit> {
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
        let whole = Edit { pos: ob, del: o.len(), ins: n.iter().collect() };
        if o.len() + n.len() > REFINE_MAX || o.is_empty() || n.is_empty() {
            edits.push(whole);
            continue;
        }
        let inner = InternedInput::new(Chars(o), Chars(n));
        let refined: Vec<Edit> = hunks(&inner)
            .into_iter()
            .map(|(cb, ca)| Edit {
                pos: ob + cb.start as usize,
                del: (cb.end - cb.start) as usize,
                ins: n[ca.start as usize..ca.end as usize].iter().collect(),
            })
            .collect();
        // Only inserted or only deleted characters: refined. Both, in short
        // lines: replaced whole (see the module docs).
        let inserts = refined.iter().any(|e| !e.ins.is_empty());
        let deletes = refined.iter().any(|e| e.del > 0);
        let long = |t: &[imara_diff::intern::Token]| t.iter().all(|t| input.interner[*t].chars().count() >= REFINE_MIN_LINE);
        let (old_lines, new_lines) =
            (&input.before[b.start as usize..b.end as usize], &input.after[a.start as usize..a.end as usize]);
        let long_in_place = old_lines.len() == new_lines.len() && long(old_lines) && long(new_lines);
        if whole_short_lines && inserts && deletes && !long_in_place {
            edits.push(whole);
        } else {
            edits.extend(refined);
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
        let old = "fn main() { println!(\"helo world, and a few more words to make it long\"); }\nsecond line\n";
        let new = "fn main() { println!(\"hello world, and a few more words to make it long\"); }\nsecond line\n";
        let e = text_edits(old, new);
        // One 'l' inserted after "hel" or "hell": either is minimal.
        assert_eq!(e.len(), 1);
        assert!(e[0].del == 0 && e[0].ins == "l" && (e[0].pos == 24 || e[0].pos == 25), "{e:?}");
        assert_eq!(apply(old, &e), new);
    }

    #[test]
    fn short_lines_changed_both_ways_are_replaced_whole() {
        let e = text_edits("keep\ntok-136\n", "keep\ntok-156\n");
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].pos, e[0].del, e[0].ins.as_str()), (5, 8, "tok-156\n"));
        let e = text_edits("port = 8080\n", "port = 9091\n");
        assert_eq!((e.len(), e[0].del), (1, 12), "{e:?}");
        // Only typed into, or only erased from: refined.
        let e = text_edits("[]\n", "[aaa]\n");
        assert_eq!((e.len(), e[0].pos, e[0].del, e[0].ins.as_str()), (1, 1, 0, "aaa"));
        let e = text_edits("a long word\n", "a word\n");
        assert_eq!((e.len(), e[0].del, e[0].ins.as_str()), (1, 5, ""));
        // A long line changed in place: refined; split in two: whole.
        let long = "a".repeat(70);
        let e = text_edits(&format!("{long}x\n"), &format!("{long}y\n"));
        assert_eq!((e.len(), e[0].pos, e[0].del, e[0].ins.as_str()), (1, 70, 1, "y"));
        let (old, new) = (format!("{long}x\n"), format!("{long}b\nc\n"));
        let e = text_edits(&old, &new);
        assert_eq!(e.len(), 1, "one long line became two: {e:?}");
        assert_eq!((e[0].del, e[0].ins.as_str()), (old.chars().count(), new.as_str()));
    }

    #[test]
    fn line_change_counts_whole_lines() {
        assert_eq!(line_change("keep\ntok-61\n", "keep\ntok-117\n"), 7 + 8);
        assert_eq!(line_change("keep\n", "keep\ntok-117\n"), 8);
        assert_eq!(line_change("a\n", "a\n"), 0);
    }

    #[test]
    fn round_trips() {
        let cases = [("", "abc"), ("abc", ""), ("a\nb\nc\n", "a\nB\nc\nd\n"), ("héllo\nwörld", "hello\nwörld😀"), ("x", "x")];
        for (o, n) in cases {
            assert_eq!(apply(o, &text_edits(o, n)), n, "{o:?} -> {n:?}");
            assert_eq!(apply(o, &display_edits(o, n)), n, "{o:?} -> {n:?}");
        }
    }

    #[test]
    fn display_edits_keep_short_lines_refined() {
        let e = display_edits("hello world\n", "HELLO world\n");
        assert_eq!(e.iter().map(|e| e.del).sum::<usize>(), 5, "{e:?}");
    }
}
