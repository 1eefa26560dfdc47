//! File operations of the write-back that never destroy what they did not
//! expect: looks at a path, renames that never replace, a removal that
//! checks what it removes.

use std::path::{Path, PathBuf};

use fsync_core::folder::Kind;

use crate::ignore::TEMP_PREFIX;
use crate::index::{Known, Stat};
use crate::WatchError;

pub(super) fn lstat(path: &Path) -> Option<Stat> {
    std::fs::symlink_metadata(path).ok().map(|m| Stat::of(&m))
}

/// True when the disk at `path` is as the index last saw it. A path the
/// index knows but the disk lacks was deleted or moved by the user and not
/// scanned yet: not untouched (writing it would undo the user's change).
pub(super) fn untouched(root: &Path, path: &str, known: Option<&Known>) -> bool {
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
pub(super) fn inaccessible(root: &Path, path: &str) -> Option<String> {
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
pub(super) fn kind_at(path: &Path) -> Option<(u64, Option<Kind>)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    Some((m.ino(), crate::index::kind_of(&m.file_type())))
}

/// Renames `from` to `to` only where nothing is at `to`; false when
/// something is. (Without renameat2's flags, a look then a rename.)
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<bool> {
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
pub(super) fn moved_as_known(at: &Path, home: &Path, known: Option<(u64, Kind)>) -> bool {
    let Some((ino, kind)) = known else { return true };
    if kind_at(at) == Some((ino, Some(kind))) {
        return true;
    }
    let _ = rename_noreplace(at, home);
    false
}

/// What [`remove_unchanged`] did.
pub(super) enum Removal {
    /// The file was as expected, and is gone from its path: it is at this
    /// temp path now, to be looked at once more (see [`super::Aside`]).
    Removed(PathBuf),
    /// It had changed: it is back at its path, for the scan.
    PutBack,
    /// It had changed and something new is at its path: it is at this
    /// temp path.
    Kept(PathBuf),
}

/// Removes the file at `path` from there if it is still what `expected`
/// describes. It is renamed aside first, then looked at: a write that
/// came after the caller's look and before the rename is seen (the file
/// goes back, for the scan), and a program that opens the path after the
/// rename finds nothing there, or makes a new file the scan takes in. A
/// write through a descriptor opened before the rename may still land
/// after this look: the file is moved on to a temp name at `root` (its
/// directory may go next) and looked at again later (see
/// [`super::Aside`]); where it cannot be (another filesystem), it goes.
pub(super) fn remove_unchanged(root: &Path, path: &Path, expected: &Stat) -> std::io::Result<Removal> {
    let dir = path.parent().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
    let tmp = temp_path(dir);
    std::fs::rename(path, &tmp)?;
    // A rename changes the ctime, not the rest.
    let same = lstat(&tmp).is_some_and(|s| s.same_file(expected));
    if same {
        let aside = temp_path(root);
        return Ok(match std::fs::rename(&tmp, &aside) {
            Ok(()) => Removal::Removed(aside),
            Err(_) => {
                std::fs::remove_file(&tmp)?;
                Removal::Removed(tmp)
            }
        });
    }
    Ok(if rename_noreplace(&tmp, path)? { Removal::PutBack } else { Removal::Kept(tmp) })
}

pub(super) fn temp_path(dir: &Path) -> PathBuf {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()))
}

pub(super) fn replace_link(target: &Path, to: &str) -> Result<(), WatchError> {
    let dir = target.parent().ok_or(WatchError::Gone)?;
    let tmp = temp_path(dir);
    let io = |e| WatchError::io(target, e);
    std::os::unix::fs::symlink(to, &tmp).map_err(io)?;
    std::fs::rename(&tmp, target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}
