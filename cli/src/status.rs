//! `fsync status`: the node, its folders and peers, whether or not the
//! daemon runs. With a daemon the answer comes over the control socket and
//! says who is connected; without one it is read from config and store.
//!
//! JSON schema (stable; fields may be added, never renamed):
//!
//! ```text
//! { "device": ID, "running": bool, "listen": "HOST:PORT" | null,
//!   "folders": [ { "name", "path", "files", "chunks_to_fetch" } ],
//!   "peers": [ { "id", "addrs": [..], "folders": [..], "connected": bool } ] }
//! ```

use fsync_core::chunks::ChunkStore;
use fsync_core::folder::{Folder, Kind};

use crate::config::Config;

/// One folder's line.
pub struct FolderStatus {
    /// Name.
    pub name: String,
    /// Directory.
    pub path: String,
    /// Files (not directories) in it.
    pub files: usize,
    /// Binary chunks referenced but not here yet.
    pub chunks_to_fetch: usize,
}

impl FolderStatus {
    /// Counts for one folder.
    pub fn of(name: &str, path: &str, folder: &mut Folder, chunks: &dyn ChunkStore) -> FolderStatus {
        let files = folder.tree().nodes().filter(|n| n.kind != Kind::Dir).count();
        let chunks_to_fetch = folder.referenced_chunks().iter().filter(|h| !chunks.has(h)).count();
        FolderStatus { name: name.to_owned(), path: path.to_owned(), files, chunks_to_fetch }
    }
}

fn q(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The status as JSON, or as text for people.
pub fn render(
    json: bool,
    device: &str,
    listen: Option<String>,
    folders: &[FolderStatus],
    config: &Config,
    connected: impl Fn(&str) -> bool,
) -> String {
    if !json {
        let mut out = format!("device  {device}\n");
        out.push_str(&match &listen {
            Some(l) => format!("daemon  running, listening on {l}\n"),
            None => "daemon  not running\n".to_owned(),
        });
        for f in folders {
            out.push_str(&format!("folder  {}  {}  {} files", f.name, f.path, f.files));
            if f.chunks_to_fetch > 0 {
                out.push_str(&format!(", {} chunks to fetch", f.chunks_to_fetch));
            }
            out.push('\n');
        }
        for p in &config.peers {
            let state = if connected(&p.id) { "connected" } else { "not connected" };
            out.push_str(&format!("peer    {}  {}  folders: {}\n", p.id, state, p.folders.join(", ")));
        }
        return out;
    }
    let folders: Vec<String> = folders
        .iter()
        .map(|f| {
            format!(
                "{{\"name\": {}, \"path\": {}, \"files\": {}, \"chunks_to_fetch\": {}}}",
                q(&f.name),
                q(&f.path),
                f.files,
                f.chunks_to_fetch
            )
        })
        .collect();
    let peers: Vec<String> = config
        .peers
        .iter()
        .map(|p| {
            let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
            format!(
                "{{\"id\": {}, \"addrs\": [{}], \"folders\": [{}], \"connected\": {}}}",
                q(&p.id),
                list(&p.addrs),
                list(&p.folders),
                connected(&p.id)
            )
        })
        .collect();
    format!(
        "{{\"device\": {}, \"running\": {}, \"listen\": {}, \"folders\": [{}], \"peers\": [{}]}}\n",
        q(device),
        listen.is_some(),
        listen.as_deref().map_or("null".to_owned(), q),
        folders.join(", "),
        peers.join(", ")
    )
}
