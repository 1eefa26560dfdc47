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
//! HOME/http.token   the key to the daemon's HTTP front end (owner-only)
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
    /// The HTTP front end's access token.
    pub fn token_path(&self) -> PathBuf {
        self.dir.join("http.token")
    }

    /// The HTTP access token, made (random, owner-only) the first time.
    pub fn http_token(&self) -> Result<String> {
        let path = self.token_path();
        match std::fs::read_to_string(&path) {
            Ok(t) if t.trim().len() >= 32 => return Ok(t.trim().to_owned()),
            Ok(_) => bail!("{} is damaged: remove it, and a new token is made at the next start", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        let mut bytes = [0u8; 24];
        random_bytes(&mut bytes)?;
        let token = data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase();
        match write_new(&path, format!("{token}\n").as_bytes(), 0o600) {
            Ok(()) => Ok(token),
            // Made meanwhile by another process: that one holds.
            Err(_) if path.exists() => self.http_token(),
            Err(e) => Err(e),
        }
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

/// Random bytes from the OS.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .context("cannot read random bytes from /dev/urandom")
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
