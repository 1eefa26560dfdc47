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

/// Where chunks are kept. The daemon's store implements it on disk; tests
/// and the simulation use [`MemoryChunks`].
pub trait ChunkStore {
    /// The bytes of a chunk, if present.
    fn get(&self, hash: &ChunkHash) -> Option<Vec<u8>>;
    /// True when the chunk is present.
    fn has(&self, hash: &ChunkHash) -> bool;
    /// Keeps a chunk whose bytes were already checked against `hash`.
    fn put(&mut self, hash: ChunkHash, bytes: &[u8]);
}

/// Chunks in memory.
#[derive(Default, Debug, Clone)]
pub struct MemoryChunks {
    map: std::collections::HashMap<ChunkHash, Vec<u8>>,
}

impl MemoryChunks {
    /// A chunk's bytes, borrowed (readers that copy only a range).
    pub fn get_ref(&self, hash: &ChunkHash) -> Option<&[u8]> {
        self.map.get(hash).map(Vec::as_slice)
    }
    /// Number of distinct chunks held.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl ChunkStore for MemoryChunks {
    fn get(&self, hash: &ChunkHash) -> Option<Vec<u8>> {
        self.map.get(hash).cloned()
    }
    fn has(&self, hash: &ChunkHash) -> bool {
        self.map.contains_key(hash)
    }
    fn put(&mut self, hash: ChunkHash, bytes: &[u8]) {
        self.map.entry(hash).or_insert_with(|| bytes.to_vec());
    }
}

/// Reassembles a file from its chunks; `None` if one is missing.
pub fn assemble(chunks: &[ChunkRef], store: &dyn ChunkStore) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.len as usize).sum());
    for c in chunks {
        out.extend_from_slice(&store.get(&c.hash)?);
    }
    Some(out)
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

    #[test]
    fn a_small_change_touches_few_chunks() {
        let a = pseudo_random(4 << 20, 1);
        let mut b = a.clone();
        b.splice(2 << 20..2 << 20, pseudo_random(4096, 2));
        let ca: std::collections::HashSet<_> = split(&a).iter().map(|(r, _)| r.hash).collect();
        let cb = split(&b);
        let new: usize = cb.iter().filter(|(r, _)| !ca.contains(&r.hash)).map(|(r, _)| r.len as usize).sum();
        assert!(new < 3 * MAX_CHUNK as usize, "{new} new bytes for a 4 KiB insert");
        let mut store = MemoryChunks::default();
        for (r, bytes) in &cb {
            store.put(r.hash, bytes);
        }
        let refs: Vec<ChunkRef> = cb.iter().map(|(r, _)| *r).collect();
        assert_eq!(assemble(&refs, &store), Some(b));
    }
}
