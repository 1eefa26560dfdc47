//! What `fsync log` and `fsync cat` ask of a folder. Pure functions over a
//! folder and its chunks, so the daemon (over the control socket) and the
//! command itself (from the store, when no daemon runs) give one answer.

// Parses what peers, users and the disk send: no slicing or indexing that
// can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use fsync_core::chunks::{assemble, ChunkStore};
use fsync_core::folder::{Content, EntryId, Folder, Meta};
use fsync_core::{AgentId, EventId, Lv};

use crate::config::Config;

/// A version id as users see it: `AGENT:SEQ` (hex agent).
pub fn version_string(id: EventId) -> String {
    format!("{}:{}", data_encoding::HEXLOWER.encode(&id.agent.0), id.seq)
}

/// Parses what [`version_string`] printed (any string: a clear error for
/// anything else).
pub fn parse_version(s: &str) -> Result<EventId> {
    let not = || anyhow!("{s:?} is not a version (expected AGENT:SEQ from `fsync log`)");
    let (hex, seq) = s.split_once(':').ok_or_else(not)?;
    let agent: [u8; 16] =
        data_encoding::HEXLOWER_PERMISSIVE.decode(hex.as_bytes()).ok().and_then(|b| b.try_into().ok()).ok_or_else(not)?;
    Ok(EventId { agent: AgentId(agent), seq: seq.parse().map_err(|_| not())? })
}

/// The folder (by name) and the path inside it of `path` (absolute, or
/// relative to `cwd`).
pub fn locate(config: &Config, cwd: &Path, path: &Path) -> Result<(String, String)> {
    let (folder, rel) = locate_any(config, cwd, path)?;
    if rel.is_empty() {
        bail!("{} is the folder itself; name a file inside it", path.display());
    }
    Ok((folder, rel))
}

/// As [`locate`], and the folder itself is `""`.
pub fn locate_any(config: &Config, cwd: &Path, path: &Path) -> Result<(String, String)> {
    let abs: PathBuf = if path.is_absolute() { path.to_owned() } else { cwd.join(path) };
    // The file may not exist (deleted): resolve its directory instead.
    let abs = match abs.canonicalize() {
        Ok(p) => p,
        Err(_) => match (abs.parent().and_then(|p| p.canonicalize().ok()), abs.file_name()) {
            (Some(dir), Some(name)) => dir.join(name),
            _ => abs.clone(),
        },
    };
    for f in &config.folders {
        if let Ok(rel) = abs.strip_prefix(&f.path) {
            let rel = rel.to_str().ok_or_else(|| anyhow!("{} is not valid UTF-8", abs.display()))?;
            return Ok((f.name.clone(), rel.to_owned()));
        }
    }
    bail!("{} is not inside a shared folder (see `fsync folder add`)", abs.display())
}

/// The entry at `rel` now or, when nothing is there, the one deleted
/// there last.
fn entry(folder: &mut Folder, rel: &str) -> Result<EntryId> {
    if let Some(n) = folder.tree().lookup(rel) {
        return Ok(n.id);
    }
    folder.entries_at(rel).first().copied().ok_or_else(|| anyhow!("{rel}: no such file in the folder, now or before"))
}

/// A time as users give it: RFC 3339 (`2026-12-05T10:00:00Z`) or unix
/// seconds; in ms since the epoch.
pub fn parse_time(s: &str) -> Result<u64> {
    let not = || anyhow!("{s:?} is not a time (expected RFC 3339, such as 2026-12-05T10:00:00Z, or unix seconds)");
    if let Ok(secs) = s.parse::<u64>() {
        return secs.checked_mul(1000).ok_or_else(not);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|_| not())?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| not())
}

/// A time (ms since the epoch) in RFC 3339, UTC.
pub fn format_time(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// One change of a file's history.
pub struct Change {
    /// The version after it.
    pub version: EventId,
    /// The versions it was made on.
    pub parents: Vec<EventId>,
    /// When (ms since the epoch, author's clock).
    pub time: u64,
    /// What it was.
    pub what: String,
    /// Size: characters for text, bytes for binary content.
    pub size: u64,
}

/// The history of a file, oldest first.
pub fn log(folder: &mut Folder, rel: &str) -> Result<Vec<Change>> {
    let id = entry(folder, rel)?;
    let doc = folder.doc(id).ok_or_else(|| anyhow!("{rel}: no history"))?;
    let log = doc.oplog();
    let mut out: Vec<Change> = Vec::new();
    let cut = |range: std::ops::Range<Lv>, out: &mut Vec<Change>| {
        let parents = log.graph().parents_of(range.start).iter().map(|&p| log.id_of(p)).collect();
        let (mut what, mut size) = (String::new(), 0u64);
        let mut text_ops = 0u64;
        for lv in range.clone() {
            match log.marker(lv).map(Meta::decode) {
                Some(Ok(m)) => {
                    let w = match m {
                        Meta::Create { .. } => "create",
                        Meta::Move { .. } => "move",
                        Meta::Delete => "delete",
                        Meta::Exec(_) => "mode",
                        Meta::Binary { size: s, .. } => {
                            size = s;
                            "binary"
                        }
                        Meta::Text => "text",
                        Meta::Link(_) => "link",
                    };
                    if !what.contains(w) {
                        let _ = write!(what, "{}{w}", if what.is_empty() { "" } else { "+" });
                    }
                }
                _ => text_ops += 1,
            }
        }
        if text_ops > 0 {
            size = text_ops;
            let _ = write!(what, "{}edit", if what.is_empty() { "" } else { "+" });
        }
        out.push(Change { version: log.id_of(range.end - 1), parents, time: log.time_of(range.start), what, size });
    };
    // A change: consecutive operations of one author at one time, not
    // crossing a merge.
    for (range, _, _) in log.authors(0..log.len()) {
        let mut start = range.start;
        for lv in range.clone() {
            let boundary =
                lv > start && (log.time_of(lv) != log.time_of(lv - 1) || log.graph().parents_of(lv).as_slice() != [lv - 1]);
            if boundary {
                cut(start..lv, &mut out);
                start = lv;
            }
        }
        cut(start..range.end, &mut out);
    }
    Ok(out)
}

/// A file's content now, or at a version from [`log`].
pub fn cat(folder: &mut Folder, chunks: &dyn ChunkStore, rel: &str, at: Option<EventId>) -> Result<Vec<u8>> {
    let id = match at {
        None => match folder.tree().lookup(rel).map(|n| n.id) {
            Some(id) => id,
            None if folder.entries_at(rel).is_empty() => bail!("{rel}: no such file in the folder, now or before"),
            None => bail!("{rel} was deleted: `fsync log` lists its versions for `--at`, `fsync restore` brings it back"),
        },
        // The version names the entry: the one there now or one deleted.
        Some(v) => {
            let ids = folder.entries_at(rel);
            let named = ids.iter().copied().find(|id| folder.doc(*id).is_some_and(|d| d.oplog().lv_of(v).is_some()));
            match named.or_else(|| ids.first().copied()) {
                Some(id) => id,
                None => bail!("{rel}: no such file in the folder, now or before"),
            }
        }
    };
    let doc = folder.doc(id).ok_or_else(|| anyhow!("{rel}: no history"))?;
    let missing = || {
        anyhow!(
            "{rel}: the content of that version is not on this node (older than the folder's keep_days, or not arrived yet)"
        )
    };
    match at {
        None => match &folder.state(id).ok_or_else(|| anyhow!("{rel}: gone"))?.content {
            Content::Text => Ok(doc.text().into_bytes()),
            Content::Binary { chunks: refs, .. } => assemble(refs, chunks).ok_or_else(missing),
            Content::Link(t) => Ok(t.clone().into_bytes()),
            Content::None => bail!("{rel} is a directory"),
        },
        Some(v) => {
            let lv = doc
                .oplog()
                .lv_of(v)
                .ok_or_else(|| anyhow!("{} is not a version of {rel} (see `fsync log`)", version_string(v)))?;
            match doc.oplog().marker(lv).map(Meta::decode) {
                Some(Ok(Meta::Binary { chunks: refs, .. })) => assemble(&refs, chunks).ok_or_else(missing),
                _ => Ok(doc.text_at(&[lv]).into_bytes()),
            }
        }
    }
}

/// `fsync ls`: what is at `dir` and below now, or (`deleted`) the files
/// deleted there; `show` turns a folder path into what the user sees.
pub fn ls(folder: &mut Folder, dir: &str, deleted: bool, json: bool, show: &dyn Fn(&str) -> String) -> Result<Vec<u8>> {
    if !dir.is_empty() && !deleted && folder.tree().lookup(dir).is_none() {
        bail!("{dir}: no such file or directory in the folder");
    }
    let rows: Vec<serde_json::Value> = if deleted {
        folder
            .deleted(dir)
            .into_iter()
            .map(|d| {
                serde_json::json!({
                    "path": show(&d.path),
                    "version": d.last_ids.first().map(|v| version_string(*v)),
                    "deleted_at": d.deleted_at,
                    "time": format_time(d.deleted_at),
                })
            })
            .collect()
    } else {
        let nodes: Vec<_> = folder.tree().below(dir).into_iter().cloned().collect();
        nodes
            .into_iter()
            .map(|n| {
                let version = folder.doc(n.id).and_then(|d| d.version_ids().first().copied()).map(version_string);
                serde_json::json!({ "path": show(&n.path), "kind": n.kind.name(), "version": version })
            })
            .collect()
    };
    if json {
        return Ok(serde_json::Value::Array(rows).to_string().into_bytes());
    }
    let mut out = String::new();
    for r in &rows {
        let field = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
        if deleted {
            let _ = writeln!(out, "{}  deleted {}  last version {}", field("path"), field("time"), field("version"));
        } else {
            let _ = writeln!(out, "{}  {}", field("kind"), field("path"));
        }
    }
    Ok(out.into_bytes())
}

/// The log as one JSON array (CONTRACT section 1).
pub fn log_json(changes: &[Change], device_of: impl Fn(AgentId) -> String) -> String {
    let items: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| {
            serde_json::json!({
                "version": version_string(c.version),
                "parents": c.parents.iter().map(|p| version_string(*p)).collect::<Vec<_>>(),
                "device": device_of(c.version.agent),
                "time": c.time,
                "change": c.what,
                "size": c.size,
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::string_slice)]
mod tests {
    use super::*;

    /// `fsync cat --at` with a 32-byte version holding a non-ASCII
    /// character once panicked the daemon (it sliced the string by bytes).
    #[test]
    fn a_version_string_with_non_ascii_characters_is_an_error() {
        for bad in [
            "ééééééééééééééééééééééééééééééé:1",
            "0123456789abcdef0123456789abcdé:1",
            "",
            ":",
            "zz:1",
            "00:1",
            "0123456789abcdef0123456789abcdef:x",
            "0123456789abcdef0123456789abcdef:-1",
            "\u{0}:\u{0}",
        ] {
            assert!(parse_version(bad).is_err(), "{bad:?}");
        }
        let id = EventId { agent: AgentId([0xab; 16]), seq: 42 };
        assert_eq!(parse_version(&version_string(id)).ok(), Some(id));
    }
}
