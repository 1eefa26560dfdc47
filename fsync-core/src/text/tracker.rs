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

use jumprope::JumpRopeBuf;

use super::oplog::{OpLog, OpSlice};
use crate::graph::{Frontier, Graph};
use crate::ids::Lv;

const NONE: Lv = Lv::MAX;
/// Local versions of the placeholder: far above any real one.
const PLACEHOLDER: Lv = Lv::MAX / 2;
const PLACEHOLDER_LEN: usize = Lv::MAX / 4;

/// Not yet inserted in the prepare version.
const NIY: u32 = 0;
/// Inserted and not deleted in the prepare version. `INS + n` means deleted
/// by `n` concurrent deletes.
const INS: u32 = 1;

#[derive(Clone, Copy, Debug)]
struct Item {
    lv: Lv,
    len: usize,
    /// The character left of the first one when it was inserted.
    origin_left: Lv,
    /// The character right of the run when it was inserted.
    origin_right: Lv,
    state: u32,
    /// Deleted in the effect version (and so absent from the document).
    ever_deleted: bool,
}

impl Item {
    fn cur_len(&self) -> usize {
        if self.state == INS {
            self.len
        } else {
            0
        }
    }
    fn end_len(&self) -> usize {
        if self.ever_deleted {
            0
        } else {
            self.len
        }
    }
    /// Cuts off and returns the part from `at` on.
    fn split(&mut self, at: usize) -> Item {
        debug_assert!(at > 0 && at < self.len);
        let right = Item {
            lv: self.lv + at,
            len: self.len - at,
            origin_left: self.lv + at - 1,
            origin_right: self.origin_right,
            state: self.state,
            ever_deleted: self.ever_deleted,
        };
        self.len = at;
        right
    }
}

/// Which characters a run of delete operations removed: operation
/// `op + i` removed `target + i` (forward) or `target + len - 1 - i`.
#[derive(Clone, Copy, Debug)]
struct DelTarget {
    len: usize,
    target: Lv,
    fwd: bool,
}

pub(crate) struct Tracker {
    items: Vec<Item>,
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
            items: vec![Item {
                lv: PLACEHOLDER,
                len: PLACEHOLDER_LEN,
                origin_left: NONE,
                origin_right: NONE,
                state: INS,
                ever_deleted: false,
            }],
            del_targets: BTreeMap::new(),
            version: base,
        }
    }

    /// Replays the run `range` (whose first op has `parents`): moves the
    /// prepare version there, then applies each operation, editing `doc` when
    /// given (operations not yet in the document) and only updating the state
    /// otherwise.
    pub(crate) fn apply_range(
        &mut self,
        oplog: &OpLog,
        parents: &[Lv],
        range: Range<Lv>,
        mut doc: Option<&mut JumpRopeBuf>,
    ) {
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

    /// Index and offset of the character `lv`.
    fn find_lv(&self, lv: Lv) -> (usize, usize) {
        for (i, it) in self.items.iter().enumerate() {
            if lv >= it.lv && lv < it.lv + it.len {
                return (i, lv - it.lv);
            }
        }
        panic!("character {lv} is not in the merge state")
    }

    /// Splits so that an item starts at character `lv`; returns its index.
    fn split_at_lv(&mut self, lv: Lv) -> usize {
        let (i, off) = self.find_lv(lv);
        if off == 0 {
            return i;
        }
        let right = self.items[i].split(off);
        self.items.insert(i + 1, right);
        i + 1
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
                    let Some((&key, &t)) = self.del_targets.range(..=lv).next_back().filter(|(k, t)| **k + t.len > lv)
                    else {
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
                    self.set_state(targets, |s| if advance { s + 1 } else { s - 1 });
                    lv += n;
                }
            }
        }
    }

    /// Applies `f` to the state of characters `range`.
    fn set_state(&mut self, range: Range<Lv>, f: impl Fn(u32) -> u32) {
        let mut lv = range.start;
        while lv < range.end {
            let i = self.split_at_lv(lv);
            let it = &mut self.items[i];
            if it.len > range.end - lv {
                let right = it.split(range.end - lv);
                self.items.insert(i + 1, right);
            }
            let it = &mut self.items[i];
            it.state = f(it.state);
            lv += it.len;
        }
    }

    fn insert(&mut self, oplog: &OpLog, op: &OpSlice<'_>, text: &str, doc: Option<&mut JumpRopeBuf>) {
        // Find the character left of the cursor in the prepare version.
        let (mut idx, mut end_pos, origin_left) = if op.pos == 0 {
            (0, 0, NONE)
        } else {
            let mut cur = 0;
            let mut end = 0;
            let mut found = None;
            for (i, it) in self.items.iter().enumerate() {
                let cl = it.cur_len();
                if cur + cl >= op.pos {
                    let off = op.pos - cur; // 1..=len
                    let e = if it.ever_deleted { end } else { end + off };
                    found = Some((i, off, e));
                    break;
                }
                cur += cl;
                end += it.end_len();
            }
            let (i, off, e) = found.expect("insert position past the end of the document");
            let left = self.items[i].lv + off - 1;
            if off < self.items[i].len {
                let right = self.items[i].split(off);
                self.items.insert(i + 1, right);
            }
            (i + 1, e, left)
        };
        let origin_right = self.items[idx..].iter().find(|it| it.state != NIY).map_or(NONE, |it| it.lv);
        let new = Item { lv: op.lv, len: op.len, origin_left, origin_right, state: INS, ever_deleted: false };

        // FugueMax / YjsMod: skip concurrent inserts at this place that
        // must come first, so concurrent runs never interleave.
        let left = (idx as isize) - 1;
        let right = if origin_right == NONE { self.items.len() } else { idx_of_run_start(&self.items, idx, origin_right) };
        let mut scan_idx = idx;
        let mut scan_end = end_pos;
        let mut scanning = false;
        while scan_idx < right {
            let other = self.items[scan_idx];
            if other.state != NIY {
                break;
            }
            let oleft = if other.origin_left == NONE { (-1, 0) } else { self.pos_of(other.origin_left) };
            let oright =
                if other.origin_right == NONE { (self.items.len() as isize, 0) } else { self.pos_of(other.origin_right) };
            let left_pos = (left, if left >= 0 { self.items[left as usize].len - 1 } else { 0 });
            let right_pos = (right as isize, 0);
            if oleft < left_pos
                || (oleft == left_pos && oright == right_pos && oplog.agent_seq(op.lv) < oplog.agent_seq(other.lv))
            {
                break;
            }
            if oleft == left_pos {
                scanning = oright < right_pos;
            }
            scan_end += other.end_len();
            scan_idx += 1;
            if !scanning {
                idx = scan_idx;
                end_pos = scan_end;
            }
        }
        self.items.insert(idx, new);
        if let Some(doc) = doc {
            // Only a malformed history puts a position past the end.
            doc.insert(end_pos.min(doc.len_chars()), text);
        }
    }

    /// (index, offset) of character `lv`, for ordering comparisons.
    fn pos_of(&self, lv: Lv) -> (isize, usize) {
        let (i, off) = self.find_lv(lv);
        (i as isize, off)
    }

    fn delete(&mut self, op: &OpSlice<'_>, mut doc: Option<&mut JumpRopeBuf>) {
        let mut done = 0;
        while done < op.len {
            // The first character still visible at op.pos (prepare version).
            let mut cur = 0;
            let mut end = 0;
            let mut found = None;
            for (i, it) in self.items.iter().enumerate() {
                let cl = it.cur_len();
                if cur + cl > op.pos {
                    found = Some((i, op.pos - cur));
                    break;
                }
                cur += cl;
                end += it.end_len();
            }
            let (mut i, off) = found.expect("delete past the end of the document");
            if off > 0 {
                if !self.items[i].ever_deleted {
                    end += off;
                }
                let right = self.items[i].split(off);
                self.items.insert(i + 1, right);
                i += 1;
            }
            let n = (op.len - done).min(self.items[i].len);
            if n < self.items[i].len {
                let right = self.items[i].split(n);
                self.items.insert(i + 1, right);
            }
            let it = &mut self.items[i];
            it.state += 1;
            if !it.ever_deleted {
                it.ever_deleted = true;
                if let Some(d) = doc.as_deref_mut() {
                    let len = d.len_chars();
                    d.remove(end.min(len)..(end + n).min(len));
                }
            }
            let target = it.lv;
            let (op_lv, fwd) = if op.fwd { (op.lv + done, true) } else { (op.lv + op.len - done - n, false) };
            self.del_targets.insert(op_lv, DelTarget { len: n, target, fwd });
            done += n;
        }
    }
}

/// Index of the item starting with character `lv`, searching from `from`.
fn idx_of_run_start(items: &[Item], from: usize, lv: Lv) -> usize {
    items[from..].iter().position(|it| it.lv == lv).map_or(items.len(), |p| p + from)
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
