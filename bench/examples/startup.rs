//! Start-up cost of a big node: a store holding a folder of 100,000 files
//! and 1,000,000 changes, written as a daemon writes it (many batches),
//! then opened and loaded as `fsync run` does, beside the floor of reading
//! the store file's bytes. Also reports the store's size against the
//! folder's.
//!
//! `cargo run --release -p fsync-bench --example startup [FILES] [CHARS_PER_FILE]`

use std::time::Instant;

use cli::store::RedbStore;
use fsync_core::folder::{Folder, Kind};
use fsync_core::store::{load_folder, Saver, Store};
use fsync_core::AgentId;

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
    let _ = std::fs::remove_dir_all(&dir);
}
