//! Scan speed on 100,000 files, beside the floor (walking the tree and
//! stat-ing every entry, which any scanner must do), in one run:
//!
//! ```text
//! cargo run --release -p fsync-bench --example scan [-- FILES]
//! ```
//!
//! Prints medians of 5 runs: the baseline walk, the first scan (reads every
//! file), a rescan with nothing changed (the fast path: metadata only), and
//! a rescan after 100 files changed.

use std::path::Path;
use std::time::Instant;

use fsync_core::chunks::Chunks;
use fsync_core::folder::Folder;
use fsync_core::AgentId;
use watcher::ignore::Ignore;
use watcher::{scan, Index};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn walk_stat(root: &Path) -> usize {
    walkdir::WalkDir::new(root).into_iter().filter_map(Result::ok).filter(|e| e.metadata().is_ok()).count()
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let root = fsync_bench::small_files("scan", n);
    let ignore = Ignore::load(&root);
    let (mut base, mut first, mut again, mut changed) = (vec![], vec![], vec![], vec![]);
    for round in 0..5 {
        let t = Instant::now();
        std::hint::black_box(walk_stat(&root));
        base.push(t.elapsed().as_secs_f64() * 1000.0);

        let mut folder = Folder::new(AgentId::from_index(1));
        let mut chunks = Chunks::default();
        let mut index = Index::default();
        let t = Instant::now();
        let r = scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 1).expect("scan");
        first.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.created.len(), n + 1000);

        let t = Instant::now();
        let r = scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 2).expect("scan");
        again.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(r.is_empty());

        for i in 0..100 {
            let p = root.join(format!("d{:03}/f{}.txt", i % 1000, i));
            std::fs::write(p, format!("file {i}\nchanged in round {round}\n")).expect("write");
        }
        let t = Instant::now();
        let r = scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 3).expect("scan");
        changed.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.modified.len(), 100);
    }
    let (b, f, a, c) = (median(base), median(first), median(again), median(changed));
    println!("{n} files in 1000 directories, medians of 5:");
    println!("  walk + stat (baseline)       {b:9.1} ms");
    println!("  first scan (reads all)       {f:9.1} ms  ({:.1}x baseline)", f / b);
    println!("  rescan, nothing changed      {a:9.1} ms  ({:.1}x baseline)", a / b);
    println!("  rescan, 100 files changed    {c:9.1} ms  ({:.1}x baseline)", c / b);
    let _ = std::fs::remove_dir_all(&root);
}
