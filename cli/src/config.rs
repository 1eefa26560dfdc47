//! The node's config file (`config.toml` in its home).
//!
//! ```toml
//! listen = "0.0.0.0:7420"     # optional; `fsync run --listen` overrides it
//! http = "127.0.0.1:7421"     # optional; the HTTP front end ("off": none)
//!
//! [[folder]]
//! name = "notes"
//! path = "/home/me/notes"
//! keep_days = 30              # optional; replaced binary versions' content
//!
//! [[peer]]
//! id = "ABCDEFGHIJKLMN-..."
//! addrs = ["192.0.2.7:7420"]
//! folders = ["notes"]
//! join = "..."                # set by `fsync join`: the ticket's secret,
//!                             # proved to this peer on first contact
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Everything the user configured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The UDP address the daemon listens on (default `0.0.0.0:7420`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The TCP address of the HTTP front end (default `127.0.0.1:7421`, or
    /// the next free port); `off` turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Shared folders.
    #[serde(default, rename = "folder", skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<FolderConfig>,
    /// Trusted devices.
    #[serde(default, rename = "peer", skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerConfig>,
}

/// One shared folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderConfig {
    /// The name peers match folders by.
    pub name: String,
    /// The directory on this machine.
    pub path: PathBuf,
    /// Deletions of more than this share (percent) of the folder's files at
    /// once, found here or sent by a peer, are held until `fsync resume`;
    /// 0 turns the guard off. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_guard_percent: Option<u8>,
    /// ...and only when at least this many files would go. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_guard_min: Option<usize>,
    /// History retention: the content of a binary version replaced (or
    /// deleted) more than this many days ago is no longer kept; its place
    /// in the history stays. Default 30; 0 keeps only current contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
}

/// Days replaced binary versions keep their content when the config says
/// nothing.
pub const KEEP_DAYS: u32 = 30;

impl FolderConfig {
    /// [`FolderConfig::keep_days`], or its default.
    pub fn keep_days(&self) -> u32 {
        self.keep_days.unwrap_or(KEEP_DAYS)
    }

    /// The retention cutoff at `now` (ms since the epoch): binary versions
    /// replaced before it keep no content (`Folder::set_retention`).
    pub fn keep_since(&self, now: u64) -> u64 {
        now.saturating_sub(u64::from(self.keep_days()).saturating_mul(86_400_000))
    }

    /// The mass-deletion guard this folder asks for.
    pub fn guard(&self) -> watcher::Guard {
        let d = watcher::Guard::DEFAULT;
        watcher::Guard {
            percent: self.delete_guard_percent.unwrap_or(d.percent),
            min: self.delete_guard_min.unwrap_or(d.min),
            open: false,
        }
    }
}

/// One trusted device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// Its device ID.
    pub id: String,
    /// Where to dial it (none: only accepted, never dialled).
    #[serde(default)]
    pub addrs: Vec<String>,
    /// The folders it is trusted for.
    #[serde(default)]
    pub folders: Vec<String>,
    /// The secret of an invitation from this peer (hex), proved to it on
    /// first contact so it trusts this node back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
}

/// Where the daemon listens when neither `--listen` nor the config say.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7420";

impl Config {
    /// Reads the config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let config: Config = toml::from_str(&text).with_context(|| format!("{} is not a valid config", path.display()))?;
        if let Some(f) = config.folders.iter().find(|f| f.delete_guard_percent.is_some_and(|p| p > 100)) {
            bail!("{}: folder {:?}: delete_guard_percent is a share of its files, 0 to 100", path.display(), f.name);
        }
        Ok(config)
    }

    /// Writes it atomically (temp file, sync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).context("cannot encode the config")?;
        let tmp = path.with_extension("toml.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
    }

    /// Shares `path` (canonical) as `name`; the same pair again is fine. A
    /// folder may not hold this node's `home` (its database would be synced,
    /// and each save of it seen as a change) nor overlap another folder (a
    /// file in both would be synced twice, as two files).
    pub fn add_folder(&mut self, name: &str, path: PathBuf, home: &Path) -> Result<()> {
        if name.is_empty() || name.contains('/') || name.contains('\0') {
            bail!("invalid folder name {name:?}: use a plain name without '/'");
        }
        if let Some(f) = self.folders.iter().find(|f| f.name == name) {
            if f.path == path {
                return Ok(());
            }
            bail!("folder {name:?} is already shared from {}; pick another name", f.path.display());
        }
        if let Some(f) = self.folders.iter().find(|f| f.path == path) {
            bail!("{} is already shared as {:?}", path.display(), f.name);
        }
        let home = home.canonicalize().unwrap_or_else(|_| home.to_owned());
        if home.starts_with(&path) {
            bail!(
                "{} holds this node's home ({}); share a directory beside it, or move the home with --home",
                path.display(),
                home.display()
            );
        }
        if let Some(f) = self.folders.iter().find(|f| f.path.starts_with(&path) || path.starts_with(&f.path)) {
            bail!(
                "{} overlaps folder {:?} ({}): folders cannot be inside one another",
                path.display(),
                f.name,
                f.path.display()
            );
        }
        self.folders.push(FolderConfig {
            name: name.to_owned(),
            path,
            delete_guard_percent: None,
            delete_guard_min: None,
            keep_days: None,
        });
        Ok(())
    }

    /// The folder shared from `path`, if any.
    pub fn folder_at(&self, path: &Path) -> Option<&FolderConfig> {
        self.folders.iter().find(|f| f.path == path)
    }

    /// Trusts a device for folders, at addresses (adding to what it had).
    pub fn add_peer(&mut self, id: &str, addrs: &[String], folders: &[String]) -> Result<()> {
        for f in folders {
            if !self.folders.iter().any(|x| &x.name == f) {
                bail!("no folder named {f:?}: add it first with `fsync folder add {f} PATH`");
            }
        }
        let p = match self.peers.iter_mut().find(|p| p.id == id) {
            Some(p) => p,
            None => {
                self.peers.push(PeerConfig { id: id.to_owned(), addrs: Vec::new(), folders: Vec::new(), join: None });
                self.peers.last_mut().context("just pushed")?
            }
        };
        for a in addrs {
            if !p.addrs.contains(a) {
                p.addrs.push(a.clone());
            }
        }
        for f in folders {
            if !p.folders.contains(f) {
                p.folders.push(f.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fsync folder add x /` (or `..` from inside the home) once shared
    /// the node's own database, and folders inside one another synced
    /// their files twice.
    #[test]
    fn a_folder_may_not_hold_the_home_or_overlap_another() {
        let home = Path::new("/srv/fsync/home");
        let mut c = Config::default();
        c.add_folder("a", "/data/a".into(), home).expect("a plain folder");
        c.add_folder("a", "/data/a".into(), home).expect("the same again");
        c.add_folder("b", "/data/b".into(), home).expect("a sibling");
        c.add_folder("home-sibling", "/srv/fsync/docs".into(), home).expect("beside the home");
        for (name, path) in [("root", "/"), ("srv", "/srv/fsync"), ("in", "/data/a/inner"), ("up", "/data")] {
            let e = c.add_folder(name, path.into(), home).expect_err(path);
            assert!(e.to_string().contains("home") || e.to_string().contains("overlaps"), "{path}: {e}");
        }
        assert_eq!(c.folders.len(), 3);
    }
}
