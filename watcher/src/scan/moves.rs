//! Moves: an entry found at a new path (by inode, by content, by its
//! lines), put there in the folder, and what a move replaced.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use fsync_core::chunks::ChunkStore;
use fsync_core::folder::{Content, EntryId, Folder, Kind};
use fsync_core::ingest::{take_in, Body};
use fsync_core::EventId;

use crate::index::{Index, Known, Stat};
use crate::similar;
use crate::WatchError;

use super::on_disk::OnDisk;
use super::read::read_body;
use super::{ScanReport, TEXT_MAX};

/// True when the file at `path` holds the inode `known` had, but is not
/// that file: it was deleted and its inode given to a new file (ext4 and
/// tmpfs hand freed inodes out again at once). A file that kept its size
/// and mtime was only moved; one that changed too is the same file only if
/// its text still shares most lines with what `known` held. Text that
/// became binary, or binary that became text, is another file: a deletion
/// taken for a move would supersede a peer's concurrent edit. Binary
/// content cannot tell otherwise: the inode is trusted.
pub(super) fn inode_reused(root: &Path, folder: &Folder, path: &str, known: &Known) -> bool {
    let Ok(m) = std::fs::symlink_metadata(root.join(path)) else {
        return false;
    };
    if m.len() == known.stat.size && Stat::of(&m).mtime == known.stat.mtime {
        return false;
    }
    let was_text = folder.state(known.id).is_some_and(|s| s.content == Content::Text);
    if m.len() > TEXT_MAX {
        return was_text;
    }
    let mut none = fsync_core::chunks::Chunks::default();
    match (read_body(&root.join(path), Kind::File, &mut none), folder.doc(known.id)) {
        (Ok(Body::Text(now)), Some(doc)) if was_text => {
            let was = doc.lvs_of(&known.base).map_or_else(|| doc.text(), |l| doc.text_at(&l));
            similar::pair(&[was.as_str()], &[now.as_str()]).is_empty()
        }
        (Ok(Body::Text(_)), _) => !was_text,
        (Ok(_), _) => was_text,
        (Err(_), _) => false,
    }
}

/// Where the disk's `path` is in the folder: below the directory the index
/// knows at its parent, wherever the folder has that directory now. The
/// two differ while a peer's move of a directory is merged but not yet
/// written here (or held, see the write-back): read as a folder path, a
/// file moved or made in that directory on disk was put in a new directory
/// of the old name (a second copy of the directory), or the scan failed on
/// the names (the watcher simulation).
pub(super) fn in_folder(folder: &mut Folder, index: &Index, path: &str) -> String {
    let Some((parent, name)) = path.rsplit_once('/') else {
        return path.to_owned();
    };
    match index.files.get(parent).filter(|k| k.kind == Kind::Dir).and_then(|k| folder.tree().path_of(k.id)) {
        Some(at) => format!("{at}/{name}"),
        None => format!("{}/{name}", in_folder(folder, index, parent)),
    }
}

/// The directory entry that the disk's parent directory of `path` is, with
/// the name: the entry the index knows there, wherever the folder has it
/// now, and even if a peer deleted it meanwhile (what this disk moves or
/// makes in it goes into it, by id, which keeps it: CONTRACT, a directory
/// deleted on one node and a new file put inside it on another; by path it
/// met a file a peer made at the directory's name, and the scan failed with
/// `not a directory`). A parent directory new on disk is the folder's
/// directory of that name there, or is made.
pub(super) fn place(folder: &mut Folder, index: &Index, path: &str, now: u64) -> Result<(Option<EntryId>, String), WatchError> {
    let Some((parent, name)) = path.rsplit_once('/') else {
        return Ok((None, path.to_owned()));
    };
    if let Some(k) = index.files.get(parent).filter(|k| k.kind == Kind::Dir) {
        if folder.state(k.id).is_some_and(|s| s.kind == Kind::Dir) {
            return Ok((Some(k.id), name.to_owned()));
        }
    }
    let (grand, dir) = place(folder, index, parent, now)?;
    let existing = match grand.map(|g| folder.tree().path_of(g).map(str::to_owned)) {
        None => folder.tree().lookup(&dir).filter(|n| n.kind == Kind::Dir).map(|n| n.id),
        Some(Some(at)) => folder.tree().lookup(&format!("{at}/{dir}")).filter(|n| n.kind == Kind::Dir).map(|n| n.id),
        Some(None) => None,
    };
    let id = match existing {
        Some(id) => id,
        None => folder.create_into(grand, &dir, Kind::Dir, now)?,
    };
    Ok((Some(id), name.to_owned()))
}

/// Moves entry `id` to where the disk has it (`path`), as the disk showed
/// it before (`base`): what arrived since and was never on disk is
/// concurrent with the move, so an entry deleted meanwhile lives on where
/// the user put it. Only a peer's move not on disk yet comes first: ours
/// follows it. A move into itself in the folder (the user moved a
/// directory into one that a peer moved into it) is not recorded: the
/// peer's stands. An entry not shown while alive (its directory was
/// deleted) is not moved. Returns the base from now on: with our move in
/// it, so that a later edit or deletion here follows the move.
pub(super) fn move_entry(
    folder: &mut Folder,
    index: &Index,
    id: EntryId,
    base: &[EventId],
    path: &str,
    now: u64,
) -> Result<Vec<EventId>, WatchError> {
    // A base the entry does not have (an index from before bases were
    // kept): the folder as it is.
    let base: Vec<EventId> = match folder.doc(id) {
        Some(d) if base.is_empty() || d.lvs_of(base).is_none() => d.version_ids(),
        _ => base.to_vec(),
    };
    let deleted = folder.state(id).is_some_and(|s| !s.alive);
    if folder.tree().path_of(id).is_none() && !deleted {
        return Ok(base);
    }
    let (parent, name) = place(folder, index, path, now)?;
    // A peer's move of it not on disk yet: ours follows it (concurrent
    // moves of directories into each other would make a cycle the disk
    // cannot take in one pass), and `base` stays as it was: with our move
    // in it, it would hold what arrived with the peer's, which the disk
    // does not show (an edit taken in from there would undo it).
    let after_peers = moved_since(folder, id, &base);
    let r = if after_peers {
        folder.move_into(id, parent, &name, now)
    } else {
        folder.move_into_from(id, &base, parent, &name, now)
    };
    match r {
        Err(fsync_core::folder::FolderError::IntoItself) => {
            // The disk has it where the folder does not: the write-back
            // puts it back.
            tracing::debug!(path, "a move into itself in the folder: the folder's move wins");
            folder.mark_changed(id);
            Ok(base)
        }
        Err(e) => Err(e.into()),
        Ok(()) if after_peers => Ok(base),
        Ok(()) => Ok(with_newest(folder, id, &base)),
    }
}

/// Whether entry `id` was moved (or made) since `base`, by changes not on
/// disk yet.
pub(super) fn moved_since(folder: &Folder, id: EntryId, base: &[EventId]) -> bool {
    let Some(doc) = folder.doc(id) else { return false };
    let Some(b) = doc.lvs_of(base) else { return false };
    let log = doc.oplog();
    let (_, since) = log.graph().diff(&b, doc.version());
    since.into_iter().flatten().any(|lv| {
        matches!(
            log.marker(lv).map(fsync_core::folder::Meta::decode),
            Some(Ok(fsync_core::folder::Meta::Move { .. } | fsync_core::folder::Meta::Create { .. }))
        )
    })
}

/// `base` and the entry's newest event (one just made here).
pub(super) fn with_newest(folder: &Folder, id: EntryId, base: &[EventId]) -> Vec<EventId> {
    let Some(doc) = folder.doc(id) else { return base.to_vec() };
    let log = doc.oplog();
    let Some(newest) = log.len().checked_sub(1) else { return base.to_vec() };
    let mut lvs = doc.lvs_of(base).unwrap_or_default();
    lvs.push(newest);
    log.graph().reduce(&lvs).iter().map(|&lv| log.id_of(lv)).collect()
}

/// Whether entry `id` can move to folder path `path` now: its parent
/// directory is in the folder, and is not the entry or below it. Moves
/// that can go first (a move into a directory made on disk since cannot
/// wait: its rename makes the directory). A directory moved into its own
/// former subdirectory, which moved out first (`mv d/sub x; mv d x/sub/d`),
/// waits for that move: taken first, its rename made the missing parents
/// anew, and the second move found its name taken (the scan failed on
/// every try).
pub(super) fn placeable(folder: &mut Folder, id: EntryId, path: &str) -> bool {
    let tree = folder.tree();
    let Some((parent, _)) = path.rsplit_once('/') else {
        return true;
    };
    match (tree.lookup(parent), tree.path_of(id)) {
        (Some(p), Some(own)) => p.kind == Kind::Dir && parent != own && !parent.starts_with(&format!("{own}/")),
        (Some(p), None) => p.kind == Kind::Dir,
        (None, _) => false,
    }
}

/// Takes each (old path, new path) of `pairs` for the file known at the
/// old path, moved to the new one and edited there (its content read into
/// `bodies`).
#[allow(clippy::too_many_arguments)]
pub(super) fn moved_and_edited(
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
    report: &mut ScanReport,
    disk: &BTreeMap<String, OnDisk>,
    bodies: &mut HashMap<String, Body>,
    pairs: Vec<(String, String)>,
    now: u64,
) -> Result<(), WatchError> {
    for (old, p) in pairs {
        let (Some(d), Some(body)) = (disk.get(&p), bodies.remove(&p)) else {
            continue;
        };
        let Some(known) = index.files.remove(&old) else {
            continue;
        };
        let moved = move_entry(folder, index, known.id, &known.base, &p, now)?;
        let base = take_in(folder, chunks, known.id, &moved, body, d.stat.exec, now)?;
        index.files.insert(p.clone(), Known { stat: d.stat, base, staged: None, written: None, ..known });
        report.moved.push((old, p.clone()));
        report.modified.push(p);
    }
    Ok(())
}

/// Moves of text files: a known one `gone` picks and a new one of
/// `fresh` sharing most of its lines (see `similar`).
#[allow(clippy::too_many_arguments)]
pub(super) fn moves_by_similarity(
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
    report: &mut ScanReport,
    disk: &BTreeMap<String, OnDisk>,
    bodies: &mut HashMap<String, Body>,
    fresh: &[String],
    gone: impl Fn(&str, &Known) -> bool,
    now: u64,
) -> Result<(), WatchError> {
    let gone_texts: Vec<(String, String)> = index
        .files
        .iter()
        .filter(|(p, k)| k.kind == Kind::File && gone(p, k))
        .filter(|(_, k)| folder.state(k.id).is_some_and(|s| s.content == Content::Text))
        .filter_map(|(p, k)| {
            let doc = folder.doc(k.id)?;
            let text = doc.lvs_of(&k.base).map_or_else(|| doc.text(), |l| doc.text_at(&l));
            Some((p.clone(), text))
        })
        .collect();
    if gone_texts.is_empty() {
        return Ok(());
    }
    let new_texts: Vec<(&String, &str)> = fresh
        .iter()
        .filter(|p| !index.files.contains_key(*p))
        .filter_map(|p| match bodies.get(p) {
            Some(Body::Text(t)) => Some((p, t.as_str())),
            _ => None,
        })
        .collect();
    let old: Vec<&str> = gone_texts.iter().map(|g| g.1.as_str()).collect();
    let new: Vec<&str> = new_texts.iter().map(|n| n.1).collect();
    let pairs: Vec<(String, String)> =
        similar::pair(&old, &new).into_iter().map(|(i, j)| (gone_texts[i].0.clone(), new_texts[j].0.clone())).collect();
    moved_and_edited(folder, chunks, index, report, disk, bodies, pairs, now)
}

/// Deletes the known paths `which` picks (deepest first), at once: they
/// were replaced by another kind, not moved.
pub(super) fn replace(
    folder: &mut Folder,
    index: &mut Index,
    report: &mut ScanReport,
    now: u64,
    which: impl Fn(&str, &Known) -> bool,
) -> Result<(), WatchError> {
    let picked: Vec<(String, Known)> =
        index.files.iter().rev().filter(|(p, k)| which(p, k)).map(|(p, k)| (p.clone(), k.clone())).collect();
    for (p, k) in picked {
        if folder.tree().path_of(k.id).is_some() {
            folder.delete_from(k.id, &k.base, now)?;
        }
        index.files.remove(&p);
        index.deferred.remove(&p);
        report.deleted.push(p);
    }
    Ok(())
}

/// Of `base` and `other`, the version `body` is the smaller edit of
/// (`base` on a tie). Diffing from the wrong one either undoes what the
/// other brought (a peer's edit, taken back) or, refined to characters,
/// blends the user's new line into one a peer deleted (`tok-61` ->
/// `tok-117` kept only `17`).
pub(super) fn closer_base(folder: &Folder, id: EntryId, base: &[EventId], other: &[EventId], body: &Body) -> Vec<EventId> {
    let (Body::Text(t), Some(doc)) = (body, folder.doc(id)) else {
        return base.to_vec();
    };
    let size = |v: &[EventId]| {
        let text = doc.lvs_of(v).map(|l| doc.text_at(&l))?;
        Some(crate::diff::line_change(&text, t))
    };
    match (size(base), size(other)) {
        (Some(b), Some(o)) if o < b => other.to_vec(),
        _ => base.to_vec(),
    }
}
