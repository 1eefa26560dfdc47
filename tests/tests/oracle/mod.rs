//! The convergence oracle: a cluster of real `fsync` daemons on 127.0.0.1,
//! every link through a fault proxy, a driver that edits their folders at
//! random the way users and tools do (in-place writes, temp file and rename,
//! appends, deletes, renames, directory moves, chmod, symlinks, binary
//! writes), and a ledger of every edit made. At the end all nodes must hold
//! identical folders, and every edit must be present unless a causally
//! later edit superseded it (CONTRACT section 2).
//!
//! How "superseded" is known: text edits insert unique tokens (`tok-N`), and
//! a token counts as superseded only when the driver deleted it on a node
//! that showed it (it read the line or the file just before). Binary writes
//! carry a header naming their file and blob; a blob is superseded when the
//! driver overwrote it where it saw it, and a losing concurrent write must
//! still be in the file's history (`fsync log`, `fsync cat --at`). A blob of
//! a file that was deleted somewhere is excused (the oracle cannot tell a
//! concurrent loser from a concurrent write there; text tokens have no such
//! gap).

#![allow(dead_code, missing_docs, unreachable_pub)]

pub mod netns;
pub mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::util::Rng;
use crate::util::{free_port, noise, Daemon, Node};
use proxy::{Faults, Proxy};

/// One entry of a folder as the user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File { bytes: Vec<u8>, exec: bool },
    Link(PathBuf),
}

/// A folder's whole tree (relative path -> entry), without our temp files.
pub fn tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if crate::util::not_user_data(root, &dir, &name) {
                continue;
            }
            let p = e.path();
            let rel = p.strip_prefix(root).expect("inside").to_string_lossy().into_owned();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.file_type().is_symlink() {
                out.insert(rel, Entry::Link(std::fs::read_link(&p).unwrap_or_default()));
            } else if m.is_dir() {
                out.insert(rel, Entry::Dir);
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.insert(rel, Entry::File { bytes, exec: m.permissions().mode() & 0o100 != 0 });
            }
        }
    }
    out
}

/// Where two trees differ, briefly.
pub fn diff(a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>) -> String {
    let mut out = String::new();
    for k in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        let show = |e: Option<&Entry>| match e {
            None => "absent".to_owned(),
            Some(Entry::Dir) => "dir".to_owned(),
            Some(Entry::Link(t)) => format!("link -> {}", t.display()),
            Some(Entry::File { bytes, exec }) => format!(
                "{} bytes{} {:?}",
                bytes.len(),
                if *exec { " +x" } else { "" },
                String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
            ),
        };
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            out.push_str(&format!("  {k}: {} | {}\n", show(x), show(y)));
        }
    }
    out
}

/// A node of the cluster.
pub struct Member {
    pub node: Node,
    pub port: u16,
    pub id: String,
    pub daemon: Option<Daemon>,
}

/// N daemons; node i reaches node j only through `proxies[(i, j)]`, or,
/// in network namespaces (`net`), straight over a bridge with nftables in
/// between.
pub struct Cluster {
    pub members: Vec<Member>,
    pub proxies: BTreeMap<(usize, usize), Proxy>,
    pub net: Option<netns::Netns>,
    pub kills: usize,
}

fn members(name: &str, n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| {
            let node = Node::new(&format!("{name}-{i}"));
            let id = node.ok(&["init"]).trim().to_owned();
            node.ok(&["folder", "add", "docs", node.scratch.join("docs").to_str().expect("utf-8")]);
            // The oracle holds every deletion to be made as the driver made
            // it; the guard, which holds big ones back, has tests of its own
            // (history.rs).
            node.guard_off("docs");
            Member { node, port: free_port(), id, daemon: None }
        })
        .collect()
}

/// Every node trusts every other at `addr(j)`.
fn link_all(members: &[Member], addr: impl Fn(usize, usize) -> String) {
    for (i, m) in members.iter().enumerate() {
        for (j, to) in members.iter().enumerate() {
            if i != j {
                m.node.ok(&["peer", "add", &to.id, "--addr", &addr(i, j), "--folder", "docs"]);
            }
        }
    }
}

impl Cluster {
    /// Makes `n` initialised nodes sharing "docs", all linked, and starts them.
    pub fn new(name: &str, n: usize, seed: u64) -> Cluster {
        let members = members(name, n);
        let mut proxies = BTreeMap::new();
        for i in 0..n {
            for (j, to) in members.iter().enumerate() {
                if i != j {
                    let server = format!("127.0.0.1:{}", to.port).parse().expect("addr");
                    proxies.insert((i, j), Proxy::start(server, seed ^ ((i * 31 + j) as u64)));
                }
            }
        }
        link_all(&members, |i, j| proxies[&(i, j)].addr.to_string());
        Cluster::started(Cluster { members, proxies, net: None, kills: 0 })
    }

    /// Like [`Cluster::new`], each node in its own network namespace.
    pub fn in_namespaces(name: &str, n: usize) -> Result<Cluster, String> {
        let net = netns::Netns::new(n)?;
        let members = members(name, n);
        link_all(&members, |_, j| format!("{}:{}", net.addr(j), netns::PORT));
        Ok(Cluster::started(Cluster { members, proxies: BTreeMap::new(), net: Some(net), kills: 0 }))
    }

    fn started(mut c: Cluster) -> Cluster {
        for i in 0..c.len() {
            c.start(i);
        }
        c
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn root(&self, i: usize) -> PathBuf {
        self.members[i].node.scratch.join("docs")
    }

    pub fn start(&mut self, i: usize) {
        let m = &mut self.members[i];
        if m.daemon.is_none() {
            m.daemon = Some(match &self.net {
                Some(net) => m.node.start_through(net.exec(i), &format!("{}:{}", net.addr(i), netns::PORT)),
                None => m.node.start(m.port),
            });
        }
    }

    pub fn running(&self, i: usize) -> bool {
        self.members[i].daemon.is_some()
    }

    /// SIGKILL, no warning.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut d) = self.members[i].daemon.take() {
            let _ = d.child.kill();
            let _ = d.child.wait();
            self.kills += 1;
        }
    }

    /// The same faults on every link (in namespaces: only loss).
    pub fn set_faults(&self, f: Faults) {
        if let Some(net) = &self.net {
            net.set_loss((f.loss * 100.0).round() as u32);
        }
        self.proxies.values().for_each(|p| p.set_faults(f));
    }

    /// Cuts every link between `side` and the rest.
    pub fn partition(&self, side: &[usize]) {
        if let Some(net) = &self.net {
            net.partition(side);
        }
        for (&(i, j), p) in &self.proxies {
            p.cut(side.contains(&i) != side.contains(&j));
        }
    }

    /// Cuts (or heals) every link of node `i`.
    pub fn isolate(&self, i: usize, on: bool) {
        if let Some(net) = &self.net {
            net.isolate(i, on);
        }
        for (&(x, y), p) in &self.proxies {
            if x == i || y == i {
                p.cut(on);
            }
        }
    }

    pub fn heal(&self) {
        self.set_faults(Faults::default());
        if let Some(net) = &self.net {
            net.partition(&[]);
        }
        self.proxies.values().for_each(|p| p.cut(false));
    }

    pub fn packets_dropped(&self) -> u64 {
        self.net.as_ref().map_or(0, netns::Netns::dropped) + self.proxies.values().map(Proxy::dropped).sum::<u64>()
    }

    /// Waits until every node holds the same tree and keeps it for a second.
    pub fn converge(&self, limit: Duration) -> Result<(BTreeMap<String, Entry>, Duration), String> {
        let start = Instant::now();
        let mut stable_since: Option<(Instant, BTreeMap<String, Entry>)> = None;
        loop {
            let trees: Vec<_> = (0..self.len()).map(|i| tree(&self.root(i))).collect();
            let same = trees.iter().all(|t| *t == trees[0]);
            if same {
                match &stable_since {
                    Some((t, prev)) if *prev == trees[0] => {
                        if t.elapsed() >= Duration::from_secs(1) {
                            return Ok((trees[0].clone(), start.elapsed()));
                        }
                    }
                    _ => stable_since = Some((Instant::now(), trees[0].clone())),
                }
            } else {
                stable_since = None;
            }
            if std::env::var_os("FSYNC_ORACLE_DEBUG").is_some() && start.elapsed().as_millis() % 5000 < 200 {
                for (i, t) in trees.iter().enumerate().skip(1) {
                    if *t != trees[0] {
                        eprintln!("{:?}: node 0 | node {i}:\n{}", start.elapsed(), diff(&trees[0], t));
                    }
                }
            }
            if start.elapsed() > limit {
                let mut report = String::new();
                for (i, t) in trees.iter().enumerate().skip(1) {
                    if *t != trees[0] {
                        report.push_str(&format!("node 0 | node {i}:\n{}", diff(&trees[0], t)));
                    }
                }
                return Err(format!("not converged after {limit:?}:\n{report}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops every daemon with SIGTERM; each must exit 0.
    pub fn stop_all(&mut self) {
        for (i, m) in self.members.iter_mut().enumerate() {
            if let Some(d) = m.daemon.take() {
                assert_eq!(d.stop(), Some(0), "node {i} did not stop cleanly: {}", m.node.log());
            }
        }
    }
}

/// What the driver did, and what must be found at the end.
#[derive(Default)]
pub struct Ledger {
    /// token -> superseded (deleted by a node that showed it)
    pub tokens: BTreeMap<u64, bool>,
    /// blob -> (file id, superseded)
    pub blobs: BTreeMap<u64, (u64, bool)>,
    /// Binary files deleted somewhere.
    pub deleted_bins: BTreeSet<u64>,
    /// Edits made, by kind.
    pub ops: BTreeMap<&'static str, usize>,
}

impl Ledger {
    pub fn edits(&self) -> usize {
        self.ops.values().sum()
    }
}

/// Tokens in a text (`tok-N`).
fn tokens_in(text: &str) -> Vec<u64> {
    text.match_indices("tok-")
        .filter_map(|(i, _)| text[i + 4..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

const BIN_MAGIC: &[u8] = b"FSYNCBIN ";

/// (file id, blob id) from a binary file's header.
fn blob_header(bytes: &[u8]) -> Option<(u64, u64)> {
    let rest = bytes.strip_prefix(BIN_MAGIC)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&rest[..end]).ok()?;
    let (f, b) = head.split_once(' ')?;
    Some((f.parse().ok()?, b.parse().ok()?))
}

/// A change of the relay ([`Driver::relay`]).
#[derive(Debug)]
enum Change {
    /// A save at this path, of these bytes.
    Saved(String, Vec<u8>),
    /// This path removed, with everything below it, and these tokens with it.
    Removed(String, BTreeSet<u64>),
}

impl Change {
    /// Ok when `t` shows the change as made, else what it shows instead.
    fn arrived(&self, t: &BTreeMap<String, Entry>) -> Result<(), String> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            Change::Saved(path, bytes) => {
                let holds = |e: &Entry| matches!(e, Entry::File { bytes: b, .. } if b == bytes);
                if t.values().any(holds) {
                    return Ok(());
                }
                Err(format!("no file holds {:?} as saved at {path}; {path} holds {:?}", text(bytes), t.get(path)))
            }
            Change::Removed(path, tokens) => {
                for (p, e) in t {
                    if let Entry::File { bytes, .. } = e {
                        let back: Vec<u64> = std::str::from_utf8(bytes).map(tokens_in).unwrap_or_default();
                        if let Some(tok) = back.iter().find(|x| tokens.contains(x)) {
                            return Err(format!("tok-{tok}, removed with {path}, is in {p}"));
                        }
                    }
                }
                let below = format!("{path}/");
                let under = |d: &String| {
                    let inner = format!("{d}/");
                    t.range(inner.clone()..).next().is_none_or(|(k, _)| !k.starts_with(&inner))
                };
                for (p, e) in t.iter().filter(|(p, _)| *p == path || p.starts_with(&below)) {
                    if matches!(e, Entry::Dir) && under(p) {
                        return Err(format!("{p} is back, empty, after {path} was removed"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// The random workload, applied straight to a node's folder on disk.
pub struct Driver {
    pub rng: Rng,
    next: u64,
    pub ledger: Ledger,
    /// Largest binary write (bytes); a few writes are this big.
    pub big_binary: usize,
    /// FSYNC_ORACLE_TRACE=1: every edit on stderr, for a post-mortem.
    trace: bool,
    /// Directory moves and recursive removals in the mix (`FSYNC_DIR_OPS=1`
    /// or the scenario turns them on).
    pub dir_ops: bool,
    /// Paths that change kind in the mix (`FSYNC_KIND_OPS=1` or the
    /// scenario turns them on).
    pub kind_ops: bool,
}

struct Listing {
    texts: Vec<PathBuf>,
    bins: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

/// Whether `path` is named as the driver names its temp files (see
/// [`Driver::save`]).
fn driver_temp(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    name.starts_with('.') && name.contains(".tmp")
}

/// What the driver may pick on a node: all but another node's save in
/// flight (its temp file, synced if a scan caught it), which no user edits.
fn list(root: &Path) -> Listing {
    let mut l = Listing { texts: vec![], bins: vec![], dirs: vec![], files: vec![] };
    for (rel, e) in tree(root) {
        if driver_temp(&rel) {
            continue;
        }
        let p = PathBuf::from(rel);
        match e {
            Entry::Dir => l.dirs.push(p),
            Entry::Link(_) => l.files.push(p),
            Entry::File { .. } => {
                if p.extension().is_some_and(|x| x == "bin") {
                    l.bins.push(p.clone());
                } else if p.extension().is_some_and(|x| x == "txt") {
                    l.texts.push(p.clone());
                }
                l.files.push(p);
            }
        }
    }
    l
}

impl Driver {
    pub fn new(seed: u64) -> Driver {
        Driver {
            rng: Rng::new(seed),
            next: 0,
            ledger: Ledger::default(),
            big_binary: 3 << 20,
            trace: std::env::var_os("FSYNC_ORACLE_TRACE").is_some(),
            dir_ops: std::env::var_os("FSYNC_DIR_OPS").is_some(),
            kind_ops: std::env::var_os("FSYNC_KIND_OPS").is_some(),
        }
    }

    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn count(&mut self, kind: &'static str) {
        *self.ledger.ops.entry(kind).or_default() += 1;
    }

    fn note(&self, root: &Path, what: std::fmt::Arguments<'_>) {
        if self.trace {
            let node = root.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
            eprintln!("[{}.{:06}] {node}: {what}", t / 1_000_000 % 100_000, t % 1_000_000);
        }
    }

    fn new_token(&mut self) -> String {
        let t = self.fresh();
        self.ledger.tokens.insert(t, false);
        // Fixed width: a new token is never an old one with characters
        // added (`tok-4` -> `tok-45`). Typing into a line is merged by
        // character, so such a line deleted on another node meanwhile keeps
        // only the typed `5`: the documented merge of a line edit with its
        // deletion, which a diff cannot tell from a new line put in the old
        // one's place (see `watcher::diff`).
        format!("tok-{t:06}\n")
    }

    /// Marks the tokens and blob shown in `bytes` as superseded.
    fn supersede(&mut self, bytes: &[u8]) {
        if let Some((_, blob)) = blob_header(bytes) {
            if let Some(b) = self.ledger.blobs.get_mut(&blob) {
                b.1 = true;
            }
        } else if let Ok(text) = std::str::from_utf8(bytes) {
            for t in tokens_in(text) {
                if let Some(s) = self.ledger.tokens.get_mut(&t) {
                    *s = true;
                }
            }
        }
    }

    /// Writes `bytes` at `path` the way editors and tools do: in place, or
    /// to a temp file renamed over it. A write-back of the daemon may land
    /// between the driver's read and this save: the save replaces it (what
    /// a user saves is what the file holds), so what that version showed and
    /// the save drops is superseded. The driver sees exactly what it
    /// replaced: in place it reads through the handle it writes, and a
    /// rename is an atomic exchange whose displaced file it reads.
    ///
    /// Only a save with `create` makes a new file. An edit of a file that a
    /// write-back moved away since it was read fails with NotFound: the
    /// second file any program saving by path would make there holds a copy
    /// of the old content, which the ledger (knowing files by their
    /// content) would take for a double.
    fn save(&mut self, path: &Path, bytes: &[u8], create: bool) -> std::io::Result<()> {
        use std::io::{Read, Seek, Write};
        if self.rng.chance(0.5) {
            // In place: the file as it is now.
            let mut f = std::fs::OpenOptions::new().read(true).write(true).create_new(create).open(path)?;
            let mut replaced = Vec::new();
            f.read_to_end(&mut replaced)?;
            self.supersede_dropped(&replaced, bytes);
            f.set_len(0)?;
            f.seek(std::io::SeekFrom::Start(0))?;
            f.write_all(bytes)
        } else {
            use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
            let tmp = path.with_file_name(format!(
                ".{}.tmp{}",
                path.file_name().map_or("x".into(), |n| n.to_string_lossy()),
                self.fresh()
            ));
            std::fs::write(&tmp, bytes)?;
            // Keep the executable bit across the rename, as editors do.
            if let Ok(m) = std::fs::metadata(path) {
                let _ = std::fs::set_permissions(&tmp, m.permissions());
            }
            match renameat2(AT_FDCWD, &tmp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE) {
                Ok(()) => {
                    // The replaced file is at the temp name now: out of the
                    // folder at once, then read (a scan meanwhile would see
                    // it moved there, as if a user had).
                    let mut f = std::fs::File::open(&tmp)?;
                    std::fs::remove_file(&tmp)?;
                    let mut replaced = Vec::new();
                    f.read_to_end(&mut replaced)?;
                    self.supersede_dropped(&replaced, bytes);
                    Ok(())
                }
                Err(nix::errno::Errno::ENOENT) if create && std::fs::symlink_metadata(&tmp).is_ok() => {
                    std::fs::rename(&tmp, path)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(std::io::Error::from(e))
                }
            }
        }
    }

    /// What `replaced` showed and `new` does not: superseded by a save.
    fn supersede_dropped(&mut self, replaced: &[u8], new: &[u8]) {
        if replaced == new || replaced.is_empty() {
            return;
        }
        if blob_header(replaced).is_some() {
            if blob_header(replaced) != blob_header(new) {
                self.supersede(replaced);
            }
            return;
        }
        let kept: BTreeSet<u64> = std::str::from_utf8(new).map(tokens_in).unwrap_or_default().into_iter().collect();
        if let Ok(text) = std::str::from_utf8(replaced) {
            for t in tokens_in(text).into_iter().filter(|t| !kept.contains(t)) {
                if let Some(s) = self.ledger.tokens.get_mut(&t) {
                    *s = true;
                }
            }
        }
    }

    /// Removes `path` (a file, a link or a whole tree) as a user would,
    /// and supersedes exactly what it removed: it is first moved out of the
    /// folder in one rename (what the daemon sees deleted), then read there.
    fn remove(&mut self, root: &Path, path: &Path) -> std::io::Result<()> {
        let trash = root.parent().unwrap_or(root).join(format!("trash-{}", self.fresh()));
        std::fs::rename(path, &trash)?;
        let meta = std::fs::symlink_metadata(&trash)?;
        let removed: Vec<Vec<u8>> = if meta.is_dir() {
            tree(&trash)
                .into_values()
                .filter_map(|e| if let Entry::File { bytes, .. } = e { Some(bytes) } else { None })
                .collect()
        } else if meta.is_file() {
            vec![std::fs::read(&trash)?]
        } else {
            Vec::new()
        };
        for bytes in removed {
            if let Some((file, _)) = blob_header(&bytes) {
                self.ledger.deleted_bins.insert(file);
            }
            self.supersede(&bytes);
        }
        if meta.is_dir() {
            std::fs::remove_dir_all(&trash)
        } else {
            std::fs::remove_file(&trash)
        }
    }

    fn some_dir(&mut self, l: &Listing) -> PathBuf {
        if self.rng.chance(0.3) {
            PathBuf::new()
        } else {
            self.rng.pick(&l.dirs).cloned().unwrap_or_default()
        }
    }

    /// One random edit on the folder at `root`. Errors from races with the
    /// daemon's own writes (a file renamed away meanwhile) just skip it.
    pub fn step(&mut self, root: &Path) {
        let l = list(root);
        let roll = self.rng.below(100);
        // An edit that fails (the daemon moved its file away meanwhile)
        // did not happen: its tokens and blobs are not owed. A recursive
        // removal that failed half way did remove some files, so what it
        // saw stays superseded.
        let before = (self.ledger.tokens.clone(), self.ledger.blobs.clone(), self.ledger.deleted_bins.clone());
        let r = match roll {
            0..=24 => self.insert_line(root, &l),
            25..=34 => self.create_text(root, &l),
            35..=41 => self.delete_line(root, &l),
            42..=49 => self.append_line(root, &l),
            50..=58 => self.write_binary(root, &l),
            59..=64 => self.delete_file(root, &l),
            65..=73 => self.rename_file(root, &l),
            74..=78 if self.dir_ops => self.move_dir(root, &l),
            79..=83 if self.kind_ops => self.change_kind(root, &l),
            85..=87 if self.dir_ops => self.remove_dir(root, &l),
            74..=87 => self.make_dir(root, &l),
            88..=93 => self.chmod(root, &l),
            _ => self.symlink(root, &l),
        };
        if let Err(e) = r {
            if !((self.dir_ops && (85..=87).contains(&roll)) || (self.kind_ops && (79..=83).contains(&roll))) {
                (self.ledger.tokens, self.ledger.blobs, self.ledger.deleted_bins) = before;
            } else {
                // Half done: what it removed stays superseded, but what it
                // was about to write (the new kind's token) never was.
                self.ledger.tokens.retain(|t, _| before.0.contains_key(t));
                self.ledger.blobs.retain(|b, _| before.1.contains_key(b));
            }
            self.note(root, format_args!("that edit failed: {e}"));
            // Only races with the daemon may fail (a path moved meanwhile).
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::DirectoryNotEmpty
                        | std::io::ErrorKind::InvalidInput
                        | std::io::ErrorKind::AlreadyExists
                        | std::io::ErrorKind::NotADirectory
                        | std::io::ErrorKind::IsADirectory
                ) || e.raw_os_error() == Some(39)
                    || e.raw_os_error() == Some(22),
                "the driver's edit failed: {e}"
            );
        }
    }

    /// The relay, on a converged cluster: `rounds` changes, each made on
    /// another node than the one before, 0 to 300 ms after that one's
    /// change reached it, so no two are concurrent: a save over a text file
    /// (in place or by rename, as `save` does), a new file, a file or a
    /// whole tree deleted. Each must reach the next node as made before the
    /// next change, and hold at the end: a save is found exactly as saved
    /// (none of the lines it replaced merged back in), nothing of a deleted
    /// file or tree is left anywhere (no token of it, no empty directory
    /// where it was). Files are followed by content, not path: a name freed
    /// by a deletion may go to a file that held it under a conflict name
    /// (docs/design.md, "paths"). Returns the number of changes made.
    pub fn relay(&mut self, c: &Cluster, rounds: usize, settle: Duration) -> Result<usize, String> {
        let mut saved: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut removed: BTreeSet<u64> = BTreeSet::new();
        let mut removed_paths: Vec<String> = Vec::new();
        let mut last: Option<(usize, Change)> = None;
        for round in 0..rounds {
            let i = match &last {
                Some((j, _)) if c.len() > 1 => (j + 1 + self.rng.below(c.len() - 1)) % c.len(),
                _ => self.rng.below(c.len()),
            };
            let root = c.root(i);
            if let Some((j, change)) = &last {
                let start = Instant::now();
                loop {
                    let t = tree(&root);
                    let Err(why) = change.arrived(&t) else { break };
                    if start.elapsed() > Duration::from_secs(30) {
                        return Err(format!(
                            "relay round {round}: {change:?} on node {j} never reached node {i} as made: {why}"
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            std::thread::sleep(Duration::from_millis(self.rng.below(300) as u64));
            let l = list(&root);
            let roll = self.rng.below(100);
            let change = match roll {
                0..=49 if !l.texts.is_empty() => {
                    let rel = self.rng.pick(&l.texts).cloned().unwrap_or_default();
                    let mut bytes = Vec::new();
                    for _ in 0..1 + self.rng.below(3) {
                        bytes.extend(self.new_token().into_bytes());
                    }
                    self.note(&root, format_args!("relay: save over {}", rel.display()));
                    self.save(&root.join(&rel), &bytes, false)
                        .map_err(|e| format!("relay round {round}: the save over {} on node {i}: {e}", rel.display()))?;
                    Change::Saved(rel.to_string_lossy().into_owned(), bytes)
                }
                50..=84 if !l.files.is_empty() || !l.dirs.is_empty() => {
                    let pool = if roll < 70 && !l.files.is_empty() || l.dirs.is_empty() { &l.files } else { &l.dirs };
                    let rel = self.rng.pick(pool).cloned().unwrap_or_default();
                    let key = rel.to_string_lossy().into_owned();
                    let tokens: BTreeSet<u64> = tree(&root)
                        .iter()
                        .filter(|(p, _)| **p == key || p.starts_with(&format!("{key}/")))
                        .filter_map(|(_, e)| if let Entry::File { bytes, .. } = e { Some(bytes) } else { None })
                        .flat_map(|b| std::str::from_utf8(b).map(tokens_in).unwrap_or_default())
                        .collect();
                    self.note(&root, format_args!("relay: rm -r {}", rel.display()));
                    self.remove(&root, &root.join(&rel)).map_err(|e| format!("relay: rm -r {}: {e}", rel.display()))?;
                    Change::Removed(key, tokens)
                }
                _ => {
                    let rel = self.some_dir(&l).join(format!("relay{}.txt", self.fresh()));
                    let bytes = self.new_token().into_bytes();
                    self.note(&root, format_args!("relay: create {}", rel.display()));
                    self.save(&root.join(&rel), &bytes, true).map_err(|e| format!("relay: create {}: {e}", rel.display()))?;
                    Change::Saved(rel.to_string_lossy().into_owned(), bytes)
                }
            };
            match &change {
                Change::Saved(p, bytes) => {
                    saved.insert(p.clone(), bytes.clone());
                }
                Change::Removed(p, tokens) => {
                    let below = format!("{p}/");
                    saved.retain(|q, _| q != p && !q.starts_with(&below));
                    removed.extend(tokens);
                    removed_paths.push(p.clone());
                }
            }
            self.count("relay");
            last = Some((i, change));
        }
        let (t, _) = c.converge(settle)?;
        let mut wrong: Vec<String> = Vec::new();
        for (p, bytes) in saved {
            if let Err(why) = Change::Saved(p, bytes).arrived(&t) {
                wrong.push(why);
            }
        }
        for p in removed_paths {
            if let Err(why) = Change::Removed(p, removed.clone()).arrived(&t) {
                wrong.push(why);
            }
        }
        if wrong.is_empty() {
            Ok(rounds)
        } else {
            Err(format!("after the relay, not what was last made:\n{}", wrong.join("\n")))
        }
    }

    fn insert_line(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        let Some(rel) = self.rng.pick(&l.texts).cloned() else {
            return self.create_text(root, l);
        };
        let path = root.join(rel);
        let old = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = old.split_inclusive('\n').collect();
        let at = self.rng.below(lines.len() + 1);
        let tok = self.new_token();
        let mut new = String::with_capacity(old.len() + tok.len());
        for (i, line) in lines.iter().enumerate() {
            if i == at {
                new.push_str(&tok);
            }
            new.push_str(line);
            if i + 1 == lines.len() && !line.ends_with('\n') {
                new.push('\n');
            }
        }
        if at == lines.len() {
            new.push_str(&tok);
        }
        self.count("text insert");
        self.note(root, format_args!("insert {} at line {at} of {}", tok.trim(), path.display()));
        self.save(&path, new.as_bytes(), false)
    }

    fn append_line(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        use std::io::Write;
        let Some(rel) = self.rng.pick(&l.texts).cloned() else {
            return self.create_text(root, l);
        };
        let path = root.join(rel);
        let old = std::fs::read(&path)?;
        let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
        let tok = self.new_token();
        let line = if old.last().is_some_and(|&b| b != b'\n') { format!("\n{tok}") } else { tok };
        self.count("text append");
        self.note(root, format_args!("append {} to {}", line.trim(), path.display()));
        f.write_all(line.as_bytes())
    }

    fn create_text(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        // Now and then the same name on several nodes (CONTRACT: both survive).
        let name =
            if self.rng.chance(0.2) { format!("same{}.txt", self.rng.below(4)) } else { format!("t{}.txt", self.fresh()) };
        let path = root.join(self.some_dir(l)).join(name);
        if path.exists() {
            return self.insert_line(
                root,
                &Listing {
                    texts: vec![path.strip_prefix(root).expect("inside").to_owned()],
                    bins: vec![],
                    dirs: vec![],
                    files: vec![],
                },
            );
        }
        let tok = self.new_token();
        self.count("text create");
        self.note(root, format_args!("create {} with {}", path.display(), tok.trim()));
        self.save(&path, tok.as_bytes(), true)
    }

    fn delete_line(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        let Some(rel) = self.rng.pick(&l.texts).cloned() else {
            return Ok(());
        };
        let path = root.join(rel);
        let old = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = old.split_inclusive('\n').collect();
        if lines.is_empty() {
            return Ok(());
        }
        let at = self.rng.below(lines.len());
        self.supersede(lines[at].as_bytes());
        let new: String = lines.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, s)| *s).collect();
        self.count("text delete");
        self.note(root, format_args!("delete line {:?} of {}", lines[at].trim(), path.display()));
        self.save(&path, new.as_bytes(), false)
    }

    fn write_binary(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        let (path, file, create) = match self.rng.pick(&l.bins).cloned() {
            Some(rel) if self.rng.chance(0.7) => {
                let path = root.join(rel);
                let old = std::fs::read(&path)?;
                let Some((file, _)) = blob_header(&old) else {
                    return Ok(());
                };
                self.supersede(&old);
                (path, file, false)
            }
            _ => {
                let file = self.fresh();
                (root.join(self.some_dir(l)).join(format!("b{file}.bin")), file, true)
            }
        };
        let blob = self.fresh();
        let size = if self.rng.chance(0.05) { self.big_binary } else { 1 + self.rng.below(48 << 10) };
        let mut bytes = format!("FSYNCBIN {file} {blob}\n").into_bytes();
        bytes.push(0);
        bytes.extend(noise(size, blob.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        self.ledger.blobs.insert(blob, (file, false));
        self.count("binary write");
        self.note(root, format_args!("binary {file}/{blob} to {}", path.display()));
        self.save(&path, &bytes, create)
    }

    fn delete_file(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        let Some(rel) = self.rng.pick(&l.files).cloned() else {
            return Ok(());
        };
        let path = root.join(rel);
        self.count("delete file");
        self.note(root, format_args!("rm {}", path.display()));
        self.remove(root, &path)
    }

    fn rename_file(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        let Some(rel) = self.rng.pick(&l.files).cloned() else {
            return Ok(());
        };
        let ext = rel.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "lnk".into());
        let to = root.join(self.some_dir(l)).join(format!("r{}.{ext}", self.fresh()));
        self.count("rename file");
        self.note(root, format_args!("mv {} {}", rel.display(), to.display()));
        std::fs::rename(root.join(rel), to)
    }

    fn move_dir(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        let Some(rel) = self.rng.pick(&l.dirs).cloned() else {
            return self.make_dir(root, l);
        };
        let parent = self.some_dir(l);
        if parent.starts_with(&rel) || parent.components().count() > 2 {
            return Ok(());
        }
        self.count("move dir");
        let to = root.join(parent).join(format!("m{}", self.fresh()));
        self.note(root, format_args!("mv dir {} {}", rel.display(), to.display()));
        std::fs::rename(root.join(rel), to)
    }

    fn make_dir(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        let parent = self.some_dir(l);
        if parent.components().count() > 2 {
            return Ok(());
        }
        self.count("make dir");
        std::fs::create_dir(root.join(parent).join(format!("d{}", self.fresh())))
    }

    fn remove_dir(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        let Some(rel) = self.rng.pick(&l.dirs).cloned() else {
            return Ok(());
        };
        let dir = root.join(&rel);
        self.count("remove dir");
        self.note(root, format_args!("rm -r {}", dir.display()));
        self.remove(root, &dir)
    }

    /// A path changes kind, as `git checkout` across branches does: a file
    /// or link becomes a directory with a text file in it, a file becomes a
    /// link, a directory becomes a text file. What was there is superseded.
    fn change_kind(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        let from_dir = self.rng.chance(0.35);
        let Some(rel) = (if from_dir { self.rng.pick(&l.dirs) } else { self.rng.pick(&l.files) }).cloned() else {
            return Ok(());
        };
        let path = root.join(&rel);
        let was_file = std::fs::symlink_metadata(&path)?.is_file();
        self.count("kind change");
        self.remove(root, &path)?;
        if from_dir {
            let token = self.new_token();
            self.note(root, format_args!("{}: directory to a file, {}", rel.display(), token.trim()));
            std::fs::write(&path, token)
        } else if was_file && self.rng.chance(0.3) {
            let Some(target) = self.rng.pick(&l.texts).cloned() else { return std::fs::create_dir(&path) };
            self.note(root, format_args!("{}: file to a link", rel.display()));
            // Relative to the root, from where the link is: never leaving.
            let up = "../".repeat(rel.components().count().saturating_sub(1));
            std::os::unix::fs::symlink(format!("{up}{}", target.display()), &path)
        } else {
            std::fs::create_dir(&path)?;
            let token = self.new_token();
            self.note(root, format_args!("{}: to a directory with a file, {}", rel.display(), token.trim()));
            std::fs::write(path.join(format!("k{}.txt", self.fresh())), token)
        }
    }

    fn chmod(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        let Some(rel) = self.rng.pick(&l.texts).cloned() else {
            return Ok(());
        };
        let path = root.join(rel);
        let mut p = std::fs::metadata(&path)?.permissions();
        p.set_mode(p.mode() ^ 0o111);
        self.count("chmod");
        std::fs::set_permissions(&path, p)
    }

    fn symlink(&mut self, root: &Path, l: &Listing) -> std::io::Result<()> {
        let Some(target) = self.rng.pick(&l.texts).cloned() else {
            return Ok(());
        };
        // A link at the root to a file inside: relative, never leaving.
        let link = root.join(format!("l{}.lnk", self.fresh()));
        self.count("symlink");
        std::os::unix::fs::symlink(target, link)
    }
}

/// What the check found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub tokens_checked: usize,
    pub tokens_superseded: usize,
    pub blobs_checked: usize,
    pub blobs_excused: usize,
    pub lost: Vec<String>,
    pub doubled: Vec<String>,
}

/// Checks a converged tree against the ledger. `node` answers `fsync log`
/// and `fsync cat --at` (for binary history).
pub fn check(ledger: &Ledger, final_tree: &BTreeMap<String, Entry>, node: &Node, root: &Path) -> Verdict {
    let mut v = Verdict::default();
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut where_: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut bins: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (path, e) in final_tree {
        let Entry::File { bytes, .. } = e else {
            continue;
        };
        if let Some((file, _)) = blob_header(bytes) {
            bins.entry(file).or_default().push(path.clone());
        } else if let Ok(text) = std::str::from_utf8(bytes) {
            for t in tokens_in(text) {
                *seen.entry(t).or_default() += 1;
                where_.entry(t).or_default().push(path.clone());
            }
        }
    }
    for (&t, &superseded) in &ledger.tokens {
        let n = seen.get(&t).copied().unwrap_or(0);
        // A save by rename is an exchange: the replaced file is at the temp
        // name until the driver removes it a moment later. A scan in that
        // moment sees it moved there (and a new file saved in its place),
        // and a peer's edit of it, concurrent with that removal, keeps it
        // there (an edit beats a concurrent delete): a second copy, by the
        // rules, of what the user's save kept.
        let in_temp = where_.get(&t).is_some_and(|ps| ps.iter().any(|p| driver_temp(p)));
        if n > 1 && !(n == 2 && in_temp) {
            v.doubled.push(format!("tok-{t} appears {n} times: in {:?}", where_.get(&t)));
        }
        if superseded {
            v.tokens_superseded += 1;
        } else {
            v.tokens_checked += 1;
            if n == 0 {
                v.lost.push(format!("tok-{t} (text) is gone and no node that showed it deleted it"));
            }
        }
    }
    // Every version of every binary file left, from its history. Old
    // versions' chunks may still be arriving after the trees converged (the
    // soak leaves thousands): `cat --at` says "not arrived yet" until then.
    let fetching = history_fetched(node, Duration::from_secs(300));
    let mut history: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (file, paths) in &bins {
        for p in paths {
            let abs = root.join(p);
            let abs = abs.to_str().expect("utf-8");
            let out = node.run(&["log", abs, "--json"]);
            let Ok(log) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                continue;
            };
            for entry in log.as_array().into_iter().flatten() {
                let Some(version) = entry["version"].as_str() else {
                    continue;
                };
                let cat = node.run(&["cat", abs, "--at", version]);
                if let Some((f, b)) = blob_header(&cat.stdout) {
                    if f == *file {
                        history.entry(*file).or_default().insert(b);
                    }
                }
            }
        }
    }
    for (&blob, &(file, superseded)) in &ledger.blobs {
        if superseded {
            continue;
        }
        if !bins.contains_key(&file) && ledger.deleted_bins.contains(&file) {
            v.blobs_excused += 1;
            continue;
        }
        v.blobs_checked += 1;
        if !history.get(&file).is_some_and(|h| h.contains(&blob)) {
            v.lost.push(format!(
                "blob {blob} of binary file {file} is neither there nor in its history ({fetching} chunks still to fetch)"
            ));
        }
    }
    v
}

/// Waits (at most `limit`) until `node` has every chunk its history refers
/// to; returns how many it still lacks.
fn history_fetched(node: &Node, limit: Duration) -> u64 {
    let start = Instant::now();
    loop {
        // No daemon answering: nothing to wait for.
        let Some(status) = node.try_status() else { return 0 };
        let left: u64 =
            status["folders"].as_array().map_or(0, |fs| fs.iter().filter_map(|f| f["chunks_to_fetch"].as_u64()).sum());
        if left == 0 || start.elapsed() > limit {
            return left;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
