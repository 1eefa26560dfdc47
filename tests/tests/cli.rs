//! CONTRACT section 1 on the real binary: init, id, folder add, peer add,
//! --home and FSYNC_HOME, errors that say what to do.

#![allow(missing_docs)]

mod util;

use std::process::Command;

use util::{eventually, free_port, fsync_bin, Node};

fn one_line(s: &str) -> &str {
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got {s:?}");
    lines[0]
}

#[test]
fn init_prints_one_id_and_keeps_it() {
    let n = Node::new("init");
    let first = n.ok(&["init"]);
    let id = one_line(&first).to_owned();
    assert_eq!(id.len(), 59, "{id}");
    assert_eq!(one_line(&n.ok(&["init"])), id, "a second init changed the identity");
    assert_eq!(one_line(&n.ok(&["id"])), id);
    // Two homes on one machine are two nodes.
    let m = Node::new("init2");
    assert_ne!(one_line(&m.ok(&["init"])), id);
}

#[test]
fn the_key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let n = Node::new("perm");
    n.ok(&["init"]);
    let key = std::fs::metadata(n.home.join("key.der")).expect("key");
    assert_eq!(key.permissions().mode() & 0o077, 0, "the private key is readable by others");
}

#[test]
fn fsync_home_from_the_environment() {
    let n = Node::new("env");
    let out = Command::new(fsync_bin()).env("FSYNC_HOME", &n.home).arg("init").output().expect("runs");
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(n.ok(&["id"]), id);
}

#[test]
fn commands_before_init_say_what_to_do() {
    let n = Node::new("noinit");
    let err = n.fails(&["id"]);
    assert!(err.contains("fsync") && err.contains("init"), "{err}");
    let err = n.fails(&["folder", "add", "x", n.scratch.join("x").to_str().expect("utf-8")]);
    assert!(err.contains("init"), "{err}");
}

#[test]
fn folder_add_creates_the_directory_and_records_it() {
    let n = Node::new("folder");
    n.ok(&["init"]);
    let path = n.scratch.join("notes/deep");
    n.ok(&["folder", "add", "notes", path.to_str().expect("utf-8")]);
    assert!(path.is_dir(), "PATH was not created");
    assert!(n.config().contains("name = \"notes\""), "{}", n.config());
    // Again the same: fine. Same name elsewhere: refused.
    n.ok(&["folder", "add", "notes", path.to_str().expect("utf-8")]);
    let err = n.fails(&["folder", "add", "notes", n.scratch.join("other").to_str().expect("utf-8")]);
    assert!(err.contains("already shared"), "{err}");
    let err = n.fails(&["folder", "add", "a/b", n.scratch.join("ab").to_str().expect("utf-8")]);
    assert!(err.contains("invalid folder name"), "{err}");
}

#[test]
fn status_works_before_any_daemon_ran() {
    let n = Node::new("status");
    let id = n.ok(&["init"]).trim().to_owned();
    n.ok(&["folder", "add", "docs", n.scratch.join("docs").to_str().expect("utf-8")]);
    let st = n.status();
    assert_eq!(st["device"], id.as_str());
    assert_eq!(st["running"], false);
    assert_eq!(st["folders"][0]["files"], 0);
    assert_eq!(st["folders"][0]["changes"], 0);
    assert!(n.ok(&["status"]).contains("not running"));
}

/// Commands given the moment a daemon starts (while it opens the store and
/// scans) reach it: `status` answers, a new folder and an invitation are not
/// written behind the back of a daemon that has already read its config.
#[test]
fn commands_right_after_start_reach_the_daemon() {
    let n = slow_to_start("early", 2000);
    let d = n.start(free_port());
    let extra = n.scratch.join("extra");
    n.ok(&["folder", "add", "extra", extra.to_str().expect("utf-8")]);
    n.ok(&["invite", "docs", "--expires", "10m"]);
    let st = n.status();
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["invites"], 1, "the daemon knows the invitation: {st}");
    eventually("the new folder is live", 15, || {
        let st = n.status();
        st["folders"].as_array().is_some_and(|f| f.iter().any(|f| f["name"] == "extra"))
    });
    std::fs::write(extra.join("x.txt"), "x\n").expect("write");
    eventually("a file in the new folder is taken in", 15, || {
        let st = n.status();
        st["folders"].as_array().is_some_and(|f| f.iter().any(|f| f["name"] == "extra" && f["files"] == 1))
    });
    assert_eq!(d.stop(), Some(0), "{}", n.log());
}

/// A node sharing folder "docs" with `files` files in it not yet taken
/// in: its first start takes a while.
fn slow_to_start(name: &str, files: usize) -> Node {
    let n = Node::new(name);
    n.ok(&["init"]);
    let docs = n.scratch.join("docs");
    n.ok(&["folder", "add", "docs", docs.to_str().expect("utf-8")]);
    for i in 0..files {
        std::fs::write(docs.join(format!("f{i}.txt")), format!("file {i}\n")).expect("write");
    }
    n
}

/// A signal while the daemon starts (here: taking in a big folder) stops it
/// at once with success, and the next start takes everything in.
#[test]
fn a_signal_while_starting_stops_at_once() {
    let n = slow_to_start("early-stop", 5000);
    let d = n.start(free_port());
    // The control socket exists once signals are watched.
    eventually("the control socket", 10, || n.home.join("control.sock").exists());
    let t = std::time::Instant::now();
    assert_eq!(d.stop(), Some(0), "{}", n.log());
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "the stop waited for the start");
    assert!(n.log().contains("stopped while starting"), "{}", n.log());
    let d = n.start(free_port());
    eventually("every file taken in", 60, || n.try_status().is_some_and(|st| st["folders"][0]["files"] == 5000));
    assert_eq!(d.stop(), Some(0), "{}", n.log());
}

#[test]
fn peer_add_checks_ids_addresses_and_folders() {
    let (a, b) = (Node::new("peer-a"), Node::new("peer-b"));
    a.ok(&["init"]);
    let b_id = b.ok(&["init"]).trim().to_owned();
    a.ok(&["folder", "add", "docs", a.scratch.join("docs").to_str().expect("utf-8")]);
    a.ok(&["peer", "add", &b_id, "--addr", "127.0.0.1:7420", "--addr", "127.0.0.1:7421", "--folder", "docs"]);
    let cfg = a.config();
    assert!(cfg.contains(&b_id) && cfg.contains("127.0.0.1:7421") && cfg.contains("\"docs\""), "{cfg}");
    // A peer with no address is fine (accepted, never dialled).
    let c_id = Node::new("peer-c").ok(&["init"]).trim().to_owned();
    a.ok(&["peer", "add", &c_id.to_lowercase(), "--folder", "docs"]);
    assert!(a.config().contains(&c_id), "IDs are accepted in lower case");
    // A typo in the ID is caught by its check characters.
    let mut typo = b_id.clone().into_bytes();
    typo[3] = if typo[3] == b'A' { b'B' } else { b'A' };
    let err = a.fails(&["peer", "add", std::str::from_utf8(&typo).expect("ascii"), "--folder", "docs"]);
    assert!(err.contains("typo"), "{err}");
    let err = a.fails(&["peer", "add", &b_id, "--folder", "nope"]);
    assert!(err.contains("no folder named") && err.contains("fsync folder add"), "{err}");
    let err = a.fails(&["peer", "add", &b_id, "--addr", "not-an-address", "--folder", "docs"]);
    assert!(err.contains("HOST:PORT"), "{err}");
}

#[test]
fn shell_completions() {
    let n = Node::new("completions");
    for shell in ["bash", "zsh", "fish"] {
        let out = n.ok(&["completions", shell]);
        assert!(out.contains("fsync") && out.contains("join") && out.contains("invite"), "{shell}: {out}");
    }
    let err = n.fails(&["completions", "cmd.exe"]);
    assert!(err.contains("invalid value"), "{err}");
}
