//! The past of a folder: entries as they were at a version or before a
//! time, what was deleted, and restoring any of it as new changes.
//!
//! Nothing here rewrites history. A restore is a set of ordinary local
//! events made on top of the current version (a move that brings a deleted
//! entry back, a content edit), so it merges with concurrent changes and
//! reaches every peer like a save.

use std::collections::HashMap;

use super::{split_path, within, Content, EntryId, EntryState, Folder, FolderError, Kind, Meta, Tree};
use crate::chunks::ChunkRef;
use crate::graph::Frontier;
use crate::ids::{AgentId, EventId, Lv};

/// Deletions of a directory's files this close in time (ms, either side)
/// to the deletion of the directory belong to it: `rm -r` and a scan that
/// finds it gone delete a tree in a few events or scans, not in one.
pub const DELETION_EPISODE_MS: u64 = 60_000;

/// An entry as it was at some point of its history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Past {
    /// The entry.
    pub id: EntryId,
    /// Its registers then.
    pub state: EntryState,
    /// Its version then (local versions of its history).
    pub version: Frontier,
    /// When the newest event of that version was made (ms since the epoch,
    /// its author's clock).
    pub time: u64,
}

/// A file or link that was deleted, as [`Folder::deleted`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// Where it was.
    pub path: String,
    /// When it was deleted (ms, the deleter's clock).
    pub deleted_at: u64,
    /// Its last version before the deletion.
    pub last: Past,
    /// That version's newest event ids (what `cat --at` takes).
    pub last_ids: Vec<EventId>,
}

/// What to bring back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestorePoint {
    /// One version of one file (an event id from its log).
    Version(EventId),
    /// The path (a file or a whole tree) as the events made before this
    /// time (ms since the epoch) left it.
    Before(u64),
    /// A deleted path as it was just before its last deletion; for a
    /// directory, with what was deleted with it (see
    /// [`DELETION_EPISODE_MS`]).
    BeforeDeletion,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Paths brought back or set to their old content, top down.
    pub restored: Vec<String>,
    /// Paths left as they are, and why.
    pub skipped: Vec<(String, String)>,
}

/// Why nothing could be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The path is not valid.
    #[error(transparent)]
    Path(#[from] super::PathError),
    /// Nothing was ever there (at that time).
    #[error("{0}")]
    NotFound(String),
    /// The version belongs to no entry that is or was at the path.
    #[error("that is not a version of {0} (see `fsync log {0}`)")]
    NotAVersion(String),
    /// The path exists and nothing says which older state to take.
    #[error("{0} exists; to bring back an older state give --at VERSION or --before TIME")]
    Exists(String),
    /// The version is the file's deletion or its directory's.
    #[error("{0}: that version is not a content (a directory, or the deletion); give --before TIME")]
    NoContent(String),
    /// A local change failed.
    #[error(transparent)]
    Folder(#[from] FolderError),
}

impl Folder {
    fn past_at(&self, id: EntryId, at: Frontier) -> Option<Past> {
        let e = self.entries.get(&id)?;
        if at.is_empty() {
            return None;
        }
        let log = e.doc.oplog();
        let state = super::resolve_at(&e.doc, e.state.kind, &at, true);
        let time = at.iter().map(|&lv| log.time_of(lv)).max().unwrap_or(0);
        Some(Past { id, state, version: at, time })
    }

    /// Entry `id` as its events made before `before` (ms since the epoch,
    /// each author's clock) and what they were made on left it; `None` if
    /// it had no event by then.
    pub fn past_before(&self, id: EntryId, before: u64) -> Option<Past> {
        let log = self.entries.get(&id)?.doc.oplog();
        let graph = log.graph();
        let mut tips = Frontier::new();
        for lv in 0..log.len() {
            if log.time_of(lv) >= before {
                continue;
            }
            let parents = graph.parents_of(lv);
            tips.retain(|t| !parents.contains(t));
            tips.push(lv);
        }
        // A tip may still be an ancestor of another through events made
        // later by a skewed clock.
        let tips = graph.reduce(&tips);
        self.past_at(id, tips)
    }

    /// Entry `id` at one of its versions.
    pub fn past_at_version(&self, id: EntryId, v: EventId) -> Option<Past> {
        let lv = self.entries.get(&id)?.doc.oplog().lv_of(v)?;
        self.past_at(id, smallvec::smallvec![lv])
    }

    /// A deleted entry as it was before its deletion, and when it was
    /// deleted; `None` if it is not deleted.
    pub fn past_before_deletion(&self, id: EntryId) -> Option<(Past, u64)> {
        let e = self.entries.get(&id)?;
        if e.state.alive {
            return None;
        }
        let log = e.doc.oplog();
        let graph = log.graph();
        let is_delete = |lv: Lv| matches!(log.marker(lv).map(Meta::decode), Some(Ok(Meta::Delete)));
        let deleted_at = e.doc.version().iter().map(|&lv| log.time_of(lv)).max().unwrap_or(0);
        let mut at: Frontier = e.doc.version().iter().copied().collect();
        // Step back over deletions (deleted on two replicas, or twice).
        for _ in 0..log.len() {
            if at.is_empty() || !at.iter().all(|&lv| is_delete(lv)) {
                break;
            }
            let mut parents: Frontier = at.iter().flat_map(|&lv| graph.parents_of(lv)).collect();
            parents.sort_unstable();
            parents.dedup();
            at = graph.reduce(&parents);
        }
        Some((self.past_at(id, at)?, deleted_at))
    }

    /// Where an entry shows, or, for a deleted one, where it was: its
    /// location's names up to the first parent that shows.
    pub fn path_of_any(&mut self, id: EntryId) -> Option<String> {
        let _ = self.tree();
        let mut names = Vec::new();
        let mut at = Some(id);
        for _ in 0..=self.entries.len() {
            let Some(cur) = at else {
                names.reverse();
                return Some(names.join("/"));
            };
            if let Some(p) = self.tree.path_of(cur) {
                names.push(p.to_owned());
                names.reverse();
                return Some(names.join("/"));
            }
            let state = &self.entries.get(&cur)?.state;
            if state.name.is_empty() {
                return None;
            }
            names.push(state.name.clone());
            at = state.parent;
        }
        None
    }

    /// Deleted files and links at `dir` or below (`""`: everywhere), at
    /// paths where nothing shows now: for each path, the one deleted last.
    pub fn deleted(&mut self, dir: &str) -> Vec<Deleted> {
        let mut by_path: std::collections::BTreeMap<String, Deleted> = Default::default();
        for (id, path, (last, deleted_at)) in self.deleted_within(dir) {
            if last.state.kind == Kind::Dir || self.tree().lookup(&path).is_some() {
                continue;
            }
            let Some(e) = self.entries.get(&id) else { continue };
            let last_ids = last.version.iter().map(|&lv| e.doc.oplog().id_of(lv)).collect();
            let d = Deleted { path: path.clone(), deleted_at, last, last_ids };
            match by_path.get(&path) {
                Some(old) if (old.deleted_at, old.last.id) >= (d.deleted_at, d.last.id) => {}
                _ => {
                    by_path.insert(path, d);
                }
            }
        }
        by_path.into_values().collect()
    }

    /// The deleted entries that were at `dir` or below, with where they
    /// were and their state before the deletion (see
    /// [`Folder::past_before_deletion`]). Walks every entry: for commands a
    /// user runs, not for the sync path.
    fn deleted_within(&mut self, dir: &str) -> Vec<(EntryId, String, (Past, u64))> {
        let dead: Vec<EntryId> = self.entries.iter().filter(|(_, e)| !e.state.alive).map(|(id, _)| *id).collect();
        dead.into_iter()
            .filter_map(|id| {
                let path = self.path_of_any(id).filter(|p| within(p, dir))?;
                Some((id, path, self.past_before_deletion(id)?))
            })
            .collect()
    }

    /// The entries that are or were at `path`: the one showing there first,
    /// then deleted ones, last deleted first.
    pub fn entries_at(&mut self, path: &str) -> Vec<EntryId> {
        let mut out: Vec<EntryId> = self.tree().lookup(path).map(|n| n.id).into_iter().collect();
        let mut gone: Vec<(u64, EntryId)> =
            self.deleted_within(path).into_iter().filter(|(_, p, _)| p == path).map(|(id, _, (_, t))| (t, id)).collect();
        gone.sort_unstable_by(|a, b| b.cmp(a));
        out.extend(gone.into_iter().map(|(_, id)| id));
        out
    }

    /// What a restore of `path` to `point` brings back: (path, state) top
    /// down.
    fn restore_targets(&mut self, path: &str, point: RestorePoint) -> Result<Vec<(String, Past)>, RestoreError> {
        match point {
            RestorePoint::Version(v) => {
                let found = self.entries_at(path).into_iter().find_map(|id| self.past_at_version(id, v));
                let past = found.ok_or_else(|| RestoreError::NotAVersion(path.to_owned()))?;
                if past.state.kind == Kind::Dir || !past.state.alive {
                    return Err(RestoreError::NoContent(path.to_owned()));
                }
                Ok(vec![(path.to_owned(), past)])
            }
            RestorePoint::Before(t) => {
                let pasts: HashMap<EntryId, Past> =
                    self.entries.keys().filter_map(|&id| self.past_before(id, t)).map(|p| (p.id, p)).collect();
                let tree = Tree::build(pasts.iter().map(|(id, p)| (*id, &p.state)));
                let mut out: Vec<(String, Past)> =
                    tree.below(path).into_iter().filter_map(|n| Some((n.path.clone(), pasts.get(&n.id)?.clone()))).collect();
                if out.is_empty() {
                    return Err(RestoreError::NotFound(format!("{path}: nothing was there at that time")));
                }
                sort_top_down(&mut out);
                Ok(out)
            }
            RestorePoint::BeforeDeletion => {
                if path.is_empty() || self.tree().lookup(path).is_some() {
                    return Err(RestoreError::Exists(path.to_owned()));
                }
                let mut last: Option<(u64, Past)> = None;
                for id in self.entries_at(path) {
                    if let Some((p, t)) = self.past_before_deletion(id) {
                        if last.as_ref().is_none_or(|(lt, _)| t > *lt) {
                            last = Some((t, p));
                        }
                    }
                }
                let (t, top) = last.ok_or_else(|| RestoreError::NotFound(format!("{path}: nothing was deleted there")))?;
                let mut out = vec![(path.to_owned(), top.clone())];
                if top.state.kind == Kind::Dir {
                    let inside = self
                        .deleted_within(path)
                        .into_iter()
                        .filter(|(_, p, (_, at))| p != path && at.abs_diff(t) <= DELETION_EPISODE_MS);
                    out.extend(inside.map(|(_, p, (past, _))| (p, past)));
                }
                sort_top_down(&mut out);
                // One state per path: of entries deleted at one path, the
                // one deleted last.
                out.dedup_by(|b, a| a.0 == b.0);
                Ok(out)
            }
        }
    }

    /// Brings `path` (a file, link or whole directory) back as it was at
    /// `point`, as new local changes. A path that shows something of another
    /// kind now is left as it is; one that shows a file of the same kind
    /// gets the old content as a new version (unless the point is
    /// [`RestorePoint::BeforeDeletion`]: what was made there since stays).
    /// A binary version whose chunks `has` does not hold is skipped.
    /// Entries that live elsewhere now (moved since) are copied back, not
    /// taken away from where they are.
    pub fn restore(
        &mut self,
        path: &str,
        point: RestorePoint,
        now: u64,
        has: &dyn Fn(&ChunkRef) -> bool,
    ) -> Result<Restored, RestoreError> {
        // "": the whole folder.
        if !path.is_empty() {
            split_path(path)?;
        }
        let targets = self.restore_targets(path, point)?;
        let mut done = Restored::default();
        for (p, past) in targets {
            if let Content::Binary { chunks, .. } = &past.state.content {
                if !chunks.iter().all(has) {
                    done.skipped.push((
                        p,
                        "the content of that version is not on this node (history retention, or not arrived yet)".into(),
                    ));
                    continue;
                }
            }
            let (dir, name) = match p.rsplit_once('/') {
                Some((d, n)) => (d.to_owned(), n.to_owned()),
                None => (String::new(), p.clone()),
            };
            let parent = if dir.is_empty() {
                None
            } else {
                match self.tree().lookup(&dir) {
                    Some(n) if n.kind == Kind::Dir => Some(n.id),
                    Some(_) => {
                        done.skipped.push((p, format!("{dir} is not a directory now; left as it is")));
                        continue;
                    }
                    None => {
                        let parts = split_path(&dir)?;
                        self.ensure_dir(&parts, now)?
                    }
                }
            };
            let kind = past.state.kind;
            let id = match self.tree().lookup(&p).map(|n| (n.id, n.kind)) {
                Some((_, k)) if k != kind => {
                    done.skipped.push((p, format!("is a {} now; left as it is", k.name())));
                    continue;
                }
                Some(_) if point == RestorePoint::BeforeDeletion && kind != Kind::Dir => {
                    done.skipped.push((p, "made anew since; left as it is".into()));
                    continue;
                }
                Some((id, _)) => id,
                None if !self.entries.get(&past.id).is_some_and(|e| e.state.alive) => {
                    self.move_into(past.id, parent, &name, now)?;
                    past.id
                }
                None => self.create_in(parent, &name, kind, now),
            };
            self.set_content(id, &past, now)?;
            done.restored.push(p);
        }
        Ok(done)
    }

    /// The whole folder as the events made before `before` (ms since the
    /// epoch, the authors' clocks) left it, as a folder of its own: made by
    /// `agent`, sharing no history with this one, for looking at (a
    /// read-only mount of the past). Binary content refers to the same
    /// chunks. Empty when nothing existed then.
    pub fn as_of(&mut self, before: u64, agent: AgentId) -> Result<Folder, RestoreError> {
        let mut past = Folder::new(agent);
        let targets = match self.restore_targets("", RestorePoint::Before(before)) {
            Ok(t) => t,
            Err(RestoreError::NotFound(_)) => return Ok(past),
            Err(e) => return Err(e),
        };
        for (p, then) in targets {
            let (dir, name) = p.rsplit_once('/').unwrap_or(("", p.as_str()));
            let parent = match dir {
                "" => None,
                dir => match past.tree().lookup(dir) {
                    Some(n) if n.kind == Kind::Dir => Some(n.id),
                    // Under a path that was no directory then: not part of
                    // the tree at that time.
                    _ => continue,
                },
            };
            let id = past.create_in(parent, name, then.state.kind, then.time);
            match &then.state.content {
                Content::Text => {
                    let text = self.entries.get(&then.id).ok_or(FolderError::UnknownEntry(then.id))?.doc.text_at(&then.version);
                    past.set_text(id, &text, then.time)?;
                }
                Content::Binary { chunks, .. } => past.write_binary(id, chunks.clone(), then.time)?,
                Content::Link(t) => past.set_link(id, t, then.time)?,
                Content::None => {}
            }
            if then.state.exec {
                past.set_exec(id, true, then.time)?;
            }
        }
        Ok(past)
    }

    /// Gives entry `id` the content and executable bit of `past` (of any
    /// entry).
    fn set_content(&mut self, id: EntryId, past: &Past, now: u64) -> Result<(), FolderError> {
        let current = self.entries.get(&id).ok_or(FolderError::UnknownEntry(id))?.state.content.clone();
        match &past.state.content {
            Content::None => return Ok(()),
            Content::Text => {
                let text = self.entries.get(&past.id).ok_or(FolderError::UnknownEntry(past.id))?.doc.text_at(&past.version);
                self.set_text(id, &text, now)?;
            }
            Content::Binary { chunks, .. } => {
                if current != past.state.content {
                    self.write_binary(id, chunks.clone(), now)?;
                }
            }
            Content::Link(t) => {
                if current != past.state.content {
                    self.set_link(id, t, now)?;
                }
            }
        }
        self.set_exec(id, past.state.exec, now)
    }
}

/// Parents before what is inside them; of states for one path, the newest
/// first.
fn sort_top_down(v: &mut [(String, Past)]) {
    let key = |x: &(String, Past)| (x.0.matches('/').count(), x.0.clone(), std::cmp::Reverse(x.1.time));
    v.sort_by_key(key);
}

#[cfg(test)]
mod tests;
