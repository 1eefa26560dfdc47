//! Start-up cost of a big node: a store holding a folder of 100,000 files
//! and 1,000,000 changes, written as a daemon writes it (many batches),
//! then opened and loaded as `fsync run` does, beside the floor of reading
//! the store file's bytes. Also reports the store's size against the
//! folder's.
//!
//! Then a folder whose few files have long, concurrent histories (two
//! writers typing at scattered places, exchanging every few edits), loaded
//! with and without the snapshot of its texts that a daemon saves: the
//! snapshot spares the merge of the whole history.
//!
//! `cargo run --release -p fsync-bench --example startup [FILES] [CHARS_PER_FILE]`

use std::time::Instant;

use fsync_core::folder::Changes;
use fsync_core::folder::{Folder, Kind};
use fsync_core::store::{load_folder, save_snapshot, saved_changes, snapshot_key, Saver, Store};
use fsync_core::AgentId;
use fsync_store::RedbStore;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let files = args.first().copied().unwrap_or(100_000);
    let chars = args.get(1).copied().unwrap_or(10);
    let dir = std::env::temp_dir().join(format!("fsync-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("store.redb");

    // Build: files in 100 directories, each typed a few characters at a
    // time, saved every 1,000 files (as a daemon saves after each round).
    let t = Instant::now();
    let mut folder = Folder::new(AgentId::from_index(1));
    let mut store = RedbStore::open(&path).expect("open");
    let mut saver = Saver::loaded(&folder);
    let mut text_bytes = 0usize;
    for i in 0..files {
        let id = folder.create(&format!("d{}/f{i}.txt", i % 100), Kind::File, i as u64).expect("create");
        let body: String = (0..chars).map(|c| (b'a' + ((i + c) % 26) as u8) as char).collect();
        text_bytes += body.len();
        folder.set_text(id, &body, i as u64).expect("text");
        if i % 1000 == 999 {
            saver.save("f", &folder, &mut store).expect("save");
            store.sync().expect("sync");
        }
    }
    saver.save("f", &folder, &mut store).expect("save");
    store.sync().expect("sync");
    let changes: u64 = folder.version_vector().values().sum();
    drop(store);
    eprintln!("built {files} files, {changes} changes in {:.1?}", t.elapsed());

    let size = std::fs::metadata(&path).expect("size").len();
    let mut floor = Vec::new();
    let mut load = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let bytes = std::fs::read(&path).expect("read");
        std::hint::black_box(bytes.len());
        floor.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let store = RedbStore::open(&path).expect("open");
        let mut f = load_folder(AgentId::from_index(2), "f", &store).expect("load");
        let n = f.tree().nodes().count();
        load.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(n, files + 100);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (fl, ld) = (median(&mut floor), median(&mut load));
    println!(
        "{{\"files\": {files}, \"changes\": {changes}, \"store_bytes\": {size}, \"folder_text_bytes\": {text_bytes}, \"read_file_ms\": {fl:.1}, \"open_and_load_ms\": {ld:.1}, \"ratio\": {:.1}}}",
        ld / fl
    );
    concurrent_histories(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// 4 files, 2 writers each making 50,000 single-character edits at
/// pseudo-random places, exchanging every 20 edits; saved every exchange.
fn concurrent_histories(dir: &std::path::Path) {
    let path = dir.join("concurrent.redb");
    let mut a = Folder::new(AgentId::from_index(1));
    let mut b = Folder::new(AgentId::from_index(2));
    let mut store = RedbStore::open(&path).expect("open");
    let mut saver = Saver::loaded(&a);
    let ids: Vec<_> = (0..4).map(|i| a.create(&format!("f{i}.txt"), Kind::File, 0).expect("create")).collect();
    let sync = |from: &Folder, to: &mut Folder| {
        let (c, _): (Changes, usize) = from.changes_since(to.version_vector(), 0, usize::MAX);
        to.apply_changes(&c).1.expect("apply");
    };
    sync(&a, &mut b);
    let mut x: u64 = 12345;
    let mut rand = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    };
    let t = Instant::now();
    for round in 0..5_000u64 {
        for (w, f) in [&mut a, &mut b].into_iter().enumerate() {
            for k in 0..10 {
                let id = ids[rand(ids.len())];
                let mut text: Vec<char> = f.doc(id).map(|d| d.text()).unwrap_or_default().chars().collect();
                let at = rand(text.len() + 1);
                if text.len() > 200 && rand(3) == 0 {
                    text.remove(at.min(text.len() - 1));
                } else {
                    text.insert(at, (b'a' + ((w + k) % 26) as u8) as char);
                }
                f.set_text(id, &text.iter().collect::<String>(), round).expect("edit");
            }
        }
        sync(&a, &mut b);
        sync(&b, &mut a);
        saver.save("c", &a, &mut store).expect("save");
    }
    store.sync().expect("sync");
    let changes: u64 = a.version_vector().values().sum();
    let text: usize = ids.iter().map(|id| a.doc(*id).map_or(0, |d| d.len_chars())).sum();
    eprintln!("built 4 files, {changes} concurrent changes, {text} chars in {:.1?}", t.elapsed());
    let batches: Vec<Changes> = saved_changes(&store, "c").expect("batches").collect::<Result<_, _>>().expect("decode");
    save_snapshot("c", &a, &mut store).expect("snapshot");
    store.sync().expect("sync");
    let snapshot = store.get_state(&snapshot_key("c")).expect("read").expect("snapshot");
    drop(store);
    let (mut replay, mut with) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        let f = Folder::load::<fsync_core::folder::ApplyError>(AgentId::from_index(3), batches.iter().cloned().map(Ok), None)
            .expect("load");
        replay.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let g = Folder::load::<fsync_core::folder::ApplyError>(
            AgentId::from_index(3),
            batches.iter().cloned().map(Ok),
            Some(&snapshot),
        )
        .expect("load");
        with.push(t.elapsed().as_secs_f64() * 1000.0);
        for id in &ids {
            assert_eq!(f.doc(*id).map(|d| d.text()), a.doc(*id).map(|d| d.text()), "full replay differs");
            assert_eq!(g.doc(*id).map(|d| d.text()), a.doc(*id).map(|d| d.text()), "snapshot load differs");
        }
    }
    let (r, w) = (median(&mut replay), median(&mut with));
    println!(
        "{{\"concurrent_changes\": {changes}, \"batches\": {}, \"snapshot_bytes\": {}, \"load_replay_ms\": {r:.1}, \"load_with_snapshot_ms\": {w:.1}, \"ratio\": {:.2}}}",
        batches.len(),
        snapshot.len(),
        w / r
    );
}
