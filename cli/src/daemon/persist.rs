//! Saving: new events, chunks and the disk index, synced once per round
//! (group commit), and peers' last-seen times.

// The loop's state and imports are this module's too.
use super::*;

/// Saves a folder's new events, the chunks they need that are here, and
/// the disk index; then syncs once (group commit). The caller holds the
/// folder, so no peer sees a local change before it is durable.
pub(super) fn save(l: &mut Local, s: &mut FolderState, store: &mut RedbStore) -> Result<()> {
    let (wrote, chunks) = write_unsynced(l, s, store)?;
    if wrote {
        store.sync()?;
    }
    // Durable now: peers may have it, and the chunks' bytes may leave
    // memory (read back from the store when needed).
    s.folder.set_shareable(Some(l.saver.saved().clone()));
    s.chunks.mark_stored(&chunks);
    Ok(())
}

/// The writing half of [`save`]: everything not saved yet, committed
/// without a disk sync. Returns whether anything was written, and the
/// chunks written (stored once the caller's sync succeeds; after a failure
/// they are still in memory and written again).
pub(super) fn write_unsynced(l: &mut Local, s: &FolderState, store: &mut RedbStore) -> Result<(bool, Vec<ChunkHash>)> {
    let mut wrote = l.saver.save(&l.name, &s.folder, store)?;
    let fresh: Vec<(ChunkHash, &[u8])> = s.chunks.fresh().collect();
    if !fresh.is_empty() {
        // In slices that bound a transaction's memory.
        for part in fresh.chunks(1024) {
            store.put_chunks(part)?;
        }
        wrote = true;
    }
    let fresh: Vec<ChunkHash> = fresh.into_iter().map(|(h, _)| h).collect();
    wrote |= put_index(&l.name, &mut l.index, store)?;
    let events: u64 = l.saver.saved().values().sum();
    if l.snapshot_now || events >= l.snapshot_events + SNAPSHOT_EVERY {
        fsync_core::store::save_snapshot(&l.name, &s.folder, store)?;
        l.snapshot_events = events;
        wrote = true;
    }
    l.snapshot_now = false;
    Ok((wrote, fresh))
}

/// Stores what changed in a folder's disk index, without a disk sync;
/// returns whether anything was written. After a failure everything counts
/// as changed again.
pub(super) fn put_index(name: &str, index: &mut Index, store: &mut RedbStore) -> Result<bool, fsync_core::store::StoreError> {
    let unsaved = index.take_unsaved();
    if unsaved.is_empty() {
        return Ok(false);
    }
    let r = store.put_index(name, &unsaved.rows, unsaved.intents.as_deref());
    if r.is_err() {
        index.touch_all();
    }
    r.map(|()| true)
}

/// Peers' last-seen times (unix ms) as saved by the daemon.
pub fn load_last_seen(store: &RedbStore) -> BTreeMap<String, u64> {
    store.get_state("last_seen").ok().flatten().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

impl Daemon {
    /// Saves what is not saved yet.
    pub(super) fn persist(&mut self, i: usize) {
        let l = &mut self.locals[i];
        let store = &mut self.store;
        let state = l.state.clone();
        let r = tokio::task::block_in_place(|| {
            if !l.mounted {
                return with_state(&state, |s| save(l, s, store)).unwrap_or(Ok(()));
            }
            // A mounted folder has no disk copy to keep in step, so the
            // disk sync runs without holding the folder: the mount and
            // peers go on meanwhile, and peers get the events only once
            // they are durable (the shareable limit moves after the sync).
            let (wrote, chunks) = with_state(&state, |s| write_unsynced(l, s, store)).unwrap_or(Ok((false, Vec::new())))?;
            if wrote {
                store.sync()?;
            }
            with_state(&state, |s| {
                s.folder.set_shareable(Some(l.saver.saved().clone()));
                s.chunks.mark_stored(&chunks);
            });
            Ok(())
        });
        self.saved(i, r);
    }
}

impl Daemon {
    /// Bookkeeping after a save: remember the durable point, or go back to
    /// it (the store drops what it had not synced when it fails).
    pub(super) fn saved(&mut self, i: usize, r: Result<()>) {
        let l = &mut self.locals[i];
        match r {
            Ok(()) => {
                // Newly durable events may go to peers now (see `save`):
                // the loop hands them over after this turn. The HTTP
                // subscriptions look at them too (a change through the
                // mount is known to the rest of the daemon from here).
                let advanced = l.durable.saved() != l.saver.saved();
                l.durable = l.saver.clone();
                if advanced {
                    self.generation.send_modify(|g| *g += 1);
                }
                if self.store_error.take().is_some() {
                    tracing::info!("saving works again; everything is saved");
                }
            }
            Err(e) => {
                l.saver = l.durable.clone();
                l.index.touch_all();
                self.store_error = Some(format!("{e:#}"));
                self.fail("cannot save changes to the store", &e);
            }
        }
    }
}

impl Daemon {
    pub(super) fn save_last_seen(&mut self) {
        let mut seen = load_last_seen(&self.store);
        for (id, i) in self.node.peer_info() {
            seen.insert(id.to_string(), i.last_seen);
        }
        if let Ok(b) = serde_json::to_vec(&seen) {
            // Best effort: it rides on the next sync.
            let _ = self.store.put_state("last_seen", &b);
        }
    }
}

impl Daemon {
    /// Moves every folder's retention cutoff to now and drops the stored
    /// content of binary versions replaced before it (see
    /// `FolderConfig::keep_days`): with the hourly full rescan.
    pub(super) fn apply_retention(&mut self) {
        let now = now_ms();
        for f in &self.config.folders {
            let since = f.keep_since(now);
            self.read(&f.name, |s| s.folder.set_retention(Some(since)));
        }
        let open: Vec<String> = self.locals.iter().map(|l| l.name.clone()).collect();
        let states: Vec<(String, Arc<std::sync::Mutex<FolderState>>)> =
            self.locals.iter().map(|l| (l.name.clone(), l.state.clone())).collect();
        let kept = tokio::task::block_in_place(|| {
            collect_garbage(&mut self.store, self.agent, &open, |name| {
                let (_, state) = states.iter().find(|(n, _)| n == name)?;
                with_state(state, |s| s.folder.referenced_chunks())
            })
        });
        // What the store dropped is no longer there to serve.
        if let Some(keep) = kept {
            for f in &self.config.folders {
                self.read(&f.name, |s| s.chunks.retain_stored(&keep));
            }
        }
    }
}
