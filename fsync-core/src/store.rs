//! Persistence behind a narrow trait.
//!
//! The core never touches a disk: a node's store implements [`Store`] (the
//! durable one is its own crate; [`MemoryStore`] serves tests and the
//! simulation, and can be told to fail). A folder is saved as an
//! append-only sequence of encoded change batches, in log order, so reload
//! is replay and a crash between batches loses at most the batch not yet
//! synced; anything acknowledged to a peer must have been synced first.

use std::collections::BTreeMap;

use crate::chunks::{ChunkHash, ChunkStore};
use crate::encoding::DecodeError;
use crate::folder::{ApplyError, Changes, Folder, VersionVector};
use crate::ids::AgentId;
use crate::wire::Message;

/// Why the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O failure (disk full, permission, ...), with what it was doing.
    #[error("store I/O failed while {0}")]
    Io(String),
    /// Stored bytes that do not decode.
    #[error("corrupt store: {0}")]
    Corrupt(DecodeError),
    /// Stored changes that do not apply.
    #[error("inconsistent store: {0}")]
    Inconsistent(ApplyError),
}

// The cause is part of each message, so it is not also the error's
// source: a printed chain of causes would say it twice.
impl From<DecodeError> for StoreError {
    fn from(e: DecodeError) -> Self {
        StoreError::Corrupt(e)
    }
}

impl From<ApplyError> for StoreError {
    fn from(e: ApplyError) -> Self {
        StoreError::Inconsistent(e)
    }
}

/// What a node keeps. Writes may be buffered until [`Store::sync`], which
/// makes everything before it durable (the group commit point).
pub trait Store {
    /// Appends one batch of encoded changes to a folder's history.
    fn append(&mut self, folder: &str, batch: &[u8]) -> Result<(), StoreError>;
    /// Every batch of a folder, in the order appended.
    fn batches(&self, folder: &str) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Keeps a chunk (already checked against its hash).
    fn put_chunk(&mut self, hash: ChunkHash, bytes: &[u8]) -> Result<(), StoreError>;
    /// Keeps many chunks at once (one transaction where the engine has
    /// them: a big file is thousands of chunks).
    fn put_chunks(&mut self, chunks: &[(ChunkHash, &[u8])]) -> Result<(), StoreError> {
        chunks.iter().try_for_each(|(h, b)| self.put_chunk(*h, b))
    }
    /// A chunk's bytes.
    fn get_chunk(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, StoreError>;
    /// What a peer is known to have of a folder.
    fn set_peer_version(&mut self, peer: &str, folder: &str, vv: &VersionVector) -> Result<(), StoreError>;
    /// See [`Store::set_peer_version`].
    fn peer_version(&self, peer: &str, folder: &str) -> Result<Option<VersionVector>, StoreError>;
    /// Keeps a small piece of state under `key` (for example a folder's
    /// disk index), replacing what was there.
    fn put_state(&mut self, key: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// See [`Store::put_state`].
    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> Result<(), StoreError>;
}

/// Remembers how much of a folder's log is saved and appends the rest.
#[derive(Debug, Default, Clone)]
pub struct Saver {
    saved_vv: VersionVector,
    log_pos: usize,
}

impl Saver {
    /// For a folder just loaded from the store.
    pub fn loaded(folder: &Folder) -> Self {
        Saver { saved_vv: folder.version_vector().clone(), log_pos: folder.log_len() }
    }

    /// What has been saved (after the caller's sync, what is durable).
    pub fn saved(&self) -> &VersionVector {
        &self.saved_vv
    }

    /// Appends every event not yet saved, in batches of a bounded size;
    /// does not sync. Returns whether anything was written.
    pub fn save(&mut self, name: &str, folder: &Folder, store: &mut dyn Store) -> Result<bool, StoreError> {
        let mut wrote = false;
        while self.append_unsaved(name, folder, store)?.is_some() {
            wrote = true;
        }
        Ok(wrote)
    }

    /// Like [`Saver::save`], and adds to `chunks` every chunk the saved
    /// events refer to (what must be stored with them), so a caller never
    /// scans the whole history for that.
    pub fn save_collecting(
        &mut self,
        name: &str,
        folder: &Folder,
        store: &mut dyn Store,
        chunks: &mut std::collections::HashSet<crate::chunks::ChunkHash>,
    ) -> Result<bool, StoreError> {
        let mut wrote = false;
        while let Some(changes) = self.append_unsaved(name, folder, store)? {
            wrote = true;
            for (_, r) in &changes.runs {
                if let crate::text::ExportedKind::Marker(m) = &r.kind {
                    if let Ok(crate::folder::Meta::Binary { chunks: refs, .. }) = crate::folder::Meta::decode(m) {
                        chunks.extend(refs.iter().map(|c| c.hash));
                    }
                }
            }
        }
        Ok(wrote)
    }

    /// The saving half of both: one batch of changes appended, if any.
    fn append_unsaved(&mut self, name: &str, folder: &Folder, store: &mut dyn Store) -> Result<Option<Changes>, StoreError> {
        let (changes, pos) = folder.changes_since(&self.saved_vv, self.log_pos, usize::MAX);
        if changes.runs.is_empty() {
            self.log_pos = pos;
            return Ok(None);
        }
        store.append(name, &Message::Changes(changes.clone()).encode())?;
        for (_, r) in &changes.runs {
            let e = self.saved_vv.entry(r.id.agent).or_insert(0);
            *e = (*e).max(r.id.seq + r.len() as u64);
        }
        self.log_pos = pos;
        Ok(Some(changes))
    }
}

/// Rebuilds a folder from its saved batches and snapshot (if any).
pub fn load_folder(agent: AgentId, name: &str, store: &dyn Store) -> Result<Folder, StoreError> {
    let snapshot = store.get_state(&snapshot_key(name))?;
    Folder::load(agent, saved_changes(store, name)?, snapshot.as_deref())
}

/// A folder's saved change batches, decoded one by one as they are taken.
pub fn saved_changes(store: &dyn Store, name: &str) -> Result<impl Iterator<Item = Result<Changes, StoreError>>, StoreError> {
    Ok(store.batches(name)?.into_iter().map(|batch| match Message::decode(&batch)? {
        Message::Changes(c) => Ok(c),
        _ => Err(StoreError::Corrupt(DecodeError::Invalid("not a change batch"))),
    }))
}

/// Where a folder's [`Folder::snapshot`] is kept.
pub fn snapshot_key(folder: &str) -> String {
    format!("snapshot/{folder}")
}

/// Saves a snapshot of the texts of a folder whose every event is saved
/// (after [`Saver::save`]: a snapshot must not name events the store lacks,
/// or it would be ignored), so the next load merges only what comes after.
/// Costs about the size of the folder's text: do it now and then, not on
/// every save. Does not sync.
pub fn save_snapshot(name: &str, folder: &Folder, store: &mut dyn Store) -> Result<(), StoreError> {
    store.put_state(&snapshot_key(name), &folder.snapshot())
}

/// A store in memory that keeps "durable" and "written" apart, so tests can
/// crash it (drop everything since the last sync) or make it fail.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    durable: Inner,
    pending: Inner,
    /// When set, every write fails with this message (a full disk).
    pub fail_writes: Option<String>,
}

#[derive(Debug, Default, Clone)]
struct Inner {
    batches: BTreeMap<String, Vec<Vec<u8>>>,
    chunks: BTreeMap<ChunkHash, Vec<u8>>,
    peers: BTreeMap<(String, String), VersionVector>,
    state: BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// What survives a crash now: only what was synced.
    pub fn crash(&self) -> MemoryStore {
        MemoryStore { durable: self.durable.clone(), pending: self.durable.clone(), fail_writes: None }
    }

    fn check(&self, what: &str) -> Result<(), StoreError> {
        match &self.fail_writes {
            Some(m) => Err(StoreError::Io(format!("{what}: {m}"))),
            None => Ok(()),
        }
    }
}

impl Store for MemoryStore {
    fn append(&mut self, folder: &str, batch: &[u8]) -> Result<(), StoreError> {
        self.check("appending changes")?;
        self.pending.batches.entry(folder.to_owned()).or_default().push(batch.to_vec());
        Ok(())
    }
    fn batches(&self, folder: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.pending.batches.get(folder).cloned().unwrap_or_default())
    }
    fn put_chunk(&mut self, hash: ChunkHash, bytes: &[u8]) -> Result<(), StoreError> {
        self.check("storing a chunk")?;
        self.pending.chunks.insert(hash, bytes.to_vec());
        Ok(())
    }
    fn get_chunk(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.pending.chunks.get(hash).cloned())
    }
    fn set_peer_version(&mut self, peer: &str, folder: &str, vv: &VersionVector) -> Result<(), StoreError> {
        self.check("recording a peer's version")?;
        self.pending.peers.insert((peer.to_owned(), folder.to_owned()), vv.clone());
        Ok(())
    }
    fn peer_version(&self, peer: &str, folder: &str) -> Result<Option<VersionVector>, StoreError> {
        Ok(self.pending.peers.get(&(peer.to_owned(), folder.to_owned())).cloned())
    }
    fn put_state(&mut self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.check("saving state")?;
        self.pending.state.insert(key.to_owned(), bytes.to_vec());
        Ok(())
    }
    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.pending.state.get(key).cloned())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.check("syncing")?;
        self.durable = self.pending.clone();
        Ok(())
    }
}

/// Lets a [`Store`] serve as the session's chunk store. Write failures are
/// kept in `error` for the caller to report; the chunk is then simply
/// missing and asked for again later.
pub struct StoreChunks<'a> {
    /// The store.
    pub store: &'a mut dyn Store,
    /// The last write failure.
    pub error: Option<StoreError>,
}

impl ChunkStore for StoreChunks<'_> {
    fn get(&self, hash: &ChunkHash) -> Option<Vec<u8>> {
        self.store.get_chunk(hash).ok().flatten()
    }
    fn has(&self, hash: &ChunkHash) -> bool {
        self.get(hash).is_some()
    }
    fn put(&mut self, hash: ChunkHash, bytes: &[u8]) {
        if let Err(e) = self.store.put_chunk(hash, bytes) {
            self.error = Some(e);
        }
    }
}

/// For tests: the changes of `folder` as one batch.
pub fn encode_all(folder: &Folder) -> Vec<u8> {
    let (c, _): (Changes, usize) = folder.changes_since(&VersionVector::new(), 0, usize::MAX);
    Message::Changes(c).encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::tests::snapshot;
    use crate::folder::Kind;

    #[test]
    fn reload_gives_the_same_folder_and_continues_numbering() {
        let mut store = MemoryStore::new();
        let a = AgentId::from_index(1);
        let mut f = Folder::new(a);
        let mut saver = Saver::default();
        let id = f.create("d/x.txt", Kind::File, 1).expect("create");
        f.set_text(id, "one", 2).expect("write");
        assert!(saver.save("docs", &f, &mut store).expect("save"));
        f.set_text(id, "one two", 3).expect("write");
        saver.save("docs", &f, &mut store).expect("save");
        assert!(!saver.save("docs", &f, &mut store).expect("save"), "nothing new");
        store.sync().expect("sync");
        let mut back = load_folder(a, "docs", &store).expect("load");
        assert_eq!(snapshot(&mut back), snapshot(&mut f));
        // New local events continue after the saved ones.
        back.set_text(id, "one two three", 4).expect("write");
        let mut other = Folder::new(AgentId::from_index(2));
        crate::folder::tests::send(&f, &mut other);
        crate::folder::tests::send(&back, &mut other);
        assert_eq!(other.doc(id).map(|d| d.text()).as_deref(), Some("one two three"));
    }

    /// More new events than one batch holds (a first scan of a big
    /// folder): one save takes them all, so what a caller acknowledges
    /// after it (an fsync through the mount, an HTTP write) is all saved.
    #[test]
    fn a_save_of_more_than_a_batch_saves_every_event() {
        let mut store = MemoryStore::new();
        let mut f = Folder::new(AgentId::from_index(1));
        let mut saver = Saver::default();
        let line = "x".repeat(1000) + "\n";
        for i in 0..12 {
            let id = f.create(&format!("f{i}.txt"), Kind::File, 1).expect("create");
            f.set_text(id, &line.repeat(1000), 2).expect("write");
        }
        assert!(saver.save("docs", &f, &mut store).expect("save"));
        assert!(store.batches("docs").expect("batches").len() > 1, "the test needs more than a batch");
        assert_eq!(saver.saved(), f.version_vector());
        assert!(!saver.save("docs", &f, &mut store).expect("save"), "nothing left");
    }

    #[test]
    fn saving_collects_the_chunks_of_the_saved_events() {
        let mut store = MemoryStore::new();
        let mut f = Folder::new(AgentId::from_index(1));
        let mut saver = Saver::default();
        let id = f.create("b.bin", Kind::File, 1).expect("create");
        let refs: Vec<_> = crate::chunks::split(&[7u8; 1000]).into_iter().map(|c| c.0).collect();
        f.write_binary(id, refs.clone(), 2).expect("write");
        let mut got = std::collections::HashSet::new();
        assert!(saver.save_collecting("f", &f, &mut store, &mut got).expect("save"));
        assert_eq!(got, refs.iter().map(|r| r.hash).collect());
        let mut again = std::collections::HashSet::new();
        assert!(!saver.save_collecting("f", &f, &mut store, &mut again).expect("save"));
        assert!(again.is_empty(), "chunks of events saved before were reported again");
    }

    #[test]
    fn a_crash_keeps_exactly_what_was_synced() {
        let mut store = MemoryStore::new();
        let a = AgentId::from_index(1);
        let mut f = Folder::new(a);
        let mut saver = Saver::default();
        let id = f.create("x", Kind::File, 1).expect("create");
        f.set_text(id, "durable", 2).expect("write");
        saver.save("f", &f, &mut store).expect("save");
        store.sync().expect("sync");
        f.set_text(id, "durable, then lost", 3).expect("write");
        saver.save("f", &f, &mut store).expect("save");
        let mut back = load_folder(a, "f", &store.crash()).expect("load");
        let x = back.tree().lookup("x").map(|n| n.id).expect("file survives");
        assert_eq!(back.doc(x).map(|d| d.text()).as_deref(), Some("durable"));
    }

    #[test]
    fn a_full_disk_is_an_error_and_nothing_is_lost() {
        let mut store = MemoryStore::new();
        let a = AgentId::from_index(1);
        let mut f = Folder::new(a);
        let mut saver = Saver::default();
        let id = f.create("x", Kind::File, 1).expect("create");
        f.set_text(id, "kept", 2).expect("write");
        store.fail_writes = Some("No space left on device".into());
        assert!(matches!(saver.save("f", &f, &mut store), Err(StoreError::Io(_))));
        // Space comes back: the same events are saved then.
        store.fail_writes = None;
        assert!(saver.save("f", &f, &mut store).expect("save"));
        store.sync().expect("sync");
        let mut back = load_folder(a, "f", &store).expect("load");
        assert_eq!(snapshot(&mut back), snapshot(&mut f));
    }

    /// Random concurrent text edits on two replicas; the node saves after
    /// every step and snapshots now and then (so snapshots are often stale,
    /// and some are taken mid-merge history). Loading with the snapshot
    /// must give exactly what a full replay gives, and what the node has.
    #[test]
    fn a_snapshot_loads_exactly_as_a_full_replay() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut restored = 0;
        for seed in 0..40 {
            let mut rng = StdRng::seed_from_u64(seed);
            let a = AgentId::from_index(1);
            let mut f = Folder::new(a);
            let mut other = Folder::new(AgentId::from_index(2));
            let mut store = MemoryStore::new();
            let mut saver = Saver::default();
            for step in 0..60u64 {
                let who = rng.random_range(0..3);
                let target = if who == 0 { &mut f } else { &mut other };
                let path = format!("d{}/f{}.txt", rng.random_range(0..2), rng.random_range(0..4));
                let id = match target.tree().lookup(&path) {
                    Some(n) => n.id,
                    None => match target.create(&path, Kind::File, step) {
                        Ok(id) => id,
                        Err(_) => continue,
                    },
                };
                let old = target.doc(id).map(|d| d.text()).unwrap_or_default();
                let chars: Vec<char> = old.chars().collect();
                let at = rng.random_range(0..=chars.len());
                let cut = rng.random_range(0..=(chars.len() - at).min(3));
                let ins: String = (0..rng.random_range(0..6)).map(|_| rng.random_range(b'a'..=b'z') as char).collect();
                let new: String = chars[..at].iter().collect::<String>() + &ins + &chars[at + cut..].iter().collect::<String>();
                let _ = target.set_text(id, &new, step);
                if rng.random_bool(0.3) {
                    crate::folder::tests::send(&other, &mut f);
                    crate::folder::tests::send(&f, &mut other);
                }
                saver.save("f", &f, &mut store).expect("save");
                if rng.random_bool(0.15) {
                    save_snapshot("f", &f, &mut store).expect("snapshot");
                }
            }
            store.sync().expect("sync");
            let mut full = Folder::load(a, saved_changes(&store, "f").expect("batches"), None).expect("full replay");
            let mut with = load_folder(a, "f", &store).expect("load with snapshot");
            if store.get_state(&snapshot_key("f")).expect("state").is_some() {
                restored += 1;
            }
            assert_eq!(snapshot(&mut with), snapshot(&mut full), "seed {seed}");
            assert_eq!(snapshot(&mut with), snapshot(&mut f), "seed {seed}");
        }
        assert!(restored > 30, "only {restored} of 40 loads had a snapshot");
    }

    /// A snapshot is a cache: a damaged one, or one naming events the store
    /// lost (taken before a crash dropped them), is ignored.
    #[test]
    fn a_damaged_or_newer_snapshot_is_ignored() {
        let a = AgentId::from_index(1);
        let mut f = Folder::new(a);
        let mut store = MemoryStore::new();
        let mut saver = Saver::default();
        let id = f.create("x.txt", Kind::File, 1).expect("create");
        f.set_text(id, "saved", 2).expect("write");
        saver.save("f", &f, &mut store).expect("save");
        store.sync().expect("sync");
        f.set_text(id, "saved, then lost in a crash", 3).expect("write");
        saver.save("f", &f, &mut store).expect("save");
        save_snapshot("f", &f, &mut store).expect("snapshot");
        // Only the snapshot reached the disk (it cannot in one store, but a
        // store that reorders writes, or a bug, must not corrupt the text).
        let mut crashed = store.crash();
        crashed.put_state(&snapshot_key("f"), &f.snapshot()).expect("state");
        let back = load_folder(a, "f", &crashed).expect("load");
        assert_eq!(back.doc(id).map(|d| d.text()).as_deref(), Some("saved"));
        // One at a version the store has is taken as it is, not merged.
        let snap = String::from_utf8_lossy(&back.snapshot()).replace("saved", "SAVED").into_bytes();
        crashed.put_state(&snapshot_key("f"), &snap).expect("state");
        let back = load_folder(a, "f", &crashed).expect("load");
        assert_eq!(back.doc(id).map(|d| d.text()).as_deref(), Some("SAVED"), "the snapshot was not used");
        crashed.put_state(&snapshot_key("f"), b"fsync-snapshot-1 garbage").expect("state");
        let back = load_folder(a, "f", &crashed).expect("load");
        assert_eq!(back.doc(id).map(|d| d.text()).as_deref(), Some("saved"));
    }
}
