//! `fsync run`: the daemon. It wires the parts together:
//!
//! - the store holds every folder's history, chunks and disk index;
//! - at start, each folder is loaded from the store and scanned before the
//!   node serves or dials anyone, so changes made while it was stopped are
//!   taken in against what the disk had (a file deleted meanwhile is a
//!   deletion, thanks to the saved index);
//! - live events are debounced and rescanned (only the paths they name);
//! - changes from peers wake the loop, which writes merged state back
//!   (never over an unscanned local edit);
//! - after each round, new events, chunks and the index are saved and
//!   synced once (group commit);
//! - SIGINT or SIGTERM: save, sync, close connections, exit 0.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use fsync_core::chunks::{ChunkHash, ChunkStore, MemoryChunks};
use fsync_core::store::{load_folder, Saver, Store};
use fsync_core::AgentId;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use transport::node::FolderState;
use transport::{DeviceId, Node, Trust};
use watcher::ignore::Ignore;
use watcher::live::{Debouncer, Live, LiveWatcher};
use watcher::{scan_scoped, write_back, Index};

use crate::home::Home;
use crate::store::RedbStore;

/// Debounce: quiet time and longest wait, in milliseconds.
const QUIET_MS: u64 = 5;
const MAX_WAIT_MS: u64 = 200;

/// One shared folder as the daemon sees it.
struct Local {
    name: String,
    root: PathBuf,
    index: Index,
    saver: Saver,
    /// Chunks saved events refer to whose bytes are not in the store yet
    /// (they may still be on their way from a peer).
    unsaved_chunks: HashSet<ChunkHash>,
    debounce: Debouncer,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The agent id a device writes its changes as.
pub fn agent_of(id: DeviceId) -> AgentId {
    let mut a = [0u8; 16];
    a.copy_from_slice(&id.0[..16]);
    AgentId(a)
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(home: &Home, listen: SocketAddr) -> Result<()> {
    let identity = home.identity()?;
    let config = home.config()?;
    // One daemon per home.
    let lock_path = home.dir.join("daemon.lock");
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.try_lock().map_err(|_| anyhow!("another fsync daemon is already running on {}; stop it first", home.dir.display()))?;

    let mut store = RedbStore::open(&home.store_path())?;
    let agent = agent_of(identity.device_id());
    let trust = Arc::new(Trust::default());
    let mut dial = Vec::new();
    for p in &config.peers {
        let id: DeviceId = p.id.parse().with_context(|| format!("peer {} in the config", p.id))?;
        for f in &p.folders {
            trust.allow(id, f);
        }
        for a in &p.addrs {
            match a.to_socket_addrs().ok().and_then(|mut i| i.next()) {
                Some(addr) => dial.push((addr, id)),
                None => tracing::warn!("cannot resolve {a} for peer {}", id.short()),
            }
        }
    }
    let (tx, mut events) = mpsc::channel::<(usize, Live)>(1024);
    let mut locals = Vec::new();
    let mut started = Vec::new();
    for (i, fc) in config.folders.iter().enumerate() {
        let mut folder = load_folder(agent, &fc.name, &store)?;
        let index = match store.get_state(&format!("index/{}", fc.name))? {
            Some(b) => Index::decode(&b).with_context(|| format!("the saved index of {} is damaged", fc.name))?,
            None => Index::default(),
        };
        let mut chunks = MemoryChunks::default();
        let mut unsaved_chunks = HashSet::new();
        for h in folder.referenced_chunks() {
            match store.get_chunk(&h)? {
                Some(b) => chunks.put(h, &b),
                None => {
                    unsaved_chunks.insert(h);
                }
            }
        }
        let saver = Saver::loaded(&folder);
        std::fs::create_dir_all(&fc.path).with_context(|| format!("cannot create {}", fc.path.display()))?;
        // Live events, forwarded from a thread of their own. Watching starts
        // before the start-up scan so nothing falls between the two.
        let watch = LiveWatcher::new(&fc.path)?;
        let tx = tx.clone();
        std::thread::spawn(move || loop {
            let Some(ev) = watch.recv_timeout(Duration::from_millis(500)) else {
                if tx.is_closed() {
                    return;
                }
                continue;
            };
            if tx.blocking_send((i, ev)).is_err() {
                return;
            }
        });
        // Take in what changed while we were stopped *before* any peer can
        // send us anything: otherwise a remote change could be merged first
        // and an offline move or delete misread against it.
        let mut index = index;
        let report = watcher::scan(&fc.path, &mut folder, &mut chunks, &mut index, &Ignore::load(&fc.path), now_ms())?;
        if !report.is_empty() {
            tracing::info!(folder = %fc.name, created = report.created.len(), modified = report.modified.len(),
                moved = report.moved.len(), deleted = report.deleted.len(), "changes made while stopped");
        }
        started.push((fc.name.clone(), folder, chunks));
        let debounce = Debouncer::new(QUIET_MS, MAX_WAIT_MS);
        locals.push(Local { name: fc.name.clone(), root: fc.path.clone(), index, saver, unsaved_chunks, debounce });
    }
    drop(tx);
    // The folders are in place before the first peer can connect.
    let node = Node::serve(identity.clone(), trust, listen, transport::node::IDLE_TIMEOUT, started)?;
    tracing::info!(device = %identity.device_id(), listen = %node.local_addr()?, "fsync running");
    for l in &mut locals {
        persist(&node, l, &mut store)?;
    }
    for (addr, id) in dial {
        node.dial(addr, id);
    }
    let node = Arc::new(node);
    serve_control(home, node.clone(), identity.device_id(), &config)?;

    let start = Instant::now();
    let ms = || start.elapsed().as_millis() as u64;
    let mut changes = node.changes();
    // Peers may have sent changes between serve() and this subscription:
    // start with a write-back pass so none of them waits for the next one.
    changes.mark_changed();
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    loop {
        let next = locals.iter().filter_map(|l| l.debounce.next_deadline()).min();
        let wait = next.map_or(Duration::from_secs(3600), |d| Duration::from_millis(d.saturating_sub(ms())));
        tokio::select! {
            ev = events.recv() => match ev {
                Some((i, Live::Paths(ps))) => ps.into_iter().for_each(|p| locals[i].debounce.push(p, ms())),
                Some((i, Live::Rescan(why))) => {
                    tracing::warn!(folder = %locals[i].name, "{why}: rescanning everything");
                    locals[i].debounce.push_all(ms());
                }
                None => {}
            },
            _ = tokio::time::sleep(wait) => {
                for l in &mut locals {
                    if let Some(batch) = l.debounce.poll(ms()) {
                        let scope = if batch.all { None } else { Some(batch.paths) };
                        scan_folder(&node, l, scope.as_deref())?;
                        write_folder(&node, l)?;
                        persist(&node, l, &mut store)?;
                    }
                }
            }
            r = changes.changed() => {
                if r.is_err() {
                    break;
                }
                for l in &mut locals {
                    write_folder(&node, l)?;
                    persist(&node, l, &mut store)?;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping");
    for l in &mut locals {
        persist(&node, l, &mut store)?;
    }
    // Everything is durable; give peers a moment to hear the close, but do
    // not wait on a peer that is gone.
    let _ = tokio::time::timeout(Duration::from_secs(2), node.close()).await;
    tracing::info!("stopped");
    Ok(())
}

/// The control socket (`HOME/control.sock`, owner-only): commands such as
/// `fsync log` and `fsync cat` ask the running daemon, which holds the store.
fn serve_control(home: &Home, node: Arc<Node>, me: DeviceId, config: &crate::config::Config) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let path = home.control_path();
    // We hold the home's lock: a socket file left here is stale.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let devices = crate::query_devices(me, config);
    let config = config.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (node, devices, config) = (node.clone(), devices.clone(), config.clone());
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut line = String::new();
                let mut r = BufReader::new(r.take(64 * 1024));
                if r.read_line(&mut line).await.is_err() {
                    return;
                }
                let request = line.trim_end_matches(['\n', '\r']);
                let reply = if let Some(format) = request.strip_prefix("status\t") {
                    Ok(daemon_status(&node, me, &config, format == "json").into_bytes())
                } else {
                    crate::answer(request, |folder, f| node.read(folder, |s| f(&mut s.folder, &s.chunks)), &devices)
                };
                let bytes = match reply {
                    Ok(b) => [b"0".as_slice(), &b].concat(),
                    Err(e) => format!("1{e:#}").into_bytes(),
                };
                let _ = w.write_all(&bytes).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(())
}

/// The status as the running daemon sees it.
fn daemon_status(node: &Node, me: DeviceId, config: &crate::config::Config, json: bool) -> String {
    let folders: Vec<crate::status::FolderStatus> = config
        .folders
        .iter()
        .filter_map(|f| {
            node.read(&f.name, |s| {
                crate::status::FolderStatus::of(&f.name, &f.path.display().to_string(), &mut s.folder, &s.chunks)
            })
        })
        .collect();
    let connected: Vec<String> = node.connected_peers().iter().map(|d| d.to_string()).collect();
    let listen = node.local_addr().ok().map(|a| a.to_string());
    crate::status::render(json, &me.to_string(), listen, &folders, config, |id| connected.iter().any(|c| c == id))
}

/// Takes disk changes in (a scope of paths, or everything).
fn scan_folder(node: &Node, l: &mut Local, scope: Option<&[String]>) -> Result<()> {
    let ignore = Ignore::load(&l.root);
    let report = node
        .read(&l.name, |s: &mut FolderState| {
            scan_scoped(&l.root, &mut s.folder, &mut s.chunks, &mut l.index, &ignore, scope, now_ms())
        })
        .context("folder vanished")??;
    if !report.is_empty() {
        tracing::info!(folder = %l.name, created = report.created.len(), modified = report.modified.len(),
            moved = report.moved.len(), deleted = report.deleted.len(), "local changes");
        node.notify();
    }
    Ok(())
}

/// Writes merged state to disk; scans first where the disk changed.
fn write_folder(node: &Node, l: &mut Local) -> Result<()> {
    for _ in 0..3 {
        let report = node
            .read(&l.name, |s: &mut FolderState| write_back(&l.root, &mut s.folder, &s.chunks, &mut l.index))
            .context("folder vanished")??;
        if !report.written.is_empty() || !report.removed.is_empty() || !report.moved.is_empty() {
            tracing::info!(folder = %l.name, written = report.written.len(), removed = report.removed.len(),
                moved = report.moved.len(), "merged changes written");
        }
        if report.needs_scan.is_empty() && report.raced.is_empty() {
            return Ok(());
        }
        // A local change we had not read: take it in, then write again. The
        // whole folder: a path gone here may have moved anywhere.
        scan_folder(node, l, None)?;
    }
    Ok(())
}

/// Saves new events, chunks and the index, then syncs once.
fn persist(node: &Node, l: &mut Local, store: &mut RedbStore) -> Result<()> {
    node.read(&l.name, |s: &mut FolderState| -> Result<()> {
        l.saver.save_collecting(&l.name, &s.folder, store, &mut l.unsaved_chunks)?;
        let arrived: Vec<ChunkHash> = l.unsaved_chunks.iter().copied().filter(|h| s.chunks.has(h)).collect();
        for h in arrived {
            if let Some(b) = s.chunks.get(&h) {
                store.put_chunk(h, &b)?;
            }
            l.unsaved_chunks.remove(&h);
        }
        Ok(())
    })
    .context("folder vanished")??;
    store.put_state(&format!("index/{}", l.name), &l.index.encode())?;
    store.sync()?;
    Ok(())
}
