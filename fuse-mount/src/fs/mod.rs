//! The filesystem as the kernel sees it: each FUSE request is checked,
//! done (the changes to the folder are in `ops`) and answered.
//!
//! Lock order: the mount's state, then the folder (through the backend).
//! Peers take only the folder; kernel notifications take both, from their
//! own thread, and are sent with neither held.

mod ops;
mod state;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fsync_core::chunks::{ChunkRef, Chunks};
use fsync_core::folder::{validate_name, Content, EntryId, FolderError, Kind, MAX_NAME};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::Backend;

use state::{file_type, when, LocalAttrs, State};

/// How long the kernel may cache attributes and names. Remote changes
/// invalidate them at once; this bounds what a missed notification costs.
const TTL: Duration = Duration::from_secs(1);

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

/// A big binary file to chunk and record off the request thread.
pub(crate) struct Job {
    ino: u64,
    id: EntryId,
    data: Arc<Vec<u8>>,
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
