//! `fsync mount` on the real binary: one node presents the folder through
//! FUSE, the other watches a real directory; edits flow both ways, merge,
//! survive kill -9, and the mount never outlives its daemon. Needs root and
//! /dev/fuse; skipped with a message otherwise.

#![allow(missing_docs)]

mod util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use util::{eventually, read, Daemon, Pair};

fn can_mount() -> bool {
    let ok = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_ok();
    if !ok {
        eprintln!("skipped: /dev/fuse is not usable here (root and the fuse module are needed)");
    }
    ok
}

fn mounted(point: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines().any(|l| l.split(' ').nth(4) == point.to_str())
}

/// Lazily unmounts at the end of a test, whatever happened (a killed
/// daemon leaves its mount behind).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        // (Mounts may be stacked: a stale one under a new one.)
        for _ in 0..5 {
            if !mounted(&self.0) {
                break;
            }
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Node a mounts "docs" at a's scratch/mnt.
fn start_mount(p: &Pair) -> (Daemon, PathBuf) {
    let point = p.a.scratch.join("mnt");
    // (A stale mount there answers ENOTCONN, so the directory "exists".)
    let _ = std::fs::create_dir_all(&point);
    let d = p.a.spawn(&["mount", "docs", point.to_str().expect("utf-8"), "--listen", &format!("127.0.0.1:{}", p.pa)]);
    // Up and answering (a stale mount of a killed daemon is listed too).
    eventually("the mount is up", 15, || mounted(&point) && std::fs::metadata(&point).is_ok());
    (d, point)
}

fn time_until(what: &str, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    eventually(what, 15, f);
    start.elapsed()
}

#[test]
fn a_mount_and_a_directory_sync_both_ways() {
    if !can_mount() {
        return;
    }
    let p = Pair::new("mount");
    let _cleanup = Unmount(p.a.scratch.join("mnt"));
    std::fs::write(p.db("from-b.txt"), "made on b before anything ran\n").expect("write");
    let (da, point) = start_mount(&p);
    let db = p.b.start(p.pb);
    let m = |f: &str| point.join(f);

    eventually("b's file shows in the mount", 15, || {
        read(&m("from-b.txt")).as_deref() == Some("made on b before anything ran\n")
    });
    // Through the mount to b's directory, and back, each within a second.
    std::fs::write(m("from-mount.txt"), "written through the mount\n").expect("write");
    let t1 =
        time_until("the mount's file on b", || read(&p.db("from-mount.txt")).as_deref() == Some("written through the mount\n"));
    std::fs::write(p.db("from-b.txt"), "made on b before anything ran\nand edited live\n").expect("write");
    let t2 = time_until("b's edit in the mount", || {
        read(&m("from-b.txt")).as_deref() == Some("made on b before anything ran\nand edited live\n")
    });
    assert!(t1 < Duration::from_secs(1) && t2 < Duration::from_secs(1), "mount to b {t1:?}, b to mount {t2:?}");
    // Directories, renames, deletes and the exec bit, through programs.
    let sh = |script: &str| {
        let out = std::process::Command::new("sh").arg("-c").arg(script).current_dir(&point).output().expect("sh");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh("mkdir -p sub/deep && echo x > sub/deep/x.sh && chmod +x sub/deep/x.sh && mv from-mount.txt sub/moved.txt && sed -i 's/live/live, twice/' from-b.txt");
    eventually("programs' changes on b", 15, || {
        read(&p.db("sub/moved.txt")).as_deref() == Some("written through the mount\n")
            && !p.db("from-mount.txt").exists()
            && read(&p.db("from-b.txt")).is_some_and(|t| t.ends_with("twice\n"))
            && std::fs::metadata(p.db("sub/deep/x.sh"))
                .is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o100 != 0)
    });
    // The mounted folder's own directory is left alone while mounted.
    assert!(std::fs::read_dir(p.da("")).map(|d| d.count()).unwrap_or(0) == 0, "a's directory was written while mounted");

    // Concurrent edits, made while b is stopped, merge (CONTRACT section 2).
    std::fs::write(m("plan.txt"), "one\ntwo\nthree\n").expect("write");
    // Its content, not only its name: an edit b made on the empty file
    // would be a second copy of the text, concurrent with it.
    eventually("plan on b", 15, || read(&p.db("plan.txt")).as_deref() == Some("one\ntwo\nthree\n"));
    assert_eq!(db.stop(), Some(0), "{}", p.b.log());
    std::fs::write(m("plan.txt"), "one (mount)\ntwo\nthree\n").expect("write");
    std::fs::write(p.db("plan.txt"), "one\ntwo\nthree (b)\n").expect("write");
    std::fs::remove_file(p.db("from-b.txt")).expect("rm");
    std::fs::write(m("from-b.txt"), "edited in the mount while b deleted it\n").expect("write");
    let db = p.b.start(p.pb);
    let merged = "one (mount)\ntwo\nthree (b)\n";
    eventually("merged on both", 15, || {
        read(&m("plan.txt")).as_deref() == Some(merged) && read(&p.db("plan.txt")).as_deref() == Some(merged)
    });
    eventually("edit beats delete on both", 15, || {
        read(&p.db("from-b.txt")).as_deref() == Some("edited in the mount while b deleted it\n")
            && read(&m("from-b.txt")).as_deref() == Some("edited in the mount while b deleted it\n")
    });

    // SIGTERM: exit 0, unmounted.
    assert_eq!(da.stop(), Some(0), "{}", p.a.log());
    assert!(!mounted(&point), "the mount outlived its daemon");
    assert_eq!(db.stop(), Some(0), "{}", p.b.log());
}

#[test]
fn fsynced_writes_survive_kill_and_the_stale_mount_is_cleared() {
    if !can_mount() {
        return;
    }
    let p = Pair::new("mount-kill");
    let _cleanup = Unmount(p.a.scratch.join("mnt"));
    let (mut da, point) = start_mount(&p);
    let mut f = std::fs::File::create(point.join("durable.txt")).expect("create");
    std::io::Write::write_all(&mut f, b"acknowledged by fsync\n").expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    da.child.kill().expect("kill -9");
    let _ = da.child.wait();
    // A crashed mount answers "transport endpoint is not connected".
    assert!(mounted(&point), "expected a stale mount after kill -9");
    assert_eq!(std::fs::metadata(&point).expect_err("stale").raw_os_error(), Some(107));

    let (da, point) = start_mount(&p);
    assert_eq!(read(&point.join("durable.txt")).as_deref(), Some("acknowledged by fsync\n"));
    assert!(p.a.log().contains("stale mount"), "{}", p.a.log());
    // And it reaches the peer.
    let db = p.b.start(p.pb);
    eventually("the fsynced file on b", 15, || read(&p.db("durable.txt")).as_deref() == Some("acknowledged by fsync\n"));
    assert_eq!(da.stop(), Some(0), "{}", p.a.log());
    // `fsync mount` runs until unmounted: unmounting it from outside stops
    // the daemon cleanly.
    let (mut da, point) = start_mount(&p);
    let out = std::process::Command::new("umount").arg(&point).output().expect("umount");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("the daemon exits after the unmount", 10, || matches!(da.child.try_wait(), Ok(Some(_))));
    assert_eq!(da.child.wait().expect("status").code(), Some(0), "{}", p.a.log());
    assert_eq!(db.stop(), Some(0), "{}", p.b.log());
    assert!(!mounted(&point));
}

#[test]
fn mount_refuses_unknown_folders_and_points_inside_watched_folders() {
    let p = Pair::new("mount-refuse");
    let err = p.a.fails(&["mount", "nope", p.a.scratch.join("m").to_str().expect("utf-8")]);
    assert!(err.contains("no folder named"), "{err}");
    p.a.ok(&["folder", "add", "other", p.a.scratch.join("other").to_str().expect("utf-8")]);
    let err = p.a.fails(&["mount", "docs", p.a.scratch.join("other/inside").to_str().expect("utf-8")]);
    assert!(err.contains("inside folder"), "{err}");
    // Mounted over, what is there would be hidden.
    let full = p.a.scratch.join("full");
    std::fs::create_dir_all(&full).expect("mkdir");
    std::fs::write(full.join("kept.txt"), "kept\n").expect("write");
    let err = p.a.fails(&["mount", "docs", full.to_str().expect("utf-8"), "--listen", "127.0.0.1:0"]);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(read(&full.join("kept.txt")).as_deref(), Some("kept\n"));
}

#[test]
fn a_past_state_mounts_read_only_and_shows_what_the_folder_held_then() {
    if !can_mount() {
        return;
    }
    let p = Pair::new("mount-at");
    let docs_a = p.a.scratch.join("docs");
    std::fs::create_dir_all(docs_a.join("dir")).expect("mkdir");
    std::fs::write(p.da("notes.txt"), "first\n").expect("write");
    std::fs::write(p.da("dir/x.txt"), "x\n").expect("write");
    std::fs::write(p.da("img.bin"), util::noise(300_000, 3)).expect("write");
    std::os::unix::fs::symlink("notes.txt", p.da("link")).expect("symlink");
    let (_da, _db) = (p.a.start(p.pa), p.b.start(p.pb));
    eventually("b has it", 20, || read(&p.db("dir/x.txt")).is_some() && p.db("img.bin").exists());
    let then = util::snapshot(&docs_a);
    // A whole second later (TIME has second resolution), changes on both.
    let secs = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let t = secs() + 1;
    while secs() < t + 1 {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(p.db("notes.txt"), "second\n").expect("write");
    std::fs::remove_dir_all(p.db("dir")).expect("rm -r");
    std::fs::write(p.da("img.bin"), util::noise(200_000, 4)).expect("write");
    std::fs::write(p.da("new.txt"), "later\n").expect("write");
    eventually("a has b's changes", 20, || read(&p.da("notes.txt")).as_deref() == Some("second\n") && !p.da("dir").exists());
    let now = util::snapshot(&docs_a);

    let point = p.a.scratch.join("past");
    std::fs::create_dir_all(&point).expect("mkdir");
    let _unmount = Unmount(point.clone());
    let out = p.a.ok(&["mount", "docs", point.to_str().expect("utf-8"), "--at", &t.to_string()]);
    assert!(out.contains("read-only"), "{out}");
    assert!(mounted(&point));
    assert_eq!(util::snapshot(&point), then, "the view holds the folder of then");
    let err = std::fs::write(point.join("notes.txt"), "no").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
    assert!(std::fs::remove_file(point.join("link")).is_err());
    assert_eq!(util::snapshot(&docs_a), now, "the live folder is untouched");
    let again = p.a.fails(&["mount", "docs", point.to_str().expect("utf-8"), "--at", &t.to_string()]);
    assert!(!again.is_empty());

    // Unmounted from outside: the daemon lets it go and keeps running.
    assert!(std::process::Command::new("umount").arg(&point).status().expect("umount").success());
    assert!(!mounted(&point));
    std::fs::write(p.da("notes.txt"), "third\n").expect("write");
    eventually("still syncing", 20, || read(&p.db("notes.txt")).as_deref() == Some("third\n"));
    eventually("the daemon forgot the view", 10, || p.a.log().contains("past view unmounted"));
}
