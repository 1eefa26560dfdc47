use super::*;
use fsync_core::folder::Content;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

fn on_disk(root: &Path, p: &str) -> OnDisk {
    let m = std::fs::symlink_metadata(root.join(p)).expect("stat");
    OnDisk { kind: if m.is_dir() { Kind::Dir } else { Kind::File }, stat: Stat::of(&m), links: m.nlink() }
}

fn known(disk: &OnDisk) -> Known {
    Known {
        id: EntryId(EventId { agent: fsync_core::AgentId::from_index(1), seq: disk.stat.ino }),
        kind: disk.kind,
        stat: disk.stat,
        base: Vec::new(),
        staged: None,
        written: None,
    }
}

/// A fresh root holding `files` (path, text), scanned once by a node
/// of agent 1.
fn scanned(name: &str, files: &[(&str, &str)]) -> (std::path::PathBuf, Folder, fsync_core::chunks::Chunks, Index, Ignore) {
    let root = std::env::temp_dir().join(format!("fsync-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("mkdir");
    for (f, text) in files {
        let full = root.join(f);
        std::fs::create_dir_all(full.parent().expect("below the root")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    }
    let mut folder = Folder::new(fsync_core::AgentId::from_index(1));
    let mut chunks = fsync_core::chunks::Chunks::default();
    let mut index = Index::default();
    let ignore = Ignore::load(&root);
    scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 1).expect("scan");
    (root, folder, chunks, index, ignore)
}

/// A binary file saved through a temp file (a new inode) and moved at
/// once, before any scan: nothing on disk links the two names, and it
/// was taken for a deletion and a new file (its history stayed with the
/// deleted entry; the oracle). The kernel's rename report does.
#[test]
fn a_binary_saved_and_moved_before_a_scan_is_the_same_file_when_the_kernel_said_so() {
    let bin = |n: u8| -> Vec<u8> { (0..4096u32).map(|i| (i as u8).wrapping_mul(n) ^ 0xff).chain([0]).collect() };
    for told in [true, false] {
        let (root, mut folder, mut chunks, mut index, ignore) = scanned(&format!("renamed-{told}"), &[]);
        std::fs::write(root.join("b.bin"), bin(3)).expect("write");
        scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 1).expect("scan");
        let id = index.files["b.bin"].id;
        std::fs::write(root.join(".b.bin.tmp"), bin(5)).expect("write");
        std::fs::rename(root.join(".b.bin.tmp"), root.join("b.bin")).expect("save by rename");
        std::fs::rename(root.join("b.bin"), root.join("c.bin")).expect("mv");
        if told {
            index.renamed("b.bin".into(), "c.bin".into());
        }
        let scope = ["b.bin".to_owned(), "c.bin".to_owned()];
        let r = scan_scoped(&root, &mut folder, &mut chunks, &mut index, &ignore, Some(&scope), 2).expect("scan");
        if told {
            assert_eq!(r.moved, [("b.bin".to_owned(), "c.bin".to_owned())], "{r:?}");
            assert_eq!(index.files["c.bin"].id, id, "the same entry");
            assert_eq!(folder.doc(id).map(|d| d.version_ids().len()), Some(1));
            assert!(matches!(folder.state(id).map(|s| &s.content), Some(Content::Binary { .. })));
        } else {
            assert_eq!(r.created, ["c.bin".to_owned()], "no evidence, no move: {r:?}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// Two nodes made a directory of one name (merged into one on disk);
/// the user removed it here: every entry behind it goes (left alive, the
/// other one showed the directory again, empty, on every node).
#[test]
fn a_merged_directory_removed_here_does_not_come_back_empty() {
    let (root, mut folder, mut chunks, mut index, ignore) = scanned("merged-dir", &[("d/a.txt", "a\n")]);
    let mut peer = Folder::new(fsync_core::AgentId::from_index(2));
    peer.create("d", Kind::Dir, 1).expect("the peer's mkdir d");
    let (c, _) = peer.changes_since(folder.version_vector(), 0, usize::MAX);
    folder.apply_changes(&c).1.expect("valid");
    assert_eq!(folder.tree().nodes().filter(|n| n.path == "d").count(), 1, "merged");
    crate::write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    std::fs::remove_dir_all(root.join("d")).expect("rm -r d");
    scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 2).expect("scan");
    let gone = |f: &mut Folder| f.tree().nodes().all(|n| !n.path.starts_with('d'));
    assert!(gone(&mut folder), "{:?}", folder.tree().nodes().map(|n| n.path.clone()).collect::<Vec<_>>());
    let (c, _) = folder.changes_since(peer.version_vector(), 0, usize::MAX);
    peer.apply_changes(&c).1.expect("valid");
    assert!(gone(&mut peer), "on the peer");
    let _ = std::fs::remove_dir_all(&root);
}

/// Two nodes made a directory of one name, each with a file in it;
/// the user moved it here: all of it goes to the new path, the peer's
/// file too (left behind, the peer's entry kept the directory at its
/// old path, with the peer's file in it).
#[test]
fn a_merged_directory_moved_here_moves_whole() {
    let (root, mut folder, mut chunks, mut index, ignore) = scanned("merged-move", &[("d/a.txt", "a\n")]);
    let mut peer = Folder::new(fsync_core::AgentId::from_index(2));
    let d = peer.create("d", Kind::Dir, 1).expect("the peer's mkdir d");
    let b = peer.create_into(Some(d), "b.txt", Kind::File, 1).expect("create");
    peer.set_text(b, "b\n", 1).expect("text");
    let (c, _) = peer.changes_since(folder.version_vector(), 0, usize::MAX);
    folder.apply_changes(&c).1.expect("valid");
    crate::write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 2).expect("scan");
    std::fs::rename(root.join("d"), root.join("e")).expect("mv d e");
    scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 3).expect("scan");
    let mut paths: Vec<String> = folder.tree().nodes().map(|n| n.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["e", "e/a.txt", "e/b.txt"]);
    let r = crate::write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert!(r.written.is_empty() && r.moved.is_empty() && !root.join("d").exists(), "{r:?}");
    let _ = std::fs::remove_dir_all(&root);
}

/// A directory replaced by a file, with live events for one path
/// below it only: what else the index had below it went too (once, it
/// stayed in the index, alive in the folder, and a file deleted here
/// came back; watcher simulation).
#[test]
fn a_directory_replaced_by_a_file_takes_everything_below_it_along() {
    let (root, mut folder, mut chunks, mut index, ignore) =
        scanned("lifted", &[("d/a.txt", "a\n"), ("d/b.txt", "b\n"), ("d/sub/c.txt", "c\n")]);
    std::fs::remove_dir_all(root.join("d")).expect("rm -r d");
    std::fs::write(root.join("d"), "a file now\n").expect("write");
    let r = scan_scoped(&root, &mut folder, &mut chunks, &mut index, &ignore, Some(&["d/a.txt".to_owned()]), 2).expect("scan");
    assert!(r.created.contains(&"d".to_owned()), "{r:?}");
    for f in ["d/a.txt", "d/b.txt", "d/sub", "d/sub/c.txt"] {
        assert!(!index.files.contains_key(f), "{f} still known: {r:?}");
        assert!(folder.tree().nodes().all(|n| n.path != f), "{f} still in the folder: {r:?}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// An event naming a path through a link (notify's stale bookkeeping
/// of a directory that became a link: the kind-changes oracle) made the
/// scan follow the link and take the file beyond it for a new file
/// below the link's path, a copy that went to every peer. The path is
/// lifted to the link.
#[test]
fn a_path_through_a_link_is_never_followed() {
    let (root, mut folder, mut chunks, mut index, ignore) = scanned("through-link", &[("real/f.txt", "f\n")]);
    std::os::unix::fs::symlink("real", root.join("l")).expect("ln -s");
    let all = scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 2).expect("scan");
    assert_eq!(all.created, vec!["l".to_owned()]);
    let r = scan_scoped(&root, &mut folder, &mut chunks, &mut index, &ignore, Some(&["l/f.txt".to_owned()]), 3).expect("scan");
    assert!(r.created.is_empty() && r.modified.is_empty(), "{r:?}");
    assert!(!index.files.contains_key("l/f.txt"));
    assert!(folder.tree().nodes().all(|n| n.path != "l/f.txt"));
    assert_eq!(folder.tree().lookup("l").map(|n| n.kind), Some(Kind::Symlink));
    let _ = std::fs::remove_dir_all(&root);
}

/// A file over the text limit is cut as it is read (never held whole),
/// and its copy under a new name, with the old one removed, is still
/// found as a move by its content.
#[test]
fn a_big_file_is_cut_as_it_is_read_and_found_again_by_its_content() {
    let (root, mut folder, mut chunks, mut index, ignore) = scanned("big-stream", &[]);
    let data = crate::noise(TEXT_MAX as usize + (1 << 20), 9);
    std::fs::write(root.join("big.bin"), &data).expect("write");
    let r = scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 2).expect("scan");
    assert_eq!(r.created, vec!["big.bin".to_owned()]);
    let id = folder.tree().lookup("big.bin").expect("taken in").id;
    let want: Vec<fsync_core::chunks::ChunkRef> = fsync_core::chunks::split(&data).into_iter().map(|(r, _)| r).collect();
    assert!(matches!(&folder.state(id).expect("state").content, Content::Binary { chunks: c, .. } if *c == want));
    std::fs::copy(root.join("big.bin"), root.join("copy.bin")).expect("cp");
    std::fs::remove_file(root.join("big.bin")).expect("rm");
    let r = scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 3).expect("scan");
    assert_eq!(r.moved, vec![("big.bin".to_owned(), "copy.bin".to_owned())], "{r:?}");
    assert_eq!(folder.tree().lookup("copy.bin").map(|n| n.id), Some(id));
    let _ = std::fs::remove_dir_all(&root);
}

/// A new file still being written was taken in as far as it was read:
/// a version of its own, sent to peers and kept in history (a big file
/// written by a program was sent twice, its first half once more). One
/// that changed between the walk and the read is looked at again, once.
#[test]
fn a_new_file_written_while_it_is_read_is_looked_at_again() {
    let root = std::env::temp_dir().join(format!("fsync-new-busy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(root.join("big.bin"), "first half").expect("write");
    // The walk saw it; then the writer went on.
    let disk: BTreeMap<String, OnDisk> = [("big.bin".to_owned(), on_disk(&root, "big.bin"))].into();
    std::fs::write(root.join("big.bin"), "first half, second half").expect("write");
    let fresh = vec!["big.bin".to_owned()];
    let (mut bodies, mut busy, mut report) = (HashMap::new(), BTreeSet::new(), ScanReport::default());
    let look = |bodies: &mut HashMap<String, Body>, busy: &mut BTreeSet<String>, report: &mut ScanReport| {
        let mut chunks = fsync_core::chunks::Chunks::default();
        read_bodies(&root, &disk, &fresh, bodies, busy, &mut chunks, report, &ScanProgress::default());
    };
    look(&mut bodies, &mut busy, &mut report);
    assert!(bodies.is_empty(), "taken in half written");
    assert_eq!(report.deferred, fresh);
    // Still changing at the second look: taken as it is (a file written
    // all the time is synced all the same).
    let mut report = ScanReport::default();
    look(&mut bodies, &mut busy, &mut report);
    assert!(bodies.contains_key("big.bin") && report.deferred.is_empty());
    // A whole scan takes it once it holds still.
    let (mut folder, mut chunks, mut index) =
        (Folder::new(fsync_core::AgentId::from_index(1)), fsync_core::chunks::Chunks::default(), Index::default());
    let r = scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 1).expect("scan");
    assert_eq!(r.created, fresh);
    assert!(index.busy.is_empty());
    let _ = std::fs::remove_dir_all(&root);
}

/// What a walk sees when a file and a directory move while it goes on:
/// both names of each. The old names are dropped (with what is below
/// the directory), a hard link's is kept.
#[test]
fn a_name_walked_before_its_move_is_dropped() {
    let root = std::env::temp_dir().join(format!("fsync-seen-twice-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("new/m")).expect("mkdir");
    std::fs::write(root.join("new/f.txt"), "one\n").expect("write");
    std::fs::write(root.join("new/m/g.txt"), "two\n").expect("write");
    std::fs::write(root.join("h.txt"), "three\n").expect("write");
    std::fs::hard_link(root.join("h.txt"), root.join("link.txt")).expect("link");
    let mut index = Index::default();
    let mut disk = BTreeMap::new();
    for (old, now) in [("a/f.txt", "new/f.txt"), ("d", "new/m"), ("d/g.txt", "new/m/g.txt"), ("h.txt", "h.txt")] {
        let d = on_disk(&root, now);
        index.files.insert(old.to_owned(), known(&d));
        disk.insert(old.to_owned(), d);
    }
    for now in ["new", "new/f.txt", "new/m", "new/m/g.txt", "link.txt"] {
        disk.insert(now.to_owned(), on_disk(&root, now));
    }
    let fresh = disk.iter().filter(|(p, d)| is_new(&index, p, d)).map(|(_, d)| ino_key(d.stat, d.kind)).collect();
    seen_twice(&root, &index, &fresh, &mut disk);
    let left: Vec<&str> = disk.keys().map(String::as_str).collect();
    assert_eq!(left, ["h.txt", "link.txt", "new", "new/f.txt", "new/m", "new/m/g.txt"]);
    let _ = std::fs::remove_dir_all(&root);
}

/// The start-up scan (no live events yet) meets a file moved during its
/// walk from a directory not reached yet into one passed (here: out of
/// the folder while the first walk goes on, in before the second). It
/// was deleted at once, and the move came next as a new file: with a
/// peer's concurrent edit of the old name, both were kept. The second
/// look finds the move; a file really gone is still deleted.
#[test]
fn the_start_up_scan_looks_again_at_what_it_finds_gone() {
    let root = std::env::temp_dir().join(format!("fsync-start-up-{}", std::process::id()));
    let aside = root.with_extension("aside");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("a")).expect("mkdir");
    std::fs::create_dir_all(root.join("z")).expect("mkdir");
    std::fs::write(root.join("a/f.txt"), "one\ntwo\n").expect("write");
    std::fs::write(root.join("gone.txt"), "three\n").expect("write");
    let mut folder = Folder::new(fsync_core::AgentId::from_index(1));
    let mut chunks = fsync_core::chunks::Chunks::default();
    let mut index = Index::default();
    let ignore = Ignore::load(&root);
    let progress = ScanProgress::default();
    start_up_scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 1, &progress, || {}).expect("scan");
    let f = folder.tree().lookup("a/f.txt").expect("taken in").id;
    std::fs::rename(root.join("a/f.txt"), &aside).expect("mv out");
    std::fs::remove_file(root.join("gone.txt")).expect("rm");
    let mut paused = false;
    let r = start_up_scan(&root, &mut folder, &mut chunks, &mut index, &ignore, 2, &progress, || {
        paused = true;
        std::thread::sleep(GONE_WAIT);
        std::fs::rename(&aside, root.join("z/g.txt")).expect("mv in");
    })
    .expect("scan");
    assert!(paused);
    assert_eq!(r.moved, vec![("a/f.txt".to_owned(), "z/g.txt".to_owned())], "{r:?}");
    assert_eq!((r.created.as_slice(), r.deleted.as_slice()), (&[][..], &["gone.txt".to_owned()][..]), "{r:?}");
    assert!(r.deferred.is_empty(), "{r:?}");
    assert_eq!(folder.tree().lookup("z/g.txt").map(|e| e.id), Some(f));
    assert!(folder.tree().lookup("gone.txt").is_none());
    let _ = std::fs::remove_dir_all(&root);
}

/// A scoped scan of a directory (what a new directory's rescan is) takes
/// in what changed in it and leaves the rest known as it was: the files
/// that hold what the index knows are not taken out and put back.
#[test]
fn a_scoped_scan_of_a_directory_takes_in_only_what_changed() {
    let files: Vec<(String, String)> = (0..50).map(|i| (format!("d/f{i}.txt"), format!("file {i}\n"))).collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let (root, mut folder, mut chunks, mut index, ignore) = scanned("scoped-same", &refs);
    std::fs::write(root.join("d/f7.txt"), "file 7, edited\n").expect("edit");
    std::fs::write(root.join("d/new.txt"), "new\n").expect("new");
    std::fs::remove_file(root.join("d/f9.txt")).expect("rm");
    index.take_unsaved();
    let scope = vec!["d".to_owned()];
    let mut report = scan_scoped(&root, &mut folder, &mut chunks, &mut index, &ignore, Some(&scope), 2).expect("scan");
    // The deletion waits for its second look.
    std::thread::sleep(GONE_WAIT);
    let second = scan_scoped(&root, &mut folder, &mut chunks, &mut index, &ignore, Some(&scope), 3).expect("scan");
    report.deleted.extend(second.deleted);
    assert_eq!(
        (report.created, report.modified, report.deleted),
        (vec!["d/new.txt".to_owned()], vec!["d/f7.txt".to_owned()], vec!["d/f9.txt".to_owned()])
    );
    assert_eq!(index.files.len(), 51, "d and its 50 files, less one, plus one");
    let rows: Vec<String> = index.take_unsaved().rows.into_iter().map(|(p, _)| p).collect();
    assert!(rows.len() <= 4, "unchanged files were rewritten: {rows:?}");
    let f3 = folder.tree().lookup("d/f3.txt").expect("f3").id;
    assert_eq!(folder.doc(f3).expect("doc").text(), "file 3\n");
    let _ = std::fs::remove_dir_all(&root);
}
