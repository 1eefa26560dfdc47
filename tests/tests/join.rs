//! From nothing to syncing with `fsync run PATH` and `fsync join`, a used
//! ticket refused, joining while the daemon runs, `.fsyncignore`.

#![allow(missing_docs)]

mod util;

use util::{eventually, free_port, read, Node, Pair};

/// The ticket in a `fsync join TICKET PATH` line.
fn ticket_of(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(words.len() == 4 && words[0] == "fsync" && words[1] == "join", "not a join line: {line:?}");
    words[2].to_owned()
}

#[test]
fn first_run_invite_and_join_from_scratch() {
    let (a, b, c) = (Node::new("join-a"), Node::new("join-b"), Node::new("join-c"));
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    // A: nothing but `fsync run PATH`.
    let notes_a = a.scratch.join("notes");
    std::fs::create_dir_all(&notes_a).expect("mkdir");
    std::fs::write(notes_a.join("todo.txt"), "milk\n").expect("write");
    let da = a.spawn(&["run", notes_a.to_str().expect("utf-8"), "--listen", &format!("127.0.0.1:{pa}")]);
    eventually("the join line", 10, || a.out().contains("fsync join "));
    let line = a.out().lines().find(|l| l.starts_with("fsync join ")).expect("join line").to_owned();
    assert!(line.ends_with(" ~/notes"), "the folder name is PATH's base name: {line}");
    let ticket = ticket_of(&line);
    let a_id = a.ok(&["id"]).trim().to_owned();

    // B: join with the ticket (no init before), then run.
    let notes_b = b.scratch.join("shared-notes");
    b.ok(&["join", &ticket, notes_b.to_str().expect("utf-8")]);
    let db = b.start(pb);
    eventually("a's file on b", 15, || read(&notes_b.join("todo.txt")).as_deref() == Some("milk\n"));
    std::fs::write(notes_b.join("reply.txt"), "eggs\n").expect("write");
    eventually("b's file on a: a trusts b back", 10, || read(&notes_a.join("reply.txt")).as_deref() == Some("eggs\n"));
    let b_id = b.ok(&["id"]).trim().to_owned();
    // Both sides are peers as if `peer add` had been run: in the configs.
    assert!(a.config().contains(&b_id) && a.config().contains(&format!("127.0.0.1:{pb}")), "{}", a.config());
    assert!(b.config().contains(&a_id) && b.config().contains(&format!("127.0.0.1:{pa}")), "{}", b.config());
    assert_eq!(a.status()["invites"], 0, "the invitation is used up");

    // C tries the same ticket: refused, gets nothing.
    let notes_c = c.scratch.join("notes");
    c.ok(&["join", &ticket, notes_c.to_str().expect("utf-8")]);
    let dc = c.start(pc);
    eventually("a refuses c", 15, || a.log().contains("refused"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(read(&notes_c.join("todo.txt")), None, "a used ticket let c in");
    assert!(!a.config().contains(&c.ok(&["id"]).trim().to_owned()));

    // A fresh ticket from the running daemon, joined by C's running daemon:
    // no restart needed.
    let ticket2 = a.ok(&["invite", "notes", "--expires", "10m"]).trim().to_owned();
    assert_eq!(dc.stop(), Some(0), "{}", c.log());
    let c2 = Node::new("join-c2");
    let pc2 = free_port();
    c2.ok(&["init"]);
    let dc2 = c2.start(pc2);
    eventually("c2's daemon up", 10, || c2.status()["running"] == true);
    let notes_c = c2.scratch.join("notes");
    c2.ok(&["join", &ticket2, notes_c.to_str().expect("utf-8")]);
    eventually("a's files on c2 without a restart", 15, || read(&notes_c.join("reply.txt")).as_deref() == Some("eggs\n"));
    std::fs::write(notes_c.join("from-c.txt"), "hi\n").expect("write");
    eventually("c2's file on b, through a", 15, || read(&notes_b.join("from-c.txt")).as_deref() == Some("hi\n"));

    for (n, d) in [(&a, da), (&b, db), (&c2, dc2)] {
        assert_eq!(d.stop(), Some(0), "{}", n.log());
    }
}

#[test]
fn tickets_are_checked_before_anything_changes() {
    let (a, b) = (Node::new("ticket-a"), Node::new("ticket-b"));
    a.ok(&["init"]);
    a.ok(&["folder", "add", "docs", a.scratch.join("docs").to_str().expect("utf-8")]);
    let err = a.fails(&["invite", "nope"]);
    assert!(err.contains("no folder named"), "{err}");
    let ticket = a.ok(&["invite", "docs", "--addr", "127.0.0.1:9"]).trim().to_owned();
    assert!(ticket.starts_with("fsync1-") && !ticket.contains(' '), "{ticket}");
    // Damaged in transit.
    let mut bad = ticket.clone().into_bytes();
    let i = bad.len() - 10;
    bad[i] = if bad[i] == b'a' { b'b' } else { b'a' };
    let err = b.fails(&["join", std::str::from_utf8(&bad).expect("ascii"), b.scratch.join("d").to_str().expect("utf-8")]);
    assert!(err.contains("damaged"), "{err}");
    assert!(!b.home.join("config.toml").exists(), "a bad ticket changed nothing");
    // Joining your own ticket.
    let err = a.fails(&["join", &ticket, a.scratch.join("again").to_str().expect("utf-8")]);
    assert!(err.contains("this very node"), "{err}");
    let err = a.fails(&["invite", "docs", "--expires", "soon"]);
    assert!(err.contains("duration"), "{err}");
    let err = a.fails(&["invite", "docs", "--expires", "999999999999999999d"]);
    assert!(err.contains("longer than"), "{err}");
}

#[test]
fn fsyncignore_and_editor_temp_files_stay_local() {
    let p = Pair::new("ignore");
    let (da_path, db_path) = (p.da(""), p.db(""));
    std::fs::write(da_path.join(".fsyncignore"), "*.log\nbuild/\n").expect("write");
    std::fs::create_dir_all(da_path.join("build")).expect("mkdir");
    std::fs::write(da_path.join("build/out.o"), "object").expect("write");
    std::fs::write(da_path.join("run.log"), "noise").expect("write");
    std::fs::write(da_path.join(".notes.txt.swp"), "vim swap").expect("write");
    std::fs::write(da_path.join("notes.txt~"), "backup").expect("write");
    std::fs::write(da_path.join("notes.txt"), "kept\n").expect("write");
    let (da, db) = (p.a.start(p.pa), p.b.start(p.pb));
    eventually("notes.txt on b", 15, || read(&db_path.join("notes.txt")).as_deref() == Some("kept\n"));
    // A live one too, after the first sync.
    std::fs::write(da_path.join("live.log"), "more noise").expect("write");
    std::fs::write(da_path.join("live.txt"), "live\n").expect("write");
    eventually("live.txt on b", 10, || read(&db_path.join("live.txt")).as_deref() == Some("live\n"));
    for f in ["build/out.o", "build", "run.log", "live.log", ".notes.txt.swp", "notes.txt~"] {
        assert!(!db_path.join(f).exists(), "{f} was synced");
    }
    assert_eq!(da.stop(), Some(0));
    assert_eq!(db.stop(), Some(0));
}
