use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::StorageBackend;

use super::*;
use fsync_core::AgentId;

/// A disk in memory: writes land in `live`; `sync_data` copies them to
/// `durable`. A crash keeps `durable` plus a random subset of the writes
/// made since the last sync (torn writes), like a power cut.
#[derive(Debug, Clone, Default)]
struct FaultDisk {
    s: Arc<Mutex<Disk>>,
}

#[derive(Debug, Default)]
struct Disk {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
    pending_len: Option<u64>,
    full: bool,
    /// Fails the n-th next write, resize or sync with EIO (one fault).
    fail_in: Option<u32>,
}

fn eio() -> std::io::Error {
    std::io::Error::other("injected I/O error")
}

impl Disk {
    /// Counts down an armed fault; true when this call must fail.
    fn fault(&mut self) -> bool {
        match self.fail_in {
            Some(0) => {
                self.fail_in = None;
                true
            }
            Some(n) => {
                self.fail_in = Some(n - 1);
                false
            }
            None => false,
        }
    }
}

fn enospc() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device")
}

impl StorageBackend for FaultDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.s.lock().map_err(|_| enospc())?.live.len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let s = self.s.lock().map_err(|_| enospc())?;
        let start = offset as usize;
        for (i, b) in out.iter_mut().enumerate() {
            *b = s.live.get(start + i).copied().unwrap_or(0);
        }
        Ok(())
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut s = self.s.lock().map_err(|_| enospc())?;
        if s.fault() {
            return Err(eio());
        }
        if s.full && len > s.live.len() as u64 {
            return Err(enospc());
        }
        s.live.resize(len as usize, 0);
        s.pending_len = Some(len);
        Ok(())
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut s = self.s.lock().map_err(|_| enospc())?;
        if s.fault() {
            return Err(eio());
        }
        s.durable = s.live.clone();
        s.pending.clear();
        s.pending_len = None;
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut s = self.s.lock().map_err(|_| enospc())?;
        if s.fault() {
            // A failed write may still have reached the disk in part.
            let end = (offset as usize + data.len() / 2).min(s.live.len());
            let start = (offset as usize).min(end);
            let half = data.len().min(end - start);
            s.live[start..start + half].copy_from_slice(&data[..half]);
            return Err(eio());
        }
        if s.full {
            return Err(enospc());
        }
        let end = offset as usize + data.len();
        if s.live.len() < end {
            s.live.resize(end, 0);
        }
        s.live[offset as usize..end].copy_from_slice(data);
        s.pending.push((offset, data.to_vec()));
        Ok(())
    }
}

impl FaultDisk {
    /// A store on this disk; reopening after a failure uses the same disk.
    fn open(&self) -> RedbStore {
        let d = self.clone();
        RedbStore::open_backend(move || d.clone()).expect("the store opens")
    }

    /// Cuts the power under `store` and reopens it on what the disk kept.
    /// The power goes first: whatever the store does on drop lands on the
    /// old disk, not the one kept.
    fn power_cut(&mut self, store: RedbStore, rng: &mut StdRng) -> RedbStore {
        let cut = self.crash(rng);
        drop(store);
        *self = cut;
        self.open()
    }

    /// The disk after a power cut.
    fn crash(&self, rng: &mut StdRng) -> FaultDisk {
        let s = self.s.lock().expect("lock");
        let mut bytes = s.durable.clone();
        if let Some(len) = s.pending_len {
            if rng.random_bool(0.5) {
                bytes.resize(len as usize, 0);
            }
        }
        for (off, data) in &s.pending {
            if rng.random_bool(0.5) {
                let end = *off as usize + data.len();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[*off as usize..end].copy_from_slice(data);
            }
        }
        FaultDisk { s: Arc::new(Mutex::new(Disk { live: bytes.clone(), durable: bytes, ..Disk::default() })) }
    }
}

fn batch(folder: usize, n: usize) -> Vec<u8> {
    format!("batch {n} of folder {folder}").into_bytes()
}

/// Random appends, syncs and power cuts against a model of what was
/// synced: after every crash the store opens and holds every synced batch,
/// in order; anything after them is a batch that really was appended.
#[test]
fn power_cuts_never_lose_synced_changes_or_corrupt_the_store() {
    for seed in 0..12 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut disk = FaultDisk::default();
        let mut store = disk.open();
        let mut appended: [Vec<Vec<u8>>; 2] = Default::default();
        let mut synced = [0usize; 2];
        let mut crashes = 0;
        for _ in 0..120 {
            match rng.random_range(0..10) {
                0..=5 => {
                    let f = rng.random_range(0..2);
                    let b = batch(f, appended[f].len());
                    store.append(&format!("f{f}"), &b).expect("append");
                    appended[f].push(b);
                }
                6..=8 => {
                    store.sync().expect("sync");
                    synced = [appended[0].len(), appended[1].len()];
                }
                _ => {
                    store = disk.power_cut(store, &mut rng);
                    crashes += 1;
                    for f in 0..2 {
                        let got = store.batches(&format!("f{f}")).expect("read");
                        assert!(got.len() >= synced[f], "seed {seed}: synced batches lost");
                        assert_eq!(got[..], appended[f][..got.len()], "seed {seed}: wrong or reordered batches");
                        appended[f].truncate(got.len());
                    }
                    synced = [appended[0].len(), appended[1].len()];
                }
            }
        }
        assert!(crashes > 3, "seed {seed}: too few crashes to mean anything");
    }
}

/// Appends and syncs until the store fails (at most 4 MB).
fn write_until_full(store: &mut RedbStore) -> Result<(), StoreError> {
    for i in 0..1000 {
        store.append("f", &vec![i as u8; 4096])?;
        store.sync()?;
    }
    Ok(())
}

#[test]
fn a_full_disk_is_an_error_and_recovers() {
    let disk = FaultDisk::default();
    let mut store = disk.open();
    store.append("f", b"one").expect("append");
    store.sync().expect("sync");
    disk.s.lock().expect("lock").full = true;
    let err = write_until_full(&mut store);
    assert!(matches!(err, Err(StoreError::Io(_))), "a full disk went unnoticed: {err:?}");
    disk.s.lock().expect("lock").full = false;
    store.append("f", b"two").expect("append after space returns");
    store.sync().expect("sync");
    let got = store.batches("f").expect("read");
    assert_eq!(got.first().map(Vec::as_slice), Some(&b"one"[..]));
    assert_eq!(got.last().map(Vec::as_slice), Some(&b"two"[..]));
}

#[test]
fn a_newer_format_is_refused_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("fsync-store-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("store.redb");
    drop(RedbStore::open(&path).expect("create"));
    {
        let db = redb::Database::create(&path).expect("raw open");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META).expect("meta").insert("format", 99u64.to_le_bytes().as_slice()).expect("insert");
        txn.commit().expect("commit");
    }
    match RedbStore::open(&path) {
        Err(StoreError::Io(m)) => {
            assert!(m.contains("newer fsync") && m.contains("upgrade"), "{m}")
        }
        other => panic!("a newer store was opened: {:?}", other.is_ok()),
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_folder_saved_and_loaded_through_the_store() {
    use fsync_core::folder::{Folder, Kind};
    use fsync_core::store::{load_folder, Saver};
    let mut disk = FaultDisk::default();
    let mut store = disk.open();
    let a = AgentId::from_index(1);
    let mut f = Folder::new(a);
    let mut saver = Saver::default();
    let id = f.create("docs/a.txt", Kind::File, 1).expect("create");
    f.set_text(id, "hello", 2).expect("write");
    saver.save("docs", &f, &mut store).expect("save");
    f.set_text(id, "hello world", 3).expect("write");
    saver.save("docs", &f, &mut store).expect("save");
    store.sync().expect("sync");
    store.set_peer_version("peer", "docs", f.version_vector()).expect("peer");
    store.put_state("snap/docs", b"state").expect("state");
    store.put_state("snap/docs", b"state, newer").expect("state");
    store.sync().expect("sync");
    let mut rng = StdRng::seed_from_u64(1);
    let store = disk.power_cut(store, &mut rng);
    let mut back = load_folder(a, "docs", &store).expect("load");
    let id2 = back.tree().lookup("docs/a.txt").expect("file").id;
    assert_eq!(back.doc(id2).map(|d| d.text()).as_deref(), Some("hello world"));
    assert_eq!(store.peer_version("peer", "docs").expect("read").as_ref(), Some(f.version_vector()));
    assert_eq!(store.get_state("snap/docs").expect("read").as_deref(), Some(&b"state, newer"[..]));
    assert_eq!(store.get_state("snap/other").expect("read"), None);
    let h = ChunkHash::of(b"c");
    let mut store = store;
    store.put_chunk(h, b"c").expect("put");
    assert_eq!(store.get_chunk(&h).expect("get").as_deref(), Some(&b"c"[..]));
}

#[test]
fn garbage_collection_keeps_exactly_the_referenced_chunks() {
    let mut disk = FaultDisk::default();
    let mut store = disk.open();
    for (i, name) in ["b", "a", "c", "b"].iter().enumerate() {
        store.append(name, &batch(i, i)).expect("append");
    }
    assert_eq!(store.folders().expect("folders"), vec!["a", "b", "c"]);
    let chunks: Vec<(ChunkHash, Vec<u8>)> = (0..20u8).map(|i| (ChunkHash::of(&[i; 100]), vec![i; 100])).collect();
    for (h, b) in &chunks {
        store.put_chunk(*h, b).expect("put");
    }
    store.sync().expect("sync");
    let keep: std::collections::HashSet<ChunkHash> = chunks.iter().step_by(3).map(|(h, _)| *h).collect();
    assert_eq!(store.collect_garbage(&keep).expect("gc"), (13, 1300));
    for (h, b) in &chunks {
        let got = store.get_chunk(h).expect("get");
        assert_eq!(got.as_deref(), keep.contains(h).then_some(b.as_slice()), "chunk {h:?}");
    }
    // Durable: a power cut right after keeps the result.
    let mut rng = StdRng::seed_from_u64(7);
    let mut store = disk.power_cut(store, &mut rng);
    assert_eq!(store.collect_garbage(&keep).expect("gc again"), (0, 0));
}

/// Everything a store holds, over small key universes, as a plain model.
#[derive(Clone, Default, PartialEq)]
struct Model {
    batches: [Vec<Vec<u8>>; 2],
    chunks: std::collections::BTreeMap<u8, Vec<u8>>,
    peers: std::collections::BTreeMap<(u8, u8), VersionVector>,
    state: std::collections::BTreeMap<u8, Vec<u8>>,
}

impl std::fmt::Debug for Model {
    /// Short: batch counts, then keys with value lengths.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b: Vec<usize> = self.batches.iter().map(Vec::len).collect();
        let c: Vec<(u8, usize)> = self.chunks.iter().map(|(k, v)| (*k, v.len())).collect();
        let s: Vec<(u8, usize)> = self.state.iter().map(|(k, v)| (*k, v.len())).collect();
        write!(f, "batches {b:?} chunks {c:?} peers {:?} state {s:?}", self.peers.keys().collect::<Vec<_>>())
    }
}

fn chunk_hash(i: u8) -> ChunkHash {
    ChunkHash::of(&[i])
}

/// Reads back the whole store over the model's key universes.
fn read_all(store: &RedbStore) -> Result<Model, StoreError> {
    let mut m = Model::default();
    for f in 0..2u8 {
        m.batches[f as usize] = store.batches(&format!("f{f}"))?;
    }
    for i in 0..8u8 {
        if let Some(b) = store.get_chunk(&chunk_hash(i))? {
            m.chunks.insert(i, b);
        }
        if let Some(b) = store.get_state(&format!("k{}", i % 3))? {
            m.state.insert(i % 3, b);
        }
    }
    for p in 0..2u8 {
        for f in 0..2u8 {
            if let Some(vv) = store.peer_version(&format!("p{p}"), &format!("f{f}"))? {
                m.peers.insert((p, f), vv);
            }
        }
    }
    Ok(m)
}

/// Every Store operation at random against a reference model, with I/O
/// errors injected into writes, resizes and syncs, and power cuts:
/// - after a successful operation the store reads exactly as the model;
/// - after a failed one (or a power cut) it reads as one of the states it
///   went through since the last successful sync (transactions are atomic
///   and ordered, synced ones are never lost), and recovering (one sync, as
///   the daemon retries) makes that state durable.
#[test]
fn every_operation_against_a_model_with_injected_io_errors_and_power_cuts() {
    let (mut failures, mut cuts, mut ops) = (0, 0, 0);
    for seed in 0..24 {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let mut disk = FaultDisk::default();
        let mut store = disk.open();
        // The states since the last sync, oldest (durable) first.
        let mut since_sync = vec![Model::default()];
        for step in 0..150 {
            ops += 1;
            let mut next = since_sync.last().cloned().unwrap_or_default();
            let arm = rng.random_bool(0.15);
            if arm {
                disk.s.lock().expect("lock").fail_in = Some(rng.random_range(0..4));
            }
            let op = rng.random_range(0..14);
            if std::env::var_os("STORE_TRACE").is_some() {
                eprintln!("seed {seed} step {step}: op {op} armed {:?}", disk.s.lock().expect("lock").fail_in);
            }
            let (result, durable) = match op {
                0..=3 => {
                    let f = rng.random_range(0..2usize);
                    let b = format!("seed {seed} step {step} folder {f}").into_bytes();
                    next.batches[f].push(b.clone());
                    (store.append(&format!("f{f}"), &b), false)
                }
                4..=5 => {
                    let picked: Vec<(u8, Vec<u8>)> = (0..rng.random_range(1..4))
                        .map(|_| {
                            let i = rng.random_range(0..8u8);
                            (i, vec![i; rng.random_range(1..3000)])
                        })
                        .collect();
                    for (i, b) in &picked {
                        next.chunks.insert(*i, b.clone());
                    }
                    let refs: Vec<(ChunkHash, &[u8])> = picked.iter().map(|(i, b)| (chunk_hash(*i), b.as_slice())).collect();
                    if refs.len() == 1 {
                        (store.put_chunk(refs[0].0, refs[0].1), false)
                    } else {
                        (store.put_chunks(&refs), false)
                    }
                }
                6 => {
                    let (p, f) = (rng.random_range(0..2u8), rng.random_range(0..2u8));
                    let vv: VersionVector =
                        (0..rng.random_range(0..3u64)).map(|a| (AgentId::from_index(a), rng.random_range(0..1000))).collect();
                    next.peers.insert((p, f), vv.clone());
                    (store.set_peer_version(&format!("p{p}"), &format!("f{f}"), &vv), false)
                }
                7..=8 => {
                    let k = rng.random_range(0..3u8);
                    let b = vec![step as u8; rng.random_range(0..5000)];
                    next.state.insert(k, b.clone());
                    (store.put_state(&format!("k{k}"), &b), false)
                }
                9..=11 => (store.sync(), true),
                12 => {
                    let keep: std::collections::HashSet<ChunkHash> =
                        (0..8u8).filter(|_| rng.random_bool(0.5)).map(chunk_hash).collect();
                    next.chunks.retain(|i, _| keep.contains(&chunk_hash(*i)));
                    (store.collect_garbage(&keep).map(|_| ()), true)
                }
                _ => {
                    // A power cut: the store reopens as one of the states
                    // since the last sync.
                    store = disk.power_cut(store, &mut rng);
                    cuts += 1;
                    let got = read_all(&store).expect("read after a power cut");
                    assert!(since_sync.contains(&got), "seed {seed} step {step}: a power cut left a state never written");
                    since_sync = vec![got];
                    continue;
                }
            };
            disk.s.lock().expect("lock").fail_in = None;
            match result {
                Ok(()) => {
                    if durable {
                        since_sync = vec![next];
                    } else {
                        since_sync.push(next);
                    }
                    let got = read_all(&store).expect("read after success");
                    assert_eq!(Some(&got), since_sync.last(), "seed {seed} step {step}: the store differs from the model");
                }
                Err(StoreError::Io(_)) => {
                    assert!(arm, "seed {seed} step {step}: an error nobody injected: {result:?}");
                    failures += 1;
                    // Reads wait for the reopen the next write makes.
                    assert!(read_all(&store).is_err(), "seed {seed} step {step}: reads from a failed store");
                    store.sync().expect("a sync recovers once the fault is gone");
                    let got = read_all(&store).expect("read after recovery");
                    since_sync.push(next);
                    assert!(since_sync.contains(&got), "seed {seed} step {step}: a failed operation left a state never written:\n{got:?}\nnot in\n{since_sync:#?}");
                    since_sync = vec![got];
                }
                Err(other) => panic!("seed {seed} step {step}: {other}"),
            }
        }
    }
    assert!(
        failures > 100 && cuts > 50,
        "too few faults to mean anything: {failures} failures, {cuts} cuts in {ops} operations"
    );
}

#[test]
fn chunks_are_read_from_another_thread_and_after_a_failure_reopens_the_store() {
    let disk = FaultDisk::default();
    let mut store = disk.open();
    let (a, b) = (vec![1u8; 70_000], vec![2u8; 30_000]);
    let (ha, hb) = (ChunkHash::of(&a), ChunkHash::of(&b));
    store.put_chunks(&[(ha, a.as_slice())]).expect("put");
    store.sync().expect("sync");
    let source = store.chunk_source();
    let reader = std::thread::spawn({
        let source = source.clone();
        move || source.read(&ha)
    });
    assert_eq!(reader.join().expect("reader"), Some(a.clone()));
    assert_eq!(source.read(&hb), None);
    assert_eq!(store.chunk_hashes().expect("list"), [ha].into_iter().collect());
    // A full disk: the database is dropped, so readers see nothing until
    // the next write reopens it.
    disk.s.lock().expect("lock").full = true;
    let err = write_until_full(&mut store);
    assert!(err.is_err());
    assert_eq!(source.read(&ha), None, "a failed store is not read");
    disk.s.lock().expect("lock").full = false;
    store.put_chunks(&[(hb, b.as_slice())]).expect("put after space returns");
    store.sync().expect("sync");
    assert_eq!(source.read(&ha), Some(a), "the reader follows the reopened store");
    assert_eq!(source.read(&hb), Some(b));
}

/// A save writes the rows of the paths that changed; a whole index of
/// format 1 is read, then replaced by rows.
#[test]
fn the_disk_index_is_kept_as_rows_per_path_and_a_whole_index_is_read_once() {
    let disk = FaultDisk::default();
    let mut store = disk.open();
    store.put_state("index/docs", b"whole").expect("state");
    assert!(matches!(store.index("docs").expect("read"), StoredIndex::Whole(b) if b == b"whole"));
    let rows = vec![("a".to_owned(), Some(b"ra".to_vec())), ("b/c".to_owned(), Some(b"rc".to_vec()))];
    store.put_index("docs", &rows, Some(b"i1")).expect("put");
    store.put_index("doc", &[("z".to_owned(), Some(b"other folder".to_vec()))], None).expect("put");
    store.put_index("docs", &[("a".to_owned(), None), ("d".to_owned(), Some(b"rd".to_vec()))], Some(b"i2")).expect("put");
    match store.index("docs").expect("read") {
        StoredIndex::Rows { rows, intents } => {
            assert_eq!(rows, vec![("b/c".to_owned(), b"rc".to_vec()), ("d".to_owned(), b"rd".to_vec())]);
            assert_eq!(intents.as_deref(), Some(&b"i2"[..]));
        }
        StoredIndex::Whole(_) => panic!("the whole index was replaced"),
    }
    assert!(matches!(store.index("none").expect("read"), StoredIndex::Rows { rows, intents: None } if rows.is_empty()));
}

/// Chunks written early through the sink (a big file being read) are
/// readable at once, and after a power cut are there if a sync came after
/// them; the store opens either way.
#[test]
fn chunks_written_early_are_durable_with_the_next_sync() {
    use fsync_core::chunks::ChunkHash;
    for seed in 0..8 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut disk = FaultDisk::default();
        let mut store = disk.open();
        let bytes: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 70_000]).collect();
        let hashes: Vec<ChunkHash> = bytes.iter().map(|b| ChunkHash::of(b)).collect();
        let early: Vec<(ChunkHash, &[u8])> = hashes.iter().copied().zip(bytes.iter().map(Vec::as_slice)).collect();
        assert!(store.chunk_sink().write(&early[..2]));
        assert_eq!(store.chunk_source().read(&hashes[0]).as_ref(), Some(&bytes[0]), "readable before any sync");
        store.sync().expect("sync");
        assert!(store.chunk_sink().write(&early[2..]));
        store = disk.power_cut(store, &mut rng);
        for (h, b) in hashes.iter().zip(&bytes).take(2) {
            assert_eq!(store.get_chunk(h).expect("read").as_ref(), Some(b), "seed {seed}: a synced chunk was lost");
        }
        for (h, b) in hashes.iter().zip(&bytes).skip(2) {
            let got = store.get_chunk(h).expect("read");
            assert!(got.is_none() || got.as_ref() == Some(b), "seed {seed}: a chunk came back wrong");
        }
    }
}
