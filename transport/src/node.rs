//! A node: one QUIC endpoint that serves and dials peers and keeps its
//! folders in sync with them through fsync-core sessions.
//!
//! Per connection, one bidirectional stream carries every shared folder:
//! each side first names the folders it shares *with that peer* (so a peer
//! never learns the names of folders it is not trusted for), the
//! intersection gets one [`Session`] each, and frames carry a folder index
//! and a core message. Any change to a folder, local or from a peer, wakes
//! every connection, so changes travel through the graph of peers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fsync_core::chunks::Chunks;
use fsync_core::encoding::{Reader, Writer};
use fsync_core::folder::Folder;
use fsync_core::session::{Event, Session};
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};

use crate::frame::{read_frame, write_frame};
use crate::id::{DeviceId, Identity};
use crate::tls::{client_config, server_config, Trust};

/// How often a connection sends a fresh summary (anti-entropy).
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// Frames read ahead of processing, per connection.
const READ_AHEAD: usize = 4;
/// Chunk replies handed to the bulk writer ahead of the wire, per connection.
const BULK_AHEAD: usize = 8;
/// How long a peer may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between dial attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why the node could not start or a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// TLS configuration.
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// Binding the UDP socket.
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        cause: std::io::Error,
    },
    /// Anything else about QUIC.
    #[error("QUIC: {0}")]
    Quic(String),
    /// The peer is not who we dialled, or broke the protocol.
    #[error("peer: {0}")]
    Peer(String),
}

// The cause is part of the message, so it is not also the error's source:
// a printed chain of causes would say it twice.
impl From<rustls::Error> for NodeError {
    fn from(e: rustls::Error) -> Self {
        NodeError::Tls(e)
    }
}

/// A folder and its chunks, shared by every connection.
#[derive(Debug)]
pub struct FolderState {
    /// The folder.
    pub folder: Folder,
    /// Its binary chunks.
    pub chunks: Chunks,
}

struct Shared {
    identity: Identity,
    trust: Arc<Trust>,
    folders: Mutex<BTreeMap<String, Arc<Mutex<FolderState>>>>,
    /// Bumped on every change to any folder.
    generation: watch::Sender<u64>,
    /// The one connection kept per peer, with the device that initiated it
    /// and the peer's boot id.
    connected: Mutex<BTreeMap<DeviceId, (quinn::Connection, DeviceId, u64)>>,
    /// Random per process: tells a peer that we restarted, so it drops
    /// the connection to our old process at once instead of waiting for its
    /// idle timeout.
    boot: u64,
    /// Connection loops running (for status and tests).
    running: std::sync::atomic::AtomicUsize,
    /// What each peer has been up to, for status.
    info: Mutex<BTreeMap<DeviceId, PeerInfo>>,
}

/// What a node knows about a peer, for `fsync status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// Unix time (ms) the peer was last heard from.
    pub last_seen: u64,
    /// Where it was last connected from.
    pub addr: Option<SocketAddr>,
    /// Per shared folder: sync progress with this peer.
    pub folders: BTreeMap<String, Progress>,
}

/// Sync progress of one folder with one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Our changes (unit operations) the peer still lacks, as far as we
    /// know; `None` until it has sent its summary.
    pub to_send: Option<u64>,
    /// Chunks we asked it for and still wait for.
    pub to_fetch: usize,
    /// Bytes sent to it on this connection.
    pub sent_bytes: u64,
}

/// Counts a running connection loop.
struct Running<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Running<'a> {
    fn new(n: &'a std::sync::atomic::AtomicUsize) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Running(n)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Registers a connection while it lives; refuses a duplicate.
struct Connected<'a>(&'a Shared, DeviceId, usize);

impl<'a> Connected<'a> {
    /// When both sides dial at once there are two connections: both sides
    /// keep the one initiated by the smaller device ID and close the other.
    /// A newer connection from the same initiator replaces the old one (the
    /// old one is probably dead and waiting for its idle timeout), and so
    /// does any connection from a peer that restarted (another boot id):
    /// its old connection is certainly dead.
    fn register(sh: &'a Shared, conn: &quinn::Connection, peer: DeviceId, initiator: DeviceId, boot: u64) -> Option<Self> {
        let me = sh.identity.device_id();
        let preferred = me.min(peer);
        let mut c = sh.connected.lock().ok()?;
        if let Some((old, old_init, old_boot)) = c.get(&peer) {
            if *old_boot == boot && *old_init != initiator && *old_init == preferred {
                return None;
            }
            old.close(5u32.into(), b"replaced by another connection");
        }
        c.insert(peer, (conn.clone(), initiator, boot));
        Some(Connected(sh, peer, conn.stable_id()))
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        if let Ok(mut c) = self.0.connected.lock() {
            if c.get(&self.1).is_some_and(|(conn, _, _)| conn.stable_id() == self.2) {
                c.remove(&self.1);
            }
        }
    }
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
}

/// A random id for this process (clock and pid through BLAKE3).
fn boot_id() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut h = blake3::Hasher::new();
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(b)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How long a silent peer is given before it is considered gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Keep-alives every third of the idle timeout, so a live but quiet peer
/// never times out and a dead one is found within the timeout.
fn transport(idle: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(idle / 3));
    // A peer's chunk streams are read concurrently: their number bounds
    // what they hold in memory (BULK_AHEAD x MAX_CHUNK_FRAME per peer).
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(BULK_AHEAD as u32));
    if let Ok(idle) = quinn::IdleTimeout::try_from(idle) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

impl Node {
    /// Starts listening on `listen` (UDP) and serving trusted peers.
    pub fn bind(identity: Identity, trust: Arc<Trust>, listen: SocketAddr) -> Result<Node, NodeError> {
        Node::bind_with_idle(identity, trust, listen, IDLE_TIMEOUT)
    }

    /// [`Node::bind`] with another idle timeout (tests use short ones).
    pub fn bind_with_idle(
        identity: Identity,
        trust: Arc<Trust>,
        listen: SocketAddr,
        idle: Duration,
    ) -> Result<Node, NodeError> {
        Node::serve(identity, trust, listen, idle, Vec::new())
    }

    /// Starts a node that shares `folders` (name, folder, chunks) from its
    /// first connection on: a peer that connects at once is offered them.
    /// Folders added later with [`Node::add_folder`] are offered on new
    /// connections only.
    pub fn serve(
        identity: Identity,
        trust: Arc<Trust>,
        listen: SocketAddr,
        idle: Duration,
        folders: Vec<(String, Folder, Chunks)>,
    ) -> Result<Node, NodeError> {
        let server = quinn::crypto::rustls::QuicServerConfig::try_from(server_config(&identity, trust.clone())?)
            .map_err(|e| NodeError::Quic(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
        server.transport_config(transport(idle));
        let client = quinn::crypto::rustls::QuicClientConfig::try_from(client_config(&identity, trust.clone())?)
            .map_err(|e| NodeError::Quic(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client));
        client.transport_config(transport(idle));
        let mut endpoint = quinn::Endpoint::server(server, listen).map_err(|cause| NodeError::Bind { addr: listen, cause })?;
        endpoint.set_default_client_config(client);
        let folders = folders
            .into_iter()
            .map(|(name, folder, chunks)| (name, Arc::new(Mutex::new(FolderState { folder, chunks }))))
            .collect();
        let shared = Arc::new(Shared {
            identity,
            trust,
            folders: Mutex::new(folders),
            generation: watch::channel(0).0,
            connected: Mutex::new(BTreeMap::new()),
            running: std::sync::atomic::AtomicUsize::new(0),
            info: Mutex::new(BTreeMap::new()),
            boot: boot_id(),
        });
        let (ep, sh) = (endpoint.clone(), shared.clone());
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let sh = sh.clone();
                tokio::spawn(async move {
                    match incoming.await {
                        Ok(conn) => match peer_of(&conn) {
                            Ok(peer) => {
                                if let Err(e) = run_connection(sh, conn, peer, false).await {
                                    tracing::info!(peer = %peer.short(), "connection ended: {e}");
                                }
                            }
                            Err(e) => tracing::warn!("incoming connection without identity: {e}"),
                        },
                        Err(e) => tracing::info!("incoming handshake failed: {e}"),
                    }
                });
            }
        });
        Ok(Node { shared, endpoint })
    }

    /// This node's device ID.
    pub fn device_id(&self) -> DeviceId {
        self.shared.identity.device_id()
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, NodeError> {
        self.endpoint.local_addr().map_err(|e| NodeError::Quic(e.to_string()))
    }

    /// Devices connected right now.
    pub fn connected_peers(&self) -> Vec<DeviceId> {
        self.shared.connected.lock().map(|c| c.keys().copied().collect()).unwrap_or_default()
    }

    /// Connection loops running now (one per peer once settled).
    pub fn running_connections(&self) -> usize {
        self.shared.running.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The connections kept: (peer, device that initiated it).
    pub fn connections(&self) -> Vec<(DeviceId, DeviceId)> {
        let me = self.device_id();
        self.shared
            .connected
            .lock()
            .map(|c| c.iter().map(|(p, (_, init, _))| (me.min(*p), *init)).collect())
            .unwrap_or_default()
    }

    /// What is known of each peer seen since start (connected or not).
    pub fn peer_info(&self) -> BTreeMap<DeviceId, PeerInfo> {
        self.shared.info.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// Closes the connection to `device`, if any; a dialling side
    /// reconnects, and the new connection offers what is trusted now (after
    /// trust or folders changed).
    pub fn disconnect(&self, device: DeviceId) {
        if let Ok(c) = self.shared.connected.lock() {
            if let Some((conn, _, _)) = c.get(&device) {
                conn.close(7u32.into(), b"shared folders changed; reconnect");
            }
        }
    }

    /// Shares a folder under `name`.
    pub fn add_folder(&self, name: &str, folder: Folder) {
        self.add_folder_with(name, folder, Chunks::default());
    }

    /// Shares a folder under `name`, with the chunks it has.
    pub fn add_folder_with(&self, name: &str, folder: Folder, chunks: Chunks) {
        if let Ok(mut f) = self.shared.folders.lock() {
            f.insert(name.to_owned(), Arc::new(Mutex::new(FolderState { folder, chunks })));
        }
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Changes a folder (local edits); peers are told at once.
    pub fn edit<R>(&self, name: &str, f: impl FnOnce(&mut FolderState) -> R) -> Option<R> {
        let state = self.shared.folders.lock().ok()?.get(name)?.clone();
        let r = f(&mut *state.lock().ok()?);
        self.shared.generation.send_modify(|g| *g += 1);
        Some(r)
    }

    /// A feed that changes whenever any folder changes (locally or from a
    /// peer): what the daemon waits on to write merged state back.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Tells every connection that folders changed (after changes made
    /// through [`Node::read`]).
    pub fn notify(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Reads (or changes without telling peers) a folder.
    pub fn read<R>(&self, name: &str, f: impl FnOnce(&mut FolderState) -> R) -> Option<R> {
        let state = self.shared.folders.lock().ok()?.get(name)?.clone();
        let mut guard = state.lock().ok()?;
        Some(f(&mut guard))
    }

    /// Keeps a connection to `device` at `addr`: dials now and again after
    /// every disconnect, with exponential backoff and jitter.
    pub fn dial(&self, addr: SocketAddr, device: DeviceId) {
        let (ep, sh) = (self.endpoint.clone(), self.shared.clone());
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                // Connected already (the peer dialled us): just watch.
                if sh.connected.lock().is_ok_and(|c| c.contains_key(&device)) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                let attempt = match ep.connect(addr, "fsync") {
                    Ok(c) => c.await.map_err(|e| NodeError::Quic(e.to_string())),
                    Err(quinn::ConnectError::EndpointStopping) => return,
                    Err(e) => Err(NodeError::Quic(e.to_string())),
                };
                match attempt {
                    Ok(conn) => {
                        backoff = Duration::from_millis(100);
                        match peer_of(&conn) {
                            Ok(peer) if peer == device => {
                                if let Err(e) = run_connection(sh.clone(), conn, peer, true).await {
                                    tracing::info!(peer = %peer.short(), "connection ended: {e}");
                                }
                            }
                            Ok(other) => {
                                tracing::warn!(%addr, expected = %device, got = %other, "wrong device at address");
                                conn.close(1u32.into(), b"not the device dialled");
                            }
                            Err(e) => tracing::warn!("{e}"),
                        }
                    }
                    Err(e) => tracing::debug!(%addr, "dial failed: {e}"),
                }
                let jitter = Duration::from_millis(now_ms() % 100);
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }

    /// A bare connection to a peer, for tools and tests that speak the
    /// protocol themselves (the peer must trust this node).
    pub async fn connect_raw(&self, addr: SocketAddr) -> Result<quinn::Connection, NodeError> {
        self.endpoint
            .connect(addr, "fsync")
            .map_err(|e| NodeError::Quic(e.to_string()))?
            .await
            .map_err(|e| NodeError::Quic(e.to_string()))
    }

    /// Closes every connection and stops listening.
    pub async fn close(&self) {
        self.endpoint.close(0u32.into(), b"bye");
        self.endpoint.wait_idle().await;
    }
}

fn peer_of(conn: &quinn::Connection) -> Result<DeviceId, NodeError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| NodeError::Peer("no certificate".into()))?;
    let cert = certs.first().ok_or_else(|| NodeError::Peer("no certificate".into()))?;
    DeviceId::from_cert(cert).map_err(|e| NodeError::Peer(e.to_string()))
}

/// The version of the hello frame.
const HELLO_VERSION: u64 = 2;

/// The first frame on a connection: the folders offered to that peer, and
/// the proof of an invitation's secret when joining (see
/// [`crate::tls::join_proof`]).
pub fn hello(names: &[String], proof: Option<&[u8; 32]>, boot: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.varint(HELLO_VERSION);
    w.varint(boot);
    w.usize(names.len());
    for n in names {
        w.str(n);
    }
    match proof {
        Some(p) => {
            w.u8(1);
            w.raw(p);
        }
        None => w.u8(0),
    }
    w.into_bytes()
}

struct Hello {
    boot: u64,
    folders: Vec<String>,
    proof: Option<[u8; 32]>,
}

fn parse_hello(bytes: &[u8]) -> Result<Hello, NodeError> {
    let mut r = Reader::new(bytes);
    let bad = |e: fsync_core::encoding::DecodeError| NodeError::Peer(format!("bad hello: {e}"));
    let version = r.varint().map_err(bad)?;
    if version != HELLO_VERSION {
        return Err(NodeError::Peer(format!("unsupported hello version {version} (this node speaks {HELLO_VERSION})")));
    }
    let boot = r.varint().map_err(bad)?;
    let n = r.count(1).map_err(bad)?;
    let mut folders = Vec::with_capacity(n);
    for _ in 0..n {
        folders.push(r.str().map_err(bad)?.to_owned());
    }
    let proof = match r.u8().map_err(bad)? {
        0 => None,
        1 => {
            let mut p = [0u8; 32];
            p.copy_from_slice(r.raw(32).map_err(bad)?);
            Some(p)
        }
        t => return Err(NodeError::Peer(format!("bad hello: proof tag {t}"))),
    };
    Ok(Hello { boot, folders, proof })
}

/// Notes how far each folder's session is with `peer`.
fn record_progress(sh: &Shared, peer: DeviceId, conn: &quinn::Connection, sessions: &[FolderSession]) {
    let mut folders = BTreeMap::new();
    for s in sessions {
        let to_send = s.state.lock().ok().and_then(|st| s.session.pending_ops(&st.folder));
        let progress = Progress { to_send, to_fetch: s.session.chunks_in_flight(), sent_bytes: s.session.stats().sent_bytes };
        folders.insert(s.name.clone(), progress);
    }
    if let Ok(mut i) = sh.info.lock() {
        let e = i.entry(peer).or_default();
        e.last_seen = now_ms();
        e.addr = Some(conn.remote_address());
        e.folders = folders;
    }
}

/// One folder shared on one connection: its state and the core session.
struct FolderSession {
    name: String,
    state: Arc<Mutex<FolderState>>,
    session: Session,
}

async fn run_connection(sh: Arc<Shared>, conn: quinn::Connection, peer: DeviceId, dialer: bool) -> Result<(), NodeError> {
    let q = |e: &dyn std::fmt::Display| NodeError::Quic(e.to_string());
    let (mut send, mut recv) =
        if dialer { conn.open_bi().await.map_err(|e| q(&e))? } else { conn.accept_bi().await.map_err(|e| q(&e))? };
    let me = sh.identity.device_id();
    // Offer only the folders this peer is trusted for.
    let offer = |sh: &Shared| -> Vec<String> {
        let allowed = sh.trust.folders_of(&peer);
        match sh.folders.lock() {
            Ok(f) => f.keys().filter(|k| allowed.contains(*k)).cloned().collect(),
            Err(_) => Vec::new(),
        }
    };
    let read_hello = async |recv: &mut quinn::RecvStream| -> Result<Hello, NodeError> {
        let frame = tokio::time::timeout(HELLO_TIMEOUT, read_frame(recv))
            .await
            .map_err(|_| NodeError::Peer("no hello in time".into()))?
            .map_err(|e| q(&e))?
            .ok_or_else(|| NodeError::Peer("closed before its hello".into()))?;
        parse_hello(&frame)
    };
    // The dialler speaks first; the acceptor answers once it knows whether
    // the dialler redeems an invitation (which changes what it may see).
    let (mine, theirs) = if dialer {
        let mine = offer(&sh);
        write_frame(&mut send, &hello(&mine, sh.trust.proof_for(peer, me).as_ref(), sh.boot)).await.map_err(|e| q(&e))?;
        (mine, read_hello(&mut recv).await?)
    } else {
        let theirs = read_hello(&mut recv).await?;
        if let Some(proof) = &theirs.proof {
            match sh.trust.redeem(peer, me, proof, conn.remote_address()) {
                Some(folder) => {
                    tracing::info!(peer = %peer, %folder, "device joined by invitation")
                }
                None if sh.trust.is_trusted(&peer) => {}
                None => {
                    tracing::warn!(peer = %peer, "refused an invitation proof: unknown, used or expired invitation")
                }
            }
        }
        if !sh.trust.is_trusted(&peer) {
            tracing::warn!(peer = %peer, "refused an unknown device (no valid invitation); trust it with `fsync peer add {peer}`");
            conn.close(6u32.into(), b"not trusted: invitation unknown, used or expired");
            return Err(NodeError::Peer("not trusted".into()));
        }
        let mine = offer(&sh);
        write_frame(&mut send, &hello(&mine, None, sh.boot)).await.map_err(|e| q(&e))?;
        (mine, theirs)
    };
    let (theirs, their_boot) = (theirs.folders, theirs.boot);
    // Only now is the peer connected: in TLS 1.3 the dialler finishes its
    // handshake before the other side has checked its certificate, and a
    // refused dialler never gets a hello back.
    let initiator = if dialer { sh.identity.device_id() } else { peer };
    let Some(_connected) = Connected::register(&sh, &conn, peer, initiator, their_boot) else {
        conn.close(5u32.into(), b"duplicate connection");
        return Ok(());
    };
    let common: Vec<String> = mine.iter().filter(|m| theirs.contains(m)).cloned().collect();
    tracing::info!(peer = %peer.short(), folders = ?common, "connected");
    let mut sessions: Vec<FolderSession> = Vec::new();
    for name in &common {
        let Some(state) = sh.folders.lock().ok().and_then(|f| f.get(name).cloned()) else {
            continue;
        };
        let mut session = Session::new();
        if let Ok(s) = state.lock() {
            session.start(&s.folder, &s.chunks);
        }
        sessions.push(FolderSession { name: name.clone(), state, session });
    }
    // Frames are read in their own task so that waiting for one is
    // cancel-safe in the select below.
    // The control stream goes first: a big transfer never delays an edit.
    let _ = send.set_priority(10);
    // At most a few frames wait here: per-peer memory stays under
    // READ_AHEAD * MAX_FRAME, and QUIC flow control holds the rest back.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(READ_AHEAD);
    // Chunks arrive on their own unidirectional streams, one frame each.
    let (uni_conn, uni_tx) = (conn.clone(), tx.clone());
    tokio::spawn(async move {
        while let Ok(mut s) = uni_conn.accept_uni().await {
            let tx = uni_tx.clone();
            tokio::spawn(async move {
                if let Ok(Some(f)) = crate::frame::read_frame_at_most(&mut s, crate::frame::MAX_CHUNK_FRAME).await {
                    let _ = tx.send(f).await;
                }
            });
        }
    });
    // Chunks we serve go out the same way, a few at a time.
    let (bulk_tx, mut bulk_rx) = mpsc::channel::<Vec<u8>>(BULK_AHEAD);
    let bulk_conn = conn.clone();
    tokio::spawn(async move {
        while let Some(frame) = bulk_rx.recv().await {
            let Ok(mut s) = bulk_conn.open_uni().await else {
                break;
            };
            if write_frame(&mut s, &frame).await.is_err() {
                break;
            }
            let _ = s.finish();
        }
    });
    let reader_conn = conn.clone();
    tokio::spawn(async move {
        loop {
            match read_frame(&mut recv).await {
                Ok(Some(f)) => {
                    if tx.send(f).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = %peer.short(), "closing: {e}");
                    break;
                }
            }
        }
        // The control stream is the connection: without it, end it all.
        reader_conn.close(4u32.into(), b"control stream ended");
    });
    let _running = Running::new(&sh.running);
    let mut generation = sh.generation.subscribe();
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.tick().await;
    loop {
        // Send whatever the sessions have.
        for (i, s) in sessions.iter_mut().enumerate() {
            loop {
                let out = match s.state.lock() {
                    Ok(st) => s.session.poll_transmit(&st.folder),
                    Err(_) => None,
                };
                let Some(bytes) = out else { break };
                let mut frame = Writer::new();
                frame.usize(i);
                frame.raw(&bytes);
                write_frame(&mut send, &frame.into_bytes()).await.map_err(|e| q(&e))?;
            }
        }
        record_progress(&sh, peer, &conn, &sessions);
        let bulk_waiting = sessions.iter().any(|s| s.session.bulk_pending() > 0);
        tokio::select! {
            permit = bulk_tx.reserve(), if bulk_waiting => {
                let Ok(permit) = permit else { break };
                if let Some((i, s)) = sessions.iter_mut().enumerate().find(|(_, s)| s.session.bulk_pending() > 0) {
                    let out = s.state.lock().ok().and_then(|st| s.session.poll_bulk(&st.chunks));
                    if let Some(bytes) = out {
                        let mut frame = Writer::new();
                        frame.usize(i);
                        frame.raw(&bytes);
                        permit.send(frame.into_bytes());
                    }
                }
            }
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                let mut r = Reader::new(&frame);
                let idx = r.usize_max(sessions.len().saturating_sub(1)).ok().filter(|_| !sessions.is_empty());
                let Some(idx) = idx else {
                    conn.close(2u32.into(), b"unknown folder");
                    return Err(NodeError::Peer("frame for an unknown folder".into()));
                };
                let body = r.raw(r.remaining()).unwrap_or_default();
                let s = &mut sessions[idx];
                let mut changed = false;
                let result = match s.state.lock() {
                    Ok(mut st) => {
                        let st = &mut *st;
                        let r = s.session.handle_message(now_ms(), body, &mut st.folder, &mut st.chunks);
                        while let Some(ev) = s.session.poll_event() {
                            changed |= matches!(ev, Event::Changed(_) | Event::ChunkStored(_));
                        }
                        r
                    }
                    Err(_) => Ok(()),
                };
                if changed {
                    sh.generation.send_modify(|g| *g += 1);
                }
                if let Err(e) = result {
                    tracing::warn!(peer = %peer.short(), folder = %s.name, "refused: {e}; closing the connection");
                    conn.close(3u32.into(), b"protocol violation");
                    return Err(NodeError::Peer(e.to_string()));
                }
            }
            r = generation.changed() => {
                if r.is_err() {
                    break;
                }
            }
            _ = resync.tick() => {
                for s in &mut sessions {
                    if let Ok(st) = s.state.lock() {
                        s.session.resync(&st.folder, &st.chunks);
                    }
                }
            }
        }
    }
    Ok(())
}
