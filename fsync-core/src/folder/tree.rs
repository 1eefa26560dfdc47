//! From entries to paths: the one place where names are resolved.
//!
//! The rules, applied the same way on every replica:
//! 1. Files and links show when not deleted. A directory shows when not
//!    deleted or when anything inside it shows (a file created in a
//!    directory that another replica deleted keeps its directory).
//! 2. Directories with the same name in the same place merge into one path.
//! 3. When several files or links (or a file and a directory) want one
//!    name, a directory keeps it, else the smallest entry id; the others are
//!    renamed `stem (AGENT).ext` after their creator ([`conflict_name`]).
//!    Both contents stay reachable; nothing is overwritten.
//! 4. Directories whose parent chains loop (concurrent moves of two
//!    directories into each other): the smallest entry id in the loop is
//!    attached at the root; the rest of the loop and what is below follow.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{EntryId, EntryState, Kind};

/// A visible entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The entry (for merged directories, the smallest id).
    pub id: EntryId,
    /// File, directory or link.
    pub kind: Kind,
    /// Path relative to the folder root, `/`-separated.
    pub path: String,
}

/// Every visible path of a folder.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    by_path: BTreeMap<String, Node>,
    path_of: HashMap<EntryId, String>,
    /// Merged directories: path -> the entries other than the node's id.
    aliases: HashMap<String, Vec<EntryId>>,
    /// Parents named by entries but not (yet) known as directories: those
    /// entries were placed at the root, and must move when the parent comes.
    missing_parents: std::collections::HashSet<EntryId>,
}

impl Tree {
    /// The node at `path`.
    pub fn lookup(&self, path: &str) -> Option<&Node> {
        self.by_path.get(path)
    }

    /// Where an entry shows (merged directories all map to one path).
    pub fn path_of(&self, id: EntryId) -> Option<&str> {
        self.path_of.get(&id).map(String::as_str)
    }

    /// The entries directly inside directory `dir` (`""` = the root), in
    /// name order. Subtrees are skipped, not walked.
    pub fn children(&self, dir: &str) -> Vec<&Node> {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let mut out = Vec::new();
        let mut from = prefix.clone();
        while let Some((path, node)) =
            self.by_path.range::<str, _>((std::ops::Bound::Included(from.as_str()), std::ops::Bound::Unbounded)).next()
        {
            let Some(rest) = path.strip_prefix(prefix.as_str()) else {
                break;
            };
            if rest.is_empty() {
                // `dir` itself is not its own child (only for the root: "").
                from = format!("{path}\0");
                continue;
            }
            match rest.find('/') {
                // Below a child: skip that child's whole subtree ('0' follows '/').
                Some(i) => from = format!("{prefix}{}0", &rest[..i]),
                None => {
                    out.push(node);
                    from = format!("{path}\0");
                }
            }
        }
        out
    }

    /// Entries shown at another path here than in `old`, or shown in only
    /// one of the two (merged directories included).
    pub(crate) fn moved_since(&self, old: &Tree) -> Vec<EntryId> {
        let mut out = Vec::new();
        for (id, p) in &self.path_of {
            if old.path_of.get(id) != Some(p) {
                out.push(*id);
            }
        }
        out.extend(old.path_of.keys().filter(|id| !self.path_of.contains_key(id)));
        out
    }

    /// The node at `dir` and every node below it, in path order (`""`:
    /// all); found by range, so the work is the subtree's.
    pub fn below(&self, dir: &str) -> Vec<&Node> {
        if dir.is_empty() {
            return self.by_path.values().collect();
        }
        let prefix = format!("{dir}/");
        let inside = self
            .by_path
            .range::<str, _>((std::ops::Bound::Included(prefix.as_str()), std::ops::Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(&prefix));
        self.by_path.get(dir).into_iter().chain(inside.map(|(_, n)| n)).collect()
    }

    /// All nodes in path order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.by_path.values()
    }

    /// Number of visible paths.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// True for an empty folder.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// The other entries shown at the same path as `id` (merged
    /// directories).
    pub fn aliases_of(&self, id: EntryId) -> Vec<EntryId> {
        let Some(p) = self.path_of.get(&id) else {
            return Vec::new();
        };
        let mut out: Vec<EntryId> = self.aliases.get(p).into_iter().flatten().copied().collect();
        if let Some(n) = self.by_path.get(p) {
            out.push(n.id);
        }
        out.retain(|e| *e != id);
        out
    }

    /// Every entry below `id` (not `id` itself), parents before children.
    pub fn descendants(&self, id: EntryId) -> Vec<EntryId> {
        let Some(p) = self.path_of.get(&id) else {
            return Vec::new();
        };
        let prefix = format!("{p}/");
        let mut out = Vec::new();
        for (path, node) in self.by_path.range(prefix.clone()..) {
            if !path.starts_with(&prefix) {
                break;
            }
            out.push(node.id);
            // Merged directories: every entry behind the path.
            out.extend(self.aliases.get(path).into_iter().flatten().copied());
        }
        out
    }

    /// Adds a new, visible entry without a rebuild when that is the whole
    /// story: its directory shows, and the name is free there. Returns
    /// false when a rebuild is needed.
    pub(crate) fn try_insert(&mut self, id: EntryId, state: &EntryState) -> bool {
        if !state.alive || state.name.is_empty() || self.path_of.contains_key(&id) || self.missing_parents.contains(&id) {
            return false;
        }
        let prefix = match state.parent {
            None => String::new(),
            Some(p) => match self.path_of.get(&p) {
                Some(pp) if self.by_path.get(pp).is_some_and(|n| n.kind == Kind::Dir) => pp.clone(),
                _ => return false,
            },
        };
        let path = if prefix.is_empty() { state.name.clone() } else { format!("{prefix}/{}", state.name) };
        if self.by_path.contains_key(&path) {
            return false;
        }
        self.path_of.insert(id, path.clone());
        self.by_path.insert(path.clone(), Node { id, kind: state.kind, path });
        true
    }

    /// Resolves paths from entry states.
    pub(crate) fn build<'a>(entries: impl Iterator<Item = (EntryId, &'a EntryState)>) -> Tree {
        let states: HashMap<EntryId, &EntryState> = entries.collect();
        let dir_parent = |s: &EntryState| s.parent.filter(|p| states.get(p).is_some_and(|ps| ps.kind == Kind::Dir));

        // Rule 1: what shows.
        let mut visible: HashSet<EntryId> = HashSet::new();
        let mut ids: Vec<EntryId> = states.keys().copied().collect();
        ids.sort();
        for &id in &ids {
            if !states[&id].alive {
                continue;
            }
            let mut cur = Some(id);
            let mut steps = 0;
            while let Some(c) = cur {
                if !visible.insert(c) || steps > states.len() {
                    break;
                }
                steps += 1;
                cur = dir_parent(states[&c]);
            }
        }
        let mut children: HashMap<Option<EntryId>, Vec<EntryId>> = HashMap::new();
        let mut tree = Tree::default();
        for &id in &ids {
            if visible.contains(&id) {
                let s = states[&id];
                let parent = dir_parent(s);
                if parent.is_none() {
                    if let Some(p) = s.parent {
                        tree.missing_parents.insert(p);
                    }
                }
                children.entry(parent).or_default().push(id);
            }
        }

        let mut reached: HashSet<EntryId> = HashSet::new();
        let mut root_used: HashSet<String> = HashSet::new();
        let mut queue: Vec<(String, Vec<Option<EntryId>>)> = vec![(String::new(), vec![None])];
        loop {
            while let Some((prefix, dirs)) = queue.pop() {
                let mut kids: Vec<EntryId> = dirs
                    .iter()
                    .flat_map(|d| children.get(d).into_iter().flatten().copied())
                    .filter(|k| !reached.contains(k))
                    .collect();
                kids.sort();
                kids.dedup();
                let mut used = if prefix.is_empty() { std::mem::take(&mut root_used) } else { HashSet::new() };
                tree.place(&prefix, &kids, &states, &mut used, &mut reached, &mut queue);
                if prefix.is_empty() {
                    root_used = used;
                }
            }
            // Rule 4: whatever was not reached hangs in or below a cycle.
            // Attach the smallest entry *in* a cycle at the root; what hangs
            // below follows it.
            let in_cycle = |id: EntryId| {
                let mut cur = dir_parent(states[&id]);
                for _ in 0..=states.len() {
                    match cur {
                        Some(c) if c == id => return true,
                        Some(c) => cur = dir_parent(states[&c]),
                        None => return false,
                    }
                }
                false
            };
            let unreached = ids.iter().copied().filter(|id| visible.contains(id) && !reached.contains(id));
            let Some(stray) = unreached.clone().find(|id| in_cycle(*id)).or_else(|| unreached.min()) else {
                break;
            };
            tree.place("", &[stray], &states, &mut root_used, &mut reached, &mut queue);
        }
        tree
    }

    /// Names `kids` inside the directory at `prefix` (rules 2 and 3) and
    /// queues the directories among them.
    fn place(
        &mut self,
        prefix: &str,
        kids: &[EntryId],
        states: &HashMap<EntryId, &EntryState>,
        used: &mut HashSet<String>,
        reached: &mut HashSet<EntryId>,
        queue: &mut Vec<(String, Vec<Option<EntryId>>)>,
    ) {
        let mut by_name: BTreeMap<&str, Vec<EntryId>> = BTreeMap::new();
        for &k in kids {
            by_name.entry(states[&k].name.as_str()).or_default().push(k);
        }
        let join = |name: &str| {
            if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            }
        };
        let mut losers = Vec::new();
        for (name, group) in by_name {
            let dirs: Vec<EntryId> = group.iter().copied().filter(|k| states[k].kind == Kind::Dir).collect();
            let others = group.iter().copied().filter(|k| states[k].kind != Kind::Dir);
            if name.is_empty() || used.contains(name) {
                losers.extend(group.iter().copied());
                continue;
            }
            used.insert(name.to_owned());
            let path = join(name);
            if let Some(&canon) = dirs.first() {
                for &d in &dirs {
                    reached.insert(d);
                    self.path_of.insert(d, path.clone());
                }
                self.by_path.insert(path.clone(), Node { id: canon, kind: Kind::Dir, path: path.clone() });
                if dirs.len() > 1 {
                    self.aliases.insert(path.clone(), dirs[1..].to_vec());
                }
                queue.push((path, dirs.iter().map(|d| Some(*d)).collect()));
                losers.extend(others);
            } else {
                let mut others = others;
                if let Some(first) = others.next() {
                    reached.insert(first);
                    self.path_of.insert(first, path.clone());
                    self.by_path.insert(path.clone(), Node { id: first, kind: states[&first].kind, path });
                }
                losers.extend(others);
            }
        }
        losers.sort();
        for k in losers {
            let name = conflict_name(&states[&k].name, k, used);
            used.insert(name.clone());
            reached.insert(k);
            let path = join(&name);
            self.path_of.insert(k, path.clone());
            let kind = states[&k].kind;
            self.by_path.insert(path.clone(), Node { id: k, kind, path: path.clone() });
            if kind == Kind::Dir {
                queue.push((path, vec![Some(k)]));
            }
        }
    }
}

/// The name a losing entry gets: `stem (AGENT).ext`, `AGENT` being the first
/// hex digits of its creator's id, made unique with the creator's sequence
/// number if needed.
pub fn conflict_name(name: &str, id: EntryId, used: &HashSet<String>) -> String {
    let name = if name.is_empty() { "unnamed" } else { name };
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    let short = id.0.agent.short();
    let mut stem = stem.to_owned();
    // Keep the result within the name length limit.
    while stem.len() + ext.len() + short.len() + 30 > super::MAX_NAME {
        stem.pop();
    }
    let first = format!("{stem} ({short}){ext}");
    if !used.contains(&first) {
        return first;
    }
    let mut n = id.0.seq;
    loop {
        let c = format!("{stem} ({short}-{n}){ext}");
        if !used.contains(&c) {
            return c;
        }
        n += 1;
    }
}
