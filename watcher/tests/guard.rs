//! The mass-deletion guard on a real folder: too many deletions at once,
//! found by a scan or made by a peer, are held until the guard is opened;
//! fewer go through as always.

use std::path::PathBuf;

use fsync_core::chunks::Chunks;
use fsync_core::folder::Folder;
use fsync_core::AgentId;
use watcher::ignore::Ignore;
use watcher::{scan, write_back, Guard, Index, ScanReport};

struct Dir {
    root: PathBuf,
    folder: Folder,
    chunks: Chunks,
    index: Index,
    now: u64,
}

impl Dir {
    /// A folder of `n` files `f0` .. under `d/`, scanned, guarded as the
    /// daemon guards by default.
    fn with_files(name: &str, n: usize) -> Dir {
        Dir::with_more(name, n, 0)
    }

    /// ...and `more` files under `e/`.
    fn with_more(name: &str, n: usize, more: usize) -> Dir {
        let root = std::env::temp_dir().join(format!("fsync-guard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("d")).expect("mkdir");
        for i in 0..n {
            std::fs::write(root.join(format!("d/f{i}")), format!("file {i}\n")).expect("write");
        }
        if more > 0 {
            std::fs::create_dir_all(root.join("e")).expect("mkdir");
        }
        for i in 0..more {
            std::fs::write(root.join(format!("e/g{i}")), format!("more {i}\n")).expect("write");
        }
        let mut d = Dir {
            root,
            folder: Folder::new(AgentId::from_index(1)),
            chunks: Chunks::default(),
            index: Index::default(),
            now: 1,
        };
        d.index.guard = Guard::DEFAULT;
        assert_eq!(d.scan().created.len(), n + 1 + more + usize::from(more > 0));
        d
    }

    fn scan(&mut self) -> ScanReport {
        self.now += 1;
        let ignore = Ignore::load(&self.root);
        scan(&self.root, &mut self.folder, &mut self.chunks, &mut self.index, &ignore, self.now).expect("scan")
    }

    fn scan_scope(&mut self, scope: &[String]) -> ScanReport {
        self.now += 1;
        let ignore = Ignore::load(&self.root);
        watcher::scan_scoped(&self.root, &mut self.folder, &mut self.chunks, &mut self.index, &ignore, Some(scope), self.now)
            .expect("scan")
    }

    fn rm(&self, from: usize, to: usize) {
        for i in from..to {
            std::fs::remove_file(self.root.join(format!("d/f{i}"))).expect("rm");
        }
    }

    fn in_folder(&mut self, path: &str) -> bool {
        self.folder.tree().lookup(path).is_some()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn a_scan_holds_a_mass_deletion_until_the_guard_opens() {
    let mut d = Dir::with_files("scan", 20);
    d.rm(0, 15);
    let r = d.scan();
    assert!(r.deleted.is_empty(), "{r:?}");
    assert_eq!(r.held.len(), 15, "{r:?}");
    assert!(d.in_folder("d/f0") && d.in_folder("d/f14"), "held deletions stay in the folder");
    // Held again by the next look, not forgotten.
    assert_eq!(d.scan().held.len(), 15);
    // A peer's edit of a held file waits with it: the write-back neither
    // brings the file back nor asks for a scan again and again.
    let id = d.folder.tree().lookup("d/f3").expect("held").id;
    d.folder.set_text(id, "edited on a peer\n", 50).expect("edit");
    let w = write_back(&d.root, &mut d.folder, &mut d.chunks, &mut d.index).expect("write");
    assert!(w.needs_scan.is_empty() && w.written.is_empty(), "{w:?}");
    assert!(!d.root.join("d/f3").exists());
    d.index.guard.open = true;
    let r = d.scan();
    assert_eq!(r.deleted.len(), 15, "{r:?}");
    assert!(!d.in_folder("d/f0") && d.in_folder("d/f15"));
}

#[test]
fn deletions_below_the_share_or_the_minimum_go_through() {
    let mut d = Dir::with_files("few", 30);
    d.rm(0, 15);
    let r = d.scan();
    assert_eq!(r.deleted.len(), 15, "half is not more than half: {r:?}");
    assert!(r.held.is_empty());
    let mut small = Dir::with_files("small", 9);
    small.rm(0, 9);
    let r = small.scan();
    assert_eq!(r.deleted.len(), 9, "fewer than the minimum: {r:?}");
}

#[test]
fn a_write_back_holds_a_peers_mass_deletion_until_the_guard_opens() {
    let mut d = Dir::with_files("write", 20);
    // The folder deletes 15 files, as a peer's changes would.
    for i in 0..15 {
        let id = d.folder.tree().lookup(&format!("d/f{i}")).expect("known").id;
        d.folder.delete(id, 100).expect("delete");
    }
    let r = write_back(&d.root, &mut d.folder, &mut d.chunks, &mut d.index).expect("write");
    assert!(r.removed.is_empty(), "{r:?}");
    assert_eq!(r.held_removals.len(), 15, "{r:?}");
    assert!(d.root.join("d/f0").exists());
    // The scan leaves the held files alone: they are neither new files
    // nor edits.
    assert!(d.scan().is_empty());
    d.index.guard.open = true;
    let r = write_back(&d.root, &mut d.folder, &mut d.chunks, &mut d.index).expect("write");
    assert_eq!(r.removed.len(), 15, "{r:?}");
    assert!(!d.root.join("d/f0").exists() && d.root.join("d/f15").exists());
}

#[test]
fn a_scoped_scan_weighs_a_deletion_against_the_whole_folder() {
    let mut d = Dir::with_more("scoped", 20, 100);
    d.rm(0, 15);
    let scope = vec!["d".to_owned()];
    assert_eq!(d.scan_scope(&scope).deferred.len(), 15);
    std::thread::sleep(watcher::GONE_WAIT);
    let r = d.scan_scope(&scope);
    assert_eq!(r.deleted.len(), 15, "15 of 120 files is no mass deletion: {r:?}");
}

#[test]
fn an_rm_r_seen_in_batches_is_held_whole() {
    let mut d = Dir::with_more("batches", 30, 4);
    let first: Vec<String> = (0..11).map(|i| format!("d/f{i}")).collect();
    let rest: Vec<String> = (11..30).map(|i| format!("d/f{i}")).collect();
    d.rm(0, 11);
    assert_eq!(d.scan_scope(&first).deferred.len(), 11);
    d.rm(11, 30);
    assert_eq!(d.scan_scope(&rest).deferred.len(), 19);
    std::thread::sleep(watcher::GONE_WAIT);
    // The first batch is ready, the rest is waiting: weighed together.
    let r = d.scan_scope(&first);
    assert!(r.deleted.is_empty(), "{r:?}");
    assert_eq!(r.held.len(), 11, "{r:?}");
    let r = d.scan_scope(&rest);
    assert!(r.deleted.is_empty(), "{r:?}");
    assert!(d.in_folder("d/f0") && d.in_folder("d/f29"));
}

#[test]
fn files_made_and_deleted_again_and_again_are_not_held() {
    let mut d = Dir::with_files("churn", 1);
    for round in 0..8 {
        for i in 0..3 {
            let id = d.folder.create(&format!("t{round}/{i}.txt"), fsync_core::folder::Kind::File, 10).expect("create");
            d.folder.set_text(id, "x\n", 10).expect("write");
        }
        let w = write_back(&d.root, &mut d.folder, &mut d.chunks, &mut d.index).expect("write");
        assert_eq!(w.written.len(), 4, "{w:?}");
        let id = d.folder.tree().lookup(&format!("t{round}")).expect("made").id;
        d.folder.delete(id, 20).expect("delete");
        let w = write_back(&d.root, &mut d.folder, &mut d.chunks, &mut d.index).expect("write");
        assert!(w.held_removals.is_empty(), "round {round}: {w:?}");
    }
}
