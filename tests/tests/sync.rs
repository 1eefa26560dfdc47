//! `fsync run` on two real nodes over 127.0.0.1: first sync, live edits
//! both ways, offline edits found at start, concurrent edits made while one
//! node was stopped (CONTRACT section 2), one daemon per home, clean stop.

#![allow(missing_docs)]

mod util;

use util::{eventually, free_port, noise, read, snapshot, Pair};

#[test]
fn two_daemons_sync_live_and_stop_cleanly() {
    let p = Pair::new("live");
    std::fs::write(p.da("before.txt"), "written before the daemon started\n").expect("write");
    let (da, db) = (p.a.start(p.pa), p.b.start(p.pb));
    eventually("the offline file on b", 15, || {
        read(&p.db("before.txt")).as_deref() == Some("written before the daemon started\n")
    });
    std::fs::write(p.da("hello.txt"), "hello from a\n").expect("write");
    eventually("a's new file on b", 10, || read(&p.db("hello.txt")).as_deref() == Some("hello from a\n"));
    std::fs::create_dir_all(p.db("sub")).expect("mkdir");
    std::fs::write(p.db("sub/reply.txt"), "reply from b\n").expect("write");
    eventually("b's file on a", 10, || read(&p.da("sub/reply.txt")).as_deref() == Some("reply from b\n"));
    // Status from the running daemon: b is connected, three files.
    eventually("b connected in a's status", 10, || p.a.status()["peers"][0]["connected"] == true);
    // Once everything is across: nothing to send, versions equal.
    eventually("nothing left to send", 10, || {
        p.a.status()["peers"][0]["to_send"] == 0 && p.b.status()["peers"][0]["to_send"] == 0
    });
    let (sa, sb) = (p.a.status(), p.b.status());
    assert_eq!(sa["running"], true);
    assert_eq!(sa["folders"][0]["name"], "docs");
    assert_eq!(sa["folders"][0]["files"], 3);
    assert_eq!(sa["folders"][0]["version"], sb["folders"][0]["version"], "in sync means equal versions");
    assert_eq!(sa["folders"][0]["version"].as_object().map(|v| v.len()), Some(2), "changes from both devices: {sa}");
    assert_eq!(sa["peers"][0]["to_fetch"], 0);
    assert!(sa["peers"][0]["last_seen"].as_u64().is_some(), "{sa}");
    assert_eq!(sa["peers"][0]["address"], format!("127.0.0.1:{}", p.pb).as_str(), "{sa}");
    assert_eq!(sa["errors"].as_array().map(Vec::len), Some(0), "{sa}");
    assert!(sa["store_error"].is_null());
    assert!(p.a.ok(&["status"]).contains("daemon  running"));
    // One daemon per home.
    let second = p.a.run(&["run", "--listen", &format!("127.0.0.1:{}", free_port())]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));
    assert_eq!(da.stop(), Some(0), "a did not exit cleanly: {}", p.a.log());
    assert_eq!(db.stop(), Some(0), "b did not exit cleanly: {}", p.b.log());
    // Status without a daemon: from config and store.
    let st = p.a.status();
    assert_eq!(st["running"], false);
    assert_eq!(st["peers"][0]["connected"], false);
    assert_eq!(st["folders"][0]["files"], 3);
    assert!(st["peers"][0]["last_seen"].as_u64().is_some(), "last seen is kept: {st}");
    assert!(p.a.ok(&["status"]).contains("last seen"));
}

#[test]
fn edits_made_while_a_node_was_stopped_merge() {
    let p = Pair::new("offline");
    std::fs::write(p.da("plan.txt"), "one\ntwo\nthree\n").expect("write");
    std::fs::write(p.da("doomed.txt"), "keep me\n").expect("write");
    let (da, db) = (p.a.start(p.pa), p.b.start(p.pb));
    eventually("first sync", 15, || read(&p.db("plan.txt")).is_some() && read(&p.db("doomed.txt")).is_some());
    assert_eq!(db.stop(), Some(0));
    // While b is stopped: both edit plan.txt at different lines; a edits
    // doomed.txt and b deletes it.
    std::fs::write(p.da("plan.txt"), "ONE\ntwo\nthree\n").expect("write");
    std::fs::write(p.db("plan.txt"), "one\ntwo\nTHREE\n").expect("write");
    std::fs::write(p.da("doomed.txt"), "keep me, edited\n").expect("write");
    std::fs::remove_file(p.db("doomed.txt")).expect("rm");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let db = p.b.start(p.pb);
    let merged = "ONE\ntwo\nTHREE\n";
    eventually("the merged text on both", 20, || {
        read(&p.da("plan.txt")).as_deref() == Some(merged) && read(&p.db("plan.txt")).as_deref() == Some(merged)
    });
    let ok = || {
        read(&p.da("doomed.txt")).as_deref() == Some("keep me, edited\n")
            && read(&p.db("doomed.txt")).as_deref() == Some("keep me, edited\n")
    };
    let start = std::time::Instant::now();
    while !ok() && start.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        ok(),
        "edit vs delete: a has {:?}, b has {:?}\nA LOG:\n{}\nB LOG:\n{}",
        read(&p.da("doomed.txt")),
        read(&p.db("doomed.txt")),
        p.a.log(),
        p.b.log()
    );
    assert_eq!(da.stop(), Some(0), "{}", p.a.log());
    assert_eq!(db.stop(), Some(0), "{}", p.b.log());
    // A clean stop leaves a snapshot of the texts beside the history; what
    // loads from it (as `cat` and the next start do) is the merged text.
    for n in [&p.a, &p.b] {
        let store = fsync_store::RedbStore::open(&n.home.join("store.redb")).expect("store opens");
        let key = fsync_core::store::snapshot_key("docs");
        assert!(fsync_core::store::Store::get_state(&store, &key).expect("read").is_some(), "no snapshot at stop");
        drop(store);
        assert_eq!(n.ok(&["cat", &n.scratch.join("docs/plan.txt").to_string_lossy()]), merged);
    }
}

/// CONTRACT: a binary file written on two nodes ends with the same bytes
/// everywhere; the other version is listed by `fsync log` and readable with
/// `fsync cat --at`, with the daemon running and without it.
#[test]
fn concurrent_binary_writes_keep_the_loser_in_history() {
    let p = Pair::new("binary");
    let (da, db) = (p.a.start(p.pa), p.b.start(p.pb));
    std::fs::write(p.da("img.bin"), b"\x00first version\x00").expect("write");
    eventually("first sync", 15, || std::fs::read(p.db("img.bin")).ok().as_deref() == Some(&b"\x00first version\x00"[..]));
    assert_eq!(db.stop(), Some(0));
    let va: Vec<u8> = b"\x00from a\x00".repeat(50);
    let vb: Vec<u8> = b"\x00from b\x00".repeat(70);
    std::fs::write(p.da("img.bin"), &va).expect("write");
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(p.db("img.bin"), &vb).expect("write");
    let db = p.b.start(p.pb);
    eventually("the same bytes on both", 20, || {
        let (x, y) = (std::fs::read(p.da("img.bin")).ok(), std::fs::read(p.db("img.bin")).ok());
        x.is_some() && x == y && (x.as_deref() == Some(&va[..]) || x.as_deref() == Some(&vb[..]))
    });
    let winner = std::fs::read(p.da("img.bin")).expect("read");
    let loser = if winner == va { vb.clone() } else { va.clone() };
    let file = p.da("img.bin");
    let file = file.to_str().expect("utf-8");
    // Through the running daemon.
    let log = p.a.ok(&["log", file, "--json"]);
    assert!(log.trim_start().starts_with('[') && log.contains("\"version\"") && log.contains("\"parents\""), "{log}");
    let parsed: serde_json::Value = serde_json::from_str(&log).expect("log --json is JSON");
    let versions: Vec<String> =
        parsed.as_array().expect("an array").iter().filter_map(|c| c["version"].as_str().map(str::to_owned)).collect();
    let found = versions.iter().any(|v| p.a.run(&["cat", file, "--at", v]).stdout == loser);
    assert!(found, "the losing version is not readable through `fsync cat --at`: {log}");
    assert_eq!(p.a.run(&["cat", file]).stdout, winner);
    // Without a daemon: from the store.
    assert_eq!(da.stop(), Some(0), "{}", p.a.log());
    let found = versions.iter().any(|v| p.a.run(&["cat", file, "--at", v]).stdout == loser);
    assert!(found, "offline `fsync cat --at` cannot read the losing version");
    let err = p.a.fails(&["cat", file, "--at", "nonsense"]);
    assert!(err.contains("not a version"), "{err}");
    assert_eq!(db.stop(), Some(0));
}

/// The rest of CONTRACT section 2 on the real binary, made concurrent by
/// stopping b, changing both sides, and starting b again.
#[test]
fn contract_rows_after_a_partition() {
    let p = Pair::new("rows");
    std::fs::write(p.da("same-place.txt"), "[]\n").expect("write");
    std::fs::write(p.da("edit-move.txt"), "original\n").expect("write");
    std::fs::write(p.da("two-names.txt"), "data\n").expect("write");
    std::fs::create_dir_all(p.da("dir")).expect("mkdir");
    std::fs::write(p.da("dir/old.txt"), "old\n").expect("write");
    std::fs::write(p.da("run.sh"), "#!/bin/sh\n").expect("write");
    std::fs::write(p.da("config.txt"), "port = 8080\nname = x\n").expect("write");
    std::fs::write(p.da("replaced.txt"), "keep\nold line\n").expect("write");
    let da = p.a.start(p.pa);
    let db = p.b.start(p.pb);
    let synced =
        || snapshot(&p.a.scratch.join("docs")) == snapshot(&p.b.scratch.join("docs")) && read(&p.db("run.sh")).is_some();
    let start = std::time::Instant::now();
    while !synced() && start.elapsed() < std::time::Duration::from_secs(15) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        synced(),
        "first sync:\na: {:?}\nb: {:?}\nA LOG:\n{}\nB LOG:\n{}",
        snapshot(&p.a.scratch.join("docs")),
        snapshot(&p.b.scratch.join("docs")),
        p.a.log(),
        p.b.log()
    );
    assert_eq!(db.stop(), Some(0));

    // Concurrent changes: a (running) and b (stopped) both act.
    std::fs::write(p.da("same-place.txt"), "[aaa]\n").expect("write");
    std::fs::write(p.db("same-place.txt"), "[bbb]\n").expect("write");
    std::fs::write(p.da("edit-move.txt"), "original, edited on a\n").expect("write");
    std::fs::create_dir_all(p.db("moved")).expect("mkdir");
    std::fs::rename(p.db("edit-move.txt"), p.db("moved/edit-move.txt")).expect("mv");
    std::fs::rename(p.da("two-names.txt"), p.da("name-a.txt")).expect("mv");
    std::fs::rename(p.db("two-names.txt"), p.db("name-b.txt")).expect("mv");
    std::fs::write(p.da("new.md"), "new from a\n").expect("write");
    std::fs::write(p.db("new.md"), "new from b\n").expect("write");
    std::fs::remove_dir_all(p.da("dir")).expect("rm -r");
    std::fs::write(p.db("dir/added.txt"), "added on b\n").expect("write");
    let status = std::process::Command::new("chmod").arg("+x").arg(p.db("run.sh")).status().expect("chmod");
    assert!(status.success());
    std::os::unix::fs::symlink("run.sh", p.db("link")).expect("ln -s");
    // One short value changed on both; a line replaced on a, deleted on b.
    std::fs::write(p.da("config.txt"), "port = 9090\nname = x\n").expect("write");
    std::fs::write(p.db("config.txt"), "port = 8081\nname = x\n").expect("write");
    std::fs::write(p.da("replaced.txt"), "keep\nnew line\n").expect("write");
    std::fs::write(p.db("replaced.txt"), "keep\n").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let db = p.b.start(p.pb);

    let (ra, rb) = (p.a.scratch.join("docs"), p.b.scratch.join("docs"));
    let converged = || {
        let s = snapshot(&ra);
        s == snapshot(&rb) && s.iter().any(|(n, _)| n == "link") && s.iter().any(|(n, c)| n == "run.sh" && c.starts_with("x "))
    };
    let start = std::time::Instant::now();
    while !converged() && start.elapsed() < std::time::Duration::from_secs(25) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let s = snapshot(&ra);
    assert!(converged(), "not converged:\na: {s:?}\nb: {:?}\nA LOG:\n{}\nB LOG:\n{}", snapshot(&rb), p.a.log(), p.b.log());
    let get = |n: &str| s.iter().find(|(p, _)| p == n).map(|(_, c)| c.clone());
    // Inserts at one place: both, not interleaved.
    let sp = get("same-place.txt").expect("same-place.txt");
    assert!(sp == "[aaabbb]\n" || sp == "[bbbaaa]\n", "{sp}");
    // Edited here, moved there: at the new path, with the edit.
    assert_eq!(
        get("moved/edit-move.txt").as_deref(),
        Some("original, edited on a\n"),
        "A LOG:\n{}\nB LOG:\n{}",
        p.a.log(),
        p.b.log()
    );
    assert_eq!(get("edit-move.txt"), None);
    // Renamed to two names: one name, no duplicate.
    let names: Vec<&String> =
        s.iter().map(|(n, _)| n).filter(|n| n.starts_with("name-") || n.starts_with("two-names")).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // Same new path on both: both contents, one of them renamed.
    let news: Vec<&String> = s.iter().filter(|(n, _)| n.starts_with("new")).map(|(_, c)| c).collect();
    assert_eq!(news.len(), 2, "{s:?}");
    assert!(news.iter().any(|c| *c == "new from a\n") && news.iter().any(|c| *c == "new from b\n"), "{s:?}");
    // Directory deleted on a, file added in it on b: the file survives.
    assert_eq!(get("dir/added.txt").as_deref(), Some("added on b\n"));
    assert_eq!(get("dir/old.txt"), None);
    // A short line changed on both: both versions, no blend of the two.
    let config = get("config.txt").expect("config.txt");
    let lines: Vec<&str> = config.lines().collect();
    assert_eq!(lines.len(), 3, "{config:?}");
    assert!(lines.contains(&"port = 9090") && lines.contains(&"port = 8081") && lines.contains(&"name = x"), "{config:?}");
    // A line replaced on a and deleted on b: the new line survives.
    assert_eq!(get("replaced.txt").as_deref(), Some("keep\nnew line\n"));
    // Executable bit and symlink.
    assert!(get("run.sh").is_some_and(|c| c.starts_with("x ")));
    assert_eq!(get("link").as_deref(), Some("-> run.sh"));
    assert_eq!(da.stop(), Some(0));
    assert_eq!(db.stop(), Some(0));
}

#[test]
fn long_work_is_reported_in_the_log() {
    let p = Pair::new("progress");
    // A first scan with many files, and a large transfer: with stderr not a
    // terminal, progress comes as log lines (every 1 ms here, 5 s by default).
    for d in 0..10 {
        std::fs::create_dir_all(p.da(&format!("d{d}"))).expect("mkdir");
        for f in 0..150 {
            std::fs::write(p.da(&format!("d{d}/f{f}.txt")), format!("file {d}/{f}\n")).expect("write");
        }
    }
    let env = [("FSYNC_PROGRESS_MS", "1")];
    let da = p.a.spawn_env(&["run", "--listen", &format!("127.0.0.1:{}", p.pa)], &env);
    eventually("a's first scan", 20, || p.a.log().contains("fsync running"));
    let log = p.a.log();
    assert!(log.contains("scanning: ") && log.contains("scanned: 1510 paths, 1500 files read"), "{log}");
    // B takes the 1,510 files first: writing them holds its loop for a
    // while, and a transfer that ran meanwhile was over before a progress
    // tick could see it (a flaky failure on a clean clone).
    let db = p.b.spawn_env(&["run", "--listen", &format!("127.0.0.1:{}", p.pb)], &env);
    eventually("the files on b", 60, || std::fs::read_to_string(p.db("d9/f149.txt")).is_ok_and(|t| t == "file 9/149\n"));
    // A transfer can still fall between two progress ticks when the
    // machine is busy (the daemon's loop is saving what arrives): up to
    // six large files, each new, until one is seen in progress.
    let seen = || p.b.log().contains("syncing") && p.b.log().contains("chunks_to_fetch");
    for n in 0..6u32 {
        let big: Vec<u8> = (0..40_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ n as u8).collect();
        let name = format!("big{n}.bin");
        std::fs::write(p.da(&name), &big).expect("write");
        eventually("the big file on b", 60, || std::fs::metadata(p.db(&name)).is_ok_and(|m| m.len() == big.len() as u64));
        if seen() {
            break;
        }
    }
    assert!(seen(), "{}", p.b.log());
    assert_eq!(da.stop(), Some(0));
    assert_eq!(db.stop(), Some(0));
}

/// README: "a second signal exits at once (the store is crash-safe)".
#[test]
fn a_second_signal_exits_at_once_and_the_store_still_opens() {
    let p = Pair::new("twosignals");
    std::fs::write(p.da("kept.txt"), "saved before the signals\n").expect("write");
    let mut da = p.a.start(p.pa);
    eventually("a running", 15, || p.a.try_status().is_some_and(|s| s["running"] == true));
    let pid = da.child.id().to_string();
    for _ in 0..2 {
        let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    }
    let start = std::time::Instant::now();
    let code = loop {
        if let Ok(Some(s)) = da.child.try_wait() {
            break s.code();
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "still running after two signals: {}", p.a.log());
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(matches!(code, Some(0) | Some(130)), "exit code {code:?}: {}", p.a.log());
    // Whatever point it stopped at, the store opens and holds the file.
    let cat = p.a.run(&["cat", p.da("kept.txt").to_str().expect("utf-8")]);
    assert!(cat.status.success(), "{}", String::from_utf8_lossy(&cat.stderr));
    assert_eq!(cat.stdout, b"saved before the signals\n");
    let again = p.a.start(p.pa);
    eventually("a restarts", 15, || p.a.try_status().is_some_and(|s| s["running"] == true));
    assert_eq!(again.stop(), Some(0));
}

/// A folder shared with a big file in it: the first scan writes the file's
/// chunks to the store early (past 32 MiB), before the folder itself is
/// saved, and the start's garbage collection, which counted only folders
/// the store had, removed them. The node then lacked its own file's
/// content: the peer never got it, and `cat` said it was not on the node.
#[test]
fn a_big_file_in_a_folder_shared_for_the_first_time_reaches_the_peer_and_stays_readable() {
    let p = Pair::new("first-big");
    let (ra, rb) = (p.da(""), p.db(""));
    std::fs::create_dir_all(&ra).expect("mkdir");
    let bytes = noise(48 << 20, 5);
    std::fs::write(ra.join("big.bin"), &bytes).expect("write");
    let (_da, _db) = (p.a.start(p.pa), p.b.start(p.pb));
    eventually("big.bin whole on b", 90, || std::fs::read(rb.join("big.bin")).ok().as_deref() == Some(bytes.as_slice()));
    let out = p.a.run(&["cat", ra.join("big.bin").to_str().expect("utf-8")]);
    assert!(out.status.success() && out.stdout == bytes, "{}", String::from_utf8_lossy(&out.stderr));
}

/// A first share holding the changes of several saved batches (24 MiB of
/// text, batches of 4 MiB): every batch reaches the peer. The node saved one batch per pass
/// and hands peers only what is saved; with no pass after it, the rest
/// stayed unsent and the peer stopped at part of the folder.
#[test]
fn a_first_share_of_more_changes_than_one_batch_reaches_the_peer_whole() {
    let p = Pair::new("first-many");
    let (ra, rb) = (p.da(""), p.db(""));
    let line = "x".repeat(99) + "\n";
    for i in 0..800 {
        let dir = ra.join(format!("d{}", i % 20));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("f{i}.txt")), line.repeat(300)).expect("write");
    }
    let (_da, _db) = (p.a.start(p.pa), p.b.start(p.pb));
    let count = |root: &std::path::Path| walkdir_files(root);
    eventually("every file on b", 90, || count(&rb) == 800);
}

fn walkdir_files(root: &std::path::Path) -> usize {
    let mut n = 0;
    for d in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if d.file_type().is_ok_and(|t| t.is_dir()) {
            n += std::fs::read_dir(d.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "txt"))
                .count();
        }
    }
    n
}
