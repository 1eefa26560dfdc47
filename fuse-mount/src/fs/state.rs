//! The mount's own tables: inode numbers, open files and their handles,
//! attributes the folder does not carry, what the kernel was shown, and
//! a bounded cache of file contents.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fsync_core::chunks::{ChunkRef, Chunks};
use fsync_core::folder::{Content, EntryId, Folder, Kind};
use fsync_core::{AgentId, EventId};
use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};

use super::ROOT;

/// Rendered text kept for reads, in bytes, before the cache starts over.
pub(super) const CACHE_MAX: usize = 256 << 20;

#[derive(Default)]
pub(super) struct State {
    pub(super) ino_of: HashMap<EntryId, u64>,
    pub(super) id_of: HashMap<u64, EntryId>,
    pub(super) next_ino: u64,
    /// Files open, by inode.
    pub(super) open: HashMap<u64, OpenFile>,
    pub(super) handles: HashMap<u64, Handle>,
    pub(super) next_fh: u64,
    /// Directory listings, by handle (readdir serves a snapshot).
    pub(super) listings: HashMap<u64, Vec<(u64, FileType, String)>>,
    /// Attributes set through the mount that the model does not carry.
    pub(super) local: HashMap<u64, LocalAttrs>,
    /// Names the kernel was given, and the version it saw: what to
    /// invalidate when peers change them.
    pub(super) seen: HashMap<u64, Seen>,
    /// Other devices' changes as of the last refresh.
    pub(super) remote: BTreeMap<AgentId, u64>,
    pub(super) cache: HashMap<u64, Cached>,
    pub(super) cache_bytes: usize,
    /// Big files closed but still being chunked (see [`Inner::commit`]):
    /// what readers see meanwhile.
    pub(super) pending: HashMap<u64, Arc<Vec<u8>>>,
}

pub(super) struct OpenFile {
    pub(super) handles: usize,
    /// The content being written (loaded at the first write).
    pub(super) data: Option<Vec<u8>>,
    /// The version `data` started from.
    pub(super) base: Vec<EventId>,
    pub(super) dirty: bool,
    /// Unlinked through the mount while open: readable through its
    /// handles, never committed.
    pub(super) unlinked: bool,
}

pub(super) struct Handle {
    pub(super) append: bool,
}

#[derive(Default, Clone, Copy)]
pub(super) struct LocalAttrs {
    pub(super) mtime: Option<SystemTime>,
    pub(super) atime: Option<SystemTime>,
    pub(super) ctime: Option<SystemTime>,
    pub(super) perm: Option<u16>,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
}

pub(super) struct Seen {
    pub(super) parent: u64,
    pub(super) name: String,
    pub(super) path: String,
    pub(super) stamp: usize,
}

/// A file's content, as of one version (`stamp`: its history's length).
pub(super) enum Cached {
    Bytes(usize, Arc<Vec<u8>>),
    Chunks(usize, Arc<Vec<ChunkRef>>, Vec<u64>),
}

pub(super) fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

pub(super) fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub(super) fn when(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl State {
    pub(super) fn ino(&mut self, id: EntryId) -> u64 {
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
    pub(super) fn id(&self, ino: u64) -> Result<Option<EntryId>, Errno> {
        if ino == ROOT {
            return Ok(None);
        }
        self.id_of.get(&ino).copied().map(Some).ok_or(Errno::ENOENT)
    }

    pub(super) fn drop_cache(&mut self, ino: u64) {
        if let Some(Cached::Bytes(_, b)) = self.cache.remove(&ino) {
            self.cache_bytes = self.cache_bytes.saturating_sub(b.len());
        }
    }

    /// The text of a text file, rendered once per version.
    pub(super) fn text(&mut self, f: &Folder, ino: u64, id: EntryId) -> Result<Arc<Vec<u8>>, Errno> {
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
    pub(super) fn chunk_map(&mut self, f: &Folder, ino: u64, id: EntryId, refs: &[ChunkRef]) -> (Arc<Vec<ChunkRef>>, Vec<u64>) {
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
    pub(super) fn content(&mut self, f: &Folder, chunks: &Chunks, ino: u64, id: EntryId) -> Result<Vec<u8>, Errno> {
        match &f.state(id).ok_or(Errno::ENOENT)?.content {
            Content::Text => Ok(self.text(f, ino, id)?.to_vec()),
            Content::Binary { chunks: refs, .. } => fsync_core::chunks::assemble(refs, chunks).ok_or(Errno::EIO),
            Content::Link(_) | Content::None => Err(Errno::EINVAL),
        }
    }

    pub(super) fn size(&mut self, f: &Folder, ino: u64, id: EntryId) -> Result<u64, Errno> {
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

    pub(super) fn stamp(f: &Folder, id: EntryId) -> usize {
        f.doc(id).map_or(0, |d| d.oplog().len())
    }

    /// Remembers that the kernel knows `ino` as `name` in `parent`.
    pub(super) fn saw(&mut self, f: &mut Folder, parent: u64, name: &str, ino: u64, id: EntryId) {
        let path = f.tree().path_of(id).unwrap_or_default().to_owned();
        let stamp = Self::stamp(f, id);
        self.seen.insert(ino, Seen { parent, name: name.to_owned(), path, stamp });
    }

    /// A directory whose entries changed through the mount: its times move
    /// (POSIX: a created, removed or renamed entry updates its directory's
    /// mtime and ctime).
    pub(super) fn dir_changed(&mut self, dir: u64) {
        let now = SystemTime::now();
        let mut l = self.local.get(&dir).copied().unwrap_or_default();
        l.mtime = Some(now);
        l.ctime = Some(now);
        self.local.insert(dir, l);
    }

    /// A new entry belongs to whoever made it (kept here, as ownership is
    /// not synced), when that is not the mount's owner.
    pub(super) fn made_by(&mut self, ino: u64, owner: (u32, u32), mount: (u32, u32)) {
        if owner != mount {
            let mut l = self.local.get(&ino).copied().unwrap_or_default();
            l.uid = Some(owner.0);
            l.gid = Some(owner.1);
            self.local.insert(ino, l);
        }
    }

    /// After a local change to `ino`: the kernel already knows it.
    pub(super) fn touched(&mut self, f: &mut Folder, ino: u64, id: EntryId) {
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

    pub(super) fn attr(
        &mut self,
        f: &mut Folder,
        uid: u32,
        gid: u32,
        root_time: SystemTime,
        ino: u64,
    ) -> Result<FileAttr, Errno> {
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
