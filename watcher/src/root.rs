//! A folder's root is what was shared, not whatever sits at its path.
//!
//! When a folder is first shared, a marker file ([`MARKER`]) naming the
//! folder is written at its root, and the name it holds is kept in the
//! node's store. The marker is the same file on every node (it names the
//! folder, not the node), so a tool that records it, such as `git add -A`,
//! sees no difference between nodes. Before any scan or write-back the daemon checks that the
//! directory at the folder's path is still that one ([`Root::still`]: the
//! same directory inode, the marker there). A folder whose directory was
//! moved away (`mv notes notes-old; mkdir notes`), replaced, unmounted (the
//! empty mount point has no marker) or removed as a whole stops with a
//! clear error and sends no deletion: walking the new, empty directory
//! would have deleted every file on every peer, and the inotify watch
//! follows the old inode, so changes made in `notes-old` would have
//! synced as if it were the folder.
//!
//! The anchors are Syncthing's `.stfolder` marker and Mutagen's check that
//! a synchronization root was not deleted as a whole.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The marker file at every folder's root (never synced).
pub const MARKER: &str = ".fsync-folder";

/// Why the directory at a folder's path is not the folder's root.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootError {
    /// Nothing at the path (moved away, deleted, or a mount not there).
    #[error("{} is gone (moved away, deleted, or not mounted); move the folder back there, or mount it, and it carries on", .0.display())]
    Missing(PathBuf),
    /// Something other than a directory at the path.
    #[error("{} is not a directory any more; put the folder back there and it carries on", .0.display())]
    NotADirectory(PathBuf),
    /// A directory without the folder's marker: another directory.
    #[error("{} is not the directory that was shared (its {MARKER} is missing or is another folder's): the folder was moved, replaced, unmounted or emptied as a whole; move it back (or mount it) and it carries on", .0.display())]
    NotTheFolder(PathBuf),
    /// The directory that was checked at start is no longer at the path.
    #[error("the folder's directory is no longer at {} (it was moved or replaced while the daemon ran); move it back and it carries on", .0.display())]
    Replaced(PathBuf),
    /// The directory holds nothing but the marker, where the folder has
    /// files.
    #[error("{} holds nothing but its {MARKER}, though the folder has files there: it was emptied as a whole, or the marker was copied into a new directory; nothing is deleted on peers. Put the folder's files back (or move its directory back) and it carries on; to delete everything, delete the files while fsync runs", .0.display())]
    Emptied(PathBuf),
    /// The marker could not be read or written.
    #[error("cannot use the folder marker {}: {cause}", .path.display())]
    Io {
        /// The marker's path.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}

/// The checked root of a folder: the directory's device and inode when
/// its marker was last found, for a cheap check before every scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    path: PathBuf,
    id: String,
    dev: u64,
    ino: u64,
}

impl Root {
    /// Writes the marker for `id` at `path` (a folder shared now, or one
    /// shared before markers existed) and returns the checked root. The
    /// marker is synced: a crash never leaves a folder whose store knows
    /// an id its disk lacks.
    pub fn mark(path: &Path, id: &str) -> Result<Root, RootError> {
        use std::io::Write;
        let marker = path.join(MARKER);
        let io = |cause| RootError::Io { path: marker.clone(), cause };
        let mut f = std::fs::File::create(&marker).map_err(io)?;
        f.write_all(marker_text(id).as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::File::open(path).and_then(|d| d.sync_all()).map_err(io)?;
        Root::check(path, id)
    }

    /// Checks that the directory at `path` is the folder with marker `id`.
    pub fn check(path: &Path, id: &str) -> Result<Root, RootError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RootError::Missing(path.to_owned())),
            Err(e) => return Err(RootError::Io { path: path.to_owned(), cause: e }),
        };
        if !meta.is_dir() {
            return Err(RootError::NotADirectory(path.to_owned()));
        }
        let marker = path.join(MARKER);
        match std::fs::read_to_string(&marker) {
            Ok(text) if text == marker_text(id) => {}
            Ok(_) => return Err(RootError::NotTheFolder(path.to_owned())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData) => {
                return Err(RootError::NotTheFolder(path.to_owned()))
            }
            Err(e) => return Err(RootError::Io { path: marker, cause: e }),
        }
        Ok(Root { path: path.to_owned(), id: id.to_owned(), dev: meta.dev(), ino: meta.ino() })
    }

    /// Checks, cheaply, that the directory at the path is still the one
    /// checked: the same device and inode, with the marker there.
    pub fn still(&self) -> Result<(), RootError> {
        match std::fs::metadata(&self.path) {
            Ok(m) if m.is_dir() && m.dev() == self.dev && m.ino() == self.ino => {}
            Ok(_) => return Err(RootError::Replaced(self.path.clone())),
            Err(_) => return Err(RootError::Missing(self.path.clone())),
        }
        match std::fs::symlink_metadata(self.path.join(MARKER)) {
            Ok(m) if m.is_file() => Ok(()),
            _ => Err(RootError::NotTheFolder(self.path.clone())),
        }
    }

    /// Fails when the directory holds nothing but the marker while the
    /// folder knows files in it (`known`): a scan of it would take every
    /// file for deleted, on every node. Checked before the scan of
    /// everything that a start or a return of the directory makes.
    pub fn not_emptied(&self, known: bool) -> Result<(), RootError> {
        if !known {
            return Ok(());
        }
        let io = |cause| RootError::Io { path: self.path.clone(), cause };
        let mut entries = std::fs::read_dir(&self.path).map_err(io)?;
        let anything = entries.any(|e| e.map_or(true, |e| e.file_name() != MARKER));
        if anything {
            Ok(())
        } else {
            Err(RootError::Emptied(self.path.clone()))
        }
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The marker's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

fn marker_text(id: &str) -> String {
    format!("fsync folder {id}\nThis file marks the root of a folder that fsync shares; do not remove it.\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_replaced_or_unmarked_root_is_told_apart() {
        let base = std::env::temp_dir().join(format!("fsync-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let notes = base.join("notes");
        std::fs::create_dir_all(&notes).expect("mkdir");
        let id = "notes";
        let root = Root::mark(&notes, id).expect("mark");
        assert!(root.still().is_ok());
        assert!(Root::check(&notes, id).is_ok());
        assert!(matches!(Root::check(&notes, "other"), Err(RootError::NotTheFolder(_))));
        // Moved away, and a new directory made at the path.
        std::fs::rename(&notes, base.join("notes-old")).expect("mv");
        assert!(matches!(root.still(), Err(RootError::Missing(_))));
        assert!(matches!(Root::check(&notes, id), Err(RootError::Missing(_))));
        std::fs::create_dir_all(&notes).expect("mkdir");
        assert!(matches!(root.still(), Err(RootError::Replaced(_))));
        assert!(matches!(Root::check(&notes, id), Err(RootError::NotTheFolder(_))));
        // Moved back: the same folder.
        std::fs::remove_dir(&notes).expect("rmdir");
        std::fs::rename(base.join("notes-old"), &notes).expect("mv back");
        assert!(root.still().is_ok());
        // The marker removed.
        std::fs::remove_file(notes.join(MARKER)).expect("rm");
        assert!(matches!(root.still(), Err(RootError::NotTheFolder(_))));
        // A file at the path.
        // A copy of the marker in a new, empty directory.
        std::fs::rename(&notes, base.join("notes-old")).expect("mv");
        std::fs::create_dir_all(&notes).expect("mkdir");
        Root::mark(&base.join("notes-old"), id).expect("mark");
        std::fs::copy(base.join("notes-old").join(MARKER), notes.join(MARKER)).expect("cp");
        let copied = Root::check(&notes, id).expect("the marker is the folder's");
        assert!(matches!(copied.not_emptied(true), Err(RootError::Emptied(_))));
        assert!(copied.not_emptied(false).is_ok(), "a folder with no files yet");
        std::fs::write(notes.join("f.txt"), "x").expect("write");
        assert!(copied.not_emptied(true).is_ok());
        std::fs::remove_dir_all(&notes).expect("rm");
        std::fs::write(&notes, "x").expect("write");
        assert!(matches!(Root::check(&notes, id), Err(RootError::NotADirectory(_))));
        let _ = std::fs::remove_dir_all(&base);
    }
}
