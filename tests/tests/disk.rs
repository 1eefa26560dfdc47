//! A full disk on the real binary: the node's home on a small tmpfs made
//! by the test. Saving fails with a clear error in the log and in `fsync
//! status`; nothing unsaved is written into the folder; when space returns
//! the node recovers by itself, and the store opens after a restart.

#![allow(missing_docs)]

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::{eventually, free_port, read, Node};

/// A tmpfs of `size` at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem at `dir` until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn full_disk_is_reported_and_recovers_by_itself() {
    let (a, b) = (Node::new("disk-a"), Node::new("disk-b"));
    let small = b.scratch.join("small");
    let Some(_fs) = Tmpfs::mount(&small, "8m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run");
        return;
    };
    // B's home (its store) lives on the small filesystem; its folder does not.
    let b_home = small.join("home");
    let b_run = |args: &[&str]| -> std::process::Output {
        Command::new(util::fsync_bin()).arg("--home").arg(&b_home).args(args).output().expect("fsync runs")
    };
    let b_ok = |args: &[&str]| -> String {
        let out = b_run(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let b_status = || -> Option<serde_json::Value> {
        let out = b_run(&["status", "--json"]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    };
    let (pa, pb) = (free_port(), free_port());
    let a_id = a.ok(&["init"]).trim().to_owned();
    let b_id = b_ok(&["init"]).trim().to_owned();
    let (ra, rb) = (a.scratch.join("docs"), b.scratch.join("docs"));
    a.ok(&["folder", "add", "docs", ra.to_str().expect("utf-8")]);
    b_ok(&["folder", "add", "docs", rb.to_str().expect("utf-8")]);
    a.ok(&["peer", "add", &b_id, "--addr", &format!("127.0.0.1:{pb}"), "--folder", "docs"]);
    b_ok(&["peer", "add", &a_id, "--addr", &format!("127.0.0.1:{pa}"), "--folder", "docs"]);
    let da = a.start(pa);
    let log = std::fs::File::create(b.scratch.join("daemon.log")).expect("log");
    let db = util::Daemon {
        child: Command::new(util::fsync_bin())
            .arg("--home")
            .arg(&b_home)
            .args(["run", "--listen", &format!("127.0.0.1:{pb}")])
            .stderr(log)
            .spawn()
            .expect("starts"),
    };
    std::fs::write(ra.join("first.txt"), "before the disk filled\n").expect("write");
    eventually("first sync", 15, || read(&rb.join("first.txt")).is_some());

    // The disk fills up. A change arrives: it cannot be saved, so it is not
    // written into the folder either, and both log and status say why.
    let filler = fill(&small);
    std::fs::write(ra.join("second.txt"), "while the disk was full\n".repeat(2000)).expect("write");
    eventually("the error in b's status", 15, || b_status().is_some_and(|s| !s["store_error"].is_null()));
    let st = b_status().expect("status");
    let err = st["store_error"].as_str().unwrap_or_default().to_owned();
    assert!(st["errors"].as_array().is_some_and(|e| !e.is_empty()), "{st}");
    assert!(b_ok(&["status"]).contains("NOT SAVING"));
    assert!(b.log().contains("cannot save changes to the store"), "{}", b.log());
    eprintln!("the store error shown: {err}");
    assert!(!rb.join("second.txt").exists(), "an unsaved change was written into the folder");

    // Space returns: B catches up by itself.
    std::fs::remove_file(&filler).expect("free space");
    eventually("b recovers and writes the change", 20, || {
        read(&rb.join("second.txt")).is_some_and(|t| t.len() == "while the disk was full\n".len() * 2000)
    });
    eventually("the error clears", 10, || b_status().is_some_and(|s| s["store_error"].is_null()));
    std::fs::write(rb.join("third.txt"), "after\n").expect("write");
    eventually("b's change reaches a", 10, || read(&ra.join("third.txt")).as_deref() == Some("after\n"));

    // The store is intact: a restart opens it and has everything.
    assert_eq!(db.stop(), Some(0), "{}", b.log());
    let out = b_run(&["cat", rb.join("second.txt").to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), "while the disk was full\n".len() * 2000);
    assert_eq!(da.stop(), Some(0));
}
