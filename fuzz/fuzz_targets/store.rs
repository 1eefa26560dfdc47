//! A damaged store: arbitrary bytes as saved change batches and as the
//! snapshot. Loading never panics; it fails with an error or yields a
//! folder whose paths are valid.
#![no_main]

use fsync_core::folder::split_path;
use fsync_core::store::{load_folder, save_snapshot, snapshot_key, MemoryStore, Store};
use fsync_core::AgentId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut store = MemoryStore::new();
    // Parts are separated by 0xfe; the first is the snapshot, the rest batches.
    let mut parts = data.split(|&b| b == 0xfe);
    let snapshot = parts.next().unwrap_or_default();
    let _ = store.put_state(&snapshot_key("f"), snapshot);
    for batch in parts {
        let _ = store.append("f", batch);
    }
    if let Ok(mut folder) = load_folder(AgentId::from_index(1), "f", &store) {
        let paths: Vec<String> = folder.tree().nodes().map(|n| n.path.clone()).collect();
        for p in paths {
            assert!(split_path(&p).is_ok(), "invalid path {p:?} in the tree");
        }
        // What loaded can be saved and loaded again.
        let _ = save_snapshot("f", &folder, &mut store);
        let _ = folder.snapshot();
    }
});
