use super::fsops::kind_at;
use super::stage::Renamed;
use super::*;
use crate::ignore::TEMP_PREFIX;
use fsync_core::{chunks::Chunks, AgentId};
use std::io::Write;
use std::path::PathBuf;

/// A file replaced by a directory between our check and our rename:
/// the exchange swapped the directory out (to an ignored temp name,
/// removed at the next start: its files were lost). It is swapped back,
/// and the path is scanned instead.
#[test]
fn a_directory_made_where_we_write_is_never_swapped_out() {
    let root = fresh_root("fsync-write-unit-dir");
    let target = root.join("x");
    std::fs::write(&target, "old\n").expect("write");
    let expected = lstat(&target).expect("stat");
    let staged = stage(&target, &Body::Bytes(b"ours\n"), false).expect("stage").expect("written");
    std::fs::remove_file(&target).expect("rm");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("inside.txt"), "user's\n").expect("write");
    assert!(matches!(staged.rename(Some(expected)), Ok(Renamed::Moved)));
    assert_eq!(std::fs::read_to_string(target.join("inside.txt")).expect("still there"), "user's\n");
    let left: Vec<_> = std::fs::read_dir(&root).expect("list").flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("x")], "a temp file was left");
    let _ = std::fs::remove_dir_all(&root);
}

/// Two files swapped names on a peer while the user saved one of them
/// here: the write-back overwrote each with the other (its rename was
/// blocked by the other), and the user's save, displaced, was taken in
/// as an edit of the file now written at that path, not of the file it
/// was made to: the other file's text replaced the one the user saved,
/// and the save's lines were kept twice (the kind-changes oracle, with
/// conflict names that flipped).
#[test]
fn a_save_displaced_by_a_swap_of_names_is_taken_in_as_the_file_it_was() {
    let (root, mut folder, mut chunks, mut index, a) = one_file_written("fsync-write-unit-swap");
    folder.rename(a, "a.txt", 1).expect("mv f.txt a.txt");
    folder.set_text(a, "alpha\n", 1).expect("text");
    let b = folder.create("b.txt", Kind::File, 1).expect("create");
    folder.set_text(b, "beta\n", 1).expect("text");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    // A peer swaps the two names.
    folder.rename(a, "c.txt", 2).expect("mv a c");
    folder.rename(b, "a.txt", 2).expect("mv b a");
    folder.rename(a, "b.txt", 2).expect("mv c b");
    // The user saves a.txt (alpha's file, here) as the swap lands.
    let target = root.join("a.txt");
    let mut intents = |_: &mut Index| -> Result<(), String> { append_mine(&target) };
    let report = write_back_with(&root, &mut folder, &mut chunks, &mut index, &mut intents).expect("write");
    assert_eq!(report.raced, vec!["a.txt".to_owned()], "{report:?}");
    let text = |f: &Folder, id| f.doc(id).expect("doc").text();
    assert_eq!(text(&folder, a), "alpha\nmine\n", "the save is alpha's");
    assert_eq!(text(&folder, b), "beta\n", "beta is as it was");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(std::fs::read_to_string(root.join("a.txt")).expect("a"), "beta\n");
    assert_eq!(std::fs::read_to_string(root.join("b.txt")).expect("b"), "alpha\nmine\n");
    let _ = std::fs::remove_dir_all(&root);
}

/// The user's write into `target` as a write-back lands: a line
/// appended (from inside the intents callback, just before the
/// replacement).
fn append_mine(target: &Path) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new().append(true).open(target).map_err(|e| e.to_string())?;
    f.write_all(b"mine\n").map_err(|e| e.to_string())
}

/// A fresh root holding `f.txt` ("one\n"), written back from a folder.
/// A batch of writes where the user removed one file's directory after
/// it was staged: the whole batch failed, and every file in it kept the
/// intent of a write that never landed, so the next scan took what the
/// disk held as an edit of the version never written, and the lines it
/// lacked were deleted everywhere (the kind-changes oracle lost tokens).
/// The rest of the batch lands; the removed one is scanned, with no
/// intent left.
#[test]
fn a_directory_removed_under_a_staged_write_drops_only_that_write_and_its_intent() {
    let root = fresh_root("fsync-write-unit-gone-dir");
    let mut folder = Folder::new(AgentId::from_index(1));
    let (mut chunks, mut index) = (Chunks::default(), Index::default());
    let f = folder.create("d/f.txt", Kind::File, 1).expect("create");
    let g = folder.create("g.txt", Kind::File, 1).expect("create");
    folder.set_text(f, "f\n", 1).expect("text");
    folder.set_text(g, "g\n", 1).expect("text");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    folder.set_text(f, "f\npeer\n", 2).expect("text");
    folder.set_text(g, "g\npeer\n", 2).expect("text");
    let batch: Vec<Pending> = [(f, "d/f.txt"), (g, "g.txt")]
        .into_iter()
        .map(|(id, path)| {
            let text = folder.doc(id).expect("doc").text();
            let staged = stage(&root.join(path), &Body::Bytes(text.as_bytes()), false).expect("stage").expect("staged");
            let version = folder.doc(id).expect("doc").version_ids();
            Pending { path: path.to_owned(), id, kind: Kind::File, version, known: index.files.get(path).cloned(), staged }
        })
        .collect();
    std::fs::remove_dir_all(root.join("d")).expect("rm -r d");
    let mut report = WriteReport::default();
    land_batch(batch, &mut folder, &mut chunks, &mut index, &mut report, &mut |_: &mut Index| Ok(())).expect("landed");
    assert_eq!(report.written, vec!["g.txt".to_owned()]);
    assert_eq!(report.needs_scan, vec!["d/f.txt".to_owned()]);
    assert_eq!(std::fs::read_to_string(root.join("g.txt")).expect("g"), "g\npeer\n");
    assert!(index.files.get("d/f.txt").is_some_and(|k| k.staged.is_none()), "{:?}", index.files.get("d/f.txt"));
    let _ = std::fs::remove_dir_all(&root);
}

/// A peer's deletion of a file that a program wrote after the
/// write-back looked at it (the look said unchanged): the removal sees
/// the write once the file is renamed aside, and puts the file back
/// for the scan instead of deleting the write with it.
#[test]
fn a_write_after_the_look_before_a_removal_is_put_back_not_deleted() {
    let root = fresh_root("fsync-write-unit-remove");
    let target = root.join("f.txt");
    std::fs::write(&target, "one\n").expect("write");
    let looked = lstat(&target).expect("stat");
    // The program's write, between the look and the removal.
    std::fs::write(&target, "one\ntwo\n").expect("write");
    assert!(matches!(remove_unchanged(&root, &target, &looked), Ok(Removal::PutBack)));
    assert_eq!(std::fs::read_to_string(&target).expect("still there"), "one\ntwo\n");
    // Unchanged since the look: gone from its path, kept aside at the
    // root for a last look (see `a_write_through_a_descriptor_opened_...`).
    let looked = lstat(&target).expect("stat");
    let Ok(Removal::Removed(aside)) = remove_unchanged(&root, &target, &looked) else { panic!("not removed") };
    assert!(!target.exists());
    assert_eq!(aside.parent(), Some(root.as_path()));
    assert_eq!(std::fs::read_dir(&root).expect("list").count(), 1);
    let _ = std::fs::remove_dir_all(&root);
}

/// A peer's rename of a file, with the file made a directory here
/// between the write-back's check and its rename: the rename took the
/// user's new directory (and the file in it) to the entry's new name.
/// The inode and kind moved are checked, and the directory goes back.
#[test]
fn a_path_made_a_directory_under_a_peers_rename_goes_back_with_its_files() {
    let root = fresh_root("fsync-write-unit-put-back");
    std::fs::write(root.join("a.txt"), "the entry\n").expect("write");
    let known_at = |p: &Path| match kind_at(p) {
        Some((ino, Some(kind))) => (ino, kind),
        other => panic!("nothing synced at {}: {other:?}", p.display()),
    };
    let known = known_at(&root.join("a.txt"));
    // The user's replacement, after the check.
    std::fs::rename(root.join("a.txt"), root.join("kept-aside")).expect("mv");
    std::fs::create_dir(root.join("a.txt")).expect("mkdir");
    std::fs::write(root.join("a.txt/k.txt"), "the user's\n").expect("write");
    // The write-back's rename, then its check.
    std::fs::rename(root.join("a.txt"), root.join("b.txt")).expect("rename");
    assert!(!moved_as_known(&root.join("b.txt"), &root.join("a.txt"), Some(known)), "not what the index knew");
    assert_eq!(std::fs::read_to_string(root.join("a.txt/k.txt")).expect("back"), "the user's\n");
    assert!(kind_at(&root.join("b.txt")).is_none());
    // What the index knew moves as it is.
    let dir = known_at(&root.join("a.txt"));
    std::fs::rename(root.join("a.txt"), root.join("c")).expect("rename");
    assert!(moved_as_known(&root.join("c"), &root.join("a.txt"), Some(dir)));
    assert!(root.join("c/k.txt").exists());
    let _ = std::fs::remove_dir_all(&root);
}

/// A store that counts the chunks read from it.
struct Counting {
    inner: Chunks,
    reads: std::cell::Cell<usize>,
}

impl ChunkStore for Counting {
    fn get(&self, hash: &fsync_core::chunks::ChunkHash) -> Option<Vec<u8>> {
        self.reads.set(self.reads.get() + 1);
        self.inner.get(hash)
    }
    fn has(&self, hash: &fsync_core::chunks::ChunkHash) -> bool {
        self.inner.has(hash)
    }
    fn put(&mut self, hash: fsync_core::chunks::ChunkHash, bytes: &[u8]) {
        self.inner.put(hash, bytes)
    }
}

/// Each pass of the write-back, while a big file's chunks arrived,
/// read every chunk received so far (up to the first missing one) to
/// assemble the whole file in memory: quadratic in the file's chunks
/// (a 200 MiB file took 6 s on loopback) and a whole-file buffer. A
/// content is written only once all of its chunks are here, and from
/// them one at a time.
#[test]
fn a_binary_still_arriving_is_not_read_and_is_written_from_its_chunks() {
    let root = fresh_root("fsync-write-unit-chunks");
    // The content, made on a peer: its chunks, and its version here.
    let data = crate::noise(3 << 20, 7);
    let mut theirs = Chunks::default();
    let mut folder = Folder::new(AgentId::from_index(1));
    let id = folder.create("big.bin", Kind::File, 1).expect("create");
    fsync_core::ingest::take_in_bytes(&mut folder, &mut theirs, id, &[], data.clone(), false, 1).expect("binary");
    let parts = fsync_core::chunks::split(&data);
    assert!(parts.len() > 10, "{} chunks", parts.len());
    let mut chunks = Counting { inner: Chunks::default(), reads: Default::default() };
    let mut index = Index::default();
    for (r, bytes) in &parts[..parts.len() - 1] {
        chunks.put(r.hash, bytes);
        let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
        assert_eq!(report.waiting_for_chunks, vec!["big.bin".to_owned()]);
    }
    assert_eq!(chunks.reads.get(), 0, "chunks were read before all were here");
    assert!(!root.join("big.bin").exists());
    let (last, bytes) = parts.last().expect("chunks");
    chunks.put(last.hash, bytes);
    let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(report.written, vec!["big.bin".to_owned()], "{report:?}");
    assert_eq!(chunks.reads.get(), parts.len(), "each chunk read once");
    assert!(std::fs::read(root.join("big.bin")).expect("written") == data);
    let _ = std::fs::remove_dir_all(&root);
}

/// An empty directory for one test, named after it.
fn fresh_root(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("mkdir");
    root
}

fn one_file_written(name: &str) -> (PathBuf, Folder, Chunks, Index, EntryId) {
    let root = fresh_root(name);
    let mut folder = Folder::new(AgentId::from_index(1));
    let mut chunks = Chunks::default();
    let mut index = Index::default();
    let id = folder.create("f.txt", Kind::File, 1).expect("create");
    folder.set_text(id, "one\n", 1).expect("text");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    (root, folder, chunks, index, id)
}

/// A SIGKILL after a write-back's exchange, before what a raced append
/// brought was saved: the append was in the displaced old file only
/// (the heavy-writes SIGKILL test lost lines this way). The displaced
/// file is kept until the save, and the restart takes it in.
#[test]
fn a_write_displaced_by_a_write_back_survives_a_kill_before_the_save() {
    let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-kill");
    // A peer's line arrives (saved: durable), and the write-back runs;
    // the user appends just before the exchange.
    folder.set_text(id, "peer\none\n", 2).expect("text");
    let durable = folder.clone();
    let mut saved_index = None;
    let target = root.join("f.txt");
    let mut intents = |i: &mut Index| -> Result<(), String> {
        saved_index = Some(i.encode());
        append_mine(&target)
    };
    let report = write_back_with(&root, &mut folder, &mut chunks, &mut index, &mut intents).expect("write");
    assert_eq!(report.raced, vec!["f.txt".to_owned()]);
    assert_eq!(report.displaced.len(), 1, "the displaced file is kept until the save");
    // SIGKILL: what was taken in from the race is gone with the
    // process; the store has `durable` and the index of the intents.
    restart_after_a_kill(&root, durable, &saved_index.expect("intents"), &report);
    let _ = std::fs::remove_dir_all(&root);
}

/// A displaced temp file stayed in its directory, in the user's tree,
/// until a restart when the user moved that directory between the
/// write-back and the save. It is removed where it is.
#[test]
fn a_displaced_file_whose_directory_was_moved_before_the_save_is_removed() {
    let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit-moved-dir");
    let d = folder.create("d", Kind::Dir, 1).expect("mkdir");
    let g = folder.create_into(Some(d), "g.txt", Kind::File, 1).expect("create");
    folder.set_text(g, "one\n", 1).expect("text");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    folder.set_text(g, "peer\none\n", 2).expect("text");
    let target = root.join("d/g.txt");
    let mut intents = |_: &mut Index| -> Result<(), String> { append_mine(&target) };
    let mut report = write_back_with(&root, &mut folder, &mut chunks, &mut index, &mut intents).expect("write");
    assert_eq!(report.displaced.len(), 1);
    std::fs::rename(root.join("d"), root.join("e")).expect("mv d e");
    report.settle();
    let names: Vec<_> = std::fs::read_dir(root.join("e")).expect("ls").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("g.txt")], "the temp file is gone from the moved directory");
    let _ = std::fs::remove_dir_all(&root);
}

/// A peer deleted a file whose directory the user had just moved: the
/// write-back found the old path gone and dropped it from the index,
/// so the scan took the file in the moved directory for a new one, and
/// a peer's concurrent edit of it kept it twice (oracle, kind changes).
/// The index keeps it until the scan has seen the move.
#[test]
fn a_deleted_file_in_a_directory_the_user_moved_is_not_taken_for_new() {
    let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit-deleted-in-moved");
    let d = folder.create("d", Kind::Dir, 1).expect("mkdir");
    let g = folder.create_into(Some(d), "g.txt", Kind::File, 1).expect("create");
    folder.set_text(g, "one\n", 1).expect("text");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    folder.delete(g, 2).expect("a peer deletes it");
    std::fs::rename(root.join("d"), root.join("e")).expect("mv d e");
    let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(report.needs_scan, vec!["d".to_owned()], "{report:?}");
    assert!(index.files.contains_key("d/g.txt"), "still known at its old path");
    let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 3).expect("scan");
    assert!(r.created.is_empty(), "nothing new: {r:?}");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert!(!root.join("e/g.txt").exists(), "the peer's deletion applies where the file went");
    assert!(root.join("e").is_dir());
    assert_eq!(folder.tree().nodes().filter(|n| n.path.ends_with("g.txt")).count(), 0);
    let _ = std::fs::remove_dir_all(&root);
}

/// A peer moved a file into a new directory of the file's own name
/// (`mv x t; mkdir x; mv t x/f`): the write-back held the move until a
/// scan took in the file "above" it, which was the file itself, so it
/// never happened (watcher simulation).
#[test]
fn a_file_moved_into_a_directory_of_its_own_name_is_written_there() {
    let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-own-name");
    folder.rename(id, "t", 2).expect("mv f.txt t");
    let d = folder.create("f.txt", Kind::Dir, 2).expect("mkdir f.txt");
    folder.move_into(id, Some(d), "g.txt", 2).expect("mv t f.txt/g.txt");
    let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert!(report.needs_scan.is_empty(), "{report:?}");
    assert_eq!(std::fs::read_to_string(root.join("f.txt/g.txt")).expect("moved"), "one\n");
    let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 3).expect("scan");
    assert!(r.is_empty(), "the disk is the folder: {r:?}");
    let _ = std::fs::remove_dir_all(&root);
}

/// A peer moved a directory below new directories made at its own old
/// name (`mv d t; mkdir -p d/e; mv t d/e/d`): the rename straight
/// there would put the directory into itself (EINVAL).
#[test]
fn a_directory_moved_below_its_own_old_name_is_written_there() {
    let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit-dir-own-name");
    let d = folder.create("d", Kind::Dir, 1).expect("mkdir d");
    let g = folder.create_into(Some(d), "g.txt", Kind::File, 1).expect("create");
    folder.set_text(g, "in d\n", 1).expect("text");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 1).expect("scan");
    assert!(r.is_empty(), "our own writes: {r:?}");
    folder.rename(d, "t", 2).expect("mv d t");
    let d2 = folder.create("d", Kind::Dir, 2).expect("mkdir d");
    let e = folder.create_into(Some(d2), "e", Kind::Dir, 2).expect("mkdir d/e");
    folder.move_into(d, Some(e), "d", 2).expect("mv t d/e/d");
    let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert!(report.needs_scan.is_empty() && report.failed.is_empty(), "{report:?}");
    assert_eq!(std::fs::read_to_string(root.join("d/e/d/g.txt")).expect("moved"), "in d\n");
    let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 3).expect("scan");
    assert!(r.is_empty(), "the disk is the folder: {r:?}");
    let _ = std::fs::remove_dir_all(&root);
}

/// A peer moved a file to a name another file is moving away from,
/// while the user deleted it here: it is not written at the new name
/// once that is free, before the scan has seen the deletion (written,
/// the scan would find it alive, and a deletion lost; watcher
/// simulation). Then the move, concurrent with the deletion, keeps it
/// there by the rule.
#[test]
fn a_file_deleted_here_is_not_written_at_a_name_being_vacated_before_the_scan() {
    let (root, mut folder, mut chunks, mut index, f) = one_file_written("fsync-write-unit-vacated-name");
    let g = folder.create("g.txt", Kind::File, 1).expect("create");
    folder.set_text(g, "two\n", 1).expect("text");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    folder.rename(g, "h.txt", 2).expect("mv g.txt h.txt");
    folder.rename(f, "g.txt", 2).expect("mv f.txt g.txt");
    std::fs::remove_file(root.join("f.txt")).expect("rm f.txt");
    let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(std::fs::read_to_string(root.join("h.txt")).expect("moved"), "two\n");
    assert!(!root.join("g.txt").exists(), "written before the scan saw it deleted");
    assert!(report.needs_scan.contains(&"f.txt".to_owned()), "{report:?}");
    let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 3).expect("scan");
    assert_eq!(r.deleted, vec!["f.txt".to_owned()], "{r:?}");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(folder.tree().path_of(f), Some("g.txt"));
    assert_eq!(std::fs::read_to_string(root.join("g.txt")).expect("kept where it went"), "one\n");
    let _ = std::fs::remove_dir_all(&root);
}

/// A link made here, not scanned yet, where a peer's directory is to
/// be written: nothing goes through it (it leads out of the folder),
/// neither the peer's new files nor a file it moved there.
#[test]
fn a_peers_files_are_never_written_through_a_link_made_here_before_the_scan() {
    let (root, mut folder, mut chunks, mut index, f) = one_file_written("fsync-write-unit-through-link");
    let outside = root.with_extension("outside");
    let _ = std::fs::remove_dir_all(&outside);
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::os::unix::fs::symlink(&outside, root.join("out")).expect("ln -s");
    let d = folder.create("out", Kind::Dir, 2).expect("a peer's mkdir out");
    let x = folder.create_into(Some(d), "x.txt", Kind::File, 2).expect("create");
    folder.set_text(x, "peer's\n", 2).expect("text");
    folder.move_into(f, Some(d), "f.txt", 2).expect("mv f.txt out/");
    let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert!(std::fs::read_dir(&outside).expect("list").next().is_none(), "written outside the folder: {report:?}");
    assert!(report.needs_scan.contains(&"out".to_owned()), "{report:?}");
    assert_eq!(std::fs::read_to_string(root.join("f.txt")).expect("not moved"), "one\n");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&outside);
}

/// The user moved a directory out of the folder and left a link in its
/// place, not scanned yet, and a peer deleted a file in it: the file,
/// outside the folder now, is not removed through the link.
#[test]
fn a_peers_deletion_is_never_made_through_a_link_made_here_before_the_scan() {
    let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit-remove-through-link");
    let x = folder.create("d/x.txt", Kind::File, 1).expect("create");
    folder.set_text(x, "x\n", 1).expect("text");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    let outside = root.with_extension("outside");
    let _ = std::fs::remove_dir_all(&outside);
    std::fs::rename(root.join("d"), &outside).expect("mv d out of the folder");
    std::os::unix::fs::symlink(&outside, root.join("d")).expect("ln -s");
    folder.delete(x, 2).expect("a peer's rm d/x.txt");
    let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert!(outside.join("x.txt").exists(), "removed outside the folder: {report:?}");
    assert!(report.needs_scan.contains(&"d".to_owned()), "{report:?}");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&outside);
}

/// A peer renamed a file, and an editor that had it open saved it
/// under the old name right after: the index knows it at both paths
/// until the write-back. The user then removed the old name: the scan
/// deleted the entry, which was on disk at the new path all along, and
/// the write-back removed it there too (watcher simulation, deleted
/// stays deleted: the file the user kept was gone).
#[test]
fn an_old_path_of_a_file_known_at_two_does_not_delete_it() {
    let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-two-paths");
    folder.rename(id, "g.txt", 2).expect("a peer renames it");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert!(root.join("g.txt").exists());
    std::fs::write(root.join("f.txt"), "one\nsaved by the editor\n").expect("the editor saves the old name");
    let ig = Ignore::load(&root);
    crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &ig, 3).expect("scan");
    assert!(index.files.contains_key("f.txt") && index.files.contains_key("g.txt"));
    // Known at the old name as the folder is now (its deletion then
    // follows everything, the peer's rename included).
    let now = folder.doc(id).expect("doc").version_ids();
    index.files.get_mut("f.txt").expect("known").base = now;
    std::fs::remove_file(root.join("f.txt")).expect("rm the old name");
    for t in 4..7 {
        crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &ig, t).expect("scan");
        std::thread::sleep(crate::scan::GONE_WAIT);
    }
    assert!(folder.state(id).is_some_and(|s| s.alive), "not deleted");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(folder.tree().path_of(id), Some("g.txt"));
    assert_eq!(std::fs::read_to_string(root.join("g.txt")).expect("kept"), "one\nsaved by the editor\n");
    let _ = std::fs::remove_dir_all(&root);
}

/// A peer renamed and edited a file; before that reached the disk, the
/// user renamed it too (and its metadata changed with the move): the
/// scan took the move in after the peer's, and then the file's content
/// against a base that held the peer's edit, which the disk did not
/// show, so the peer's lines were taken out (watcher simulation, lost).
#[test]
fn a_move_here_while_a_peers_move_and_edit_are_on_their_way_keeps_the_edit() {
    let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-moves-crossed");
    folder.rename(id, "q.txt", 2).expect("a peer renames it");
    folder.set_text(id, "one\npeer\n", 2).expect("and edits it");
    std::fs::rename(root.join("f.txt"), root.join("r.txt")).expect("mv");
    std::fs::write(root.join("r.txt"), "one\nmine\n").expect("and saves it");
    let ig = Ignore::load(&root);
    crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &ig, 3).expect("scan");
    let text = folder.doc(id).expect("doc").text();
    assert!(text.contains("peer\n") && text.contains("mine\n"), "{text:?}");
    let _ = std::fs::remove_dir_all(&root);
}

/// A file moved and saved between two scans, then deleted: the save
/// was taken in from before the move, the deletion from after the save
/// only, so it was concurrent with our own move and did not undo it
/// (the file came back where it was moved; watcher simulation, deleted
/// stays deleted).
#[test]
fn a_file_moved_saved_and_deleted_here_stays_deleted() {
    let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-moved-saved-deleted");
    std::fs::rename(root.join("f.txt"), root.join("g.txt")).expect("mv");
    std::fs::write(root.join("g.txt"), "one\nmine\n").expect("save");
    let ig = Ignore::load(&root);
    let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &ig, 3).expect("scan");
    assert_eq!(r.moved, vec![("f.txt".to_owned(), "g.txt".to_owned())], "{r:?}");
    std::fs::remove_file(root.join("g.txt")).expect("rm");
    for t in 4..7 {
        crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &ig, t).expect("scan");
        std::thread::sleep(crate::scan::GONE_WAIT);
    }
    assert_eq!(folder.tree().path_of(id), None, "deleted");
    let _ = std::fs::remove_dir_all(&root);
}

/// A file the user moved while a peer's deletion of it (or of the
/// path, for a directory put there) was on its way: the write-back
/// found the old path gone and dropped it from the index, so the scan
/// took the moved file for a new one, and its history (a concurrent
/// binary version kept there) was no longer the file's (oracle, kind
/// changes). The move is concurrent with the deletion: the file lives
/// on where the user put it, as the entry it was.
#[test]
fn a_file_moved_while_a_peer_deleted_it_keeps_its_history_where_it_went() {
    let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-moved-deleted");
    folder.set_text(id, "one\ntwo\n", 2).expect("text");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    folder.delete(id, 3).expect("a peer deletes it");
    std::fs::create_dir(root.join("d")).expect("mkdir");
    std::fs::rename(root.join("f.txt"), root.join("d/g.txt")).expect("mv");
    let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(report.needs_scan, vec!["f.txt".to_owned()], "{report:?}");
    let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 4).expect("scan");
    assert!(r.created.iter().all(|p| p == "d"), "the file is not new: {r:?}");
    assert_eq!(folder.tree().path_of(id), Some("d/g.txt"), "the same entry, where it went");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(std::fs::read_to_string(root.join("d/g.txt")).expect("kept on disk"), "one\ntwo\n");
    let _ = std::fs::remove_dir_all(&root);
}

/// The same for a directory a peer removed with what is in it: moved
/// here meanwhile, the directory lives on where it went (the move is
/// concurrent with its removal), and what was in it stays deleted (no
/// one touched it). Without the move, the removal took the directory
/// from where the user put it.
#[test]
fn a_directory_moved_while_a_peer_removed_it_lives_on_where_it_went() {
    let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit-dir-moved-deleted");
    let d = folder.create("d", Kind::Dir, 1).expect("mkdir");
    let g = folder.create_into(Some(d), "g.txt", Kind::File, 1).expect("create");
    folder.set_text(g, "in d\n", 1).expect("text");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    folder.delete(d, 2).expect("a peer removes d and what is in it");
    std::fs::rename(root.join("d"), root.join("e")).expect("mv d e");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    let r = crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 3).expect("scan");
    assert!(r.created.is_empty(), "nothing new: {r:?}");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(folder.tree().path_of(d), Some("e"));
    assert!(root.join("e").is_dir(), "where the user put it");
    assert_eq!(folder.tree().path_of(g), None, "deleted, as no one touched it");
    assert!(!root.join("e/g.txt").exists());
    let _ = std::fs::remove_dir_all(&root);
}

/// A new process (another pid) starts from `durable` and the index
/// last saved, after a kill that left `report`'s displaced file: the
/// raced `mine` line is taken in from it, each line once in `f.txt`.
fn restart_after_a_kill(root: &Path, durable: Folder, saved_index: &[u8], report: &WriteReport) {
    let (mut folder, mut index) = (durable, Index::decode(saved_index).expect("decode"));
    let mut chunks = Chunks::default();
    let leftover = report.displaced[0].path().to_owned();
    let other = root.join(format!("{TEMP_PREFIX}1-{}", std::process::id()));
    std::fs::rename(&leftover, &other).expect("as another process's");
    assert_eq!(recover_leftovers(root, &mut folder, &mut chunks, &index).expect("recover"), (1, 1));
    crate::scan::scan(root, &mut folder, &mut chunks, &mut index, &Ignore::load(root), 3).expect("scan");
    write_back(root, &mut folder, &mut chunks, &mut index).expect("write");
    let text = std::fs::read_to_string(root.join("f.txt")).expect("read");
    for line in ["peer\n", "one\n", "mine\n"] {
        assert_eq!(text.matches(line).count(), 1, "{line:?} once in {text:?}");
    }
    assert!(!other.exists(), "the leftover is removed");
}

/// A raced write in the first batch of a big write-back: no later
/// batch saves its intents before the caller has saved what the race
/// brought, so a kill then still finds the displaced file marked.
#[test]
fn a_race_in_an_early_batch_survives_a_kill_before_the_save() {
    let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-batches");
    let ids: Vec<EntryId> = (0..STAGE_BATCH + 10)
        .map(|n| {
            let e = folder.create(&format!("g{n:04}.txt"), Kind::File, 1).expect("create");
            folder.set_text(e, "x\n", 1).expect("text");
            e
        })
        .collect();
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    folder.set_text(id, "peer\none\n", 2).expect("text");
    for e in &ids {
        folder.set_text(*e, "x\ny\n", 2).expect("text");
    }
    let durable = folder.clone();
    let mut saved_index = None;
    let target = root.join("f.txt");
    let mut intents = |i: &mut Index| -> Result<(), String> {
        if saved_index.is_none() {
            append_mine(&target)?;
        }
        saved_index = Some(i.encode());
        Ok(())
    };
    let report = write_back_with(&root, &mut folder, &mut chunks, &mut index, &mut intents).expect("write");
    assert_eq!(report.raced, vec!["f.txt".to_owned()]);
    // Killed here: the store has `durable` and the last intents.
    restart_after_a_kill(&root, durable, &saved_index.expect("intents"), &report);
    for n in 0..STAGE_BATCH + 10 {
        let g = std::fs::read_to_string(root.join(format!("g{n:04}.txt"))).expect("read");
        assert_eq!(g, "x\ny\n");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// A program reads the file, we exchange ours in, it writes what it
/// read plus its edit (into ours, by path). What it had appended before
/// the exchange is taken in from the displaced file and is in what it
/// writes: once in the result, not twice.
#[test]
fn a_read_modify_write_across_our_exchange_keeps_each_line_once() {
    let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-rmw");
    folder.set_text(id, "peer\none\n", 2).expect("text");
    let target = root.join("f.txt");
    let mut intents = |_: &mut Index| -> Result<(), String> { append_mine(&target) };
    let report = write_back_with(&root, &mut folder, &mut chunks, &mut index, &mut intents).expect("write");
    assert_eq!(report.raced, vec!["f.txt".to_owned()]);
    std::fs::write(&target, "one\nmine\nmore\n").expect("the program's write");
    crate::scan::scan(&root, &mut folder, &mut chunks, &mut index, &Ignore::load(&root), 3).expect("scan");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    let text = std::fs::read_to_string(&target).expect("read");
    for line in ["peer\n", "one\n", "mine\n", "more\n"] {
        assert_eq!(text.matches(line).count(), 1, "{line:?} once in {text:?}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// A displaced temp file can move with its directory before the pass
/// removes it (the user renamed the directory): a peer's deletion of
/// that directory still removes it, temp file and all.
#[test]
fn a_deleted_directory_holding_a_leftover_temp_file_is_removed() {
    let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit-stale-dir");
    let d = folder.create("d", Kind::Dir, 1).expect("mkdir");
    let f = folder.create("d/g.txt", Kind::File, 1).expect("create");
    folder.set_text(f, "g\n", 1).expect("text");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    std::fs::write(root.join(format!("d/{TEMP_PREFIX}{}-7", std::process::id())), "old\n").expect("leftover");
    folder.delete(f, 2).expect("delete");
    folder.delete(d, 2).expect("delete");
    let report = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert!(!root.join("d").exists(), "the directory went: {:?}", report.removed);
    assert!(!index.files.contains_key("d"));
    let _ = std::fs::remove_dir_all(&root);
}

/// When our write landed is kept for `UNSEEN_WRITE` only: a folder
/// where every file was once written does not keep it for all of them.
#[test]
fn what_our_writes_replaced_is_forgotten_after_its_window() {
    let (root, mut folder, mut chunks, mut index, _) = one_file_written("fsync-write-unit");
    assert!(index.files["f.txt"].written.as_ref().is_some_and(crate::index::Written::recent));
    let long_ago = std::time::Instant::now().checked_sub(crate::scan::UNSEEN_WRITE).expect("uptime");
    if let Some(w) = index.files.get_mut("f.txt").and_then(|k| k.written.as_mut()) {
        w.at = long_ago;
    }
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(index.files["f.txt"].written, None);
    let _ = std::fs::remove_dir_all(&root);
}

/// A peer's deletion of a file a program has open: the program's write
/// may land after the removal looked at the file (the kind-changes oracle
/// lost an edit so, the write going into the unlinked inode). The file is
/// kept aside for [`ASIDE_GRACE`]; written meanwhile, it is an edit
/// concurrent with the deletion, and the file lives on with it. One not
/// written goes, and stays deleted.
#[test]
fn a_write_through_a_descriptor_opened_before_a_peers_deletion_keeps_the_file() {
    let (root, mut folder, mut chunks, mut index, id) = one_file_written("fsync-write-unit-aside");
    let other = folder.create("g.txt", Kind::File, 1).expect("create");
    folder.set_text(other, "untouched\n", 1).expect("text");
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    let mut open = std::fs::OpenOptions::new().append(true).open(root.join("f.txt")).expect("open");
    folder.delete(id, 2).expect("delete");
    folder.delete(other, 2).expect("delete");
    let w = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(w.removed, vec!["g.txt".to_owned(), "f.txt".to_owned()]);
    assert!(!root.join("f.txt").exists() && !root.join("g.txt").exists());
    // The program writes after the removal looked at the file.
    open.write_all(b"two\n").expect("append");
    drop(open);
    std::thread::sleep(ASIDE_GRACE);
    let w = write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(w.raced, vec!["f.txt".to_owned()]);
    write_back(&root, &mut folder, &mut chunks, &mut index).expect("write");
    assert_eq!(std::fs::read_to_string(root.join("f.txt")).expect("back"), "one\ntwo\n");
    assert!(!root.join("g.txt").exists(), "an untouched file came back");
    let names: Vec<String> = std::fs::read_dir(&root)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["f.txt".to_owned()], "temp files left");
    let _ = std::fs::remove_dir_all(&root);
}
