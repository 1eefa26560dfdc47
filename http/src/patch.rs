//! Braid text patches and the folder's edits: patches of one update are
//! all in the coordinates of the text they were made on (Unicode code
//! points), edits each in the text the ones before left.

// Works on what clients send: no slicing or indexing that can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use fsync_core::diff::display_edits;
use fsync_core::text::Edit;

use crate::braid::Patch;

/// Why patches cannot apply to a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// A range past the end of the text.
    #[error("range [{start}:{end}] is outside the text ({len} code points)")]
    OutOfRange {
        /// Its start.
        start: usize,
        /// Its end.
        end: usize,
        /// The text's length.
        len: usize,
    },
    /// Two ranges that overlap.
    #[error("ranges [{0}:{1}] and [{2}:{3}] overlap")]
    Overlap(usize, usize, usize, usize),
}

/// How many code points the patches delete and insert: what a
/// `peer-counter` version advances by.
pub fn count(patches: &[Patch]) -> u64 {
    patches.iter().map(|p| p.end.saturating_sub(p.start) as u64 + p.content.chars().count() as u64).sum()
}

/// The patches, sorted, as edits on a text of `len` code points.
pub fn edits_of(patches: &[Patch], len: usize) -> Result<Vec<Edit>, PatchError> {
    let mut sorted: Vec<&Patch> = patches.iter().collect();
    sorted.sort_by_key(|p| (p.start, p.end));
    let mut edits = Vec::with_capacity(sorted.len());
    let mut shift: isize = 0;
    let mut last_end = 0usize;
    let mut last: Option<&Patch> = None;
    for p in sorted {
        if p.end > len || p.start > p.end {
            return Err(PatchError::OutOfRange { start: p.start, end: p.end, len });
        }
        if let Some(q) = last.filter(|_| p.start < last_end) {
            return Err(PatchError::Overlap(q.start, q.end, p.start, p.end));
        }
        let pos = p.start.checked_add_signed(shift).unwrap_or(0);
        let ins = p.content.chars().count();
        edits.push(Edit { pos, del: p.end - p.start, ins: p.content.clone() });
        shift += ins as isize - (p.end - p.start) as isize;
        last_end = p.end;
        last = Some(p);
    }
    Ok(edits)
}

/// `text` with the patches applied.
pub fn apply(text: &str, patches: &[Patch]) -> Result<String, PatchError> {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits_of(patches, chars.len())? {
        let end = (e.pos + e.del).min(chars.len());
        chars.splice(e.pos.min(end)..end, e.ins.chars());
    }
    Ok(chars.into_iter().collect())
}

/// The patches turning `old` into `new`, in `old`'s coordinates (a line
/// diff refined to characters: small patches keep a client's cursor).
pub fn between(old: &str, new: &str) -> Vec<Patch> {
    // The edits come last-first, each in `old`'s coordinates.
    let mut patches: Vec<Patch> =
        display_edits(old, new).into_iter().map(|e| Patch { start: e.pos, end: e.pos + e.del, content: e.ins }).collect();
    patches.reverse();
    patches
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(start: usize, end: usize, content: &str) -> Patch {
        Patch { start, end, content: content.into() }
    }

    #[test]
    fn patches_apply_in_the_coordinates_of_their_text() {
        assert_eq!(apply("hello", &[p(5, 5, " world")]), Ok("hello world".into()));
        // Both in "abcdef": insert at 1, replace 3..5.
        assert_eq!(apply("abcdef", &[p(3, 5, "XY"), p(1, 1, "-")]), Ok("a-bcXYf".into()));
        assert_eq!(apply("héllo😀", &[p(1, 2, "e"), p(5, 6, "!")]), Ok("hello!".into()));
        assert_eq!(count(&[p(1, 2, "e"), p(5, 6, "!")]), 4);
    }

    #[test]
    fn ranges_outside_the_text_or_overlapping_are_refused() {
        assert_eq!(apply("abc", &[p(2, 4, "")]), Err(PatchError::OutOfRange { start: 2, end: 4, len: 3 }));
        assert_eq!(apply("abc", &[p(0, 2, ""), p(1, 3, "")]), Err(PatchError::Overlap(0, 2, 1, 3)));
        // Two inserts at one place are fine: in the order given.
        assert_eq!(apply("ab", &[p(1, 1, "x"), p(1, 1, "y")]), Ok("axyb".into()));
    }

    proptest! {
        /// The patches between two texts take the first to the second.
        #[test]
        fn between_then_apply_gives_the_new_text(old in "[a-c\n é]{0,40}", new in "[a-c\n é]{0,40}") {
            prop_assert_eq!(apply(&old, &between(&old, &new)), Ok(new));
        }

        /// Any patches apply or are refused, never a panic.
        #[test]
        fn any_patches_apply_or_fail(text in ".{0,20}", ps in proptest::collection::vec((0usize..30, 0usize..30, ".{0,3}"), 0..5)) {
            let patches: Vec<Patch> = ps.into_iter().map(|(a, b, c)| p(a.min(b), a.max(b), &c)).collect();
            let _ = apply(&text, &patches);
        }
    }
}
