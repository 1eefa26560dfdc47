//! The node's durable store: fsync-core's [`Store`] on redb.
//!
//! Layout (redb tables; see `docs/store.md`):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"magic"`, `"format"` | `fsync-store`, format version (u64 LE) |
//! | `batches` | (folder, n) | one encoded change batch |
//! | `chunks` | BLAKE3 hash | chunk bytes |
//! | `peers` | (peer, folder) | encoded version vector |
//! | `state` | a name | small state, such as a folder's write intents |
//! | `index` | (folder, path) | one row of the folder's disk index |
//!
//! Group commit: appends commit without syncing (redb `Durability::None`);
//! [`Store::sync`] commits with `Durability::Immediate`, which makes every
//! earlier commit durable at once. So a burst of keystroke-sized changes
//! costs one disk sync, and nothing is acknowledged before that sync.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, RwLock};

use fsync_core::chunks::{ChunkHash, ChunkSink, ChunkSource};
use fsync_core::encoding::{Reader, Writer};
use fsync_core::folder::VersionVector;
use fsync_core::store::{Store, StoreError};
use fsync_core::wire::{get_version_vector, put_version_vector};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BATCHES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("batches");
const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("chunks");
const PEERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("peers");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const INDEX: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("index");

const MAGIC: &[u8] = b"fsync-store";
/// How long opening waits for another process to let go of the store.
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// The format this build writes and reads.
/// (2: the disk index as rows, which format 1 would not see.)
pub const FORMAT: u64 = 2;
/// redb's page cache (its default is 1 GiB, which a node's memory would
/// grow to as its history of binary files does).
const PAGE_CACHE: usize = 32 << 20;

/// The durable store of one node home.
pub struct RedbStore {
    /// `None` after an I/O failure: redb must then be closed and reopened,
    /// which the next write does (so sync resumes when space returns).
    db: Option<Arc<Database>>,
    /// The same database for [`RedbStore::chunk_source`] readers on other
    /// threads; emptied with `db`, so a reopen is not kept waiting.
    shared: Arc<RwLock<Option<Arc<Database>>>>,
    reopen: Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>,
}

/// Reads chunks from the store while the daemon's loop owns it (see
/// [`fsync_core::chunks::Chunks`]).
struct RedbChunks {
    db: Arc<RwLock<Option<Arc<Database>>>>,
}

impl ChunkSource for RedbChunks {
    fn read(&self, hash: &ChunkHash) -> Option<Vec<u8>> {
        let db = self.db.read().ok()?.clone()?;
        let r = (|| -> Result<Option<Vec<u8>>, redb::Error> {
            let txn = db.begin_read()?;
            let t = txn.open_table(CHUNKS)?;
            Ok(t.get(hash.0.as_slice())?.map(|v| v.value().to_vec()))
        })();
        r.unwrap_or_else(|err| {
            tracing::warn!("cannot read chunk {hash:?} from the store: {err}");
            None
        })
    }
}

impl ChunkSink for RedbChunks {
    /// One commit without a sync: durable with the store's next sync.
    fn write(&self, chunks: &[(ChunkHash, &[u8])]) -> bool {
        let Some(db) = self.db.read().ok().and_then(|d| d.clone()) else {
            return false;
        };
        let r = (|| -> Result<(), redb::Error> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::None)?;
            {
                let mut t = txn.open_table(CHUNKS)?;
                for (h, b) in chunks {
                    t.insert(h.0.as_slice(), *b)?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        r.map_err(|err| tracing::warn!("cannot write chunks to the store early: {err}")).is_ok()
    }
}

fn io(what: &str) -> impl Fn(redb::Error) -> StoreError + '_ {
    move |e| StoreError::Io(format!("{what}: {e}"))
}

fn e<E: Into<redb::Error>>(what: &str) -> impl Fn(E) -> StoreError + '_ {
    move |err| io(what)(err.into())
}

impl RedbStore {
    /// Opens (or creates) the store in file `path`.
    ///
    /// A command that reads the store while no daemon runs (`fsync status`,
    /// `log`, `cat`) holds it for a moment: opening waits up to a few
    /// seconds for it rather than fail.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let path = path.to_owned();
        Self::with(Box::new(move || {
            let start = std::time::Instant::now();
            loop {
                match Database::builder().set_cache_size(PAGE_CACHE).create(&path) {
                    Err(redb::DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < OPEN_WAIT => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                        return Err(StoreError::Io(format!("{} is in use by another fsync process", path.display())))
                    }
                    r => return r.map_err(e("opening the store")),
                }
            }
        }))
    }

    /// Opens a store on a backend made by `backend` (called again to
    /// reopen after an I/O failure; tests use one that can crash or fail).
    pub fn open_backend<B: StorageBackend>(backend: impl Fn() -> B + Send + Sync + 'static) -> Result<RedbStore, StoreError> {
        Self::with(Box::new(move || {
            Database::builder().set_cache_size(PAGE_CACHE).create_with_backend(backend()).map_err(e("opening the store"))
        }))
    }

    fn with(reopen: Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>) -> Result<RedbStore, StoreError> {
        let db = Arc::new(Self::init(reopen()?)?);
        Ok(RedbStore { db: Some(db.clone()), shared: Arc::new(RwLock::new(Some(db))), reopen })
    }

    /// Sets the database (or none, after a failure) for this and the
    /// chunk readers.
    fn set_db(&mut self, db: Option<Arc<Database>>) {
        if let Ok(mut s) = self.shared.write() {
            *s = db.clone();
        }
        self.db = db;
    }

    /// A reader of this store's chunks for other threads.
    pub fn chunk_source(&self) -> Arc<dyn ChunkSource> {
        Arc::new(RedbChunks { db: self.shared.clone() })
    }

    /// A writer of chunks ahead of the next sync (see [`ChunkSink`]).
    pub fn chunk_sink(&self) -> Arc<dyn ChunkSink> {
        Arc::new(RedbChunks { db: self.shared.clone() })
    }

    /// The hashes of every stored chunk.
    pub fn chunk_hashes(&self) -> Result<HashSet<ChunkHash>, StoreError> {
        let txn = self.db()?.begin_read().map_err(e("listing chunks"))?;
        let t = txn.open_table(CHUNKS).map_err(e("listing chunks"))?;
        let mut out = HashSet::new();
        for row in t.iter().map_err(e("listing chunks"))? {
            let (k, _) = row.map_err(e("listing chunks"))?;
            if let Ok(h) = <[u8; 32]>::try_from(k.value()) {
                out.insert(ChunkHash(h));
            }
        }
        Ok(out)
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_deref().ok_or_else(|| StoreError::Io("the store failed earlier and reopens on the next write".into()))
    }

    fn init(db: Database) -> Result<Database, StoreError> {
        let txn = db.begin_write().map_err(e("opening the store"))?;
        {
            let mut meta = txn.open_table(META).map_err(e("opening the store"))?;
            let magic = meta.get("magic").map_err(e("opening the store"))?.map(|v| v.value().to_vec());
            match magic {
                None => {
                    meta.insert("magic", MAGIC).map_err(e("opening the store"))?;
                    meta.insert("format", FORMAT.to_le_bytes().as_slice()).map_err(e("opening the store"))?;
                }
                Some(m) if m == MAGIC => {
                    let v = meta.get("format").map_err(e("opening the store"))?.map(|v| v.value().to_vec()).unwrap_or_default();
                    let format = u64::from_le_bytes(v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
                    if format > FORMAT {
                        return Err(StoreError::Io(format!(
                            "this store has format {format}, written by a newer fsync; this fsync reads format {FORMAT}: upgrade fsync"
                        )));
                    }
                    // Older: what this build writes, an older one would
                    // misread, so it refuses from now on.
                    if format < FORMAT {
                        meta.insert("format", FORMAT.to_le_bytes().as_slice()).map_err(e("opening the store"))?;
                    }
                }
                Some(_) => return Err(StoreError::Io("not an fsync store (bad magic)".into())),
            }
            txn.open_table(BATCHES).map_err(e("opening the store"))?;
            txn.open_table(CHUNKS).map_err(e("opening the store"))?;
            txn.open_table(PEERS).map_err(e("opening the store"))?;
            txn.open_table(STATE).map_err(e("opening the store"))?;
            txn.open_table(INDEX).map_err(e("opening the store"))?;
        }
        txn.commit().map_err(e("opening the store"))?;
        Ok(db)
    }

    /// Runs a write transaction; `durable` commits with a disk sync. After
    /// a failure the database is dropped and reopened by the next write.
    fn write<T>(
        &mut self,
        what: &str,
        durable: bool,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        if self.db.is_none() {
            let db = Self::init((self.reopen)()?)?;
            self.set_db(Some(Arc::new(db)));
        }
        let result = (|| {
            let db = self.db()?;
            let mut txn = db.begin_write().map_err(e(what))?;
            if !durable {
                txn.set_durability(Durability::None).map_err(|err| StoreError::Io(format!("{what}: {err}")))?;
            }
            let r = f(&txn).map_err(io(what))?;
            txn.commit().map_err(e(what))?;
            Ok(r)
        })();
        if result.is_err() {
            self.set_db(None);
        }
        result
    }
}

impl RedbStore {
    /// Stores changed rows of `folder`'s disk index (`None`: removed) and
    /// its write intents if given, without a disk sync (see
    /// [`Store::sync`]).
    pub fn put_index(
        &mut self,
        folder: &str,
        rows: &[(String, Option<Vec<u8>>)],
        intents: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.write("saving the disk index", false, |txn| {
            let mut t = txn.open_table(INDEX)?;
            for (path, row) in rows {
                match row {
                    Some(r) => t.insert((folder, path.as_str()), r.as_slice())?,
                    None => t.remove((folder, path.as_str()))?,
                };
            }
            let mut state = txn.open_table(STATE)?;
            if let Some(intents) = intents {
                state.insert(format!("index-intents/{folder}").as_str(), intents)?;
            }
            // The whole-index form of format 1, replaced by the rows.
            state.remove(format!("index/{folder}").as_str())?;
            Ok(())
        })
    }

    /// `folder`'s disk index as stored (see [`StoredIndex`]).
    pub fn index(&self, folder: &str) -> Result<StoredIndex, StoreError> {
        let what = "reading the disk index";
        if let Some(whole) = self.get_state(&format!("index/{folder}"))? {
            return Ok(StoredIndex::Whole(whole));
        }
        let txn = self.db()?.begin_read().map_err(e(what))?;
        let t = txn.open_table(INDEX).map_err(e(what))?;
        let mut rows = Vec::new();
        for r in t.range((folder, "")..).map_err(e(what))? {
            let (k, v) = r.map_err(e(what))?;
            let (f, path) = k.value();
            if f != folder {
                break;
            }
            rows.push((path.to_owned(), v.value().to_vec()));
        }
        drop(t);
        drop(txn);
        let intents = self.get_state(&format!("index-intents/{folder}"))?;
        Ok(StoredIndex::Rows { rows, intents })
    }

    /// The folders that have change batches here.
    pub fn folders(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db()?.begin_read().map_err(e("listing folders"))?;
        let t = txn.open_table(BATCHES).map_err(e("listing folders"))?;
        let mut out: Vec<String> = Vec::new();
        let mut next = t.first().map_err(e("listing folders"))?.map(|(k, _)| k.value().0.to_owned());
        while let Some(name) = next {
            // Skip past this folder's batches.
            next = t
                .range((name.as_str(), u64::MAX)..)
                .map_err(e("listing folders"))?
                .map(|r| r.map(|(k, _)| k.value().0.to_owned()))
                .find(|r| r.as_ref().map_or(true, |n| *n != name))
                .transpose()
                .map_err(e("listing folders"))?;
            out.push(name);
        }
        Ok(out)
    }

    /// Removes every chunk not in `keep` (the chunks some kept version of
    /// some folder refers to) and syncs; returns how many chunks and bytes
    /// were freed.
    pub fn collect_garbage(&mut self, keep: &std::collections::HashSet<ChunkHash>) -> Result<(usize, u64), StoreError> {
        let doomed: Vec<(Vec<u8>, u64)> = {
            let txn = self.db()?.begin_read().map_err(e("collecting garbage"))?;
            let t = txn.open_table(CHUNKS).map_err(e("collecting garbage"))?;
            let mut out = Vec::new();
            for row in t.iter().map_err(e("collecting garbage"))? {
                let (k, v) = row.map_err(e("collecting garbage"))?;
                let hash: Option<[u8; 32]> = k.value().try_into().ok();
                if hash.is_none_or(|h| !keep.contains(&ChunkHash(h))) {
                    out.push((k.value().to_vec(), v.value().len() as u64));
                }
            }
            out
        };
        if doomed.is_empty() {
            // Still a sync, as documented: callers count on it.
            self.sync()?;
            return Ok((0, 0));
        }
        self.write("collecting garbage", true, |txn| {
            let mut t = txn.open_table(CHUNKS)?;
            for (k, _) in &doomed {
                t.remove(k.as_slice())?;
            }
            Ok(())
        })?;
        Ok((doomed.len(), doomed.iter().map(|(_, n)| n).sum()))
    }
}

fn encode_vv(vv: &VersionVector) -> Vec<u8> {
    let mut w = Writer::new();
    put_version_vector(&mut w, vv);
    w.into_bytes()
}

fn decode_vv(b: &[u8]) -> Result<VersionVector, StoreError> {
    let mut r = Reader::new(b);
    let vv = get_version_vector(&mut r)?;
    r.finish()?;
    Ok(vv)
}

impl Store for RedbStore {
    fn append(&mut self, folder: &str, batch: &[u8]) -> Result<(), StoreError> {
        self.write("appending changes", false, |txn| {
            let mut t = txn.open_table(BATCHES)?;
            let next = t.range((folder, 0)..=(folder, u64::MAX))?.next_back().transpose()?.map_or(0, |(k, _)| k.value().1 + 1);
            t.insert((folder, next), batch)?;
            Ok(())
        })
    }

    fn batches(&self, folder: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.db()?.begin_read().map_err(e("reading changes"))?;
        let t = txn.open_table(BATCHES).map_err(e("reading changes"))?;
        let mut out = Vec::new();
        for row in t.range((folder, 0)..=(folder, u64::MAX)).map_err(e("reading changes"))? {
            let (_, v) = row.map_err(e("reading changes"))?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    fn put_chunks(&mut self, chunks: &[(ChunkHash, &[u8])]) -> Result<(), StoreError> {
        self.write("storing chunks", false, |txn| {
            let mut t = txn.open_table(CHUNKS)?;
            for (h, b) in chunks {
                t.insert(h.0.as_slice(), *b)?;
            }
            Ok(())
        })
    }

    fn put_chunk(&mut self, hash: ChunkHash, bytes: &[u8]) -> Result<(), StoreError> {
        self.write("storing a chunk", false, |txn| {
            txn.open_table(CHUNKS)?.insert(hash.0.as_slice(), bytes)?;
            Ok(())
        })
    }

    fn get_chunk(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db()?.begin_read().map_err(e("reading a chunk"))?;
        let t = txn.open_table(CHUNKS).map_err(e("reading a chunk"))?;
        Ok(t.get(hash.0.as_slice()).map_err(e("reading a chunk"))?.map(|v| v.value().to_vec()))
    }

    fn set_peer_version(&mut self, peer: &str, folder: &str, vv: &VersionVector) -> Result<(), StoreError> {
        let bytes = encode_vv(vv);
        self.write("recording a peer's version", false, |txn| {
            txn.open_table(PEERS)?.insert((peer, folder), bytes.as_slice())?;
            Ok(())
        })
    }

    fn peer_version(&self, peer: &str, folder: &str) -> Result<Option<VersionVector>, StoreError> {
        let txn = self.db()?.begin_read().map_err(e("reading a peer's version"))?;
        let t = txn.open_table(PEERS).map_err(e("reading a peer's version"))?;
        match t.get((peer, folder)).map_err(e("reading a peer's version"))? {
            Some(v) => Ok(Some(decode_vv(v.value())?)),
            None => Ok(None),
        }
    }

    fn put_state(&mut self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.write("saving state", false, |txn| {
            txn.open_table(STATE)?.insert(key, bytes)?;
            Ok(())
        })
    }

    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db()?.begin_read().map_err(e("reading state"))?;
        let t = txn.open_table(STATE).map_err(e("reading state"))?;
        Ok(t.get(key).map_err(e("reading state"))?.map(|v| v.value().to_vec()))
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // An immediate commit makes every earlier commit durable.
        self.write("syncing", true, |_| Ok(()))
    }
}

/// A folder's disk index as the store holds it.
pub enum StoredIndex {
    /// One row per path, and the write intents.
    Rows {
        /// (path, row) in path order.
        rows: Vec<(String, Vec<u8>)>,
        /// The write intents of new files.
        intents: Option<Vec<u8>>,
    },
    /// The whole index in one value (stores of format 1).
    Whole(Vec<u8>),
}

#[cfg(test)]
mod tests;
