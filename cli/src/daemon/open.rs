//! Opening a folder at start: its history, index and chunks from the store,
//! its root checked (or marked), its directory watched, and what changed
//! while the daemon was stopped scanned in.

// The loop's state and imports are this module's too.
use super::*;

/// Removes stored chunks that no kept version of any folder in the store
/// or `open` refers to (folders no longer in the config count too: their
/// history is still there); `referenced` gives the chunks an open folder
/// keeps (see `Folder::set_retention`). Returns what is kept, or `None` when it
/// failed, which is only logged: it wastes space, loses nothing.
pub(super) fn collect_garbage(
    store: &mut RedbStore,
    agent: AgentId,
    open: &[String],
    referenced: impl Fn(&str) -> Option<HashSet<ChunkHash>>,
) -> Option<HashSet<ChunkHash>> {
    let r = (|| -> Result<(HashSet<ChunkHash>, usize, u64)> {
        let mut keep: HashSet<ChunkHash> = HashSet::new();
        // The open folders count whether or not the store has them yet: a
        // first scan's chunks are in the store before its folder is saved.
        let mut names: std::collections::BTreeSet<String> = store.folders()?.into_iter().collect();
        names.extend(open.iter().cloned());
        for name in names {
            match referenced(&name) {
                Some(k) => keep.extend(k),
                None => keep.extend(load_folder(agent, &name, store)?.referenced_chunks()),
            }
        }
        let (n, bytes) = store.collect_garbage(&keep)?;
        Ok((keep, n, bytes))
    })();
    match r {
        Ok((keep, 0, _)) => Some(keep),
        Ok((keep, n, bytes)) => {
            tracing::info!(chunks = n, bytes, "removed chunks no kept version refers to");
            Some(keep)
        }
        Err(e) => {
            tracing::warn!("could not collect unused chunks: {e:#}");
            None
        }
    }
}

/// The key under which the store keeps a folder's root marker id.
pub(super) fn root_key(name: &str) -> String {
    format!("root/{name}")
}

/// The checked root of folder `name` at `path` (see `watcher::root`): the
/// directory at its path must be the one that was shared. A folder shared
/// now gets its marker; one shared before markers existed gets it, if its
/// directory is there; the directory of a folder `shared_before` is never
/// created anew (an unmounted disk would look like an emptied folder), and
/// one whose files the index knows (`known_files`) must not be empty.
pub(super) fn folder_root(
    name: &str,
    path: &std::path::Path,
    store: &mut RedbStore,
    shared_before: bool,
    known_files: bool,
) -> Result<Root, String> {
    let known = store.get_state(&root_key(name)).map_err(|e| e.to_string())?;
    if let Some(id) = known {
        let root = Root::check(path, &String::from_utf8_lossy(&id)).map_err(|e| e.to_string())?;
        root.not_emptied(known_files).map_err(|e| e.to_string())?;
        if root.id() == name {
            return Ok(root);
        }
        // A marker of the older, per-node form: checked above, now
        // rewritten in the form every node shares.
    } else if shared_before && !path.is_dir() {
        return Err(RootError::Missing(path.to_owned()).to_string());
    } else {
        std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    }
    let root = Root::mark(path, name).map_err(|e| e.to_string())?;
    store.put_state(&root_key(name), name.as_bytes()).and_then(|()| store.sync()).map_err(|e| e.to_string())?;
    Ok(root)
}

/// Watches a folder's directory: its events go to the main loop as folder
/// `i`'s until the returned flag is cleared (the folder stopped).
pub(super) fn watch_root(
    name: &str,
    path: &std::path::Path,
    i: usize,
    events: &mpsc::Sender<(usize, Live)>,
) -> Result<Arc<AtomicBool>> {
    let watch = LiveWatcher::new(path)?;
    if let Some(why) = watch.polling() {
        tracing::warn!(folder = %name, "cannot watch every directory ({why}); looking for changes every {}s instead", watcher::live::POLL.as_secs());
    }
    let on = Arc::new(AtomicBool::new(true));
    let still = on.clone();
    let tx = events.clone();
    std::thread::spawn(move || loop {
        let Some(ev) = watch.recv_timeout(Duration::from_millis(500)) else {
            if tx.is_closed() || !still.load(Ordering::Relaxed) {
                return;
            }
            continue;
        };
        if !still.load(Ordering::Relaxed) || tx.blocking_send((i, ev)).is_err() {
            return;
        }
    });
    Ok(on)
}

/// Loads a folder from the store, starts watching it, and scans what
/// changed while the daemon was stopped.
pub(super) fn open_folder(
    fc: &FolderConfig,
    i: usize,
    store: &mut RedbStore,
    agent: AgentId,
    events: &mpsc::Sender<(usize, Live)>,
    mounted: bool,
) -> Result<Local> {
    let t = Instant::now();
    let mut folder = load_folder(agent, &fc.name, store)?;
    folder.set_retention(Some(fc.keep_since(now_ms())));
    tracing::debug!(folder = %fc.name, ms = t.elapsed().as_millis() as u64, "history loaded");
    let damaged = || format!("the saved index of {} is damaged", fc.name);
    let mut index = match store.index(&fc.name)? {
        StoredIndex::Rows { rows, intents } => Index::from_rows(rows, intents.as_deref()).with_context(damaged)?,
        // Stored whole by an older fsync: saved as rows from now on.
        StoredIndex::Whole(b) => {
            let mut index = Index::decode(&b).with_context(damaged)?;
            index.touch_all();
            index
        }
    };
    // Chunk bytes stay in the store (memory would grow with the binary
    // history); referenced ones the store lacks are fetched from peers.
    let mut stored = store.chunk_hashes()?;
    let referenced = folder.referenced_chunks();
    stored.retain(|h| referenced.contains(h));
    let mut chunks = Chunks::backed(store.chunk_source(), stored).with_sink(store.chunk_sink());
    index.guard = fc.guard();
    let saver = Saver::loaded(&folder);
    folder.set_shareable(Some(saver.saved().clone()));
    let mut unreadable_at_start = Vec::new();
    let mut deferred_at_start = Vec::new();
    let mut held_at_start = Vec::new();
    let mut start_error = None;
    let mut root = None;
    let mut stopped = None;
    let mut watching = None;
    if !mounted {
        let shared_before = !index.files.is_empty() || !folder.tree().is_empty();
        match folder_root(&fc.name, &fc.path, store, shared_before, !index.files.is_empty()) {
            Ok(r) => root = Some(r),
            Err(e) => stopped = Some(e),
        }
    }
    if root.is_some() {
        // Live events, forwarded from a thread of their own. Watching starts
        // before the start-up scan so nothing falls between the two.
        watching = Some(watch_root(&fc.name, &fc.path, i, events)?);
        // Take in what changed while we were stopped *before* any peer can
        // send us anything: otherwise a remote change could be merged first and
        // an offline move or delete misread against it.
        // A crash in a write-back may leave what it displaced, holding a
        // write not taken in yet: that goes in first, like any offline edit.
        match watcher::write::recover_leftovers(&fc.path, &mut folder, &mut chunks, &index) {
            Ok((0, _)) => {}
            Ok((left, taken)) => tracing::info!(folder = %fc.name,
                "removed {left} temp files of an interrupted write ({taken} held a local write, taken in)"),
            Err(e) => start_error = Some(anyhow::Error::from(e)),
        }
        let progress = Arc::new(watcher::ScanProgress::default());
        let reporter = crate::progress::ScanReporter::start(&fc.name, progress.clone());
        let ignore = Ignore::load(&fc.path);
        let report = watcher::scan_with_progress(&fc.path, &mut folder, &mut chunks, &mut index, &ignore, now_ms(), &progress);
        drop(reporter);
        match report {
            Ok(report) => {
                unreadable_at_start = report.unreadable.clone();
                deferred_at_start = report.deferred.clone();
                held_at_start = report.held.clone();
                tracing::debug!(folder = %fc.name, ms = t.elapsed().as_millis() as u64, "loaded and rescanned");
                if !report.is_empty() {
                    tracing::info!(folder = %fc.name, created = report.created.len(), modified = report.modified.len(),
                        moved = report.moved.len(), deleted = report.deleted.len(), "changes made while stopped");
                }
            }
            // The daemon starts all the same: the folder is scanned again
            // with backoff, and the failure is shown by status.
            Err(e) => start_error = Some(anyhow::Error::from(e)),
        }
    }
    let durable = saver.clone();
    let snapshot_events = saver.saved().values().sum();
    let mut local = Local {
        state: Arc::new(std::sync::Mutex::new(FolderState { folder, chunks })),
        links: transport::link::Links::new(),
        name: fc.name.clone(),
        mounted,
        root: fc.path.clone(),
        index,
        saver,
        durable,
        debounce: Debouncer::new(QUIET_MS, MAX_WAIT_MS),
        rescan: start_error.is_some(),
        snapshot_events,
        snapshot_now: false,
        unreadable: BTreeMap::new(),
        write_error: None,
        start_error,
        checked: root,
        stopped,
        watching,
        dirty: watcher::Dirty::default(),
        held_here: BTreeSet::new(),
        held_from_peers: BTreeSet::new(),
    };
    local.note_unreadable(None, &unreadable_at_start);
    local.note_held_here(None, &held_at_start, &[]);
    // Gone during the start-up scan's second look: a live scan looks again
    // (see `watcher::scan_with_progress`).
    for p in deferred_at_start {
        local.debounce.push(p, DEFERRED_LOOK_MS);
    }
    Ok(local)
}
