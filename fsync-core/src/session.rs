//! The sync session with one peer for one folder: a state machine with no
//! I/O, shaped like `quinn-proto`.
//!
//! Call order: [`Session::start`] once; then, whenever bytes arrive,
//! [`Session::handle_message`]; after that or after any local change to the
//! folder, drain [`Session::poll_transmit`] (bytes to send, in order, on a
//! reliable ordered stream), [`Session::poll_bulk`] (chunk replies, each on
//! any stream, in any order: big transfers must not hold up small edits)
//! and [`Session::poll_event`].
//!
//! How it converges: each side opens with a summary (its version vector);
//! each then sends exactly the events the other lacks, in the order of its
//! own log, which respects causality. Afterwards every event added to the
//! folder, locally or from another peer, goes out the same way, so changes
//! travel through any connected graph of peers. Duplicates are skipped by
//! sequence number. If something is missing (a lost or reordered message),
//! the receiver sends a fresh summary and the sender starts over from it.
//!
//! Memory per peer is bounded: changes are read from the folder's log
//! lazily, in batches of at most [`MAX_BATCH_OPS`] operations; chunk
//! requests are held as hashes (at most [`MAX_CHUNK_REQUESTS`]).

use std::collections::{HashSet, VecDeque};

use crate::chunks::{ChunkHash, ChunkStore};
use crate::encoding::DecodeError;
use crate::folder::{ApplyError, EntryId, Folder, Meta, VersionVector};
use crate::text::ExportedKind;
use crate::wire::Message;

/// Unit operations per changes message, at most (about).
pub const MAX_BATCH_OPS: usize = 64 * 1024;
/// Chunk requests from a peer held at once; more are refused.
pub const MAX_CHUNK_REQUESTS: usize = 1 << 20;
/// Chunks asked for in one message.
const WANT_BATCH: usize = 1024;

/// What the session reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Entries changed by the peer's events: write them out.
    Changed(Vec<EntryId>),
    /// A chunk arrived and was stored.
    ChunkStored(ChunkHash),
    /// The peer does not have a chunk we asked for.
    ChunkUnavailable(ChunkHash),
}

/// Why a message from the peer was refused. The session stays usable; the
/// transport decides whether to drop the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Not a valid message.
    #[error("malformed message: {0}")]
    Decode(DecodeError),
    /// Events that cannot be applied (bad metadata, unknown parents).
    #[error("refused changes: {0}")]
    Apply(ApplyError),
    /// A chunk whose bytes do not match its hash.
    #[error("chunk {0:?} does not match its hash")]
    BadChunk(ChunkHash),
    /// A chunk nobody asked for.
    #[error("unrequested chunk {0:?}")]
    UnrequestedChunk(ChunkHash),
    /// Too many outstanding chunk requests.
    #[error("too many chunk requests")]
    TooManyRequests,
}

// The cause is part of the message, so it is not also the error's source:
// a printed chain of causes would say it twice.
impl From<DecodeError> for SessionError {
    fn from(e: DecodeError) -> Self {
        SessionError::Decode(e)
    }
}

/// Counters for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages sent.
    pub sent_messages: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Unit operations sent.
    pub sent_ops: u64,
    /// Messages received.
    pub received_messages: u64,
    /// Unit operations received (duplicates included).
    pub received_ops: u64,
    /// Summaries sent after a gap.
    pub resyncs: u64,
}

/// One peer, one folder.
#[derive(Debug, Default)]
pub struct Session {
    /// What the peer has, as far as we know; `None` before its summary.
    peer_vv: Option<VersionVector>,
    /// Our log position up to which everything the peer lacked was sent.
    log_pos: usize,
    /// Control messages to send first.
    outbox: VecDeque<Message>,
    /// Chunks the peer asked for, to send lazily.
    serve: VecDeque<ChunkHash>,
    /// Chunks we asked this peer for and still wait for.
    wanted: HashSet<ChunkHash>,
    /// Every chunk ever asked of this peer (bounded by what the folder
    /// references).
    asked: HashSet<ChunkHash>,
    /// Chunks to ask for, not yet asked, in order (see [`ToWant`]).
    to_want: ToWant,
    events: VecDeque<Event>,
    last_heard: u64,
    stats: Stats,
}

/// Chunks to ask for, in the order they were found: a queue, and a set
/// that says what is still to ask (a chunk that arrived meanwhile leaves
/// the set, and the queue skips it). Every step costs the same whatever
/// the number of chunks: a file of many chunks is not quadratic.
#[derive(Debug, Default)]
struct ToWant {
    queue: VecDeque<ChunkHash>,
    set: HashSet<ChunkHash>,
}

impl ToWant {
    fn of(hashes: Vec<ChunkHash>) -> ToWant {
        let set = hashes.iter().copied().collect();
        ToWant { queue: hashes.into(), set }
    }

    /// Adds a chunk, unless it is to be asked already.
    fn push(&mut self, h: ChunkHash) {
        if self.set.insert(h) {
            self.queue.push_back(h);
        }
    }

    /// The next (at most) `n` chunks to ask for.
    fn take(&mut self, n: usize) -> Vec<ChunkHash> {
        let mut out = Vec::new();
        while out.len() < n {
            let Some(h) = self.queue.pop_front() else { break };
            if self.set.remove(&h) {
                out.push(h);
            }
        }
        out
    }
}

impl Session {
    /// A new session; nothing is sent until [`Session::start`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the session: sends our summary, and asks for every chunk the
    /// folder references but lacks. A session that ended (a dropped or
    /// replaced connection) may have left chunks unfetched whose changes
    /// already arrived; nothing else would ask for them again before the
    /// next resync.
    pub fn start(&mut self, folder: &Folder, chunks: &dyn ChunkStore) {
        let mut missing: Vec<ChunkHash> = folder.referenced_chunks().into_iter().filter(|h| !chunks.has(h)).collect();
        missing.sort();
        self.to_want = ToWant::of(missing);
        self.outbox.push_back(Message::Summary(folder.version_vector().clone()));
    }

    /// Sends a fresh summary, asking the peer to fill any gap, and asks
    /// again for every chunk the folder references that is still missing
    /// (anti-entropy; the daemon calls it now and then).
    pub fn resync(&mut self, folder: &Folder, chunks: &dyn ChunkStore) {
        self.stats.resyncs += 1;
        // Requests may have been lost, or the peer lacked the chunk then.
        let mut missing: HashSet<ChunkHash> = self.wanted.drain().collect();
        missing.extend(std::mem::take(&mut self.to_want).set);
        missing.extend(folder.referenced_chunks());
        let mut missing: Vec<ChunkHash> = missing.into_iter().filter(|h| !chunks.has(h)).collect();
        missing.sort();
        self.to_want = ToWant::of(missing);
        self.outbox.push_back(Message::Summary(folder.version_vector().clone()));
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// When the peer was last heard from (the `now` of the last message).
    pub fn last_heard(&self) -> u64 {
        self.last_heard
    }

    /// How many of our events the peer still lacks, as far as we know
    /// (`None` before its summary).
    pub fn pending_ops(&self, folder: &Folder) -> Option<u64> {
        let peer = self.peer_vv.as_ref()?;
        Some(folder.version_vector().iter().map(|(a, &n)| n.saturating_sub(peer.get(a).copied().unwrap_or(0))).sum())
    }

    /// Chunks asked for and not yet received.
    pub fn chunks_in_flight(&self) -> usize {
        self.wanted.len() + self.to_want.set.len()
    }

    /// Takes one message from the peer.
    pub fn handle_message(
        &mut self,
        now: u64,
        bytes: &[u8],
        folder: &mut Folder,
        chunks: &mut dyn ChunkStore,
    ) -> Result<(), SessionError> {
        self.stats.received_messages += 1;
        self.last_heard = now;
        match Message::decode(bytes)? {
            Message::Summary(vv) => {
                // Start over from what the peer says it has.
                self.peer_vv = Some(vv);
                self.log_pos = 0;
            }
            Message::Changes(c) => {
                self.stats.received_ops += c.runs.iter().map(|(_, r)| r.len() as u64).sum::<u64>();
                // The peer has what it sent us.
                let peer = self.peer_vv.get_or_insert_with(VersionVector::new);
                for (_, r) in &c.runs {
                    let end = r.id.seq + r.len() as u64;
                    let e = peer.entry(r.id.agent).or_insert(0);
                    *e = (*e).max(end);
                }
                let (touched, result) = folder.apply_changes(&c);
                self.want_chunks_of(&c, folder, chunks);
                if !touched.is_empty() {
                    self.events.push_back(Event::Changed(touched));
                }
                match result {
                    Ok(()) => {}
                    // Something it depends on was lost or reordered: ask for
                    // everything from our version vector on.
                    Err(ApplyError::Gap { .. })
                    | Err(ApplyError::UnknownEntry(_))
                    | Err(ApplyError::Op(crate::text::RemoteOpError::UnknownParent(_))) => self.resync(folder, chunks),
                    Err(e) => return Err(SessionError::Apply(e)),
                }
            }
            Message::WantChunks(hs) => {
                if self.serve.len() + hs.len() > MAX_CHUNK_REQUESTS {
                    return Err(SessionError::TooManyRequests);
                }
                self.serve.extend(hs);
            }
            Message::Chunk(h, bytes) => {
                // Late and duplicated replies are fine; chunks never asked
                // for are not.
                if !self.asked.contains(&h) {
                    return Err(SessionError::UnrequestedChunk(h));
                }
                if ChunkHash::of(&bytes) != h {
                    return Err(SessionError::BadChunk(h));
                }
                self.wanted.remove(&h);
                self.to_want.set.remove(&h);
                if !chunks.has(&h) {
                    chunks.put(h, &bytes);
                    self.events.push_back(Event::ChunkStored(h));
                }
            }
            Message::NoChunk(h) => {
                if self.wanted.remove(&h) {
                    self.events.push_back(Event::ChunkUnavailable(h));
                }
            }
        }
        Ok(())
    }

    /// Asks for the chunks of binary versions in `c` that we lack and keep
    /// (see [`Folder::set_retention`]: an old version a peer sends is not
    /// fetched only to be dropped).
    fn want_chunks_of(&mut self, c: &crate::folder::Changes, folder: &Folder, chunks: &dyn ChunkStore) {
        let mut kept: std::collections::HashMap<crate::folder::EntryId, HashSet<ChunkHash>> = Default::default();
        for (entry, r) in &c.runs {
            if let ExportedKind::Marker(m) = &r.kind {
                if let Ok(Meta::Binary { chunks: refs, .. }) = Meta::decode(m) {
                    let keep = kept.entry(*entry).or_insert_with(|| folder.kept_chunks_of(*entry));
                    for cr in refs {
                        if keep.contains(&cr.hash) && !chunks.has(&cr.hash) && !self.wanted.contains(&cr.hash) {
                            self.to_want.push(cr.hash);
                        }
                    }
                }
            }
        }
    }

    /// Asks this peer for a chunk (for example one another peer lacked).
    pub fn want_chunk(&mut self, h: ChunkHash) {
        if !self.wanted.contains(&h) {
            self.to_want.push(h);
        }
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self, folder: &Folder) -> Option<Vec<u8>> {
        let msg = self.next_message(folder)?;
        let bytes = msg.encode();
        self.stats.sent_messages += 1;
        self.stats.sent_bytes += bytes.len() as u64;
        Some(bytes)
    }

    fn next_message(&mut self, folder: &Folder) -> Option<Message> {
        if let Some(m) = self.outbox.pop_front() {
            return Some(m);
        }
        if let Some(peer) = &mut self.peer_vv {
            // (The last record may have grown: `changes_since` looks again.)
            if self.log_pos <= folder.log_len() {
                let (c, pos) = folder.changes_for_peer(peer, self.log_pos, MAX_BATCH_OPS);
                self.log_pos = pos;
                if !c.runs.is_empty() {
                    for (_, r) in &c.runs {
                        let e = peer.entry(r.id.agent).or_insert(0);
                        *e = (*e).max(r.id.seq + r.len() as u64);
                        self.stats.sent_ops += r.len() as u64;
                    }
                    return Some(Message::Changes(c));
                }
            }
        }
        let batch = self.to_want.take(WANT_BATCH);
        if !batch.is_empty() {
            self.wanted.extend(batch.iter().copied());
            self.asked.extend(batch.iter().copied());
            return Some(Message::WantChunks(batch));
        }
        None
    }

    /// The next chunk reply to send, if any. Chunks are read from the store
    /// only here, one at a time, so the caller decides how many are in
    /// flight.
    pub fn poll_bulk(&mut self, chunks: &dyn ChunkStore) -> Option<Vec<u8>> {
        let h = self.serve.pop_front()?;
        let msg = match chunks.get(&h) {
            Some(b) => Message::Chunk(h, b),
            None => Message::NoChunk(h),
        };
        let bytes = msg.encode();
        self.stats.sent_messages += 1;
        self.stats.sent_bytes += bytes.len() as u64;
        Some(bytes)
    }

    /// Chunk replies waiting to be sent.
    pub fn bulk_pending(&self) -> usize {
        self.serve.len()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
