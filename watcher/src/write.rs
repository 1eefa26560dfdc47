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
//! checked there before it goes.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fsync_core::chunks::{all_present, ChunkStore};
use fsync_core::folder::{Content, EntryId, Folder, Kind};

use crate::ignore::{Ignore, TEMP_PREFIX};
use crate::index::{Index, Known, Stat};
use crate::WatchError;

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

/// A temp file holding what a raced write displaced, kept with a handle
/// on its directory: it is removed where it is, even when its directory
/// was moved meanwhile (a user's `mv` of the directory between our write
/// and our save), so no temp file stays behind in the user's tree.
#[derive(Clone, Debug)]
pub struct Displaced {
    path: PathBuf,
    dir: std::sync::Arc<std::fs::File>,
    ino: u64,
}

impl PartialEq for Displaced {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.ino == other.ino
    }
}

impl Eq for Displaced {}

impl Displaced {
    /// Where the temp file was made (its directory may have moved since).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the temp file from the directory it was made in, if it is
    /// still the displaced file there.
    fn remove(self) {
        use nix::fcntl::AtFlags;
        use nix::sys::stat::fstatat;
        use nix::unistd::{unlinkat, UnlinkatFlags};
        let Some(name) = self.path.file_name() else { return };
        let dir = self.dir.as_ref();
        if fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| st.st_ino == self.ino) {
            let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn lstat(path: &Path) -> Option<Stat> {
    std::fs::symlink_metadata(path).ok().map(|m| Stat::of(&m))
}

/// True when the disk at `path` is as the index last saw it. A path the
/// index knows but the disk lacks was deleted or moved by the user and not
/// scanned yet: not untouched (writing it would undo the user's change).
fn untouched(root: &Path, path: &str, known: Option<&Known>) -> bool {
    match (lstat(&root.join(path)), known) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(s), Some(k)) => s == k.stat,
        (Some(_), None) => false,
    }
}

/// Why `path` cannot be looked at, if it cannot (not merely absent): a
/// directory on the way without permissions. Such paths are skipped and
/// reported, not taken for changed (the scan cannot read them either).
fn inaccessible(root: &Path, path: &str) -> Option<String> {
    match std::fs::symlink_metadata(root.join(path)) {
        // Below a path that is no longer a directory: absent, not hidden.
        Err(e) if !matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => Some(e.to_string()),
        // A file we may not read may hold a change we have not seen: it is
        // not replaced.
        Ok(m) if m.is_file() => match std::fs::File::open(root.join(path)) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(e.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// The inode and kind at `path`, if anything is there.
fn kind_at(path: &Path) -> Option<(u64, Option<Kind>)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    Some((m.ino(), crate::index::kind_of(&m.file_type())))
}

/// Renames `from` to `to` only where nothing is at `to`; false when
/// something is. (Without renameat2's flags, a look then a rename.)
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Ok(false);
            }
            std::fs::rename(from, to).map(|()| true)
        }
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// True when what a rename put at `at` is the inode and kind the index
/// knew (`known`). Otherwise the path was replaced between the check and
/// the rename (a file made a directory, with files in it), and what
/// moved goes back to `home`, where the user made it (unless something is
/// there now: then it stays at `at`, for the scan).
fn moved_as_known(at: &Path, home: &Path, known: Option<(u64, Kind)>) -> bool {
    let Some((ino, kind)) = known else { return true };
    if kind_at(at) == Some((ino, Some(kind))) {
        return true;
    }
    let _ = rename_noreplace(at, home);
    false
}

/// What [`remove_unchanged`] did.
enum Removal {
    /// The file was as expected, and is gone.
    Removed,
    /// It had changed: it is back at its path, for the scan.
    PutBack,
    /// It had changed and something new is at its path: it is at this
    /// temp path.
    Kept(PathBuf),
}

/// Removes the file at `path` if it is still what `expected` describes.
/// It is renamed aside first, then looked at: a write that came after
/// the caller's look and before the rename is seen (the file goes back,
/// for the scan), and a program that opens the path after the rename
/// finds nothing there, or makes a new file the scan takes in. Only a
/// write through a descriptor opened before the rename, landing between
/// the look and the unlink, is not seen.
fn remove_unchanged(path: &Path, expected: &Stat) -> std::io::Result<Removal> {
    let dir = path.parent().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
    let tmp = temp_path(dir);
    std::fs::rename(path, &tmp)?;
    // A rename changes the ctime, not the rest.
    let same = lstat(&tmp).is_some_and(|s| s.ino == expected.ino && s.size == expected.size && s.mtime == expected.mtime);
    if same {
        std::fs::remove_file(&tmp)?;
        return Ok(Removal::Removed);
    }
    Ok(if rename_noreplace(&tmp, path)? { Removal::PutBack } else { Removal::Kept(tmp) })
}

fn temp_path(dir: &Path) -> PathBuf {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()))
}

/// Takes in what temp files a killed write-back left behind still hold of
/// the user's, then removes them (any of ours but this process's), returning
/// how many were removed and how many taken in. Nothing else writes files
/// with our prefix, and a node's folder is written by one daemon at a time.
///
/// A leftover whose inode is the one the index knew at a path with a write
/// intent beside it is the file an exchange displaced there. If it changed
/// since it was last read, it holds a write that slipped in before the
/// exchange and was not durably taken in: it is taken in from the version
/// it was made on (merged with what was written over it).
pub fn recover_leftovers(
    root: &Path,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &Index,
) -> Result<(usize, usize), WatchError> {
    let mine = format!("{TEMP_PREFIX}{}-", std::process::id());
    let leftovers: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy();
            e.file_type().is_file() && name.starts_with(TEMP_PREFIX) && !name.starts_with(&mine)
        })
        .map(|e| e.into_path())
        .collect();
    take_in_leftovers(root, leftovers, folder, chunks, index)
}

/// Takes in `bytes`, what a write by someone else left in the file the
/// index knew as `k`, as a local edit of its entry made on the version the
/// index had read (text merged, binary a concurrent version). Returns the
/// version taken in.
fn take_in_displaced(
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    k: &Known,
    bytes: Vec<u8>,
) -> Result<Vec<fsync_core::EventId>, WatchError> {
    let exec = folder.state(k.id).map_or(k.stat.exec, |s| s.exec);
    Ok(fsync_core::ingest::take_in_bytes(folder, chunks, k.id, &k.base, bytes, exec, now_ms())?)
}

/// [`recover_leftovers`] for the given temp files.
fn take_in_leftovers(
    root: &Path,
    leftovers: Vec<PathBuf>,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &Index,
) -> Result<(usize, usize), WatchError> {
    // Known files with a write intent, by inode (built once, and only when
    // something was left).
    let intended: HashMap<u64, Vec<(&str, &Known)>> = if leftovers.is_empty() {
        HashMap::new()
    } else {
        let mut m: HashMap<u64, Vec<(&str, &Known)>> = HashMap::new();
        for (p, k) in index.files.iter().filter(|(_, k)| k.kind == Kind::File && k.staged.is_some()) {
            m.entry(k.stat.ino).or_default().push((p.as_str(), k));
        }
        m
    };
    let (mut removed, mut taken) = (0, 0);
    for tmp in leftovers {
        if let Some(k) = displaced_at(root, &intended, &tmp) {
            let changed = lstat(&tmp).is_some_and(|s| s.size != k.stat.size || s.mtime != k.stat.mtime);
            if changed && folder.tree().path_of(k.id).is_some() {
                let bytes = std::fs::read(&tmp).map_err(|e| WatchError::io(&tmp, e))?;
                take_in_displaced(folder, chunks, k, bytes)?;
                taken += 1;
            }
        }
        if std::fs::remove_file(&tmp).is_ok() {
            removed += 1;
        }
    }
    Ok((removed, taken))
}

/// What `dir` holds, if it holds files and all of them are fsync's temp
/// files.
fn only_temp_files(dir: &Path) -> Option<Vec<PathBuf>> {
    let mut temps = Vec::new();
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let temp = e.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX));
        if !temp || !e.file_type().is_ok_and(|t| t.is_file()) {
            return None;
        }
        temps.push(e.path());
    }
    (!temps.is_empty()).then_some(temps)
}

/// The known file whose displaced old inode `tmp` holds: a file in the same
/// directory with a write intent and `tmp`'s inode.
fn displaced_at<'a>(root: &Path, intended: &HashMap<u64, Vec<(&str, &'a Known)>>, tmp: &Path) -> Option<&'a Known> {
    let candidates = intended.get(&lstat(tmp)?.ino)?;
    let dir = tmp.parent()?.strip_prefix(root).ok()?.to_str()?;
    candidates.iter().find(|(p, _)| p.rsplit_once('/').map_or("", |(d, _)| d) == dir).map(|(_, k)| *k)
}

/// How a replace went.
enum Replaced {
    /// Written; the metadata of what we wrote.
    Done(Stat),
    /// Someone wrote into the old file between the check and the rename;
    /// here is what it held after, the metadata of what we wrote, and the
    /// temp path still holding the old file (if it was exchanged there).
    Raced(Vec<u8>, Stat, Option<Displaced>),
    /// Not written: the file was moved or deleted meanwhile (or, for a new
    /// file, one appeared at its path). The path needs a scan.
    Moved,
}

/// A file written to its temp path, not synced nor renamed yet (see
/// [`land_batch`] for when it is made durable).
struct Staged {
    target: PathBuf,
    tmp: PathBuf,
    /// The temp file's metadata (the inode survives the rename).
    ours: Stat,
    /// The old file, held open across the rename.
    old: Option<std::fs::File>,
}

/// What a write puts in a file: bytes, or a binary content written from
/// its chunks one at a time (no whole-file buffer).
enum Body<'a> {
    Bytes(&'a [u8]),
    Chunks(&'a [fsync_core::chunks::ChunkRef], &'a dyn ChunkStore),
}

impl Body<'_> {
    /// Writes it to `out`; false when a chunk is missing or bad.
    fn write_to(&self, out: &mut std::fs::File) -> std::io::Result<bool> {
        match self {
            Body::Bytes(b) => out.write_all(b).map(|()| true),
            Body::Chunks(refs, store) => fsync_core::chunks::write_chunks(refs, *store, out),
        }
    }
}

/// Writes `body` to a temp file beside `target`, keeping the old
/// file's permission bits (with the executable bits set or cleared as
/// asked). `None` when a chunk could not be read after all (nothing is
/// left behind).
fn stage(target: &Path, body: &Body, exec: bool) -> Result<Option<Staged>, WatchError> {
    let dir = target.parent().ok_or(WatchError::Gone)?;
    let tmp = temp_path(dir);
    let io = |e| WatchError::io(target, e);
    // Hold the old file across the rename.
    let old = std::fs::File::open(target).ok();
    let old_mode = old.as_ref().and_then(|f| f.metadata().ok()).map(|m| m.permissions().mode() & 0o7777);
    let mode = match (old_mode, exec) {
        // Executable for whoever may read it.
        (Some(m), true) => m | 0o100 | ((m & 0o044) >> 2),
        (Some(m), false) => m & !0o111,
        (None, true) => 0o755,
        (None, false) => 0o644,
    };
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if !body.write_to(&mut f)? {
            return Ok(None);
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        Ok(Some(Stat::of(&f.metadata()?)))
    })();
    match result {
        Ok(Some(ours)) => Ok(Some(Staged { target: target.to_owned(), tmp, ours, old })),
        Ok(None) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(None)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(io(e))
        }
    }
}

impl Staged {
    /// Drops the temp file (the write is abandoned).
    fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }

    /// Renames the temp file over the target. `expected` is what the old
    /// file must still be (`None`: there must be no file).
    ///
    /// The rename is an exchange (`renameat2`), so whatever was at the
    /// target in that instant ends up at the temp path instead of being
    /// destroyed: if it is not the file we expected (an editor's
    /// temp-and-rename save, or a write into it since we looked), its bytes
    /// are taken in as a local edit. If nothing was there any more (the
    /// user moved or deleted it), nothing is written and the path is
    /// scanned. A new file lands only where there is still none. What it
    /// displaced is checked by [`Placed::settle`], once the rename is
    /// durable.
    fn rename(self, expected: Option<Stat>) -> Result<Renamed, WatchError> {
        use nix::errno::Errno;
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        let io = |e| WatchError::io(&self.target, e);
        let dir = self.target.parent().ok_or(WatchError::Gone)?;
        // The directory is held from before the rename: what the exchange
        // displaces is found through it, wherever the directory goes.
        let dir = std::fs::File::open(dir).map_err(io)?;
        let flags = if expected.is_some() { RenameFlags::RENAME_EXCHANGE } else { RenameFlags::RENAME_NOREPLACE };
        let exchanged = match renameat2(AT_FDCWD, &self.tmp, AT_FDCWD, &self.target, flags) {
            Ok(()) => expected.is_some(),
            // The temp file or the target's directory went meanwhile.
            Err(Errno::ENOENT) => {
                let _ = std::fs::remove_file(&self.tmp);
                return Ok(Renamed::Moved);
            }
            Err(Errno::EEXIST) => {
                let _ = std::fs::remove_file(&self.tmp);
                return Ok(Renamed::Moved);
            }
            // A filesystem without renameat2 flags: a plain rename, with the
            // old file's descriptor as the only check.
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                if let Err(e) = std::fs::rename(&self.tmp, &self.target) {
                    let _ = std::fs::remove_file(&self.tmp);
                    return Err(io(e));
                }
                false
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.tmp);
                return Err(io(std::io::Error::from(e)));
            }
        };
        // A directory or link made at the path since we looked (a file
        // replaced by another kind) was swapped out by the exchange: it is
        // swapped back at once, ours dropped, and the path scanned.
        if exchanged && std::fs::symlink_metadata(&self.tmp).is_ok_and(|m| !m.is_file()) {
            if let Err(e) = renameat2(AT_FDCWD, &self.tmp, AT_FDCWD, &self.target, RenameFlags::RENAME_EXCHANGE) {
                return Err(io(std::io::Error::from(e)));
            }
            let _ = std::fs::remove_file(&self.tmp);
            return Ok(Renamed::Moved);
        }
        // What was displaced, now at the temp path, is held open; it is
        // checked only after the rename is durable, so a writer that had it
        // open gets as long as possible to finish. Its name stays until we
        // know it holds nothing of the user's that is not durable yet.
        let displaced = if exchanged { std::fs::File::open(&self.tmp).ok() } else { None };
        Ok(Renamed::Placed(Placed { staged: self, dir, displaced, exchanged }))
    }
}

/// What [`Staged::rename`] did.
enum Renamed {
    /// Nothing: the path needs a scan (see [`Replaced::Moved`]).
    Moved,
    /// Ours is at the target.
    Placed(Placed),
}

/// A file renamed into place, whose displaced old file is not checked yet.
struct Placed {
    staged: Staged,
    /// The target's directory, held from before the rename.
    dir: std::fs::File,
    /// What the exchange displaced (now at the temp path), held open.
    displaced: Option<std::fs::File>,
    exchanged: bool,
}

impl Placed {
    /// Checks what the rename displaced, once the rename is durable: if it
    /// is not the file we expected, its bytes are a local edit.
    fn settle(self, expected: Option<Stat>) -> Result<Replaced, WatchError> {
        use std::io::Read;
        let Placed { staged: this, dir, displaced, exchanged } = self;
        let io = |e| WatchError::io(&this.target, e);
        let mut ours = this.ours;
        // Renaming changes the inode's ctime; take it from the file now,
        // unless someone already wrote to it (then keep a ctime that cannot
        // match, so the next scan reads their write).
        match lstat(&this.target) {
            Some(now) if now.ino == ours.ino && now.size == ours.size && now.mtime == ours.mtime => ours.ctime = now.ctime,
            _ => ours.ctime = -1,
        }
        // Not what we expected (another file, or written since we looked):
        // its bytes are a local edit.
        if let (Some(mut f), Some(exp)) = (displaced.or(this.old), expected) {
            let was = f.metadata().map(|m| Stat::of(&m)).map_err(io)?;
            if was.ino != exp.ino || was.size != exp.size || was.mtime != exp.mtime {
                // Someone is writing it right now, maybe: a rewrite in place
                // truncates first. Read until it holds still (a short while
                // at most), so a half-written or emptied file is not taken
                // for their edit.
                let mut raced = Vec::new();
                for _ in 0..10 {
                    use std::io::Seek;
                    let before = f.metadata().map(|m| Stat::of(&m)).map_err(io)?;
                    raced.clear();
                    f.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
                    f.read_to_end(&mut raced).map_err(io)?;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    let after = f.metadata().map(|m| Stat::of(&m)).map_err(io)?;
                    if after == before && !(raced.is_empty() && exp.size > 0 && after.modified_within(100)) {
                        break;
                    }
                }
                let kept = exchanged.then(|| Displaced { path: this.tmp.clone(), dir: std::sync::Arc::new(dir), ino: was.ino });
                return Ok(Replaced::Raced(raced, ours, kept));
            }
        }
        if exchanged {
            let _ = std::fs::remove_file(&this.tmp);
        }
        Ok(Replaced::Done(ours))
    }
}

/// Files staged and renamed per round: each holds its old file open, so
/// the round stays well under the open-file limit.
const STAGE_BATCH: usize = 256;
/// Batches of at least this many files are made durable by syncing the
/// filesystem (see [`land_batch`]).
const BULK_SYNC: usize = 16;

fn replace_link(target: &Path, to: &str) -> Result<(), WatchError> {
    let dir = target.parent().ok_or(WatchError::Gone)?;
    let tmp = temp_path(dir);
    let io = |e| WatchError::io(target, e);
    std::os::unix::fs::symlink(to, &tmp).map_err(io)?;
    std::fs::rename(&tmp, target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
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
            if scope.is_empty() {
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
                        } else if now.ino == v.stat.ino && now.size == v.stat.size && now.mtime == v.stat.mtime {
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
            _ => match remove_unchanged(&full, &k.stat) {
                Ok(Removal::Removed) => Ok(()),
                Ok(Removal::PutBack) => {
                    report.needs_scan.push(p);
                    continue;
                }
                Ok(Removal::Kept(tmp)) => {
                    // Written meanwhile, and something new took its path:
                    // the write is an edit of the entry, concurrent with the
                    // deletion, so the entry lives on with it.
                    let bytes = std::fs::read(&tmp).map_err(|e| WatchError::io(&tmp, e))?;
                    take_in_displaced(folder, chunks, &k, bytes)?;
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

/// Drops a staged write that will not land: its temp file, and the intent
/// recorded for it (the disk never held that version: a scan must not take
/// what it finds there as made on it).
fn drop_staged(index: &mut Index, path: &str, staged: Staged) {
    forget_intent(index, path);
    staged.abandon();
}

/// Forgets the write intent recorded for `path` (the write did not land).
fn forget_intent(index: &mut Index, path: &str) {
    if let Some(k) = index.files.get_mut(path) {
        k.staged = None;
    }
    index.new_intents.remove(path);
}

/// A file staged for one path (then renamed: `S` is where it is).
struct Pending<S = Staged> {
    path: String,
    id: EntryId,
    kind: Kind,
    version: Vec<fsync_core::EventId>,
    known: Option<Known>,
    staged: S,
}

/// Records the batch's intents through `intents`, then renames each file
/// into place and updates the index.
fn land_batch(
    batch: Vec<Pending>,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    index: &mut Index,
    report: &mut WriteReport,
    intents: &mut dyn FnMut(&mut Index) -> Result<(), String>,
) -> Result<(), WatchError> {
    if batch.is_empty() {
        return Ok(());
    }
    for p in &batch {
        match index.files.get_mut(&p.path) {
            Some(k) => k.staged = Some((p.staged.ours.ino, p.version.clone())),
            None => {
                index.new_intents.insert(p.path.clone(), (p.id, p.staged.ours.ino, p.version.clone()));
            }
        }
    }
    if let Err(e) = intents(index) {
        for p in batch {
            drop_staged(index, &p.path, p.staged);
        }
        return Err(WatchError::Intent(e));
    }
    // Durable in two syncs for the batch: the staged contents before any
    // rename (a rename must never be durable before what it puts in
    // place), the renames before anything is checked or recorded. One
    // sync of the filesystem each for a big batch (one per file cost a
    // journal commit per file: the first sync of 20,000 files spent most
    // of its time there); a few files are synced one by one, so a save's
    // latency does not depend on what else the filesystem has to write.
    let bulk = batch.len() >= BULK_SYNC;
    // Each filesystem the batch writes to (a folder may hold mounts).
    let dirs: Vec<PathBuf> = if bulk {
        let mut dirs: Vec<PathBuf> = batch.iter().filter_map(|p| p.staged.target.parent().map(Path::to_owned)).collect();
        dirs.sort();
        dirs.dedup();
        let mut devs = HashSet::new();
        dirs.retain(|d| std::fs::metadata(d).is_ok_and(|m| devs.insert(std::os::unix::fs::MetadataExt::dev(&m))));
        dirs
    } else {
        Vec::new()
    };
    let sync_fs = || -> Result<(), WatchError> {
        dirs.iter().try_for_each(|dir| {
            let d = std::fs::File::open(dir).map_err(|e| WatchError::io(dir, e))?;
            nix::unistd::syncfs(&d).map_err(|e| WatchError::io(dir, std::io::Error::from(e)))
        })
    };
    let mut placed: Vec<Pending<Renamed>> = Vec::with_capacity(batch.len());
    let mut failed = if bulk { sync_fs().err() } else { None };
    for p in batch {
        let Pending { path, id, kind, version, known, staged } = p;
        if failed.is_some() {
            drop_staged(index, &path, staged);
            continue;
        }
        if !bulk {
            match std::fs::File::open(&staged.tmp).and_then(|f| f.sync_all()) {
                Ok(()) => {}
                // Its directory went meanwhile (the user moved or removed
                // it): the scan sees where, and the next pass writes again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    drop_staged(index, &path, staged);
                    needs_scan(index, report, path);
                    continue;
                }
                Err(e) => {
                    failed = Some(WatchError::io(&staged.target, e));
                    drop_staged(index, &path, staged);
                    continue;
                }
            }
        }
        match staged.rename(known.as_ref().map(|k| k.stat)) {
            Ok(r) => {
                if let (false, Renamed::Placed(at)) = (bulk, &r) {
                    if let Err(e) = at.dir.sync_all() {
                        failed = Some(WatchError::io(&at.staged.target, e));
                    }
                }
                placed.push(Pending { path, id, kind, version, known, staged: r });
            }
            Err(e) => {
                forget_intent(index, &path);
                failed = Some(e);
            }
        }
    }
    if bulk && !placed.is_empty() {
        if let Err(e) = sync_fs() {
            failed.get_or_insert(e);
        }
    }
    for p in placed {
        let expected = p.known.as_ref().map(|k| k.stat);
        // What could not be checked keeps its intent: the scan knows our
        // file by it.
        let r = match p.staged {
            Renamed::Moved => Replaced::Moved,
            Renamed::Placed(at) => match at.settle(expected) {
                Ok(r) => r,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            },
        };
        index.new_intents.remove(&p.path);
        let stat = match &r {
            Replaced::Done(s) | Replaced::Raced(_, s, _) => *s,
            Replaced::Moved => {
                // The index keeps what it knew, so the scan can find where
                // the file went (by its inode) or that it is new.
                if let Some(k) = index.files.get_mut(&p.path) {
                    k.staged = None;
                }
                report.needs_scan.push(p.path);
                continue;
            }
        };
        let mut written = crate::index::Written::now();
        if let Replaced::Raced(bytes, _, displaced) = r {
            report.displaced.extend(displaced);
            // A write slipped in (into the old file, or a new file renamed
            // over it): take it in from the base it was made on, text
            // merged, binary as a concurrent version (it would be lost
            // otherwise: the disk now holds ours), and leave the path for
            // the next round.
            // The write is taken in as an edit of the entry whose file it
            // was: the one the index had at the path, which is another
            // entry when ours took its name (two names swapped).
            if let Some(k) = p.known.as_ref() {
                let raced = take_in_displaced(folder, chunks, k, bytes)?;
                if k.id == p.id {
                    written = crate::index::Written::after_race(raced);
                }
            }
            // The index records what we wrote (so the merge is written
            // next round, and nothing is read back twice).
            report.raced.push(p.path.clone());
        }
        tracing::trace!(path = %p.path, stat = ?stat, "landed");
        index.files.insert(
            p.path.clone(),
            Known { id: p.id, kind: p.kind, stat, base: p.version, staged: None, written: Some(written) },
        );
        report.written.push(p.path);
    }
    failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fsync_core::{chunks::Chunks, AgentId};

    /// A file replaced by a directory between our check and our rename:
    /// the exchange swapped the directory out (to an ignored temp name,
    /// removed at the next start: its files were lost). It is swapped back,
    /// and the path is scanned instead.
    #[test]
    fn a_directory_made_where_we_write_is_never_swapped_out() {
        let root = fresh_root("fsync-write-unit-dir");
        let target = root.join("x");
        std::fs::write(&target, "old\n").expect("write");
        let expected = lstat(&target).expect("stat");
        let staged = stage(&target, &Body::Bytes(b"ours\n"), false).expect("stage").expect("written");
        std::fs::remove_file(&target).expect("rm");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::write(target.join("inside.txt"), "user's\n").expect("write");
        assert!(matches!(staged.rename(Some(expected)), Ok(Renamed::Moved)));
        assert_eq!(std::fs::read_to_string(target.join("inside.txt")).expect("still there"), "user's\n");
        let left: Vec<_> = std::fs::read_dir(&root).expect("list").flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("x")], "a temp file was left");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Two files swapped names on a peer while the user saved one of them
    /// here: the write-back overwrote each with the other (its rename was
    /// blocked by the other), and the user's save, displaced, was taken in
    /// as an edit of the file now written at that path, not of the file it
    /// was made to: the other file's text replaced the one the user saved,
    /// and the save's lines were kept twice (the kind-changes oracle, with
    /// conflict names that flipped).
    #[test]
    fn a_save_displaced_by_a_swap_of_names_is_taken_in_as_the_file_it_was() {
        let (root, mut folder, mut chunks, mut index, a) = one_file_written("fsync-write-unit-swap");
        folder.rename(a, "a.txt", 1).expect("mv f.txt a.txt");
        folder.set_text(a, "alpha\n", 1).expect("text");
        let b = folder.create("b.txt", Kind::File, 1).expect("create");
        folder.set_text(b, "beta\n", 1).expect("text");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        // A peer swaps the two names.
        folder.rename(a, "c.txt", 2).expect("mv a c");
        folder.rename(b, "a.txt", 2).expect("mv b a");
        folder.rename(a, "b.txt", 2).expect("mv c b");
        // The user saves a.txt (alpha's file, here) as the swap lands.
        let target = root.join("a.txt");
        let mut intents = |_: &mut Index| -> Result<(), String> { append_mine(&target) };
        let report = write_back_with(&root, &mut folder, &mut chunks, &mut index, &mut intents).expect("write");
        assert_eq!(report.raced, vec!["a.txt".to_owned()], "{report:?}");
        let text = |f: &Folder, id| f.doc(id).expect("doc").text();
        assert_eq!(text(&folder, a), "alpha\nmine\n", "the save is alpha's");
        assert_eq!(text(&folder, b), "beta\n", "beta is as it was");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert_eq!(std::fs::read_to_string(root.join("a.txt")).expect("a"), "beta\n");
        assert_eq!(std::fs::read_to_string(root.join("b.txt")).expect("b"), "alpha\nmine\n");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The user's write into `target` as a write-back lands: a line
    /// appended (from inside the intents callback, just before the
    /// replacement).
    fn append_mine(target: &Path) -> Result<(), String> {
        let mut f = std::fs::OpenOptions::new().append(true).open(target).map_err(|e| e.to_string())?;
        f.write_all(b"mine\n").map_err(|e| e.to_string())
    }

    /// A fresh root holding `f.txt` ("one\n"), written back from a folder.
    /// A batch of writes where the user removed one file's directory after
    /// it was staged: the whole batch failed, and every file in it kept the
    /// intent of a write that never landed, so the next scan took what the
    /// disk held as an edit of the version never written, and the lines it
    /// lacked were deleted everywhere (the kind-changes oracle lost tokens).
    /// The rest of the batch lands; the removed one is scanned, with no
    /// intent left.
    #[test]
    fn a_directory_removed_under_a_staged_write_drops_only_that_write_and_its_intent() {
        let root = fresh_root("fsync-write-unit-gone-dir");
        let mut folder = Folder::new(AgentId::from_index(1));
        let (mut chunks, mut index) = (Chunks::default(), Index::default());
        let f = folder.create("d/f.txt", Kind::File, 1).expect("create");
        let g = folder.create("g.txt", Kind::File, 1).expect("create");
        folder.set_text(f, "f\n", 1).expect("text");
        folder.set_text(g, "g\n", 1).expect("text");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        folder.set_text(f, "f\npeer\n", 2).expect("text");
        folder.set_text(g, "g\npeer\n", 2).expect("text");
        let batch: Vec<Pending> = [(f, "d/f.txt"), (g, "g.txt")]
            .into_iter()
            .map(|(id, path)| {
                let text = folder.doc(id).expect("doc").text();
                let staged = stage(&root.join(path), &Body::Bytes(text.as_bytes()), false).expect("stage").expect("staged");
                let version = folder.doc(id).expect("doc").version_ids();
                Pending { path: path.to_owned(), id, kind: Kind::File, version, known: index.files.get(path).cloned(), staged }
            })
            .collect();
        std::fs::remove_dir_all(root.join("d")).expect("rm -r d");
        let mut report = WriteReport::default();
        land_batch(batch, &mut folder, &mut chunks, &mut index, &mut report, &mut |_: &mut Index| Ok(())).expect("landed");
        assert_eq!(report.written, vec!["g.txt".to_owned()]);
        assert_eq!(report.needs_scan, vec!["d/f.txt".to_owned()]);
        assert_eq!(std::fs::read_to_string(root.join("g.txt")).expect("g"), "g\npeer\n");
        assert!(index.files.get("d/f.txt").is_some_and(|k| k.staged.is_none()), "{:?}", index.files.get("d/f.txt"));
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A peer's deletion of a file that a program wrote after the
    /// write-back looked at it (the look said unchanged): the removal sees
    /// the write once the file is renamed aside, and puts the file back
    /// for the scan instead of deleting the write with it.
    #[test]
    fn a_write_after_the_look_before_a_removal_is_put_back_not_deleted() {
        let root = fresh_root("fsync-write-unit-remove");
        let target = root.join("f.txt");
        std::fs::write(&target, "one\n").expect("write");
        let looked = lstat(&target).expect("stat");
        // The program's write, between the look and the removal.
        std::fs::write(&target, "one\ntwo\n").expect("write");
        assert!(matches!(remove_unchanged(&target, &looked), Ok(Removal::PutBack)));
        assert_eq!(std::fs::read_to_string(&target).expect("still there"), "one\ntwo\n");
        // Unchanged since the look: removed, with no temp file left.
        let looked = lstat(&target).expect("stat");
        assert!(matches!(remove_unchanged(&target, &looked), Ok(Removal::Removed)));
        assert_eq!(std::fs::read_dir(&root).expect("list").count(), 0);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A peer's rename of a file, with the file made a directory here
    /// between the write-back's check and its rename: the rename took the
    /// user's new directory (and the file in it) to the entry's new name.
    /// The inode and kind moved are checked, and the directory goes back.
    #[test]
    fn a_path_made_a_directory_under_a_peers_rename_goes_back_with_its_files() {
        let root = fresh_root("fsync-write-unit-put-back");
        std::fs::write(root.join("a.txt"), "the entry\n").expect("write");
        let known_at = |p: &Path| match kind_at(p) {
            Some((ino, Some(kind))) => (ino, kind),
            other => panic!("nothing synced at {}: {other:?}", p.display()),
        };
        let known = known_at(&root.join("a.txt"));
        // The user's replacement, after the check.
        std::fs::rename(root.join("a.txt"), root.join("kept-aside")).expect("mv");
        std::fs::create_dir(root.join("a.txt")).expect("mkdir");
        std::fs::write(root.join("a.txt/k.txt"), "the user's\n").expect("write");
        // The write-back's rename, then its check.
        std::fs::rename(root.join("a.txt"), root.join("b.txt")).expect("rename");
        assert!(!moved_as_known(&root.join("b.txt"), &root.join("a.txt"), Some(known)), "not what the index knew");
        assert_eq!(std::fs::read_to_string(root.join("a.txt/k.txt")).expect("back"), "the user's\n");
        assert!(kind_at(&root.join("b.txt")).is_none());
        // What the index knew moves as it is.
        let dir = known_at(&root.join("a.txt"));
        std::fs::rename(root.join("a.txt"), root.join("c")).expect("rename");
        assert!(moved_as_known(&root.join("c"), &root.join("a.txt"), Some(dir)));
        assert!(root.join("c/k.txt").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A store that counts the chunks read from it.
    struct Counting {
        inner: Chunks,
        reads: std::cell::Cell<usize>,
    }

    impl ChunkStore for Counting {
        fn get(&self, hash: &fsync_core::chunks::ChunkHash) -> Option<Vec<u8>> {
            self.reads.set(self.reads.get() + 1);
            self.inner.get(hash)
        }
        fn has(&self, hash: &fsync_core::chunks::ChunkHash) -> bool {
            self.inner.has(hash)
        }
        fn put(&mut self, hash: fsync_core::chunks::ChunkHash, bytes: &[u8]) {
            self.inner.put(hash, bytes)
        }
    }

    /// Each pass of the write-back, while a big file's chunks arrived,
    /// read every chunk received so far (up to the first missing one) to
    /// assemble the whole file in memory: quadratic in the file's chunks
    /// (a 200 MiB file took 6 s on loopback) and a whole-file buffer. A
    /// content is written only once all of its chunks are here, and from
    /// them one at a time.
    #[test]
    fn a_binary_still_arriving_is_not_read_and_is_written_from_its_chunks() {
        let root = fresh_root("fsync-write-unit-chunks");
        // The content, made on a peer: its chunks, and its version here.
        let data = crate::noise(3 << 20, 7);
        let mut theirs = Chunks::default();
        let mut folder = Folder::new(AgentId::from_index(1));
        let id = folder.create("big.bin", Kind::File, 1).expect("create");
        fsync_core::ingest::take_in_bytes(&mut folder, &mut theirs, id, &[], data.clone(), false, 1).expect("binary");
        let parts = fsync_core::chunks::split(&data);
        assert!(parts.len() > 10, "{} chunks", parts.len());
        let mut chunks = Counting { inner: Chunks::default(), reads: Default::default() };
        let mut index = Index::default();
        for (r, bytes) in &parts[..parts.len() - 1] {
            chunks.put(r.hash, bytes);
            let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
            assert_eq!(report.waiting_for_chunks, vec!["big.bin".to_owned()]);
        }
        assert_eq!(chunks.reads.get(), 0, "chunks were read before all were here");
        assert!(!root.join("big.bin").exists());
        let (last, bytes) = parts.last().expect("chunks");
        chunks.put(last.hash, bytes);
        let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert_eq!(report.written, vec!["big.bin".to_owned()], "{report:?}");
        assert_eq!(chunks.reads.get(), parts.len(), "each chunk read once");
        assert!(std::fs::read(root.join("big.bin")).expect("written") == data);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// An empty directory for one test, named after it.
    fn fresh_root(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("mkdir");
        root
    }

    fn one_file_written(name: &str) -> (PathBuf, Folder, Chunks, Index, EntryId) {
        let root = fresh_root(name);
        let mut folder = Folder::new(AgentId::from_index(1));
        let mut chunks = Chunks::default();
        let mut index = Index::default();
        let id = folder.create("f.txt", Kind::File, 1).expect("create");
        folder.set_text(id, "one\n", 1).expect("text");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        (root, folder, chunks, index, id)
    }

    /// A SIGKILL after a write-back's exchange, before what a raced append
    /// brought was saved: the append was in the displaced old file only
    /// (the heavy-writes SIGKILL test lost lines this way). The displaced
    /// file is kept until the save, and the restart takes it in.
    #[test]
    fn a_write_displaced_by_a_write_back_survives_a_kill_before_the_save() {
        let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-kill");
        // A peer's line arrives (saved: durable), and the write-back runs;
        // the user appends just before the exchange.
        folder.set_text(id, "peer\none\n", 2).expect("text");
        let durable = folder.clone();
        let mut saved_index = None;
        let target = root.join("f.txt");
        let mut intents = |i: &mut Index| -> Result<(), String> {
            saved_index = Some(i.encode());
            append_mine(&target)
        };
        let report = write_back_with(&root, &mut folder, &mut chunks, &mut index, &mut intents).expect("write");
        assert_eq!(report.raced, vec!["f.txt".to_owned()]);
        assert_eq!(report.displaced.len(), 1, "the displaced file is kept until the save");
        // SIGKILL: what was taken in from the race is gone with the
        // process; the store has `durable` and the index of the intents.
        restart_after_a_kill(&root, durable, &saved_index.expect("intents"), &report);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A displaced temp file stayed in its directory, in the user's tree,
    /// until a restart when the user moved that directory between the
    /// write-back and the save. It is removed where it is.
    #[test]
    fn a_displaced_file_whose_directory_was_moved_before_the_save_is_removed() {
        let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit-moved-dir");
        let d = folder.create("d", Kind::Dir, 1).expect("mkdir");
        let g = folder.create_into(Some(d), "g.txt", Kind::File, 1).expect("create");
        folder.set_text(g, "one\n", 1).expect("text");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        folder.set_text(g, "peer\none\n", 2).expect("text");
        let target = root.join("d/g.txt");
        let mut intents = |_: &mut Index| -> Result<(), String> { append_mine(&target) };
        let mut report = write_back_with(&root, &mut folder, &mut chunks, &mut index, &mut intents).expect("write");
        assert_eq!(report.displaced.len(), 1);
        std::fs::rename(root.join("d"), root.join("e")).expect("mv d e");
        report.settle();
        let names: Vec<_> = std::fs::read_dir(root.join("e")).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("g.txt")], "the temp file is gone from the moved directory");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A peer deleted a file whose directory the user had just moved: the
    /// write-back found the old path gone and dropped it from the index,
    /// so the scan took the file in the moved directory for a new one, and
    /// a peer's concurrent edit of it kept it twice (oracle, kind changes).
    /// The index keeps it until the scan has seen the move.
    #[test]
    fn a_deleted_file_in_a_directory_the_user_moved_is_not_taken_for_new() {
        let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit-deleted-in-moved");
        let d = folder.create("d", Kind::Dir, 1).expect("mkdir");
        let g = folder.create_into(Some(d), "g.txt", Kind::File, 1).expect("create");
        folder.set_text(g, "one\n", 1).expect("text");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        folder.delete(g, 2).expect("a peer deletes it");
        std::fs::rename(root.join("d"), root.join("e")).expect("mv d e");
        let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert_eq!(report.needs_scan, vec!["d".to_owned()], "{report:?}");
        assert!(index.files.contains_key("d/g.txt"), "still known at its old path");
        let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 3).expect("scan");
        assert!(r.created.is_empty(), "nothing new: {r:?}");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert!(!root.join("e/g.txt").exists(), "the peer's deletion applies where the file went");
        assert!(root.join("e").is_dir());
        assert_eq!(folder.tree().nodes().filter(|n| n.path.ends_with("g.txt")).count(), 0);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A peer moved a file into a new directory of the file's own name
    /// (`mv x t; mkdir x; mv t x/f`): the write-back held the move until a
    /// scan took in the file "above" it, which was the file itself, so it
    /// never happened (watcher simulation).
    #[test]
    fn a_file_moved_into_a_directory_of_its_own_name_is_written_there() {
        let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-own-name");
        folder.rename(id, "t", 2).expect("mv f.txt t");
        let d = folder.create("f.txt", Kind::Dir, 2).expect("mkdir f.txt");
        folder.move_into(id, Some(d), "g.txt", 2).expect("mv t f.txt/g.txt");
        let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert!(report.needs_scan.is_empty(), "{report:?}");
        assert_eq!(std::fs::read_to_string(root.join("f.txt/g.txt")).expect("moved"), "one\n");
        let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 3).expect("scan");
        assert!(r.is_empty(), "the disk is the folder: {r:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A peer moved a directory below new directories made at its own old
    /// name (`mv d t; mkdir -p d/e; mv t d/e/d`): the rename straight
    /// there would put the directory into itself (EINVAL).
    #[test]
    fn a_directory_moved_below_its_own_old_name_is_written_there() {
        let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit-dir-own-name");
        let d = folder.create("d", Kind::Dir, 1).expect("mkdir d");
        let g = folder.create_into(Some(d), "g.txt", Kind::File, 1).expect("create");
        folder.set_text(g, "in d\n", 1).expect("text");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 1).expect("scan");
        assert!(r.is_empty(), "our own writes: {r:?}");
        folder.rename(d, "t", 2).expect("mv d t");
        let d2 = folder.create("d", Kind::Dir, 2).expect("mkdir d");
        let e = folder.create_into(Some(d2), "e", Kind::Dir, 2).expect("mkdir d/e");
        folder.move_into(d, Some(e), "d", 2).expect("mv t d/e/d");
        let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert!(report.needs_scan.is_empty() && report.failed.is_empty(), "{report:?}");
        assert_eq!(std::fs::read_to_string(root.join("d/e/d/g.txt")).expect("moved"), "in d\n");
        let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 3).expect("scan");
        assert!(r.is_empty(), "the disk is the folder: {r:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A peer moved a file to a name another file is moving away from,
    /// while the user deleted it here: it is not written at the new name
    /// once that is free, before the scan has seen the deletion (written,
    /// the scan would find it alive, and a deletion lost; watcher
    /// simulation). Then the move, concurrent with the deletion, keeps it
    /// there by the rule.
    #[test]
    fn a_file_deleted_here_is_not_written_at_a_name_being_vacated_before_the_scan() {
        let (root, mut folder, mut chunks, mut index, f) = one_file_written("fsync-write-unit-vacated-name");
        let g = folder.create("g.txt", Kind::File, 1).expect("create");
        folder.set_text(g, "two\n", 1).expect("text");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        folder.rename(g, "h.txt", 2).expect("mv g.txt h.txt");
        folder.rename(f, "g.txt", 2).expect("mv f.txt g.txt");
        std::fs::remove_file(root.join("f.txt")).expect("rm f.txt");
        let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert_eq!(std::fs::read_to_string(root.join("h.txt")).expect("moved"), "two\n");
        assert!(!root.join("g.txt").exists(), "written before the scan saw it deleted");
        assert!(report.needs_scan.contains(&"f.txt".to_owned()), "{report:?}");
        let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 3).expect("scan");
        assert_eq!(r.deleted, vec!["f.txt".to_owned()], "{r:?}");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert_eq!(folder.tree().path_of(f), Some("g.txt"));
        assert_eq!(std::fs::read_to_string(root.join("g.txt")).expect("kept where it went"), "one\n");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A link made here, not scanned yet, where a peer's directory is to
    /// be written: nothing goes through it (it leads out of the folder),
    /// neither the peer's new files nor a file it moved there.
    #[test]
    fn a_peers_files_are_never_written_through_a_link_made_here_before_the_scan() {
        let (root, mut folder, mut chunks, mut index, f) = one_file_written("fsync-write-unit-through-link");
        let outside = root.with_extension("outside");
        let _ = std::fs::remove_dir_all(&outside);
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, root.join("out")).expect("ln -s");
        let d = folder.create("out", Kind::Dir, 2).expect("a peer's mkdir out");
        let x = folder.create_into(Some(d), "x.txt", Kind::File, 2).expect("create");
        folder.set_text(x, "peer's\n", 2).expect("text");
        folder.move_into(f, Some(d), "f.txt", 2).expect("mv f.txt out/");
        let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert!(std::fs::read_dir(&outside).expect("list").next().is_none(), "written outside the folder: {report:?}");
        assert!(report.needs_scan.contains(&"out".to_owned()), "{report:?}");
        assert_eq!(std::fs::read_to_string(root.join("f.txt")).expect("not moved"), "one\n");
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&outside);
    }

    /// The user moved a directory out of the folder and left a link in its
    /// place, not scanned yet, and a peer deleted a file in it: the file,
    /// outside the folder now, is not removed through the link.
    #[test]
    fn a_peers_deletion_is_never_made_through_a_link_made_here_before_the_scan() {
        let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit-remove-through-link");
        let x = folder.create("d/x.txt", Kind::File, 1).expect("create");
        folder.set_text(x, "x\n", 1).expect("text");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        let outside = root.with_extension("outside");
        let _ = std::fs::remove_dir_all(&outside);
        std::fs::rename(root.join("d"), &outside).expect("mv d out of the folder");
        std::os::unix::fs::symlink(&outside, root.join("d")).expect("ln -s");
        folder.delete(x, 2).expect("a peer's rm d/x.txt");
        let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert!(outside.join("x.txt").exists(), "removed outside the folder: {report:?}");
        assert!(report.needs_scan.contains(&"d".to_owned()), "{report:?}");
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&outside);
    }

    /// A peer renamed a file, and an editor that had it open saved it
    /// under the old name right after: the index knows it at both paths
    /// until the write-back. The user then removed the old name: the scan
    /// deleted the entry, which was on disk at the new path all along, and
    /// the write-back removed it there too (watcher simulation, deleted
    /// stays deleted: the file the user kept was gone).
    #[test]
    fn an_old_path_of_a_file_known_at_two_does_not_delete_it() {
        let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-two-paths");
        folder.rename(id, "g.txt", 2).expect("a peer renames it");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert!(root.join("g.txt").exists());
        std::fs::write(root.join("f.txt"), "one\nsaved by the editor\n").expect("the editor saves the old name");
        let ig = Ignore::load(&root);
        crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &ig, 3).expect("scan");
        assert!(index.files.contains_key("f.txt") && index.files.contains_key("g.txt"));
        // Known at the old name as the folder is now (its deletion then
        // follows everything, the peer's rename included).
        let now = folder.doc(id).expect("doc").version_ids();
        index.files.get_mut("f.txt").expect("known").base = now;
        std::fs::remove_file(root.join("f.txt")).expect("rm the old name");
        for t in 4..7 {
            crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &ig, t).expect("scan");
            std::thread::sleep(crate::scan::GONE_WAIT);
        }
        assert!(folder.state(id).is_some_and(|s| s.alive), "not deleted");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert_eq!(folder.tree().path_of(id), Some("g.txt"));
        assert_eq!(std::fs::read_to_string(root.join("g.txt")).expect("kept"), "one\nsaved by the editor\n");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A peer renamed and edited a file; before that reached the disk, the
    /// user renamed it too (and its metadata changed with the move): the
    /// scan took the move in after the peer's, and then the file's content
    /// against a base that held the peer's edit, which the disk did not
    /// show, so the peer's lines were taken out (watcher simulation, lost).
    #[test]
    fn a_move_here_while_a_peers_move_and_edit_are_on_their_way_keeps_the_edit() {
        let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-moves-crossed");
        folder.rename(id, "q.txt", 2).expect("a peer renames it");
        folder.set_text(id, "one\npeer\n", 2).expect("and edits it");
        std::fs::rename(root.join("f.txt"), root.join("r.txt")).expect("mv");
        std::fs::write(root.join("r.txt"), "one\nmine\n").expect("and saves it");
        let ig = Ignore::load(&root);
        crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &ig, 3).expect("scan");
        let text = folder.doc(id).expect("doc").text();
        assert!(text.contains("peer\n") && text.contains("mine\n"), "{text:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A file moved and saved between two scans, then deleted: the save
    /// was taken in from before the move, the deletion from after the save
    /// only, so it was concurrent with our own move and did not undo it
    /// (the file came back where it was moved; watcher simulation, deleted
    /// stays deleted).
    #[test]
    fn a_file_moved_saved_and_deleted_here_stays_deleted() {
        let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-moved-saved-deleted");
        std::fs::rename(root.join("f.txt"), root.join("g.txt")).expect("mv");
        std::fs::write(root.join("g.txt"), "one\nmine\n").expect("save");
        let ig = Ignore::load(&root);
        let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &ig, 3).expect("scan");
        assert_eq!(r.moved, vec![("f.txt".to_owned(), "g.txt".to_owned())], "{r:?}");
        std::fs::remove_file(root.join("g.txt")).expect("rm");
        for t in 4..7 {
            crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &ig, t).expect("scan");
            std::thread::sleep(crate::scan::GONE_WAIT);
        }
        assert_eq!(folder.tree().path_of(id), None, "deleted");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A file the user moved while a peer's deletion of it (or of the
    /// path, for a directory put there) was on its way: the write-back
    /// found the old path gone and dropped it from the index, so the scan
    /// took the moved file for a new one, and its history (a concurrent
    /// binary version kept there) was no longer the file's (oracle, kind
    /// changes). The move is concurrent with the deletion: the file lives
    /// on where the user put it, as the entry it was.
    #[test]
    fn a_file_moved_while_a_peer_deleted_it_keeps_its_history_where_it_went() {
        let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-moved-deleted");
        folder.set_text(id, "one\ntwo\n", 2).expect("text");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        folder.delete(id, 3).expect("a peer deletes it");
        std::fs::create_dir(root.join("d")).expect("mkdir");
        std::fs::rename(root.join("f.txt"), root.join("d/g.txt")).expect("mv");
        let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert_eq!(report.needs_scan, vec!["f.txt".to_owned()], "{report:?}");
        let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 4).expect("scan");
        assert!(r.created.iter().all(|p| p == "d"), "the file is not new: {r:?}");
        assert_eq!(folder.tree().path_of(id), Some("d/g.txt"), "the same entry, where it went");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert_eq!(std::fs::read_to_string(root.join("d/g.txt")).expect("kept on disk"), "one\ntwo\n");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The same for a directory a peer removed with what is in it: moved
    /// here meanwhile, the directory lives on where it went (the move is
    /// concurrent with its removal), and what was in it stays deleted (no
    /// one touched it). Without the move, the removal took the directory
    /// from where the user put it.
    #[test]
    fn a_directory_moved_while_a_peer_removed_it_lives_on_where_it_went() {
        let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit-dir-moved-deleted");
        let d = folder.create("d", Kind::Dir, 1).expect("mkdir");
        let g = folder.create_into(Some(d), "g.txt", Kind::File, 1).expect("create");
        folder.set_text(g, "in d\n", 1).expect("text");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        folder.delete(d, 2).expect("a peer removes d and what is in it");
        std::fs::rename(root.join("d"), root.join("e")).expect("mv d e");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 3).expect("scan");
        assert!(r.created.is_empty(), "nothing new: {r:?}");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert_eq!(folder.tree().path_of(d), Some("e"));
        assert!(root.join("e").is_dir(), "where the user put it");
        assert_eq!(folder.tree().path_of(g), None, "deleted, as no one touched it");
        assert!(!root.join("e/g.txt").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A new process (another pid) starts from `durable` and the index
    /// last saved, after a kill that left `report`'s displaced file: the
    /// raced `mine` line is taken in from it, each line once in `f.txt`.
    fn restart_after_a_kill(root: &Path, durable: Folder, saved_index: &[u8], report: &WriteReport) {
        let (mut folder, mut index) = (durable, Index::decode(saved_index).expect("decode"));
        let mut chunks = Chunks::default();
        let leftover = report.displaced[0].path().to_owned();
        let other = root.join(format!("{TEMP_PREFIX}1-{}", std::process::id()));
        std::fs::rename(&leftover, &other).expect("as another process's");
        assert_eq!(recover_leftovers(root, &mut folder, &mut chunks, &index).expect("recover"), (1, 1));
        crate::scan::scan(root, &mut folder, &mut chunks, &mut index, &Ignore::load(root), 3).expect("scan");
        write_back(root, &mut folder, &mut chunks, &mut index).expect("write");
        let text = std::fs::read_to_string(root.join("f.txt")).expect("read");
        for line in ["peer\n", "one\n", "mine\n"] {
            assert_eq!(text.matches(line).count(), 1, "{line:?} once in {text:?}");
        }
        assert!(!other.exists(), "the leftover is removed");
    }

    /// A raced write in the first batch of a big write-back: no later
    /// batch saves its intents before the caller has saved what the race
    /// brought, so a kill then still finds the displaced file marked.
    #[test]
    fn a_race_in_an_early_batch_survives_a_kill_before_the_save() {
        let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-batches");
        let ids: Vec<EntryId> = (0..STAGE_BATCH + 10)
            .map(|n| {
                let e = folder.create(&format!("g{n:04}.txt"), Kind::File, 1).expect("create");
                folder.set_text(e, "x\n", 1).expect("text");
                e
            })
            .collect();
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        folder.set_text(id, "peer\none\n", 2).expect("text");
        for e in &ids {
            folder.set_text(*e, "x\ny\n", 2).expect("text");
        }
        let durable = folder.clone();
        let mut saved_index = None;
        let target = root.join("f.txt");
        let mut intents = |i: &mut Index| -> Result<(), String> {
            if saved_index.is_none() {
                append_mine(&target)?;
            }
            saved_index = Some(i.encode());
            Ok(())
        };
        let report = write_back_with(&root, &mut folder, &mut chunks, &mut index, &mut intents).expect("write");
        assert_eq!(report.raced, vec!["f.txt".to_owned()]);
        // Killed here: the store has `durable` and the last intents.
        restart_after_a_kill(&root, durable, &saved_index.expect("intents"), &report);
        for n in 0..STAGE_BATCH + 10 {
            let g = std::fs::read_to_string(root.join(format!("g{n:04}.txt"))).expect("read");
            assert_eq!(g, "x\ny\n");
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A program reads the file, we exchange ours in, it writes what it
    /// read plus its edit (into ours, by path). What it had appended before
    /// the exchange is taken in from the displaced file and is in what it
    /// writes: once in the result, not twice.
    #[test]
    fn a_read_modify_write_across_our_exchange_keeps_each_line_once() {
        let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-rmw");
        folder.set_text(id, "peer\none\n", 2).expect("text");
        let target = root.join("f.txt");
        let mut intents = |_: &mut Index| -> Result<(), String> { append_mine(&target) };
        let report = write_back_with(&root, &mut folder, &mut chunks, &mut index, &mut intents).expect("write");
        assert_eq!(report.raced, vec!["f.txt".to_owned()]);
        std::fs::write(&target, "one\nmine\nmore\n").expect("the program's write");
        crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 3).expect("scan");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        let text = std::fs::read_to_string(&target).expect("read");
        for line in ["peer\n", "one\n", "mine\n", "more\n"] {
            assert_eq!(text.matches(line).count(), 1, "{line:?} once in {text:?}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A displaced temp file can move with its directory before the pass
    /// removes it (the user renamed the directory): a peer's deletion of
    /// that directory still removes it, temp file and all.
    #[test]
    fn a_deleted_directory_holding_a_leftover_temp_file_is_removed() {
        let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit-stale-dir");
        let d = folder.create("d", Kind::Dir, 1).expect("mkdir");
        let f = folder.create("d/g.txt", Kind::File, 1).expect("create");
        folder.set_text(f, "g\n", 1).expect("text");
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        std::fs::write(root.join(format!("d/{TEMP_PREFIX}{}-7", std::process::id())), "old\n").expect("leftover");
        folder.delete(f, 2).expect("delete");
        folder.delete(d, 2).expect("delete");
        let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert!(!root.join("d").exists(), "the directory went: {:?}", report.removed);
        assert!(!index.files.contains_key("d"));
        let _ = std::fs::remove_dir_all(&root);
    }

    /// When our write landed is kept for `UNSEEN_WRITE` only: a folder
    /// where every file was once written does not keep it for all of them.
    #[test]
    fn what_our_writes_replaced_is_forgotten_after_its_window() {
        let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit");
        assert!(index.files["f.txt"].written.as_ref().is_some_and(crate::index::Written::recent));
        let long_ago = std::time::Instant::now().checked_sub(crate::scan::UNSEEN_WRITE).expect("uptime");
        if let Some(w) = index.files.get_mut("f.txt").and_then(|k| k.written.as_mut()) {
            w.at = long_ago;
        }
        write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert_eq!(index.files["f.txt"].written, None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
