//! The folder as it was at a time, mounted read-only (`fsync mount FOLDER
//! MOUNTPOINT --at TIME`): a folder of its own, built from the history
//! ([`Folder::as_of`]) and never synced, so `diff -r`, `grep` and file
//! managers work on the past. The daemon hosts these mounts beside the
//! live folders.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use fsync_core::chunks::{ChunkSource, ChunkStore, Chunks};
use fsync_core::folder::Folder;
use fsync_core::AgentId;

/// A past state of a folder, for a read-only mount.
pub struct Past {
    state: Mutex<(Folder, Chunks)>,
}

impl Past {
    /// `folder` as the events before `before` (ms since the epoch) left it.
    /// Binary content is read from `source`, the store's chunks (those the
    /// live `chunks` hold there).
    pub fn of(folder: &mut Folder, chunks: &Chunks, source: Arc<dyn ChunkSource>, before: u64, agent: AgentId) -> Result<Past> {
        let past = folder.as_of(before, agent).context("cannot rebuild the folder as it was")?;
        let held = past.referenced_chunks().into_iter().filter(|h| chunks.has(h)).collect();
        Ok(Past { state: Mutex::new((past, Chunks::backed(source, held))) })
    }

    /// How many files, links and directories it holds.
    pub fn entries(&self) -> usize {
        self.state.lock().map_or(0, |mut s| s.0.tree().nodes().count())
    }
}

impl fuse_mount::Backend for Past {
    fn with<R>(&self, f: impl FnOnce(&mut Folder, &mut Chunks) -> R) -> Option<R> {
        // A panic elsewhere under the lock leaves the state as it was: it is
        // never changed (the mount is read-only).
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (folder, chunks) = &mut *s;
        Some(f(folder, chunks))
    }

    fn changed(&self) {}

    fn persist(&self) -> Result<(), String> {
        Ok(())
    }
}
