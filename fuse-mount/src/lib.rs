//! A folder's merged live state as a real filesystem (FUSE, through
//! fuser's own mount: no libfuse, and as root no fusermount).
//!
//! The store is the truth: the filesystem reads and edits the folder model
//! itself, through a [`Backend`] (the daemon's live folder), so a node may
//! mount a folder it has no directory for.
//!
//! - **Reads** come from the model: text rendered once per version and
//!   cached, binary ranges copied straight from the chunks.
//! - **Writes** go to one buffer per open file (shared by its handles, as a
//!   page cache would be: every handle and `stat` sees each write at once).
//!   Flush, fsync and release commit the buffer as one change, exactly as
//!   the watcher takes in a file it read (`fsync_core::ingest`): text is
//!   diffed from the version
//!   the writer started from, so it merges with what peers changed
//!   meanwhile; binary is chunked. Close makes a change visible at once
//!   and queues it to be saved within milliseconds (group commit); fsync
//!   returns only once it is durable.
//! - **Remote changes** show live: [`Mounted::refresh`] tells the kernel to
//!   drop what it cached of changed inodes and moved names.
//! - **Only the model's attributes sync**: content, names, the executable
//!   bit, symlinks. Other mode bits, owners and times set through the
//!   mount are kept while it is mounted; mtime is otherwise the time of
//!   the file's last change.

mod fs;
mod mount;

use fsync_core::chunks::Chunks;
use fsync_core::folder::Folder;

pub use mount::{mount, MountError, MountOptions, Mounted};

/// Where the mounted folder lives: the daemon's live copy of it.
pub trait Backend: Send + Sync + 'static {
    /// Runs `f` on the folder and its chunks, locked against peers; `None`
    /// when the folder is gone.
    fn with<R>(&self, f: impl FnOnce(&mut Folder, &mut Chunks) -> R) -> Option<R>;
    /// A local change was made: save it soon and tell peers.
    fn changed(&self);
    /// Returns once every change made so far is durable.
    fn persist(&self) -> Result<(), String>;
}
