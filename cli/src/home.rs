//! A node's home: everything of one node lives in one directory, so several
//! nodes can run side by side on one machine.
//!
//! ```text
//! HOME/cert.der     the self-signed certificate
//! HOME/key.der      its private key (PKCS#8, owner-only)
//! HOME/config.toml  folders and peers
//! HOME/invites.toml open invitations (owner-only)
//! HOME/store.redb   the durable store
//! HOME/daemon.lock  held by the running daemon
//! HOME/control.sock the running daemon's control socket (owner-only)
//! ```

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use transport::Identity;

use crate::config::Config;

/// The paths of one node's home.
#[derive(Clone, Debug)]
pub struct Home {
    /// The directory.
    pub dir: PathBuf,
}

impl Home {
    /// `--home`/`FSYNC_HOME` if given, else the platform's data directory.
    pub fn locate(explicit: Option<PathBuf>) -> Result<Home> {
        let dir = match explicit {
            Some(d) => d,
            None => directories::ProjectDirs::from("", "", "fsync")
                .map(|p| p.data_dir().to_owned())
                .context("no home directory found: pass --home DIR or set FSYNC_HOME")?,
        };
        Ok(Home { dir })
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.der")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.der")
    }
    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// The daemon's control socket.
    pub fn control_path(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    /// Open invitations.
    pub fn invites_path(&self) -> PathBuf {
        self.dir.join("invites.toml")
    }
    /// The store file.
    pub fn store_path(&self) -> PathBuf {
        self.dir.join("store.redb")
    }

    /// The identity, creating it (and the home) the first time.
    pub fn init(&self) -> Result<Identity> {
        if self.cert().exists() {
            return self.identity();
        }
        std::fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", self.dir.display()))?;
        let id = Identity::generate()?;
        write_new(&self.key(), id.key_der(), 0o600)?;
        write_new(&self.cert(), id.cert_der(), 0o644)?;
        if !self.config_path().exists() {
            Config::default().save(&self.config_path())?;
        }
        Ok(id)
    }

    /// The identity of an initialised home.
    pub fn identity(&self) -> Result<Identity> {
        let read = |p: &Path| -> Result<Vec<u8>> {
            match std::fs::read(p) {
                Ok(b) => Ok(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    bail!("{} is not an fsync home yet: run `fsync --home {} init`", self.dir.display(), self.dir.display())
                }
                Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
            }
        };
        let (cert, key) = (read(&self.cert())?, read(&self.key())?);
        Identity::from_der(cert, key).context("the identity files in the home are damaged")
    }

    /// The config of an initialised home.
    pub fn config(&self) -> Result<Config> {
        self.identity()?;
        Config::load(&self.config_path())
    }
}

/// Writes a file that must not exist yet, durably, with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
