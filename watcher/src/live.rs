//! Live watching: filesystem events to paths to rescan.
//!
//! [`Debouncer`] is pure (events and time in, batches out), after
//! Syncthing's watch aggregator: a path is ready once it has been quiet for
//! `delay` (a save is usually several events), or at the latest `max_delay`
//! after its first event (so a file written continuously is still picked
//! up). [`LiveWatcher`] wraps notify (inotify on Linux) and reports queue
//! overflow or watch errors as "rescan everything", so nothing is missed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};

use crate::ignore::TEMP_PREFIX;
use crate::WatchError;

/// A batch ready to scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Paths (relative) to rescan, each with everything below it.
    pub paths: Vec<String>,
    /// Rescan the whole folder (events were lost).
    pub all: bool,
}

/// Collects events per path until they settle. Times are milliseconds.
#[derive(Clone, Debug)]
pub struct Debouncer {
    delay: u64,
    max_delay: u64,
    /// path -> (first event, last event)
    pending: BTreeMap<String, (u64, u64)>,
    all: Option<u64>,
}

impl Debouncer {
    /// Quiet time `delay`, longest wait `max_delay`.
    pub fn new(delay: u64, max_delay: u64) -> Self {
        Debouncer { delay, max_delay, pending: BTreeMap::new(), all: None }
    }

    /// An event on `path` at `now`.
    pub fn push(&mut self, path: String, now: u64) {
        let e = self.pending.entry(path).or_insert((now, now));
        e.1 = now;
    }

    /// Events were lost: everything must be rescanned.
    pub fn push_all(&mut self, now: u64) {
        self.all.get_or_insert(now);
    }

    /// When to call [`Debouncer::poll`] next.
    pub fn next_deadline(&self) -> Option<u64> {
        let paths = self.pending.values().map(|&(first, last)| (last + self.delay).min(first + self.max_delay));
        paths.chain(self.all.map(|t| t + self.delay)).min()
    }

    /// The paths that are ready at `now`.
    pub fn poll(&mut self, now: u64) -> Option<Batch> {
        if let Some(t) = self.all {
            if now >= t + self.delay {
                self.all = None;
                self.pending.clear();
                return Some(Batch { paths: Vec::new(), all: true });
            }
        }
        let mut ready: BTreeSet<String> = self
            .pending
            .iter()
            .filter(|(_, &(first, last))| now >= last + self.delay || now >= first + self.max_delay)
            .map(|(p, _)| p.clone())
            .collect();
        if ready.is_empty() {
            return None;
        }
        // A ready directory's scan walks what is below it, settled or not:
        // those paths go with it.
        let below: Vec<String> = ready
            .iter()
            .flat_map(|r| {
                let prefix = format!("{r}/");
                self.pending.range(prefix.clone()..).take_while(move |(p, _)| p.starts_with(&prefix)).map(|(p, _)| p.clone())
            })
            .collect();
        ready.extend(below);
        // And paths go in the order they were first touched: a move's new
        // name (a file saved again just after, so not settled, but below a
        // settled directory) must not be scanned before its old name, or
        // with a new inode it is taken for a new file and the old one for
        // deleted (a peer's edit of the old one then kept both: the watcher
        // simulation). `delay` of slack: the two names of a move may be read
        // from inotify a moment apart.
        let horizon = ready.iter().filter_map(|p| self.pending.get(p)).map(|&(first, _)| first).max().unwrap_or(0) + self.delay;
        ready.extend(self.pending.iter().filter(|(_, &(first, _))| first <= horizon).map(|(p, _)| p.clone()));
        for p in &ready {
            self.pending.remove(p);
        }
        // A path below another ready one is covered by it (in order, a
        // directory comes before what is below it).
        let mut kept: HashSet<String> = HashSet::new();
        let mut paths: Vec<String> = Vec::new();
        for p in ready {
            if !p.match_indices('/').any(|(i, _)| p.get(..i).is_some_and(|above| kept.contains(above))) {
                kept.insert(p.clone());
                paths.push(p);
            }
        }
        Some(Batch { paths, all: false })
    }
}

/// What the watcher saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Live {
    /// Something happened at these paths (relative to the root).
    Paths(Vec<String>),
    /// Events were lost (queue overflow, a watch error): rescan all.
    Rescan(String),
    /// One rename from the first path to the second (both also come as
    /// [`Live::Paths`]): evidence for the scan (see `Index::renamed`).
    Renamed(String, String),
}

/// Reports held for the consumer. When it falls behind, notify's thread
/// waits, the kernel queue fills and overflows, and the overflow becomes a
/// full rescan: memory stays bounded and nothing is missed.
pub const QUEUE: usize = 1024;

/// A recursive watch on one folder.
pub struct LiveWatcher {
    rx: mpsc::Receiver<Live>,
    polling: Option<String>,
    /// Ends the thread that watches new directories again.
    stop: Arc<AtomicBool>,
    /// Kept alive here and by that thread.
    _watcher: Arc<Mutex<Box<dyn notify::Watcher + Send>>>,
}

/// How long after a directory appears, or after a directory is moved in
/// while another is new, it is watched again. notify's recursive watch
/// keys watches by path, but the kernel by inode: a watched directory
/// moved into a directory made a moment before (`mkdir new && mv old
/// new/`) was watched under its new path by notify's walk of `new`, with
/// the descriptor it already had, and the move's own event, handled
/// later, removed that descriptor: nothing made in it was seen again
/// (until a full rescan). Each directory that appeared is watched again,
/// by a thread of its own, after this delay, and again after each move of
/// a directory in the next [`RECENT`] (the removal comes with the move's
/// event, which notify handles before it takes the new watch); then
/// rescanned.
pub const REWATCH: Duration = Duration::from_millis(300);
/// How long a new directory counts as new (see [`REWATCH`]).
pub const RECENT: Duration = Duration::from_secs(5);

/// How often the fallback watcher looks (see [`LiveWatcher::new`]).
pub const POLL: Duration = Duration::from_secs(2);

impl LiveWatcher {
    /// Starts watching `root` and everything below it (new directories are
    /// watched as they appear).
    pub fn new(root: &Path) -> Result<LiveWatcher, WatchError> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let base: PathBuf = root.canonicalize().map_err(|e| WatchError::io(root, e))?;
        let b = base.clone();
        let (dirs_tx, dirs_rx) = mpsc::channel::<Appeared>();
        let rewatch_tx = tx.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = &res {
                if let Some(a) = appeared(ev) {
                    let _ = dirs_tx.send(a);
                }
            }
            let msg = match res {
                Ok(ev) if ev.need_rescan() => Live::Rescan("the event queue overflowed".into()),
                // Opening or reading changes nothing, and the scans open
                // what they look at: taken as changes, they would make each
                // scan of a directory cause the next, for ever.
                Ok(ev) if !changes(&ev.kind) => return,
                Ok(ev) => {
                    let rel: Vec<&Path> = ev.paths.iter().filter_map(|p| p.strip_prefix(&b).ok()).collect();
                    let paths: Vec<String> = rel
                        .iter()
                        .map(|p| utf8_above(p))
                        .filter(|p| !p.is_empty() && !p.rsplit('/').next().is_some_and(|n| n.starts_with(TEMP_PREFIX)))
                        .collect();
                    // A name that is not UTF-8 is not synced, and the scan
                    // of its directory says so: at the root, that scan is
                    // of everything.
                    if let Some(bad) = rel.iter().find(|p| p.to_str().is_none() && utf8_above(p).is_empty()) {
                        Live::Rescan(format!("{} has a name that is not UTF-8", bad.display()))
                    } else if gone(&ev.kind) && rel.iter().any(|p| p.as_os_str().is_empty()) {
                        // The root itself was moved or removed: the scan
                        // looks at what is at the path now (and stops the
                        // folder if it is not the one that was shared).
                        Live::Rescan("the folder's directory was moved or removed".into())
                    } else if paths.is_empty() {
                        return;
                    } else {
                        use notify::event::{EventKind, ModifyKind, RenameMode};
                        if let (EventKind::Modify(ModifyKind::Name(RenameMode::Both)), [from, to]) =
                            (&ev.kind, paths.as_slice())
                        {
                            let pair = Live::Renamed(from.clone(), to.clone());
                            let _ = tx.send(Live::Paths(paths));
                            pair
                        } else {
                            Live::Paths(paths)
                        }
                    }
                }
                // A directory we may not read: the scans report it; a
                // rescan would find nothing more.
                Err(notify::Error { kind: notify::ErrorKind::Io(e), .. })
                    if e.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    return
                }
                Err(e) => Live::Rescan(format!("watch error: {e}")),
            };
            let _ = tx.send(msg);
        };
        let mut w = notify::recommended_watcher(handler.clone()).map_err(|e| WatchError::Walk(format!("cannot watch: {e}")))?;
        let (watcher, polling): (Box<dyn notify::Watcher + Send>, _) = match w.watch(&base, RecursiveMode::Recursive) {
            Ok(()) => (Box::new(w), None),
            // inotify cannot watch a directory we may not read, and then
            // watches nothing: poll instead (every POLL), which skips it,
            // rather than not run at all.
            Err(e) => {
                let config = notify::Config::default().with_poll_interval(POLL);
                let mut p =
                    notify::PollWatcher::new(handler, config).map_err(|e| WatchError::Walk(format!("cannot watch: {e}")))?;
                p.watch(&base, RecursiveMode::Recursive)
                    .map_err(|e2| WatchError::Walk(format!("cannot watch {} ({e}; polling: {e2})", base.display())))?;
                (Box::new(p), Some(e.to_string()))
            }
        };
        let watcher = Arc::new(Mutex::new(watcher));
        let stop = Arc::new(AtomicBool::new(false));
        let (w, s) = (watcher.clone(), stop.clone());
        std::thread::spawn(move || rewatch(w, dirs_rx, rewatch_tx, base, s));
        Ok(LiveWatcher { rx, polling, stop, _watcher: watcher })
    }

    /// Why it polls instead of getting events, if it does.
    pub fn polling(&self) -> Option<&str> {
        self.polling.as_deref()
    }

    /// The next report, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Live> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl Drop for LiveWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What an event says of new directories (see [`REWATCH`]).
enum Appeared {
    /// This directory was made.
    Dir(PathBuf),
    /// This directory was moved in: new ones are to be watched again too.
    MovedIn(PathBuf),
}

fn appeared(ev: &notify::Event) -> Option<Appeared> {
    use notify::event::{CreateKind, EventKind, ModifyKind, RenameMode};
    let real_dir = |p: &&PathBuf| is_real_dir(p);
    match ev.kind {
        EventKind::Create(CreateKind::Folder) => ev.paths.first().cloned().map(Appeared::Dir),
        // A move is told by its new name, which shows what moved (the old
        // name is gone): only a directory moved in matters here, not the
        // renames of files that every save through a temp file makes.
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
            ev.paths.first().filter(real_dir).cloned().map(Appeared::MovedIn)
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            ev.paths.get(1).filter(real_dir).cloned().map(Appeared::MovedIn)
        }
        _ => None,
    }
}

/// The thread that watches new directories again (see [`REWATCH`]), and
/// reports each for a rescan of what it holds. It calls into notify,
/// which may wait until the consumer has taken its events: never the
/// consumer's own thread, or both would wait for ever.
fn rewatch(
    watcher: Arc<Mutex<Box<dyn notify::Watcher + Send>>>,
    news: mpsc::Receiver<Appeared>,
    tx: mpsc::SyncSender<Live>,
    base: PathBuf,
    stop: Arc<AtomicBool>,
) {
    let mut recent: Vec<(Instant, PathBuf)> = Vec::new();
    let mut due: Vec<(Instant, PathBuf)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = due.iter().map(|(t, _)| t.saturating_duration_since(now)).min().unwrap_or(Duration::from_millis(500));
        let first = match news.recv_timeout(wait.min(Duration::from_millis(500))) {
            Ok(a) => Some(a),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        // What came meanwhile is taken together: a burst of moves asks
        // for one more watch of each new directory, not one per move.
        let mut dir_moved = false;
        for a in first.into_iter().chain(std::iter::from_fn(|| news.try_recv().ok())) {
            let (Appeared::Dir(p) | Appeared::MovedIn(p)) = &a;
            due.push((Instant::now() + REWATCH, p.clone()));
            recent.push((Instant::now(), p.clone()));
            dir_moved |= matches!(a, Appeared::MovedIn(_));
        }
        recent.retain(|(t, _)| t.elapsed() < RECENT);
        if dir_moved {
            for (_, p) in &recent {
                // One still to come is after the move already.
                if !due.iter().any(|(_, q)| q == p) {
                    due.push((Instant::now() + REWATCH, p.clone()));
                }
            }
        }
        let now = Instant::now();
        let (ready, later): (Vec<_>, Vec<_>) = due.drain(..).partition(|(t, _)| *t <= now);
        due = later;
        let mut ready: Vec<PathBuf> = ready.into_iter().map(|(_, p)| p).collect();
        ready.sort();
        ready.dedup();
        let mut top: Vec<PathBuf> = Vec::new();
        for p in ready {
            if !top.iter().any(|t| p.starts_with(t)) {
                top.push(p);
            }
        }
        let mut rel = Vec::new();
        for p in top {
            // A link now: never watched through (what lies beyond would be
            // reported under its path), but notify may have done so when
            // it was made in place of the new directory; the directory it
            // leads to, in the folder, is watched again under its own path.
            let p = if is_real_dir(&p) { p } else { inside(&p, &base).unwrap_or(p) };
            // Gone again meanwhile: nothing to watch, its parent's scan
            // sees it.
            let watched = is_real_dir(&p) && watcher.lock().is_ok_and(|mut w| w.watch(&p, RecursiveMode::Recursive).is_ok());
            let r = p.strip_prefix(&base).map(utf8_above).unwrap_or_default();
            if watched && !r.is_empty() {
                rel.push(r);
            }
        }
        if !rel.is_empty() && tx.send(Live::Paths(rel)).is_err() {
            return;
        }
    }
}

/// Where the link `p` leads, when that is a directory in the folder.
fn inside(p: &Path, base: &Path) -> Option<PathBuf> {
    std::fs::symlink_metadata(p).ok().filter(|m| m.file_type().is_symlink())?;
    std::fs::canonicalize(p).ok().filter(|t| t.starts_with(base) && is_real_dir(t))
}

/// A directory, not a link to one.
fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// Whether an event kind can mean a change on disk: all but opening and
/// reading (a file closed after writing is a change).
fn changes(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    !matches!(kind, EventKind::Access(a) if !matches!(a, AccessKind::Close(AccessMode::Write)))
}

/// Whether an event kind can mean that its path is no longer there.
fn gone(kind: &notify::EventKind) -> bool {
    use notify::event::{EventKind, ModifyKind};
    matches!(kind, EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) | EventKind::Other | EventKind::Any)
}

/// `path` itself, or the nearest directory above it whose name is UTF-8
/// (`""` for the root): where a scan finds a name that is not.
fn utf8_above(path: &Path) -> String {
    path.ancestors().find_map(|a| a.to_str()).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_settles_into_one_batch() {
        let mut d = Debouncer::new(10, 1000);
        d.push("a.txt".into(), 0);
        d.push("a.txt".into(), 5);
        d.push("dir/x".into(), 6);
        d.push("dir".into(), 7);
        assert_eq!(d.poll(14), None, "still settling");
        assert_eq!(d.next_deadline(), Some(15));
        let b = d.poll(17).expect("ready");
        assert_eq!(b.paths, vec!["a.txt", "dir"], "dir/x is covered by dir");
        assert_eq!(d.poll(100), None);
    }

    #[test]
    fn a_file_written_without_pause_is_still_picked_up() {
        let mut d = Debouncer::new(10, 100);
        for t in (0..300).step_by(5) {
            d.push("log.txt".into(), t);
            if let Some(b) = d.poll(t) {
                assert_eq!(b.paths, vec!["log.txt"]);
                assert!((100..110).contains(&t), "picked up at {t}");
                return;
            }
        }
        panic!("never picked up");
    }

    /// A directory made a while ago, a file moved into it and saved again
    /// at once: the directory is settled, the new name is not. The scan of
    /// the directory walks the new name, so the old name goes too, or the
    /// move would be seen from one side only.
    #[test]
    fn a_settled_directory_takes_what_is_below_it_and_what_was_touched_with_that() {
        let mut d = Debouncer::new(5, 200);
        d.push("d43".into(), 0);
        d.push("older.txt".into(), 0);
        // Between `d43` and what is below it, in order.
        d.push("d43 x.txt".into(), 0);
        d.push("s1.txt".into(), 50);
        d.push("d43/r50.txt".into(), 50);
        d.push("d43/r50.txt".into(), 51);
        let b = d.poll(52).expect("d43 is settled");
        assert_eq!(b.paths, vec!["d43", "d43 x.txt", "older.txt", "s1.txt"], "d43/r50.txt is covered by d43");
        d.push("later.txt".into(), 56);
        d.push("d43/r50.txt".into(), 58);
        // Touched within `delay` of a settled path: goes with it.
        assert_eq!(d.poll(62), Some(Batch { paths: vec!["d43/r50.txt".into(), "later.txt".into()], all: false }));
        assert_eq!(d.poll(100), None);
    }

    #[test]
    fn a_name_that_is_not_utf8_is_scanned_through_its_directory() {
        use std::os::unix::ffi::OsStrExt;
        let bad = Path::new(std::ffi::OsStr::from_bytes(b"docs/sub/bad\xffname"));
        assert_eq!(utf8_above(bad), "docs/sub");
        assert_eq!(utf8_above(Path::new(std::ffi::OsStr::from_bytes(b"bad\xff"))), "");
        assert_eq!(utf8_above(Path::new("docs/ok.txt")), "docs/ok.txt");
    }

    /// A scan opens the directories it walks: the kernel reports each
    /// open, and taken for a change, every scan of a directory caused the
    /// next (an idle daemon used half a core).
    #[test]
    fn walking_a_directory_is_not_taken_for_a_change_in_it() {
        let root = std::env::temp_dir().join(format!("fsync-live-open-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("sub/f.txt"), "x\n").expect("write");
        let w = LiveWatcher::new(&root).expect("watch");
        std::thread::sleep(Duration::from_millis(100));
        while w.recv_timeout(Duration::from_millis(50)).is_some() {}
        for e in std::fs::read_dir(root.join("sub")).expect("ls") {
            let _ = std::fs::read(e.expect("entry").path()).expect("read");
        }
        assert_eq!(w.recv_timeout(Duration::from_millis(300)), None, "reading is not a change");
        std::fs::write(root.join("sub/f.txt"), "y\n").expect("write");
        assert!(matches!(w.recv_timeout(Duration::from_secs(2)), Some(Live::Paths(p)) if p.contains(&"sub/f.txt".to_owned())));
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The watch follows the directory's inode: once the root was moved
    /// away, nothing below the path it was shared at reports anything, and
    /// only the move itself says the folder must be looked at.
    #[test]
    fn a_root_moved_away_is_reported() {
        let base = std::env::temp_dir().join(format!("fsync-live-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("docs");
        std::fs::create_dir_all(&root).expect("mkdir");
        let w = LiveWatcher::new(&root).expect("watch");
        std::thread::sleep(Duration::from_millis(100));
        while w.recv_timeout(Duration::from_millis(50)).is_some() {}
        std::fs::rename(&root, base.join("docs-old")).expect("mv");
        std::fs::create_dir(&root).expect("mkdir");
        assert!(matches!(w.recv_timeout(Duration::from_secs(2)), Some(Live::Rescan(_))));
        let _ = std::fs::remove_dir_all(&base);
    }

    /// A rename is reported as the pair of names, after the paths.
    #[test]
    fn a_rename_is_reported_as_a_pair() {
        let root = std::env::temp_dir().join(format!("fsync-live-renamed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("a.bin"), "x").expect("write");
        let w = LiveWatcher::new(&root).expect("watch");
        std::thread::sleep(Duration::from_millis(100));
        while w.recv_timeout(Duration::from_millis(50)).is_some() {}
        std::fs::rename(root.join("a.bin"), root.join("sub/b.bin")).expect("mv");
        let mut seen = Vec::new();
        while let Some(l) = w.recv_timeout(Duration::from_millis(500)) {
            seen.push(l);
        }
        assert!(seen.contains(&Live::Renamed("a.bin".into(), "sub/b.bin".into())), "{seen:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn lost_events_mean_a_full_rescan() {
        let mut d = Debouncer::new(10, 100);
        d.push("x".into(), 0);
        d.push_all(1);
        assert_eq!(d.poll(11), Some(Batch { paths: Vec::new(), all: true }));
        assert_eq!(d.poll(50), None, "the full rescan covers the pending path");
    }
}
