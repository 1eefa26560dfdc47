//! Between the node and a folder's owner.
//!
//! The node owns no folder: each folder has one owner (the daemon, or
//! [`spawn_owner`] for a program with nothing else to do with it) that
//! holds the folder, its chunks and its sync sessions. A connection task
//! only moves bytes: it hands each frame a peer sent for a folder to that
//! folder's owner as a [`FolderMsg`] (waiting when the owner is behind,
//! which holds the peer back through QUIC flow control), and writes what
//! the owner puts in the connection's [`Outbox`]. The owner never waits on
//! a connection: it puts frames in an outbox only while there is room, and
//! the connection says when there is room again ([`FolderMsg::Ready`]).
//! So no lock is held across network I/O, a slow peer never holds up the
//! folder, and a busy folder never blocks a runtime thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fsync_core::chunks::Chunks;
use fsync_core::encoding::Writer;
use fsync_core::folder::Folder;
use fsync_core::session::{Event, Session};
use tokio::sync::{mpsc, oneshot};

use crate::id::DeviceId;
use crate::node::{PeerInfo, Progress};

/// A connection, as the owner knows it.
pub type ConnId = u64;

/// What the node tells a folder's owner.
#[derive(Debug)]
pub enum FolderMsg {
    /// A connection shares the folder from now on.
    Open(Link),
    /// A frame the peer sent for the folder.
    Frame(ConnId, Vec<u8>),
    /// Time for a fresh summary (anti-entropy).
    Resync(ConnId),
    /// The connection has room for frames again.
    Ready(ConnId),
    /// The connection ended.
    Closed(ConnId),
}

/// Where the node sends a folder's messages: the owner's queue, and the
/// key the owner knows the folder by (one queue may serve many folders).
#[derive(Clone, Debug)]
pub struct FolderPort {
    tx: mpsc::Sender<(usize, FolderMsg)>,
    key: usize,
}

impl FolderPort {
    /// A port on `tx` for the folder the owner calls `key`.
    pub fn new(tx: mpsc::Sender<(usize, FolderMsg)>, key: usize) -> Self {
        FolderPort { tx, key }
    }

    /// Sends `msg`, waiting while the owner's queue is full. False when
    /// the owner is gone.
    pub(crate) async fn send(&self, msg: FolderMsg) -> bool {
        self.tx.send((self.key, msg)).await.is_ok()
    }
}

/// A connection's side of a link, given to the owner: where the folder's
/// frames for that peer go.
#[derive(Debug)]
pub struct Link {
    pub(crate) conn: ConnId,
    pub(crate) peer: DeviceId,
    /// The folder's name, for status.
    pub(crate) name: String,
    pub(crate) out: Outbox,
    pub(crate) book: Arc<Mutex<BTreeMap<DeviceId, PeerInfo>>>,
}

/// Frames for one folder on one connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// The folder's index on the connection (each frame starts with it).
    pub(crate) idx: usize,
    /// In order, on the connection's control stream.
    pub(crate) control: mpsc::Sender<Vec<u8>>,
    /// Chunk replies, each on a stream of its own.
    pub(crate) bulk: mpsc::Sender<Vec<u8>>,
    /// Set by an owner that found no room: the connection sends
    /// [`FolderMsg::Ready`] once it has taken a frame (one flag per folder
    /// of the connection, as the channels are shared).
    pub(crate) want: Arc<AtomicBool>,
    /// To close the connection on a protocol violation.
    pub(crate) conn: quinn::Connection,
}

impl Outbox {
    fn frame(&self, body: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.usize(self.idx);
        w.raw(body);
        w.into_bytes()
    }
}

/// One peer's session for the folder.
struct Peer {
    link: Link,
    session: Session,
    /// Progress as last told to the book.
    told: Option<Progress>,
}

/// A folder's sessions with its peers: what an owner keeps beside the
/// folder, fed with [`FolderMsg`]s.
#[derive(Default)]
pub struct Links {
    peers: BTreeMap<ConnId, Peer>,
}

impl Links {
    /// No peers yet.
    pub fn new() -> Self {
        Links::default()
    }

    /// Peers connected for this folder.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when no peer is connected for this folder.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Takes a message from the node; true when the folder changed (a
    /// peer's changes or chunks came in). Then call [`Links::pump`].
    pub fn handle(&mut self, msg: FolderMsg, now: u64, folder: &mut Folder, chunks: &mut Chunks) -> bool {
        match msg {
            FolderMsg::Open(link) => {
                tracing::debug!(conn = link.conn, peer = %link.peer.short(), folder = %link.name, "linked");
                let mut session = Session::new();
                session.start(folder, chunks);
                self.peers.insert(link.conn, Peer { link, session, told: None });
                false
            }
            FolderMsg::Frame(conn, bytes) => {
                tracing::trace!(conn, len = bytes.len(), known = self.peers.contains_key(&conn), "frame");
                let Some(p) = self.peers.get_mut(&conn) else { return false };
                let result = p.session.handle_message(now, &bytes, folder, chunks);
                let mut changed = false;
                while let Some(ev) = p.session.poll_event() {
                    changed |= matches!(ev, Event::Changed(_) | Event::ChunkStored(_));
                }
                if let Err(e) = result {
                    tracing::warn!(peer = %p.link.peer.short(), folder = %p.link.name, "refused: {e}; closing the connection");
                    p.link.out.conn.close(3u32.into(), b"protocol violation");
                    self.peers.remove(&conn);
                }
                changed
            }
            FolderMsg::Resync(conn) => {
                if let Some(p) = self.peers.get_mut(&conn) {
                    p.session.resync(folder, chunks);
                }
                false
            }
            FolderMsg::Ready(conn) => {
                tracing::trace!(conn, "room again");
                false
            }
            FolderMsg::Closed(conn) => {
                tracing::debug!(conn, "unlinked");
                self.peers.remove(&conn);
                false
            }
        }
    }

    /// Puts what the sessions have to send in their outboxes, as far as
    /// there is room, and notes each peer's progress.
    pub fn pump(&mut self, folder: &Folder, chunks: &Chunks) {
        for p in self.peers.values_mut() {
            let out = &p.link.out;
            loop {
                // Room first: a message taken from the session is sent.
                out.want.store(true, Ordering::SeqCst);
                let Ok(permit) = out.control.try_reserve() else { break };
                out.want.store(false, Ordering::SeqCst);
                let Some(bytes) = p.session.poll_transmit(folder) else { break };
                tracing::trace!(conn = p.link.conn, len = bytes.len(), "control");
                permit.send(out.frame(&bytes));
            }
            while p.session.bulk_pending() > 0 {
                out.want.store(true, Ordering::SeqCst);
                let Ok(permit) = out.bulk.try_reserve() else { break };
                out.want.store(false, Ordering::SeqCst);
                let Some(bytes) = p.session.poll_bulk(chunks) else { break };
                tracing::trace!(conn = p.link.conn, len = bytes.len(), "bulk");
                permit.send(out.frame(&bytes));
            }
            let progress = Progress {
                to_send: p.session.pending_ops(folder),
                to_fetch: p.session.chunks_in_flight(),
                sent_bytes: p.session.stats().sent_bytes,
            };
            if p.told != Some(progress) {
                p.told = Some(progress);
                if let Ok(mut book) = p.link.book.lock() {
                    book.entry(p.link.peer).or_default().folders.insert(p.link.name.clone(), progress);
                }
            }
        }
    }
}

/// A call on an owned folder.
type Call = Box<dyn FnOnce(&mut Folder, &mut Chunks) + Send>;

/// A folder owned by a task of its own (see [`spawn_owner`]).
#[derive(Clone)]
pub struct OwnedFolder {
    calls: mpsc::UnboundedSender<Call>,
}

impl OwnedFolder {
    /// Runs `f` on the folder, in the owner's task; peers hear of what it
    /// changed at once. `None` when the owner is gone.
    pub async fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Folder, &mut Chunks) -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |folder, chunks| {
            let _ = tx.send(f(folder, chunks));
        });
        self.calls.send(call).ok()?;
        rx.await.ok()
    }
}

impl OwnedFolder {
    /// [`OwnedFolder::call`] for a thread outside the runtime's workers
    /// (a test's body, a tool's main thread): blocks until it ran.
    pub fn call_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Folder, &mut Chunks) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let call: Call = Box::new(move |folder, chunks| {
            let _ = tx.send(f(folder, chunks));
        });
        self.calls.send(call).ok()?;
        rx.recv().ok()
    }
}

/// Starts a task that owns `folder` and `chunks` and syncs them with the
/// peers the node links to it: for a program that does nothing else with
/// a folder (tools, tests). Returns the port to give the node, and the
/// handle to read and change the folder.
pub fn spawn_owner(folder: Folder, chunks: Chunks) -> (FolderPort, OwnedFolder) {
    let (tx, mut rx) = mpsc::channel::<(usize, FolderMsg)>(64);
    let (calls, mut calls_rx) = mpsc::unbounded_channel::<Call>();
    tokio::spawn(async move {
        let (mut folder, mut chunks, mut links) = (folder, chunks, Links::new());
        let (mut node_on, mut calls_on) = (true, true);
        while node_on || calls_on {
            tokio::select! {
                msg = rx.recv(), if node_on => match msg {
                    Some((_, msg)) => {
                        links.handle(msg, now_ms(), &mut folder, &mut chunks);
                    }
                    None => node_on = false,
                },
                call = calls_rx.recv(), if calls_on => match call {
                    Some(call) => call(&mut folder, &mut chunks),
                    None => calls_on = false,
                },
            }
            links.pump(&folder, &chunks);
        }
    });
    (FolderPort::new(tx, 0), OwnedFolder { calls })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
