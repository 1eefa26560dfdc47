//! Mounting, unmounting, stale mounts, and telling the kernel about remote
//! changes.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

use crate::fs::{Fs, Inner, Inval};
use crate::Backend;

/// Why mounting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The mount point is not a usable directory.
    #[error("{0}: {1}")]
    MountPoint(PathBuf, String),
    /// FUSE is not available here.
    #[error("cannot mount at {0}: {1} (is /dev/fuse there, and are you root or in the fuse group?)")]
    Fuse(PathBuf, std::io::Error),
    /// Unmounting failed.
    #[error("cannot unmount {0}: {1}")]
    Unmount(PathBuf, String),
}

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Shown as the mount's source in `mount` and `df`.
    pub fsname: String,
    /// A directory on the disk that holds the store: `statfs` reports its
    /// free space.
    pub space: PathBuf,
    /// Mounted read-only: the kernel refuses every change (EROFS), so the
    /// backend is only read (a view of the past).
    pub read_only: bool,
}

/// A mounted folder. Dropping it unmounts.
pub struct Mounted<B: Backend> {
    inner: Arc<Inner<B>>,
    session: Option<BackgroundSession>,
    refresh: Option<mpsc::Sender<()>>,
    mountpoint: PathBuf,
}

impl<B: Backend> std::fmt::Debug for Mounted<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted").field("mountpoint", &self.mountpoint).finish()
    }
}

/// Unmounts what a crashed mount left at `mountpoint` (a FUSE mount whose
/// process is gone answers every access with "transport endpoint is not
/// connected"). Returns whether there was one.
fn clear_stale(mountpoint: &Path) -> Result<bool, MountError> {
    let abs = std::path::absolute(mountpoint).map_err(|e| MountError::MountPoint(mountpoint.to_owned(), e.to_string()))?;
    let listed = fuse_mounts().contains(&abs);
    let dead = matches!(std::fs::metadata(&abs), Err(e) if e.raw_os_error() == Some(107));
    if !listed && !dead {
        return Ok(false);
    }
    if listed && !dead {
        // A live mount (another fsync, or something else): not ours to take.
        return Err(MountError::MountPoint(abs, "something is already mounted here; unmount it first".into()));
    }
    nix::mount::umount2(&abs, nix::mount::MntFlags::MNT_DETACH).map_err(|e| MountError::Unmount(abs.clone(), e.to_string()))?;
    tracing::warn!(mountpoint = %abs.display(), "cleared a stale mount left by a crash");
    Ok(true)
}

/// FUSE mount points of this mount namespace.
fn fuse_mounts() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let point = pre.split(' ').nth(4)?;
            (fstype == "fuse" || fstype.starts_with("fuse.")).then(|| PathBuf::from(unescape(point)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts the backend's folder at `mountpoint` (an empty directory; a
/// stale mount left there by a crash is cleared first).
pub fn mount<B: Backend>(backend: B, mountpoint: &Path, options: MountOptions) -> Result<Mounted<B>, MountError> {
    clear_stale(mountpoint)?;
    let meta = std::fs::metadata(mountpoint).map_err(|e| MountError::MountPoint(mountpoint.to_owned(), e.to_string()))?;
    if !meta.is_dir() {
        return Err(MountError::MountPoint(mountpoint.to_owned(), "not a directory".into()));
    }
    // Mounted over, what is there would be hidden (at `/`, everything).
    let mut entries =
        std::fs::read_dir(mountpoint).map_err(|e| MountError::MountPoint(mountpoint.to_owned(), e.to_string()))?;
    if entries.next().is_some() {
        return Err(MountError::MountPoint(mountpoint.to_owned(), "not empty: mount on an empty directory".into()));
    }
    let mountpoint = mountpoint.canonicalize().map_err(|e| MountError::MountPoint(mountpoint.to_owned(), e.to_string()))?;
    use std::os::unix::fs::MetadataExt;
    let inner = Arc::new(Inner::new(backend, meta.uid(), meta.gid(), options.space.clone()));
    let mut config = Config::default();
    // Never AutoUnmount: as root it goes through fusermount and hangs in
    // fuser 0.18. Unmounting is ours (drop, signals, stale-mount check).
    config.mount_options = vec![
        MountOption::FSName(options.fsname.clone()),
        MountOption::Subtype("fsync".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ];
    if options.read_only {
        config.mount_options.push(MountOption::RO);
    }
    // Root mounts for everyone (permissions checked by the kernel against
    // the modes shown); a user's mount is the user's.
    config.acl = if nix::unistd::geteuid().is_root() { SessionACL::All } else { SessionACL::Owner };
    let session =
        fuser::spawn_mount(Fs(inner.clone()), &mountpoint, &config).map_err(|e| MountError::Fuse(mountpoint.clone(), e))?;
    // Big files are chunked by a thread of their own (see `Inner::commit`).
    let (jobs, queue) = mpsc::channel::<crate::fs::Job>();
    inner.set_jobs(jobs);
    let worker = Arc::downgrade(&inner);
    std::thread::Builder::new()
        .name("fsync-fuse-chunk".into())
        .spawn(move || {
            while let Ok(job) = queue.recv() {
                let Some(inner) = worker.upgrade() else {
                    return;
                };
                inner.run_job(job);
            }
        })
        .map_err(|e| MountError::Fuse(mountpoint.clone(), e))?;
    // Kernel notifications come from a thread of their own: the kernel may
    // wait on a request in flight while it handles one.
    let (tx, rx) = mpsc::channel::<()>();
    let notifier = session.notifier();
    let weak = Arc::downgrade(&inner);
    std::thread::Builder::new()
        .name("fsync-fuse-notify".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                while rx.try_recv().is_ok() {}
                let Some(inner) = weak.upgrade() else { return };
                for inval in inner.invalidations() {
                    let r = match &inval {
                        Inval::Inode(ino) => notifier.inval_inode(fuser::INodeNo(*ino), 0, 0),
                        Inval::Entry(parent, name) => notifier.inval_entry(fuser::INodeNo(*parent), std::ffi::OsStr::new(name)),
                    };
                    // ENOENT: the kernel had already forgotten it.
                    if let Err(e) = r {
                        if e.raw_os_error() != Some(2) {
                            tracing::debug!("kernel cache invalidation {inval:?}: {e}");
                        }
                    }
                }
            }
        })
        .map_err(|e| MountError::Fuse(mountpoint.clone(), e))?;
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    Ok(Mounted { inner, session: Some(session), refresh: Some(tx), mountpoint })
}

impl<B: Backend> Mounted<B> {
    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// False once the mount is gone (unmounted from outside, say): its
    /// session has ended.
    pub fn is_mounted(&self) -> bool {
        self.session.as_ref().is_some_and(|s| !s.guard.is_finished())
    }

    /// The folder changed (a peer's change landed): the kernel forgets
    /// what it cached of what changed, so readers see it at once.
    pub fn refresh(&self) {
        if let Some(tx) = &self.refresh {
            let _ = tx.send(());
        }
    }

    /// Commits what open files hold unflushed (before a shutdown); returns
    /// whether anything changed.
    pub fn commit_all(&self) -> bool {
        self.inner.commit_all()
    }

    /// Commits open files' buffers and unmounts; if programs still use the
    /// mount, it is detached (it goes away when they are done).
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.unmount_now()
    }

    fn unmount_now(&mut self) -> Result<(), MountError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        self.inner.commit_all();
        self.refresh = None;
        let r = match nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::empty()) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                tracing::warn!(mountpoint = %self.mountpoint.display(), "mount still in use: detaching it");
                nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH)
                    .map_err(|e| MountError::Unmount(self.mountpoint.clone(), e.to_string()))
            }
            Err(nix::errno::Errno::EINVAL) => Ok(()), // not mounted any more
            Err(e) => Err(MountError::Unmount(self.mountpoint.clone(), e.to_string())),
        };
        drop(session);
        if r.is_ok() {
            tracing::info!(mountpoint = %self.mountpoint.display(), "unmounted");
        }
        r
    }
}

impl<B: Backend> Drop for Mounted<B> {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_now() {
            tracing::error!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape(r"/plain"), "/plain");
    }
}
