//! The `fsync` binary's library side: the node's home, config, the daemon
//! and its control socket, and the daemon's answers to its HTTP front end
//! (the durable store is the `fsync-store` crate).

pub mod config;
pub mod control;
pub mod daemon;
pub mod home;
pub mod invite;
pub mod past;
pub mod progress;
pub mod query;
pub mod status;
pub mod web;

use std::collections::HashMap;

use fsync_core::chunks::ChunkStore;
use fsync_core::folder::Folder;
use fsync_core::AgentId;

/// Agent ids of the devices this node knows (itself and its peers), for
/// showing who made a change.
pub fn query_devices(me: transport::DeviceId, config: &config::Config) -> HashMap<AgentId, String> {
    let mut m = HashMap::new();
    m.insert(daemon::agent_of(me), me.to_string());
    for p in &config.peers {
        if let Ok(id) = p.id.parse::<transport::DeviceId>() {
            m.insert(daemon::agent_of(id), id.to_string());
        }
    }
    m
}

/// Answers a `log`, `cat` or `ls` request, given a way to reach a folder.
pub fn answer(
    request: &control::Request,
    mut with_folder: impl FnMut(
        &str,
        &mut dyn FnMut(&mut Folder, &dyn ChunkStore) -> anyhow::Result<Vec<u8>>,
    ) -> Option<anyhow::Result<Vec<u8>>>,
    devices: &HashMap<AgentId, String>,
    config: &config::Config,
) -> anyhow::Result<Vec<u8>> {
    use control::Request;
    let device_of = |a: AgentId| devices.get(&a).cloned().unwrap_or_else(|| data_encoding::HEXLOWER.encode(&a.0));
    let folder = match request {
        Request::Log { folder, .. } | Request::Cat { folder, .. } | Request::Ls { folder, .. } => folder,
        _ => anyhow::bail!("not a folder request"),
    };
    let root = config.folders.iter().find(|f| f.name == *folder).map(|f| f.path.clone()).unwrap_or_default();
    let show = |rel: &str| root.join(rel).display().to_string();
    let mut run = |f: &mut Folder, chunks: &dyn ChunkStore| -> anyhow::Result<Vec<u8>> {
        match request {
            Request::Log { path, json: true, .. } => Ok(query::log_json(&query::log(f, path)?, device_of).into_bytes()),
            Request::Log { path, .. } => {
                let mut out = String::new();
                for c in &query::log(f, path)? {
                    let dev: String = device_of(c.version.agent).chars().take(14).collect();
                    out.push_str(&format!(
                        "{}  {}  {}  {} ({})\n",
                        query::version_string(c.version),
                        c.time / 1000,
                        dev,
                        c.what,
                        c.size
                    ));
                }
                Ok(out.into_bytes())
            }
            Request::Cat { path, at, .. } => {
                let at = at.as_deref().map(query::parse_version).transpose()?;
                query::cat(f, chunks, path, at)
            }
            Request::Ls { dir, deleted, json, .. } => query::ls(f, dir, *deleted, *json, &show),
            _ => anyhow::bail!("not a folder request"),
        }
    };
    with_folder(folder, &mut run).unwrap_or_else(|| Err(anyhow::anyhow!("no folder named {folder:?}")))
}
