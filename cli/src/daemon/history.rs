//! History commands that change the folder: restore, resume what the
//! guard held, and views of the past mounted read-only.

// The loop's state and imports are this module's too.
use super::*;

impl Daemon {
    /// `fsync mount --at`: mounts folder `folder` as it was before
    /// `before`, read-only, until unmounted or the daemon stops.
    pub(super) fn mount_past(&mut self, folder: &str, mountpoint: &str, before: u64) -> Result<Vec<u8>> {
        let i = self.locals.iter().position(|l| l.name == folder).ok_or_else(|| anyhow!("no folder named {folder:?}"))?;
        let point = PathBuf::from(mountpoint);
        if !point.is_absolute() {
            bail!("{mountpoint}: give the mount point as an absolute path");
        }
        if self.past.iter().any(|m| point.canonicalize().is_ok_and(|p| p == m.mountpoint())) {
            bail!("{mountpoint} already shows a past state; unmount it first (`umount {mountpoint}`)");
        }
        // Chunks still in memory only are written to the store first: the
        // view reads binary content from there.
        self.persist(i);
        let source = self.store.chunk_source();
        let agent = self.agent;
        let past = self
            .read(folder, |s| crate::past::Past::of(&mut s.folder, &s.chunks, source, before, agent))
            .ok_or_else(|| anyhow!("no folder named {folder:?}"))??;
        let entries = past.entries();
        let options = fuse_mount::MountOptions {
            fsname: format!("fsync:{folder}@{}", crate::query::format_time(before)),
            space: self.home.dir.clone(),
            read_only: true,
        };
        let m = tokio::task::block_in_place(|| fuse_mount::mount(past, &point, options))?;
        let shown = m.mountpoint().display().to_string();
        tracing::info!(folder, mountpoint = %shown, before, entries, "past view mounted");
        self.past.push(m);
        Ok(format!(
            "{folder} as it was before {}: {entries} entries, read-only at {shown}; `umount {shown}` ends it\n",
            crate::query::format_time(before)
        )
        .into_bytes())
    }
}

impl Daemon {
    /// `fsync resume`: lets the held deletions through, here (a scan makes
    /// them) and from peers (a write-back removes them).
    pub(super) fn resume(&mut self, folder: &str) -> Result<Vec<u8>> {
        let i = self.locals.iter().position(|l| l.name == folder).ok_or_else(|| anyhow!("no folder named {folder:?}"))?;
        if let Some(e) = &self.locals[i].stopped {
            bail!("folder {folder} is stopped ({e}); nothing is deleted until it is back");
        }
        let (here, peers) = (self.locals[i].held_here.len(), self.locals[i].held_from_peers.len());
        if here + peers == 0 {
            return Ok(format!("nothing is held in {folder}\n").into_bytes());
        }
        self.locals[i].index.guard.open = true;
        if here > 0 {
            self.scan(i, None);
        }
        self.locals[i].dirty.all();
        self.write(i);
        self.locals[i].index.guard.open = false;
        let l = &self.locals[i];
        let left = l.held_here.len() + l.held_from_peers.len();
        tracing::info!(folder, here, peers, left, "held deletions let through");
        let mut out = format!("let through {here} deletion(s) made here and {peers} from peers\n");
        if left > 0 {
            out.push_str(&format!("{left} path(s) could not be deleted yet; see `fsync status`\n"));
        }
        Ok(out.into_bytes())
    }
}

impl Daemon {
    /// Brings a path back as new changes (see `Folder::restore`), answered
    /// once they are saved: peers get them, and the write-back puts them on
    /// disk, as for any change.
    pub(super) fn restore(&mut self, folder: &str, path: &str, at: Option<&str>, before: Option<u64>) -> Result<Vec<u8>> {
        let i = self.locals.iter().position(|l| l.name == folder).ok_or_else(|| anyhow!("no folder named {folder:?}"))?;
        let point = match (at, before) {
            (Some(_), Some(_)) => bail!("give --at or --before, not both"),
            (Some(v), None) => RestorePoint::Version(crate::query::parse_version(v)?),
            (None, Some(t)) => RestorePoint::Before(t),
            (None, None) => RestorePoint::BeforeDeletion,
        };
        // Deletions found here and held are still in the folder: putting
        // them back is writing them again (the history restore then has
        // nothing to do for them).
        let l = &mut self.locals[i];
        let held: Vec<String> = l.held_here.iter().filter(|p| fsync_core::folder::within(p, path)).cloned().collect();
        for p in &held {
            l.index.forget(p);
            l.held_here.remove(p);
        }
        if !held.is_empty() {
            l.dirty.all();
            self.write(i);
            tracing::info!(folder, put_back = held.len(), "held deletions put back");
        }
        let now = now_ms();
        let done = self
            .edit(folder, |s| {
                let FolderState { folder, chunks } = s;
                folder.restore(path, point, now, &|c: &ChunkRef| chunks.has(&c.hash))
            })
            .ok_or_else(|| anyhow!("no folder named {folder:?}"))?;
        let done = match done {
            Ok(d) => d,
            Err(RestoreError::Exists(_)) if !held.is_empty() => Default::default(),
            Err(e) => return Err(e.into()),
        };
        self.persist(i);
        if let Some(e) = &self.store_error {
            bail!("restored, but not saved yet ({e}); it is saved once the store works again");
        }
        let shown = |p: &str| if p.is_empty() { "the folder".to_owned() } else { p.to_owned() };
        tracing::info!(folder, path = %shown(path), restored = done.restored.len(), skipped = done.skipped.len(), "restored");
        let mut out = String::new();
        if !held.is_empty() {
            out.push_str(&format!("put back {} path(s) whose deletion was held\n", held.len()));
        }
        if !done.restored.is_empty() || held.is_empty() {
            out.push_str(&format!("restored {} path(s) of {}\n", done.restored.len(), shown(path)));
        }
        for (p, why) in &done.skipped {
            out.push_str(&format!("left {p} as it is: {why}\n"));
        }
        Ok(out.into_bytes())
    }
}
