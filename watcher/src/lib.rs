//! Turns changes on disk into fsync-core edits, and writes merged state
//! back without clobbering local edits.
//!
//! - [`scan`]: disk to folder (initial and recovery scans; live events
//!   trigger the same scan).
//! - [`write`]: folder to disk, through synced temp files and renames,
//!   never over a change not yet scanned.
//! - [`diff`]: text diffs as edits (lines, refined to characters; from
//!   fsync-core, which the mount and the HTTP front end share).
//! - [`ignore`]: default ignores and `.fsyncignore`.
//! - [`guard`]: mass deletions held until the user lets them through.
//! - [`root`]: the folder root's identity (its marker).
//! - [`live`]: notify events, debounced into paths to rescan; lost events
//!   become a full rescan.

pub use fsync_core::diff;
pub mod guard;
pub mod ignore;
mod index;
pub mod live;
pub mod root;
pub mod scan;
mod similar;
pub mod write;

use std::path::Path;

pub use guard::Guard;
pub use index::{Files, Index, Known, Stat, Unsaved};
pub use scan::{scan, scan_scoped, scan_with_progress, ScanProgress, ScanReport, GONE_WAIT, UNSEEN_WRITE};
pub use write::{write_back, write_back_with, Dirty, WriteReport, ASIDE_GRACE};

/// Why a scan or write-back failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// A filesystem operation failed.
    #[error("{path}: {cause}")]
    Io {
        /// Where.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// Walking the folder failed.
    #[error("walking the folder: {0}")]
    Walk(String),
    /// The folder refused a change (for example an invalid path).
    #[error(transparent)]
    Folder(#[from] fsync_core::folder::FolderError),
    /// Something disappeared while being handled.
    #[error("an entry disappeared while being written")]
    Gone,
    /// The caller could not make the write intents durable; nothing was
    /// replaced.
    #[error("cannot record what is about to be written: {0}")]
    Intent(String),
}

impl From<fsync_core::ingest::IngestError> for WatchError {
    fn from(e: fsync_core::ingest::IngestError) -> WatchError {
        match e {
            fsync_core::ingest::IngestError::Folder(e) => WatchError::Folder(e),
            _ => WatchError::Gone,
        }
    }
}

impl WatchError {
    pub(crate) fn io(path: &Path, cause: std::io::Error) -> WatchError {
        WatchError::Io { path: path.display().to_string(), cause }
    }
}

/// Random bytes, the same for the same seed: binary content for tests.
#[cfg(test)]
fn noise(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut bytes = vec![0; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}
