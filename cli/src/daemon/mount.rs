//! The FUSE mount as one more client of the loop: its changes are saved in
//! groups, and an fsync through it is answered once durable.

// The loop's state and imports are this module's too.
use super::*;

/// A folder can be mounted when it is shared, and the mount point is not
/// inside a watched folder (the watcher would read the mount back).
pub(super) fn check_mount(config: &Config, name: &str, point: &std::path::Path) -> Result<()> {
    if config.folders.iter().all(|f| f.name != name) {
        bail!("no folder named {name:?}; share it first with `fsync folder add {name} PATH` or `fsync join`");
    }
    let abs = std::path::absolute(point).with_context(|| format!("{}", point.display()))?;
    for f in config.folders.iter().filter(|f| f.name != name) {
        if abs.starts_with(&f.path) {
            bail!("{} is inside folder {:?} ({}); mount it somewhere else", abs.display(), f.name, f.path.display());
        }
    }
    Ok(())
}

impl fuse_mount::Backend for MountBackend {
    fn with<R>(&self, f: impl FnOnce(&mut Folder, &mut Chunks) -> R) -> Option<R> {
        with_state(&self.state, |s| f(&mut s.folder, &mut s.chunks))
    }
    fn changed(&self) {
        let _ = self.tx.send(MountMsg::Changed);
    }
    fn persist(&self) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.tx.send(MountMsg::Persist(tx)).map_err(|_| "the daemon is stopping".to_owned())?;
        rx.recv().map_err(|_| "the daemon is stopping".to_owned())?
    }
}

impl Mount {
    pub(super) fn save(&mut self, d: &mut Daemon) {
        d.persist(self.i);
        self.saved = Instant::now();
        self.due = None;
    }
}
