use super::*;
use crate::chunks::{split, ChunkHash};

pub(crate) fn agent(i: u64) -> AgentId {
    AgentId::from_index(i)
}

/// Sends what `to` lacks from `from`.
pub(crate) fn send(from: &Folder, to: &mut Folder) {
    let (c, _) = from.changes_since(to.version_vector(), 0, usize::MAX);
    to.apply_changes(&c).1.expect("valid changes");
}

/// Path -> (kind, text or chunk list, exec), for comparing replicas.
pub(crate) fn snapshot(f: &mut Folder) -> Vec<(String, String)> {
    let nodes: Vec<Node> = f.tree().nodes().cloned().collect();
    nodes
        .into_iter()
        .map(|n| {
            let st = f.state(n.id).expect("node has state").clone();
            let body = match &st.content {
                Content::Text => f.doc(n.id).map(|d| d.text()).unwrap_or_default(),
                Content::Binary { chunks, .. } => {
                    format!("{:?}", chunks.iter().map(|c| c.hash).collect::<Vec<_>>())
                }
                Content::Link(t) => format!("-> {t}"),
                Content::None => "<dir>".into(),
            };
            (n.path, format!("{:?} x={} {body}", st.kind, st.exec))
        })
        .collect()
}

fn text_at(f: &mut Folder, path: &str) -> Option<String> {
    let id = f.tree().lookup(path)?.id;
    f.doc(id).map(|d| d.text())
}

/// Two replicas that share `setup`, then diverge.
fn pair(setup: impl FnOnce(&mut Folder)) -> (Folder, Folder) {
    let mut a = Folder::new(agent(1));
    setup(&mut a);
    let mut b = Folder::new(agent(2));
    send(&a, &mut b);
    (a, b)
}

fn converge(a: &mut Folder, b: &mut Folder) {
    let a0 = a.clone();
    send(b, a);
    send(&a0, b);
    assert_eq!(snapshot(a), snapshot(b), "replicas differ");
}

fn file(f: &mut Folder, path: &str, text: &str) -> EntryId {
    let id = f.create(path, Kind::File, 1).expect("create");
    f.set_text(id, text, 1).expect("write");
    id
}

#[test]
fn text_edits_at_different_places_both_present() {
    let (mut a, mut b) = pair(|f| {
        file(f, "notes.txt", "alpha\nbeta\ngamma\n");
    });
    let id = a.tree().lookup("notes.txt").expect("exists").id;
    a.set_text(id, "ALPHA\nbeta\ngamma\n", 2).expect("edit");
    b.set_text(id, "alpha\nbeta\nGAMMA\n", 2).expect("edit");
    converge(&mut a, &mut b);
    assert_eq!(text_at(&mut a, "notes.txt").as_deref(), Some("ALPHA\nbeta\nGAMMA\n"));
}

#[test]
fn inserts_at_one_place_do_not_interleave() {
    let (mut a, mut b) = pair(|f| {
        file(f, "t", "[]");
    });
    let id = a.tree().lookup("t").expect("exists").id;
    a.set_text(id, "[hello]", 2).expect("edit");
    b.set_text(id, "[world]", 2).expect("edit");
    converge(&mut a, &mut b);
    let t = text_at(&mut a, "t").expect("text");
    assert!(t == "[helloworld]" || t == "[worldhello]", "{t}");
}

#[test]
fn binary_on_two_nodes_has_one_winner_and_keeps_the_loser() {
    let (mut a, mut b) = pair(|f| {
        f.create("img.bin", Kind::File, 1).expect("create");
    });
    let id = a.tree().lookup("img.bin").expect("exists").id;
    let ca: Vec<ChunkRef> = split(&[1u8; 5000]).into_iter().map(|c| c.0).collect();
    let cb: Vec<ChunkRef> = split(&[2u8; 7000]).into_iter().map(|c| c.0).collect();
    a.write_binary(id, ca.clone(), 10).expect("write");
    b.write_binary(id, cb.clone(), 20).expect("write");
    converge(&mut a, &mut b);
    // The later write (by time) wins everywhere; the other is in history.
    assert_eq!(a.state(id).map(|s| s.content.clone()), Some(Content::Binary { size: 7000, chunks: cb }));
    let hashes: HashSet<ChunkHash> = a.referenced_chunks();
    assert!(hashes.contains(&ca[0].hash));
}

#[test]
fn edit_beats_concurrent_delete() {
    let (mut a, mut b) = pair(|f| {
        file(f, "doc.txt", "keep me");
    });
    let id = a.tree().lookup("doc.txt").expect("exists").id;
    a.set_text(id, "keep me, edited", 2).expect("edit");
    b.delete(id, 2).expect("delete");
    assert!(b.tree().lookup("doc.txt").is_none());
    converge(&mut a, &mut b);
    assert_eq!(text_at(&mut b, "doc.txt").as_deref(), Some("keep me, edited"));
}

#[test]
fn delete_after_seeing_the_edit_deletes() {
    let (mut a, mut b) = pair(|f| {
        file(f, "doc.txt", "x");
    });
    let id = a.tree().lookup("doc.txt").expect("exists").id;
    a.set_text(id, "xy", 2).expect("edit");
    send(&a, &mut b);
    b.delete(id, 3).expect("delete");
    converge(&mut a, &mut b);
    assert!(a.tree().lookup("doc.txt").is_none());
}

#[test]
fn edit_and_concurrent_move_meet_at_the_new_path() {
    let (mut a, mut b) = pair(|f| {
        file(f, "a.txt", "one");
    });
    let id = a.tree().lookup("a.txt").expect("exists").id;
    a.set_text(id, "one two", 2).expect("edit");
    b.rename(id, "sub/dir/b.txt", 2).expect("move");
    converge(&mut a, &mut b);
    assert!(a.tree().lookup("a.txt").is_none());
    assert_eq!(text_at(&mut a, "sub/dir/b.txt").as_deref(), Some("one two"));
}

#[test]
fn renamed_to_two_names_ends_with_one() {
    let (mut a, mut b) = pair(|f| {
        file(f, "x", "data");
    });
    let id = a.tree().lookup("x").expect("exists").id;
    a.rename(id, "from-a", 2).expect("rename");
    b.rename(id, "from-b", 3).expect("rename");
    converge(&mut a, &mut b);
    let paths: Vec<String> = a.tree().nodes().map(|n| n.path.clone()).collect();
    assert_eq!(paths, vec!["from-b".to_owned()]);
}

#[test]
fn same_new_path_on_two_nodes_keeps_both() {
    let mut a = Folder::new(agent(1));
    let mut b = Folder::new(agent(2));
    file(&mut a, "plan.md", "from a");
    file(&mut b, "plan.md", "from b");
    converge(&mut a, &mut b);
    let snap = snapshot(&mut a);
    assert_eq!(snap.len(), 2, "{snap:?}");
    assert_eq!(text_at(&mut a, "plan.md").as_deref(), Some("from a"), "smallest entry id keeps the name");
    let other = format!("plan ({}).md", agent(2).short());
    assert_eq!(text_at(&mut a, &other).as_deref(), Some("from b"));
}

#[test]
fn same_directory_created_on_two_nodes_merges() {
    let mut a = Folder::new(agent(1));
    let mut b = Folder::new(agent(2));
    file(&mut a, "docs/a.txt", "A");
    file(&mut b, "docs/b.txt", "B");
    converge(&mut a, &mut b);
    let paths: Vec<String> = a.tree().nodes().map(|n| n.path.clone()).collect();
    assert_eq!(paths, vec!["docs", "docs/a.txt", "docs/b.txt"]);
}

#[test]
fn deleting_a_merged_directory_deletes_all_of_it() {
    let mut a = Folder::new(agent(1));
    let mut b = Folder::new(agent(2));
    file(&mut a, "docs/a.txt", "A");
    file(&mut b, "docs/b.txt", "B");
    converge(&mut a, &mut b);
    let d = b.tree().lookup("docs").expect("dir").id;
    b.delete(d, 5).expect("delete");
    assert!(b.tree().is_empty(), "{:?}", snapshot(&mut b));
    converge(&mut a, &mut b);
    assert!(a.tree().is_empty());
}

/// A merged directory moves whole, by path or by entry, from any base; a
/// move into what hangs below any of its entries is a move into itself.
#[test]
fn moving_a_merged_directory_moves_all_of_it() {
    for how in 0..3 {
        let mut a = Folder::new(agent(1));
        let mut b = Folder::new(agent(2));
        file(&mut a, "docs/a.txt", "A");
        let inner = file(&mut b, "docs/sub/b.txt", "B");
        converge(&mut a, &mut b);
        let d = a.tree().lookup("docs").expect("dir").id;
        let sub = a.tree().lookup("docs/sub").expect("dir").id;
        assert!(matches!(a.move_into(d, Some(sub), "x", 5), Err(FolderError::IntoItself)), "into what hangs below");
        let base = a.doc(d).map(|doc| doc.version_ids()).expect("doc");
        match how {
            0 => a.rename(d, "moved", 5).expect("mv"),
            1 => a.move_into(d, None, "moved", 5).expect("mv"),
            _ => a.move_into_from(d, &base, None, "moved", 5).expect("mv"),
        }
        let paths: Vec<String> = a.tree().nodes().map(|n| n.path.clone()).collect();
        assert_eq!(paths, ["moved", "moved/a.txt", "moved/sub", "moved/sub/b.txt"], "how {how}");
        converge(&mut a, &mut b);
        assert_eq!(b.tree().path_of(inner), Some("moved/sub/b.txt"));
    }
}

/// Deleted as the disk showed it, a merged directory goes whole.
#[test]
fn deleting_a_merged_directory_from_a_base_deletes_every_entry_of_it() {
    let mut a = Folder::new(agent(1));
    let mut b = Folder::new(agent(2));
    a.create("docs", Kind::Dir, 1).expect("mkdir");
    b.create("docs", Kind::Dir, 1).expect("mkdir");
    converge(&mut a, &mut b);
    let d = a.tree().lookup("docs").expect("dir").id;
    let base = a.doc(d).map(|doc| doc.version_ids()).expect("doc");
    a.delete_from(d, &base, 5).expect("rmdir");
    assert!(a.tree().is_empty(), "{:?}", snapshot(&mut a));
    converge(&mut a, &mut b);
    assert!(b.tree().is_empty());
}

#[test]
fn new_file_in_concurrently_deleted_directory_survives() {
    let (mut a, mut b) = pair(|f| {
        file(f, "d/old.txt", "old");
    });
    let d = a.tree().lookup("d").expect("dir").id;
    a.delete(d, 2).expect("delete");
    file(&mut b, "d/new.txt", "new");
    converge(&mut a, &mut b);
    let paths: Vec<String> = a.tree().nodes().map(|n| n.path.clone()).collect();
    assert_eq!(paths, vec!["d", "d/new.txt"]);
}

#[test]
fn exec_bit_and_symlinks_replicate() {
    let (mut a, mut b) = pair(|_| {});
    let s = file(&mut a, "run.sh", "#!/bin/sh\n");
    a.set_exec(s, true, 2).expect("chmod");
    let l = a.create("link", Kind::Symlink, 2).expect("create");
    a.set_link(l, "run.sh", 2).expect("link");
    converge(&mut a, &mut b);
    assert!(b.state(s).is_some_and(|st| st.exec));
    assert_eq!(b.state(l).map(|st| st.content.clone()), Some(Content::Link("run.sh".into())));
}

#[test]
fn crossed_directory_moves_do_not_lose_anything() {
    let (mut a, mut b) = pair(|f| {
        file(f, "p/in-p.txt", "p");
        file(f, "q/in-q.txt", "q");
    });
    let p = a.tree().lookup("p").expect("p").id;
    let q = a.tree().lookup("q").expect("q").id;
    a.rename(p, "q/p", 2).expect("move");
    b.rename(q, "p/q", 2).expect("move");
    converge(&mut a, &mut b);
    let snap = snapshot(&mut a);
    assert!(snap.iter().any(|(p, _)| p.ends_with("in-p.txt")), "{snap:?}");
    assert!(snap.iter().any(|(p, _)| p.ends_with("in-q.txt")), "{snap:?}");
}

#[test]
fn hostile_changes_are_refused() {
    let mut a = Folder::new(agent(1));
    let id = file(&mut a, "f", "x");
    let (mut c, _) = a.changes_since(&VersionVector::new(), 0, usize::MAX);
    // A move to ".." smuggled in as the entry's next event.
    let evil = Meta::Move { parent: None, name: "..".into() };
    let last = c.runs.last().expect("runs").1.clone();
    let next = EventId { agent: agent(1), seq: last.id.seq + last.len() as u64 };
    c.runs.push((
        id,
        ExportedRun {
            id: next,
            parents: vec![EventId { agent: agent(1), seq: next.seq - 1 }],
            pos: 0,
            kind: crate::text::ExportedKind::Marker(evil.encode()),
            time: 0,
        },
    ));
    let mut b = Folder::new(agent(2));
    assert!(matches!(b.apply_changes(&c).1, Err(ApplyError::BadMeta(_))));
    // What came before the bad event was applied and nothing escaped.
    assert_eq!(text_at(&mut b, "f").as_deref(), Some("x"));
    // A gap is reported, not papered over.
    let mut gap = a.changes_since(&VersionVector::new(), 0, usize::MAX).0;
    gap.runs.remove(0);
    assert!(matches!(Folder::new(agent(3)).apply_changes(&gap).1, Err(ApplyError::Gap { .. })));
}

#[test]
fn simple_diff_is_minimal_around_the_change() {
    assert_eq!(simple_diff("abcdef", "abXYef"), Edit { pos: 2, del: 2, ins: "XY".into() });
    assert_eq!(simple_diff("aaa", "aaaa"), Edit { pos: 3, del: 0, ins: "a".into() });
    assert_eq!(simple_diff("", ""), Edit { pos: 0, del: 0, ins: String::new() });
}

/// Regression (found by the long simulation): a file whose directory has
/// not arrived yet shows at the root; when the directory arrives, the file
/// must move into it, exactly as a full rebuild would place it.
#[test]
fn an_orphan_moves_into_its_directory_when_it_arrives() {
    let mut a = Folder::new(agent(4));
    let dir = a.create("d0", Kind::Dir, 1).expect("dir");
    let mut b = Folder::new(agent(3));
    send(&a, &mut b);
    let f = file(&mut b, "d0/f3", "x");
    // Someone who has neither gets b's file first (a's directory was lost).
    let mut c = Folder::new(agent(5));
    let own = file(&mut c, "f3", "c's own f3 at the root");
    let (only_b, _) = b.changes_since(a.version_vector(), 0, usize::MAX);
    c.apply_changes(&only_b).1.expect("valid");
    // The orphan shows at the root and, with the smaller id, takes the name.
    assert_eq!(c.tree().path_of(f), Some("f3"));
    assert_eq!(c.tree().path_of(own).map(str::to_owned), Some(format!("f3 ({})", agent(5).short())));
    c.assert_tree_consistent();
    send(&a, &mut c);
    assert_eq!(c.tree().path_of(f), Some("d0/f3"));
    assert_eq!(c.tree().path_of(dir), Some("d0"));
    assert_eq!(c.tree().path_of(own), Some("f3"), "the name is free again");
    c.assert_tree_consistent();
}

/// Regression (found by the long simulation): after crossed directory
/// moves make a cycle, a file created inside it stays in its directory; the
/// cycle is broken at a directory in it, not at the file below it.
#[test]
fn a_file_below_a_move_cycle_stays_in_its_directory() {
    let (mut a, mut b) = pair(|f| {
        f.create("p", Kind::Dir, 1).expect("p");
        f.create("q", Kind::Dir, 1).expect("q");
    });
    let p = a.tree().lookup("p").expect("p").id;
    let q = a.tree().lookup("q").expect("q").id;
    a.rename(p, "q/p", 2).expect("move");
    b.rename(q, "p/q", 2).expect("move");
    converge(&mut a, &mut b);
    a.assert_tree_consistent();
    // A new file in p, whose parent chain loops.
    let c = Folder::new(agent(0));
    let mut c = c;
    send(&a, &mut c);
    let p_path = c.tree().path_of(p).expect("p shows").to_owned();
    let f = file(&mut c, &format!("{p_path}/new.txt"), "new");
    c.assert_tree_consistent();
    assert_eq!(c.tree().path_of(f).map(str::to_owned), Some(format!("{p_path}/new.txt")));
    send(&c, &mut a);
    a.assert_tree_consistent();
    assert_eq!(a.tree().path_of(f).map(str::to_owned), Some(format!("{p_path}/new.txt")));
}

/// A deletion seen on disk is recorded against what the disk had: an edit
/// that arrived meanwhile (never written to disk) keeps the file.
#[test]
fn a_delete_from_an_old_base_loses_to_an_edit_it_never_saw() {
    let (mut a, mut b) = pair(|f| {
        file(f, "doc.txt", "v1");
    });
    let id = a.tree().lookup("doc.txt").expect("doc").id;
    let base = b.doc(id).expect("doc").version_ids();
    a.set_text(id, "v1 edited", 2).expect("edit");
    send(&a, &mut b); // b's folder has the edit; its disk still has v1
    b.delete_from(id, &base, 3).expect("delete");
    converge(&mut a, &mut b);
    assert_eq!(text_at(&mut b, "doc.txt").as_deref(), Some("v1 edited"));
    // With the current version as base, the delete would have won.
    let mut c = a.clone();
    let now = c.doc(id).expect("doc").version_ids();
    c.delete_from(id, &now, 4).expect("delete");
    assert!(c.tree().lookup("doc.txt").is_none());
}

/// A move and a deletion of one file, concurrent: the file lives on at
/// its new path, on both replicas, whichever arrived first; a move made
/// after the deletion arrived but from what the disk showed before it
/// (`move_into_from`) is the same concurrent move.
#[test]
fn a_move_concurrent_with_a_delete_keeps_the_file_where_it_went() {
    let (mut a, mut b) = pair(|f| {
        file(f, "a.txt", "one");
    });
    let id = a.tree().lookup("a.txt").expect("exists").id;
    let base = b.doc(id).expect("doc").version_ids();
    let (mut c, mut d) = (a.clone(), b.clone());
    a.delete(id, 2).expect("delete");
    b.rename(id, "sub/b.txt", 2).expect("move");
    converge(&mut a, &mut b);
    assert_eq!(text_at(&mut a, "sub/b.txt").as_deref(), Some("one"));
    // The deletion arrives first; the move is made from the old base.
    c.delete(id, 2).expect("delete");
    send(&c, &mut d);
    assert!(d.tree().lookup("a.txt").is_none());
    let sub = d.create("sub", Kind::Dir, 3).expect("mkdir");
    d.move_into_from(id, &base, Some(sub), "b.txt", 3).expect("move");
    converge(&mut c, &mut d);
    assert_eq!(text_at(&mut c, "sub/b.txt").as_deref(), Some("one"));
}

/// What is not shareable (not yet saved) never goes to a peer, and goes
/// as soon as it is, from where the peer's cursor stopped.
#[test]
fn unshareable_changes_are_held_back_then_sent() {
    let mut a = Folder::new(agent(1));
    let id = a.create("a.txt", Kind::File, 1).expect("create");
    a.edit_text(id, &[Edit { pos: 0, del: 0, ins: "hello".into() }], 2).expect("edit");
    a.set_shareable(Some(a.version_vector().clone()));
    // More typing into the same log record, and a new file: held back.
    a.edit_text(id, &[Edit { pos: 5, del: 0, ins: " world".into() }], 3).expect("edit");
    a.create("b.txt", Kind::File, 4).expect("create");

    let mut b = Folder::new(agent(2));
    let (c, pos) = a.changes_for_peer(b.version_vector(), 0, usize::MAX);
    b.apply_changes(&c).1.expect("apply");
    assert_eq!(text_at(&mut b, "a.txt").as_deref(), Some("hello"));
    assert!(b.tree().lookup("b.txt").is_none());
    let (none, pos2) = a.changes_for_peer(b.version_vector(), pos, usize::MAX);
    assert!(none.runs.is_empty());

    // Saved: everything flows, from the cursor.
    a.set_shareable(Some(a.version_vector().clone()));
    let (c, _) = a.changes_for_peer(b.version_vector(), pos2, usize::MAX);
    b.apply_changes(&c).1.expect("apply");
    assert_eq!(snapshot(&mut a), snapshot(&mut b));
    // `changes_since` (what the store saves) was never limited.
    let mut all = Folder::new(agent(3));
    send(&a, &mut all);
    assert_eq!(snapshot(&mut a), snapshot(&mut all));
}

#[test]
fn children_lists_one_level_in_name_order() {
    let mut f = Folder::new(agent(1));
    for p in ["a", "a b", "a.txt", "a/x", "a/y/z", "a-b", "b/c", "a0"] {
        let kind = if p == "a" || p == "b" { Kind::Dir } else { Kind::File };
        if f.tree().lookup(p).is_none() {
            f.create(p, kind, 1).expect("create");
        }
    }
    let names = |f: &mut Folder, d: &str| f.tree().children(d).iter().map(|n| n.path.clone()).collect::<Vec<_>>();
    assert_eq!(names(&mut f, ""), ["a", "a b", "a-b", "a.txt", "a0", "b"]);
    assert_eq!(names(&mut f, "a"), ["a/x", "a/y"]);
    assert_eq!(names(&mut f, "a/y"), ["a/y/z"]);
    assert!(names(&mut f, "a.txt").is_empty());
}

/// Thousands of big binary versions at once: every batch stays within the
/// byte cap (a batch capped by operations alone was far over the 16 MiB
/// frame, and the connection failed on every retry), and the batches
/// together carry everything.
#[test]
fn batches_of_big_binary_versions_are_capped_by_bytes() {
    let mut a = Folder::new(agent(1));
    let refs: Vec<ChunkRef> =
        (0..2_000u32).map(|i| ChunkRef { hash: ChunkHash::of(&i.to_le_bytes()), len: crate::chunks::MIN_CHUNK }).collect();
    for i in 0..300 {
        let id = a.create(&format!("f{i}.bin"), Kind::File, 1).expect("create");
        a.write_binary(id, refs.clone(), 1).expect("write");
        a.write_binary(id, refs[1..].to_vec(), 2).expect("write again");
    }
    let mut b = Folder::new(agent(2));
    let mut have = b.version_vector().clone();
    let mut pos = 0;
    let mut batches = 0;
    loop {
        let (c, next) = a.changes_since(&have, pos, crate::session::MAX_BATCH_OPS);
        pos = next;
        if c.runs.is_empty() {
            break;
        }
        let bytes: usize = c.runs.iter().map(|(_, r)| r.encoded_bound()).sum();
        let biggest = c.runs.iter().map(|(_, r)| r.encoded_bound()).max().unwrap_or(0);
        assert!(bytes <= MAX_BATCH_BYTES + biggest, "a batch of {bytes} bytes");
        for (_, r) in &c.runs {
            let e = have.entry(r.id.agent).or_insert(0);
            *e = (*e).max(r.id.seq + r.len() as u64);
        }
        b.apply_changes(&c).1.expect("valid");
        batches += 1;
    }
    assert!(batches > 5, "{batches} batches");
    assert_eq!(snapshot(&mut a), snapshot(&mut b));
}

/// A version with more chunks than one message carries is refused where
/// it is made, and where it is decoded.
#[test]
fn a_version_with_too_many_chunks_is_refused() {
    let mut a = Folder::new(agent(1));
    let id = a.create("huge.bin", Kind::File, 1).expect("create");
    let refs = vec![ChunkRef { hash: ChunkHash::of(b"x"), len: 1 }; MAX_CHUNKS + 1];
    assert_eq!(a.write_binary(id, refs.clone(), 1), Err(FolderError::TooBig(MAX_CHUNKS + 1)));
    let size = refs.len() as u64;
    assert!(Meta::decode(&Meta::Binary { size, chunks: refs }.encode()).is_err());
}

/// What the write-back looks at: a peer's edit, and the files a peer's
/// rename of their directory moved (no event of their own).
#[test]
fn changed_entries_include_a_peers_edit_and_what_a_directory_rename_moved() {
    let (mut a, mut b) = pair(|f| {
        f.create("d", Kind::Dir, 1).expect("mkdir");
        file(f, "d/x.txt", "x\n");
        file(f, "y.txt", "y\n");
    });
    let _ = b.take_changed();
    let x = a.tree().lookup("d/x.txt").expect("x").id;
    let y = a.tree().lookup("y.txt").expect("y").id;
    let d = a.tree().lookup("d").expect("d").id;
    a.set_text(y, "y2\n", 2).expect("edit");
    a.rename(d, "e", 2).expect("rename");
    send(&a, &mut b);
    let changed = b.take_changed();
    assert!(changed.contains(&y) && changed.contains(&d) && changed.contains(&x), "{changed:?}");
    assert!(b.take_changed().is_empty(), "taken once");
}

/// An editor that names its own versions (a Braid client) edits through a
/// replica: its events carry its agent, sync like any, and merge with a
/// concurrent edit made on the version it started from.
#[test]
fn edits_by_another_author_sync_and_merge() {
    let mut a = Folder::new(agent(1));
    let mut b = Folder::new(agent(2));
    let id = a.create("n.txt", Kind::File, 1).expect("create");
    a.set_text(id, "hello\n", 1).expect("text");
    send(&a, &mut b);
    let base = a.doc(id).expect("doc").version_ids();
    // b edits meanwhile; the client edits at the base it had.
    b.set_text(id, "hello\nfrom b\n", 2).expect("b");
    let client = agent(9);
    let ins = Edit { pos: 0, del: 0, ins: ">> ".into() };
    let last = a.edit_text_by(id, Some((client, 0)), &base, &[ins], 3).expect("client edit");
    assert_eq!(last, Some(EventId { agent: client, seq: 2 }), "one event per character");
    assert_eq!(a.version_vector().get(&client), Some(&3));
    send(&a, &mut b);
    send(&b, &mut a);
    let text = |f: &Folder| f.doc(id).expect("doc").text();
    assert_eq!(text(&a), ">> hello\nfrom b\n");
    assert_eq!(text(&a), text(&b));
    // Its next edit follows its last; anything else is refused unchanged.
    let more = Edit { pos: 0, del: 3, ins: String::new() };
    for seq in [0, 2, 4] {
        let r = a.edit_text_by(id, Some((client, seq)), &[], std::slice::from_ref(&more), 4);
        assert_eq!(r, Err(FolderError::OutOfOrder { agent: client, expected: 3, got: seq }));
    }
    assert_eq!(text(&a), ">> hello\nfrom b\n");
    let own = a.agent();
    assert!(matches!(
        a.edit_text_by(id, Some((own, 99)), &[], std::slice::from_ref(&more), 4),
        Err(FolderError::OutOfOrder { .. })
    ));
    let now = a.doc(id).expect("doc").version_ids();
    assert_eq!(a.edit_text_by(id, Some((client, 3)), &now, &[more], 4), Ok(Some(EventId { agent: client, seq: 5 })));
    send(&a, &mut b);
    assert_eq!(text(&b), "hello\nfrom b\n");
}

/// Retention: a binary version replaced before the cutoff keeps no
/// content; the current one always does, and a deleted file's last one
/// until the deletion is older than the cutoff.
#[test]
fn binary_versions_replaced_before_the_cutoff_are_not_kept() {
    let mut f = Folder::new(agent(1));
    let id = f.create("b.bin", Kind::File, 1).expect("create");
    let v = |i: u8| ChunkRef { hash: ChunkHash([i; 32]), len: 1 };
    f.write_binary(id, vec![v(1)], 10).expect("v1");
    f.write_binary(id, vec![v(2)], 20).expect("v2");
    f.set_text(id, "text now\n", 30).expect("text");
    f.write_binary(id, vec![v(3)], 40).expect("v3");
    let kept = |f: &mut Folder, since: Option<u64>| {
        f.set_retention(since);
        let mut k: Vec<u8> = f.referenced_chunks().into_iter().map(|h| h.0[0]).collect();
        k.sort();
        k
    };
    assert_eq!(kept(&mut f, None), vec![1, 2, 3]);
    assert_eq!(kept(&mut f, Some(20)), vec![1, 2, 3], "v1 was replaced at 20");
    assert_eq!(kept(&mut f, Some(21)), vec![2, 3]);
    assert_eq!(kept(&mut f, Some(31)), vec![3], "v2 was replaced by the text at 30");
    assert_eq!(kept(&mut f, Some(u64::MAX)), vec![3], "the current content is kept");
    f.delete(id, 50).expect("delete");
    assert_eq!(kept(&mut f, Some(50)), vec![3], "deleted at 50: kept until then");
    assert_eq!(kept(&mut f, Some(51)), Vec::<u8>::new());
    assert_eq!(f.kept_chunks_of(id).len(), 0);
}
