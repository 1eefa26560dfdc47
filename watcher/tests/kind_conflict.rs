//! A path made a file on one node and kept a directory on another: the
//! losing file is shown beside it under a suffixed name, and what the user
//! then does with that name is taken in like any move.

use std::path::{Path, PathBuf};

use fsync_core::chunks::Chunks;
use fsync_core::folder::Folder;
use fsync_core::AgentId;
use watcher::ignore::Ignore;
use watcher::{scan_scoped, write_back, Index};

struct Node {
    root: PathBuf,
    folder: Folder,
    chunks: Chunks,
    index: Index,
    now: u64,
}

impl Node {
    fn new(name: &str, agent: u64) -> Node {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("fsync-kind-conflict-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("mkdir");
        Node {
            root,
            folder: Folder::new(AgentId::from_index(agent)),
            chunks: Chunks::default(),
            index: Index::default(),
            now: 1,
        }
    }

    fn scan(&mut self, scope: Option<&[String]>) -> watcher::ScanReport {
        self.now += 1;
        let ignore = Ignore::load(&self.root);
        scan_scoped(&self.root, &mut self.folder, &mut self.chunks, &mut self.index, &ignore, scope, self.now).expect("scan")
    }

    fn write(&mut self) -> watcher::WriteReport {
        write_back(&self.root, &mut self.folder, &mut self.chunks, &mut self.index).expect("write")
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn sync(a: &mut Node, b: &mut Node) {
    let (c, _) = b.folder.changes_since(a.folder.version_vector(), 0, usize::MAX);
    a.folder.apply_changes(&c).1.expect("valid");
    let (c, _) = a.folder.changes_since(b.folder.version_vector(), 0, usize::MAX);
    b.folder.apply_changes(&c).1.expect("valid");
}

fn files(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).into_iter().filter_map(Result::ok) {
        // Files kept aside for a last look (`watcher::ASIDE_GRACE`) are ours.
        if e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with(watcher::ignore::TEMP_PREFIX) {
            let rel = e.path().strip_prefix(root).expect("inside").to_string_lossy().into_owned();
            out.push((rel, std::fs::read_to_string(e.path()).unwrap_or_default()));
        }
    }
    out.sort();
    out
}

/// Scans (after the wait for a gone path's second look), syncs and
/// writes until nothing changes.
fn settle(a: &mut Node, b: &mut Node) {
    for _ in 0..4 {
        std::thread::sleep(watcher::GONE_WAIT + std::time::Duration::from_millis(20));
        a.scan(None);
        b.scan(None);
        sync(a, b);
        a.write();
        b.write();
    }
}

/// `m` is a directory on both; then a file on `a` while `b` adds a file
/// in it: both survive, the file under a suffixed name on `a`.
fn conflict() -> (Node, Node, String) {
    let (mut a, mut b) = (Node::new("a", 1), Node::new("b", 2));
    std::fs::create_dir(b.path("m")).expect("mkdir");
    std::fs::write(b.path("m/x.txt"), "x\n").expect("write");
    b.scan(None);
    sync(&mut a, &mut b);
    a.write();
    std::fs::remove_dir_all(a.path("m")).expect("rm");
    std::fs::write(a.path("m"), "tok\n").expect("write");
    a.scan(Some(&["m".to_owned()]));
    std::fs::write(b.path("m/y.txt"), "y\n").expect("write");
    b.scan(Some(&["m/y.txt".to_owned()]));
    sync(&mut a, &mut b);
    a.write();
    let loser =
        a.folder.tree().nodes().map(|n| n.path.clone()).find(|p| p.starts_with("m (")).expect("the file beside the directory");
    (a, b, loser)
}

/// `b`'s user moves the directory `m` to `n`, and `a` gets the move.
fn peer_moves_the_directory(a: &mut Node, b: &mut Node) {
    std::fs::rename(b.path("m"), b.path("n")).expect("mv");
    b.scan(Some(&["m".to_owned(), "n".to_owned()]));
    sync(a, b);
}

fn check(a: &Node, b: &Node) {
    let (fa, fb) = (files(&a.root), files(&b.root));
    assert_eq!(fa, fb);
    let toks = fa.iter().filter(|(_, t)| t.contains("tok")).count();
    assert_eq!(toks, 1, "the file once: {fa:?}");
}

/// The peer's move of the directory arrives before this node's write-back
/// has run after its user removed the directory and moved the file away.
#[test]
fn a_losing_file_moved_away_after_the_peer_moved_the_directory_is_kept_once() {
    let (mut a, mut b, loser) = conflict();
    peer_moves_the_directory(&mut a, &mut b);
    std::fs::remove_dir_all(a.path("m")).expect("rm");
    std::fs::rename(a.path(&loser), a.path("r.lnk")).expect("mv");
    a.write();
    a.scan(Some(&["m".to_owned(), loser, "r.lnk".to_owned()]));
    settle(&mut a, &mut b);
    check(&a, &b);
}

/// The peer's move arrives and this node's write-back moves the file back
/// to its own name; then its user moves it away.
#[test]
fn a_losing_file_moved_back_to_its_name_then_away_is_kept_once() {
    let (mut a, mut b, _) = conflict();
    peer_moves_the_directory(&mut a, &mut b);
    a.write();
    a.scan(None);
    std::fs::rename(a.path("m"), a.path("r.lnk")).expect("mv");
    a.scan(Some(&["m".to_owned(), "r.lnk".to_owned()]));
    settle(&mut a, &mut b);
    check(&a, &b);
}

/// The user moves the file away and removes the directory while the peer
/// moves the directory: one file, at the user's name.
#[test]
fn a_losing_file_moved_away_while_a_peer_moves_the_directory_is_kept_once() {
    let (mut a, mut b, loser) = conflict();
    std::fs::remove_dir_all(a.path("m")).expect("rm");
    std::fs::rename(a.path(&loser), a.path("r.lnk")).expect("mv");
    std::fs::rename(b.path("m"), b.path("n")).expect("mv");
    b.scan(Some(&["m".to_owned(), "n".to_owned()]));
    a.scan(Some(&["m".to_owned(), loser, "r.lnk".to_owned()]));
    sync(&mut a, &mut b);
    settle(&mut a, &mut b);
    check(&a, &b);
}

/// `mv d/f.txt g.txt`, a save of `g.txt` through a temp file (a new
/// inode), then `d` made a file, all before one scan, while a peer edits
/// `d/f.txt`: the scan takes `g.txt` for the moved file (by its lines), so
/// the peer's edit lands there and the text is in the folder once.
#[test]
fn a_file_moved_out_of_a_directory_then_made_a_file_is_kept_once_with_a_peers_edit() {
    let (mut a, mut b) = (Node::new("a", 1), Node::new("b", 2));
    std::fs::create_dir(a.path("d")).expect("mkdir");
    std::fs::write(a.path("d/f.txt"), "one\ntwo\n").expect("write");
    a.scan(None);
    sync(&mut a, &mut b);
    b.write();
    std::fs::rename(a.path("d/f.txt"), a.path("g.txt")).expect("mv");
    std::fs::write(a.path("g.txt.tmp"), "one\ntwo\nthree\n").expect("write");
    std::fs::rename(a.path("g.txt.tmp"), a.path("g.txt")).expect("mv");
    std::fs::remove_dir(a.path("d")).expect("rmdir");
    std::fs::write(a.path("d"), "tok\n").expect("write");
    std::fs::write(b.path("d/f.txt"), "zero\none\ntwo\n").expect("write");
    b.scan(Some(&["d/f.txt".to_owned()]));
    a.scan(None);
    sync(&mut a, &mut b);
    a.write();
    b.write();
    settle(&mut a, &mut b);
    let (fa, fb) = (files(&a.root), files(&b.root));
    assert_eq!(fa, fb);
    let holding: Vec<&(String, String)> = fa.iter().filter(|(_, t)| t.contains("two")).collect();
    assert_eq!(holding.len(), 1, "the text once: {fa:?}");
    assert_eq!(holding[0], &("g.txt".to_owned(), "zero\none\ntwo\nthree\n".to_owned()), "{fa:?}");
}
