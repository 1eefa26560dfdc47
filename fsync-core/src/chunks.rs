//! Content-defined chunks of binary files.
//!
//! Binary content is cut with FastCDC (boundaries depend on the bytes, so an
//! insert in the middle of a big file changes only the chunks around it) and
//! each chunk is named by its BLAKE3 hash. A version of a binary file is its
//! list of chunk references; peers fetch only the chunks they lack, and any
//! chunk received is checked against its name before it is used.

/// Smallest chunk, except the last of a file.
pub const MIN_CHUNK: u32 = 16 * 1024;
/// Typical chunk size.
pub const AVG_CHUNK: u32 = 64 * 1024;
/// Largest chunk; also the largest chunk a peer may send.
pub const MAX_CHUNK: u32 = 256 * 1024;

/// A chunk's name: the BLAKE3 hash of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHash(pub [u8; 32]);

impl ChunkHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ChunkHash(*blake3::hash(bytes).as_bytes())
    }
}

impl std::fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One chunk of a file: its name and length.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChunkRef {
    /// BLAKE3 of the bytes.
    pub hash: ChunkHash,
    /// Number of bytes.
    pub len: u32,
}

/// Cuts `data` into chunks; returns each reference with its bytes.
pub fn split(data: &[u8]) -> Vec<(ChunkRef, &[u8])> {
    if data.is_empty() {
        return Vec::new();
    }
    fastcdc::v2020::FastCDC::new(data, MIN_CHUNK as usize, AVG_CHUNK as usize, MAX_CHUNK as usize)
        .map(|c| {
            let bytes = &data[c.offset..c.offset + c.length];
            (ChunkRef { hash: ChunkHash::of(bytes), len: c.length as u32 }, bytes)
        })
        .collect()
}

/// [`split`] of a stream: a big file cut as it is read, never held whole.
/// Each chunk goes into `store` as it is cut. Returns the references and
/// the BLAKE3 of the whole content (what [`ChunkHash::of`] gives for it in
/// one piece). The boundaries are those [`split`] finds.
pub fn split_into(source: impl std::io::Read, store: &mut dyn ChunkStore) -> std::io::Result<(Vec<ChunkRef>, ChunkHash)> {
    let mut whole = blake3::Hasher::new();
    let mut refs = Vec::new();
    for c in fastcdc::v2020::StreamCDC::new(source, MIN_CHUNK as usize, AVG_CHUNK as usize, MAX_CHUNK as usize) {
        let c = c.map_err(std::io::Error::from)?;
        whole.update(&c.data);
        let r = ChunkRef { hash: ChunkHash::of(&c.data), len: c.length as u32 };
        store.put(r.hash, &c.data);
        store.spill();
        refs.push(r);
    }
    Ok((refs, ChunkHash(*whole.finalize().as_bytes())))
}

/// Where chunks are kept. The daemon's store implements it on disk; tests
/// and the simulation use [`Chunks`] without a source.
pub trait ChunkStore {
    /// The bytes of a chunk, if present.
    fn get(&self, hash: &ChunkHash) -> Option<Vec<u8>>;
    /// True when the chunk is present.
    fn has(&self, hash: &ChunkHash) -> bool;
    /// Keeps a chunk whose bytes were already checked against `hash`.
    fn put(&mut self, hash: ChunkHash, bytes: &[u8]);
    /// Lets chunks held in memory go to durable storage early, if there
    /// are many (see [`ChunkSink`]). Called by the owner of the store's
    /// writes only, between its own writes and garbage collections: a chunk
    /// written early is not referenced by any version yet.
    fn spill(&mut self) {}
}

/// Where chunks already made durable can be read back (the daemon's
/// store). Shared between threads: peers' sessions read through it.
pub trait ChunkSource: Send + Sync {
    /// The bytes of a stored chunk; `None` if absent or unreadable.
    fn read(&self, hash: &ChunkHash) -> Option<Vec<u8>>;
}

/// Where chunks not yet durable can be written early, without a sync (the
/// daemon's store): a big file's chunks then leave memory as it is read
/// ([`split_into`]). They become durable with the store's next sync,
/// before any change that needs them is saved; until then nothing refers
/// to them, so only the owner of the store's writes (which also collects
/// its garbage) may write them.
pub trait ChunkSink: Send + Sync {
    /// Writes the chunks; false if they could not be written (they stay
    /// in memory).
    fn write(&self, chunks: &[(ChunkHash, &[u8])]) -> bool;
}

/// Bytes of chunks not yet durable held in memory before they are written
/// early to the [`ChunkSink`], if there is one.
pub const FRESH_BYTES: usize = 32 << 20;

/// Bytes of stored chunks kept in memory after use (about one large file's
/// worth of recent chunks: a write-back and a peer's fetch of the same
/// version read each chunk twice).
pub const CACHE_BYTES: usize = 16 << 20;

/// The chunks a folder has: those not yet durable in memory, the rest read
/// from a [`ChunkSource`] through a small cache, so memory does not grow
/// with the binary history. Without a source (tests, the simulation) every
/// chunk stays in memory.
#[derive(Default)]
pub struct Chunks {
    /// Not yet marked stored: the only copy.
    fresh: std::collections::HashMap<ChunkHash, Vec<u8>>,
    /// Their bytes.
    fresh_bytes: usize,
    /// In the source.
    stored: std::collections::HashSet<ChunkHash>,
    source: Option<std::sync::Arc<dyn ChunkSource>>,
    sink: Option<std::sync::Arc<dyn ChunkSink>>,
    cache: std::sync::Mutex<Cache>,
}

/// Recently read stored chunks, oldest dropped first.
#[derive(Default)]
struct Cache {
    map: std::collections::HashMap<ChunkHash, std::sync::Arc<[u8]>>,
    order: std::collections::VecDeque<ChunkHash>,
    bytes: usize,
}

impl Cache {
    fn insert(&mut self, hash: ChunkHash, bytes: std::sync::Arc<[u8]>) {
        if bytes.len() > CACHE_BYTES || self.map.contains_key(&hash) {
            return;
        }
        self.bytes += bytes.len();
        self.map.insert(hash, bytes);
        self.order.push_back(hash);
        while self.bytes > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.map.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunks").field("fresh", &self.fresh.len()).field("stored", &self.stored.len()).finish()
    }
}

impl Chunks {
    /// Chunks backed by `source`, which holds `stored` already.
    pub fn backed(source: std::sync::Arc<dyn ChunkSource>, stored: std::collections::HashSet<ChunkHash>) -> Self {
        Chunks { stored, source: Some(source), ..Default::default() }
    }

    /// Chunks not yet durable are written to `sink` (readable back through
    /// the source) when [`ChunkStore::spill`] finds more than
    /// [`FRESH_BYTES`] of them.
    pub fn with_sink(mut self, sink: std::sync::Arc<dyn ChunkSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Chunks not yet made durable, to be written to the source's store.
    pub fn fresh(&self) -> impl Iterator<Item = (ChunkHash, &[u8])> {
        self.fresh.iter().map(|(h, b)| (*h, b.as_slice()))
    }

    /// Forgets stored chunks not in `keep` (the store dropped them: see
    /// `Folder::set_retention`). Chunks not yet stored stay.
    pub fn retain_stored(&mut self, keep: &std::collections::HashSet<ChunkHash>) {
        self.stored.retain(|h| keep.contains(h));
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.map.retain(|h, _| keep.contains(h));
        let map = &cache.map;
        let kept_order: std::collections::VecDeque<ChunkHash> =
            cache.order.iter().filter(|h| map.contains_key(h)).copied().collect();
        cache.bytes = cache.map.values().map(|b| b.len()).sum();
        cache.order = kept_order;
    }

    /// These chunks are durable in the source now: their bytes leave
    /// memory (the most recent stay in the cache). Without a source this
    /// does nothing, since there is nowhere to read them back from.
    pub fn mark_stored(&mut self, hashes: &[ChunkHash]) {
        if self.source.is_none() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for h in hashes {
            if let Some(bytes) = self.fresh.remove(h) {
                self.fresh_bytes -= bytes.len();
                self.stored.insert(*h);
                cache.insert(*h, bytes.into());
            }
        }
    }
}

impl ChunkStore for Chunks {
    fn get(&self, hash: &ChunkHash) -> Option<Vec<u8>> {
        if let Some(b) = self.fresh.get(hash) {
            return Some(b.clone());
        }
        if !self.stored.contains(hash) {
            return None;
        }
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = cache.map.get(hash) {
            return Some(b.to_vec());
        }
        let bytes = self.source.as_ref()?.read(hash)?;
        cache.insert(*hash, bytes.as_slice().into());
        Some(bytes)
    }
    fn has(&self, hash: &ChunkHash) -> bool {
        self.fresh.contains_key(hash) || self.stored.contains(hash)
    }
    fn put(&mut self, hash: ChunkHash, bytes: &[u8]) {
        if !self.has(&hash) {
            self.fresh.insert(hash, bytes.to_vec());
            self.fresh_bytes += bytes.len();
        }
    }
    /// Writes the fresh chunks to the sink once they hold more than
    /// [`FRESH_BYTES`]; those written are read back through the source
    /// from then on.
    fn spill(&mut self) {
        let (Some(sink), Some(_), true) = (&self.sink, &self.source, self.fresh_bytes > FRESH_BYTES) else {
            return;
        };
        let batch: Vec<(ChunkHash, &[u8])> = self.fresh.iter().map(|(h, b)| (*h, b.as_slice())).collect();
        if !sink.write(&batch) {
            return;
        }
        for (h, _) in self.fresh.drain() {
            self.stored.insert(h);
        }
        self.fresh_bytes = 0;
    }
}

/// True when every chunk of a content is here (a lookup each, no read):
/// whether it can be written out yet.
pub fn all_present(chunks: &[ChunkRef], store: &dyn ChunkStore) -> bool {
    chunks.iter().all(|c| store.has(&c.hash))
}

/// Writes a content to `out` from its chunks, one chunk at a time, so no
/// more than a chunk is held. `Ok(false)` when a chunk is missing, or its
/// bytes are not as long as its reference says (a peer described the
/// content wrongly: it cannot be the one described); what was written
/// before it is then not the content.
pub fn write_chunks(chunks: &[ChunkRef], store: &dyn ChunkStore, out: &mut dyn std::io::Write) -> std::io::Result<bool> {
    for c in chunks {
        match store.get(&c.hash) {
            Some(bytes) if bytes.len() == c.len as usize => out.write_all(&bytes)?,
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Reassembles a file from its chunks in memory; `None` if one is missing
/// or of the wrong length (see [`write_chunks`]).
pub fn assemble(chunks: &[ChunkRef], store: &dyn ChunkStore) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.len as usize).fold(0usize, usize::saturating_add).min(64 << 20));
    match write_chunks(chunks, store, &mut out) {
        Ok(true) => Some(out),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A reference that says a chunk is longer than its bytes (a lying
    /// peer) once made a read through the mount panic.
    #[test]
    fn a_chunk_shorter_than_its_reference_is_not_assembled() {
        let mut store = Chunks::default();
        let bytes = b"hello".to_vec();
        let hash = ChunkHash::of(&bytes);
        store.put(hash, &bytes);
        assert_eq!(assemble(&[ChunkRef { hash, len: 5 }], &store).as_deref(), Some(&b"hello"[..]));
        assert_eq!(assemble(&[ChunkRef { hash, len: 100 }], &store), None);
    }

    #[test]
    fn a_small_change_touches_few_chunks() {
        let a = pseudo_random(4 << 20, 1);
        let mut b = a.clone();
        b.splice(2 << 20..2 << 20, pseudo_random(4096, 2));
        let ca: std::collections::HashSet<_> = split(&a).iter().map(|(r, _)| r.hash).collect();
        let cb = split(&b);
        let new: usize = cb.iter().filter(|(r, _)| !ca.contains(&r.hash)).map(|(r, _)| r.len as usize).sum();
        assert!(new < 3 * MAX_CHUNK as usize, "{new} new bytes for a 4 KiB insert");
        let mut store = Chunks::default();
        for (r, bytes) in &cb {
            store.put(r.hash, bytes);
        }
        let refs: Vec<ChunkRef> = cb.iter().map(|(r, _)| *r).collect();
        assert_eq!(assemble(&refs, &store), Some(b));
    }

    /// A source that counts its reads.
    #[derive(Default)]
    struct Counted {
        map: std::sync::Mutex<std::collections::HashMap<ChunkHash, Vec<u8>>>,
        reads: std::sync::atomic::AtomicUsize,
    }

    impl ChunkSource for Counted {
        fn read(&self, hash: &ChunkHash) -> Option<Vec<u8>> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.map.lock().ok()?.get(hash).cloned()
        }
    }

    #[test]
    fn stored_chunks_leave_memory_and_are_read_back_through_a_bounded_cache() {
        let source = std::sync::Arc::new(Counted::default());
        let mut c = Chunks::backed(source.clone(), Default::default());
        // 48 MiB of chunks, three times the cache.
        let data = pseudo_random(48 << 20, 3);
        let parts = split(&data);
        for (r, b) in &parts {
            c.put(r.hash, b);
        }
        assert_eq!(c.fresh().map(|(_, b)| b.len()).sum::<usize>(), data.len());
        // "Written and synced" by the owner of the store.
        for (h, b) in c.fresh() {
            source.map.lock().expect("lock").insert(h, b.to_vec());
        }
        let hashes: Vec<ChunkHash> = parts.iter().map(|(r, _)| r.hash).collect();
        c.mark_stored(&hashes);
        assert_eq!(c.fresh().map(|(_, b)| b.len()).sum::<usize>(), 0);
        assert_eq!(c.fresh().count(), 0);
        let cached = c.cache.lock().expect("lock").bytes;
        assert!(cached <= CACHE_BYTES && cached > CACHE_BYTES / 2, "cache holds {cached} bytes");
        assert!(parts.iter().all(|(r, _)| c.has(&r.hash)));
        let refs: Vec<ChunkRef> = parts.iter().map(|(r, _)| *r).collect();
        assert_eq!(assemble(&refs, &c), Some(data.clone()), "read back through the source");
        assert!(source.reads.load(std::sync::atomic::Ordering::SeqCst) > 0);
        assert!(c.cache.lock().expect("lock").bytes <= CACHE_BYTES);
        // The most recent chunk is served from the cache.
        let before = source.reads.load(std::sync::atomic::Ordering::SeqCst);
        let last = parts.last().expect("chunks").0.hash;
        assert!(c.get(&last).is_some());
        assert_eq!(source.reads.load(std::sync::atomic::Ordering::SeqCst), before);
        // A chunk already stored is not taken in again.
        c.put(last, b"other bytes");
        assert_eq!(c.fresh().count(), 0);
    }

    /// A big file is cut as it is read: the same chunks as in one piece,
    /// and the hash of the whole.
    #[test]
    fn a_stream_is_cut_as_the_whole_is() {
        let data = pseudo_random(5 << 20, 4);
        let mut store = Chunks::default();
        let (refs, whole) = split_into(std::io::Cursor::new(&data), &mut store).expect("read");
        let at_once: Vec<ChunkRef> = split(&data).into_iter().map(|(r, _)| r).collect();
        assert_eq!(refs, at_once);
        assert_eq!(whole, ChunkHash::of(&data));
        assert_eq!(assemble(&refs, &store), Some(data));
    }

    /// Writes chunks into a [`Counted`] source, as the store does.
    struct Sink(std::sync::Arc<Counted>);

    impl ChunkSink for Sink {
        fn write(&self, chunks: &[(ChunkHash, &[u8])]) -> bool {
            let mut map = self.0.map.lock().expect("lock");
            for (h, b) in chunks {
                map.insert(*h, b.to_vec());
            }
            true
        }
    }

    /// Chunks not yet durable were all held in memory until the next save:
    /// a file bigger than memory could not be taken in. Past a bound they
    /// are written early and read back through the source.
    #[test]
    fn fresh_chunks_past_the_bound_go_to_the_sink() {
        let source = std::sync::Arc::new(Counted::default());
        let mut c = Chunks::backed(source.clone(), Default::default()).with_sink(std::sync::Arc::new(Sink(source.clone())));
        let data = pseudo_random(3 * FRESH_BYTES, 5);
        let (refs, _) = split_into(std::io::Cursor::new(&data), &mut c).expect("read");
        let held: usize = c.fresh().map(|(_, b)| b.len()).sum();
        assert!(held <= FRESH_BYTES, "{held} bytes held");
        assert!(source.map.lock().expect("lock").len() > refs.len() / 2);
        assert!(refs.iter().all(|r| c.has(&r.hash)));
        assert_eq!(assemble(&refs, &c), Some(data));
    }

    #[test]
    fn without_a_source_chunks_stay_in_memory() {
        let mut c = Chunks::default();
        let h = ChunkHash::of(b"abc");
        c.put(h, b"abc");
        c.mark_stored(&[h]);
        assert_eq!(c.get(&h), Some(b"abc".to_vec()));
        assert_eq!(c.fresh().count(), 1);
    }
}
