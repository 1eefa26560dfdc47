//! A node: one QUIC endpoint that serves and dials peers and keeps its
//! folders in sync with them through fsync-core sessions.
//!
//! Per connection, one bidirectional stream carries every shared folder:
//! each side first names the folders it shares *with that peer* (so a peer
//! never learns the names of folders it is not trusted for), the
//! intersection is linked to each folder's owner (see [`crate::link`]),
//! which runs one [`fsync_core::session::Session`] per peer, and frames carry
//! a folder index and a core message. The node holds no folder: a
//! connection only moves bytes between the peer and the owners.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fsync_core::encoding::{Reader, Writer};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use crate::frame::{read_frame, write_frame};
use crate::id::{DeviceId, Identity};
use crate::link::{FolderMsg, FolderPort, Link, Outbox};
use crate::tls::{client_config, server_config, Trust};

/// How often a connection sends a fresh summary (anti-entropy).
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// Frames read ahead of processing, per connection.
const READ_AHEAD: usize = 4;
/// Chunk replies handed to the bulk writer ahead of the wire, per connection.
const BULK_AHEAD: usize = 8;
/// Control frames the owners may queue ahead of the wire, per connection.
const CONTROL_AHEAD: usize = 16;
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

struct Shared {
    identity: Identity,
    trust: Arc<Trust>,
    /// Where each shared folder's owner takes messages.
    folders: Mutex<BTreeMap<String, FolderPort>>,
    /// Connections made so far (their ids for the owners).
    conns: std::sync::atomic::AtomicU64,
    /// The one connection kept per peer, with the device that initiated it
    /// and the peer's boot id.
    connected: Mutex<BTreeMap<DeviceId, (quinn::Connection, DeviceId, u64)>>,
    /// Random per process: tells a peer that we restarted, so it drops
    /// the connection to our old process at once instead of waiting for its
    /// idle timeout.
    boot: u64,
    /// Connection loops running (for status and tests).
    running: std::sync::atomic::AtomicUsize,
    /// What each peer has been up to, for status (the owners note their
    /// folders' progress here).
    info: Arc<Mutex<BTreeMap<DeviceId, PeerInfo>>>,
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

    /// Starts a node that shares `folders` (name, its owner's port) from
    /// its first connection on: a peer that connects at once is offered
    /// them. Folders added later with [`Node::add_folder`] are offered on
    /// new connections only.
    pub fn serve(
        identity: Identity,
        trust: Arc<Trust>,
        listen: SocketAddr,
        idle: Duration,
        folders: Vec<(String, FolderPort)>,
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
        let shared = Arc::new(Shared {
            identity,
            trust,
            folders: Mutex::new(folders.into_iter().collect()),
            conns: std::sync::atomic::AtomicU64::new(0),
            connected: Mutex::new(BTreeMap::new()),
            running: std::sync::atomic::AtomicUsize::new(0),
            info: Arc::new(Mutex::new(BTreeMap::new())),
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

    /// Shares a folder under `name`, owned by what takes `port`'s
    /// messages.
    pub fn add_folder(&self, name: &str, port: FolderPort) {
        if let Ok(mut f) = self.shared.folders.lock() {
            f.insert(name.to_owned(), port);
        }
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

/// Unlinks a connection from its folders' owners when it ends.
struct Closed {
    ports: Vec<FolderPort>,
    conn: crate::link::ConnId,
}

impl Drop for Closed {
    fn drop(&mut self) {
        let (ports, conn) = (std::mem::take(&mut self.ports), self.conn);
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            for p in ports {
                p.send(FolderMsg::Closed(conn)).await;
            }
        });
    }
}

/// Tells the owners that found no room for frames that there is some
/// now.
async fn ready(ports: &[FolderPort], wants: &[Arc<AtomicBool>], conn: crate::link::ConnId) {
    for (p, w) in ports.iter().zip(wants) {
        if w.swap(false, std::sync::atomic::Ordering::SeqCst) {
            p.send(FolderMsg::Ready(conn)).await;
        }
    }
}

/// Notes when `peer` was last heard and from where.
fn record_seen(sh: &Shared, peer: DeviceId, conn: &quinn::Connection) {
    if let Ok(mut i) = sh.info.lock() {
        let e = i.entry(peer).or_default();
        e.last_seen = now_ms();
        e.addr = Some(conn.remote_address());
    }
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
    // Each common folder is linked to its owner; what the owners send
    // for this peer comes back through two channels shared by the folders
    // (control frames in order, chunk replies each on a stream of its own).
    let (control_tx, mut control_rx) = mpsc::channel::<Vec<u8>>(CONTROL_AHEAD);
    let (bulk_tx, mut bulk_rx) = mpsc::channel::<Vec<u8>>(BULK_AHEAD);
    let id = sh.conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut ports: Vec<FolderPort> = Vec::new();
    let mut wants: Vec<Arc<AtomicBool>> = Vec::new();
    for name in &common {
        let Some(port) = sh.folders.lock().ok().and_then(|f| f.get(name).cloned()) else {
            continue;
        };
        let want = Arc::new(AtomicBool::new(false));
        let out = Outbox {
            idx: ports.len(),
            control: control_tx.clone(),
            bulk: bulk_tx.clone(),
            want: want.clone(),
            conn: conn.clone(),
        };
        let link = Link { conn: id, peer, name: name.clone(), out, book: sh.info.clone() };
        if port.send(FolderMsg::Open(link)).await {
            ports.push(port);
            wants.push(want);
        }
    }
    drop((control_tx, bulk_tx));
    // Unlinked whichever way this ends.
    let _closed = Closed { ports: ports.clone(), conn: id };
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
    let (bulk_conn, bulk_ports, bulk_wants) = (conn.clone(), ports.clone(), wants.clone());
    tokio::spawn(async move {
        while let Some(frame) = bulk_rx.recv().await {
            ready(&bulk_ports, &bulk_wants, id).await;
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
    record_seen(&sh, peer, &conn);
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.tick().await;
    loop {
        tokio::select! {
            frame = control_rx.recv() => {
                let Some(frame) = frame else { break };
                ready(&ports, &wants, id).await;
                write_frame(&mut send, &frame).await.map_err(|e| q(&e))?;
            }
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                record_seen(&sh, peer, &conn);
                let mut r = Reader::new(&frame);
                let port = r.usize_max(ports.len().saturating_sub(1)).ok().and_then(|i| ports.get(i));
                let Some(port) = port else {
                    conn.close(2u32.into(), b"unknown folder");
                    return Err(NodeError::Peer("frame for an unknown folder".into()));
                };
                let body = r.raw(r.remaining()).unwrap_or_default().to_vec();
                if !port.send(FolderMsg::Frame(id, body)).await {
                    break;
                }
            }
            _ = resync.tick() => {
                for p in &ports {
                    p.send(FolderMsg::Resync(id)).await;
                }
            }
        }
    }
    Ok(())
}
