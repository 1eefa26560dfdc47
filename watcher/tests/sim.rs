//! A seeded simulation of one daemon's folder against a peer: random saves,
//! moves, deletions and directory operations on a real disk, a peer's
//! concurrent edits merged in, and the scans and write-backs in random
//! orders. Events go through the daemon's debouncer, on real time: a
//! program's paths are pushed as inotify reports them (both names of a
//! move at once), and come out in batches as they go quiet. The races between them (a move whose two halves come in separate
//! batches, a write-back meeting a change not yet read, a save just after
//! a move) cost the convergence oracle many runs to find; here they come by
//! the hundred in a second, without the network or a daemon.
//!
//! Paths change kind on both sides (a file becomes a directory with a
//! file in it, a directory becomes a file).
//!
//! Checked at the end: the disk equals the merged state, both replicas
//! agree, no line is anywhere twice (a file kept twice, or text doubled),
//! no line is lost unless its file was deleted somewhere, and a file one
//! side deleted that the other never touched is gone (deleted stays
//! deleted).
//!
//! `FSYNC_SIM_SEEDS=N` runs seeds 0..N (default 12); `FSYNC_SIM_SEED=S` one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fsync_core::chunks::Chunks;
use fsync_core::folder::{Folder, Kind};
use fsync_core::AgentId;
use watcher::ignore::Ignore;
use watcher::live::Debouncer;
use watcher::{scan, scan_scoped, Dirty, Index};

struct Sim {
    seed: u64,
    rng: u64,
    root: PathBuf,
    folder: Folder,
    chunks: Chunks,
    index: Index,
    /// What the next write-back looks at, as the daemon keeps it.
    dirty: Dirty,
    peer: Folder,
    now: u64,
    /// Paths live events named, not scanned yet (the daemon's quiet
    /// spell and longest wait, and its delay for a second look).
    debounce: Debouncer,
    start: Instant,
    /// Next number for a name or a line: each is made once.
    next: u64,
    /// Every line written, with the tag (first line) of its file.
    lines: BTreeMap<String, String>,
    /// Tags of files deleted somewhere: their lines may be gone.
    deleted: BTreeSet<String>,
    /// Tags of files deleted by one side (true: here) that the other side
    /// never touched (edited or moved): nothing of them may be left.
    deleted_by: BTreeMap<String, bool>,
    /// Tags each side touched (created, edited or moved): (here, peer).
    touched: BTreeMap<String, (bool, bool)>,
    /// A tag written where a file of another tag was, before any scan saw
    /// that one go: the scan takes it as an edit of that file, so what
    /// touched one touched the other (new tag -> old tag).
    same_file: BTreeMap<String, String>,
    /// Disk paths where a file was made a directory, no scan having looked
    /// there since (path -> the file's tag): made a file again before one
    /// does, it is an edit of that file.
    replaced_files: BTreeMap<String, String>,
    log: Vec<String>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let root = std::env::temp_dir().join(format!("fsync-sim-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("mkdir");
        Sim {
            seed,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            root,
            folder: Folder::new(AgentId::from_index(1)),
            chunks: Chunks::default(),
            index: Index::default(),
            dirty: Dirty::default(),
            peer: Folder::new(AgentId::from_index(2)),
            now: 1,
            debounce: Debouncer::new(5, 200),
            start: Instant::now(),
            next: 0,
            lines: BTreeMap::new(),
            deleted: BTreeSet::new(),
            deleted_by: BTreeMap::new(),
            touched: BTreeMap::new(),
            same_file: BTreeMap::new(),
            replaced_files: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    fn rand(&mut self, n: u64) -> u64 {
        // xorshift64*: enough for picking, and the same on every machine.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n.max(1)
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> Option<T> {
        (!v.is_empty()).then(|| v[self.rand(v.len() as u64) as usize].clone())
    }

    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn note(&mut self, what: String) {
        self.log.push(what);
    }

    fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// What inotify reports for `path`.
    fn event(&mut self, path: String) {
        let now = self.ms();
        self.debounce.push(path, now);
    }

    /// Files and directories on disk (relative), walked now.
    fn on_disk(&self) -> (Vec<String>, Vec<String>) {
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        for e in list_tree(&self.root) {
            let rel = e.strip_prefix(&self.root).expect("under root").to_string_lossy().into_owned();
            if e.is_dir() {
                dirs.push(rel);
            } else {
                files.push(rel);
            }
        }
        (files, dirs)
    }

    fn tag_of(text: &str) -> String {
        text.lines().next().unwrap_or_default().to_owned()
    }

    /// Every file a text was made of: a file taken in as an edit of
    /// another (a kind change that no scan saw in between) holds the tags
    /// of both, once its text merged.
    fn touch_all(&mut self, text: &str, here: bool) {
        let tags: Vec<String> = text.lines().filter(|l| l.starts_with("id-")).map(str::to_owned).collect();
        for t in tags {
            self.touch(&t, here);
        }
    }

    fn touch(&mut self, tag: &str, here: bool) {
        let t = self.touched.entry(tag.to_owned()).or_default();
        if here {
            t.0 = true;
        } else {
            t.1 = true;
        }
    }

    /// A file of `tag` deleted here (`here`) or by the peer.
    fn delete_tag(&mut self, tag: String, here: bool) {
        self.deleted.insert(tag.clone());
        self.deleted_by.entry(tag).or_insert(here);
    }

    // Local programs.

    fn local_op(&mut self) {
        let (files, dirs) = self.on_disk();
        let mut places = vec![String::new()];
        places.extend(dirs.iter().map(|d| format!("{d}/")));
        match self.rand(12) {
            0 | 1 => {
                let n = self.fresh();
                let dir = self.pick(&places).unwrap_or_default();
                let p = format!("{dir}t{n}.txt");
                let tag = format!("id-{n}");
                std::fs::write(self.root.join(&p), format!("{tag}\n")).expect("create");
                self.touch(&tag, true);
                self.lines.insert(tag.clone(), tag);
                self.note(format!("local create {p}"));
                self.event(p);
            }
            2 | 3 => {
                let Some(p) = self.pick(&files) else { return };
                let n = self.fresh();
                let line = format!("e-{n}");
                let old = std::fs::read_to_string(self.root.join(&p)).expect("read");
                let new = format!("{old}{line}\n");
                // In place, or through a temp file renamed over it (a new
                // inode), as editors do.
                if self.rand(2) == 0 {
                    std::fs::write(self.root.join(&p), &new).expect("edit");
                    self.note(format!("local edit {p} in place (+{line})"));
                } else {
                    let tmp = format!("{p}.tmp{n}");
                    std::fs::write(self.root.join(&tmp), &new).expect("temp");
                    std::fs::rename(self.root.join(&tmp), self.root.join(&p)).expect("rename over");
                    self.index.renamed(tmp.clone(), p.clone());
                    self.note(format!("local edit {p} through a temp file (+{line})"));
                    self.event(tmp);
                }
                self.touch_all(&old, true);
                self.lines.insert(line, Self::tag_of(&old));
                self.event(p);
            }
            4 => {
                let Some(p) = self.pick(&files) else { return };
                let old = std::fs::read_to_string(self.root.join(&p)).expect("read");
                self.delete_tag(Self::tag_of(&old), true);
                std::fs::remove_file(self.root.join(&p)).expect("rm");
                self.note(format!("local rm {p}"));
                self.event(p);
            }
            5..=7 => {
                let Some(p) = self.pick(&files) else { return };
                let n = self.fresh();
                let dir = self.pick(&places).unwrap_or_default();
                let to = format!("{dir}r{n}.txt");
                std::fs::rename(self.root.join(&p), self.root.join(&to)).expect("mv");
                // As the daemon hears of each rename from the kernel.
                self.index.renamed(p.clone(), to.clone());
                let text = std::fs::read_to_string(self.root.join(&to)).expect("read");
                self.touch_all(&text, true);
                self.note(format!("local mv {p} {to}"));
                self.event(p);
                self.event(to.clone());
                // And saved again at once, sometimes (the move's halves and
                // the save may come in separate batches).
                if self.rand(3) == 0 {
                    let line = format!("e-{}", self.fresh());
                    let old = std::fs::read_to_string(self.root.join(&to)).expect("read");
                    let tmp = format!("{to}.tmp");
                    std::fs::write(self.root.join(&tmp), format!("{old}{line}\n")).expect("temp");
                    std::fs::rename(self.root.join(&tmp), self.root.join(&to)).expect("rename over");
                    self.index.renamed(tmp.clone(), to.clone());
                    self.note(format!("  then saved through a temp file (+{line})"));
                    self.lines.insert(line, Self::tag_of(&old));
                    self.event(tmp);
                }
            }
            8 => {
                let n = self.fresh();
                let dir = self.pick(&places).unwrap_or_default();
                let d = format!("{dir}d{n}");
                std::fs::create_dir(self.root.join(&d)).expect("mkdir");
                self.note(format!("local mkdir {d}"));
                self.event(d);
            }
            10 => {
                // A file becomes a directory with a file in it (git
                // checkout across branches).
                let Some(p) = self.pick(&files) else { return };
                let old = std::fs::read_to_string(self.root.join(&p)).expect("read");
                self.delete_tag(Self::tag_of(&old), true);
                let n = self.fresh();
                let tag = format!("id-{n}");
                std::fs::remove_file(self.root.join(&p)).expect("rm");
                std::fs::create_dir(self.root.join(&p)).expect("mkdir");
                std::fs::write(self.root.join(format!("{p}/k{n}.txt")), format!("{tag}\n")).expect("create");
                self.touch(&tag, true);
                self.lines.insert(tag.clone(), tag);
                self.replaced_files.insert(p.clone(), Self::tag_of(&old));
                self.note(format!("local {p}: file to directory with k{n}.txt"));
                self.event(p.clone());
                self.event(format!("{p}/k{n}.txt"));
            }
            11 => {
                // A directory becomes a file.
                let Some(d) = self.pick(&dirs) else { return };
                for f in files.iter().filter(|f| f.starts_with(&format!("{d}/"))) {
                    let text = std::fs::read_to_string(self.root.join(f)).expect("read");
                    self.delete_tag(Self::tag_of(&text), true);
                }
                let n = self.fresh();
                let tag = format!("id-{n}");
                std::fs::remove_dir_all(self.root.join(&d)).expect("rm -r");
                std::fs::write(self.root.join(&d), format!("{tag}\n")).expect("create");
                self.touch(&tag, true);
                self.lines.insert(tag.clone(), tag.clone());
                // A file that was here before the directory, if no scan saw
                // it go: the next scan sees a file where a file was, which
                // is an edit of it (its deletion elsewhere no longer wins).
                // The folder may know it at another path still (a move of
                // a directory above, not scanned yet): then the disk tells.
                let was = self
                    .folder
                    .tree()
                    .lookup(&d)
                    .map(|n| n.id)
                    .and_then(|id| self.folder.doc(id))
                    .map(|doc| Self::tag_of(&doc.text()))
                    .or_else(|| self.replaced_files.get(&d).cloned());
                if let Some(was) = was {
                    self.touch(&was, true);
                    self.same_file.insert(tag, was);
                }
                self.note(format!("local {d}: directory to file"));
                self.event(d);
            }
            _ => {
                let Some(d) = self.pick(&dirs) else { return };
                if self.rand(3) == 0 {
                    for f in files.iter().filter(|f| f.starts_with(&format!("{d}/"))) {
                        let text = std::fs::read_to_string(self.root.join(f)).expect("read");
                        self.delete_tag(Self::tag_of(&text), true);
                    }
                    std::fs::remove_dir_all(self.root.join(&d)).expect("rm -r");
                    self.note(format!("local rm -r {d}"));
                    self.event(d);
                } else {
                    let targets: Vec<String> = places.iter().filter(|p| !p.starts_with(&format!("{d}/"))).cloned().collect();
                    let dir = self.pick(&targets).unwrap_or_default();
                    let to = format!("{dir}m{}", self.fresh());
                    std::fs::rename(self.root.join(&d), self.root.join(&to)).expect("mv dir");
                    self.index.renamed(d.clone(), to.clone());
                    self.note(format!("local mv {d} {to}"));
                    self.event(d);
                    self.event(to);
                }
            }
        }
    }

    // The peer.

    fn peer_op(&mut self) {
        self.now += 1;
        let now = self.now;
        let nodes: Vec<(String, Kind, fsync_core::folder::EntryId)> =
            self.peer.tree().nodes().map(|n| (n.path.clone(), n.kind, n.id)).collect();
        let files: Vec<_> = nodes.iter().filter(|n| n.1 == Kind::File).cloned().collect();
        let dirs: Vec<_> = nodes.iter().filter(|n| n.1 == Kind::Dir).cloned().collect();
        let mut places = vec![String::new()];
        places.extend(dirs.iter().map(|d| format!("{}/", d.0)));
        match self.rand(8) {
            0 => {
                let n = self.fresh();
                let dir = self.pick(&places).unwrap_or_default();
                let p = format!("{dir}p{n}.txt");
                assert!(self.peer_create(&p, n, now), "the peer cannot create {p}");
                self.note(format!("peer create {p}"));
            }
            1 | 2 => {
                let Some((p, _, id)) = self.pick(&files) else { return };
                let old = self.peer.doc(id).expect("doc").text();
                let line = format!("p-{}", self.fresh());
                self.peer.set_text(id, &format!("{old}{line}\n"), now).expect("edit");
                self.touch_all(&old, false);
                self.lines.insert(line.clone(), Self::tag_of(&old));
                self.note(format!("peer edit {p} (+{line})"));
            }
            3 => {
                let Some((p, _, id)) = self.pick(&files) else { return };
                let old = self.peer.doc(id).expect("doc").text();
                self.delete_tag(Self::tag_of(&old), false);
                self.peer.delete(id, now).expect("delete");
                self.note(format!("peer rm {p}"));
            }
            4 => {
                let Some((p, _, id)) = self.pick(&files) else { return };
                let dir = self.pick(&places).unwrap_or_default();
                let to = format!("{dir}q{}.txt", self.fresh());
                let text = self.peer.doc(id).expect("doc").text();
                self.touch_all(&text, false);
                self.peer.rename(id, &to, now).expect("rename");
                self.note(format!("peer mv {p} {to}"));
            }
            6 => {
                // A file becomes a directory with a file in it.
                let Some((p, _, id)) = self.pick(&files) else { return };
                let old = self.peer.doc(id).expect("doc").text();
                self.delete_tag(Self::tag_of(&old), false);
                self.peer.delete(id, now).expect("delete");
                let n = self.fresh();
                if !self.peer_create(&format!("{p}/k{n}.txt"), n, now) {
                    // Still shown (a concurrent edit kept it): not this time.
                    self.note(format!("peer rm {p} (kept by an edit)"));
                    return;
                }
                self.note(format!("peer {p}: file to directory with k{n}.txt"));
            }
            7 => {
                // A directory becomes a file.
                let Some((d, _, id)) = self.pick(&dirs) else { return };
                let mut below = self.peer.tree().descendants(id);
                below.reverse();
                for b in below {
                    if let Some(doc) = self.peer.doc(b).filter(|_| self.peer.state(b).is_some_and(|s| s.kind == Kind::File)) {
                        let tag = Self::tag_of(&doc.text());
                        self.delete_tag(tag, false);
                    }
                    self.peer.delete(b, now).expect("delete below");
                }
                self.peer.delete(id, now).expect("delete dir");
                let n = self.fresh();
                if !self.peer_create(&d, n, now) {
                    self.note(format!("peer rm -r {d} (kept)"));
                    return;
                }
                self.note(format!("peer {d}: directory to file"));
            }
            _ => {
                let Some((d, _, id)) = self.pick(&dirs) else { return };
                let targets: Vec<String> =
                    places.iter().filter(|p| **p != format!("{d}/") && !p.starts_with(&format!("{d}/"))).cloned().collect();
                let dir = self.pick(&targets).unwrap_or_default();
                let to = format!("{dir}n{}", self.fresh());
                self.peer.rename(id, &to, now).expect("rename dir");
                self.note(format!("peer mv {d} {to}"));
            }
        }
    }

    /// The peer creates a text file at `path` tagged `id-N`; false when
    /// the name is taken.
    fn peer_create(&mut self, path: &str, n: u64, now: u64) -> bool {
        let tag = format!("id-{n}");
        let Ok(id) = self.peer.create(path, Kind::File, now) else { return false };
        self.peer.set_text(id, &format!("{tag}\n"), now).expect("text");
        self.touch(&tag, false);
        self.lines.insert(tag.clone(), tag);
        true
    }

    /// Changes each side lacks, both ways or one.
    fn sync(&mut self, to_local: bool, to_peer: bool) {
        if to_local {
            let (c, _) = self.peer.changes_since(self.folder.version_vector(), 0, usize::MAX);
            self.folder.apply_changes(&c).1.expect("valid");
        }
        if to_peer {
            let (c, _) = self.folder.changes_since(self.peer.version_vector(), 0, usize::MAX);
            self.peer.apply_changes(&c).1.expect("valid");
        }
        self.note(format!("sync to local {to_local}, to peer {to_peer}"));
    }

    // The daemon.

    fn scan_scope(&mut self, scope: Option<Vec<String>>) {
        self.now += 1;
        // What this scan looks at, it sees as it is now.
        let near = |p: &str, s: &str| p == s || p.starts_with(&format!("{s}/")) || s.starts_with(&format!("{p}/"));
        self.replaced_files.retain(|p, _| scope.as_ref().is_some_and(|sc| !sc.iter().any(|s| near(p, s))));
        let ignore = Ignore::load(&self.root);
        if scope.is_none() {
            self.dirty.all();
        }
        let r = match scan_scoped(
            &self.root,
            &mut self.folder,
            &mut self.chunks,
            &mut self.index,
            &ignore,
            scope.as_deref(),
            self.now,
        ) {
            Ok(r) => r,
            Err(e) => self.fail(&format!("scan {scope:?} failed: {e}")),
        };
        self.note(format!(
            "scan {scope:?}: created {:?} modified {:?} moved {:?} deleted {:?} deferred {:?}",
            r.created, r.modified, r.moved, r.deleted, r.deferred
        ));
        // Looked at again shortly, as the daemon does.
        let again = self.ms() + 50;
        for p in r.deferred {
            self.debounce.push(p, again);
        }
    }

    /// The paths gone quiet, scanned; then a write-back, as the daemon
    /// does after every scan.
    fn events(&mut self) {
        let now = self.ms();
        if let Some(batch) = self.debounce.poll(now) {
            self.scan_scope((!batch.all).then_some(batch.paths));
            self.write();
        }
    }

    /// As the daemon writes: a write-back meeting a change it has not read
    /// scans everything and writes again (three passes at most).
    fn write(&mut self) {
        for _ in 0..3 {
            let w =
                match self.dirty.write_back(&self.root, &mut self.folder, &mut self.chunks, &mut self.index, &mut |_| Ok(())) {
                    Ok(mut w) => {
                        w.settle();
                        w
                    }
                    Err(e) => {
                        let model: Vec<String> = self.folder.tree().nodes().map(|n| n.path.clone()).collect();
                        let (files, dirs) = self.on_disk();
                        self.fail(&format!("write-back failed: {e}\n model {model:?}\n disk {dirs:?} {files:?}"))
                    }
                };
            self.note(format!(
                "write-back: written {:?} removed {:?} moved {:?} needs_scan {:?} raced {:?}",
                w.written, w.removed, w.moved, w.needs_scan, w.raced
            ));
            // Our own writes are events too (inotify cannot tell them
            // apart): a directory we moved carries a file edited since the
            // last scan, and only that event brings the edit in.
            for p in w.written.iter().chain(&w.removed).chain(w.moved.iter().flat_map(|(a, b)| [a, b])) {
                self.event(p.clone());
            }
            if w.needs_scan.is_empty() && w.raced.is_empty() {
                return;
            }
            self.scan_scope(None);
        }
    }

    fn step(&mut self) {
        match self.rand(12) {
            0..=3 => self.local_op(),
            4 | 5 => self.peer_op(),
            6 => {
                let (a, b) = (self.rand(4) != 0, self.rand(4) != 0);
                self.sync(a, b);
            }
            7 | 8 => self.write(),
            9 | 10 => self.events(),
            _ => {
                // Time passes: sometimes past the quiet spell, or the wait
                // for a second look.
                let ms = [1, 6, 60, 160][self.rand(4) as usize];
                std::thread::sleep(Duration::from_millis(ms));
                self.note(format!("{ms} ms later"));
            }
        }
    }

    /// Quiet: every event looked at (twice where a scan waits), both sides
    /// synced, everything written.
    fn settle(&mut self) {
        for _ in 0..20 {
            std::thread::sleep(watcher::GONE_WAIT + Duration::from_millis(60));
            self.note("settling".to_owned());
            self.events();
            self.sync(true, true);
            self.write();
            if self.debounce.next_deadline().is_none() && self.differences().is_empty() {
                return;
            }
        }
    }

    /// Where the disk and the merged state (of either replica) differ.
    fn differences(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let (model, peer) = (merged(&mut self.folder), merged(&mut self.peer));
        if model != peer {
            out.push(format!("replicas differ:\n local {model:?}\n peer  {peer:?}"));
        }
        let (files, dirs) = self.on_disk();
        let mut disk = BTreeMap::new();
        for f in files {
            disk.insert(f.clone(), Some(std::fs::read_to_string(self.root.join(&f)).expect("read")));
        }
        for d in dirs {
            disk.insert(d, None);
        }
        if disk != model {
            out.push(format!("disk differs from the merged state:\n disk  {disk:?}\n model {model:?}"));
        }
        out
    }

    fn check(&mut self) {
        let mut problems = self.differences();
        let (files, _) = self.on_disk();
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in &files {
            for l in std::fs::read_to_string(self.root.join(f)).expect("read").lines() {
                seen.entry(l.to_owned()).or_default().push(f.clone());
            }
        }
        for (line, at) in &seen {
            if at.len() > 1 {
                problems.push(format!("{line} is there {} times: {at:?}", at.len()));
            }
        }
        for (line, tag) in &self.lines {
            if !self.deleted.contains(tag) && !seen.contains_key(line) {
                problems.push(format!("{line} (of {tag}, never deleted) is lost"));
            }
        }
        // Deleted stays deleted: a file one side deleted that the other
        // never touched leaves nothing behind.
        for (line, tag) in &self.lines {
            let Some(&here) = self.deleted_by.get(tag) else { continue };
            let mut other_touched = false;
            let mut t = Some(tag);
            for _ in 0..self.same_file.len() + 1 {
                let Some(at) = t else { break };
                let (by_local, by_peer) = self.touched.get(at).copied().unwrap_or_default();
                other_touched |= if here { by_peer } else { by_local };
                t = self.same_file.get(at);
            }
            if !other_touched && seen.contains_key(line) {
                problems.push(format!(
                    "{line} (of {tag}, deleted {}) came back: {:?}",
                    if here { "here" } else { "by the peer" },
                    seen[line]
                ));
            }
        }
        if !problems.is_empty() {
            self.fail(&problems.join("\n"));
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!("seed {}: {what}\n\nwhat happened:\n{}", self.seed, self.log.join("\n"))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A replica's paths, with the text of each file.
fn merged(folder: &mut Folder) -> BTreeMap<String, Option<String>> {
    let nodes: Vec<_> = folder.tree().nodes().cloned().collect();
    nodes
        .iter()
        .map(|n| (n.path.clone(), (n.kind == Kind::File).then(|| folder.doc(n.id).map(|d| d.text()).unwrap_or_default())))
        .collect()
}

/// Every path below `root`, sorted.
fn list_tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("list").flatten() {
            let p = e.path();
            if e.file_type().expect("type").is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

fn run(seed: u64, steps: usize) {
    let mut s = Sim::new(seed);
    // A start: a few files both sides have.
    for i in 0..4 {
        let tag = format!("id-s{i}");
        std::fs::write(s.root.join(format!("s{i}.txt")), format!("{tag}\n")).expect("write");
        s.lines.insert(tag.clone(), tag);
    }
    std::fs::create_dir(s.root.join("d0")).expect("mkdir");
    let ignore = Ignore::load(&s.root);
    scan(&s.root, &mut s.folder, &mut s.chunks, &mut s.index, &ignore, 1).expect("scan");
    s.sync(false, true);
    for _ in 0..steps {
        s.step();
    }
    s.settle();
    s.check();
}

#[test]
fn saves_moves_and_a_peers_edits_in_any_order_keep_one_copy_and_lose_nothing() {
    let seeds: Vec<u64> = match std::env::var("FSYNC_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => (0..std::env::var("FSYNC_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(12)).collect(),
    };
    for seed in seeds {
        run(seed, 120);
    }
}
