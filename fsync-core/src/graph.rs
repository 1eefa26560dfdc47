//! The causal graph of one document, in local versions.
//!
//! Every unit operation has a local version ([`Lv`]); operations are added in
//! causal order, so a parent always has a smaller `Lv` than its child. Runs of
//! operations where each one's only parent is the one before are stored as a
//! single entry: a typed paragraph is one entry, not thousands.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;

use smallvec::SmallVec;

use crate::ids::Lv;

/// A version: the set of operations none of which is an ancestor of another.
/// Sorted ascending. Empty means the empty document (before everything).
pub type Frontier = SmallVec<[Lv; 2]>;

/// One run of operations: `start..end`, where `start` has `parents` and every
/// later operation's parent is the one before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphEntry {
    /// First operation of the run.
    pub start: Lv,
    /// One past the last.
    pub end: Lv,
    /// Parents of `start`.
    pub parents: Frontier,
}

/// Gives back a short list's spare room: most files have a few
/// operations, and a list's first growth (to room for 4) would double
/// their memory. Long lists keep theirs (growing them again would copy).
pub(crate) fn shrink_short<T>(v: &mut Vec<T>) {
    if v.capacity() > v.len() && v.capacity() <= 16 {
        v.shrink_to_fit();
    }
}

/// The whole graph of one document.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    entries: Vec<GraphEntry>,
}

/// Where a version lies relative to a walk: only in `a`, only in `b`, or in
/// both.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
enum Side {
    A,
    B,
    Both,
}

/// The part of the graph that must be replayed to merge version `b` into a
/// document at version `a` (see [`Graph::conflict_zone`]).
#[derive(Debug, Default)]
pub struct Zone {
    /// A single version (or the empty version) that every operation of the
    /// zone descends from; everything not in the zone is its ancestor.
    pub base: Frontier,
    /// Operations of the zone already in `a`, ascending.
    pub in_a: Vec<Range<Lv>>,
    /// Operations of `b` not in `a`, ascending.
    pub only_b: Vec<Range<Lv>>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next free local version.
    pub fn len(&self) -> Lv {
        self.entries.last().map_or(0, |e| e.end)
    }

    /// True when the graph has no operations.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, ascending.
    pub fn entries(&self) -> &[GraphEntry] {
        &self.entries
    }

    /// Gives back the spare room of a short graph (see
    /// [`shrink_short`]).
    pub(crate) fn shrink_short(&mut self) {
        shrink_short(&mut self.entries);
    }

    /// Appends the run `span` (which must start at [`Graph::len`]) whose first
    /// operation has `parents`. Parents must be existing versions.
    pub fn push(&mut self, parents: &[Lv], span: Range<Lv>) {
        debug_assert_eq!(span.start, self.len());
        debug_assert!(parents.iter().all(|&p| p < span.start));
        if span.is_empty() {
            return;
        }
        if let Some(last) = self.entries.last_mut() {
            if parents.len() == 1 && parents[0] + 1 == span.start && last.end == span.start {
                last.end = span.end;
                return;
            }
        }
        let mut p: Frontier = parents.iter().copied().collect();
        p.sort_unstable();
        p.dedup();
        self.entries.push(GraphEntry { start: span.start, end: span.end, parents: p });
    }

    /// Index of the entry holding `lv`.
    fn find_idx(&self, lv: Lv) -> usize {
        match self.entries.binary_search_by(|e| {
            if lv < e.start {
                Ordering::Greater
            } else if lv >= e.end {
                Ordering::Less
            } else {
                Ordering::Equal
            }
        }) {
            Ok(i) => i,
            Err(_) => panic!("local version {lv} is not in the graph"),
        }
    }

    /// The entry holding `lv`. Panics if `lv` is not in the graph (a caller
    /// bug: local versions are never taken from the outside).
    pub fn entry_of(&self, lv: Lv) -> &GraphEntry {
        &self.entries[self.find_idx(lv)]
    }

    /// Parents of the single operation `lv`.
    pub fn parents_of(&self, lv: Lv) -> Frontier {
        let e = self.entry_of(lv);
        if lv > e.start {
            smallvec::smallvec![lv - 1]
        } else {
            e.parents.clone()
        }
    }

    /// Moves `frontier` forward over the run `span` whose first operation has
    /// `parents` (all of which the frontier must already contain).
    pub fn advance_frontier(frontier: &mut Frontier, parents: &[Lv], span: Range<Lv>) {
        if span.is_empty() {
            return;
        }
        frontier.retain(|f| !parents.contains(f));
        let pos = frontier.partition_point(|&f| f < span.end - 1);
        frontier.insert(pos, span.end - 1);
    }

    /// True when `lv` is `frontier` or one of its ancestors.
    pub fn frontier_contains(&self, frontier: &[Lv], lv: Lv) -> bool {
        if frontier.contains(&lv) {
            return true;
        }
        let mut queue: BinaryHeap<Lv> = frontier.iter().copied().filter(|&f| f > lv).collect();
        while let Some(top) = queue.pop() {
            while queue.peek() == Some(&top) {
                queue.pop();
            }
            let e = self.entry_of(top);
            if e.start <= lv {
                return true;
            }
            for &p in &e.parents {
                if p == lv {
                    return true;
                }
                if p > lv {
                    queue.push(p);
                }
            }
        }
        false
    }

    /// True when every operation of `b` is in the history of `a`.
    pub fn dominates(&self, a: &[Lv], b: &[Lv]) -> bool {
        b.iter().all(|&x| self.frontier_contains(a, x))
    }

    /// The smallest frontier of `frontier` plus `lv`'s history.
    pub fn frontier_union(&self, frontier: &[Lv], other: &[Lv]) -> Frontier {
        let mut all: Frontier = frontier.iter().chain(other.iter()).copied().collect();
        all.sort_unstable();
        all.dedup();
        self.reduce(&all)
    }

    /// Drops every member that is an ancestor of another member.
    pub fn reduce(&self, versions: &[Lv]) -> Frontier {
        let mut out = Frontier::new();
        for (i, &v) in versions.iter().enumerate() {
            let others: Frontier = versions.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &x)| x).collect();
            if !self.frontier_contains(&others, v) {
                out.push(v);
            }
        }
        out.sort_unstable();
        out
    }

    /// Operations in `a`'s history but not `b`'s, and in `b`'s but not `a`'s,
    /// each ascending.
    pub fn diff(&self, a: &[Lv], b: &[Lv]) -> (Vec<Range<Lv>>, Vec<Range<Lv>>) {
        let mut only_a = Vec::new();
        let mut only_b = Vec::new();
        if a == b {
            return (only_a, only_b);
        }
        // Fast path: one is the direct linear continuation of the other.
        if a.len() == 1 && b.len() == 1 {
            let (x, y) = (a[0], b[0]);
            let (lo, hi, out) = if x < y { (x, y, &mut only_b) } else { (y, x, &mut only_a) };
            if self.entry_of(hi).start <= lo {
                out.push(lo + 1..hi + 1);
                return (only_a, only_b);
            }
        }
        self.walk(a, b, false, |range, side| match side {
            Side::A => push_range_rev(&mut only_a, range),
            Side::B => push_range_rev(&mut only_b, range),
            Side::Both => {}
        });
        only_a.reverse();
        only_b.reverse();
        (only_a, only_b)
    }

    /// What must be replayed to merge `b` into a document at `a`: the walk
    /// back from both goes on until a single common version remains (a
    /// critical version), so the zone holds everything concurrent with `b`.
    pub fn conflict_zone(&self, a: &[Lv], b: &[Lv]) -> Zone {
        let mut zone = Zone::default();
        let base = self.walk(a, b, true, |range, side| match side {
            Side::A | Side::Both => push_range_rev(&mut zone.in_a, range),
            Side::B => push_range_rev(&mut zone.only_b, range),
        });
        zone.base = base;
        zone.in_a.reverse();
        zone.only_b.reverse();
        zone
    }

    /// Walks back from `a` and `b` at once, newest first, reporting each
    /// visited range (descending) with the side it belongs to. Without
    /// `to_critical` it stops when only shared history is left; with it, when
    /// a single shared version is left, which it returns.
    fn walk(&self, a: &[Lv], b: &[Lv], to_critical: bool, mut visit: impl FnMut(Range<Lv>, Side)) -> Frontier {
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        struct Item(Lv, Side);
        let mut queue: BinaryHeap<Item> = BinaryHeap::new();
        let mut not_shared = 0usize;
        // Once an operation made on the empty document is visited, no single
        // version is below everything: the base is the empty version.
        let mut hit_root = false;
        for &x in a {
            queue.push(Item(x, Side::A));
            not_shared += 1;
        }
        for &x in b {
            queue.push(Item(x, Side::B));
            not_shared += 1;
        }
        while let Some(Item(mut lv, mut side)) = queue.pop() {
            if side != Side::Both {
                not_shared -= 1;
            }
            while let Some(peek) = queue.peek() {
                if peek.0 != lv {
                    break;
                }
                if peek.1 != side {
                    side = Side::Both;
                }
                if peek.1 != Side::Both {
                    not_shared -= 1;
                }
                queue.pop();
            }
            if side == Side::Both {
                if !to_critical && not_shared == 0 {
                    break;
                }
                if to_critical && queue.is_empty() && !hit_root {
                    return smallvec::smallvec![lv];
                }
            }
            let e = self.entry_of(lv);
            // Other queued versions inside this run cut it in pieces.
            while let Some(peek) = queue.peek() {
                if peek.0 < e.start {
                    break;
                }
                visit(peek.0 + 1..lv + 1, side);
                if peek.1 != side {
                    side = Side::Both;
                }
                if peek.1 != Side::Both {
                    not_shared -= 1;
                }
                lv = peek.0;
                queue.pop();
                if to_critical && side == Side::Both && queue.is_empty() && !hit_root {
                    return smallvec::smallvec![lv];
                }
            }
            visit(e.start..lv + 1, side);
            hit_root |= e.parents.is_empty();
            for &p in &e.parents {
                queue.push(Item(p, side));
                if side != Side::Both {
                    not_shared += 1;
                }
            }
        }
        Frontier::new()
    }
}

/// Adds `r` to a list being built in descending order, merging neighbours.
fn push_range_rev(list: &mut Vec<Range<Lv>>, r: Range<Lv>) {
    if r.is_empty() {
        return;
    }
    if let Some(last) = list.last_mut() {
        if last.start == r.end {
            last.start = r.start;
            return;
        }
    }
    list.push(r);
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::smallvec;

    /// 0..3 linear; 3..5 from [2]; 5..7 from [2]; 7 merges [4, 6].
    fn diamond() -> Graph {
        let mut g = Graph::new();
        g.push(&[], 0..3);
        g.push(&[2], 3..5);
        g.push(&[2], 5..7);
        g.push(&[4, 6], 7..8);
        g
    }

    #[test]
    fn linear_runs_merge_into_one_entry() {
        let mut g = Graph::new();
        g.push(&[], 0..1);
        g.push(&[0], 1..5);
        g.push(&[4], 5..6);
        assert_eq!(g.entries().len(), 1);
        assert_eq!(g.parents_of(3).as_slice(), &[2]);
        assert_eq!(g.parents_of(0).as_slice(), &[] as &[Lv]);
    }

    #[test]
    fn contains_and_diff() {
        let g = diamond();
        assert!(g.frontier_contains(&[4], 1));
        assert!(!g.frontier_contains(&[4], 5));
        assert!(g.frontier_contains(&[7], 5));
        assert!(!g.frontier_contains(&[], 0));
        let (a, b) = g.diff(&[4], &[6]);
        assert_eq!(a, vec![3..5]);
        assert_eq!(b, vec![5..7]);
        let (a, b) = g.diff(&[7], &[1]);
        assert_eq!(a, vec![2..8]);
        assert!(b.is_empty());
        let (a, b) = g.diff(&[], &[4]);
        assert!(a.is_empty());
        assert_eq!(b, vec![0..5]);
    }

    #[test]
    fn zone_stops_at_critical_version() {
        let g = diamond();
        let z = g.conflict_zone(&[4], &[6]);
        let base: Frontier = smallvec![2];
        assert_eq!(z.base, base);
        assert_eq!(z.in_a, vec![3..5]);
        assert_eq!(z.only_b, vec![5..7]);
        let z = g.conflict_zone(&[4], &[7]);
        assert_eq!(z.base, base);
        assert_eq!(z.in_a, vec![3..5]);
        assert_eq!(z.only_b, vec![5..8]);
        let z = g.conflict_zone(&[], &[7]);
        assert!(z.base.is_empty());
        assert_eq!(z.only_b, vec![0..8]);
    }

    #[test]
    fn union_reduces() {
        let g = diamond();
        assert_eq!(g.frontier_union(&[4], &[6]).as_slice(), &[4, 6]);
        assert_eq!(g.frontier_union(&[4, 6], &[7]).as_slice(), &[7]);
        assert_eq!(g.frontier_union(&[1], &[4]).as_slice(), &[4]);
    }
}
