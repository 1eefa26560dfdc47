//! Live events to scans, on a real folder: saves are seen within
//! milliseconds, new directories are watched, and a queue overflow falls
//! back to a full rescan that misses nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fsync_core::chunks::Chunks;
use fsync_core::folder::Folder;
use fsync_core::AgentId;
use watcher::ignore::Ignore;
use watcher::live::{Debouncer, Live, LiveWatcher};
use watcher::{scan, scan_scoped, Index};

/// The overflow test changes a system-wide setting for a moment: no other
/// watcher of this binary may be created meanwhile.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Live1 {
    root: PathBuf,
    folder: Folder,
    chunks: Chunks,
    index: Index,
    watch: LiveWatcher,
    debounce: Debouncer,
    start: Instant,
    full_rescans: usize,
}

impl Live1 {
    fn new(name: &str) -> Live1 {
        let root = std::env::temp_dir().join(format!("fsync-live-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("mkdir");
        let watch = LiveWatcher::new(&root).expect("watch");
        let mut l = Live1 {
            root,
            folder: Folder::new(AgentId::from_index(1)),
            chunks: Chunks::default(),
            index: Index::default(),
            watch,
            debounce: Debouncer::new(5, 200),
            start: Instant::now(),
            full_rescans: 0,
        };
        // The start-up scan, as the daemon makes it: later scans look only
        // where events say (the rules are those of this scan).
        let ignore = Ignore::load(&l.root);
        scan(&l.root, &mut l.folder, &mut l.chunks, &mut l.index, &ignore, 0).expect("start-up scan");
        l
    }

    fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Runs the event loop until `done` holds; returns how long it took.
    fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Folder) -> bool) -> Duration {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            let wait = self.debounce.next_deadline().map_or(50, |d| d.saturating_sub(self.ms()).max(1));
            match self.watch.recv_timeout(Duration::from_millis(wait)) {
                Some(Live::Paths(ps)) => ps.into_iter().for_each(|p| self.debounce.push(p, self.ms())),
                Some(Live::Rescan(_)) => self.debounce.push_all(self.ms()),
                Some(Live::Renamed(from, to)) => self.index.renamed(from, to),
                None => {}
            }
            if let Some(b) = self.debounce.poll(self.ms()) {
                let ignore = Ignore::load(&self.root);
                let now = self.ms();
                if b.all {
                    self.full_rescans += 1;
                    scan(&self.root, &mut self.folder, &mut self.chunks, &mut self.index, &ignore, now).expect("scan");
                } else {
                    scan_scoped(&self.root, &mut self.folder, &mut self.chunks, &mut self.index, &ignore, Some(&b.paths), now)
                        .expect("scan");
                }
            }
            if done(&mut self.folder) {
                return t.elapsed();
            }
        }
        panic!("timed out waiting for {what}");
    }
}

impl Drop for Live1 {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn text(f: &mut Folder, path: &str) -> Option<String> {
    let id = f.tree().lookup(path)?.id;
    f.doc(id).map(|d| d.text())
}

#[test]
fn saves_are_seen_live() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Live1::new("saves");
    std::fs::write(l.root.join("a.txt"), "first").expect("write");
    let took = l.run_until("the new file", |f| text(f, "a.txt").as_deref() == Some("first"));
    eprintln!("new file reached the folder in {took:?}");
    let id = l.folder.tree().lookup("a.txt").expect("a").id;
    let out = Command::new("sed").args(["-i", "s/first/second/", "a.txt"]).current_dir(&l.root).status().expect("sed");
    assert!(out.success());
    let took = l.run_until("the sed save", |f| text(f, "a.txt").as_deref() == Some("second"));
    eprintln!("sed -i save reached the folder in {took:?}");
    assert_eq!(l.folder.tree().lookup("a.txt").map(|n| n.id), Some(id), "identity kept");
    // New directories are watched as they appear.
    std::fs::create_dir_all(l.root.join("new/deeper")).expect("mkdir");
    std::fs::write(l.root.join("new/deeper/b.txt"), "inside").expect("write");
    l.run_until("a file in a new directory", |f| text(f, "new/deeper/b.txt").as_deref() == Some("inside"));
    std::fs::write(l.root.join("new/deeper/c.txt"), "later").expect("write");
    l.run_until("a later file in the new directory", |f| text(f, "new/deeper/c.txt").as_deref() == Some("later"));
    assert_eq!(l.full_rescans, 0, "no rescan should have been needed");
}

#[test]
fn a_queue_overflow_falls_back_to_a_full_rescan() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let knob = "/proc/sys/fs/inotify/max_queued_events";
    let Ok(old) = std::fs::read_to_string(knob) else {
        eprintln!("{knob} is not readable: skipped");
        return;
    };
    // A tiny queue for this watcher only: the size is fixed when the
    // inotify instance is created, so the old value is restored at once.
    if std::fs::write(knob, "16").is_err() {
        eprintln!("{knob} is not writable (not root?): skipped");
        return;
    }
    let l = std::panic::catch_unwind(|| Live1::new("overflow"));
    std::fs::write(knob, old.trim()).expect("restore max_queued_events");
    let mut l = l.expect("watcher");
    // Far more events than the watcher's queue and the kernel's 16 hold,
    // written before anything is consumed.
    for i in 0..2000 {
        std::fs::write(l.root.join(format!("f{i:04}.txt")), format!("{i}")).expect("write");
    }
    l.run_until("all 2000 files", |f| f.tree().len() == 2000);
    assert!(l.full_rescans >= 1, "the overflow was not reported");
    assert_eq!(text(&mut l.folder, "f1999.txt").as_deref(), Some("1999"));
}

/// A directory moved, then one inside it moved out, then a file written in
/// the moved directory: live events make each a move of the same
/// directory (not new directories with the files moved one by one, which
/// lost the directories' identity: a peer's concurrent move of one then
/// kept a second copy of what was in it).
#[test]
fn directory_moves_are_seen_live_as_moves() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Live1::new("dirmoves");
    std::fs::create_dir_all(l.root.join("m77/d1")).expect("mkdir");
    std::fs::create_dir_all(l.root.join("d7")).expect("mkdir");
    std::fs::write(l.root.join("m77/t107.txt"), "a\n").expect("write");
    std::fs::write(l.root.join("m77/d1/t1.txt"), "b\n").expect("write");
    l.run_until("the files", |f| text(f, "m77/d1/t1.txt").is_some() && text(f, "m77/t107.txt").is_some());
    let (m77, d1) = (l.folder.tree().lookup("m77").expect("m77").id, l.folder.tree().lookup("m77/d1").expect("d1").id);
    std::fs::rename(l.root.join("m77"), l.root.join("d7/m124")).expect("mv");
    l.run_until("the move", |f| text(f, "d7/m124/t107.txt").is_some());
    assert_eq!(l.folder.tree().lookup("d7/m124").map(|n| n.id), Some(m77), "the directory's identity");
    std::fs::rename(l.root.join("d7/m124/d1"), l.root.join("x1")).expect("mv");
    l.run_until("the second move", |f| text(f, "x1/t1.txt").is_some());
    assert_eq!(l.folder.tree().lookup("x1").map(|n| n.id), Some(d1), "the inner directory's identity");
    std::fs::write(l.root.join("d7/m124/new.txt"), "c\n").expect("write");
    l.run_until("a file in the moved directory", |f| text(f, "d7/m124/new.txt").is_some());
    let dirs = l.folder.tree().nodes().filter(|n| n.kind == fsync_core::folder::Kind::Dir).count();
    assert_eq!(dirs, 3, "{:?}", l.folder.tree().nodes().map(|n| n.path.clone()).collect::<Vec<_>>());
}

/// A fresh root holding directory `dir`, watched (and settled).
fn watched(name: &str, dir: &str) -> (Scratch, LiveWatcher) {
    let root = Scratch(std::env::temp_dir().join(format!("fsync-live-{name}-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    let watch = LiveWatcher::new(&root.0).expect("watch");
    std::thread::sleep(Duration::from_millis(50));
    (root, watch)
}

/// A test's directory, removed when the test ends, passed or failed.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The paths reported within `time`, or until one ends with `until`
/// (when not empty).
fn paths_within(watch: &LiveWatcher, time: Duration, until: &str) -> Vec<String> {
    let t = Instant::now();
    let mut paths = Vec::new();
    while t.elapsed() < time {
        if let Some(Live::Paths(ps)) = watch.recv_timeout(Duration::from_millis(50)) {
            paths.extend(ps);
            if !until.is_empty() && paths.iter().any(|p| p.ends_with(until)) {
                break;
            }
        }
    }
    paths
}

/// `mkdir new && mv old new/`: notify watched `old` under its new path,
/// by its walk of `new`, with the descriptor `old` already had; the move's
/// own event, handled after, removed that descriptor, and files made in
/// `new/old` were never seen (the kind-changes oracle: a relayed file in a
/// directory the write-back had moved never reached its peers). Each new
/// directory is watched again shortly after it appears. Notify's loop is
/// kept busy so that it lags behind the disk, as it did there.
#[test]
fn a_watched_directory_moved_into_a_new_one_stays_watched() {
    let mut misses = 0;
    for round in 0..20 {
        let (root, watch) = watched(&format!("moved-in-{round}"), "t/old");
        // Many events first, so notify's loop lags behind the disk.
        std::fs::create_dir_all(root.join("busy")).expect("mkdir");
        for i in 0..200 {
            std::fs::write(root.join(format!("busy/{i}")), "x").expect("write");
        }
        // A new directory, and a watched one moved into it at once.
        std::fs::create_dir_all(root.join("new")).expect("mkdir");
        if round % 2 == 1 {
            std::thread::sleep(Duration::from_micros(round as u64 * 50));
        }
        std::fs::rename(root.join("t/old"), root.join("new/old")).expect("mv");
        std::thread::sleep(Duration::from_millis(300));
        while watch.recv_timeout(Duration::from_millis(50)).is_some() {}
        std::fs::write(root.join("new/old/made.txt"), "x").expect("write");
        if !paths_within(&watch, Duration::from_secs(2), "made.txt").iter().any(|p| p.ends_with("made.txt")) {
            misses += 1;
        }
    }
    assert_eq!(misses, 0, "files made in a directory moved into a new one were not seen");
}

/// A directory that appeared and became a link before it was watched
/// again: a watch through the link (ours, or notify's own when it took the
/// new directory's watch after the link replaced it) reported what is
/// beyond it under the link's path (and the scan then took a file there
/// for a new one). The directory it leads to is watched again under its
/// own path.
#[test]
fn a_directory_that_became_a_link_is_not_watched_through_it() {
    let (root, watch) = watched("became-link", "target");
    std::fs::create_dir(root.join("d")).expect("mkdir d");
    std::fs::remove_dir(root.join("d")).expect("rmdir d");
    std::os::unix::fs::symlink("target", root.join("d")).expect("ln -s target d");
    // Past the time it is watched again.
    let t = Instant::now();
    while t.elapsed() < watcher::live::REWATCH * 2 {
        let _ = watch.recv_timeout(Duration::from_millis(20));
    }
    std::fs::write(root.join("target/x.txt"), "x").expect("write");
    let paths = paths_within(&watch, Duration::from_secs(1), "");
    assert!(paths.iter().any(|p| p == "target/x.txt"), "{paths:?}");
    assert!(paths.iter().all(|p| !p.starts_with("d/")), "a path through the link: {paths:?}");
}

/// A directory appeared, then a flood of events filled the queue before
/// it was watched again: watching it again from the consumer's thread
/// waited for notify, which waited for the consumer to take its events,
/// and live events stopped for good (the daemon saw nothing more). The
/// consumer must go on taking events whatever the watch does.
#[test]
fn a_flood_while_a_new_directory_waits_to_be_watched_again_does_not_stall() {
    let (root, watch) = watched("flood", "d");
    std::fs::create_dir(root.join("new")).expect("mkdir");
    for i in 0..3000 {
        std::fs::write(root.join(format!("d/{i}")), "x").expect("write");
    }
    // The new directory's time to be watched again passes while the
    // queue is full.
    std::thread::sleep(watcher::live::REWATCH * 2);
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = 0usize;
        while watch.recv_timeout(Duration::from_millis(500)).is_some() {
            seen += 1;
        }
        std::fs::write(root.join("new/after.txt"), "x").expect("write");
        let after = paths_within(&watch, Duration::from_secs(3), "after.txt");
        let _ = done_tx.send((seen, after));
        drop(root);
    });
    let (seen, after) = done.recv_timeout(Duration::from_secs(30)).expect("the consumer stalled");
    assert!(seen > 1000, "{seen} events");
    assert!(after.iter().any(|p| p == "new/after.txt"), "{after:?}");
}
