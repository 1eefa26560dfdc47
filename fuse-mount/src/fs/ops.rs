//! What the operations do to the folder: each takes the mount's state,
//! then the folder, and changes both together.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use fsync_core::chunks::{ChunkRef, Chunks};
use fsync_core::folder::{Content, EntryId, Folder, Kind};
use fsync_core::{AgentId, EventId};
use fuser::{Errno, FileAttr};

use crate::Backend;

use super::state::{Handle, LocalAttrs, OpenFile, State};
use super::{errno, join, name_of, now_ms, Inner, Inval, Job, O_APPEND};

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
    pub(super) fn wait_landed(&self, ino: Option<u64>) {
        let mut st = self.lock();
        while ino.map_or(!st.pending.is_empty(), |i| st.pending.contains_key(&i)) {
            st = self.landed.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in one operation must not take the whole mount down.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` with the state and the folder locked.
    pub(super) fn run<R>(&self, f: impl FnOnce(&mut State, &mut Folder, &mut Chunks) -> Result<R, Errno>) -> Result<R, Errno> {
        let mut st = self.lock();
        self.backend.with(|folder, chunks| f(&mut st, folder, chunks)).unwrap_or(Err(Errno::ENOENT))
    }

    pub(super) fn attr_of(&self, st: &mut State, f: &mut Folder, ino: u64) -> Result<FileAttr, Errno> {
        st.attr(f, self.uid, self.gid, self.mounted_at, ino)
    }

    /// The directory behind `parent` and the path of `name` in it.
    pub(super) fn child_path(st: &State, f: &mut Folder, parent: u64, name: &str) -> Result<String, Errno> {
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
    pub(super) fn entry(&self, st: &mut State, f: &mut Folder, parent: u64, name: &str) -> Result<FileAttr, Errno> {
        let path = Self::child_path(st, f, parent, name)?;
        let id = f.tree().lookup(&path).ok_or(Errno::ENOENT)?.id;
        let ino = st.ino(id);
        st.saw(f, parent, name, ino, id);
        self.attr_of(st, f, ino)
    }

    /// Commits an open file's buffer as one change; true if it changed.
    pub(super) fn commit(&self, ino: u64) -> Result<bool, Errno> {
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
    pub(super) fn take_in(
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
    pub(super) fn changed<R>(&self, r: Result<R, Errno>) -> Result<R, Errno> {
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

    pub(super) fn new_handle(st: &mut State, ino: u64, flags: i32) -> u64 {
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
    pub(super) fn load(st: &mut State, f: &Folder, chunks: &Chunks, ino: u64, id: EntryId, empty: bool) -> Result<(), Errno> {
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
    pub(super) fn new_file(
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
    pub(super) fn remove_named(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let name = name_of(name)?;
        self.changed(self.run(|st, f, _| {
            let path = Self::child_path(st, f, parent, name)?;
            Self::remove(st, f, &path, dir)?;
            st.dir_changed(parent);
            Ok(())
        }))
    }

    /// Deletes what is at `path` for an unlink, rmdir or a rename over it.
    pub(super) fn remove(st: &mut State, f: &mut Folder, path: &str, dir: bool) -> Result<(), Errno> {
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
