//! Disk to folder: find what changed since the index last saw the disk and
//! turn it into folder changes.
//!
//! Fast path: a file whose (inode, size, mtime, ctime) match the index is not
//! read. Moves are found by inode (a `mv` within the folder, a directory
//! moved with everything in it), then by content (an editor that writes a
//! new file and deletes the old one under another name). A save that
//! replaces a file by rename (sed -i, vim, VS Code) or deletes and recreates
//! it keeps the file's identity because it is seen as one change of the same
//! path. Text edits are diffed against the text the disk had when the index
//! was last updated (`base`), so they merge with remote changes that
//! arrived meanwhile instead of undoing them.

mod moves;
mod on_disk;
mod read;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use fsync_core::chunks::ChunkStore;
use fsync_core::folder::{EntryId, Folder, Kind};
use fsync_core::ingest::{take_in, Body};
use fsync_core::EventId;

use crate::ignore::Ignore;
use crate::index::{Index, Known, Stat, Written};
use crate::similar;
use crate::WatchError;

use moves::{
    closer_base, in_folder, inode_reused, move_entry, moved_and_edited, moves_by_similarity, place, placeable, replace,
};
use on_disk::{lift_to_replaced_dirs, linked_outside, moved_from_outside, seen_twice, walk, OnDisk};
use read::{content_key, entry_key, read_bodies, read_counted, same_content};

/// Files above this size are not synced (listed as unreadable, with why):
/// a version's chunk list must fit one message
/// ([`fsync_core::folder::MAX_CHUNKS`] chunks of 64 KiB on average).
pub const MAX_FILE: u64 = 16 << 30;

pub use fsync_core::ingest::TEXT_MAX;

/// How the reasons of paths that are not synced at all begin (in
/// [`ScanReport::unreadable`], beside paths that cannot be read now).
pub const NOT_SYNCED: &str = "not synced";

/// How long a scoped scan waits before it takes a path gone for deleted:
/// the other half of a move may come in a later batch of events, tens of
/// milliseconds later, and a move taken for a deletion plus a new file
/// would keep a peer's concurrent edit beside the moved file.
pub const GONE_WAIT: Duration = Duration::from_millis(150);

/// How long after our write-back a file found cut short of what we wrote
/// is looked at again before it is taken in (see [`Known::written`]), and
/// how long the old name of a file a write-back moved is remembered (see
/// [`Index::moved_away`]).
pub const UNSEEN_WRITE: Duration = Duration::from_secs(2);

/// What a scan did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// New paths taken in.
    pub created: Vec<String>,
    /// Paths whose content or mode changed.
    pub modified: Vec<String>,
    /// (from, to) moves.
    pub moved: Vec<(String, String)>,
    /// Paths deleted.
    pub deleted: Vec<String>,
    /// Paths a live scan ([`scan_scoped`]), or the start-up scan's second
    /// walk, found gone but left for the next scan of them: the other half
    /// of a move may be in a later batch of events, and deleting now would
    /// turn the move into a deletion plus a new file (both kept, if a peer
    /// edited the old one meanwhile). The
    /// caller scans these again shortly; they are deleted once gone for
    /// [`GONE_WAIT`].
    pub deferred: Vec<String>,
    /// Paths that could not be read (permission denied, an I/O error), or
    /// are not synced at all (a name that is not UTF-8, a fifo, a socket, a
    /// device file, a file over [`MAX_FILE`]: the reason begins with
    /// [`NOT_SYNCED`]), with why. They are left as they are: not taken in,
    /// and never taken for deleted (a directory that cannot be listed keeps
    /// what it had).
    pub unreadable: Vec<(String, String)>,
    /// Paths gone from disk whose deletion the guard holds ([`Index::guard`]):
    /// too many at once. Known and in the folder still, until the guard is
    /// opened or they are put back.
    pub held: Vec<String>,
}

impl ScanReport {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.modified.is_empty() && self.moved.is_empty() && self.deleted.is_empty()
    }
}

/// How far a scan is, for progress output: shared with another thread
/// that shows it.
#[derive(Debug, Default)]
pub struct ScanProgress {
    /// Paths walked.
    pub walked: std::sync::atomic::AtomicU64,
    /// Files read (new or changed).
    pub read: std::sync::atomic::AtomicU64,
    /// Bytes read.
    pub bytes: std::sync::atomic::AtomicU64,
}

impl ScanProgress {
    fn add(n: &std::sync::atomic::AtomicU64, v: u64) {
        n.fetch_add(v, std::sync::atomic::Ordering::Relaxed);
    }
}

/// True when the file found at a path with a write intent `intent` is our
/// write, edited since: it holds our inode, or its text keeps most lines of
/// what we wrote.
fn ours_edited(folder: &Folder, intent: &(EntryId, u64, Vec<EventId>), ino: u64, body: &Body) -> bool {
    if intent.1 == ino {
        return true;
    }
    let (Body::Text(now), Some(doc)) = (body, folder.doc(intent.0)) else { return false };
    let Some(ours) = doc.lvs_of(&intent.2).map(|l| doc.text_at(&l)) else { return false };
    !similar::pair(&[ours.as_str()], &[now.as_str()]).is_empty()
}

/// Where the file a write-back just moved away from `path` is now, when
/// the new file at `path` is that file saved by a program that read it
/// before the move (most of its lines; see [`Index::moved_away`]).
fn saved_after_move(folder: &mut Folder, index: &Index, path: &str, d: &OnDisk, body: &Body) -> Option<String> {
    let (id, at, before) = index.moved_away.get(path)?;
    if d.kind != Kind::File || at.elapsed() >= UNSEEN_WRITE {
        return None;
    }
    let to = folder.tree().path_of(*id)?.to_owned();
    if index.files.get(&to).is_none_or(|k| k.id != *id) {
        return None;
    }
    let (Body::Text(now), Some(doc)) = (body, folder.doc(*id)) else { return None };
    let read = doc.lvs_of(before).map(|l| doc.text_at(&l))?;
    (!similar::pair(&[read.as_str()], &[now.as_str()]).is_empty()).then_some(to)
}

/// Notes a path that could not be read (not one that vanished meanwhile:
/// the next scan sees where it went).
fn unreadable(report: &mut ScanReport, path: &str, e: WatchError) {
    if let WatchError::Io { cause, .. } = &e {
        if cause.kind() != std::io::ErrorKind::NotFound {
            report.unreadable.push((path.to_owned(), cause.to_string()));
        }
    }
}

impl Stat {
    /// Modified within the last `ms` milliseconds (a writer may not be
    /// done with it).
    pub(crate) fn modified_within(&self, ms: i64) -> bool {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
        now - self.mtime < ms * 1_000_000
    }
}

/// True when `path` is one of `scope` or below one.
fn in_scope(path: &str, scope: Option<&[String]>) -> bool {
    scope.is_none_or(|s| {
        s.iter()
            .any(|p| path == p || (path.len() > p.len() && path.starts_with(p.as_str()) && path.as_bytes()[p.len()] == b'/'))
    })
}

/// True when `path` holds just what the index knows there: a file or
/// link of the same inode, size, times and mode (the scan's fast path),
/// with one name, nothing of ours pending at it, and its entry known at
/// this path alone (an entry also known at another path is settled by
/// the scan of both).
fn as_known(index: &Index, path: &str, d: &OnDisk) -> bool {
    d.kind != Kind::Dir
        && d.links <= 1
        && index.files.get(path).is_some_and(|k| {
            k.kind == d.kind && k.stat == d.stat && k.staged.is_none() && index.files.paths_of(&k.id).len() == 1
        })
        && !index.busy.contains(path)
        && !index.deferred.contains_key(path)
        && !index.new_intents.contains_key(path)
        && !index.renamed.contains_key(path)
}

/// On disk at a path the index does not hold (as that kind): new there.
fn is_new(index: &Index, path: &str, d: &OnDisk) -> bool {
    index.files.get(path).is_none_or(|k| k.kind != d.kind)
}

/// Known at a path the disk no longer holds (as that kind): gone from there.
fn is_gone(disk: &BTreeMap<String, OnDisk>, path: &str, k: &Known) -> bool {
    disk.get(path).is_none_or(|d| d.kind != k.kind)
}

/// What a move keeps: the inode, and the kind (inodes of files and
/// directories are not compared with each other).
fn ino_key(stat: Stat, kind: Kind) -> (u64, u8) {
    (stat.ino, kind as u8)
}

/// Brings the folder up to date with the disk under `root` (the start-up
/// scan: see [`scan_with_progress`]; a scan while live events flow is
/// [`scan_scoped`]).
pub fn scan(
    root: &Path,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
    ignore: &Ignore,
    now: u64,
) -> Result<ScanReport, WatchError> {
    scan_with_progress(root, folder, chunks, index, ignore, now, &ScanProgress::default())
}

/// The scan while live events flow: only `scope` (paths relative to the
/// root, each with everything below it) when given, what events point at;
/// everything otherwise. A path found gone is deleted only once gone for
/// [`GONE_WAIT`] (see [`ScanReport::deferred`]), in a scan of everything
/// too: a walk is not atomic, and a file moved from a directory it had not
/// reached yet into one it had passed is in neither (the oracle's seed
/// 410: taken for deleted at once, the move's new name then came as a new
/// file, and the old one stayed too).
pub fn scan_scoped(
    root: &Path,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
    ignore: &Ignore,
    scope: Option<&[String]>,
    now: u64,
) -> Result<ScanReport, WatchError> {
    scan_at(root, folder, chunks, index, ignore, scope, now, &ScanProgress::default())
}

/// [`scan`], counting its progress into `progress` as it goes (the
/// start-up scan, before peers are heard).
///
/// What it finds gone it looks at again after [`GONE_WAIT`], with a second
/// walk: a file moved during the first walk, from a directory not reached
/// yet into one passed, was seen at neither name, and deleting it at once
/// would make the move a new file plus a deletion (both kept, if a peer
/// edited the old one). The second look is made here, not left to live
/// events, so that what changed while stopped is in before any peer's
/// change: a deletion recorded after a peer's edit had been merged would
/// supersede it. Paths gone only during the second walk are in
/// [`ScanReport::deferred`], for the caller's live scans.
pub fn scan_with_progress(
    root: &Path,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
    ignore: &Ignore,
    now: u64,
    progress: &ScanProgress,
) -> Result<ScanReport, WatchError> {
    start_up_scan(root, folder, chunks, index, ignore, now, progress, || std::thread::sleep(GONE_WAIT))
}

/// [`scan_with_progress`], with `pause` between the two looks.
#[allow(clippy::too_many_arguments)]
fn start_up_scan(
    root: &Path,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
    ignore: &Ignore,
    now: u64,
    progress: &ScanProgress,
    pause: impl FnOnce(),
) -> Result<ScanReport, WatchError> {
    let mut report = scan_at(root, folder, chunks, index, ignore, None, now, progress)?;
    if report.deferred.is_empty() {
        return Ok(report);
    }
    pause();
    let later = now + GONE_WAIT.as_millis() as u64;
    let second = scan_at(root, folder, chunks, index, ignore, None, later, progress)?;
    report.created.extend(second.created);
    report.modified.extend(second.modified);
    report.moved.extend(second.moved);
    report.deleted.extend(second.deleted);
    report.deferred = second.deferred;
    report.held = second.held;
    report.unreadable = second.unreadable;
    Ok(report)
}

/// The scan. A gone path is deleted only once gone for [`GONE_WAIT`]
/// (every scan waits: see [`scan_scoped`] and [`scan_with_progress`]).
#[allow(clippy::too_many_arguments)]
fn scan_at(
    root: &Path,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
    ignore: &Ignore,
    scope: Option<&[String]>,
    now: u64,
    progress: &ScanProgress,
) -> Result<ScanReport, WatchError> {
    let mut unreadable = Vec::new();
    // Rules that changed since the last full scan change what every path
    // is: a path no longer ignored is taken in (as an edit of its entry)
    // wherever it is, not only where an event named it.
    let scope = scope.filter(|_| index.scanned_rules == Some(ignore.digest()));
    if scope.is_none() {
        index.scanned_rules = Some(ignore.digest());
    }
    let lifted: Vec<String>;
    let scope = match scope {
        Some(sc) => {
            lifted = lift_to_replaced_dirs(root, index, sc);
            Some(lifted.as_slice())
        }
        None => None,
    };
    let mut disk = walk(root, ignore, scope, progress, &mut unreadable)?;
    // What is new here, by inode (see `ino_key`): where something may have
    // moved to.
    let fresh: HashSet<(u64, u8)> =
        disk.iter().filter(|(p, d)| is_new(index, p, d)).map(|(_, d)| ino_key(d.stat, d.kind)).collect();
    seen_twice(root, index, &fresh, &mut disk);
    // Something new here may have moved from outside the scope (the event
    // for the old path comes in another batch, or never): widen the scope
    // to the old path, or the move would be taken as a new file plus a
    // deletion, and a concurrent edit of the old one would keep both.
    let widened: Vec<String>;
    let scope = match scope {
        Some(sc) => {
            let mut from = moved_from_outside(root, index, &fresh, sc);
            from.extend(linked_outside(index, &disk, sc));
            if from.is_empty() {
                Some(sc)
            } else {
                disk.append(&mut walk(root, ignore, Some(&from), progress, &mut unreadable)?);
                widened = sc.iter().chain(&from).cloned().collect();
                Some(widened.as_slice())
            }
        }
        None => None,
    };
    // Files and links in scope that hold just what the index knows: our
    // own write-backs, mostly, and everything in a new directory, which a
    // rescan of it names. Nothing to take in, so they stay out of this
    // scan, and its work is what changed, not what the events named.
    let same: HashSet<String> = match scope {
        Some(_) => disk.iter().filter(|(p, d)| as_known(index, p, d)).map(|(p, _)| p.clone()).collect(),
        None => HashSet::new(),
    };
    disk.retain(|p, _| !same.contains(p));
    // The index as far as this scan can see: the rest is left alone, and
    // so is what lies below a directory that could not be listed.
    let hidden: Vec<String> = unreadable.iter().map(|(p, _)| p.clone()).collect();
    // Paths ignored now are left as they are too: a path that became
    // ignored stops syncing here (it is not taken for deleted, nor for the
    // source of a move), and its peers keep it; when it stops being
    // ignored, what it holds then is an edit from what it had.
    let unseen = |k: &str, dir: bool| {
        !disk.contains_key(k)
            && ((scope.is_some() && !in_scope(k, scope))
                || hidden.iter().any(|h| in_scope(k, Some(std::slice::from_ref(h))))
                || ignore.ignored(k, dir))
    };
    let seen = |k: &str, v: &Known| !unseen(k, v.kind == Kind::Dir);
    let inside = match scope {
        None => index.files.take_out(seen),
        // The known paths in scope (found by range: the work is the
        // scope's) and those the walk saw (the parents of the scope).
        Some(sc) => {
            let mut keys: Vec<String> = Vec::new();
            for s in sc {
                let below = format!("{s}/");
                keys.extend(index.files.get_key_value(s.as_str()).map(|(k, _)| k.clone()));
                keys.extend(
                    index.files.range(below.clone()..).take_while(|(k, _)| k.starts_with(&below)).map(|(k, _)| k.clone()),
                );
            }
            keys.extend(disk.keys().filter(|k| index.files.contains_key(*k)).cloned());
            keys.sort();
            keys.dedup();
            keys.retain(|k| !same.contains(k) && index.files.get(k).is_some_and(|v| seen(k, v)));
            index.files.take_keys(keys)
        }
    };
    let outside = std::mem::replace(&mut index.files, inside);
    tracing::trace!(scope = ?scope, "scan");
    let result = scan_inner(root, folder, chunks, index, &outside, disk, now, progress);
    let inside = std::mem::replace(&mut index.files, outside);
    index.files.absorb(inside);
    // The scan took in the files of the new-file intents in scope (or
    // found them known otherwise). Of the rest, those with no file never
    // landed; one it could not read keeps its intent for the scan that can.
    let files = &index.files;
    index
        .new_intents
        .retain(|p, _| !in_scope(p, scope) || (!files.contains_key(p) && std::fs::symlink_metadata(root.join(p)).is_ok()));
    // Deferred paths that moved (or came back) meanwhile need nothing more.
    index.deferred.retain(|p, _| index.files.get(p).is_some_and(|_| std::fs::symlink_metadata(root.join(p)).is_err()));
    result.map(|mut r| {
        unreadable.append(&mut r.unreadable);
        unreadable.sort();
        unreadable.dedup();
        r.unreadable = unreadable;
        r
    })
}

#[allow(clippy::too_many_arguments)]
fn scan_inner(
    root: &Path,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
    outside: &crate::Files,
    disk: BTreeMap<String, OnDisk>,
    now: u64,
    progress: &ScanProgress,
) -> Result<ScanReport, WatchError> {
    let mut report = ScanReport::default();

    // Moves by inode, directories first (shortest path first), so that what
    // is inside moves along. First the moves whose new place is in the
    // folder already; then a path that holds another kind now, and was not
    // moved, was replaced (`rm x; mkdir x`, a checkout): its entry, and what
    // was known below it and did not move either, go (deepest first), so
    // that the remaining moves into the new kind, and the new kind itself,
    // find the name free.
    let mut reused: HashMap<(String, EntryId), bool> = HashMap::new();
    let mut bodies: HashMap<String, Body> = HashMap::new();
    for placeable_only in [true, false] {
        loop {
            // Gone: no longer on disk as the same kind. (A path still there
            // with a new inode was replaced in place, as editors save.)
            let gone: Vec<(String, Known)> =
                index.files.iter().filter(|(p, k)| is_gone(&disk, p, k)).map(|(p, k)| (p.clone(), k.clone())).collect();
            let mut by_ino: HashMap<(u64, bool), Vec<&(String, Known)>> = HashMap::new();
            for g in &gone {
                by_ino.entry((g.1.stat.ino, g.1.kind == Kind::Dir)).or_default().push(g);
            }
            let mut found: Option<((bool, usize), String, String, EntryId)> = None;
            // Where what is known may have moved to: paths new as that kind.
            let new_here: HashSet<(u64, u8)> = disk
                .iter()
                .filter(|(p, d)| index.files.get(*p).is_none_or(|k| k.kind != d.kind))
                .map(|(_, d)| ino_key(d.stat, d.kind))
                .collect();
            for (path, d) in &disk {
                // Only a path the index does not have can be where something
                // moved to (inodes are reused: git deletes one file and its
                // inode comes back for the next one it writes). A path it
                // has as another kind is taken once what it had there has
                // moved away, or as replaced (below).
                match index.files.get(path) {
                    Some(k) if k.kind == d.kind => continue,
                    Some(k) if new_here.contains(&ino_key(k.stat, k.kind)) => continue,
                    _ => {}
                }
                for (old, known) in by_ino.get(&(d.stat.ino, d.kind == Kind::Dir)).into_iter().flatten() {
                    if known.kind == d.kind && old != path && !path.starts_with(&format!("{old}/")) {
                        if known.kind == Kind::File
                            && *reused
                                .entry((path.clone(), known.id))
                                .or_insert_with(|| inode_reused(root, folder, path, known))
                        {
                            tracing::trace!(old = %old, new = %path, "inode reused: not a move");
                            continue;
                        }
                        let to = in_folder(folder, index, path);
                        let key = (!placeable(folder, known.id, &to), old.len());
                        if placeable_only && key.0 {
                            continue;
                        }
                        if found.as_ref().is_none_or(|(k, ..)| key < *k) {
                            found = Some((key, old.clone(), path.clone(), known.id));
                        }
                    }
                }
            }
            let Some((_, old, new, id)) = found else { break };
            // What the index had at the new path (another kind) was
            // replaced: it goes first, with what was below it.
            if index.files.contains_key(&new) {
                let below = format!("{new}/");
                replace(folder, index, &mut report, now, |p, _| p == new || p.starts_with(&below))?;
            }
            let base = index.files.get(&old).map(|k| k.base.clone()).unwrap_or_default();
            let base = move_entry(folder, index, id, &base, &new, now)?;
            index.rekey(&old, &new);
            if let Some(k) = index.files.get_mut(&new) {
                k.base = base;
            }
            report.moved.push((old, new));
        }
        if placeable_only {
            // (After the moves: a directory moved carries what it holds to
            // where the disk may have another kind.)
            let replaced: Vec<String> = index
                .files
                .iter()
                .filter(|(p, k)| disk.get(*p).is_some_and(|d| d.kind != k.kind))
                .map(|(p, _)| p.clone())
                .collect();
            let below_replaced = |p: &str| replaced.iter().any(|r| p.starts_with(&format!("{r}/")));
            // A text file moved out first and saved through a temp file
            // (`mv d/f g; save g; rm -r d; touch d`) is found by its lines
            // before what stays below goes.
            if index.files.iter().any(|(p, k)| k.kind == Kind::File && below_replaced(p) && is_gone(&disk, p, k)) {
                let fresh: Vec<String> =
                    disk.iter().filter(|(p, d)| d.kind == Kind::File && is_new(index, p, d)).map(|(p, _)| p.clone()).collect();
                read_bodies(root, &disk, &fresh, &mut bodies, &mut index.busy, chunks, &mut report, progress);
                let gone = |p: &str, k: &Known| below_replaced(p) && is_gone(&disk, p, k);
                moves_by_similarity(folder, chunks, index, &mut report, &disk, &mut bodies, &fresh, gone, now)?;
            }
            let under_replaced = |p: &str| replaced.iter().any(|r| p == r || p.starts_with(&format!("{r}/")));
            replace(folder, index, &mut report, now, |p, k| under_replaced(p) && is_gone(&disk, p, k))?;
        }
    }

    // Bodies of new paths, read once.
    let fresh: Vec<String> = disk.iter().filter(|(p, d)| is_new(index, p, d)).map(|(p, _)| p.clone()).collect();
    read_bodies(root, &disk, &fresh, &mut bodies, &mut index.busy, chunks, &mut report, progress);

    // Moves by content: a file gone from one path and the same bytes new at
    // another (writers that create a new file and delete the old one).
    let gone_files: Vec<(String, Known)> = index
        .files
        .iter()
        .filter(|(p, k)| k.kind == Kind::File && is_gone(&disk, p, k))
        .map(|(p, k)| (p.clone(), k.clone()))
        .collect();
    if !gone_files.is_empty() {
        let mut by_key: HashMap<[u8; 32], (String, Known)> = HashMap::new();
        for (p, k) in gone_files {
            if let Some(key) = entry_key(folder, k.id, chunks) {
                by_key.entry(key).or_insert((p, k));
            }
        }
        for p in &fresh {
            let Some(key) = bodies.get(p).and_then(content_key) else {
                continue;
            };
            if let Some((old, known)) = by_key.remove(&key) {
                index.files.remove(&old);
                let base = move_entry(folder, index, known.id, &known.base, p, now)?;
                index.files.insert(p.clone(), Known { stat: disk[p].stat, base, ..known });
                report.moved.push((old, p.clone()));
            }
        }
    }

    // Moves the kernel reported (see `Index::renamed`) of files saved
    // through a temp file (a new inode) just before: the new name is the
    // moved file, edited, whatever it holds.
    let reported: Vec<(String, String)> = fresh
        .iter()
        .filter(|p| !index.files.contains_key(*p) && disk.get(*p).is_some_and(|d| d.kind == Kind::File))
        .filter_map(|p| {
            index.renamed.get(p).filter(|(_, at)| at.elapsed() < UNSEEN_WRITE).map(|(from, _)| (from.clone(), p.clone()))
        })
        .filter(|(from, _)| index.files.get(from).is_some_and(|k| k.kind == Kind::File && is_gone(&disk, from, k)))
        .collect();
    for (_, p) in &reported {
        index.renamed.remove(p);
    }
    moved_and_edited(folder, chunks, index, &mut report, &disk, &mut bodies, reported, now)?;

    // Moves by similarity: gone text and new text sharing most lines (a
    // save through a temp file, then a rename, between two scans).
    moves_by_similarity(folder, chunks, index, &mut report, &disk, &mut bodies, &fresh, |p, k| is_gone(&disk, p, k), now)?;

    // Deletions, deepest first. A path gone for the first time waits for
    // one more look: the other half of a move may come in the next batch
    // of events, or the next walk (see `scan_scoped`, `scan_with_progress`).
    let gone: Vec<(String, Known)> =
        index.files.iter().rev().filter(|(p, k)| is_gone(&disk, p, k)).map(|(p, k)| (p.clone(), k.clone())).collect();
    // An entry also known at a path the disk still has (a file saved just
    // after a move is known at both until the write-back; see
    // `saved_after_move`) is there, not deleted: only its old path goes.
    let still_here: HashSet<EntryId> = if gone.is_empty() {
        HashSet::new()
    } else {
        index.files.iter().filter(|(p, k)| !is_gone(&disk, p, k)).map(|(_, k)| k.id).collect()
    };
    let mut ready = Vec::new();
    for (p, k) in gone {
        if index.deferred.entry(p.clone()).or_insert_with(Instant::now).elapsed() < GONE_WAIT {
            report.deferred.push(p);
        } else {
            ready.push((p, k));
        }
    }
    // Too many at once, with the files waiting for their second look
    // (the rest of an `rm -r` whose events came later): held (see
    // `crate::guard`). They stay known, and ready, so the scan that comes
    // after the user lets them through deletes them at once.
    let files = ready.iter().filter(|(_, k)| k.kind != Kind::Dir).count();
    if files > 0 {
        let is_file = |p: &String| index.files.get(p).or_else(|| outside.get(p)).is_some_and(|k| k.kind != Kind::Dir);
        let waiting = index.deferred.keys().filter(|p| is_file(p)).count().saturating_sub(files);
        let total = files + waiting;
        if index.guard.weighs(total)
            && index.guard.holds(total, index.files.iter().chain(outside.iter()).filter(|(_, k)| k.kind != Kind::Dir).count())
        {
            report.held = ready.into_iter().map(|(p, _)| p).rev().collect();
            ready = Vec::new();
        }
    }
    for (p, k) in ready {
        index.deferred.remove(&p);
        // Against what the disk had: a change that arrived since and was
        // never written out is concurrent, and an edit keeps the file. So
        // is one we wrote just before (see `Known::written`).
        if folder.tree().path_of(k.id).is_some() && !still_here.contains(&k.id) {
            folder.delete_from(k.id, &k.base, now)?;
        }
        index.files.remove(&p);
        report.deleted.push(p);
    }
    report.deferred.sort();

    // New paths, parents first.
    for p in fresh {
        if index.files.contains_key(&p) {
            continue; // taken in as a move above
        }
        let Some(body) = bodies.remove(&p) else {
            continue;
        };
        index.busy.remove(&p);
        let d = &disk[&p];
        let at = in_folder(folder, index, &p);
        let existing = folder.tree().lookup(&at).map(|n| (n.id, n.kind));
        let intent = index.new_intents.remove(&p);
        let mut from: Vec<EventId> = Vec::new();
        let id = match existing {
            // A directory the folder already has (created by a peer), or
            // the very file it has there (written by us, the index update
            // lost in a crash).
            Some((id, kind)) if kind == d.kind && (kind == Kind::Dir || same_content(folder, chunks, id, &body)) => id,
            // Our write of it landed, the index update was lost in a crash,
            // and it was edited here since: that file, edited from what we
            // wrote (in place: our inode; saved through a temp file: most
            // of our lines).
            Some((id, kind))
                if kind == d.kind
                    && intent.as_ref().is_some_and(|i| i.0 == id && ours_edited(folder, i, d.stat.ino, &body)) =>
            {
                from = intent.map(|i| i.2).unwrap_or_default();
                id
            }
            // A peer's file of that name not written here yet: ours is
            // another file, created concurrently (taking it as an edit of
            // theirs would replace their content).
            Some(_) => {
                let (parent, name) = place(folder, index, &p, now)?;
                folder.create_into(parent, &name, d.kind, now)?
            }
            None => {
                if let Some(to) = saved_after_move(folder, index, &p, d, &body) {
                    // Known here until the write-back removes it (the tree
                    // no longer has anything at this path) and writes the
                    // merged file where the entry now is.
                    let k = index.files[&to].clone();
                    // Made on what this path held before the move.
                    let from = index.moved_away.remove(&p).map(|m| m.2).filter(|b| !b.is_empty()).unwrap_or(k.base.clone());
                    let base = take_in(folder, chunks, k.id, &from, body, d.stat.exec, now)?;
                    index.files.insert(p.clone(), Known { stat: d.stat, base, staged: None, written: None, ..k });
                    report.modified.push(to);
                    continue;
                }
                if tracing::enabled!(tracing::Level::TRACE) {
                    let same: Vec<(&String, &Stat)> =
                        index.files.iter().filter(|(_, k)| k.stat.ino == d.stat.ino).map(|(q, k)| (q, &k.stat)).collect();
                    tracing::trace!(path = %p, stat = ?d.stat, known_with_inode = ?same, "new file");
                }
                let (parent, name) = place(folder, index, &p, now)?;
                folder.create_into(parent, &name, d.kind, now)?
            }
        };
        let base = take_in(folder, chunks, id, &from, body, d.stat.exec, now)?;
        index.files.insert(p.clone(), Known { id, kind: d.kind, stat: d.stat, base, staged: None, written: None });
        report.created.push(p);
    }

    // Changes in place.
    let changed: Vec<(String, Known)> = index
        .files
        .iter()
        .filter(|(p, k)| disk.get(*p).is_some_and(|d| d.stat != k.stat))
        .map(|(p, k)| (p.clone(), k.clone()))
        .collect();
    for (p, k) in changed {
        let d = &disk[&p];
        // Emptied a moment ago: most likely rewritten in place (truncate,
        // then write) and caught in between. Recorded as emptied, the
        // rewrite would come next as everything inserted anew, and merged
        // with a peer's concurrent edit the peer's lines would be there
        // twice. Looked at again shortly.
        // (Once: a file written all the time is taken as it is.)
        if d.kind == Kind::File
            && d.stat.size == 0
            && k.stat.size > 0
            && d.stat.modified_within(300)
            && index.busy.insert(p.clone())
        {
            report.deferred.push(p);
            continue;
        }
        let body = match read_counted(&root.join(&p), d.kind, chunks, progress) {
            Ok(b) => b,
            Err(e) => {
                unreadable(&mut report, &p, e);
                continue;
            }
        };
        // Written while we read it: what we read may be half of it. Or cut
        // short just after our write: most likely a rewrite caught half way
        // (see `Known::written`). Looked at again shortly, once.
        if d.kind == Kind::File
            && (std::fs::symlink_metadata(root.join(&p)).map(|m| Stat::of(&m)).ok() != Some(d.stat)
                || (d.stat.modified_within(300) && cut_short(folder, &k, &body)))
            && index.busy.insert(p.clone())
        {
            report.deferred.push(p);
            continue;
        }
        index.busy.remove(&p);
        // Our staged write landed (the index update after it was lost):
        // the disk holds the staged version, plus whatever was done since.
        let from = match &k.staged {
            Some((ino, v)) if *ino == d.stat.ino => v.clone(),
            // A new inode: our staged write never landed (its temp file is
            // removed at start), or it landed and was then replaced by a
            // save through a temp file. Either way the disk holds one of
            // the two versions plus the user's edit.
            Some((_, v)) => closer_base(folder, k.id, &k.base, v, &body),
            // A save is made on what the disk held: a save just after our
            // write-back replaces what we wrote, whatever the program read
            // before (no guess about that may override a save); or, if a
            // program was writing as ours landed, on what it had written.
            None => match k.written.as_ref().filter(|w| w.recent()).and_then(|w| w.raced.as_ref()) {
                Some(raced) => closer_base(folder, k.id, &k.base, raced, &body),
                None => k.base.clone(),
            },
        };
        let base = take_in(folder, chunks, k.id, &from, body, d.stat.exec, now)?;
        index.files.insert(p.clone(), Known { stat: d.stat, base, staged: None, written: None, ..k });
        if d.kind != Kind::Dir {
            report.modified.push(p);
        }
    }
    Ok(report)
}

/// True when `body` is a strict beginning of what our write-back just put
/// at `k` (see [`Known::written`]).
fn cut_short(folder: &Folder, k: &Known, body: &Body) -> bool {
    let (Body::Text(now), Some(doc)) = (body, folder.doc(k.id)) else {
        return false;
    };
    if !k.written.as_ref().is_some_and(Written::recent) {
        return false;
    }
    doc.lvs_of(&k.base).map(|l| doc.text_at(&l)).is_some_and(|ours| ours.len() > now.len() && ours.starts_with(now.as_str()))
}
