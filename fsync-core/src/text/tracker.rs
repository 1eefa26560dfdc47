//! The temporary CRDT state Eg-walker builds while replaying a concurrent
//! region of the history (Gentle & Kleppmann, EuroSys 2025).
//!
//! It holds one item per inserted character (stored as runs), each with two
//! states: the state in the *prepare* version (the parents of the operation
//! being replayed, moved with `retreat`/`advance`) and whether it is deleted in
//! the *effect* version (everything replayed so far). Positions of operations
//! are resolved in the first; positions in the document come from the second.
//! Everything before the region is a single placeholder run, so the cost is
//! that of the region, not of the document.

use std::collections::BTreeMap;
use std::ops::Range;

use super::buf::TextBuf;
use super::oplog::{OpLog, OpSlice};
use crate::graph::{Frontier, Graph};
use crate::ids::Lv;

use super::list::{Cur, Item, ItemList, AFTER, BEFORE, INS, NIY};

const NONE: Lv = Lv::MAX;
/// Local versions of the placeholder: far above any real one.
const PLACEHOLDER: Lv = Lv::MAX / 2;
const PLACEHOLDER_LEN: usize = Lv::MAX / 4;

/// Which characters a run of delete operations removed: operation
/// `op + i` removed `target + i` (forward) or `target + len - 1 - i`.
#[derive(Clone, Copy, Debug)]
struct DelTarget {
    len: usize,
    target: Lv,
    fwd: bool,
}

pub(crate) struct Tracker {
    items: ItemList,
    /// Keyed by the first operation's local version.
    del_targets: BTreeMap<Lv, DelTarget>,
    /// The prepare version.
    version: Frontier,
}

impl Tracker {
    /// A tracker whose prepare version is `base`, holding the document at
    /// `base` as one placeholder run.
    pub(crate) fn new(base: Frontier) -> Self {
        Tracker {
            items: ItemList::new(Item {
                lv: PLACEHOLDER,
                len: PLACEHOLDER_LEN,
                origin_left: NONE,
                origin_right: NONE,
                state: INS,
                ever_deleted: false,
            }),
            del_targets: BTreeMap::new(),
            version: base,
        }
    }

    /// Replays the run `range` (whose first op has `parents`): moves the
    /// prepare version there, then applies each operation, editing `doc` when
    /// given (operations not yet in the document) and only updating the state
    /// otherwise.
    pub(crate) fn apply_range(&mut self, oplog: &OpLog, parents: &[Lv], range: Range<Lv>, mut doc: Option<&mut TextBuf>) {
        if self.version.as_slice() != parents {
            let (retreat, advance) = oplog.graph.diff(&self.version, parents);
            for r in retreat.into_iter().rev() {
                self.toggle(oplog, r, false);
            }
            for r in advance {
                self.toggle(oplog, r, true);
            }
        }
        for op in oplog.ops_in(range.clone()) {
            match op.text {
                Some(text) => self.insert(oplog, &op, text, doc.as_deref_mut()),
                None => self.delete(&op, doc.as_deref_mut()),
            }
        }
        self.version = smallvec::smallvec![range.end - 1];
    }

    /// Splits so that an item starts at character `lv`; returns it.
    fn split_at_lv(&mut self, lv: Lv) -> Option<Cur> {
        let (c, off) = self.items.find_lv(lv)?;
        if off == 0 {
            return Some(c);
        }
        Some(self.items.split(c, off).1)
    }

    /// Retreats (`advance == false`) or advances the operations in `range`
    /// in the prepare version.
    fn toggle(&mut self, oplog: &OpLog, range: Range<Lv>, advance: bool) {
        let mut ops: Vec<OpSlice<'_>> = oplog.ops_in(range).collect();
        if !advance {
            // Undo newest first: a delete before the insert it removed.
            ops.reverse();
        }
        for op in ops {
            if op.text.is_some() {
                self.set_state(op.lv..op.lv + op.len, |s| {
                    debug_assert_eq!(s, if advance { NIY } else { INS });
                    if advance {
                        INS
                    } else {
                        NIY
                    }
                });
            } else {
                let mut lv = op.lv;
                let end = op.lv + op.len;
                while lv < end {
                    let Some((&key, &t)) = self.del_targets.range(..=lv).next_back().filter(|(k, t)| **k + t.len > lv) else {
                        // Not replayed here (only in a malformed history).
                        lv = self.del_targets.range(lv + 1..).next().map_or(end, |(k, _)| (*k).min(end));
                        continue;
                    };
                    let off = lv - key;
                    let n = (t.len - off).min(end - lv);
                    let targets = if t.fwd {
                        t.target + off..t.target + off + n
                    } else {
                        let hi = t.target + t.len - off;
                        hi - n..hi
                    };
                    self.set_state(targets, |s| if advance { s + 1 } else { s.saturating_sub(1) });
                    lv += n;
                }
            }
        }
    }

    /// Applies `f` to the state of characters `range`.
    fn set_state(&mut self, range: Range<Lv>, f: impl Fn(u32) -> u32) {
        let mut lv = range.start;
        while lv < range.end {
            let Some(mut c) = self.split_at_lv(lv) else {
                return;
            };
            if self.items.get(c).len > range.end - lv {
                c = self.items.split(c, range.end - lv).0;
            }
            self.items.modify(c, |it| it.state = f(it.state));
            lv += self.items.get(c).len;
        }
    }

    fn insert(&mut self, oplog: &OpLog, op: &OpSlice<'_>, text: &str, doc: Option<&mut TextBuf>) {
        // The character left of the cursor in the prepare version.
        let (mut cursor, mut end_pos, origin_left) = if op.pos == 0 {
            (self.items.first(), 0, NONE)
        } else {
            let Some((c, off, end_before)) = self.items.find_visible(op.pos - 1) else {
                return; // Past the end of an infinite placeholder: impossible.
            };
            let it = *self.items.get(c);
            let end = if it.ever_deleted { end_before } else { end_before + off + 1 };
            let cursor = if off + 1 < it.len { Some(self.items.split(c, off + 1).1) } else { self.items.next(c) };
            (cursor, end, it.lv + off)
        };
        let mut origin_right = NONE;
        let mut c = cursor;
        while let Some(cc) = c {
            let it = self.items.get(cc);
            if it.state != NIY {
                origin_right = it.lv;
                break;
            }
            c = self.items.next(cc);
        }
        let new = Item { lv: op.lv, len: op.len, origin_left, origin_right, state: INS, ever_deleted: false };

        // FugueMax / YjsMod: skip concurrent inserts at this place that
        // must come first, so concurrent runs never interleave.
        let left = if origin_left == NONE { BEFORE } else { self.items.key_of_lv(origin_left) };
        let right = if origin_right == NONE { AFTER } else { self.items.key_of_lv(origin_right) };
        let mut scan = cursor;
        let mut scan_end = end_pos;
        let mut scanning = false;
        while let Some(sc) = scan {
            if self.items.key(Some(sc)) >= right {
                break;
            }
            let other = *self.items.get(sc);
            if other.state != NIY {
                break;
            }
            let oleft = if other.origin_left == NONE { BEFORE } else { self.items.key_of_lv(other.origin_left) };
            let oright = if other.origin_right == NONE { AFTER } else { self.items.key_of_lv(other.origin_right) };
            if oleft < left || (oleft == left && oright == right && oplog.agent_seq(op.lv) < oplog.agent_seq(other.lv)) {
                break;
            }
            if oleft == left {
                scanning = oright < right;
            }
            scan_end += other.end_len();
            scan = self.items.next(sc);
            if !scanning {
                cursor = scan;
                end_pos = scan_end;
            }
        }
        self.items.insert(cursor, new);
        if let Some(doc) = doc {
            // Only a malformed history puts a position past the end.
            doc.insert(end_pos.min(doc.len_chars()), text);
        }
    }

    fn delete(&mut self, op: &OpSlice<'_>, mut doc: Option<&mut TextBuf>) {
        let mut done = 0;
        while done < op.len {
            // The first character still visible at op.pos (prepare version).
            let Some((mut c, off, mut end)) = self.items.find_visible(op.pos) else {
                return;
            };
            if off > 0 {
                if !self.items.get(c).ever_deleted {
                    end += off;
                }
                c = self.items.split(c, off).1;
            }
            let n = (op.len - done).min(self.items.get(c).len);
            if n < self.items.get(c).len {
                c = self.items.split(c, n).0;
            }
            let mut newly = false;
            self.items.modify(c, |it| {
                it.state += 1;
                newly = !it.ever_deleted;
                it.ever_deleted = true;
            });
            if newly {
                if let Some(d) = doc.as_deref_mut() {
                    let len = d.len_chars();
                    d.remove(end.min(len)..(end + n).min(len));
                }
            }
            let target = self.items.get(c).lv;
            let (op_lv, fwd) = if op.fwd { (op.lv + done, true) } else { (op.lv + op.len - done - n, false) };
            self.del_targets.insert(op_lv, DelTarget { len: n, target, fwd });
            done += n;
        }
    }
}

/// Walks `ranges` (ascending, each inside the graph) as runs with parents.
pub(crate) fn runs_with_parents<'a>(
    graph: &'a Graph,
    ranges: &'a [Range<Lv>],
) -> impl Iterator<Item = (Frontier, Range<Lv>)> + 'a {
    ranges.iter().flat_map(move |r| {
        let mut out = Vec::new();
        let mut lv = r.start;
        while lv < r.end {
            let e = graph.entry_of(lv);
            let end = e.end.min(r.end);
            let parents = if lv == e.start { e.parents.clone() } else { smallvec::smallvec![lv - 1] };
            out.push((parents, lv..end));
            lv = end;
        }
        out
    })
}
