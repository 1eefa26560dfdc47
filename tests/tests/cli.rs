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
    // Its own ID is not a peer; a file is not a folder.
    let a_id = a.ok(&["id"]).trim().to_owned();
    let err = a.fails(&["peer", "add", &a_id, "--folder", "docs"]);
    assert!(err.contains("own ID"), "{err}");
    std::fs::write(a.scratch.join("file"), "x").expect("write");
    let err = a.fails(&["folder", "add", "file", a.scratch.join("file").to_str().expect("utf-8")]);
    assert!(err.contains("not a directory"), "{err}");
    // Nor may a folder hold the home, or another folder.
    let err = a.fails(&["folder", "add", "all", a.scratch.to_str().expect("utf-8")]);
    assert!(err.contains("home"), "{err}");
    let err = a.fails(&["folder", "add", "inner", a.scratch.join("docs/inner").to_str().expect("utf-8")]);
    assert!(err.contains("overlaps"), "{err}");
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

/// Any string on the command line gets a result or a clear error, never a
/// panic: seeded hostile arguments (empty, traversal, huge, non-ASCII,
/// control characters, names that are not UTF-8, extreme numbers) to every
/// command, with and without a running daemon; the daemon lives on, and
/// the config they leave behind still starts (or refuses clearly).
#[test]
fn hostile_arguments_to_every_command_are_answered_without_a_panic() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let n = Node::new("argfuzz");
    let id = one_line(&n.ok(&["init"])).to_owned();
    let docs = n.scratch.join("docs");
    n.ok(&["folder", "add", "docs", docs.to_str().expect("utf-8")]);
    std::fs::write(docs.join("f.txt"), "x\n").expect("write");
    let strings: Vec<OsString> = [
        "",
        "docs",
        "..",
        "/",
        "-",
        "--",
        "\t",
        "a\nb",
        "é",
        "../../etc/passwd",
        "docs/../..",
        ":",
        "127.0.0.1:99999",
        "[::1]:0",
        "999999999999999999999d",
        "18446744073709551615",
        "0s",
        "fsync1-",
        "fsync1-AAAA",
        &id,
        "x:1",
        "0123456789abcdef0123456789abcdéf:1",
        "10m",
        "127.0.0.1:7420",
        "localhost:1",
    ]
    .iter()
    .map(OsString::from)
    .chain([OsString::from_vec(b"bad\xffname".to_vec()), OsString::from("x".repeat(5000))])
    .chain([OsString::from(docs.join("f.txt")), OsString::from(docs.join("nope")), OsString::from(docs.join("../x"))])
    .collect();
    let commands: [&[&str]; 10] = [
        &["folder", "add", "_", "_"],
        &["peer", "add", "_", "--addr", "_", "--folder", "_"],
        &["invite", "_", "--expires", "_", "--addr", "_"],
        &["join", "_", "_"],
        &["log", "_"],
        &["log", "_", "--json"],
        &["cat", "_", "--at", "_"],
        &["status", "_"],
        &["mount", "_", "_", "--listen", "_"],
        &["run", "_", "--listen", "_"],
    ];
    // Relative paths land in the scratch directory.
    let cwd = n.scratch.join("cwd/inner");
    std::fs::create_dir_all(&cwd).expect("mkdir");
    let mut rng = util::Rng::new(11);
    let mut try_all = |n: &Node, round: &str| {
        for _ in 0..120 {
            let Some(cmd) = rng.pick(&commands) else { continue };
            let args: Vec<OsString> = cmd
                .iter()
                .map(|a| if *a == "_" { rng.pick(&strings).cloned().unwrap_or_default() } else { OsString::from(a) })
                .collect();
            // A mount over `/` is refused (not empty), but if that ever
            // broke, this machine would be hidden under it.
            if cmd.first() == Some(&"mount") && args.get(2).is_some_and(|p| p == "/") {
                continue;
            }
            // `run` and `mount` with arguments that work would run on:
            // they get a moment, then a stop.
            let mut child = std::process::Command::new(fsync_bin())
                .current_dir(&cwd)
                .arg("--home")
                .arg(&n.home)
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("fsync runs");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            let status = loop {
                if let Some(s) = child.try_wait().expect("wait") {
                    break s;
                }
                if std::time::Instant::now() > deadline {
                    let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
                    break child.wait().expect("wait");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().chars().take(60).collect()).collect();
            assert!(!err.contains("panicked"), "{round}: fsync {shown:?}: {err}");
            assert!(status.code().is_some_and(|c| c <= 2), "{round}: fsync {shown:?} ended with {status}: {err}");
            if !status.success() {
                assert!(!err.trim().is_empty(), "{round}: fsync {shown:?} failed saying nothing");
            }
        }
    };
    try_all(&n, "stopped");
    let port = free_port();
    let d = n.start(port);
    eventually("the daemon running", 15, || n.try_status().is_some_and(|s| s["running"] == true));
    try_all(&n, "running");
    assert!(n.try_status().is_some_and(|s| s["running"] == true), "the daemon died: {}", n.log_tail(30));
    assert!(!n.log().contains("panicked"), "{}", n.log_tail(30));
    assert_eq!(d.stop(), Some(0));
    // What the commands left in the config starts, or is refused clearly.
    let mut d = n.start(port);
    eventually("the daemon running again, or refusing clearly", 15, || {
        n.try_status().is_some_and(|s| s["running"] == true) || d.child.try_wait().ok().flatten().is_some()
    });
    assert!(!n.log().contains("panicked"), "{}", n.log_tail(30));
}

/// `status` asked at the very moment a daemon starts: it found no daemon
/// yet, then the daemon took the store. It is answered (by the daemon),
/// not refused with "in use by another fsync process".
#[test]
fn status_asked_as_the_daemon_starts_is_answered() {
    let n = slow_to_start("status-race", 200);
    n.ok(&["status"]);
    for round in 0..8 {
        let askers: Vec<std::process::Child> = (0..4)
            .map(|_| {
                n.command()
                    .args(["status", "--json"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("status")
            })
            .collect();
        let d = n.start(free_port());
        for a in askers {
            let out = a.wait_with_output().expect("status ends");
            assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        }
        eventually("the daemon up", 20, || n.status()["running"] == true);
        assert_eq!(d.stop(), Some(0), "{}", n.log());
    }
}

#[test]
fn a_port_in_use_is_named_with_its_cause_said_once() {
    let n = Node::new("port-in-use");
    n.ok(&["init"]);
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let err = n.fails(&["run", "--listen", &addr, "--http", "off"]);
    let line = one_line(&err);
    assert!(line.starts_with(&format!("fsync: cannot listen on {addr}: ")), "{line}");
    assert_eq!(line.matches("in use").count(), 1, "the cause once: {line}");

    let web = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let web = web.local_addr().expect("addr").to_string();
    let err = n.fails(&["run", "--listen", &format!("127.0.0.1:{}", free_port()), "--http", &web]);
    let line = one_line(&err);
    assert!(line.starts_with(&format!("fsync: cannot listen for HTTP on {web}: ")), "{line}");
    assert_eq!(line.matches("in use").count(), 1, "the cause once: {line}");
}
