//! Folder to disk: write the merged state back without ever overwriting a
//! local change the folder has not taken in.
//!
//! Every write goes to a temp file in the same directory, is synced, and is
//! renamed over the target, so a crash leaves the old or the new file, never
//! half of one. Before touching a path, its metadata is compared with what
//! the index last saw; if it differs, the path is skipped and reported, the
//! caller scans (taking the local change in, merged), and writes again.
//!
//! The window between that check and the rename is closed too: the old
//! file is held open across the rename and checked again after it. If a
//! program wrote into it meanwhile, its content (still readable through the
//! open handle) is taken in as a local edit, merged, and written again. What
//! remains: a program that keeps the file open and writes after the rename
//! writes into the replaced inode, as with any editor that saves by rename.
//! A removal is guarded the same way: the file is renamed aside and
//! checked there, then kept for a moment (see [`ASIDE_GRACE`]) and checked
//! again before it goes.

mod fsops;
mod leftovers;
mod stage;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use fsync_core::chunks::{all_present, ChunkStore};
use fsync_core::folder::{Content, EntryId, Folder, Kind};

use crate::ignore::Ignore;
use crate::index::{Index, Known, Stat};
use crate::WatchError;

use fsops::{inaccessible, lstat, moved_as_known, remove_unchanged, replace_link, temp_path, untouched, Removal};
use leftovers::{only_temp_files, take_in_file, take_in_leftovers};
pub use leftovers::{recover_leftovers, Displaced};
use stage::{land_batch, stage, Body, Pending, STAGE_BATCH};

/// What a write-back did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Paths written (created or replaced).
    pub written: Vec<String>,
    /// Paths removed.
    pub removed: Vec<String>,
    /// (from, to) renames on disk.
    pub moved: Vec<(String, String)>,
    /// Paths changed on disk since the last scan: scan, then write again.
    pub needs_scan: Vec<String>,
    /// Binary files whose chunks have not all arrived yet.
    pub waiting_for_chunks: Vec<String>,
    /// Paths written to by someone else during our write: what they wrote
    /// was taken in (text), so write back again.
    pub raced: Vec<String>,
    /// Paths that could not be looked at or written (permission denied),
    /// with why: skipped, the rest was written; try again later.
    pub failed: Vec<(String, String)>,
    /// Temp files holding what a raced write displaced: kept until what was
    /// taken in from them is durable, so a crash before that finds them
    /// again ([`recover_leftovers`]). The caller removes them after its
    /// save ([`WriteReport::settle`]).
    pub displaced: Vec<Displaced>,
    /// Entries the pass left for a later one (a directory in the way that a
    /// scan looks at again shortly, a move waiting for its new path, chunks
    /// still to come): not on disk as the folder has them yet.
    pub unsettled: Vec<EntryId>,
    /// Paths the folder deleted (a peer's mass deletion) that the guard
    /// held ([`Index::guard`]): left on disk and known, until the guard is
    /// opened.
    pub held_removals: Vec<String>,
}

impl WriteReport {
    /// Removes the displaced files: call once what was taken in from them
    /// is saved.
    pub fn settle(&mut self) {
        for d in self.displaced.drain(..) {
            d.remove();
        }
    }
}

/// Brings the disk under `root` to the folder's state.
pub fn write_back(
    root: &Path,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
) -> Result<WriteReport, WatchError> {
    let mut report = write_back_with(root, folder, chunks, index, &mut |_| Ok(()))?;
    report.settle();
    Ok(report)
}

/// [`write_back`], calling `intents` with the index before files are
/// replaced: it then records, for each known path about to be replaced,
/// the inode of the new file and its version ([`Known::staged`]). A caller
/// that saves the index there (durably) makes a crash between a replace and
/// the next save harmless: the restart's scan sees the new inode and knows
/// which version the disk holds, instead of taking the merged text in again
/// as a local edit.
pub fn write_back_with(
    root: &Path,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
    intents: &mut dyn FnMut(&mut Index) -> Result<(), String>,
) -> Result<WriteReport, WatchError> {
    write_back_in(root, folder, chunks, index, intents, &Ignore::load(root), None)
}

/// Which entries the next write-back looks at: those changed since the
/// last pass ([`Folder::take_changed`]), or every entry when the disk may
/// be behind the folder elsewhere too: at first, after the ignore rules
/// changed, after a full rescan, and after a pass cut short by an error.
/// Entries a pass left unsettled ([`WriteReport::unsettled`]: waiting for
/// a scan, for chunks, failed) stay in view until the disk has them.
#[derive(Debug)]
pub struct Dirty {
    all: bool,
    carry: HashSet<EntryId>,
    rules: Option<[u8; 32]>,
}

impl Default for Dirty {
    fn default() -> Self {
        Dirty { all: true, carry: HashSet::new(), rules: None }
    }
}

impl Dirty {
    /// The next pass looks at every entry (after a full rescan, or a
    /// folder back from a stop).
    pub fn all(&mut self) {
        self.all = true;
    }

    /// [`write_back_with`] over what changed since the last pass.
    pub fn write_back(
        &mut self,
        root: &Path,
        folder: &mut Folder,
        chunks: &mut dyn ChunkStore,
        index: &mut Index,
        intents: &mut dyn FnMut(&mut Index) -> Result<(), String>,
    ) -> Result<WriteReport, WatchError> {
        let ignore = Ignore::load(root);
        if ignore.digest() != self.rules {
            self.rules = ignore.digest();
            self.all = true;
        }
        let changed = folder.take_changed();
        let scope = if std::mem::take(&mut self.all) {
            self.carry.clear();
            None
        } else {
            let mut scope = std::mem::take(&mut self.carry);
            scope.extend(changed);
            if scope.is_empty() && !index.aside_due() {
                return Ok(WriteReport::default());
            }
            Some(scope)
        };
        let r = write_back_in(root, folder, chunks, index, intents, &ignore, scope.as_ref());
        // What waits for a scan, failed or raced is unsettled (and what the
        // scan takes in is changed): only a pass cut short needs them all.
        match &r {
            Ok(rep) => self.carry.extend(rep.unsettled.iter().copied()),
            Err(_) => self.all = true,
        }
        r
    }
}

/// How long a file removed for a peer's deletion is kept aside before it
/// goes: a program that had it open may still write into it. A write in
/// that time is an edit made before it saw the deletion (concurrent with
/// it), so the file lives on with it.
pub const ASIDE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A file a peer's deletion removed from `path`, kept at `tmp` (ignored
/// by scans) until [`ASIDE_GRACE`] has passed.
#[derive(Clone, Debug)]
pub(crate) struct Aside {
    tmp: std::path::PathBuf,
    known: Known,
    path: String,
    pub(crate) at: std::time::Instant,
}

/// Looks at the files kept aside whose time is up: one still as it was
/// goes; one written since is taken in as an edit of its entry (reported
/// as raced, like a write that raced a replace).
fn settle_aside(
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
    report: &mut WriteReport,
) -> Result<(), WatchError> {
    let (due, waiting): (Vec<Aside>, Vec<Aside>) =
        std::mem::take(&mut index.aside).into_iter().partition(|a| a.at.elapsed() >= ASIDE_GRACE);
    index.aside = waiting;
    for a in due {
        let k = &a.known;
        let changed = lstat(&a.tmp).is_some_and(|s| !s.same_file(&k.stat));
        if changed {
            take_in_file(folder, chunks, k, &a.tmp)?;
            report.raced.push(a.path.clone());
        }
        let _ = std::fs::remove_file(&a.tmp);
    }
    Ok(())
}

/// The write-back, over every entry (`scope` none) or those in `scope`.
fn write_back_in(
    root: &Path,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
    intents: &mut dyn FnMut(&mut Index) -> Result<(), String>,
    ignore: &Ignore,
    scope: Option<&HashSet<EntryId>>,
) -> Result<WriteReport, WatchError> {
    let mut report = WriteReport::default();
    settle_aside(folder, chunks, index, &mut report)?;
    // What this node ignores is never written, moved or removed here (a
    // peer's file at such a path stays in the folder, not on this disk).
    let shown = |n: &&fsync_core::folder::Node| !ignore.ignored(&n.path, n.kind == Kind::Dir);
    let nodes: Vec<fsync_core::folder::Node> = match scope {
        None => folder.tree().nodes().filter(shown).cloned().collect(),
        Some(changed) => {
            // Parents first, as in a full pass.
            let tree = folder.tree();
            let paths: std::collections::BTreeSet<&str> = changed.iter().filter_map(|id| tree.path_of(*id)).collect();
            paths.into_iter().filter_map(|p| tree.lookup(p)).filter(shown).cloned().collect()
        }
    };
    let in_view: HashSet<EntryId> = match scope {
        None => HashSet::new(),
        Some(c) => c.iter().copied().chain(nodes.iter().map(|n| n.id)).collect(),
    };

    // Old names of files moved a while ago no longer matter, nor what the
    // disk held before writes a while ago.
    index.moved_away.retain(|_, m| m.1.elapsed() < crate::scan::UNSEEN_WRITE);
    if scope.is_none() {
        index.files.forget_old_writes();
    }
    // Renames first: an entry the index knows at another path moves on disk
    // (keeping its inode), if that path is untouched.
    // (The last of an entry's paths, when the index knows it at two.)
    let mut by_id: std::collections::HashMap<EntryId, String> = match scope {
        None => index.files.iter().map(|(p, k)| (k.id, p.clone())).collect(),
        Some(_) => in_view.iter().filter_map(|id| Some((*id, index.files.paths_of(id).last()?.clone()))).collect(),
    };
    let mut held = Held::default();
    // A move whose new path is still taken waits for the end of the pass
    // (what is there may move away first, as in a swap of two names).
    let mut queue: std::collections::VecDeque<(&fsync_core::folder::Node, bool)> = nodes.iter().map(|n| (n, false)).collect();
    while let Some((n, retried)) = queue.pop_front() {
        if held.below(&n.path) {
            held.ids.insert(n.id);
            continue;
        }
        let Some(old) = by_id.get(&n.id).cloned() else {
            continue;
        };
        if old == n.path {
            continue;
        }
        if index.files.contains_key(&n.path) || lstat(&root.join(&n.path)).is_some() {
            if !retried {
                queue.push_back((n, true));
            } else if !untouched(root, &old, index.files.get(&old)) {
                // Changed or gone at its old path: written at the new one,
                // it would undo what the user did there (a file the user
                // deleted would come back). The scan takes it in first.
                held.hold(n, &old);
                needs_scan(index, &mut report, old);
            }
            continue;
        }
        if let Some(why) = inaccessible(root, &old).or_else(|| inaccessible(root, &n.path)) {
            held.hold(n, &old);
            report.failed.push((old, why));
            continue;
        }
        // Moved below its own old name (`mv x t; mkdir -p x/y; mv t x/y/f`
        // on a peer): it is in the way of the new directories only (a
        // directory would go into itself), and goes through a temp name.
        let below_itself = n.path.strip_prefix(old.as_str()).is_some_and(|r| r.starts_with('/'));
        if let Some(gone) = in_the_way(root, index, &n.path, false)
            .or_else(|| not_a_dir_above(index, &n.path))
            .filter(|a| *a != old)
            .or_else(|| in_the_way(root, index, &old, false).filter(|a| *a != old))
        {
            needs_scan(index, &mut report, gone);
            held.hold(n, &old);
            continue;
        }
        if !untouched(root, &old, index.files.get(&old)) {
            // Not written at its new path either: that would make a second
            // copy beside the changed old one (the index would know the
            // entry at two paths). The scan takes the change in, then the
            // next pass moves it.
            held.hold(n, &old);
            needs_scan(index, &mut report, old);
            continue;
        }
        // Gone or changed between the checks and the rename (the user moved
        // or deleted it meanwhile): the scan tells which, and it waits.
        let raced = |e: &std::io::Error| matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory);
        let from = if below_itself {
            let aside = temp_path(root.join(&old).parent().unwrap_or(root));
            match std::fs::rename(root.join(&old), &aside) {
                Ok(()) => aside,
                Err(e) if raced(&e) => {
                    held.hold(n, &old);
                    needs_scan(index, &mut report, old);
                    continue;
                }
                Err(e) => return Err(WatchError::io(&root.join(&old), e)),
            }
        } else {
            root.join(&old)
        };
        let landed = match root.join(&n.path).parent() {
            Some(parent) => std::fs::create_dir_all(parent).map_err(|e| WatchError::io(parent, e)),
            None => Ok(()),
        }
        .and_then(|()| std::fs::rename(&from, root.join(&n.path)).map_err(|e| WatchError::io(&from, e)));
        if let Err(e) = landed {
            // Nothing stays under a temp name.
            if below_itself {
                let _ = std::fs::rename(&from, root.join(&old));
            }
            if matches!(&e, WatchError::Io { cause, .. } if raced(cause)) {
                held.hold(n, &old);
                needs_scan(index, &mut report, old);
                continue;
            }
            return Err(e);
        }
        // What moved must be the entry's own inode, or the scan takes in
        // what the user put there instead.
        let known = index.files.get(&old).map(|k| (k.stat.ino, k.kind));
        if !moved_as_known(&root.join(&n.path), &root.join(&old), known) {
            held.hold(n, &old);
            needs_scan(index, &mut report, old);
            continue;
        }
        for k in index.files.at_or_below(&old) {
            if let Some(mut v) = index.files.remove(&k) {
                let nk = format!("{}{}", n.path, &k[old.len()..]);
                // The rename changed only the moved inode's ctime (and a
                // directory's own entries). What is below keeps the stat
                // the index had: a file written since the last scan (its
                // directory's stat does not show it) must still look
                // changed, or its edit would be taken for ours and lost.
                if k == old {
                    if let Some(now) = lstat(&root.join(&nk)) {
                        if v.kind == Kind::Dir {
                            v.stat = now;
                        } else if now.same_file(&v.stat) {
                            v.stat.ctime = now.ctime;
                        }
                    }
                }
                if v.kind == Kind::File {
                    index.moved_away.insert(k.clone(), (v.id, std::time::Instant::now(), v.base.clone()));
                }
                by_id.insert(v.id, nk.clone());
                index.files.insert(nk, v);
            }
        }
        report.moved.push((old, n.path.clone()));
    }

    // Removals, deepest first: what the index has that the tree does not,
    // or has as another kind (a path that changed kind on a peer: the old
    // kind goes first, then the new one is written).
    let stale: Vec<(String, Known)> = match scope {
        None => {
            let wanted: HashMap<&str, Kind> = nodes.iter().map(|n| (n.path.as_str(), n.kind)).collect();
            index
                .files
                .iter()
                .rev()
                .filter(|(p, k)| wanted.get(p.as_str()) != Some(&k.kind) && !ignore.ignored(p, k.kind == Kind::Dir))
                .map(|(p, k)| (p.clone(), k.clone()))
                .collect()
        }
        Some(_) => {
            // The changed entries where the disk has them, what is at their
            // paths now, and what is below such directories.
            let mut paths: std::collections::BTreeSet<String> =
                in_view.iter().flat_map(|id| index.files.paths_of(id)).cloned().collect();
            paths.extend(nodes.iter().filter(|n| index.files.contains_key(&n.path)).map(|n| n.path.clone()));
            let dirs: Vec<String> = paths
                .iter()
                .filter(|p| index.files.get(*p).is_some_and(|k| k.kind == Kind::Dir))
                .map(|p| format!("{p}/"))
                .collect();
            for d in dirs {
                paths.extend(index.files.range(d.clone()..).take_while(|(p, _)| p.starts_with(&d)).map(|(p, _)| p.clone()));
            }
            let tree = folder.tree();
            paths
                .into_iter()
                .rev()
                .filter_map(|p| {
                    let k = index.files.get(&p)?;
                    let wanted = tree.lookup(&p).filter(shown).map(|n| n.kind);
                    (wanted != Some(k.kind) && !ignore.ignored(&p, k.kind == Kind::Dir)).then(|| (p.clone(), k.clone()))
                })
                .collect()
        }
    };
    let to_remove: Vec<(String, EntryId)> = stale.iter().map(|(p, k)| (p.clone(), k.id)).collect();
    // Too many files to remove at once (deleted on a peer, not moved and
    // not replaced by another kind): held (see `crate::guard`). The index
    // keeps them, so a pass after the user lets them through removes them.
    let mut guarded: HashSet<String> = {
        let tree = folder.tree();
        stale
            .iter()
            .filter(|(p, k)| !held.ids.contains(&k.id) && !held.below(p) && tree.lookup(p).filter(shown).is_none())
            .map(|(p, _)| p.clone())
            .collect()
    };
    let files = stale.iter().filter(|(p, k)| k.kind != Kind::Dir && guarded.contains(p)).count();
    let tracked = || index.files.iter().filter(|(_, k)| k.kind != Kind::Dir).count();
    if !(index.guard.weighs(files) && index.guard.holds(files, tracked())) {
        guarded.clear();
    }
    for (p, k) in stale {
        // Moved in the folder, but the move waits for the scan (see above):
        // the scan needs the old path to find where the user moved it.
        if held.ids.contains(&k.id) || held.below(&p) {
            continue;
        }
        if guarded.contains(&p) {
            report.held_removals.push(p);
            continue;
        }
        let full = root.join(&p);
        if let Some(why) = inaccessible(root, &p) {
            report.failed.push((p, why));
            continue;
        }
        // A directory above it moved, deleted or replaced here (by a link:
        // what it leads to is not ours to remove), not scanned yet.
        if let Some(dir) = p.rsplit_once('/').and_then(|(dir, _)| in_the_way(root, index, dir, true)) {
            needs_scan(index, &mut report, dir);
            continue;
        }
        if lstat(&full).is_none() {
            // Gone here before we removed it: the user moved or deleted it,
            // and the scan needs this path, known, to tell which: a file
            // the user moved must be found at its new place as the entry it
            // was, not as a new one (a move concurrent with the deletion
            // keeps it there, with its history; see `scan::move_entry`).
            report.needs_scan.push(p);
            continue;
        }
        // A directory's own stat changes as what is in it is removed
        // above: it is the same directory while it has the same inode, and
        // `remove_dir` leaves it if anything is still in it.
        let same = match k.kind {
            Kind::Dir => lstat(&full).is_some_and(|s| s.ino == k.stat.ino),
            _ => untouched(root, &p, Some(&k)),
        };
        if !same {
            report.needs_scan.push(p);
            continue;
        }
        let mut r = match k.kind {
            Kind::Dir => std::fs::remove_dir(&full),
            _ => match remove_unchanged(root, &full, &k.stat) {
                Ok(Removal::Removed(tmp)) => {
                    index.aside.push(Aside { tmp, known: k.clone(), path: p.clone(), at: std::time::Instant::now() });
                    Ok(())
                }
                Ok(Removal::PutBack) => {
                    report.needs_scan.push(p);
                    continue;
                }
                Ok(Removal::Kept(tmp)) => {
                    // Written meanwhile, and something new took its path:
                    // the write is an edit of the entry, concurrent with the
                    // deletion, so the entry lives on with it.
                    take_in_file(folder, chunks, &k, &tmp)?;
                    let _ = std::fs::remove_file(&tmp);
                    index.files.remove(&p);
                    report.raced.push(p);
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        // Our temp files left in a directory (a displaced file that moved
        // with it before it could be removed, or a killed process's) are
        // leftovers: nothing is staged between passes.
        if r.is_err() && k.kind == Kind::Dir {
            if let Some(temps) = only_temp_files(&full) {
                take_in_leftovers(root, temps, folder, chunks, index)?;
                r = std::fs::remove_dir(&full);
            }
        }
        match r {
            Ok(()) => report.removed.push(p.clone()),
            // Moved or removed by the user meanwhile: the scan tells which.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.needs_scan.push(p);
                continue;
            }
            // A directory with unsynced (ignored or new) files stays, and
            // the index keeps it: what the scan then finds in it goes into
            // that directory entry (which it keeps), not into whatever a
            // peer made at its name.
            Err(_) if k.kind == Kind::Dir => continue,
            Err(e) => return Err(WatchError::io(&full, e)),
        }
        index.files.remove(&p);
    }

    // Writes, parents first; content is staged in batches, the intents
    // recorded, then the batch lands.
    let mut batch: Vec<Pending> = Vec::new();
    for n in &nodes {
        if held.ids.contains(&n.id) {
            continue;
        }
        // A path still holding another kind on disk (changed here since the
        // last scan, so not removed above): nothing is written at or below
        // it until the scan has taken that change in.
        let other_kind = index.files.get(&n.path).is_some_and(|k| k.kind != n.kind).then(|| n.path.clone());
        if let Some(at) = other_kind.or_else(|| not_a_dir_above(index, &n.path)) {
            needs_scan(index, &mut report, at);
            continue;
        }
        let Some(state) = folder.state(n.id).cloned() else {
            continue;
        };
        let doc_version = folder.doc(n.id).map(|d| d.version_ids()).unwrap_or_default();
        let full = root.join(&n.path);
        let known = index.files.get(&n.path).cloned();
        let up_to_date = known.as_ref().is_some_and(|k| k.id == n.id && k.base == doc_version && k.stat.exec == state.exec);
        if up_to_date && lstat(&full).is_some() {
            continue;
        }
        // Into (or as) a directory the user moved or deleted since the
        // last scan: recreated, it would hide the move from the scan (a
        // directory there again, of another inode), and the directory
        // would lose its identity (found by the oracle).
        if let Some(gone) = in_the_way(root, index, &n.path, n.kind == Kind::Dir) {
            needs_scan(index, &mut report, gone);
            continue;
        }
        // A directory has no content to clobber; anything else must be as
        // the last scan saw it.
        if let Some(why) = inaccessible(root, &n.path) {
            report.failed.push((n.path.clone(), why));
            continue;
        }
        if n.kind != Kind::Dir && !untouched(root, &n.path, known.as_ref()) {
            needs_scan(index, &mut report, n.path.clone());
            continue;
        }
        let text: Vec<u8>;
        let body = match (&state.content, n.kind) {
            (_, Kind::Dir) => {
                std::fs::create_dir_all(&full).map_err(|e| WatchError::io(&full, e))?;
                let stat = lstat(&full).ok_or(WatchError::Gone)?;
                index.files.insert(
                    n.path.clone(),
                    Known { id: n.id, kind: n.kind, stat, base: doc_version, staged: None, written: None },
                );
                if known.is_none() {
                    report.written.push(n.path.clone());
                }
                continue;
            }
            (Content::Link(t), _) => {
                replace_link(&full, t)?;
                let stat = lstat(&full).ok_or(WatchError::Gone)?;
                index.files.insert(
                    n.path.clone(),
                    Known { id: n.id, kind: n.kind, stat, base: doc_version, staged: None, written: None },
                );
                report.written.push(n.path.clone());
                continue;
            }
            (Content::Text, _) => {
                text = folder.doc(n.id).map(|d| d.text()).unwrap_or_default().into_bytes();
                Body::Bytes(&text)
            }
            // Looked up before anything is read: a content still arriving
            // costs no read of what came so far.
            (Content::Binary { chunks: refs, .. }, _) if all_present(refs, &*chunks) => Body::Chunks(refs, &*chunks),
            (Content::Binary { .. }, _) => {
                report.waiting_for_chunks.push(n.path.clone());
                continue;
            }
            (Content::None, _) => continue,
        };
        let staged = match stage(&full, &body, state.exec) {
            Ok(Some(s)) => s,
            Ok(None) => {
                report.waiting_for_chunks.push(n.path.clone());
                continue;
            }
            // Its directory went meanwhile (the user removed or moved it
            // while we wrote): the scan sees where, and the next pass
            // writes again.
            Err(WatchError::Io { cause, .. })
                if matches!(cause.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) =>
            {
                needs_scan(index, &mut report, n.path.clone());
                continue;
            }
            Err(e) => return Err(e),
        };
        batch.push(Pending { path: n.path.clone(), id: n.id, kind: n.kind, version: doc_version, known, staged });
        if batch.len() >= STAGE_BATCH {
            land_batch(std::mem::take(&mut batch), folder, chunks, index, &mut report, intents)?;
            // What a race took in is in memory only until the caller
            // saves; the next batch's intents would save an index that no
            // longer marks the raced file, and a restart would then drop
            // its displaced copy. The rest waits for the next round.
            if !report.raced.is_empty() {
                break;
            }
        }
    }
    land_batch(batch, folder, chunks, index, &mut report, intents)?;
    report.needs_scan.sort();
    report.needs_scan.dedup();
    report.unsettled = unsettled(folder, index, &nodes, by_id.iter().chain(to_remove.iter().map(|(p, id)| (id, p))));
    Ok(report)
}

/// The entries of the pass (`nodes`, and `known`: where the index had
/// the entries looked at, and what it was to remove) whose disk state is
/// not the folder's yet.
fn unsettled<'a>(
    folder: &mut Folder,
    index: &Index,
    nodes: &[fsync_core::folder::Node],
    known: impl Iterator<Item = (&'a EntryId, &'a String)>,
) -> Vec<EntryId> {
    let mut out: Vec<EntryId> = Vec::new();
    for n in nodes {
        let Some(state) = folder.state(n.id) else { continue };
        if matches!(state.content, Content::None) && n.kind != Kind::Dir {
            continue;
        }
        let exec = state.exec;
        let version = folder.doc(n.id).map(|d| d.version_ids()).unwrap_or_default();
        let on_disk = index
            .files
            .get(&n.path)
            .is_some_and(|k| k.id == n.id && k.kind == n.kind && k.base == version && k.stat.exec == exec);
        if !on_disk {
            out.push(n.id);
        }
    }
    let tree = folder.tree();
    for (id, p) in known {
        let still_there = index.files.get(p).is_some_and(|k| k.id == *id);
        if still_there && tree.path_of(*id) != Some(p.as_str()) {
            out.push(*id);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Entries whose move on disk waits for the scan (the user changed or
/// moved something it needs), and what lies below such a directory, at its
/// old and its new path: written into the new path, a file found no
/// directory there (the watcher simulation: the write-back failed on every
/// pass), and the old path's entries are what the scan needs to find where
/// the user moved or deleted the directory.
#[derive(Default)]
struct Held {
    ids: std::collections::HashSet<EntryId>,
    dirs: std::collections::HashSet<String>,
}

impl Held {
    fn hold(&mut self, n: &fsync_core::folder::Node, old: &str) {
        self.ids.insert(n.id);
        if n.kind == Kind::Dir {
            self.dirs.insert(old.to_owned());
            self.dirs.insert(n.path.clone());
        }
    }

    /// True when a held directory is above `path`.
    fn below(&self, path: &str) -> bool {
        !self.dirs.is_empty() && path.match_indices('/').any(|(i, _)| self.dirs.contains(&path[..i]))
    }
}

/// Asks for a scan of `path`, unless a scan found it gone and looks again
/// shortly (see `Index::waiting`; if it came back, its event brings a scan
/// too): asking would scan the whole folder, and that scan would take it
/// for deleted at once.
fn needs_scan(index: &Index, report: &mut WriteReport, path: String) {
    if !index.waiting(&path) {
        report.needs_scan.push(path);
    }
}

/// The first path above `path` that the index knows as something other
/// than a directory: a path that changed kind here (not scanned yet), or
/// on a peer (not removed yet). Nothing goes below it until it is settled.
fn not_a_dir_above(index: &Index, path: &str) -> Option<String> {
    path.match_indices('/')
        .map(|(i, _)| &path[..i])
        .find(|a| index.files.get(*a).is_some_and(|k| k.kind != Kind::Dir))
        .map(str::to_owned)
}

/// The first path on the way to `path` (each directory above it, then
/// `path` itself) where nothing may be made or moved until a scan has
/// looked, one `lstat` each:
/// - a directory the index knows that the disk no longer has, or has
///   replaced (another inode, maybe another kind): the user moved, deleted
///   or replaced it, and the scan has not seen that yet;
/// - something other than a directory above `path` (and at it, when
///   `itself`: `path` is to be a directory), known or not: a link or file
///   made here and not scanned yet. Through a link, a write would land
///   outside the folder.
fn in_the_way(root: &Path, index: &Index, path: &str, itself: bool) -> Option<String> {
    let mut at = 0;
    loop {
        let end = path[at..].find('/').map_or(path.len(), |i| at + i);
        let dir = &path[..end];
        let on_disk = std::fs::symlink_metadata(root.join(dir)).ok();
        let blocked = match index.files.get(dir).filter(|k| k.kind == Kind::Dir) {
            Some(k) => on_disk.is_none_or(|m| !m.is_dir() || Stat::of(&m).ino != k.stat.ino),
            None => (end < path.len() || itself) && on_disk.is_some_and(|m| !m.is_dir()),
        };
        if blocked {
            return Some(dir.to_owned());
        }
        if end == path.len() {
            return None;
        }
        at = end + 1;
    }
}
