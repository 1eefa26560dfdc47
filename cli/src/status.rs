//! `fsync status`: the node, its folders and peers, whether or not the
//! daemon runs. With a daemon the answer comes over the control socket and
//! says who is connected and what is still to send or fetch; without one it
//! is read from config and store.
//!
//! JSON schema (stable: fields may be added, never renamed or retyped;
//! times are unix milliseconds):
//!
//! ```text
//! { "device": ID, "running": bool, "listen": "HOST:PORT" | null,
//!   "http": "HOST:PORT" | null,
//!   "folders": [ { "name", "path", "files": n, "chunks_to_fetch": n,
//!                  "changes": n, "version": { DEVICE_ID: n, ... },
//!                  "keep_days": n,
//!                  "problems": [ "..." ] } ],
//!   "peers": [ { "id", "addrs": [..], "folders": [..], "connected": bool,
//!                "last_seen": ms | null, "address": "HOST:PORT" | null,
//!                "to_send": n | null, "to_fetch": n } ],
//!   "invites": n,
//!   "store_error": "..." | null,
//!   "errors": [ { "time": ms, "message": "..." } ] }
//! ```
//!
//! `changes` counts unit changes (characters, metadata events) in the
//! folder's history; `version` says how many came from each device (two
//! nodes are in sync when their versions are equal). A peer's `to_send` is
//! how many of our changes it still lacks (`null` until it has told us what
//! it has, or when not connected); `to_fetch` counts chunks asked of it and
//! not yet received. A folder's `problems` say what keeps it and the disk
//! apart (it cannot be written, paths in it cannot be read); empty when all
//! is well. `store_error` is set while saving fails (a full disk);
//! `errors` lists recent failures, oldest first.

use std::collections::{BTreeMap, HashMap};

use fsync_core::chunks::ChunkStore;
use fsync_core::folder::{Folder, Kind};
use fsync_core::AgentId;
use serde::{Deserialize, Serialize};

use crate::config::PeerConfig;

/// Everything `fsync status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// This node's device ID.
    pub device: String,
    /// Whether a daemon runs on this home.
    pub running: bool,
    /// Where it listens.
    pub listen: Option<String>,
    /// Where its HTTP front end listens (`fsync open` prints the page's
    /// address).
    #[serde(default)]
    pub http: Option<String>,
    /// Shared folders.
    pub folders: Vec<FolderStatus>,
    /// Trusted devices.
    pub peers: Vec<PeerStatus>,
    /// Open invitations.
    pub invites: usize,
    /// What saving is stuck on, while it fails.
    pub store_error: Option<String>,
    /// Recent failures, oldest first.
    pub errors: Vec<ErrorEntry>,
}

/// One failure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// Unix ms.
    pub time: u64,
    /// What failed and why.
    pub message: String,
    /// How many times it failed again since, the same way (retried with
    /// backoff, logged once).
    #[serde(default)]
    pub repeats: u64,
}

/// One folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FolderStatus {
    /// Name.
    pub name: String,
    /// Directory.
    pub path: String,
    /// Files (not directories) in it.
    pub files: usize,
    /// Binary chunks referenced but not here yet.
    pub chunks_to_fetch: usize,
    /// Unit changes in its history.
    pub changes: u64,
    /// Changes per device.
    pub version: BTreeMap<String, u64>,
    /// What keeps the folder on disk and its synced state apart (a folder
    /// that cannot be written, paths that cannot be read); empty when all
    /// is well.
    #[serde(default)]
    pub problems: Vec<String>,
    /// Days a replaced binary version keeps its content (the folder's
    /// `keep_days`).
    #[serde(default)]
    pub keep_days: u32,
}

impl FolderStatus {
    /// Counts for one folder; `devices` names the agents we know.
    pub fn of(
        config: &crate::config::FolderConfig,
        folder: &mut Folder,
        chunks: &dyn ChunkStore,
        devices: &HashMap<AgentId, String>,
    ) -> FolderStatus {
        let files = folder.tree().nodes().filter(|n| n.kind != Kind::Dir).count();
        let chunks_to_fetch = chunks_to_fetch(folder, chunks);
        let version: BTreeMap<String, u64> = folder
            .version_vector()
            .iter()
            .map(|(a, n)| (devices.get(a).cloned().unwrap_or_else(|| a.0.iter().map(|b| format!("{b:02x}")).collect()), *n))
            .collect();
        let changes = version.values().sum();
        FolderStatus {
            name: config.name.clone(),
            path: config.path.display().to_string(),
            keep_days: config.keep_days(),
            files,
            chunks_to_fetch,
            changes,
            version,
            problems: Vec::new(),
        }
    }
}

/// Binary chunks the folder refers to that are not here yet.
pub fn chunks_to_fetch(folder: &Folder, chunks: &dyn ChunkStore) -> usize {
    folder.referenced_chunks().iter().filter(|h| !chunks.has(h)).count()
}

/// One peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Device ID.
    pub id: String,
    /// Where it is dialled.
    pub addrs: Vec<String>,
    /// Folders it is trusted for.
    pub folders: Vec<String>,
    /// Connected now.
    pub connected: bool,
    /// Last heard from (unix ms).
    pub last_seen: Option<u64>,
    /// Where it was last connected from.
    pub address: Option<String>,
    /// Our changes it still lacks.
    pub to_send: Option<u64>,
    /// Chunks asked of it, not yet received.
    pub to_fetch: usize,
}

impl PeerStatus {
    /// What the config says; the daemon fills in the rest.
    pub fn of(p: &PeerConfig, connected: bool) -> PeerStatus {
        PeerStatus {
            id: p.id.clone(),
            addrs: p.addrs.clone(),
            folders: p.folders.clone(),
            connected,
            last_seen: None,
            address: None,
            to_send: None,
            to_fetch: 0,
        }
    }
}

fn ago(ms: u64) -> String {
    let now = crate::daemon::now_ms();
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

impl Status {
    /// As JSON (one line), or as text for people.
    pub fn render(&self, json: bool) -> String {
        if json {
            return serde_json::to_string(self).map(|s| s + "\n").unwrap_or_default();
        }
        let mut out = format!("device  {}\n", self.device);
        out.push_str(&match &self.listen {
            Some(l) => format!("daemon  running, listening on {l}\n"),
            None => "daemon  not running\n".to_owned(),
        });
        if let Some(h) = &self.http {
            out.push_str(&format!("http    http://{h}/ (`fsync open` prints the address with its token)\n"));
        }
        if let Some(e) = &self.store_error {
            out.push_str(&format!("store   NOT SAVING: {e}\n"));
        }
        for f in &self.folders {
            out.push_str(&format!(
                "folder  {}  {}  {} files, {} changes, replaced binary versions kept {} days",
                f.name, f.path, f.files, f.changes, f.keep_days
            ));
            if f.chunks_to_fetch > 0 {
                out.push_str(&format!(", {} chunks to fetch", f.chunks_to_fetch));
            }
            out.push('\n');
            for p in &f.problems {
                out.push_str(&format!("        PROBLEM: {p}\n"));
            }
        }
        for p in &self.peers {
            let mut state = if p.connected { "connected".to_owned() } else { "not connected".to_owned() };
            if let Some(a) = &p.address {
                state.push_str(&format!(" ({a})"));
            }
            if !p.connected {
                if let Some(t) = p.last_seen {
                    state.push_str(&format!(", last seen {}", ago(t)));
                }
            }
            if let Some(n) = p.to_send.filter(|n| *n > 0) {
                state.push_str(&format!(", {n} changes to send"));
            }
            if p.to_fetch > 0 {
                state.push_str(&format!(", {} chunks to fetch", p.to_fetch));
            }
            out.push_str(&format!("peer    {}  {}  folders: {}\n", p.id, state, p.folders.join(", ")));
        }
        if self.invites > 0 {
            out.push_str(&format!("invites {} open\n", self.invites));
        }
        for e in &self.errors {
            let again = if e.repeats > 0 { format!(" (failed {} more times since)", e.repeats) } else { String::new() };
            out.push_str(&format!("error   {}  {}{again}\n", ago(e.time), e.message));
        }
        out
    }
}
