//! Where a tracked file's memory goes: the live heap after a first scan of
//! N small text files, split by part (folder model, disk index, chunks).
//!
//! ```text
//! cargo run --release -p fsync-bench --example heap [-- FILES]
//! ```

use std::alloc::System;

use cap::Cap;
use fsync_core::chunks::Chunks;
use fsync_core::folder::Folder;
use fsync_core::text::{Edit, TextDoc};
use fsync_core::AgentId;
use watcher::ignore::Ignore;
use watcher::{scan, Index};

#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

fn live() -> isize {
    HEAP.allocated() as isize
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let root = fsync_bench::small_files("heap", n);
    let ignore = Ignore::load(&root);
    let base = live();
    let mut folder = Folder::new(AgentId::from_index(1));
    let mut chunks = Chunks::default();
    let mut index = Index::default();
    scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 1).expect("scan");
    // What the daemon's write-back after a scan does.
    let _ = folder.take_changed();
    let total = live() - base;
    let before = live();
    drop(index);
    let index_bytes = before - live();
    let before = live();
    drop(chunks);
    let chunk_bytes = before - live();
    let snapshot = folder.snapshot().len();
    let before = live();
    drop(folder);
    let folder_bytes = before - live();
    let per = |b: isize| b as f64 / n as f64;
    println!(
        "{{\"files\": {n}, \"heap_per_file\": {:.0}, \"folder_per_file\": {:.0}, \"index_per_file\": {:.0}, \"chunks_per_file\": {:.0}, \"snapshot_per_file\": {:.0}}}",
        per(total),
        per(folder_bytes),
        per(index_bytes),
        per(chunk_bytes),
        per(snapshot as isize)
    );
    let _ = std::fs::remove_dir_all(&root);
    // The text model alone: an empty document, then one with a line and
    // a metadata marker, as a scanned file has.
    let agent = AgentId::from_index(1);
    let before = live();
    let docs: Vec<TextDoc> = (0..n).map(|_| TextDoc::new()).collect();
    let empty = per(live() - before);
    drop(docs);
    let before = live();
    let docs: Vec<TextDoc> = (0..n)
        .map(|i| {
            let mut d = TextDoc::new();
            d.local_marker(agent, 0, b"create f.txt", 1);
            d.local_edit_at(agent, 1, &Edit { pos: 0, del: 0, ins: format!("file {i}\nsome text\n") }, 1);
            d.compact();
            d
        })
        .collect();
    println!("{{\"empty_doc\": {empty:.0}, \"doc_with_a_line\": {:.0}}}", per(live() - before));
    drop(docs);
}
