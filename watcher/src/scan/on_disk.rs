//! The disk as it is: a walk of the folder (or of a scope), and the
//! corrections a walk needs because it is not atomic (a name seen twice, a
//! directory moved in from outside the scope, a link to a known inode).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use fsync_core::folder::Kind;

use crate::ignore::Ignore;
use crate::index::{Index, Stat};
use crate::WatchError;

use super::{in_scope, ino_key, is_new, ScanProgress, NOT_SYNCED};

#[derive(Debug)]
pub(super) struct OnDisk {
    pub(super) kind: Kind,
    pub(super) stat: Stat,
    /// Hard links to the inode.
    pub(super) links: u64,
}

/// Known paths outside `scope` whose inode turns up new inside it, and
/// which no longer hold that inode, and paths waiting for their second
/// look: where something in scope may have moved from.
pub(super) fn moved_from_outside(root: &Path, index: &Index, fresh: &HashSet<(u64, u8)>, scope: &[String]) -> Vec<String> {
    if fresh.is_empty() {
        return Vec::new();
    }
    // Several known paths may hold one inode (hard links, or a path
    // replaced since the last scan whose freed inode went to another file).
    let mut by_ino: HashMap<(u64, u8), Vec<&String>> = HashMap::new();
    for (p, k) in index.files.iter().filter(|(p, _)| !in_scope(p, Some(scope))) {
        by_ino.entry(ino_key(k.stat, k.kind)).or_default().push(p);
    }
    // And the paths waiting for their second look (see `GONE_WAIT`) when a
    // file is new here: it may be one of them moved and then saved through
    // a temp file (a new inode), linked to it only by shared lines
    // (oracle, directory operations: a move and a save 4 ms apart, in two
    // scans).
    let waiting = fresh
        .iter()
        .any(|k| k.1 == Kind::File as u8)
        .then(|| index.deferred.keys().filter(|p| !in_scope(p, Some(scope)) && index.files.contains_key(*p)).cloned());
    let mut from: Vec<String> = fresh
        .iter()
        .filter_map(|k| by_ino.get(k))
        .flatten()
        .filter(|old| {
            std::fs::symlink_metadata(root.join(old))
                .map_or(true, |m| std::os::unix::fs::MetadataExt::ino(&m) != index.files[**old].stat.ino)
        })
        .map(|old| (*old).clone())
        .chain(waiting.into_iter().flatten())
        .collect();
    from.sort();
    from.dedup();
    from
}

/// Hard links: every name in the folder is a file of its own, and a
/// change written through one name is on disk at the others too. Known
/// paths outside `scope` that hold the inode of a file changed in scope
/// are looked at as well, so every name syncs (no event names them).
pub(super) fn linked_outside(index: &Index, disk: &BTreeMap<String, OnDisk>, scope: &[String]) -> Vec<String> {
    let changed: HashSet<u64> = disk
        .iter()
        .filter(|(p, d)| d.kind == Kind::File && d.links > 1 && index.files.get(*p).is_none_or(|k| k.stat != d.stat))
        .map(|(_, d)| d.stat.ino)
        .collect();
    if changed.is_empty() {
        return Vec::new();
    }
    index
        .files
        .iter()
        .filter(|(p, k)| k.kind == Kind::File && changed.contains(&k.stat.ino) && !in_scope(p, Some(scope)))
        .map(|(p, _)| p.clone())
        .collect()
}

/// A walk is not atomic: something moved while it went on, from a
/// directory it had walked into one it had not reached yet, is in `disk`
/// twice, at its old name and at its new one, with one inode; taken as
/// found, the new name would be a new file and the old one deleted, and a
/// peer's concurrent edit would keep both. A known name that, looked at again,
/// no longer holds the inode a new name has is taken out, with what was
/// below it: the move is then found. (A hard link still holds it.)
pub(super) fn seen_twice(root: &Path, index: &Index, fresh: &HashSet<(u64, u8)>, disk: &mut BTreeMap<String, OnDisk>) {
    if fresh.is_empty() {
        return;
    }
    let stale: Vec<String> = disk
        .iter()
        .filter(|(p, d)| !is_new(index, p, d) && fresh.contains(&ino_key(d.stat, d.kind)))
        .filter(|(p, d)| std::fs::symlink_metadata(root.join(p)).map_or(true, |m| m.ino() != d.stat.ino))
        .map(|(p, _)| p.clone())
        .collect();
    for p in stale {
        let below = format!("{p}/");
        disk.retain(|q, _| *q != p && !q.starts_with(&below));
    }
}

/// `scope`, with each path below a directory the index knows that is no
/// longer one on disk (removed, or replaced by a file or a link) lifted to
/// that directory: everything the index has below it went with it, in the
/// scope or not. So is a path below any link or file on disk: a scan never
/// follows a link (an event can name a path through one, when notify's
/// bookkeeping of a moved directory is stale).
pub(super) fn lift_to_replaced_dirs(root: &Path, index: &Index, scope: &[String]) -> Vec<String> {
    let mut out: Vec<String> = scope
        .iter()
        .map(|p| {
            p.match_indices('/')
                .map(|(i, _)| &p[..i])
                .find(|a| match std::fs::symlink_metadata(root.join(a)) {
                    // A link or a file on the way: the path is not below it
                    // on disk (the kernel would follow the link out).
                    Ok(m) => !m.is_dir(),
                    Err(_) => index.files.get(*a).is_some_and(|k| k.kind == Kind::Dir),
                })
                .unwrap_or(p)
                .to_owned()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Walks the whole folder, or only `scope` (subtrees) and their parents.
pub(super) fn walk(
    root: &Path,
    ignore: &Ignore,
    scope: Option<&[String]>,
    progress: &ScanProgress,
    unreadable: &mut Vec<(String, String)>,
) -> Result<BTreeMap<String, OnDisk>, WatchError> {
    let mut out = BTreeMap::new();
    let Some(scope) = scope else {
        walk_from(root, root, 1, usize::MAX, ignore, &mut out, progress, unreadable)?;
        return Ok(out);
    };
    let mut parents: HashSet<&str> = HashSet::new();
    for p in scope {
        // The parents, one entry each, so new directories are indexed too.
        for (i, _) in p.match_indices('/') {
            let Some(parent) = p.get(..i) else { continue };
            if parents.insert(parent) {
                walk_from(root, &root.join(parent), 0, 0, ignore, &mut out, progress, unreadable)?;
            }
        }
        walk_from(root, &root.join(p), 0, usize::MAX, ignore, &mut out, progress, unreadable)?;
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn walk_from(
    root: &Path,
    start: &Path,
    min_depth: usize,
    max_depth: usize,
    ignore: &Ignore,
    out: &mut BTreeMap<String, OnDisk>,
    progress: &ScanProgress,
    unreadable: &mut Vec<(String, String)>,
) -> Result<(), WatchError> {
    if min_depth == 0 {
        match std::fs::symlink_metadata(start) {
            Ok(_) => {}
            // Deleted, or below what is no longer a directory: nothing to
            // walk.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => return Ok(()),
            // Below a directory we may not search: not gone, unknown.
            Err(e) => {
                if let Some(rel) = start.strip_prefix(root).ok().and_then(Path::to_str) {
                    unreadable.push((rel.to_owned(), e.to_string()));
                }
                return Ok(());
            }
        }
    }
    // A scoped scan may start at a symlink (a live event for it): walkdir
    // follows a root link by default, which read a link as its target (a
    // file) or, dangling, as gone; peers then got it deleted and re-created
    // over and over.
    let mut it = walkdir::WalkDir::new(start)
        .follow_links(false)
        .follow_root_links(false)
        .sort_by_file_name()
        .min_depth(min_depth)
        .max_depth(max_depth)
        .into_iter();
    while let Some(e) = it.next() {
        let e = match e {
            Ok(e) => e,
            // Vanished while walking: the next scan sees the new state.
            Err(err)
                if err
                    .io_error()
                    .is_some_and(|i| matches!(i.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory)) =>
            {
                continue
            }
            // A directory we may not list (permissions removed): noted,
            // and what the index has below it is kept as it is.
            Err(err) if err.io_error().is_some() && err.path().is_some_and(|p| p.starts_with(root) && p != root) => {
                let rel =
                    err.path().and_then(|p| p.strip_prefix(root).ok()).and_then(Path::to_str).unwrap_or_default().to_owned();
                let why = err.io_error().map(ToString::to_string).unwrap_or_default();
                unreadable.push((rel, why));
                continue;
            }
            Err(err) => return Err(WatchError::Walk(err.to_string())),
        };
        let Ok(rel) = e.path().strip_prefix(root) else {
            continue;
        };
        // What cannot be synced is listed with why (see `ScanReport::
        // unreadable`), never skipped silently, and what the index has
        // there is left as it is.
        let Some(rel) = rel.to_str().map(str::to_owned) else {
            let shown = rel.to_string_lossy().into_owned();
            if !ignore.ignored(&shown, e.file_type().is_dir()) {
                unreadable.push((shown, format!("{NOT_SYNCED}: its name is not valid UTF-8 (rename it to sync it)")));
            }
            if e.file_type().is_dir() {
                it.skip_current_dir();
            }
            continue;
        };
        let ft = e.file_type();
        let Some(kind) = crate::index::kind_of(&ft) else {
            if !ignore.ignored(&rel, false) {
                unreadable.push((rel, format!("{NOT_SYNCED}: {}", special_kind(&ft))));
            }
            continue;
        };
        if ignore.ignored(&rel, kind == Kind::Dir) {
            if kind == Kind::Dir {
                it.skip_current_dir();
            }
            continue;
        }
        if let Err(why) = fsync_core::folder::split_path(&rel) {
            unreadable.push((rel, format!("{NOT_SYNCED}: {why}")));
            if kind == Kind::Dir {
                it.skip_current_dir();
            }
            continue;
        }
        let meta = match e.metadata() {
            Ok(m) => m,
            Err(_) => continue,
        };
        out.insert(rel, OnDisk { kind, stat: Stat::of(&meta), links: meta.nlink() });
        ScanProgress::add(&progress.walked, 1);
    }
    Ok(())
}

/// What a special file is, for the list of what is not synced.
pub(super) fn special_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a named pipe (fifo)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device file"
    } else {
        "a special file"
    }
}
