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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use fsync_core::chunks::ChunkStore;
use fsync_core::folder::{Content, EntryId, Folder, Kind};
use fsync_core::ingest::{classify, take_in, Body};
use fsync_core::EventId;

use crate::ignore::Ignore;
use crate::index::{Index, Known, Stat, Written};
use crate::similar;
use crate::WatchError;

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

#[derive(Debug)]
struct OnDisk {
    kind: Kind,
    stat: Stat,
    /// Hard links to the inode.
    links: u64,
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

fn read_counted(path: &Path, kind: Kind, chunks: &mut dyn ChunkStore, progress: &ScanProgress) -> Result<Body, WatchError> {
    let body = read_body(path, kind, chunks)?;
    let len = match &body {
        Body::Text(t) => t.len(),
        Body::Binary(b) => b.len(),
        Body::Chunked(refs, _) => refs.iter().map(|r| r.len as usize).sum(),
        Body::Link(_) => 0,
        Body::Dir => return Ok(body),
    };
    ScanProgress::add(&progress.read, 1);
    ScanProgress::add(&progress.bytes, len as u64);
    Ok(body)
}

/// What is at `path`. A file over [`TEXT_MAX`] (binary whatever it holds)
/// is cut into `chunks` as it is read, never held whole.
fn read_body(path: &Path, kind: Kind, chunks: &mut dyn ChunkStore) -> Result<Body, WatchError> {
    use std::io::{Read, Seek};
    let io = |e| WatchError::io(path, e);
    Ok(match kind {
        Kind::Dir => Body::Dir,
        Kind::Symlink => Body::Link(std::fs::read_link(path).map_err(io)?.to_string_lossy().into_owned()),
        Kind::File => {
            let size = std::fs::symlink_metadata(path).map_err(io)?.len();
            if size > MAX_FILE {
                return Err(WatchError::io(path, std::io::Error::other(format!(
                    "{NOT_SYNCED}: {size} bytes, and fsync syncs files of at most {} GiB (the chunk list of a version must fit one message)",
                    MAX_FILE >> 30
                ))));
            }
            let mut f = std::fs::File::open(path).map_err(io)?;
            let mut small = Vec::new();
            (&mut f).take(TEXT_MAX + 1).read_to_end(&mut small).map_err(io)?;
            if small.len() as u64 <= TEXT_MAX {
                classify(small)
            } else {
                drop(small);
                f.rewind().map_err(io)?;
                let (refs, whole) = fsync_core::chunks::split_into(f, chunks).map_err(io)?;
                Body::Chunked(refs, whole)
            }
        }
    })
}

/// A key for matching moved content: the same for a file on disk and the
/// entry it came from.
fn content_key(body: &Body) -> Option<[u8; 32]> {
    match body {
        Body::Text(t) => Some(fsync_core::chunks::ChunkHash::of(t.as_bytes()).0),
        Body::Binary(b) => Some(fsync_core::chunks::ChunkHash::of(b).0),
        Body::Chunked(_, whole) => Some(whole.0),
        _ => None,
    }
}

fn entry_key(folder: &Folder, id: EntryId, chunks: &dyn ChunkStore) -> Option<[u8; 32]> {
    match &folder.state(id)?.content {
        Content::Text => Some(fsync_core::chunks::ChunkHash::of(folder.doc(id)?.text().as_bytes()).0),
        Content::Binary { chunks: refs, .. } => {
            // Hashed as it is read, chunk by chunk.
            let mut whole = blake3::Hasher::new();
            matches!(fsync_core::chunks::write_chunks(refs, chunks, &mut whole), Ok(true)).then(|| *whole.finalize().as_bytes())
        }
        _ => None,
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

/// True when entry `id` holds exactly `body`.
fn same_content(folder: &Folder, chunks: &dyn ChunkStore, id: EntryId, body: &Body) -> bool {
    match (body, folder.state(id).map(|s| &s.content)) {
        (Body::Link(t), Some(Content::Link(u))) => t == u,
        (Body::Chunked(refs, _), Some(Content::Binary { chunks: c, .. })) => refs == c,
        (Body::Text(_) | Body::Binary(_), _) => {
            content_key(body).is_some() && content_key(body) == entry_key(folder, id, chunks)
        }
        _ => false,
    }
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

/// Known paths outside `scope` whose inode turns up new inside it, and
/// which no longer hold that inode, and paths waiting for their second
/// look: where something in scope may have moved from.
fn moved_from_outside(root: &Path, index: &Index, fresh: &HashSet<(u64, u8)>, scope: &[String]) -> Vec<String> {
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
fn linked_outside(index: &Index, disk: &BTreeMap<String, OnDisk>, scope: &[String]) -> Vec<String> {
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
fn seen_twice(root: &Path, index: &Index, fresh: &HashSet<(u64, u8)>, disk: &mut BTreeMap<String, OnDisk>) {
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

/// True when the file at `path` holds the inode `known` had, but is not
/// that file: it was deleted and its inode given to a new file (ext4 and
/// tmpfs hand freed inodes out again at once). A file that kept its size
/// and mtime was only moved; one that changed too is the same file only if
/// its text still shares most lines with what `known` held. Text that
/// became binary, or binary that became text, is another file: a deletion
/// taken for a move would supersede a peer's concurrent edit. Binary
/// content cannot tell otherwise: the inode is trusted.
fn inode_reused(root: &Path, folder: &Folder, path: &str, known: &Known) -> bool {
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

/// `scope`, with each path below a directory the index knows that is no
/// longer one on disk (removed, or replaced by a file or a link) lifted to
/// that directory: everything the index has below it went with it, in the
/// scope or not. So is a path below any link or file on disk: a scan never
/// follows a link (an event can name a path through one, when notify's
/// bookkeeping of a moved directory is stale).
fn lift_to_replaced_dirs(root: &Path, index: &Index, scope: &[String]) -> Vec<String> {
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
fn walk(
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
    for p in scope {
        // The parents, one entry each, so new directories are indexed too.
        let parts: Vec<&str> = p.split('/').collect();
        for i in 1..parts.len() {
            walk_from(root, &root.join(parts[..i].join("/")), 0, 0, ignore, &mut out, progress, unreadable)?;
        }
        walk_from(root, &root.join(p), 0, usize::MAX, ignore, &mut out, progress, unreadable)?;
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn walk_from(
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
fn special_kind(ft: &std::fs::FileType) -> &'static str {
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

/// Where the disk's `path` is in the folder: below the directory the index
/// knows at its parent, wherever the folder has that directory now. The
/// two differ while a peer's move of a directory is merged but not yet
/// written here (or held, see the write-back): read as a folder path, a
/// file moved or made in that directory on disk was put in a new directory
/// of the old name (a second copy of the directory), or the scan failed on
/// the names (the watcher simulation).
fn in_folder(folder: &mut Folder, index: &Index, path: &str) -> String {
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
fn place(folder: &mut Folder, index: &Index, path: &str, now: u64) -> Result<(Option<EntryId>, String), WatchError> {
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
fn move_entry(
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
fn moved_since(folder: &Folder, id: EntryId, base: &[EventId]) -> bool {
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
fn with_newest(folder: &Folder, id: EntryId, base: &[EventId]) -> Vec<EventId> {
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
fn placeable(folder: &mut Folder, id: EntryId, path: &str) -> bool {
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
            keys.retain(|k| index.files.get(k).is_some_and(|v| seen(k, v)));
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

/// Takes each (old path, new path) of `pairs` for the file known at the
/// old path, moved to the new one and edited there (its content read into
/// `bodies`).
#[allow(clippy::too_many_arguments)]
fn moved_and_edited(
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

/// Reads the bodies of `paths` not read yet.
///
/// A new file written while it was read (a program still writing it) is
/// left for a second look shortly (once, by `busy`), as a changed one is:
/// taken in, the half read would be a version of its own, sent to every
/// peer and kept in history (for a big file, most of its size again).
#[allow(clippy::too_many_arguments)]
fn read_bodies(
    root: &Path,
    disk: &BTreeMap<String, OnDisk>,
    paths: &[String],
    bodies: &mut HashMap<String, Body>,
    busy: &mut BTreeSet<String>,
    chunks: &mut dyn ChunkStore,
    report: &mut ScanReport,
    progress: &ScanProgress,
) {
    for p in paths {
        let Some(d) = disk.get(p) else { continue };
        if bodies.contains_key(p) {
            continue;
        }
        match read_counted(&root.join(p), d.kind, chunks, progress) {
            Ok(_)
                if d.kind == Kind::File
                    && std::fs::symlink_metadata(root.join(p)).map(|m| Stat::of(&m)).ok() != Some(d.stat)
                    && busy.insert(p.clone()) =>
            {
                report.deferred.push(p.clone());
            }
            Ok(b) => {
                bodies.insert(p.clone(), b);
            }
            Err(e) => unreadable(report, p, e), // or vanished meanwhile
        }
    }
}

/// Moves of text files: a known one `gone` picks and a new one of
/// `fresh` sharing most of its lines (see `similar`).
#[allow(clippy::too_many_arguments)]
fn moves_by_similarity(
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
fn replace(
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
fn closer_base(folder: &Folder, id: EntryId, base: &[EventId], other: &[EventId], body: &Body) -> Vec<EventId> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(root: &Path, p: &str) -> OnDisk {
        let m = std::fs::symlink_metadata(root.join(p)).expect("stat");
        OnDisk { kind: if m.is_dir() { Kind::Dir } else { Kind::File }, stat: Stat::of(&m), links: m.nlink() }
    }

    fn known(disk: &OnDisk) -> Known {
        Known {
            id: EntryId(EventId { agent: fsync_core::AgentId::from_index(1), seq: disk.stat.ino }),
            kind: disk.kind,
            stat: disk.stat,
            base: Vec::new(),
            staged: None,
            written: None,
        }
    }

    /// A fresh root holding `files` (path, text), scanned once by a node
    /// of agent 1.
    fn scanned(name: &str, files: &[(&str, &str)]) -> (std::path::PathBuf, Folder, fsync_core::chunks::Chunks, Index, Ignore) {
        let root = std::env::temp_dir().join(format!("fsync-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("mkdir");
        for (f, text) in files {
            let full = root.join(f);
            std::fs::create_dir_all(full.parent().expect("below the root")).expect("mkdir");
            std::fs::write(full, text).expect("write");
        }
        let mut folder = Folder::new(fsync_core::AgentId::from_index(1));
        let mut chunks = fsync_core::chunks::Chunks::default();
        let mut index = Index::default();
        let ignore = Ignore::load(&root);
        scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 1).expect("scan");
        (root, folder, chunks, index, ignore)
    }

    /// A binary file saved through a temp file (a new inode) and moved at
    /// once, before any scan: nothing on disk links the two names, and it
    /// was taken for a deletion and a new file (its history stayed with the
    /// deleted entry; the oracle). The kernel's rename report does.
    #[test]
    fn a_binary_saved_and_moved_before_a_scan_is_the_same_file_when_the_kernel_said_so() {
        let bin = |n: u8| -> Vec<u8> { (0..4096u32).map(|i| (i as u8).wrapping_mul(n) ^ 0xff).chain([0]).collect() };
        for told in [true, false] {
            let (root, mut folder, mut chunks, mut index, ignore) = scanned(&format!("renamed-{told}"), &[]);
            std::fs::write(root.join("b.bin"), bin(3)).expect("write");
            scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 1).expect("scan");
            let id = index.files["b.bin"].id;
            std::fs::write(root.join(".b.bin.tmp"), bin(5)).expect("write");
            std::fs::rename(root.join(".b.bin.tmp"), root.join("b.bin")).expect("save by rename");
            std::fs::rename(root.join("b.bin"), root.join("c.bin")).expect("mv");
            if told {
                index.renamed("b.bin".into(), "c.bin".into());
            }
            let scope = ["b.bin".to_owned(), "c.bin".to_owned()];
            let r = scan_scoped(&root, &mut folder, &mut chunks, &mut index, &ignore, Some(&scope), 2).expect("scan");
            if told {
                assert_eq!(r.moved, [("b.bin".to_owned(), "c.bin".to_owned())], "{r:?}");
                assert_eq!(index.files["c.bin"].id, id, "the same entry");
                assert_eq!(folder.doc(id).map(|d| d.version_ids().len()), Some(1));
                assert!(matches!(folder.state(id).map(|s| &s.content), Some(Content::Binary { .. })));
            } else {
                assert_eq!(r.created, ["c.bin".to_owned()], "no evidence, no move: {r:?}");
            }
            let _ = std::fs::remove_dir_all(&root);
        }
    }

    /// Two nodes made a directory of one name (merged into one on disk);
    /// the user removed it here: every entry behind it goes (left alive, the
    /// other one showed the directory again, empty, on every node).
    #[test]
    fn a_merged_directory_removed_here_does_not_come_back_empty() {
        let (root, mut folder, mut chunks, mut index, ignore) = scanned("merged-dir", &[("d/a.txt", "a\n")]);
        let mut peer = Folder::new(fsync_core::AgentId::from_index(2));
        peer.create("d", Kind::Dir, 1).expect("the peer's mkdir d");
        let (c, _) = peer.changes_since(folder.version_vector(), 0, usize::MAX);
        folder.apply_changes(&c).1.expect("valid");
        assert_eq!(folder.tree().nodes().filter(|n| n.path == "d").count(), 1, "merged");
        crate::write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        std::fs::remove_dir_all(root.join("d")).expect("rm -r d");
        scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 2).expect("scan");
        let gone = |f: &mut Folder| f.tree().nodes().all(|n| !n.path.starts_with('d'));
        assert!(gone(&mut folder), "{:?}", folder.tree().nodes().map(|n| n.path.clone()).collect::<Vec<_>>());
        let (c, _) = folder.changes_since(peer.version_vector(), 0, usize::MAX);
        peer.apply_changes(&c).1.expect("valid");
        assert!(gone(&mut peer), "on the peer");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Two nodes made a directory of one name, each with a file in it;
    /// the user moved it here: all of it goes to the new path, the peer's
    /// file too (left behind, the peer's entry kept the directory at its
    /// old path, with the peer's file in it).
    #[test]
    fn a_merged_directory_moved_here_moves_whole() {
        let (root, mut folder, mut chunks, mut index, ignore) = scanned("merged-move", &[("d/a.txt", "a\n")]);
        let mut peer = Folder::new(fsync_core::AgentId::from_index(2));
        let d = peer.create("d", Kind::Dir, 1).expect("the peer's mkdir d");
        let b = peer.create_into(Some(d), "b.txt", Kind::File, 1).expect("create");
        peer.set_text(b, "b\n", 1).expect("text");
        let (c, _) = peer.changes_since(folder.version_vector(), 0, usize::MAX);
        folder.apply_changes(&c).1.expect("valid");
        crate::write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 2).expect("scan");
        std::fs::rename(root.join("d"), root.join("e")).expect("mv d e");
        scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 3).expect("scan");
        let mut paths: Vec<String> = folder.tree().nodes().map(|n| n.path.clone()).collect();
        paths.sort();
        assert_eq!(paths, ["e", "e/a.txt", "e/b.txt"]);
        let r = crate::write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert!(r.written.is_empty() && r.moved.is_empty() && !root.join("d").exists(), "{r:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A directory replaced by a file, with live events for one path
    /// below it only: what else the index had below it went too (once, it
    /// stayed in the index, alive in the folder, and a file deleted here
    /// came back; watcher simulation).
    #[test]
    fn a_directory_replaced_by_a_file_takes_everything_below_it_along() {
        let (root, mut folder, mut chunks, mut index, ignore) =
            scanned("lifted", &[("d/a.txt", "a\n"), ("d/b.txt", "b\n"), ("d/sub/c.txt", "c\n")]);
        std::fs::remove_dir_all(root.join("d")).expect("rm -r d");
        std::fs::write(root.join("d"), "a file now\n").expect("write");
        let r =
            scan_scoped(&root, &mut folder, &mut chunks, &mut index, &ignore, Some(&["d/a.txt".to_owned()]), 2).expect("scan");
        assert!(r.created.contains(&"d".to_owned()), "{r:?}");
        for f in ["d/a.txt", "d/b.txt", "d/sub", "d/sub/c.txt"] {
            assert!(!index.files.contains_key(f), "{f} still known: {r:?}");
            assert!(folder.tree().nodes().all(|n| n.path != f), "{f} still in the folder: {r:?}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    /// An event naming a path through a link (notify's stale bookkeeping
    /// of a directory that became a link: the kind-changes oracle) made the
    /// scan follow the link and take the file beyond it for a new file
    /// below the link's path, a copy that went to every peer. The path is
    /// lifted to the link.
    #[test]
    fn a_path_through_a_link_is_never_followed() {
        let (root, mut folder, mut chunks, mut index, ignore) = scanned("through-link", &[("real/f.txt", "f\n")]);
        std::os::unix::fs::symlink("real", root.join("l")).expect("ln -s");
        let all = scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 2).expect("scan");
        assert_eq!(all.created, vec!["l".to_owned()]);
        let r =
            scan_scoped(&root, &mut folder, &mut chunks, &mut index, &ignore, Some(&["l/f.txt".to_owned()]), 3).expect("scan");
        assert!(r.created.is_empty() && r.modified.is_empty(), "{r:?}");
        assert!(!index.files.contains_key("l/f.txt"));
        assert!(folder.tree().nodes().all(|n| n.path != "l/f.txt"));
        assert_eq!(folder.tree().lookup("l").map(|n| n.kind), Some(Kind::Symlink));
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A file over the text limit is cut as it is read (never held whole),
    /// and its copy under a new name, with the old one removed, is still
    /// found as a move by its content.
    #[test]
    fn a_big_file_is_cut_as_it_is_read_and_found_again_by_its_content() {
        let (root, mut folder, mut chunks, mut index, ignore) = scanned("big-stream", &[]);
        let data = crate::noise(TEXT_MAX as usize + (1 << 20), 9);
        std::fs::write(root.join("big.bin"), &data).expect("write");
        let r = scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 2).expect("scan");
        assert_eq!(r.created, vec!["big.bin".to_owned()]);
        let id = folder.tree().lookup("big.bin").expect("taken in").id;
        let want: Vec<fsync_core::chunks::ChunkRef> = fsync_core::chunks::split(&data).into_iter().map(|(r, _)| r).collect();
        assert!(matches!(&folder.state(id).expect("state").content, Content::Binary { chunks: c, .. } if *c == want));
        std::fs::copy(root.join("big.bin"), root.join("copy.bin")).expect("cp");
        std::fs::remove_file(root.join("big.bin")).expect("rm");
        let r = scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 3).expect("scan");
        assert_eq!(r.moved, vec![("big.bin".to_owned(), "copy.bin".to_owned())], "{r:?}");
        assert_eq!(folder.tree().lookup("copy.bin").map(|n| n.id), Some(id));
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A new file still being written was taken in as far as it was read:
    /// a version of its own, sent to peers and kept in history (a big file
    /// written by a program was sent twice, its first half once more). One
    /// that changed between the walk and the read is looked at again, once.
    #[test]
    fn a_new_file_written_while_it_is_read_is_looked_at_again() {
        let root = std::env::temp_dir().join(format!("fsync-new-busy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(root.join("big.bin"), "first half").expect("write");
        // The walk saw it; then the writer went on.
        let disk: BTreeMap<String, OnDisk> = [("big.bin".to_owned(), on_disk(&root, "big.bin"))].into();
        std::fs::write(root.join("big.bin"), "first half, second half").expect("write");
        let fresh = vec!["big.bin".to_owned()];
        let (mut bodies, mut busy, mut report) = (HashMap::new(), BTreeSet::new(), ScanReport::default());
        let look = |bodies: &mut HashMap<String, Body>, busy: &mut BTreeSet<String>, report: &mut ScanReport| {
            let mut chunks = fsync_core::chunks::Chunks::default();
            read_bodies(&root, &disk, &fresh, bodies, busy, &mut chunks, report, &ScanProgress::default());
        };
        look(&mut bodies, &mut busy, &mut report);
        assert!(bodies.is_empty(), "taken in half written");
        assert_eq!(report.deferred, fresh);
        // Still changing at the second look: taken as it is (a file written
        // all the time is synced all the same).
        let mut report = ScanReport::default();
        look(&mut bodies, &mut busy, &mut report);
        assert!(bodies.contains_key("big.bin") && report.deferred.is_empty());
        // A whole scan takes it once it holds still.
        let (mut folder, mut chunks, mut index) =
            (Folder::new(fsync_core::AgentId::from_index(1)), fsync_core::chunks::Chunks::default(), Index::default());
        let r = scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 1).expect("scan");
        assert_eq!(r.created, fresh);
        assert!(index.busy.is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }

    /// What a walk sees when a file and a directory move while it goes on:
    /// both names of each. The old names are dropped (with what is below
    /// the directory), a hard link's is kept.
    #[test]
    fn a_name_walked_before_its_move_is_dropped() {
        let root = std::env::temp_dir().join(format!("fsync-seen-twice-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("new/m")).expect("mkdir");
        std::fs::write(root.join("new/f.txt"), "one\n").expect("write");
        std::fs::write(root.join("new/m/g.txt"), "two\n").expect("write");
        std::fs::write(root.join("h.txt"), "three\n").expect("write");
        std::fs::hard_link(root.join("h.txt"), root.join("link.txt")).expect("link");
        let mut index = Index::default();
        let mut disk = BTreeMap::new();
        for (old, now) in [("a/f.txt", "new/f.txt"), ("d", "new/m"), ("d/g.txt", "new/m/g.txt"), ("h.txt", "h.txt")] {
            let d = on_disk(&root, now);
            index.files.insert(old.to_owned(), known(&d));
            disk.insert(old.to_owned(), d);
        }
        for now in ["new", "new/f.txt", "new/m", "new/m/g.txt", "link.txt"] {
            disk.insert(now.to_owned(), on_disk(&root, now));
        }
        let fresh = disk.iter().filter(|(p, d)| is_new(&index, p, d)).map(|(_, d)| ino_key(d.stat, d.kind)).collect();
        seen_twice(&root, &index, &fresh, &mut disk);
        let left: Vec<&str> = disk.keys().map(String::as_str).collect();
        assert_eq!(left, ["h.txt", "link.txt", "new", "new/f.txt", "new/m", "new/m/g.txt"]);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The start-up scan (no live events yet) meets a file moved during its
    /// walk from a directory not reached yet into one passed (here: out of
    /// the folder while the first walk goes on, in before the second). It
    /// was deleted at once, and the move came next as a new file: with a
    /// peer's concurrent edit of the old name, both were kept. The second
    /// look finds the move; a file really gone is still deleted.
    #[test]
    fn the_start_up_scan_looks_again_at_what_it_finds_gone() {
        let root = std::env::temp_dir().join(format!("fsync-start-up-{}", std::process::id()));
        let aside = root.with_extension("aside");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a")).expect("mkdir");
        std::fs::create_dir_all(root.join("z")).expect("mkdir");
        std::fs::write(root.join("a/f.txt"), "one\ntwo\n").expect("write");
        std::fs::write(root.join("gone.txt"), "three\n").expect("write");
        let mut folder = Folder::new(fsync_core::AgentId::from_index(1));
        let mut chunks = fsync_core::chunks::Chunks::default();
        let mut index = Index::default();
        let ignore = Ignore::load(&root);
        let progress = ScanProgress::default();
        start_up_scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 1, &progress, || {}).expect("scan");
        let f = folder.tree().lookup("a/f.txt").expect("taken in").id;
        std::fs::rename(root.join("a/f.txt"), &aside).expect("mv out");
        std::fs::remove_file(root.join("gone.txt")).expect("rm");
        let mut paused = false;
        let r = start_up_scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 2, &progress, || {
            paused = true;
            std::thread::sleep(GONE_WAIT);
            std::fs::rename(&aside, root.join("z/g.txt")).expect("mv in");
        })
        .expect("scan");
        assert!(paused);
        assert_eq!(r.moved, vec![("a/f.txt".to_owned(), "z/g.txt".to_owned())], "{r:?}");
        assert_eq!((r.created.as_slice(), r.deleted.as_slice()), (&[][..], &["gone.txt".to_owned()][..]), "{r:?}");
        assert!(r.deferred.is_empty(), "{r:?}");
        assert_eq!(folder.tree().lookup("z/g.txt").map(|e| e.id), Some(f));
        assert!(folder.tree().lookup("gone.txt").is_none());
        let _ = std::fs::remove_dir_all(&root);
    }
}
