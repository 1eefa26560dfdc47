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
//! keep moving on the other runtime threads meanwhile.
//!
//! The HTTP front end ([`http`]) is one more client of this loop: its reads
//! and edits are calls answered here, like control requests.

mod http;

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
use transport::node::FolderState;
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

/// One shared folder as the daemon sees it.
struct Local {
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

impl Local {
    /// Keeps `unreadable` as the scan of `scope` found it.
    fn note_unreadable(&mut self, scope: Option<&[String]>, found: &[(String, String)]) {
        let before = self.unreadable.clone();
        match scope {
            None => self.unreadable.clear(),
            Some(sc) => self.unreadable.retain(|p, _| !sc.iter().any(|s| fsync_core::folder::within(p, s))),
        }
        self.unreadable.extend(found.iter().cloned());
        for (p, why) in &self.unreadable {
            if before.contains_key(p) {
                continue;
            }
            if why.starts_with(watcher::scan::NOT_SYNCED) {
                tracing::warn!(folder = %self.name, path = %p, "{p}: {why}");
            } else {
                tracing::warn!(folder = %self.name, path = %p, "cannot read {p} ({why}); left as it is, not synced and not deleted, until it can be read");
            }
        }
        for p in before.keys().filter(|p| !self.unreadable.contains_key(*p)) {
            tracing::info!(folder = %self.name, path = %p, "{p} can be read again");
        }
    }

    /// Keeps `held_here` as the scan of `scope` found it (`gone`: what it
    /// deleted or found moved, no longer held).
    fn note_held_here(&mut self, scope: Option<&[String]>, found: &[String], gone: &[String]) {
        let before = self.held_here.len();
        match scope {
            None => self.held_here.clear(),
            Some(sc) => self.held_here.retain(|p| !sc.iter().any(|s| fsync_core::folder::within(p, s))),
        }
        self.held_here.extend(found.iter().cloned());
        for p in gone {
            self.held_here.remove(p);
        }
        if self.held_here.len() > before {
            tracing::warn!(folder = %self.name, held = self.held_here.len(), first = ?self.held_here.first(),
                "{}", self.held_message(self.held_here.len(), "found gone here"));
        }
    }

    /// Keeps `held_from_peers` as a write-back left it: `still` tells
    /// whether a path is still deleted in the folder (a peer may have put
    /// it back meanwhile).
    fn note_held_from_peers(&mut self, found: &[String], removed: &[String], still: impl Fn(&str) -> bool) {
        let before = self.held_from_peers.len();
        self.held_from_peers.extend(found.iter().cloned());
        for p in removed {
            self.held_from_peers.remove(p);
        }
        self.held_from_peers.retain(|p| still(p));
        if self.held_from_peers.len() > before {
            tracing::warn!(folder = %self.name, held = self.held_from_peers.len(), first = ?self.held_from_peers.first(),
                "{}", self.held_message(self.held_from_peers.len(), "deleted by a peer"));
        }
    }

    fn held_message(&self, n: usize, what: &str) -> String {
        format!(
            "holding the deletion of {n} path(s) {what}: too many of the folder's files at once \
             (the mass-deletion guard); `fsync resume {name}` lets them through, `fsync restore` puts them back",
            name = self.name
        )
    }

    /// What keeps the folder and the disk apart, for `fsync status`.
    fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.stopped.iter().map(|e| format!("stopped: {e}")).collect();
        for (set, what) in [(&self.held_here, "found gone here"), (&self.held_from_peers, "deleted by a peer")] {
            if !set.is_empty() {
                let first: Vec<&str> = set.iter().take(3).map(String::as_str).collect();
                out.push(format!("held: {} (for example {})", self.held_message(set.len(), what), first.join(", ")));
            }
        }
        out.extend(self.write_error.iter().map(|e| format!("not writing: {e}")));
        out.extend(self.unreadable.iter().map(|(p, why)| {
            if why.starts_with(watcher::scan::NOT_SYNCED) {
                format!("{p}: {why}")
            } else {
                format!("cannot read {p}: {why}")
            }
        }));
        out
    }
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

fn now_ms() -> u64 {
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
    node: Arc<Node>,
    name: String,
    tx: mpsc::UnboundedSender<MountMsg>,
}

impl fuse_mount::Backend for MountBackend {
    fn with<R>(&self, f: impl FnOnce(&mut Folder, &mut Chunks) -> R) -> Option<R> {
        self.node.read(&self.name, |s| f(&mut s.folder, &mut s.chunks))
    }
    fn changed(&self) {
        let _ = self.tx.send(MountMsg::Changed);
    }
    fn persist(&self) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.tx.send(MountMsg::Persist(tx)).map_err(|_| "the daemon is stopping".to_owned())?;
        rx.recv().map_err(|_| "the daemon is stopping".to_owned())?
    }
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

impl Mount {
    fn save(&mut self, d: &mut Daemon) {
        d.persist(self.i);
        self.saved = Instant::now();
        self.due = None;
    }
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

impl WriteBack {
    fn changed(&mut self, d: &mut Daemon, mounted: Option<&Mount>) {
        if self.last.elapsed() >= WRITE_GROUP {
            self.run(d, mounted);
        } else {
            self.due.get_or_insert(self.last + WRITE_GROUP);
        }
    }

    fn run(&mut self, d: &mut Daemon, mounted: Option<&Mount>) {
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
    let mut locals = Vec::new();
    let mut started = Vec::new();
    for (i, fc) in config.folders.iter().enumerate() {
        phase.send_replace(Some(format!("scanning folder {:?} at {}", fc.name, fc.path.display())));
        let mounted = mount.as_ref().is_some_and(|(name, _)| *name == fc.name);
        let (local, folder, chunks) = open_folder(fc, i, &mut store, agent, &events_tx, mounted)?;
        started.push((fc.name.clone(), folder, chunks));
        locals.push(local);
    }
    collect_garbage(&mut store, agent, &started);
    // The folders are in place before the first peer can connect.
    let node = Node::serve(identity.clone(), trust.clone(), listen, transport::node::IDLE_TIMEOUT, started)?;
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
        Some(at) => {
            let (addr, calls) = http::start(&d, at).await?;
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
        let backend = MountBackend { node: d.node.clone(), name: name.clone(), tx: mount_tx };
        let options = fuse_mount::MountOptions { fsname: format!("fsync:{name}"), space: home.dir.clone(), read_only: false };
        let m = tokio::task::block_in_place(|| fuse_mount::mount(backend, point, options))?;
        let i = d.locals.iter().position(|l| l.name == *name).context("the mounted folder is not open")?;
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
    let mut changes = d.node.changes();
    // Peers may have sent changes between serve() and this subscription:
    // start with a write-back pass so none of them waits for the next one.
    changes.mark_changed();
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
            r = changes.changed() => {
                if r.is_err() {
                    break;
                }
                writes.changed(&mut d, mounted.as_ref());
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
                // What no event reported (a write through a hard link from
                // outside the folder, a filesystem without events) is
                // found by a full rescan now and then.
                if d.last_full_rescan.elapsed() >= rescan_every() {
                    d.last_full_rescan = Instant::now();
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

/// Raises the soft limit of open files to the hard one: every HTTP
/// subscription holds a connection, and a big folder many watches.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::debug!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// SIGTERM and SIGINT, watched from the first moment: while `starting`
/// (loading and scanning, which can take long on a big folder) a signal
/// exits at once with success: nothing was acknowledged yet, the store is
/// crash-safe and the next start scans again. Later ones are handed to the
/// main loop, which stops cleanly.
fn watch_signals(starting: Arc<std::sync::atomic::AtomicBool>) -> Result<mpsc::UnboundedReceiver<()>> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if starting.load(std::sync::atomic::Ordering::SeqCst) {
                tracing::info!("stopped while starting; the next start takes up from the last saved point");
                std::process::exit(0);
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Removes stored chunks that no kept version of any folder in the store
/// refers to (folders no longer in the config count too: their history is
/// still there). Failure is only logged: it wastes space, loses nothing.
fn collect_garbage(store: &mut RedbStore, agent: AgentId, open: &[(String, Folder, Chunks)]) {
    let r = (|| -> Result<(usize, u64)> {
        let mut keep: HashSet<ChunkHash> = HashSet::new();
        for name in store.folders()? {
            match open.iter().find(|(n, _, _)| *n == name) {
                Some((_, f, _)) => keep.extend(f.referenced_chunks()),
                None => keep.extend(load_folder(agent, &name, store)?.referenced_chunks()),
            }
        }
        Ok(store.collect_garbage(&keep)?)
    })();
    match r {
        Ok((0, _)) => {}
        Ok((n, bytes)) => tracing::info!(chunks = n, bytes, "removed chunks no version refers to"),
        Err(e) => tracing::warn!("could not collect unused chunks: {e:#}"),
    }
}

/// The key under which the store keeps a folder's root marker id.
fn root_key(name: &str) -> String {
    format!("root/{name}")
}

/// The checked root of folder `name` at `path` (see `watcher::root`): the
/// directory at its path must be the one that was shared. A folder shared
/// now gets its marker; one shared before markers existed gets it, if its
/// directory is there; the directory of a folder `shared_before` is never
/// created anew (an unmounted disk would look like an emptied folder), and
/// one whose files the index knows (`known_files`) must not be empty.
fn folder_root(
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
fn watch_root(name: &str, path: &std::path::Path, i: usize, events: &mpsc::Sender<(usize, Live)>) -> Result<Arc<AtomicBool>> {
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
fn open_folder(
    fc: &FolderConfig,
    i: usize,
    store: &mut RedbStore,
    agent: AgentId,
    events: &mpsc::Sender<(usize, Live)>,
    mounted: bool,
) -> Result<(Local, Folder, Chunks)> {
    let t = Instant::now();
    let mut folder = load_folder(agent, &fc.name, store)?;
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
    let mut chunks = Chunks::backed(store.chunk_source(), stored);
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
    Ok((local, folder, chunks))
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

    /// True when folder `i`'s directory is the folder that was shared (see
    /// `watcher::root`). A folder whose directory was moved, replaced,
    /// unmounted or removed stops here, with one error, and sends nothing
    /// (its watch ends, pending events are dropped); a stopped folder is
    /// looked at again every [`RETRY`] and resumes, with a scan of
    /// everything, once its directory is back.
    fn root_ok(&mut self, i: usize) -> bool {
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

    /// Keeps folder `i` stopped for `why` and looks again soon. A stop is
    /// logged once, with its first reason; `fsync status` shows the latest
    /// (a moved directory is first "no longer at the path", then, once
    /// another is made there, "not the directory that was shared"). Returns false, for [`Daemon::root_ok`].
    fn stop_folder(&mut self, i: usize, why: String) -> bool {
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

    /// Takes disk changes in (a scope of paths, or everything) and saves
    /// them *before* peers hear of them: a change a peer has must never be
    /// missing from our store after a crash, or the restart would find it on
    /// disk again and record it a second time.
    fn scan(&mut self, i: usize, scope: Option<&[String]>) {
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
        let r = tokio::task::block_in_place(|| {
            let name = l.name.clone();
            self.node
                .read(&name, |s: &mut FolderState| {
                    let report = scan_scoped(&l.root, &mut s.folder, &mut s.chunks, &mut l.index, &ignore, scope, now_ms());
                    let saved = save(l, s, store);
                    (report, saved)
                })
                .context("folder vanished")
        });
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
                    self.node.notify();
                }
            }
            Err(e) => {
                let what = format!("cannot scan folder {} ({})", l.name, l.root.display());
                self.fail(&what, &e);
            }
        }
    }

    /// Writes merged state to disk; scans first where the disk changed.
    /// What is written is saved first: after a crash the disk never holds a
    /// change the store lacks (it would be taken in again as a new edit).
    fn write(&mut self, i: usize) {
        if self.locals[i].mounted {
            // Saved, so peers may have what arrived; the mount reads it live
            // (and nothing is written back: what changed is not kept).
            let name = self.locals[i].name.clone();
            self.node.read(&name, |s| s.folder.take_changed());
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
            let r = tokio::task::block_in_place(|| {
                let name = l.name.clone();
                self.node
                    .read(&name, |s: &mut FolderState| -> Result<Result<watcher::WriteReport, watcher::WatchError>> {
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
                self.node.notify();
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

    /// Keeps folder `i`'s held peer deletions as write-back `report` left
    /// them.
    fn note_held_from_peers(&mut self, i: usize, report: &watcher::WriteReport) {
        let l = &self.locals[i];
        let known: Vec<String> = l.held_from_peers.iter().chain(&report.held_removals).cloned().collect();
        if known.is_empty() {
            return;
        }
        let back: HashSet<String> = self
            .node
            .read(&l.name, |s| known.into_iter().filter(|p| s.folder.tree().lookup(p).is_some()).collect())
            .unwrap_or_default();
        self.locals[i].note_held_from_peers(&report.held_removals, &report.removed, |p| !back.contains(p));
    }

    /// `fsync mount --at`: mounts folder `folder` as it was before
    /// `before`, read-only, until unmounted or the daemon stops.
    fn mount_past(&mut self, folder: &str, mountpoint: &str, before: u64) -> Result<Vec<u8>> {
        let i = self.locals.iter().position(|l| l.name == folder).ok_or_else(|| anyhow!("no folder named {folder:?}"))?;
        let point = PathBuf::from(mountpoint);
        if !point.is_absolute() {
            bail!("{mountpoint}: give the mount point as an absolute path");
        }
        if self.past.iter().any(|m| point.canonicalize().is_ok_and(|p| p == m.mountpoint())) {
            bail!("{mountpoint} already shows a past state; unmount it first (`umount {mountpoint}`)");
        }
        // Chunks still in memory only are written to the store first: the
        // view reads binary content from there.
        self.persist(i);
        let source = self.store.chunk_source();
        let agent = self.agent;
        let past = self
            .node
            .read(folder, |s| crate::past::Past::of(&mut s.folder, &s.chunks, source, before, agent))
            .ok_or_else(|| anyhow!("no folder named {folder:?}"))??;
        let entries = past.entries();
        let options = fuse_mount::MountOptions {
            fsname: format!("fsync:{folder}@{}", crate::query::format_time(before)),
            space: self.home.dir.clone(),
            read_only: true,
        };
        let m = tokio::task::block_in_place(|| fuse_mount::mount(past, &point, options))?;
        let shown = m.mountpoint().display().to_string();
        tracing::info!(folder, mountpoint = %shown, before, entries, "past view mounted");
        self.past.push(m);
        Ok(format!(
            "{folder} as it was before {}: {entries} entries, read-only at {shown}; `umount {shown}` ends it\n",
            crate::query::format_time(before)
        )
        .into_bytes())
    }

    /// `fsync resume`: lets the held deletions through, here (a scan makes
    /// them) and from peers (a write-back removes them).
    fn resume(&mut self, folder: &str) -> Result<Vec<u8>> {
        let i = self.locals.iter().position(|l| l.name == folder).ok_or_else(|| anyhow!("no folder named {folder:?}"))?;
        if let Some(e) = &self.locals[i].stopped {
            bail!("folder {folder} is stopped ({e}); nothing is deleted until it is back");
        }
        let (here, peers) = (self.locals[i].held_here.len(), self.locals[i].held_from_peers.len());
        if here + peers == 0 {
            return Ok(format!("nothing is held in {folder}\n").into_bytes());
        }
        self.locals[i].index.guard.open = true;
        if here > 0 {
            self.scan(i, None);
        }
        self.locals[i].dirty.all();
        self.write(i);
        self.locals[i].index.guard.open = false;
        let l = &self.locals[i];
        let left = l.held_here.len() + l.held_from_peers.len();
        tracing::info!(folder, here, peers, left, "held deletions let through");
        let mut out = format!("let through {here} deletion(s) made here and {peers} from peers\n");
        if left > 0 {
            out.push_str(&format!("{left} path(s) could not be deleted yet; see `fsync status`\n"));
        }
        Ok(out.into_bytes())
    }

    /// Saves what is not saved yet.
    fn persist(&mut self, i: usize) {
        let l = &mut self.locals[i];
        let store = &mut self.store;
        let name = l.name.clone();
        let node = &self.node;
        let r = tokio::task::block_in_place(|| {
            if !l.mounted {
                return node.read(&name, |s| save(l, s, store)).unwrap_or(Ok(()));
            }
            // A mounted folder has no disk copy to keep in step, so the
            // disk sync runs without holding the folder: the mount and
            // peers go on meanwhile, and peers get the events only once
            // they are durable (the shareable limit moves after the sync).
            let (wrote, chunks) = node.read(&name, |s| write_unsynced(l, s, store)).unwrap_or(Ok((false, Vec::new())))?;
            if wrote {
                store.sync()?;
            }
            node.read(&name, |s| {
                s.folder.set_shareable(Some(l.saver.saved().clone()));
                s.chunks.mark_stored(&chunks);
            });
            Ok(())
        });
        self.saved(i, r);
    }

    /// Bookkeeping after a save: remember the durable point, or go back to
    /// it (the store drops what it had not synced when it fails).
    fn saved(&mut self, i: usize, r: Result<()>) {
        let l = &mut self.locals[i];
        match r {
            Ok(()) => {
                // Newly durable events may go to peers now (see `save`).
                let advanced = l.durable.saved() != l.saver.saved();
                l.durable = l.saver.clone();
                if advanced {
                    self.node.notify();
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

    /// Trusts and dials what `config` lists; reconnects peers whose shared
    /// folders changed, so their connection offers the new set.
    fn apply_peers(&mut self, config: &Config) {
        for p in &config.peers {
            let Ok(id) = p.id.parse::<DeviceId>() else {
                tracing::error!("peer {} in the config is not a device ID; ignored", p.id);
                continue;
            };
            let before = self.trust.folders_of(&id);
            for f in &p.folders {
                self.trust.allow(id, f);
            }
            if let Some(secret) = p.join.as_deref().and_then(crate::invite::parse_secret) {
                self.trust.set_join_secret(id, secret);
            }
            if before != self.trust.folders_of(&id) && !before.is_empty() {
                self.node.disconnect(id);
            }
            for a in &p.addrs {
                match a.to_socket_addrs().ok().and_then(|mut i| i.next()) {
                    Some(addr) => {
                        if self.dialled.insert((addr, id)) {
                            self.node.dial(addr, id);
                        }
                    }
                    None => tracing::warn!("cannot resolve {a} for peer {}", id.short()),
                }
            }
        }
    }

    /// Re-reads the config: new folders start syncing, new peers are
    /// trusted and dialled.
    fn reload(&mut self) -> Result<()> {
        let config = self.home.config()?;
        for fc in &config.folders {
            if let Some(l) = self.locals.iter_mut().find(|l| l.name == fc.name) {
                l.index.guard = fc.guard();
                continue;
            }
            let i = self.locals.len();
            let (local, folder, chunks) =
                tokio::task::block_in_place(|| open_folder(fc, i, &mut self.store, self.agent, &self.events, false))?;
            self.node.add_folder_with(&fc.name, folder, chunks);
            self.locals.push(local);
            self.persist(i);
            tracing::info!(folder = %fc.name, path = %fc.path.display(), "now sharing");
            // Connections offer folders when they open: reconnect the
            // peers trusted for this one.
            for p in config.peers.iter().filter(|p| p.folders.contains(&fc.name)) {
                if let Ok(id) = p.id.parse() {
                    self.node.disconnect(id);
                }
            }
        }
        self.apply_peers(&config);
        self.config = config;
        Ok(())
    }

    /// A device redeemed one of our invitations: it becomes a peer as if
    /// `fsync peer add` had been run for it.
    fn joined(&mut self, j: Joined) {
        let r = (|| -> Result<()> {
            let mut config = self.home.config()?;
            config.add_peer(&j.device.to_string(), &[j.addr.to_string()], std::slice::from_ref(&j.folder))?;
            config.save(&self.home.config_path())?;
            crate::invite::remove(&self.home.invites_path(), &j.secret)?;
            self.apply_peers(&config);
            self.config = config;
            Ok(())
        })();
        match r {
            Ok(()) => {
                tracing::info!(peer = %j.device, folder = %j.folder, addr = %j.addr, "new peer saved to the config")
            }
            Err(e) => self.fail("cannot save the peer that joined", &e),
        }
    }

    /// Answers a control request.
    fn control(&mut self, request: &Request) -> Result<Vec<u8>> {
        match request {
            Request::Status { json } => Ok(self.status(*json).into_bytes()),
            Request::Reload => {
                self.reload()?;
                Ok(Vec::new())
            }
            Request::Invite { folder, ttl, addrs } => Ok(self.invite(folder, *ttl, addrs.clone())?.into_bytes()),
            Request::Log { .. } | Request::Cat { .. } | Request::Ls { .. } => {
                let devices = crate::query_devices(self.me, &self.config);
                crate::answer(
                    request,
                    |folder, f| self.node.read(folder, |s| f(&mut s.folder, &s.chunks)),
                    &devices,
                    &self.config,
                )
            }
            Request::Restore { folder, path, at, before } => self.restore(folder, path, at.as_deref(), *before),
            Request::Resume { folder } => self.resume(folder),
            Request::MountAt { folder, mountpoint, before } => self.mount_past(folder, mountpoint, *before),
        }
    }

    /// Brings a path back as new changes (see `Folder::restore`), answered
    /// once they are saved: peers get them, and the write-back puts them on
    /// disk, as for any change.
    fn restore(&mut self, folder: &str, path: &str, at: Option<&str>, before: Option<u64>) -> Result<Vec<u8>> {
        let i = self.locals.iter().position(|l| l.name == folder).ok_or_else(|| anyhow!("no folder named {folder:?}"))?;
        let point = match (at, before) {
            (Some(_), Some(_)) => bail!("give --at or --before, not both"),
            (Some(v), None) => RestorePoint::Version(crate::query::parse_version(v)?),
            (None, Some(t)) => RestorePoint::Before(t),
            (None, None) => RestorePoint::BeforeDeletion,
        };
        // Deletions found here and held are still in the folder: putting
        // them back is writing them again (the history restore then has
        // nothing to do for them).
        let l = &mut self.locals[i];
        let held: Vec<String> = l.held_here.iter().filter(|p| fsync_core::folder::within(p, path)).cloned().collect();
        for p in &held {
            l.index.forget(p);
            l.held_here.remove(p);
        }
        if !held.is_empty() {
            l.dirty.all();
            self.write(i);
            tracing::info!(folder, put_back = held.len(), "held deletions put back");
        }
        let now = now_ms();
        let done = self
            .node
            .edit(folder, |s| {
                let FolderState { folder, chunks } = s;
                folder.restore(path, point, now, &|c: &ChunkRef| chunks.has(&c.hash))
            })
            .ok_or_else(|| anyhow!("no folder named {folder:?}"))?;
        let done = match done {
            Ok(d) => d,
            Err(RestoreError::Exists(_)) if !held.is_empty() => Default::default(),
            Err(e) => return Err(e.into()),
        };
        self.persist(i);
        if let Some(e) = &self.store_error {
            bail!("restored, but not saved yet ({e}); it is saved once the store works again");
        }
        let shown = |p: &str| if p.is_empty() { "the folder".to_owned() } else { p.to_owned() };
        tracing::info!(folder, path = %shown(path), restored = done.restored.len(), skipped = done.skipped.len(), "restored");
        let mut out = String::new();
        if !held.is_empty() {
            out.push_str(&format!("put back {} path(s) whose deletion was held\n", held.len()));
        }
        if !done.restored.is_empty() || held.is_empty() {
            out.push_str(&format!("restored {} path(s) of {}\n", done.restored.len(), shown(path)));
        }
        for (p, why) in &done.skipped {
            out.push_str(&format!("left {p} as it is: {why}\n"));
        }
        Ok(out.into_bytes())
    }

    /// Opens an invitation and returns its ticket.
    fn invite(&mut self, folder: &str, ttl: u64, addrs: Vec<String>) -> Result<String> {
        let (invite, ticket) = crate::invite::issue(
            &self.home.invites_path(),
            &self.config,
            self.me,
            folder,
            ttl,
            addrs,
            self.node.local_addr()?,
        )?;
        self.trust.invite(invite);
        Ok(ticket)
    }

    fn status(&self, json: bool) -> String {
        let devices = crate::query_devices(self.me, &self.config);
        let folders = self
            .config
            .folders
            .iter()
            .filter_map(|f| {
                let problems = self.locals.iter().find(|l| l.name == f.name).map(Local::problems).unwrap_or_default();
                self.node.read(&f.name, |s| {
                    let mut st = crate::status::FolderStatus::of(
                        &f.name,
                        &f.path.display().to_string(),
                        &mut s.folder,
                        &s.chunks,
                        &devices,
                    );
                    st.problems = problems;
                    st
                })
            })
            .collect();
        let connected = self.node.connected_peers();
        let info = self.node.peer_info();
        let saved = load_last_seen(&self.store);
        let peers = self
            .config
            .peers
            .iter()
            .map(|p| {
                let id = p.id.parse::<DeviceId>().ok();
                let i = id.and_then(|id| info.get(&id));
                let is_connected = id.is_some_and(|id| connected.contains(&id));
                let mut s = crate::status::PeerStatus::of(p, is_connected);
                s.last_seen = i.map(|i| i.last_seen).or_else(|| saved.get(&p.id).copied());
                if let Some(i) = i {
                    s.address = i.addr.map(|a| a.to_string());
                }
                if let Some(i) = i.filter(|_| is_connected) {
                    s.to_send = i.folders.values().map(|f| f.to_send).sum();
                    s.to_fetch = i.folders.values().map(|f| f.to_fetch).sum();
                }
                s
            })
            .collect();
        let status = Status {
            device: self.me.to_string(),
            running: true,
            listen: self.node.local_addr().ok().map(|a| a.to_string()),
            http: self.http.map(|a| a.to_string()),
            folders,
            peers,
            invites: self.trust.open_invites(),
            store_error: self.store_error.clone(),
            errors: self.errors.iter().cloned().collect(),
        };
        status.render(json)
    }

    /// Progress of long work (a bar on a terminal, else a log line every
    /// few seconds); and peers' last-seen times, saved for `fsync status`
    /// offline.
    fn report(&mut self) {
        let info = self.node.peer_info();
        let connected = self.node.connected_peers();
        // The transport's own counts, per connected peer: cheap, and the
        // same numbers `status` shows per peer.
        let live = info.iter().filter(|(id, _)| connected.contains(id)).flat_map(|(_, i)| i.folders.values());
        let (to_send, to_fetch) = live.fold((0u64, 0usize), |(s, f), p| (s + p.to_send.unwrap_or(0), f + p.to_fetch));
        self.progress.update(to_send, to_fetch as u64);
        if self.last_seen_saved.elapsed() >= Duration::from_secs(5) {
            self.save_last_seen();
            self.last_seen_saved = Instant::now();
        }
    }

    fn save_last_seen(&mut self) {
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

/// Saves a folder's new events, the chunks they need that are here, and
/// the disk index; then syncs once (group commit). The caller holds the
/// folder, so no peer sees a local change before it is durable.
fn save(l: &mut Local, s: &mut FolderState, store: &mut RedbStore) -> Result<()> {
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
fn write_unsynced(l: &mut Local, s: &FolderState, store: &mut RedbStore) -> Result<(bool, Vec<ChunkHash>)> {
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
fn put_index(name: &str, index: &mut Index, store: &mut RedbStore) -> Result<bool, fsync_core::store::StoreError> {
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

/// A folder can be mounted when it is shared, and the mount point is not
/// inside a watched folder (the watcher would read the mount back).
fn check_mount(config: &Config, name: &str, point: &std::path::Path) -> Result<()> {
    if config.folders.iter().all(|f| f.name != name) {
        bail!("no folder named {name:?}; share it first with `fsync folder add {name} PATH` or `fsync join`");
    }
    let abs = std::path::absolute(point).with_context(|| format!("{}", point.display()))?;
    for f in config.folders.iter().filter(|f| f.name != name) {
        if abs.starts_with(&f.path) {
            bail!("{} is inside folder {:?} ({}); mount it somewhere else", abs.display(), f.name, f.path.display());
        }
    }
    Ok(())
}

/// Peers' last-seen times (unix ms) as saved by the daemon.
pub fn load_last_seen(store: &RedbStore) -> BTreeMap<String, u64> {
    store.get_state("last_seen").ok().flatten().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The control socket (`HOME/control.sock`, owner-only): commands such as
/// `fsync status`, `log`, `cat`, `invite` ask the running daemon, which
/// holds the store. Each connection sends one request line and reads one
/// answer. While the daemon starts (`phase` says what it is doing), a
/// `status` waits a little, then says what the daemon is busy with; other
/// requests wait their turn.
fn serve_control(home: &Home, requests: mpsc::Sender<ControlCall>, phase: watch::Receiver<Option<String>>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let path = home.control_path();
    // We hold the home's lock: a socket file left here is stale.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let requests = requests.clone();
            let mut phase = phase.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut line = String::new();
                let mut r = BufReader::new(r.take(crate::control::MAX_REQUEST));
                if let Err(e) = r.read_line(&mut line).await {
                    let _ = w.write_all(format!("1bad request ({e})").as_bytes()).await;
                    let _ = w.shutdown().await;
                    return;
                }
                let request = match Request::parse(&line) {
                    Ok(request) => request,
                    Err(e) => {
                        let _ = w.write_all(format!("1bad request ({e}): is this fsync of the same version?").as_bytes()).await;
                        let _ = w.shutdown().await;
                        return;
                    }
                };
                if matches!(request, Request::Status { .. }) {
                    let ready = matches!(tokio::time::timeout(STATUS_WAIT, phase.wait_for(Option::is_none)).await, Ok(Ok(_)));
                    if !ready {
                        let doing = phase.borrow().clone().unwrap_or_default();
                        let _ = w
                            .write_all(format!("1the daemon is starting up ({doing}); try again in a moment").as_bytes())
                            .await;
                        let _ = w.shutdown().await;
                        return;
                    }
                }
                let (tx, rx) = oneshot::channel();
                if requests.send((request, tx)).await.is_err() {
                    return;
                }
                let Ok(bytes) = rx.await else { return };
                let _ = w.write_all(&bytes).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(())
}
