//! The folder's directory: scans of what changed on disk, and write-backs
//! of merged changes (grouped, never over an unscanned local edit).

// The loop's state and imports are this module's too.
use super::*;

impl WriteBack {
    pub(super) fn changed(&mut self, d: &mut Daemon, mounted: Option<&Mount>) {
        if self.last.elapsed() >= WRITE_GROUP {
            self.run(d, mounted);
        } else {
            self.due.get_or_insert(self.last + WRITE_GROUP);
        }
    }

    pub(super) fn run(&mut self, d: &mut Daemon, mounted: Option<&Mount>) {
        for i in 0..d.locals.len() {
            d.write(i);
        }
        if let Some(m) = mounted {
            m.fs.refresh();
        }
        self.last = Instant::now();
        self.due = None;
    }
}

impl Daemon {
    /// True when folder `i`'s directory is the folder that was shared (see
    /// `watcher::root`). A folder whose directory was moved, replaced,
    /// unmounted or removed stops here, with one error, and sends nothing
    /// (its watch ends, pending events are dropped); a stopped folder is
    /// looked at again every [`RETRY`] and resumes, with a scan of
    /// everything, once its directory is back.
    pub(super) fn root_ok(&mut self, i: usize) -> bool {
        let l = &mut self.locals[i];
        if let Some(root) = &l.checked {
            let Err(e) = root.still() else { return true };
            let why = e.to_string();
            tracing::debug!(folder = %l.name, "root check failed: {why}");
            l.checked = None;
            if let Some(w) = l.watching.take() {
                w.store(false, Ordering::Relaxed);
            }
            l.debounce = Debouncer::new(QUIET_MS, MAX_WAIT_MS);
            return self.stop_folder(i, why);
        }
        if l.mounted {
            return false;
        }
        let checked = folder_root(&l.name, &l.root, &mut self.store, true, !l.index.files.is_empty());
        match checked {
            Ok(root) => match watch_root(&l.name, &l.root, i, &self.events) {
                Ok(w) => {
                    tracing::info!(folder = %l.name, path = %l.root.display(), "the folder's directory is back: syncing again");
                    l.watching = Some(w);
                    l.checked = Some(root);
                    l.stopped = None;
                    true
                }
                Err(e) => {
                    let why = format!("cannot watch {}: {e:#}", l.root.display());
                    self.stop_folder(i, why)
                }
            },
            Err(why) => self.stop_folder(i, why),
        }
    }
}

impl Daemon {
    /// Keeps folder `i` stopped for `why` and looks again soon. A stop is
    /// logged once, with its first reason; `fsync status` shows the latest
    /// (a moved directory is first "no longer at the path", then, once
    /// another is made there, "not the directory that was shared"). Returns false, for [`Daemon::root_ok`].
    pub(super) fn stop_folder(&mut self, i: usize, why: String) -> bool {
        let l = &mut self.locals[i];
        l.rescan = true;
        let first = l.stopped.replace(why.clone()).is_none();
        if first {
            let what = format!(
                "folder {} stopped: nothing is synced from or written to {} until it is back",
                l.name,
                l.root.display()
            );
            self.fail(&what, &anyhow!(why));
        } else {
            tracing::debug!(folder = %l.name, "still stopped: {why}");
        }
        self.retry_at = Some(Instant::now() + RETRY);
        false
    }
}

impl Daemon {
    /// Takes disk changes in (a scope of paths, or everything) and saves
    /// them *before* peers hear of them: a change a peer has must never be
    /// missing from our store after a crash, or the restart would find it on
    /// disk again and record it a second time.
    pub(super) fn scan(&mut self, i: usize, scope: Option<&[String]>) {
        if self.locals[i].mounted {
            return;
        }
        let was_stopped = self.locals[i].stopped.is_some();
        if !self.root_ok(i) {
            return;
        }
        // Back after a stop: everything may have changed meanwhile.
        let scope = if was_stopped { None } else { scope };
        let l = &mut self.locals[i];
        if scope.is_none() {
            l.dirty.all();
        }
        let store = &mut self.store;
        let ignore = Ignore::load(&l.root);
        let state = l.state.clone();
        let began = Instant::now();
        let r = tokio::task::block_in_place(|| {
            with_state(&state, |s: &mut FolderState| {
                let report = scan_scoped(&l.root, &mut s.folder, &mut s.chunks, &mut l.index, &ignore, scope, now_ms());
                let saved = save(l, s, store);
                (report, saved)
            })
            .context("folder vanished")
        });
        tracing::debug!(folder = %l.name, paths = scope.map_or(0, <[String]>::len), whole = scope.is_none(),
            ms = began.elapsed().as_millis() as u64, "scanned and saved");
        let (report, saved) = match r {
            Ok((report, saved)) => (report.map_err(anyhow::Error::from), saved),
            Err(e) => (Err(e), Ok(())),
        };
        self.saved(i, saved);
        let ms = self.ms();
        let l = &mut self.locals[i];
        l.rescan = report.is_err();
        match report {
            Ok(report) => {
                l.note_unreadable(scope, &report.unreadable);
                let gone: Vec<String> =
                    report.deleted.iter().chain(report.moved.iter().map(|(from, _)| from)).cloned().collect();
                l.note_held_here(scope, &report.held, &gone);
                // Gone paths are looked at again before they count as
                // deleted (the other half of a move may be on its way; see
                // `watcher::GONE_WAIT`), files caught mid-write once more.
                for p in &report.deferred {
                    l.debounce.push(p.clone(), ms + DEFERRED_LOOK_MS);
                }
                if !report.is_empty() {
                    tracing::info!(folder = %l.name, created = report.created.len(), modified = report.modified.len(),
                        moved = report.moved.len(), deleted = report.deleted.len(), "local changes");
                    tracing::debug!(folder = %l.name, created = ?report.created, modified = ?report.modified,
                        moved = ?report.moved, deleted = ?report.deleted, "local changes by path");
                    self.changed_here(i);
                }
            }
            Err(e) => {
                let what = format!("cannot scan folder {} ({})", l.name, l.root.display());
                self.fail(&what, &e);
            }
        }
    }
}

impl Daemon {
    /// Writes merged state to disk; scans first where the disk changed.
    /// What is written is saved first: after a crash the disk never holds a
    /// change the store lacks (it would be taken in again as a new edit).
    pub(super) fn write(&mut self, i: usize) {
        if self.locals[i].mounted {
            // Saved, so peers may have what arrived; the mount reads it live
            // (and nothing is written back: what changed is not kept).
            with_state(&self.locals[i].state, |s| s.folder.take_changed());
            self.persist(i);
            return;
        }
        if self.locals[i].stopped.is_some() || !self.root_ok(i) {
            // Saved all the same: what peers sent is kept for when the
            // folder is back.
            self.persist(i);
            return;
        }
        for _ in 0..3 {
            let l = &mut self.locals[i];
            let store = &mut self.store;
            let (name, state) = (l.name.clone(), l.state.clone());
            let r = tokio::task::block_in_place(|| {
                with_state(&state, |s: &mut FolderState| -> Result<Result<watcher::WriteReport, watcher::WatchError>> {
                    if let Err(e) = save(l, s, store) {
                        return Err(e.context("not writing merged changes before they are saved"));
                    }
                    // Intents are saved before files are replaced: see
                    // `write_back_with`.
                    let mut intents = |index: &mut Index| -> Result<(), String> {
                        put_index(&name, index, store).and_then(|_| store.sync()).map_err(|e| e.to_string())
                    };
                    let mut report = l.dirty.write_back(&l.root, &mut s.folder, &mut s.chunks, &mut l.index, &mut intents);
                    // The index, as written, and what raced writes brought.
                    save(l, s, store)?;
                    // Durable now: what those writes displaced may go.
                    if let Ok(r) = &mut report {
                        r.settle();
                    }
                    Ok(report)
                })
                .context("folder vanished")?
            });
            // A store failure (the changes are not saved) and a folder
            // failure (saved, but the disk cannot take them: a read-only
            // folder) are told apart.
            let report = match r {
                Ok(Ok(r)) => {
                    self.saved(i, Ok(()));
                    let l = &mut self.locals[i];
                    if r.failed.is_empty() {
                        if let Some(e) = l.write_error.take() {
                            tracing::info!(folder = %l.name, "writing into the folder works again (it failed with: {e})");
                        }
                    } else {
                        // The rest was written; these wait for permissions.
                        let why: Vec<String> = r.failed.iter().map(|(p, e)| format!("{p}: {e}")).collect();
                        let message = why.join("; ");
                        if l.write_error.as_deref() != Some(message.as_str()) {
                            let what = format!("cannot write merged changes into folder {} ({})", l.name, l.root.display());
                            l.write_error = Some(message.clone());
                            self.fail(&what, &anyhow!(message));
                        } else {
                            self.retry_at = Some(Instant::now() + RETRY);
                        }
                    }
                    r
                }
                Ok(Err(e)) => {
                    self.saved(i, Ok(()));
                    let l = &mut self.locals[i];
                    let what = format!("cannot write merged changes into folder {} ({})", l.name, l.root.display());
                    l.write_error = Some(e.to_string());
                    self.fail(&what, &anyhow::Error::from(e));
                    return;
                }
                Err(e) => {
                    self.saved(i, Err(e));
                    return;
                }
            };
            self.note_held_from_peers(i, &report);
            let l = &self.locals[i];
            if !report.written.is_empty() || !report.removed.is_empty() || !report.moved.is_empty() {
                tracing::info!(folder = %l.name, written = report.written.len(), removed = report.removed.len(),
                    moved = report.moved.len(), "merged changes written");
                tracing::debug!(folder = %l.name, written = ?report.written, removed = ?report.removed,
                    moved = ?report.moved, needs_scan = ?report.needs_scan, "merged changes by path");
            }
            if !report.raced.is_empty() {
                // Writes that slipped in were taken in as local edits.
                self.changed_here(i);
            }
            if report.needs_scan.is_empty() && report.raced.is_empty() {
                return;
            }
            // A local change we had not read: take it in, then write again.
            // The whole folder: a path gone here may have moved anywhere.
            self.scan(i, None);
        }
        // Still racing local writes after three passes: come back soon (a
        // scan and a pass), or what was left would wait for the next change.
        tracing::debug!(folder = %self.locals[i].name, "write-back keeps meeting local changes; again shortly");
        self.locals[i].rescan = true;
        let soon = Instant::now() + WRITE_GROUP * 10;
        self.retry_at = Some(self.retry_at.map_or(soon, |r| r.min(soon)));
    }
}

impl Daemon {
    /// Keeps folder `i`'s held peer deletions as write-back `report` left
    /// them.
    pub(super) fn note_held_from_peers(&mut self, i: usize, report: &watcher::WriteReport) {
        let l = &self.locals[i];
        let known: Vec<String> = l.held_from_peers.iter().chain(&report.held_removals).cloned().collect();
        if known.is_empty() {
            return;
        }
        let back: HashSet<String> =
            with_state(&l.state, |s| known.into_iter().filter(|p| s.folder.tree().lookup(p).is_some()).collect())
                .unwrap_or_default();
        self.locals[i].note_held_from_peers(&report.held_removals, &report.removed, |p| !back.contains(p));
    }
}
