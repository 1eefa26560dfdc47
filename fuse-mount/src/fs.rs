//! The filesystem operations.
//!
//! Lock order: the mount's state, then the folder (through the backend).
//! Peers take only the folder; kernel notifications take both, from their
//! own thread, and are sent with neither held.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fsync_core::chunks::{ChunkRef, Chunks};
use fsync_core::folder::{validate_name, Content, EntryId, Folder, FolderError, Kind, MAX_NAME};
use fsync_core::{AgentId, EventId};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::Backend;

/// How long the kernel may cache attributes and names. Remote changes
/// invalidate them at once; this bounds what a missed notification costs.
const TTL: Duration = Duration::from_secs(1);
/// Rendered text kept for reads, in bytes, before the cache starts over.
const CACHE_MAX: usize = 256 << 20;
const ROOT: u64 = 1;
/// `O_APPEND` on Linux.
const O_APPEND: i32 = 0o2000;
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;

/// Something the kernel must forget.
#[derive(Debug)]
pub(crate) enum Inval {
    /// An inode's content and attributes.
    Inode(u64),
    /// A name in a directory.
    Entry(u64, String),
}

/// The filesystem, as handed to fuser.
pub(crate) struct Fs<B: Backend>(pub(crate) Arc<Inner<B>>);

pub(crate) struct Inner<B: Backend> {
    backend: B,
    state: Mutex<State>,
    /// Signalled when a pending commit lands.
    landed: std::sync::Condvar,
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    uid: u32,
    gid: u32,
    space: PathBuf,
    mounted_at: SystemTime,
}

#[derive(Default)]
struct State {
    ino_of: HashMap<EntryId, u64>,
    id_of: HashMap<u64, EntryId>,
    next_ino: u64,
    /// Files open, by inode.
    open: HashMap<u64, OpenFile>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    /// Directory listings, by handle (readdir serves a snapshot).
    listings: HashMap<u64, Vec<(u64, FileType, String)>>,
    /// Attributes set through the mount that the model does not carry.
    local: HashMap<u64, LocalAttrs>,
    /// Names the kernel was given, and the version it saw: what to
    /// invalidate when peers change them.
    seen: HashMap<u64, Seen>,
    /// Other devices' changes as of the last refresh.
    remote: BTreeMap<AgentId, u64>,
    cache: HashMap<u64, Cached>,
    cache_bytes: usize,
    /// Big files closed but still being chunked (see [`Inner::commit`]):
    /// what readers see meanwhile.
    pending: HashMap<u64, Arc<Vec<u8>>>,
}

/// A big binary file to chunk and record off the request thread.
pub(crate) struct Job {
    ino: u64,
    id: EntryId,
    data: Arc<Vec<u8>>,
}

struct OpenFile {
    handles: usize,
    /// The content being written (loaded at the first write).
    data: Option<Vec<u8>>,
    /// The version `data` started from.
    base: Vec<EventId>,
    dirty: bool,
    /// Unlinked through the mount while open: readable through its
    /// handles, never committed.
    unlinked: bool,
}

struct Handle {
    append: bool,
}

#[derive(Default, Clone, Copy)]
struct LocalAttrs {
    mtime: Option<SystemTime>,
    atime: Option<SystemTime>,
    ctime: Option<SystemTime>,
    perm: Option<u16>,
    uid: Option<u32>,
    gid: Option<u32>,
}

struct Seen {
    parent: u64,
    name: String,
    path: String,
    stamp: usize,
}

/// A file's content, as of one version (`stamp`: its history's length).
enum Cached {
    Bytes(usize, Arc<Vec<u8>>),
    Chunks(usize, Arc<Vec<ChunkRef>>, Vec<u64>),
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn errno(e: &FolderError) -> Errno {
    match e {
        FolderError::NotFound(_) | FolderError::UnknownEntry(_) => Errno::ENOENT,
        FolderError::Exists(_) => Errno::EEXIST,
        FolderError::NotADirectory(_) => Errno::ENOTDIR,
        _ => Errno::EINVAL,
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// A name from the kernel, as the model accepts it.
fn name_of(name: &OsStr) -> Result<&str, Errno> {
    let s = name.to_str().ok_or(Errno::EINVAL)?;
    if s.len() > MAX_NAME {
        return Err(Errno::ENAMETOOLONG);
    }
    validate_name(s).map_err(|_| Errno::EINVAL)?;
    Ok(s)
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn when(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// The largest file the mount takes: open files are buffered in memory
/// until they are closed, so a size beyond this (a truncate to a
/// petabyte, a write at a huge offset) is refused with `EFBIG` instead of
/// taking the daemon's memory.
pub(crate) const MAX_FILE: u64 = 4 << 30;

/// Grows or shrinks an open file's buffer to `size` (new bytes are zeros):
/// `EFBIG` beyond [`MAX_FILE`], `ENOSPC` when memory cannot be had (never
/// an abort).
fn resize(buf: &mut Vec<u8>, size: u64) -> Result<(), Errno> {
    if size > MAX_FILE {
        return Err(Errno::EFBIG);
    }
    let size = usize::try_from(size).map_err(|_| Errno::EFBIG)?;
    if size > buf.len() {
        buf.try_reserve_exact(size - buf.len()).map_err(|_| Errno::ENOSPC)?;
    }
    buf.resize(size, 0);
    Ok(())
}

/// Copies `[offset, offset + size)` of a file made of `refs` (starting at
/// `starts`) out of the chunks.
fn read_chunks(refs: &[ChunkRef], starts: &[u64], chunks: &Chunks, offset: u64, size: usize) -> Result<Vec<u8>, Errno> {
    let total = starts.last().copied().unwrap_or(0) + refs.last().map_or(0, |r| u64::from(r.len));
    let end = offset.saturating_add(size as u64).min(total);
    let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
    let mut i = starts.partition_point(|&s| s <= offset).saturating_sub(1);
    let mut pos = offset;
    while pos < end {
        let (Some(r), Some(&start)) = (refs.get(i), starts.get(i)) else { break };
        let bytes = fsync_core::chunks::ChunkStore::get(chunks, &r.hash).ok_or(Errno::EIO)?;
        // A chunk whose bytes are not the length its reference says (a
        // peer that lied) is an I/O error, not a panic.
        if bytes.len() as u64 != u64::from(r.len) {
            tracing::warn!("a chunk's length differs from its reference: the read fails");
            return Err(Errno::EIO);
        }
        let from = usize::try_from(pos - start).map_err(|_| Errno::EIO)?;
        let to = usize::try_from(end - start).map_err(|_| Errno::EIO)?.min(bytes.len());
        out.extend_from_slice(bytes.get(from..to).ok_or(Errno::EIO)?);
        pos = start + to as u64;
        i += 1;
    }
    Ok(out)
}

impl State {
    fn ino(&mut self, id: EntryId) -> u64 {
        if let Some(i) = self.ino_of.get(&id) {
            return *i;
        }
        if self.next_ino <= ROOT {
            self.next_ino = ROOT + 1;
        }
        let i = self.next_ino;
        self.next_ino += 1;
        self.ino_of.insert(id, i);
        self.id_of.insert(i, id);
        i
    }

    /// The entry behind an inode (`None`: the root).
    fn id(&self, ino: u64) -> Result<Option<EntryId>, Errno> {
        if ino == ROOT {
            return Ok(None);
        }
        self.id_of.get(&ino).copied().map(Some).ok_or(Errno::ENOENT)
    }

    fn drop_cache(&mut self, ino: u64) {
        if let Some(Cached::Bytes(_, b)) = self.cache.remove(&ino) {
            self.cache_bytes = self.cache_bytes.saturating_sub(b.len());
        }
    }

    /// The text of a text file, rendered once per version.
    fn text(&mut self, f: &Folder, ino: u64, id: EntryId) -> Result<Arc<Vec<u8>>, Errno> {
        let doc = f.doc(id).ok_or(Errno::ENOENT)?;
        let stamp = doc.oplog().len();
        if let Some(Cached::Bytes(s, b)) = self.cache.get(&ino) {
            if *s == stamp {
                return Ok(b.clone());
            }
        }
        self.drop_cache(ino);
        let b = Arc::new(doc.text().into_bytes());
        if self.cache_bytes + b.len() > CACHE_MAX {
            self.cache.clear();
            self.cache_bytes = 0;
        }
        self.cache_bytes += b.len();
        self.cache.insert(ino, Cached::Bytes(stamp, b.clone()));
        Ok(b)
    }

    /// A binary file's chunks and where each starts.
    fn chunk_map(&mut self, f: &Folder, ino: u64, id: EntryId, refs: &[ChunkRef]) -> (Arc<Vec<ChunkRef>>, Vec<u64>) {
        let stamp = f.doc(id).map_or(0, |d| d.oplog().len());
        if let Some(Cached::Chunks(s, r, starts)) = self.cache.get(&ino) {
            if *s == stamp {
                return (r.clone(), starts.clone());
            }
        }
        let mut starts = Vec::with_capacity(refs.len());
        let mut at = 0u64;
        for r in refs {
            starts.push(at);
            at += u64::from(r.len);
        }
        let r = Arc::new(refs.to_vec());
        self.drop_cache(ino);
        self.cache.insert(ino, Cached::Chunks(stamp, r.clone(), starts.clone()));
        (r, starts)
    }

    /// The whole current content of a file.
    fn content(&mut self, f: &Folder, chunks: &Chunks, ino: u64, id: EntryId) -> Result<Vec<u8>, Errno> {
        match &f.state(id).ok_or(Errno::ENOENT)?.content {
            Content::Text => Ok(self.text(f, ino, id)?.to_vec()),
            Content::Binary { chunks: refs, .. } => fsync_core::chunks::assemble(refs, chunks).ok_or(Errno::EIO),
            Content::Link(_) | Content::None => Err(Errno::EINVAL),
        }
    }

    fn size(&mut self, f: &Folder, ino: u64, id: EntryId) -> Result<u64, Errno> {
        if let Some(d) = self.open.get(&ino).and_then(|o| o.data.as_ref()) {
            return Ok(d.len() as u64);
        }
        if let Some(d) = self.pending.get(&ino) {
            return Ok(d.len() as u64);
        }
        Ok(match &f.state(id).ok_or(Errno::ENOENT)?.content {
            Content::Text => self.text(f, ino, id)?.len() as u64,
            Content::Binary { size, .. } => *size,
            Content::Link(t) => t.len() as u64,
            Content::None => 4096,
        })
    }

    fn stamp(f: &Folder, id: EntryId) -> usize {
        f.doc(id).map_or(0, |d| d.oplog().len())
    }

    /// Remembers that the kernel knows `ino` as `name` in `parent`.
    fn saw(&mut self, f: &mut Folder, parent: u64, name: &str, ino: u64, id: EntryId) {
        let path = f.tree().path_of(id).unwrap_or_default().to_owned();
        let stamp = Self::stamp(f, id);
        self.seen.insert(ino, Seen { parent, name: name.to_owned(), path, stamp });
    }

    /// A directory whose entries changed through the mount: its times move
    /// (POSIX: a created, removed or renamed entry updates its directory's
    /// mtime and ctime).
    fn dir_changed(&mut self, dir: u64) {
        let now = SystemTime::now();
        let mut l = self.local.get(&dir).copied().unwrap_or_default();
        l.mtime = Some(now);
        l.ctime = Some(now);
        self.local.insert(dir, l);
    }

    /// A new entry belongs to whoever made it (kept here, as ownership is
    /// not synced), when that is not the mount's owner.
    fn made_by(&mut self, ino: u64, owner: (u32, u32), mount: (u32, u32)) {
        if owner != mount {
            let mut l = self.local.get(&ino).copied().unwrap_or_default();
            l.uid = Some(owner.0);
            l.gid = Some(owner.1);
            self.local.insert(ino, l);
        }
    }

    /// After a local change to `ino`: the kernel already knows it.
    fn touched(&mut self, f: &mut Folder, ino: u64, id: EntryId) {
        if self.seen.contains_key(&ino) {
            match f.tree().path_of(id).map(str::to_owned) {
                Some(p) => {
                    let (parent, name) = match p.rsplit_once('/') {
                        Some((dir, name)) => (f.tree().lookup(dir).map(|n| n.id).map_or(ROOT, |d| self.ino(d)), name),
                        None => (ROOT, p.as_str()),
                    };
                    self.saw(f, parent, name, ino, id);
                }
                None => {
                    if let Some(s) = self.seen.get_mut(&ino) {
                        s.stamp = Self::stamp(f, id);
                    }
                }
            }
        }
        let mut l = self.local.get(&ino).copied().unwrap_or_default();
        l.ctime = Some(SystemTime::now());
        self.local.insert(ino, l);
        self.drop_cache(ino);
    }

    fn attr(&mut self, f: &mut Folder, uid: u32, gid: u32, root_time: SystemTime, ino: u64) -> Result<FileAttr, Errno> {
        let local = self.local.get(&ino).copied().unwrap_or_default();
        let (kind, size, mtime, default_perm, nlink) = match self.id(ino)? {
            None => {
                let subdirs = f.tree().children("").iter().filter(|n| n.kind == Kind::Dir).count();
                (FileType::Directory, 4096, root_time, 0o755, 2 + subdirs as u32)
            }
            Some(id) => {
                let st = f.state(id).ok_or(Errno::ENOENT)?.clone();
                let last = f.doc(id).map_or(0, |d| d.oplog().time_of(d.oplog().len().saturating_sub(1)));
                let size = self.size(f, ino, id)?;
                let unlinked = self.open.get(&ino).is_some_and(|o| o.unlinked) || !st.alive;
                let (perm, nlink) = match st.kind {
                    Kind::Dir => {
                        let subdirs = match f.tree().path_of(id).map(str::to_owned) {
                            Some(p) => f.tree().children(&p).iter().filter(|n| n.kind == Kind::Dir).count(),
                            None => 0,
                        };
                        (0o755, 2 + subdirs as u32)
                    }
                    Kind::Symlink => (0o777, 1),
                    Kind::File => (if st.exec { 0o755 } else { 0o644 }, u32::from(!unlinked)),
                };
                (file_type(st.kind), size, time_of(last), perm, nlink)
            }
        };
        let mut perm = local.perm.unwrap_or(default_perm);
        if kind == FileType::RegularFile && local.perm.is_some() {
            // The executable bit is the model's (a peer may have changed it).
            let exec = default_perm & 0o100 != 0;
            perm = if exec { perm | 0o100 } else { perm & !0o111 };
        }
        let mtime = local.mtime.unwrap_or(mtime);
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: local.atime.unwrap_or(mtime),
            mtime,
            ctime: local.ctime.map_or(mtime, |c| c.max(mtime)),
            crtime: mtime,
            kind,
            perm,
            nlink,
            uid: local.uid.unwrap_or(uid),
            gid: local.gid.unwrap_or(gid),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl<B: Backend> Inner<B> {
    pub(crate) fn new(backend: B, uid: u32, gid: u32, space: PathBuf) -> Self {
        Inner {
            backend,
            state: Mutex::new(State::default()),
            landed: std::sync::Condvar::new(),
            jobs: Mutex::new(None),
            uid,
            gid,
            space,
            mounted_at: SystemTime::now(),
        }
    }

    /// Where big files go to be chunked (set once mounted).
    pub(crate) fn set_jobs(&self, tx: std::sync::mpsc::Sender<Job>) {
        *self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
    }

    /// Chunks a big file and records it: the hashing runs with no lock
    /// held, so the mount serves other requests meanwhile.
    pub(crate) fn run_job(&self, job: Job) {
        let refs: Vec<(ChunkRef, std::ops::Range<usize>)> = fsync_core::chunks::split(&job.data)
            .into_iter()
            .map(|(r, b)| {
                let start = b.as_ptr() as usize - job.data.as_ptr() as usize;
                (r, start..start + b.len())
            })
            .collect();
        let r = self.run(|st, f, chunks| {
            let latest = st.pending.get(&job.ino).is_some_and(|d| Arc::ptr_eq(d, &job.data));
            if !latest || f.state(job.id).is_none_or(|s| !s.alive) {
                // A newer version is on its way, or the file went: moot.
                return Ok(false);
            }
            for (r, range) in &refs {
                fsync_core::chunks::ChunkStore::put(chunks, r.hash, &job.data[range.clone()]);
            }
            let refs: Vec<ChunkRef> = refs.iter().map(|(r, _)| *r).collect();
            let same = matches!(f.state(job.id).map(|s| &s.content), Some(Content::Binary { chunks: c, .. }) if *c == refs);
            if !same {
                f.write_binary(job.id, refs, now_ms()).map_err(|e| errno(&e))?;
            }
            st.pending.remove(&job.ino);
            st.touched(f, job.ino, job.id);
            Ok(true)
        });
        {
            // Whatever happened, readers and fsync stop waiting on it.
            let mut st = self.lock();
            if st.pending.get(&job.ino).is_some_and(|d| Arc::ptr_eq(d, &job.data)) {
                st.pending.remove(&job.ino);
            }
        }
        self.landed.notify_all();
        match r {
            Ok(true) => self.backend.changed(),
            Ok(false) => {}
            Err(e) => tracing::error!("cannot record a big file written through the mount: {e:?}"),
        }
    }

    /// Waits until no big file (or `ino`'s) is still being chunked.
    fn wait_landed(&self, ino: Option<u64>) {
        let mut st = self.lock();
        while ino.map_or(!st.pending.is_empty(), |i| st.pending.contains_key(&i)) {
            st = self.landed.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in one operation must not take the whole mount down.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` with the state and the folder locked.
    fn run<R>(&self, f: impl FnOnce(&mut State, &mut Folder, &mut Chunks) -> Result<R, Errno>) -> Result<R, Errno> {
        let mut st = self.lock();
        self.backend.with(|folder, chunks| f(&mut st, folder, chunks)).unwrap_or(Err(Errno::ENOENT))
    }

    fn attr_of(&self, st: &mut State, f: &mut Folder, ino: u64) -> Result<FileAttr, Errno> {
        st.attr(f, self.uid, self.gid, self.mounted_at, ino)
    }

    /// The directory behind `parent` and the path of `name` in it.
    fn child_path(st: &State, f: &mut Folder, parent: u64, name: &str) -> Result<String, Errno> {
        let dir = match st.id(parent)? {
            None => String::new(),
            Some(id) => {
                let p = f.tree().path_of(id).ok_or(Errno::ENOENT)?.to_owned();
                if f.tree().lookup(&p).is_none_or(|n| n.kind != Kind::Dir) {
                    return Err(Errno::ENOTDIR);
                }
                p
            }
        };
        Ok(join(&dir, name))
    }

    /// Looks a name up: its inode and attributes.
    fn entry(&self, st: &mut State, f: &mut Folder, parent: u64, name: &str) -> Result<FileAttr, Errno> {
        let path = Self::child_path(st, f, parent, name)?;
        let id = f.tree().lookup(&path).ok_or(Errno::ENOENT)?.id;
        let ino = st.ino(id);
        st.saw(f, parent, name, ino, id);
        self.attr_of(st, f, ino)
    }

    /// Commits an open file's buffer as one change; true if it changed.
    fn commit(&self, ino: u64) -> Result<bool, Errno> {
        self.run(|st, f, chunks| {
            let Some(of) = st.open.get_mut(&ino) else {
                return Ok(false);
            };
            if !of.dirty {
                return Ok(false);
            }
            of.dirty = false;
            if of.unlinked {
                return Ok(false);
            }
            let (Some(data), base) = (of.data.take(), std::mem::take(&mut of.base)) else {
                return Ok(false);
            };
            let id = st.id(ino)?.ok_or(Errno::EISDIR)?;
            if data.len() as u64 > fsync_core::ingest::TEXT_MAX {
                // Too big to be text: binary, and chunking it takes a while.
                // Close returns now; readers see the data until it lands,
                // and fsync waits for it (as a page cache would write back).
                let data = Arc::new(data);
                let jobs = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                if let Some(tx) = jobs {
                    st.pending.insert(ino, data.clone());
                    if tx.send(Job { ino, id, data: data.clone() }).is_ok() {
                        return Ok(false);
                    }
                    st.pending.remove(&ino);
                }
                let data = Arc::try_unwrap(data).unwrap_or_else(|d| d.to_vec());
                return Self::take_in(st, f, chunks, ino, id, &base, data);
            }
            // Newer than any big version still being chunked: that one is moot.
            st.pending.remove(&ino);
            Self::take_in(st, f, chunks, ino, id, &base, data)
        })
    }

    /// Records `data` as file `ino`'s content, written from `base`.
    fn take_in(
        st: &mut State,
        f: &mut Folder,
        chunks: &mut Chunks,
        ino: u64,
        id: EntryId,
        base: &[EventId],
        data: Vec<u8>,
    ) -> Result<bool, Errno> {
        let exec = f.state(id).is_some_and(|s| s.exec);
        fsync_core::ingest::take_in_bytes(f, chunks, id, base, data, exec, now_ms()).map_err(|e| {
            tracing::error!("cannot record a write through the mount: {e}");
            Errno::EIO
        })?;
        st.touched(f, ino, id);
        Ok(true)
    }

    /// Commits every open file's buffer.
    pub(crate) fn commit_all(&self) -> bool {
        let dirty: Vec<u64> = self.lock().open.iter().filter(|(_, o)| o.dirty).map(|(i, _)| *i).collect();
        let mut changed = false;
        for ino in dirty {
            changed |= self.commit(ino).unwrap_or(false);
        }
        self.wait_landed(None);
        if changed {
            self.backend.changed();
        }
        changed
    }

    /// After a local change: save soon.
    fn changed<R>(&self, r: Result<R, Errno>) -> Result<R, Errno> {
        if r.is_ok() {
            self.backend.changed();
        }
        r
    }

    /// What the kernel must forget after peers' changes: inodes whose
    /// content changed and names that moved or went.
    pub(crate) fn invalidations(&self) -> Vec<Inval> {
        let mut st = self.lock();
        let st = &mut *st;
        self.backend
            .with(|f, _| {
                let me = f.agent();
                let remote: BTreeMap<AgentId, u64> =
                    f.version_vector().iter().filter(|(a, _)| **a != me).map(|(a, n)| (*a, *n)).collect();
                if remote == st.remote {
                    return Vec::new();
                }
                st.remote = remote;
                let mut out = Vec::new();
                let mut gone = Vec::new();
                let seen: Vec<(u64, String, usize, u64, String)> =
                    st.seen.iter().map(|(i, s)| (*i, s.path.clone(), s.stamp, s.parent, s.name.clone())).collect();
                for (ino, path, stamp, parent, name) in seen {
                    let Some(id) = st.id_of.get(&ino).copied() else {
                        continue;
                    };
                    let now_stamp = State::stamp(f, id);
                    if now_stamp != stamp {
                        st.drop_cache(ino);
                        out.push(Inval::Inode(ino));
                        if let Some(s) = st.seen.get_mut(&ino) {
                            s.stamp = now_stamp;
                        }
                    }
                    if f.tree().path_of(id) != Some(path.as_str()) {
                        out.push(Inval::Entry(parent, name));
                        gone.push(ino);
                    }
                }
                for ino in gone {
                    st.seen.remove(&ino);
                }
                out
            })
            .unwrap_or_default()
    }

    fn new_handle(st: &mut State, ino: u64, flags: i32) -> u64 {
        st.next_fh += 1;
        let fh = st.next_fh;
        st.handles.insert(fh, Handle { append: flags & O_APPEND != 0 });
        st.open
            .entry(ino)
            .or_insert(OpenFile { handles: 0, data: None, base: Vec::new(), dirty: false, unlinked: false })
            .handles += 1;
        fh
    }

    /// Loads the content to write into, once per open-and-write.
    fn load(st: &mut State, f: &Folder, chunks: &Chunks, ino: u64, id: EntryId, empty: bool) -> Result<(), Errno> {
        let loaded = st.open.get(&ino).is_some_and(|o| o.data.is_some());
        if loaded {
            return Ok(());
        }
        let data = match st.pending.get(&ino) {
            _ if empty => Vec::new(),
            Some(d) => d.to_vec(),
            None => st.content(f, chunks, ino, id)?,
        };
        let base = f.doc(id).map(|d| d.version_ids()).unwrap_or_default();
        let of =
            st.open.entry(ino).or_insert(OpenFile { handles: 0, data: None, base: Vec::new(), dirty: false, unlinked: false });
        of.data = Some(data);
        of.base = base;
        Ok(())
    }

    /// A new empty file for create and mknod (`mode` with the umask
    /// applied), made by `owner`: the executable bit goes to the model,
    /// other mode bits and the owner stay local.
    fn new_file(
        &self,
        st: &mut State,
        f: &mut Folder,
        parent: u64,
        name: &str,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<(u64, FileAttr), Errno> {
        let path = Self::child_path(st, f, parent, name)?;
        let id = f.create(&path, Kind::File, now_ms()).map_err(|e| errno(&e))?;
        if mode & 0o100 != 0 {
            f.set_exec(id, true, now_ms()).map_err(|e| errno(&e))?;
        }
        let ino = st.ino(id);
        let perm = (mode & 0o7777) as u16;
        if perm & !0o111 != 0o644 {
            st.local.insert(ino, LocalAttrs { perm: Some(perm), ..Default::default() });
        }
        st.made_by(ino, owner, (self.uid, self.gid));
        st.dir_changed(parent);
        Ok((ino, self.entry(st, f, parent, name)?))
    }

    /// unlink (`dir` false) or rmdir of `name` in `parent`.
    fn remove_named(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let name = name_of(name)?;
        self.changed(self.run(|st, f, _| {
            let path = Self::child_path(st, f, parent, name)?;
            Self::remove(st, f, &path, dir)?;
            st.dir_changed(parent);
            Ok(())
        }))
    }

    /// Deletes what is at `path` for an unlink, rmdir or a rename over it.
    fn remove(st: &mut State, f: &mut Folder, path: &str, dir: bool) -> Result<(), Errno> {
        let node = f.tree().lookup(path).ok_or(Errno::ENOENT)?.clone();
        match (node.kind == Kind::Dir, dir) {
            (true, false) => return Err(Errno::EISDIR),
            (false, true) => return Err(Errno::ENOTDIR),
            (true, true) if !f.tree().children(path).is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        f.delete(node.id, now_ms()).map_err(|e| errno(&e))?;
        let ino = st.ino(node.id);
        if let Some(o) = st.open.get_mut(&ino) {
            o.unlinked = true;
        }
        st.seen.remove(&ino);
        Ok(())
    }
}

fn reply_entry(reply: ReplyEntry, r: Result<FileAttr, Errno>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl<B: Backend> Filesystem for Fs<B> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Big requests make big sequential transfers cheap.
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let fs = &self.0;
        let r = name_of(name).and_then(|name| fs.run(|st, f, _| fs.entry(st, f, parent.0, name)));
        reply_entry(reply, r);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = &self.0;
        match fs.run(|st, f, _| fs.attr_of(st, f, ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fs = &self.0;
        let ino = ino.0;
        let mut changed = false;
        let r = fs.run(|st, f, chunks| {
            let id = st.id(ino)?;
            if let Some(id) = id {
                // Stamps ctime and drops cached content.
                st.touched(f, ino, id);
            }
            let mut l = st.local.get(&ino).copied().unwrap_or_default();
            l.ctime = Some(SystemTime::now());
            if let Some(m) = mode {
                l.perm = Some((m & 0o7777) as u16);
                let exec = m & 0o100 != 0;
                if let Some(id) = id.filter(|id| f.state(*id).is_some_and(|s| s.kind == Kind::File && s.exec != exec)) {
                    f.set_exec(id, exec, now_ms()).map_err(|e| errno(&e))?;
                    changed = true;
                }
            }
            l.uid = uid.or(l.uid);
            l.gid = gid.or(l.gid);
            l.atime = atime.map(when).or(l.atime);
            // A truncate is a write: it moves mtime unless one is given.
            l.mtime = mtime.map(when).or(size.map(|_| SystemTime::now())).or(l.mtime);
            st.local.insert(ino, l);
            if let Some(size) = size {
                let id = id.ok_or(Errno::EISDIR)?;
                if f.state(id).is_none_or(|s| s.kind != Kind::File) {
                    return Err(Errno::EISDIR);
                }
                Inner::<B>::load(st, f, chunks, ino, id, size == 0)?;
                let of = st.open.get_mut(&ino).ok_or(Errno::EIO)?;
                if let Some(d) = of.data.as_mut() {
                    resize(d, size)?;
                }
                of.dirty = true;
            }
            Ok(())
        });
        let r = r.and_then(|()| {
            // A truncate with nothing open (truncate(1)) is a change of its
            // own: commit it now.
            let unopened = fs.lock().open.get(&ino).is_some_and(|o| o.handles == 0);
            if unopened {
                changed |= fs.commit(ino)?;
                fs.lock().open.remove(&ino);
            }
            Ok(())
        });
        if changed {
            fs.backend.changed();
        }
        match r.and_then(|()| fs.run(|st, f, _| fs.attr_of(st, f, ino))) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.0.run(|st, f, _| {
            let id = st.id(ino.0)?.ok_or(Errno::EINVAL)?;
            match &f.state(id).ok_or(Errno::ENOENT)?.content {
                Content::Link(t) => Ok(t.clone().into_bytes()),
                _ => Err(Errno::EINVAL),
            }
        });
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, _rdev: u32, reply: ReplyEntry) {
        if mode & S_IFMT != S_IFREG && mode & S_IFMT != 0 {
            // Devices, pipes and sockets do not sync.
            return reply.error(Errno::EPERM);
        }
        let fs = &self.0;
        let r = name_of(name).and_then(|name| {
            fs.changed(
                fs.run(|st, f, _| fs.new_file(st, f, parent.0, name, mode & !umask, (req.uid(), req.gid())).map(|(_, a)| a)),
            )
        });
        reply_entry(reply, r);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let fs = &self.0;
        let r = name_of(name).and_then(|name| {
            fs.changed(fs.run(|st, f, _| {
                let path = Inner::<B>::child_path(st, f, parent.0, name)?;
                let id = f.create(&path, Kind::Dir, now_ms()).map_err(|e| errno(&e))?;
                let ino = st.ino(id);
                let perm = (mode & !umask & 0o7777) as u16;
                if perm != 0o755 {
                    st.local.insert(ino, LocalAttrs { perm: Some(perm), ..Default::default() });
                }
                st.made_by(ino, (req.uid(), req.gid()), (fs.uid, fs.gid));
                st.dir_changed(parent.0);
                fs.entry(st, f, parent.0, name)
            }))
        });
        reply_entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.0.remove_named(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.0.remove_named(parent.0, name, true));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let fs = &self.0;
        let r = name_of(link_name).and_then(|name| {
            let target = target.to_str().ok_or(Errno::EINVAL)?;
            fs.changed(fs.run(|st, f, _| {
                let path = Inner::<B>::child_path(st, f, parent.0, name)?;
                let id = f.create(&path, Kind::Symlink, now_ms()).map_err(|e| errno(&e))?;
                f.set_link(id, target, now_ms()).map_err(|e| errno(&e))?;
                let ino = st.ino(id);
                st.made_by(ino, (req.uid(), req.gid()), (fs.uid, fs.gid));
                st.dir_changed(parent.0);
                fs.entry(st, f, parent.0, name)
            }))
        });
        reply_entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // Swapping two names cannot be one change of the model.
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let fs = &self.0;
        let r = name_of(name).and_then(|name| {
            let newname = name_of(newname)?;
            fs.changed(fs.run(|st, f, _| {
                let from = Inner::<B>::child_path(st, f, parent.0, name)?;
                let to = Inner::<B>::child_path(st, f, newparent.0, newname)?;
                let src = f.tree().lookup(&from).ok_or(Errno::ENOENT)?.clone();
                if from == to {
                    return Ok(());
                }
                if to.starts_with(&format!("{from}/")) {
                    return Err(Errno::EINVAL);
                }
                if let Some(dst) = f.tree().lookup(&to).cloned() {
                    if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                        return Err(Errno::EEXIST);
                    }
                    // Kinds are checked before anything is removed: a
                    // directory goes only over an empty directory, anything
                    // else only over a non-directory.
                    match (src.kind == Kind::Dir, dst.kind == Kind::Dir) {
                        (true, false) => return Err(Errno::ENOTDIR),
                        (false, true) => return Err(Errno::EISDIR),
                        (dir, _) => Inner::<B>::remove(st, f, &dst.path, dir)?,
                    }
                }
                f.rename(src.id, &to, now_ms()).map_err(|e| errno(&e))?;
                let ino = st.ino(src.id);
                st.touched(f, ino, src.id);
                st.dir_changed(parent.0);
                st.dir_changed(newparent.0);
                Ok(())
            }))
        });
        reply_empty(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = self.0.run(|st, f, _| {
            if let Some(id) = st.id(ino.0)? {
                if f.state(id).is_some_and(|s| s.kind == Kind::Dir) {
                    return Err(Errno::EISDIR);
                }
            } else {
                return Err(Errno::EISDIR);
            }
            Ok(Inner::<B>::new_handle(st, ino.0, flags.0))
        });
        match r {
            // No FOPEN_KEEP_CACHE: each open sees the latest content
            // (close-to-open consistency).
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let ino = ino.0;
        let size = size as usize;
        let r = self.0.run(|st, f, chunks| {
            let slice = |b: &[u8]| {
                let from = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                b.get(from..from.saturating_add(size).min(b.len())).unwrap_or_default().to_vec()
            };
            if let Some(d) = st.open.get(&ino).and_then(|o| o.data.as_ref()) {
                return Ok(slice(d));
            }
            if let Some(d) = st.pending.get(&ino) {
                return Ok(slice(d));
            }
            let id = st.id(ino)?.ok_or(Errno::EISDIR)?;
            match f.state(id).ok_or(Errno::ENOENT)?.content.clone() {
                Content::Text => Ok(slice(&st.text(f, ino, id)?)),
                Content::Binary { chunks: refs, .. } => {
                    let (refs, starts) = st.chunk_map(f, ino, id, &refs);
                    read_chunks(&refs, &starts, chunks, offset, size).inspect_err(|_| {
                        tracing::warn!("read of a file whose content has not arrived yet");
                    })
                }
                Content::None => Err(Errno::EISDIR),
                Content::Link(_) => Err(Errno::EINVAL),
            }
        });
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let ino = ino.0;
        let r = self.0.run(|st, f, chunks| {
            let append = st.handles.get(&fh.0).ok_or(Errno::EBADF)?.append;
            let id = st.id(ino)?.ok_or(Errno::EISDIR)?;
            Inner::<B>::load(st, f, chunks, ino, id, false)?;
            let of = st.open.get_mut(&ino).ok_or(Errno::EBADF)?;
            let buf = of.data.as_mut().ok_or(Errno::EIO)?;
            let at = if append { buf.len() as u64 } else { offset };
            let end = at.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
            if (buf.len() as u64) < end {
                // A write past the end leaves a hole of zeros.
                resize(buf, end)?;
            }
            let at = usize::try_from(at).map_err(|_| Errno::EFBIG)?;
            buf.get_mut(at..at + data.len()).ok_or(Errno::EIO)?.copy_from_slice(data);
            of.dirty = true;
            let mut l = st.local.get(&ino).copied().unwrap_or_default();
            let now = SystemTime::now();
            l.mtime = Some(now);
            l.ctime = Some(now);
            st.local.insert(ino, l);
            Ok(data.len() as u32)
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let r = self.0.commit(ino.0).map(|changed| {
            if changed {
                self.0.backend.changed();
            }
        });
        reply_empty(reply, r);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = &self.0;
        let r = fs.commit(ino.0).map(|changed| {
            if changed {
                fs.backend.changed();
            }
        });
        let mut st = fs.lock();
        st.handles.remove(&fh.0);
        if let Some(o) = st.open.get_mut(&ino.0) {
            o.handles = o.handles.saturating_sub(1);
            if o.handles == 0 {
                st.open.remove(&ino.0);
            }
        }
        drop(st);
        reply_empty(reply, r);
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let fs = &self.0;
        let r = fs.commit(ino.0).and_then(|_| {
            fs.wait_landed(Some(ino.0));
            fs.backend.persist().map_err(|e| {
                tracing::error!("fsync through the mount failed: {e}");
                Errno::EIO
            })
        });
        reply_empty(reply, r);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = &self.0;
        let r = fs.run(|st, f, _| {
            let (path, parent_ino) = match st.id(ino.0)? {
                None => (String::new(), ROOT),
                Some(id) => {
                    let p = f.tree().path_of(id).ok_or(Errno::ENOENT)?.to_owned();
                    if f.tree().lookup(&p).is_none_or(|n| n.kind != Kind::Dir) {
                        return Err(Errno::ENOTDIR);
                    }
                    let parent = match p.rsplit_once('/') {
                        Some((d, _)) => f.tree().lookup(d).map(|n| n.id).map_or(ROOT, |d| st.ino(d)),
                        None => ROOT,
                    };
                    (p, parent)
                }
            };
            let mut list =
                vec![(ino.0, FileType::Directory, ".".to_owned()), (parent_ino, FileType::Directory, "..".to_owned())];
            let children: Vec<(EntryId, Kind, String)> = f
                .tree()
                .children(&path)
                .iter()
                .map(|n| (n.id, n.kind, n.path.rsplit('/').next().unwrap_or_default().to_owned()))
                .collect();
            for (id, kind, name) in children {
                let i = st.ino(id);
                list.push((i, file_type(kind), name));
            }
            st.next_fh += 1;
            let fh = st.next_fh;
            st.listings.insert(fh, list);
            Ok(fh)
        });
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let st = self.0.lock();
        let Some(list) = st.listings.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let fs = &self.0;
        let r = fs.run(|st, f, _| {
            let list = st.listings.get(&fh.0).ok_or(Errno::EBADF)?.clone();
            let mut out = Vec::new();
            for (i, (child, _, name)) in list.into_iter().enumerate().skip(offset as usize) {
                let Ok(attr) = fs.attr_of(st, f, child) else {
                    continue;
                };
                if name != "." && name != ".." {
                    if let Some(id) = st.id_of.get(&child).copied() {
                        st.saw(f, ino.0, &name, child, id);
                    }
                }
                out.push((i as u64 + 1, name, attr));
            }
            Ok(out)
        });
        match r {
            Ok(entries) => {
                for (off, name, attr) in entries {
                    if reply.add(attr.ino, off, &name, &TTL, &attr, Generation(0)) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.0.lock().listings.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let r = self.0.backend.persist().map_err(|_| Errno::EIO);
        reply_empty(reply, r);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The space of the disk that holds the store.
        match nix::sys::statvfs::statvfs(&self.0.space) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                MAX_NAME as u32,
                s.fragment_size() as u32,
            ),
            Err(_) => reply.statfs(0, 0, 0, 0, 0, 4096, MAX_NAME as u32, 4096),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Mode bits are checked by the kernel (default_permissions); here
        // only whether it exists.
        let r = self.0.run(|st, f, _| match st.id(ino.0)? {
            None => Ok(()),
            Some(id) => f.state(id).map(|_| ()).ok_or(Errno::ENOENT),
        });
        reply_empty(reply, r);
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let fs = &self.0;
        let r = name_of(name).and_then(|name| {
            fs.changed(fs.run(|st, f, _| {
                let (ino, attr) = fs.new_file(st, f, parent.0, name, mode & !umask, (req.uid(), req.gid()))?;
                Ok((attr, Inner::<B>::new_handle(st, ino, flags)))
            }))
        });
        match r {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}
