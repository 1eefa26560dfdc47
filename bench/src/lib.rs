//! Benchmarks of fsync-core against other text CRDTs on the real traces of
//! `traces/`, in the same process run so ratios hold on a noisy
//! machine: `cargo bench -p fsync-bench`.
//!
//! The baselines live here, outside the workspace's default members, so
//! that `cargo test` never builds them.

#![allow(missing_docs)]

#[path = "../../fsync-core/examples/support/trace.rs"]
pub mod trace;

pub mod baselines;

/// A fresh tree of `n` small text files over 1,000 directories, under the
/// temp directory, for the examples that scan one.
pub fn small_files(name: &str, n: usize) -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("fsync-{name}-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for i in 0..n {
        let dir = root.join(format!("d{:03}", i % 1000));
        if i < 1000 {
            std::fs::create_dir_all(&dir).expect("mkdir");
        }
        std::fs::write(dir.join(format!("f{i}.txt")), format!("file {i}\nsome text\n")).expect("write");
    }
    root
}
