//! What a race or a crash left beside a path we wrote (the file a program
//! was writing as ours landed, a temp file an interrupted write-back left):
//! taken in, so that no write is lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fsync_core::chunks::ChunkStore;
use fsync_core::folder::{Folder, Kind};

use crate::ignore::TEMP_PREFIX;
use crate::index::{Index, Known};
use crate::WatchError;

use super::fsops::lstat;

/// A temp file holding what a raced write displaced, kept with a handle
/// on its directory: it is removed where it is, even when its directory
/// was moved meanwhile (a user's `mv` of the directory between our write
/// and our save), so no temp file stays behind in the user's tree.
#[derive(Clone, Debug)]
pub struct Displaced {
    pub(super) path: PathBuf,
    pub(super) dir: std::sync::Arc<std::fs::File>,
    pub(super) ino: u64,
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
    pub(super) fn remove(self) {
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

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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
pub(super) fn take_in_displaced(
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    k: &Known,
    bytes: Vec<u8>,
) -> Result<Vec<fsync_core::EventId>, WatchError> {
    let exec = folder.state(k.id).map_or(k.stat.exec, |s| s.exec);
    Ok(fsync_core::ingest::take_in_bytes(folder, chunks, k.id, &k.base, bytes, exec, now_ms())?)
}

/// [`take_in_displaced`] of what the file at `path` holds.
pub(super) fn take_in_file(folder: &mut Folder, chunks: &mut dyn ChunkStore, k: &Known, path: &Path) -> Result<(), WatchError> {
    let bytes = std::fs::read(path).map_err(|e| WatchError::io(path, e))?;
    take_in_displaced(folder, chunks, k, bytes).map(|_| ())
}

/// [`recover_leftovers`] for the given temp files.
pub(super) fn take_in_leftovers(
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
                take_in_file(folder, chunks, k, &tmp)?;
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
pub(super) fn only_temp_files(dir: &Path) -> Option<Vec<PathBuf>> {
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
pub(super) fn displaced_at<'a>(root: &Path, intended: &HashMap<u64, Vec<(&str, &'a Known)>>, tmp: &Path) -> Option<&'a Known> {
    let candidates = intended.get(&lstat(tmp)?.ino)?;
    let dir = tmp.parent()?.strip_prefix(root).ok()?.to_str()?;
    candidates.iter().find(|(p, _)| p.rsplit_once('/').map_or("", |(d, _)| d) == dir).map(|(_, k)| *k)
}
