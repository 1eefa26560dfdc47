//! The ordered list of item runs behind the merge tracker.
//!
//! A flat vector makes every lookup linear in the size of the concurrent
//! region, which on long-lived branches (git histories) is most of the file.
//! Here items live in leaves of at most [`MAX_LEAF`] runs, each caching its
//! visible lengths, and an index maps each run's first local version to its
//! leaf. Finding a position costs a pass over leaf totals plus one leaf;
//! finding a character by local version costs a B-tree lookup plus one leaf.

use std::collections::BTreeMap;

use crate::ids::Lv;

const MAX_LEAF: usize = 64;

/// Not yet inserted in the prepare version.
pub(super) const NIY: u32 = 0;
/// Inserted and not deleted in the prepare version; `INS + n` means deleted
/// by `n` concurrent deletes.
pub(super) const INS: u32 = 1;

/// A run of characters inserted together.
#[derive(Clone, Copy, Debug)]
pub(super) struct Item {
    pub(super) lv: Lv,
    pub(super) len: usize,
    /// The character left of the first one when it was inserted.
    pub(super) origin_left: Lv,
    /// The character right of the run when it was inserted.
    pub(super) origin_right: Lv,
    pub(super) state: u32,
    /// Deleted in the effect version (and so absent from the document).
    pub(super) ever_deleted: bool,
}

impl Item {
    pub(super) fn cur_len(&self) -> usize {
        if self.state == INS {
            self.len
        } else {
            0
        }
    }

    pub(super) fn end_len(&self) -> usize {
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

#[derive(Default)]
struct Leaf {
    items: Vec<Item>,
    cur: usize,
    end: usize,
}

/// Where an item is: a leaf id and an index in it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Cur {
    leaf: u32,
    idx: u32,
}

/// A total order on places in the list, for comparing origins: (leaf rank,
/// index, offset). `BEFORE` sorts before every item and `AFTER` after.
pub(super) type Key = (i64, u32, usize);
pub(super) const BEFORE: Key = (-1, 0, 0);
pub(super) const AFTER: Key = (i64::MAX, 0, 0);

pub(super) struct ItemList {
    leaves: Vec<Leaf>,
    /// Leaf ids in list order.
    order: Vec<u32>,
    /// Position of each leaf id in `order`.
    rank: Vec<u32>,
    /// First local version of every run -> its leaf.
    index: BTreeMap<Lv, u32>,
}

impl ItemList {
    pub(super) fn new(first: Item) -> Self {
        let mut list = ItemList { leaves: Vec::new(), order: vec![0], rank: vec![0], index: BTreeMap::new() };
        list.leaves.push(Leaf { items: Vec::with_capacity(MAX_LEAF + 1), cur: 0, end: 0 });
        list.leaves[0].cur = first.cur_len();
        list.leaves[0].end = first.end_len();
        list.leaves[0].items.push(first);
        list.index.insert(first.lv, 0);
        list
    }

    pub(super) fn get(&self, c: Cur) -> &Item {
        &self.leaves[c.leaf as usize].items[c.idx as usize]
    }

    pub(super) fn first(&self) -> Option<Cur> {
        let leaf = self.order[0];
        (!self.leaves[leaf as usize].items.is_empty()).then_some(Cur { leaf, idx: 0 })
    }

    /// The item after `c`, or `None` at the end.
    pub(super) fn next(&self, c: Cur) -> Option<Cur> {
        if (c.idx as usize) + 1 < self.leaves[c.leaf as usize].items.len() {
            return Some(Cur { leaf: c.leaf, idx: c.idx + 1 });
        }
        let r = self.rank[c.leaf as usize] as usize + 1;
        self.order.get(r).map(|&leaf| Cur { leaf, idx: 0 })
    }

    /// Order key of the place of `c` (offset 0), or `AFTER` for `None`.
    pub(super) fn key(&self, c: Option<Cur>) -> Key {
        c.map_or(AFTER, |c| (self.rank[c.leaf as usize] as i64, c.idx, 0))
    }

    /// The item holding character `lv`, and the offset in it.
    pub(super) fn find_lv(&self, lv: Lv) -> Option<(Cur, usize)> {
        let (_, &leaf) = self.index.range(..=lv).next_back()?;
        let items = &self.leaves[leaf as usize].items;
        let idx = items.iter().position(|it| lv >= it.lv && lv < it.lv + it.len)?;
        Some((Cur { leaf, idx: idx as u32 }, lv - items[idx].lv))
    }

    /// Order key of character `lv`.
    pub(super) fn key_of_lv(&self, lv: Lv) -> Key {
        match self.find_lv(lv) {
            Some((c, off)) => (self.rank[c.leaf as usize] as i64, c.idx, off),
            None => AFTER,
        }
    }

    /// The item holding the visible (prepare version) character at `pos`,
    /// the offset in it, and the number of document characters before the
    /// item. `None` past the end.
    pub(super) fn find_visible(&self, pos: usize) -> Option<(Cur, usize, usize)> {
        let mut cur = 0;
        let mut end = 0;
        for &leaf in &self.order {
            let l = &self.leaves[leaf as usize];
            if cur + l.cur <= pos {
                cur += l.cur;
                end += l.end;
                continue;
            }
            for (i, it) in l.items.iter().enumerate() {
                let cl = it.cur_len();
                if cur + cl > pos {
                    return Some((Cur { leaf, idx: i as u32 }, pos - cur, end));
                }
                cur += cl;
                end += it.end_len();
            }
        }
        None
    }

    /// Changes the item at `c` through `f`, keeping the caches right.
    pub(super) fn modify(&mut self, c: Cur, f: impl FnOnce(&mut Item)) {
        let leaf = &mut self.leaves[c.leaf as usize];
        let it = &mut leaf.items[c.idx as usize];
        leaf.cur -= it.cur_len();
        leaf.end -= it.end_len();
        f(it);
        leaf.cur += it.cur_len();
        leaf.end += it.end_len();
    }

    /// Inserts `item` before `at` (at the end for `None`); returns where it
    /// went. Cursors taken before may be stale afterwards.
    pub(super) fn insert(&mut self, at: Option<Cur>, item: Item) -> Cur {
        let c = at.unwrap_or_else(|| {
            let leaf = *self.order.last().unwrap_or(&0);
            Cur { leaf, idx: self.leaves[leaf as usize].items.len() as u32 }
        });
        let leaf = &mut self.leaves[c.leaf as usize];
        leaf.items.insert(c.idx as usize, item);
        leaf.cur += item.cur_len();
        leaf.end += item.end_len();
        self.index.insert(item.lv, c.leaf);
        if self.leaves[c.leaf as usize].items.len() > MAX_LEAF {
            return self.split_leaf(c);
        }
        c
    }

    /// Splits the full leaf of `c` in two; returns where `c` went.
    fn split_leaf(&mut self, c: Cur) -> Cur {
        let id = self.leaves.len() as u32;
        let old = &mut self.leaves[c.leaf as usize];
        let moved: Vec<Item> = old.items.split_off(old.items.len() / 2);
        let keep = old.items.len();
        for it in &moved {
            old.cur -= it.cur_len();
            old.end -= it.end_len();
        }
        let mut leaf = Leaf { items: Vec::with_capacity(MAX_LEAF + 1), cur: 0, end: 0 };
        for it in &moved {
            leaf.cur += it.cur_len();
            leaf.end += it.end_len();
            self.index.insert(it.lv, id);
        }
        leaf.items.extend(moved);
        self.leaves.push(leaf);
        let r = self.rank[c.leaf as usize] as usize + 1;
        self.order.insert(r, id);
        self.rank.push(0);
        for (i, &l) in self.order.iter().enumerate().skip(r) {
            self.rank[l as usize] = i as u32;
        }
        if (c.idx as usize) < keep {
            c
        } else {
            Cur { leaf: id, idx: c.idx - keep as u32 }
        }
    }

    /// Splits the item at `c` at offset `at`; returns (left, right).
    pub(super) fn split(&mut self, c: Cur, at: usize) -> (Cur, Cur) {
        let leaf = &mut self.leaves[c.leaf as usize];
        let right = leaf.items[c.idx as usize].split(at);
        // The caches do not change: the same characters, in two items.
        leaf.cur -= right.cur_len();
        leaf.end -= right.end_len();
        let r = self.insert(Some(Cur { leaf: c.leaf, idx: c.idx + 1 }), right);
        if r.idx > 0 {
            (Cur { leaf: r.leaf, idx: r.idx - 1 }, r)
        } else {
            // The split moved the right part to the start of a new leaf; the
            // left part stayed at the end of the old one.
            let leaf = c.leaf;
            let idx = self.leaves[leaf as usize].items.len() as u32 - 1;
            (Cur { leaf, idx }, r)
        }
    }
}
