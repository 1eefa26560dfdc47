//! The `fsync` binary's library side: the node's home, config, durable
//! store and the daemon. The control socket and the remaining commands
//! follow (issue 6).

pub mod config;
pub mod daemon;
pub mod home;
pub mod invite;
pub mod progress;
pub mod query;
pub mod status;
pub mod store;

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

/// Answers one control request (`log\tFOLDER\tPATH\tjson|text` or
/// `cat\tFOLDER\tPATH\tVERSION`), given a way to reach a folder.
pub fn answer(
    request: &str,
    mut with_folder: impl FnMut(
        &str,
        &mut dyn FnMut(&mut Folder, &dyn ChunkStore) -> anyhow::Result<Vec<u8>>,
    ) -> Option<anyhow::Result<Vec<u8>>>,
    devices: &HashMap<AgentId, String>,
) -> anyhow::Result<Vec<u8>> {
    let parts: Vec<&str> = request.split('\t').collect();
    let device_of = |a: AgentId| devices.get(&a).cloned().unwrap_or_else(|| a.0.iter().map(|b| format!("{b:02x}")).collect());
    let (cmd, folder, path, extra) = match parts.as_slice() {
        [c, f, p, e] => (*c, *f, *p, *e),
        _ => anyhow::bail!("bad request"),
    };
    let mut run = |f: &mut Folder, chunks: &dyn ChunkStore| -> anyhow::Result<Vec<u8>> {
        match cmd {
            "log" => {
                let changes = query::log(f, path)?;
                if extra == "json" {
                    Ok(query::log_json(&changes, device_of).into_bytes())
                } else {
                    let mut out = String::new();
                    for c in &changes {
                        let dev = device_of(c.version.agent);
                        out.push_str(&format!(
                            "{}  {}  {}  {} ({})\n",
                            query::version_string(c.version),
                            c.time / 1000,
                            &dev[..dev.len().min(14)],
                            c.what,
                            c.size
                        ));
                    }
                    Ok(out.into_bytes())
                }
            }
            "cat" => {
                let at = if extra.is_empty() { None } else { Some(query::parse_version(extra)?) };
                query::cat(f, chunks, path, at)
            }
            _ => anyhow::bail!("unknown request {cmd}"),
        }
    };
    with_folder(folder, &mut run).unwrap_or_else(|| Err(anyhow::anyhow!("no folder named {folder}")))
}
