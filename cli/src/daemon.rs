//! `fsync run`: the daemon. It wires the parts together:
//!
//! - the store holds every folder's history, chunks and disk index;
//! - at start, each folder is loaded from the store and scanned before the
//!   node serves or dials anyone, so changes made while it was stopped are
//!   taken in against what the disk had (a file deleted meanwhile is a
//!   deletion, thanks to the saved index);
//! - live events are debounced and rescanned (only the paths they name);
//! - the loop owns every folder with its chunks, disk index and sync
//!   sessions: the node only carries bytes between peers and the loop
//!   (`transport::link`), so a connection never waits on a folder and a
//!   folder never waits on the network;
//! - changes from peers wake the loop, which writes merged state back
//!   (never over an unscanned local edit);
//! - after each round, new events, chunks and the index are saved and
//!   synced once (group commit);
//! - a failure (a full disk, a folder that cannot be written) is logged,
//!   shown by `fsync status`, and retried until it clears: the daemon keeps
//!   serving meanwhile and loses nothing (what could not be saved is saved
//!   again from the last durable point);
//! - config changes (`fsync folder add`, `peer add`, `join`) are picked up
//!   live when those commands ask the daemon to reload;
//! - SIGINT or SIGTERM: save, sync, close connections, exit 0; a second
//!   signal exits at once (the store is crash-safe).
//!
//! Scans, write-back and saving run with `block_in_place`, so connections
//! keep moving on the other runtime threads meanwhile (what peers send
//! waits in the loop's queue, and then in QUIC's flow control).
//!
//! The HTTP front end (`http`) is one more client of this loop: its reads
//! and edits are calls answered here, like control requests.
//!
//! This file holds the loop and its state; what it does is in its parts:
//! `open` (a folder at start), `disk` (scans and write-backs),
//! `persist` (saving), `peers` (the folders' sync sessions), `local` (a
//! folder's problems and held deletions), `control` (the control socket,
//! status, config reloads),
//! `history` (restore, resume, views of the past), `mount` (the FUSE
//! mount as a client), `http` (the HTTP front end as a client) and
//! `process` (signals and limits).

mod control;
mod disk;
mod history;
mod http;
mod local;
mod mount;
mod open;
mod peers;
mod persist;
mod process;

use control::serve_control;
use mount::check_mount;
use open::{collect_garbage, folder_root, open_folder, watch_root};
pub use persist::load_last_seen;
use persist::{put_index, save};
use process::{raise_fd_limit, watch_signals};

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use fsync_core::chunks::{ChunkHash, ChunkRef, ChunkStore as _, Chunks};
use fsync_core::folder::{Folder, RestoreError, RestorePoint};
use fsync_core::store::{load_folder, Saver, Store};
use fsync_core::AgentId;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use transport::link::{FolderMsg, FolderPort, Links};
use transport::tls::Joined;
use transport::{DeviceId, Node, Trust};
use watcher::ignore::Ignore;
use watcher::live::{Debouncer, Live, LiveWatcher};
use watcher::root::{Root, RootError};
use watcher::{scan_scoped, Index};

use crate::config::{Config, FolderConfig};
use crate::control::Request;
use crate::home::Home;
use crate::status::{ErrorEntry, Status};
use fsync_store::{RedbStore, StoredIndex};

/// Debounce: quiet time and longest wait, in milliseconds.
const QUIET_MS: u64 = 5;
/// A path a scan left for later is looked at again after this long.
const DEFERRED_LOOK_MS: u64 = 50;
const MAX_WAIT_MS: u64 = 200;
/// After a failure, try again this often.
const RETRY: Duration = Duration::from_secs(2);
/// The longest wait between retries of a failure that keeps happening.
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How often sync progress is looked at and peers' last-seen saved.
const TICK: Duration = Duration::from_secs(1);
/// Changes through the mount are saved together at most this often.
const MOUNT_GROUP: Duration = Duration::from_millis(10);
/// How long `status` waits for a starting daemon before saying it is busy.
const STATUS_WAIT: Duration = Duration::from_secs(3);
/// Errors kept for `fsync status`.
const KEEP_ERRORS: usize = 20;
/// Messages from peers queued for the loop, for every folder: a peer that
/// sends faster than the folders take its changes waits (QUIC flow control
/// holds it back).
const FROM_PEERS: usize = 16;
/// Messages from peers taken in one turn of the loop, before the
/// write-back and the answers.
const PEER_BATCH: usize = 16;

/// A folder and its chunks: owned by the daemon's loop, which lends it
/// to the mount's threads (a mounted folder is neither scanned nor written
/// back, so they wait only on work in memory and the store).
pub(crate) struct FolderState {
    /// The folder.
    pub(crate) folder: Folder,
    /// Its binary chunks.
    pub(crate) chunks: Chunks,
}

/// Runs `f` on a folder's state; `None` if a panic poisoned it (the
/// process then exits: see docs/design.md).
fn with_state<R>(state: &std::sync::Mutex<FolderState>, f: impl FnOnce(&mut FolderState) -> R) -> Option<R> {
    Some(f(&mut *state.lock().ok()?))
}

/// One shared folder as the daemon sees it.
struct Local {
    /// The folder, with its chunks.
    state: Arc<std::sync::Mutex<FolderState>>,
    /// Its sync sessions with the peers connected for it.
    links: Links,
    name: String,
    /// Presented through the FUSE mount: its directory is neither scanned
    /// nor written while mounted.
    mounted: bool,
    root: PathBuf,
    index: Index,
    saver: Saver,
    /// The saver as of the last successful sync: a failed save restarts
    /// from here, since the store drops what it had not synced when it
    /// fails. (Chunks leave memory only once synced: see [`save`].)
    durable: Saver,
    debounce: Debouncer,
    /// The last scan failed: the retry scans everything again.
    rescan: bool,
    /// Saved events when the texts were last snapshotted, or at start (see
    /// [`SNAPSHOT_EVERY`]), and whether the next save must snapshot (at
    /// shutdown, always: an older store may have none).
    snapshot_events: u64,
    snapshot_now: bool,
    /// Paths the scans could not read (and why): left as they are until
    /// they can be read; shown by `fsync status`.
    unreadable: BTreeMap<String, String>,
    /// Why the last write into the folder failed (a read-only folder), until
    /// one succeeds.
    write_error: Option<String>,
    /// Why the start-up scan failed (taken by the daemon once it runs).
    start_error: Option<anyhow::Error>,
    /// The folder's checked root (none while mounted or stopped).
    checked: Option<Root>,
    /// Why the folder is stopped: the directory at its path is not the
    /// one that was shared. Nothing is scanned or written until it is.
    stopped: Option<String>,
    /// The live watch of the root, while it runs.
    watching: Option<Arc<AtomicBool>>,
    /// What the next write-back looks at.
    dirty: watcher::Dirty,
    /// Paths gone from disk whose deletion the guard holds (see
    /// `watcher::guard`): still in the folder, until `fsync resume` or
    /// `fsync restore`.
    held_here: BTreeSet<String>,
    /// Paths peers deleted that the guard keeps on this disk.
    held_from_peers: BTreeSet<String>,
}

/// How often every folder is scanned whole, events or not (as Syncthing
/// does, hourly): `FSYNC_RESCAN_SECS` sets it.
fn rescan_every() -> Duration {
    std::env::var("FSYNC_RESCAN_SECS").ok().and_then(|s| s.parse().ok()).map_or(Duration::from_secs(3600), Duration::from_secs)
}

/// A snapshot of a folder's texts is saved after this many new events
/// (and at shutdown), so a start merges little history. It costs about the
/// folder's text size, hence not on every save.
const SNAPSHOT_EVERY: u64 = 200_000;

/// See [`WriteBack`].
const WRITE_GROUP: Duration = Duration::from_millis(20);

/// Now, in ms since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The agent id a device writes its changes as.
pub fn agent_of(id: DeviceId) -> AgentId {
    let mut a = [0u8; 16];
    a.copy_from_slice(&id.0[..16]);
    AgentId(a)
}

/// Where the HTTP front end listens.
#[derive(Clone, Copy, Debug)]
pub struct HttpAt {
    /// The address.
    pub addr: SocketAddr,
    /// When taken, try the next ports, then any (the default address).
    pub search: bool,
}

/// A control request and where its answer goes (`0` + body, or `1` + error).
type ControlCall = (Request, oneshot::Sender<Vec<u8>>);

/// The running daemon's state, owned by its main loop.
struct Daemon {
    home: Home,
    me: DeviceId,
    agent: AgentId,
    config: Config,
    store: RedbStore,
    node: Arc<Node>,
    trust: Arc<Trust>,
    locals: Vec<Local>,
    events: mpsc::Sender<(usize, Live)>,
    /// Where the node sends the folders' messages from peers (keyed by
    /// index in `locals`).
    from_peers: mpsc::Sender<(usize, FolderMsg)>,
    /// Bumped on every change to a folder (the HTTP front end's
    /// subscriptions wait on it).
    generation: watch::Sender<u64>,
    /// A folder changed: a write-back pass is due.
    wake_writes: bool,
    dialled: HashSet<(SocketAddr, DeviceId)>,
    errors: VecDeque<ErrorEntry>,
    /// Set while something failed and must be tried again.
    retry_at: Option<Instant>,
    /// The failure saving is stuck on, if any.
    store_error: Option<String>,
    progress: crate::progress::SyncReporter,
    last_seen_saved: Instant,
    /// When every folder was last scanned whole (see [`rescan_every`]).
    last_full_rescan: Instant,
    start: Instant,
    /// Read-only mounts of folders' past states (`fsync mount --at`).
    past: Vec<fuse_mount::Mounted<crate::past::Past>>,
    /// Where the HTTP front end listens.
    http: Option<SocketAddr>,
}

/// What the mount asks of the main loop.
enum MountMsg {
    /// A change through the mount: save it (and tell peers).
    Changed,
    /// fsync: answer once everything is durable.
    Persist(std::sync::mpsc::SyncSender<Result<(), String>>),
}

/// The mounted folder as the daemon holds it: the live folder peers sync,
/// saved by the main loop.
struct MountBackend {
    state: Arc<std::sync::Mutex<FolderState>>,
    tx: mpsc::UnboundedSender<MountMsg>,
}

/// The folder presented through FUSE, and its group commit: changes
/// alone are saved at most every [`MOUNT_GROUP`], so a program writing many
/// small files pays a few disk syncs, not one per file.
struct Mount {
    /// Index of the folder in `Daemon::locals`.
    i: usize,
    fs: fuse_mount::Mounted<MountBackend>,
    saved: Instant,
    /// A save is due then.
    due: Option<Instant>,
}

/// Remote changes are written back at most every [`WRITE_GROUP`]: a pass
/// saves (one disk sync) under the folder lock, so passes one after the
/// other, each for one arriving chunk, kept the transport from storing the
/// next one and made 2,000 small files arrive at one per disk sync. A
/// change after a quiet spell is written at once.
struct WriteBack {
    last: Instant,
    due: Option<Instant>,
}

/// Runs until SIGINT or SIGTERM; with `mount` (folder name, mount point),
/// presents that folder through FUSE instead of its directory.
pub async fn run(home: &Home, listen: SocketAddr, http: Option<HttpAt>, mount: Option<(String, PathBuf)>) -> Result<()> {
    let identity = home.identity()?;
    let config = home.config()?;
    if let Some((name, point)) = &mount {
        check_mount(&config, name, point)?;
    }
    // One daemon per home.
    let lock_path = home.dir.join("daemon.lock");
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("cannot create {}", lock_path.display()))?;
    raise_fd_limit();
    lock.try_lock().map_err(|_| anyhow!("another fsync daemon is already running on {}; stop it first", home.dir.display()))?;
    // The control socket answers from the start: requests made while the
    // daemon starts (a `reload` after `folder add`, an `invite`) wait for it
    // rather than go to a store and config it has already read.
    let (phase, phase_rx) = watch::channel(Some("opening the store".to_owned()));
    let (control_tx, mut control) = mpsc::channel::<ControlCall>(16);
    let starting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut stop = watch_signals(starting.clone())?;
    serve_control(home, control_tx, phase_rx)?;
    // A taken HTTP port is said before the folders' scans, not after.
    let http = match http {
        Some(at) => Some(http::bind(at).await?),
        None => None,
    };

    let mut store = RedbStore::open(&home.store_path())?;
    let me = identity.device_id();
    let agent = agent_of(me);
    let trust = Arc::new(Trust::default());
    for i in crate::invite::load(&home.invites_path())? {
        trust.invite(i);
    }
    let (joins_tx, mut joins) = mpsc::unbounded_channel::<Joined>();
    trust.on_join(move |j| {
        let _ = joins_tx.send(j.clone());
    });
    let (events_tx, mut events) = mpsc::channel::<(usize, Live)>(1024);
    let mut locals: Vec<Local> = Vec::new();
    for (i, fc) in config.folders.iter().enumerate() {
        phase.send_replace(Some(format!("scanning folder {:?} at {}", fc.name, fc.path.display())));
        let mounted = mount.as_ref().is_some_and(|(name, _)| *name == fc.name);
        locals.push(open_folder(fc, i, &mut store, agent, &events_tx, mounted)?);
    }
    let open: Vec<String> = locals.iter().map(|l| l.name.clone()).collect();
    collect_garbage(&mut store, agent, &open, |name| {
        let l = locals.iter().find(|l| l.name == name)?;
        with_state(&l.state, |s| s.folder.referenced_chunks())
    });
    // The folders are in place before the first peer can connect.
    let (from_peers, mut peer_msgs) = mpsc::channel::<(usize, FolderMsg)>(FROM_PEERS);
    let ports = locals.iter().enumerate().map(|(i, l)| (l.name.clone(), FolderPort::new(from_peers.clone(), i))).collect();
    let node = Node::serve(identity.clone(), trust.clone(), listen, transport::node::IDLE_TIMEOUT, ports)?;
    tracing::info!(device = %me, listen = %node.local_addr()?, "fsync running");
    let mut d = Daemon {
        home: home.clone(),
        me,
        agent,
        config: Config::default(),
        store,
        node: Arc::new(node),
        trust,
        locals,
        events: events_tx,
        from_peers,
        generation: watch::channel(0).0,
        wake_writes: false,
        dialled: HashSet::new(),
        errors: VecDeque::new(),
        retry_at: None,
        store_error: None,
        progress: Default::default(),
        last_seen_saved: Instant::now(),
        last_full_rescan: Instant::now(),
        start: Instant::now(),
        past: Vec::new(),
        http: None,
    };
    let mut http_calls = match http {
        Some(listener) => {
            let (addr, calls) = http::start(&d, listener)?;
            d.http = Some(addr);
            calls
        }
        None => mpsc::channel(1).1,
    };
    let (mount_tx, mut mount_rx) = mpsc::unbounded_channel::<MountMsg>();
    let mut mounted: Option<Mount> = None;
    // From here a signal stops the daemon the normal way (unmount, save).
    starting.store(false, std::sync::atomic::Ordering::SeqCst);
    if let Some((name, point)) = &mount {
        let i = d.locals.iter().position(|l| l.name == *name).context("the mounted folder is not open")?;
        let backend = MountBackend { state: d.locals[i].state.clone(), tx: mount_tx };
        let options = fuse_mount::MountOptions { fsname: format!("fsync:{name}"), space: home.dir.clone(), read_only: false };
        let m = tokio::task::block_in_place(|| fuse_mount::mount(backend, point, options))?;
        tracing::info!(folder = %name, mountpoint = %m.mountpoint().display(), "folder mounted");
        mounted = Some(Mount { i, fs: m, saved: Instant::now(), due: None });
    } else {
        drop(mount_tx);
    }
    for i in 0..d.locals.len() {
        if let Some(e) = d.locals[i].start_error.take() {
            let what = format!("cannot scan folder {} ({})", d.locals[i].name, d.locals[i].root.display());
            d.fail(&what, &e);
        }
        if let Some(why) = d.locals[i].stopped.take() {
            d.stop_folder(i, why);
        }
    }
    d.apply_peers(&config);
    d.config = config;
    for i in 0..d.locals.len() {
        d.persist(i);
    }
    phase.send_replace(None);

    let mut writes = WriteBack { last: Instant::now() - WRITE_GROUP, due: None };
    // What the store has and the disk may lack (a write-back cut short by
    // a crash) is written at once.
    writes.changed(&mut d, mounted.as_ref());
    // Progress is looked at once a second (more often when its log period
    // is set shorter).
    let mut tick = tokio::time::interval(TICK.min(crate::progress::log_every()).max(Duration::from_millis(50)));
    loop {
        let ms = d.ms();
        let next = d.locals.iter().filter_map(|l| l.debounce.next_deadline()).min();
        let mut wait = next.map_or(Duration::from_secs(3600), |t| Duration::from_millis(t.saturating_sub(ms)));
        if let Some(r) = d.retry_at {
            wait = wait.min(r.saturating_duration_since(Instant::now()));
        }
        if let Some(t) = mounted.as_ref().and_then(|m| m.due) {
            wait = wait.min(t.saturating_duration_since(Instant::now()));
        }
        if let Some(t) = writes.due {
            wait = wait.min(t.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            ev = events.recv() => match ev {
                Some((i, Live::Paths(ps))) => ps.into_iter().for_each(|p| d.locals[i].debounce.push(p, ms)),
                Some((i, Live::Renamed(from, to))) => d.locals[i].index.renamed(from, to),
                Some((i, Live::Rescan(why))) => {
                    tracing::warn!(folder = %d.locals[i].name, "{why}: rescanning everything");
                    d.locals[i].debounce.push_all(ms);
                }
                None => {}
            },
            _ = tokio::time::sleep(wait) => {
                if let Some(m) = mounted.as_mut().filter(|m| m.due.is_some_and(|t| t <= Instant::now())) {
                    m.save(&mut d);
                }
                if writes.due.is_some_and(|t| t <= Instant::now()) {
                    writes.run(&mut d, mounted.as_ref());
                }
                let retrying = d.retry_at.is_some_and(|r| r <= Instant::now());
                if retrying {
                    d.retry_at = None;
                }
                for i in 0..d.locals.len() {
                    let now = d.ms();
                    let batch = d.locals[i].debounce.poll(now);
                    if batch.is_none() && !retrying {
                        continue;
                    }
                    if let Some(batch) = batch {
                        let scope = if batch.all { None } else { Some(batch.paths) };
                        d.scan(i, scope.as_deref());
                    } else if d.locals[i].rescan {
                        d.scan(i, None);
                    }
                    d.write(i);
                }
            }
            Some((i, msg)) = peer_msgs.recv() => {
                // What else has come is taken too, then written back and
                // answered together.
                d.take_from_peer(i, msg);
                for _ in 0..PEER_BATCH {
                    let Ok((i, msg)) = peer_msgs.try_recv() else { break };
                    d.take_from_peer(i, msg);
                }
            }
            Some(msg) = mount_rx.recv() => {
                // Everything queued is saved together (group commit).
                let mut waiting = Vec::new();
                let mut next = Some(msg);
                while let Some(msg) = next {
                    if let MountMsg::Persist(reply) = msg {
                        waiting.push(reply);
                    }
                    next = mount_rx.try_recv().ok();
                }
                let Some(m) = mounted.as_mut() else { continue };
                // An fsync is answered at once; changes alone wait for
                // their group (see `Mount`).
                if waiting.is_empty() && m.saved.elapsed() < MOUNT_GROUP {
                    m.due.get_or_insert(m.saved + MOUNT_GROUP);
                    continue;
                }
                m.save(&mut d);
                let answer = match &d.store_error {
                    None => Ok(()),
                    Some(e) => Err(format!("not saved: {e}")),
                };
                for w in waiting {
                    let _ = w.send(answer.clone());
                }
            }
            Some(j) = joins.recv() => d.joined(j),
            Some(call) = http_calls.recv() => d.http(call),
            Some((request, reply)) = control.recv() => {
                let answer = match d.control(&request) {
                    Ok(b) => [b"0".as_slice(), &b].concat(),
                    Err(e) => format!("1{e:#}").into_bytes(),
                };
                let _ = reply.send(answer);
            }
            _ = tick.tick() => {
                d.report();
                // Files removed for a peer's deletion get their last look
                // (see `watcher::ASIDE_GRACE`).
                for i in 0..d.locals.len() {
                    let l = &d.locals[i];
                    if !l.mounted && l.stopped.is_none() && l.index.aside_due() {
                        d.write(i);
                    }
                }
                // What no event reported (a write through a hard link from
                // outside the folder, a filesystem without events) is
                // found by a full rescan now and then.
                if d.last_full_rescan.elapsed() >= rescan_every() {
                    d.last_full_rescan = Instant::now();
                    d.apply_retention();
                    let ms = d.ms();
                    for l in d.locals.iter_mut().filter(|l| !l.mounted) {
                        l.debounce.push_all(ms);
                    }
                }
                d.past.retain(|m| {
                    let on = m.is_mounted();
                    if !on {
                        tracing::info!(mountpoint = %m.mountpoint().display(), "past view unmounted");
                    }
                    on
                });
                // `fsync mount` runs until unmounted (or signalled).
                if mounted.as_ref().is_some_and(|m| !m.fs.is_mounted()) {
                    tracing::info!("the mount was unmounted: stopping");
                    break;
                }
            }
            _ = stop.recv() => break,
        }
        if std::mem::take(&mut d.wake_writes) {
            writes.changed(&mut d, mounted.as_ref());
        }
        for i in 0..d.locals.len() {
            d.pump(i);
        }
    }
    tracing::info!("stopping (a second signal stops at once)");
    d.past.clear();
    // A second signal exits at once: the store is crash-safe, and nothing
    // acknowledged is lost by skipping the final save.
    tokio::spawn(async move {
        stop.recv().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    if let Some(m) = mounted.take() {
        // Open files' unflushed writes are committed before unmounting.
        if let Err(e) = tokio::task::block_in_place(|| m.fs.unmount()) {
            tracing::error!("{e}");
        }
    }
    for i in 0..d.locals.len() {
        d.locals[i].snapshot_now = true;
        d.persist(i);
    }
    d.save_last_seen();
    if let Some(e) = &d.store_error {
        tracing::error!("stopped with unsaved changes ({e}); they are taken in again at the next start");
    }
    // Everything is durable; give peers a moment to hear the close, but do
    // not wait on a peer that is gone.
    let _ = tokio::time::timeout(Duration::from_secs(2), d.node.close()).await;
    tracing::info!("stopped");
    Ok(())
}

impl Daemon {
    fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Logs a failure, keeps it for `fsync status`, and schedules a retry.
    /// The same failure again is counted, not logged again, and retried
    /// less often each time (up to [`RETRY_MAX`]): a stuck folder shows one
    /// line, not one per attempt.
    fn fail(&mut self, what: &str, e: &anyhow::Error) {
        let message = format!("{what}: {e:#}");
        let backoff = match self.errors.back_mut().filter(|last| last.message == message) {
            Some(last) => {
                last.repeats += 1;
                last.time = now_ms();
                RETRY.saturating_mul(1 << last.repeats.min(8)).min(RETRY_MAX)
            }
            None => {
                tracing::error!("{message}; retrying in {}s, then less often", RETRY.as_secs());
                if self.errors.len() == KEEP_ERRORS {
                    self.errors.pop_front();
                }
                self.errors.push_back(ErrorEntry { time: now_ms(), message, repeats: 0 });
                RETRY
            }
        };
        let at = Instant::now() + backoff;
        self.retry_at = Some(self.retry_at.map_or(at, |r| r.max(at)));
    }
}
