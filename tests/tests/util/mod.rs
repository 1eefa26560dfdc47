//! Helpers: a node home in a temp dir, and the real binary run in it.

#![allow(dead_code, missing_docs, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `fsync` binary next to this test executable (target/<profile>/).
pub fn fsync_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("fsync");
    assert!(bin.exists(), "{} not built (run `cargo test` at the workspace root)", bin.display());
    bin
}

/// A node: its own home and a scratch directory.
pub struct Node {
    pub home: PathBuf,
    pub scratch: PathBuf,
}

impl Node {
    pub fn new(name: &str) -> Node {
        let base = std::env::temp_dir().join(format!("fsync-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("mkdir");
        Node { home: base.join("home"), scratch: base }
    }

    /// Runs `fsync --home HOME args...`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(fsync_bin()).arg("--home").arg(&self.home).args(args).output().expect("fsync runs")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "fsync {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "fsync {args:?} should have failed");
        assert!(out.stdout.is_empty(), "a failing command printed to stdout");
        String::from_utf8(out.stderr).expect("utf-8 output")
    }

    pub fn config(&self) -> String {
        std::fs::read_to_string(self.home.join("config.toml")).expect("config")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
