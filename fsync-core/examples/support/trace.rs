//! Loading and replaying the editing traces of `traces/` (repository root) (format in
//! its README). Shared by the `replay` example, the trace tests and the
//! benchmarks, which include this file by path.

#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::path::Path;

use fsync_core::text::{Edit, RemoteOp, TextDoc};
use fsync_core::{AgentId, EventId};

/// One transaction: an agent's patches on top of the merge of `parents`.
pub struct Txn {
    pub parents: Vec<usize>,
    pub agent: u64,
    pub patches: Vec<(usize, usize, String)>,
}

/// A whole trace.
pub struct Trace {
    pub name: String,
    pub concurrent: bool,
    pub start: String,
    pub end: String,
    pub txns: Vec<Txn>,
}

/// Reads a `.json.gz` trace.
pub fn load(path: &Path) -> Result<Trace, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut json = String::new();
    flate2::read::GzDecoder::new(f).read_to_string(&mut json).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| format!("{}: {e}", path.display()))?;
    let concurrent = v.get("kind").and_then(|k| k.as_str()) == Some("concurrent");
    let mut txns = Vec::new();
    for t in v["txns"].as_array().ok_or("no txns")? {
        let parents = t
            .get("parents")
            .and_then(|p| p.as_array())
            .map_or(Vec::new(), |p| p.iter().filter_map(|x| x.as_u64()).map(|x| x as usize).collect());
        let agent = t.get("agent").and_then(|a| a.as_u64()).unwrap_or(0);
        let mut patches = Vec::new();
        for p in t["patches"].as_array().ok_or("no patches")? {
            let pos = p[0].as_u64().ok_or("bad pos")? as usize;
            let del = p[1].as_u64().ok_or("bad del")? as usize;
            let ins = p[2].as_str().ok_or("bad ins")?.to_owned();
            patches.push((pos, del, ins));
        }
        txns.push(Txn { parents, agent, patches });
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?").trim_end_matches(".json.gz").to_owned();
    Ok(Trace {
        name,
        concurrent,
        start: v.get("startContent").and_then(|s| s.as_str()).unwrap_or("").to_owned(),
        end: v["endContent"].as_str().ok_or("no endContent")?.to_owned(),
        txns,
    })
}

impl Trace {
    /// Number of patches.
    pub fn patches(&self) -> usize {
        self.txns.iter().map(|t| t.patches.len()).sum()
    }

    /// Replays a sequential trace as local edits of one agent.
    pub fn replay_local(&self) -> TextDoc {
        let agent = AgentId::from_index(0);
        let mut doc = TextDoc::new();
        let mut seq = 0;
        if !self.start.is_empty() {
            seq = doc.local_edit(agent, seq, &Edit { pos: 0, del: 0, ins: self.start.clone() }).end;
        }
        for t in &self.txns {
            for (pos, del, ins) in &t.patches {
                seq = doc.local_edit(agent, seq, &Edit { pos: *pos, del: *del, ins: ins.clone() }).end;
            }
        }
        doc
    }

    /// Builds the full history of a concurrent trace (each agent a replica,
    /// each transaction on top of its parents) and merges it.
    pub fn replay_concurrent(&self) -> Result<TextDoc, String> {
        self.replay_concurrent_with(0)
    }

    /// As [`Trace::replay_concurrent`]; with `merge_every` > 0, the text is
    /// also merged after every `merge_every` transactions.
    pub fn replay_concurrent_with(&self, merge_every: usize) -> Result<TextDoc, String> {
        let mut doc = TextDoc::new();
        let mut next_seq: Vec<u64> = Vec::new();
        // The version after each transaction, as event ids.
        let mut after: Vec<Vec<EventId>> = Vec::with_capacity(self.txns.len());
        for (i, t) in self.txns.iter().enumerate() {
            let mut parents: Vec<EventId> = Vec::new();
            for &p in &t.parents {
                let v = after.get(p).ok_or(format!("txn {i}: parent {p} is not earlier"))?;
                parents.extend(v.iter().copied());
            }
            parents.sort();
            parents.dedup();
            let a = t.agent as usize;
            if next_seq.len() <= a {
                next_seq.resize(a + 1, 0);
            }
            let agent = AgentId::from_index(t.agent);
            for (pos, del, ins) in &t.patches {
                if *del > 0 {
                    let id = EventId { agent, seq: next_seq[a] };
                    doc.add_remote(&RemoteOp::delete(id, &parents, *pos, *del, true)).map_err(|e| e.to_string())?;
                    next_seq[a] += *del as u64;
                    parents = vec![EventId { agent, seq: next_seq[a] - 1 }];
                }
                if !ins.is_empty() {
                    let id = EventId { agent, seq: next_seq[a] };
                    doc.add_remote(&RemoteOp::insert(id, &parents, *pos, ins)).map_err(|e| e.to_string())?;
                    next_seq[a] += ins.chars().count() as u64;
                    parents = vec![EventId { agent, seq: next_seq[a] - 1 }];
                }
            }
            after.push(parents);
            if merge_every > 0 && i % merge_every == 0 {
                doc.merge_pending();
            }
        }
        doc.merge_pending();
        Ok(doc)
    }
}
