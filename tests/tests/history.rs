//! History people can use (CONTRACT section 5) on the real binary:
//! `fsync ls --deleted`, `fsync log` and `cat --at` of deleted paths, and
//! `fsync restore` of a tree deleted on another node, of a version, and of
//! a time.

#![allow(missing_docs)]

mod util;

use std::os::unix::fs::PermissionsExt;

use util::{eventually, free_port, noise, read, snapshot, Node, Pair};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8")
}

fn make_proj(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("proj/sub/deeper")).expect("mkdir");
    std::fs::write(root.join("proj/a.txt"), "alpha\n").expect("write");
    std::fs::write(root.join("proj/sub/b.txt"), "beta\n").expect("write");
    std::fs::write(root.join("proj/sub/deeper/c.txt"), "gamma\n").expect("write");
    std::fs::write(root.join("proj/img.bin"), noise(300_000, 7)).expect("write");
    std::fs::write(root.join("proj/run.sh"), "#!/bin/sh\necho hi\n").expect("write");
    std::fs::set_permissions(root.join("proj/run.sh"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("a.txt", root.join("proj/link")).expect("symlink");
}

fn proj_of(root: &std::path::Path) -> Vec<(String, String)> {
    snapshot(&root.join("proj"))
}

#[test]
fn restore_brings_back_a_tree_deleted_on_another_node() {
    let p = Pair::new("restore-tree");
    let docs_a = p.a.scratch.join("docs");
    let docs_b = p.b.scratch.join("docs");
    std::fs::create_dir_all(&docs_a).expect("mkdir");
    make_proj(&docs_a);
    std::fs::write(p.da("keep.txt"), "not in proj\n").expect("write");
    let original = proj_of(&docs_a);
    let names: Vec<&str> = original.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    let (da, db) = (p.a.start(p.pa), p.b.start(p.pb));
    eventually("proj on b", 20, || proj_of(&docs_b) == original);
    std::fs::remove_dir_all(docs_b.join("proj")).expect("rm -r");
    eventually("proj gone on a", 20, || !docs_a.join("proj").exists());

    // What was deleted is listed, with its versions.
    let listed = p.a.ok(&["ls", "--deleted", s(&docs_a), "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&listed).expect("ls --json is JSON");
    let rows = rows.as_array().expect("array");
    let paths: Vec<&str> = rows.iter().filter_map(|r| r["path"].as_str()).collect();
    for f in ["proj/a.txt", "proj/sub/b.txt", "proj/sub/deeper/c.txt", "proj/img.bin", "proj/run.sh", "proj/link"] {
        assert!(paths.contains(&s(&docs_a.join(f))), "{f} not listed: {listed}");
    }
    assert!(!paths.iter().any(|p| p.ends_with("keep.txt")), "{listed}");
    let a_txt = docs_a.join("proj/a.txt");
    let row = rows.iter().find(|r| r["path"] == s(&a_txt)).expect("row");
    let version = row["version"].as_str().expect("a version");
    assert_eq!(p.a.ok(&["cat", s(&a_txt), "--at", version]), "alpha\n");
    let text = p.a.ok(&["ls", "--deleted", s(&docs_a.join("proj/sub"))]);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("deleted 20"), "{text}");
    // Its log shows the deletion; `cat` says how to get it back.
    let log = p.a.ok(&["log", s(&a_txt)]);
    assert!(log.contains("delete"), "{log}");
    let err = p.a.fails(&["cat", s(&a_txt)]);
    assert!(err.contains("was deleted") && err.contains("fsync restore"), "{err}");

    // One command brings it all back, on both nodes.
    let out = p.a.ok(&["restore", s(&docs_a.join("proj"))]);
    assert!(out.contains("restored 9 path(s)"), "{out}");
    eventually("proj back on a", 20, || proj_of(&docs_a) == original);
    eventually("proj back on b", 20, || proj_of(&docs_b) == original);
    assert_eq!(read(&p.db("keep.txt")).as_deref(), Some("not in proj\n"));
    assert!(p.a.ok(&["ls", "--deleted", s(&docs_a)]).is_empty());
    let now = p.b.ok(&["ls", s(&docs_b.join("proj/sub"))]);
    assert!(now.contains("file  ") && now.contains("b.txt"), "{now}");
    // Restoring what exists asks which state.
    let err = p.a.fails(&["restore", s(&docs_a.join("proj"))]);
    assert!(err.contains("exists") && err.contains("--before"), "{err}");
    assert_eq!(da.stop(), Some(0), "{}", p.a.log());
    assert_eq!(db.stop(), Some(0), "{}", p.b.log());
    // Without the daemon: listing works from the store, restoring says why not.
    assert!(p.a.ok(&["ls", "--deleted", s(&docs_a)]).is_empty());
    let err = p.a.fails(&["restore", s(&docs_a.join("proj/a.txt")), "--before", "1"]);
    assert!(err.contains("fsync run"), "{err}");
}

fn versions(n: &Node, file: &std::path::Path) -> Vec<String> {
    let log = n.ok(&["log", s(file), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&log).expect("json");
    v.as_array().expect("array").iter().filter_map(|c| c["version"].as_str().map(str::to_owned)).collect()
}

#[test]
fn restore_gives_a_file_as_it_was_at_a_version_or_before_a_time() {
    let n = Node::new("restore-time");
    n.ok(&["init"]);
    let docs = n.scratch.join("docs");
    n.ok(&["folder", "add", "docs", s(&docs)]);
    let d = n.start(free_port());
    let t = docs.join("t.txt");
    std::fs::write(&t, "first\n").expect("write");
    eventually("the first version logged", 10, || n.run(&["log", s(&t), "--json"]).status.success());
    let first = versions(&n, &t);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let between = cli::query::format_time(between_ms);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(&t, "second\n").expect("write");
    eventually("the second version logged", 10, || versions(&n, &t).len() > first.len());

    p_restore(&n, &t, &["--before", &between], "first\n");
    std::fs::write(&t, "third\n").expect("write");
    eventually("the third version logged", 10, || n.ok(&["cat", s(&t)]) == "third\n");
    let v = first.last().expect("a version").clone();
    p_restore(&n, &t, &["--at", &v], "first\n");
    // The whole folder, before a time in unix seconds.
    std::fs::write(&t, "fourth\n").expect("write");
    std::fs::write(docs.join("later.txt"), "made later\n").expect("write");
    eventually("the fourth version logged", 10, || n.ok(&["cat", s(&t)]) == "fourth\n");
    let secs = (between_ms / 1000).to_string();
    let out = n.ok(&["restore", s(&docs), "--before", &secs]);
    assert!(out.contains("restored 1 path(s) of the folder"), "{out}");
    eventually("the folder as it was", 10, || read(&t).as_deref() == Some("first\n"));
    assert_eq!(read(&docs.join("later.txt")).as_deref(), Some("made later\n"), "made after the time: kept");

    // Bad input is refused clearly.
    for (args, says) in [
        (vec!["--before", "yesterday"], "not a time"),
        (vec!["--at", "nonsense"], "not a version"),
        (vec!["--at", &v, "--before", "1"], "cannot be used with"),
        (vec!["--before", "1"], "nothing was there"),
    ] {
        let mut all = vec!["restore", s(&t)];
        all.extend(args.iter().copied());
        let err = n.fails(&all);
        assert!(err.contains(says), "{all:?}: {err}");
    }
    let err = n.fails(&["restore", s(&docs.join("never.txt"))]);
    assert!(err.contains("nothing was deleted there"), "{err}");
    assert_eq!(d.stop(), Some(0), "{}", n.log());
}

fn p_restore(n: &Node, file: &std::path::Path, args: &[&str], want: &str) {
    let mut all = vec!["restore", s(file)];
    all.extend_from_slice(args);
    let out = n.ok(&all);
    assert!(out.contains("restored 1 path(s)"), "{out}");
    eventually("the restored content on disk", 10, || read(file).as_deref() == Some(want));
}

/// `many/` with 30 files beside 4 others: deleting it is deleting most of
/// the folder's files at once.
fn make_many(docs: &std::path::Path) -> Vec<(String, String)> {
    std::fs::create_dir_all(docs.join("many")).expect("mkdir");
    for i in 0..30 {
        std::fs::write(docs.join(format!("many/f{i}.txt")), format!("file {i}\n")).expect("write");
    }
    for i in 0..4 {
        std::fs::write(docs.join(format!("other{i}.txt")), "stays\n").expect("write");
    }
    snapshot(&docs.join("many"))
}

fn held(n: &Node) -> String {
    let st = n.status();
    let problems = st["folders"][0]["problems"].as_array().cloned().unwrap_or_default();
    problems.iter().filter_map(|p| p.as_str()).filter(|p| p.starts_with("held: ")).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_guard_holds_a_peers_mass_deletion_until_resume() {
    let p = Pair::new("guard-peer");
    p.b.guard_off("docs");
    let (docs_a, docs_b) = (p.a.scratch.join("docs"), p.b.scratch.join("docs"));
    let many = make_many(&docs_a);
    let (_da, _db) = (p.a.start(p.pa), p.b.start(p.pb));
    eventually("many on b", 20, || snapshot(&docs_b.join("many")) == many);

    // B deletes it: a holds the deletion, and says so.
    std::fs::remove_dir_all(docs_b.join("many")).expect("rm -r");
    eventually("a holds the deletion", 20, || held(&p.a).contains("deleted by a peer"));
    let why = held(&p.a);
    // (B's scan may send the deletion in batches: a first one below the
    // share goes through before the rest is held.)
    assert!(why.contains(" path(s) deleted by a peer"), "{why}");
    assert!(why.contains("fsync resume docs"), "{why}");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(snapshot(&docs_a.join("many")).len() >= 10, "a keeps the held files");
    assert!(!docs_b.join("many").exists(), "b's deletion is not undone by a holding it");

    // Restore on a undoes it everywhere.
    let out = p.a.ok(&["restore", s(&docs_a.join("many"))]);
    assert!(out.contains("restored 31 path(s)"), "{out}");
    eventually("many back on b", 20, || snapshot(&docs_b.join("many")) == many);
    eventually("nothing held on a", 20, || held(&p.a).is_empty());
    assert_eq!(snapshot(&docs_a.join("many")), many);

    // Deleted again: held again, and resume lets it through.
    std::fs::remove_dir_all(docs_b.join("many")).expect("rm -r");
    eventually("a holds it again", 20, || !held(&p.a).is_empty());
    assert!(p.a.ok(&["resume", "docs"]).contains("let through"));
    eventually("many gone on a", 20, || !docs_a.join("many").exists());
    assert!(held(&p.a).is_empty(), "{}", held(&p.a));
    assert_eq!(read(&p.da("other0.txt")).as_deref(), Some("stays\n"));
    assert!(p.a.ok(&["resume", "docs"]).contains("nothing is held"));
}

#[test]
fn the_guard_holds_a_mass_deletion_made_here_and_restore_puts_it_back() {
    let p = Pair::new("guard-here");
    let (docs_a, docs_b) = (p.a.scratch.join("docs"), p.b.scratch.join("docs"));
    let many = make_many(&docs_a);
    let (_da, _db) = (p.a.start(p.pa), p.b.start(p.pb));
    eventually("many on b", 20, || snapshot(&docs_b.join("many")) == many);

    std::fs::remove_dir_all(docs_a.join("many")).expect("rm -r");
    eventually("a holds its own deletion", 20, || held(&p.a).contains("found gone here"));
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(snapshot(&docs_b.join("many")), many, "a held deletion is not sent");
    let log = p.a.log();
    assert!(log.contains("mass-deletion guard"), "the log says why");
    assert_eq!(log.matches("holding the deletion").count(), 1, "a hold is logged once, not as it grows:\n{log}");

    // One command puts it back on a's disk.
    let out = p.a.ok(&["restore", s(&docs_a.join("many"))]);
    assert!(out.contains("put back 31 path(s)"), "{out}");
    eventually("many back on a", 20, || snapshot(&docs_a.join("many")) == many);
    eventually("nothing held", 20, || held(&p.a).is_empty());

    // Deleted again and let through: gone on both.
    std::fs::remove_dir_all(docs_a.join("many")).expect("rm -r");
    eventually("held again", 20, || !held(&p.a).is_empty());
    assert!(p.a.ok(&["resume", "docs"]).contains("let through 31 deletion(s) made here"));
    // Each node guards its own disk: b holds what a let through, until
    // resumed there too.
    eventually("b holds it", 20, || held(&p.b).contains("deleted by a peer"));
    assert!(p.b.ok(&["resume", "docs"]).contains("let through 0 deletion(s) made here and 31 from peers"));
    eventually("many gone on b", 20, || !docs_b.join("many").exists());
    assert!(!docs_a.join("many").exists());
    assert_eq!(read(&p.db("other3.txt")).as_deref(), Some("stays\n"));
}

#[test]
fn the_guard_holds_a_mass_deletion_made_while_the_daemon_was_stopped() {
    let p = Pair::new("guard-offline");
    let (docs_a, docs_b) = (p.a.scratch.join("docs"), p.b.scratch.join("docs"));
    let many = make_many(&docs_a);
    let da = p.a.start(p.pa);
    let _db = p.b.start(p.pb);
    eventually("many on b", 20, || snapshot(&docs_b.join("many")) == many);
    da.stop();
    std::fs::remove_dir_all(docs_a.join("many")).expect("rm -r");
    let _da = p.a.start(p.pa);
    eventually("a holds what it found gone at start", 20, || held(&p.a).contains("found gone here"));
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(snapshot(&docs_b.join("many")), many, "nothing was sent");
    assert!(p.a.ok(&["restore", s(&docs_a.join("many"))]).contains("put back 31 path(s)"));
    eventually("many back on a", 20, || snapshot(&docs_a.join("many")) == many);
}

/// Retention (`keep_days`): a replaced binary version's content leaves a
/// node that keeps 0 days at its next collection (a start), stays on a
/// node that keeps 30, and a node that keeps 0 never fetches it; the
/// current content is everywhere, and the history keeps every version.
#[test]
fn replaced_binary_versions_lose_their_content_after_keep_days() {
    let p = Pair::new("keep-days");
    p.a.set_folder_option("docs", "keep_days = 0");
    let da = p.a.start(p.pa);
    let _db = p.b.start(p.pb);
    let (v1, v2) = (noise(300_000, 11), noise(300_000, 12));
    std::fs::write(p.da("b.bin"), &v1).expect("v1");
    eventually("v1 on b", 30, || std::fs::read(p.db("b.bin")).is_ok_and(|b| b == v1));
    std::fs::write(p.da("b.bin"), &v2).expect("v2");
    eventually("v2 on b", 30, || std::fs::read(p.db("b.bin")).is_ok_and(|b| b == v2));
    let old = versions(&p.a, &p.da("b.bin")).into_iter().find(|v| p.a.run(&["cat", s(&p.da("b.bin")), "--at", v]).stdout == v1);
    let old = old.expect("v1 is in the history while a runs");
    // A start collects what is not kept.
    assert_eq!(da.stop(), Some(0));
    let _da = p.a.start(p.pa);
    eventually("a running", 20, || p.a.try_status().is_some_and(|s| s["running"] == true));
    let err = p.a.fails(&["cat", s(&p.da("b.bin")), "--at", &old]);
    assert!(err.contains("not on this node"), "{err}");
    assert!(versions(&p.a, &p.da("b.bin")).contains(&old), "its place in the history stays");
    assert_eq!(std::fs::read(p.da("b.bin")).expect("current"), v2);
    assert_eq!(p.a.status()["folders"][0]["keep_days"], 0);
    assert_eq!(p.a.status()["folders"][0]["chunks_to_fetch"], 0, "what is not kept is not fetched either");
    // b keeps 30 days: it has the old content.
    assert_eq!(p.b.run(&["cat", s(&p.db("b.bin")), "--at", &old]).stdout, v1);
    // A new node that keeps 0 days gets the file, and not the old content.
    let c = Node::new("keep-days-c");
    let c_id = c.ok(&["init"]).trim().to_owned();
    c.ok(&["folder", "add", "docs", s(&c.scratch.join("docs"))]);
    c.set_folder_option("docs", "keep_days = 0");
    let b_id = p.b.ok(&["id"]).trim().to_owned();
    let pc = free_port();
    c.ok(&["peer", "add", &b_id, "--addr", &format!("127.0.0.1:{}", p.pb), "--folder", "docs"]);
    p.b.ok(&["peer", "add", &c_id, "--addr", &format!("127.0.0.1:{pc}"), "--folder", "docs"]);
    let _dc = c.start(pc);
    let cf = c.scratch.join("docs/b.bin");
    eventually("v2 on c", 30, || std::fs::read(&cf).is_ok_and(|b| b == v2));
    eventually("c settled", 20, || c.try_status().is_some_and(|s| s["folders"][0]["chunks_to_fetch"] == 0));
    let err = c.fails(&["cat", s(&cf), "--at", &old]);
    assert!(err.contains("not on this node"), "c never fetched the replaced content: {err}");
}
