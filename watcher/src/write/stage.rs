//! Content to temp files, landed in batches: each staged file is synced
//! and exchanged with its target, and what the exchange displaced is
//! checked against what the index expected.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fsync_core::chunks::ChunkStore;
use fsync_core::folder::{EntryId, Folder, Kind};

use crate::index::{Index, Known, Stat};
use crate::WatchError;

use super::fsops::{lstat, temp_path};
use super::leftovers::{take_in_displaced, Displaced};
use super::{needs_scan, WriteReport};

/// How a replace went.
pub(super) enum Replaced {
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
pub(super) struct Staged {
    pub(super) target: PathBuf,
    pub(super) tmp: PathBuf,
    /// The temp file's metadata (the inode survives the rename).
    pub(super) ours: Stat,
    /// The old file, held open across the rename.
    pub(super) old: Option<std::fs::File>,
}

/// What a write puts in a file: bytes, or a binary content written from
/// its chunks one at a time (no whole-file buffer).
pub(super) enum Body<'a> {
    Bytes(&'a [u8]),
    Chunks(&'a [fsync_core::chunks::ChunkRef], &'a dyn ChunkStore),
}

impl Body<'_> {
    /// Writes it to `out`; false when a chunk is missing or bad.
    pub(super) fn write_to(&self, out: &mut std::fs::File) -> std::io::Result<bool> {
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
pub(super) fn stage(target: &Path, body: &Body, exec: bool) -> Result<Option<Staged>, WatchError> {
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
    pub(super) fn abandon(self) {
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
    pub(super) fn rename(self, expected: Option<Stat>) -> Result<Renamed, WatchError> {
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
pub(super) enum Renamed {
    /// Nothing: the path needs a scan (see [`Replaced::Moved`]).
    Moved,
    /// Ours is at the target.
    Placed(Placed),
}

/// A file renamed into place, whose displaced old file is not checked yet.
pub(super) struct Placed {
    pub(super) staged: Staged,
    /// The target's directory, held from before the rename.
    pub(super) dir: std::fs::File,
    /// What the exchange displaced (now at the temp path), held open.
    pub(super) displaced: Option<std::fs::File>,
    pub(super) exchanged: bool,
}

impl Placed {
    /// Checks what the rename displaced, once the rename is durable: if it
    /// is not the file we expected, its bytes are a local edit.
    pub(super) fn settle(self, expected: Option<Stat>) -> Result<Replaced, WatchError> {
        use std::io::Read;
        let Placed { staged: this, dir, displaced, exchanged } = self;
        let io = |e| WatchError::io(&this.target, e);
        let mut ours = this.ours;
        // Renaming changes the inode's ctime; take it from the file now,
        // unless someone already wrote to it (then keep a ctime that cannot
        // match, so the next scan reads their write).
        match lstat(&this.target) {
            Some(now) if now.same_file(&ours) => ours.ctime = now.ctime,
            _ => ours.ctime = -1,
        }
        // Not what we expected (another file, or written since we looked):
        // its bytes are a local edit.
        if let (Some(mut f), Some(exp)) = (displaced.or(this.old), expected) {
            let was = f.metadata().map(|m| Stat::of(&m)).map_err(io)?;
            if !was.same_file(&exp) {
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
pub(super) const STAGE_BATCH: usize = 256;

/// Batches of at least this many files are made durable by syncing the
/// filesystem (see [`land_batch`]).
pub(super) const BULK_SYNC: usize = 16;

/// Drops a staged write that will not land: its temp file, and the intent
/// recorded for it (the disk never held that version: a scan must not take
/// what it finds there as made on it).
pub(super) fn drop_staged(index: &mut Index, path: &str, staged: Staged) {
    forget_intent(index, path);
    staged.abandon();
}

/// Forgets the write intent recorded for `path` (the write did not land).
pub(super) fn forget_intent(index: &mut Index, path: &str) {
    if let Some(k) = index.files.get_mut(path) {
        k.staged = None;
    }
    index.new_intents.remove(path);
}

/// A file staged for one path (then renamed: `S` is where it is).
pub(super) struct Pending<S = Staged> {
    pub(super) path: String,
    pub(super) id: EntryId,
    pub(super) kind: Kind,
    pub(super) version: Vec<fsync_core::EventId>,
    pub(super) known: Option<Known>,
    pub(super) staged: S,
}

/// Records the batch's intents through `intents`, then renames each file
/// into place and updates the index.
pub(super) fn land_batch(
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
