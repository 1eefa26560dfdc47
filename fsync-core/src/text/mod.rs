//! Text documents that merge character by character (Eg-walker).
//!
//! A [`TextDoc`] keeps the full history of operations with their original
//! positions ([`OpLog`]) and the current text (a string, or a rope once it
//! is big). Local edits go straight to both. Remote operations are added to
//! the log and merged by replaying only the region that is concurrent with
//! them through a temporary CRDT state ([`tracker`]); stretches of history
//! with no concurrency are applied to the text directly. So a file with a long linear history pays
//! nothing for it when a small remote change arrives.
//!
//! Concurrent inserts at one place are ordered by FugueMax (YjsMod), ties
//! broken by agent id, so they never interleave and the result is the same on
//! every replica.

mod buf;
mod encode;
mod list;
mod oplog;
mod tracker;

use std::ops::Range;

pub(crate) use oplog::PushOp;
pub use oplog::{ExportedKind, ExportedRun, OpKind, OpLog, OpRun, OpSlice};

use crate::graph::{Frontier, Graph};
use crate::ids::{AgentId, EventId, Lv};
use buf::TextBuf;
use tracker::{runs_with_parents, Tracker};

/// One edit as a diff gives it: at `pos` (Unicode scalar values), delete
/// `del` characters, then insert `ins`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    /// Position in the text before the edit.
    pub pos: usize,
    /// Characters to remove at `pos`.
    pub del: usize,
    /// Text to insert at `pos`.
    pub ins: String,
}

/// One text file: its history and its current content.
#[derive(Clone, Debug, Default)]
pub struct TextDoc {
    oplog: OpLog,
    text: TextBuf,
    /// Version of `text`; always the log's version between calls.
    version: Frontier,
}

impl TextDoc {
    /// An empty document with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// A document from a history, checked out at its newest version.
    pub fn from_oplog(oplog: OpLog) -> Self {
        let mut doc = TextDoc { oplog, text: TextBuf::default(), version: Frontier::new() };
        let target = doc.oplog.version.clone();
        merge(&mut doc.text, &mut doc.version, &doc.oplog, &target);
        doc.compact();
        doc
    }

    /// The history.
    pub fn oplog(&self) -> &OpLog {
        &self.oplog
    }

    /// The current text.
    pub fn text(&self) -> String {
        self.text.to_string()
    }

    /// Length in Unicode scalar values.
    pub fn len_chars(&self) -> usize {
        self.text.len_chars()
    }

    /// True when the text is empty.
    pub fn is_empty(&self) -> bool {
        self.len_chars() == 0
    }

    /// The current version.
    pub fn version(&self) -> &[Lv] {
        &self.version
    }

    /// Applies a local edit made by `agent`, numbering its operations from
    /// `seq`. Positions past the end are clamped. Returns the sequence
    /// numbers used (empty for a no-op edit).
    pub fn local_edit(&mut self, agent: AgentId, seq: u64, edit: &Edit) -> Range<u64> {
        self.local_edit_at(agent, seq, edit, 0)
    }

    /// [`TextDoc::local_edit`] with the time of the change.
    pub fn local_edit_at(&mut self, agent: AgentId, seq: u64, edit: &Edit, time: u64) -> Range<u64> {
        let len = self.text.len_chars();
        let pos = edit.pos.min(len);
        let del = edit.del.min(len - pos);
        let ai = self.oplog.agent_index(agent);
        let mut next = seq;
        if del > 0 {
            let parents = self.version.clone();
            let r = self.oplog.push_op(ai, next, &parents, pos, PushOp::Del { len: del, fwd: true }, time);
            self.text.remove(pos..pos + del);
            Graph::advance_frontier(&mut self.version, &parents, r.clone());
            next += r.len() as u64;
        }
        if !edit.ins.is_empty() {
            let parents = self.version.clone();
            let r = self.oplog.push_op(ai, next, &parents, pos, PushOp::Ins(&edit.ins), time);
            self.text.insert(pos, &edit.ins);
            Graph::advance_frontier(&mut self.version, &parents, r.clone());
            next += r.len() as u64;
        }
        seq..next
    }

    /// Gives back spare room: most files are small, with short histories,
    /// and an idle one should hold what it needs, not what its last growth
    /// made room for. Costs about the text of a small file; call it when a
    /// document is done being changed for now.
    pub fn compact(&mut self) {
        self.oplog.shrink_short();
        self.text.compact();
    }

    /// Adds remote operations (any order within causal order: the parents
    /// must already be here) without merging; call [`TextDoc::merge_pending`]
    /// after a batch. Returns `false` when the run was already known. An
    /// agent's runs must come in sequence order.
    pub fn add_remote(&mut self, op: &RemoteOp<'_>) -> Result<bool, RemoteOpError> {
        let known = self.oplog.next_seq(op.id.agent);
        let len = op.op.len() as u64;
        if len == 0 {
            return Ok(false);
        }
        if op.id.seq + len <= known {
            return Ok(false);
        }
        // Sequence numbers of an agent may skip (they are numbered across a
        // whole folder); the folder checks that none are missing. Part of the
        // run may be known already: keep only the rest.
        let skip = known.saturating_sub(op.id.seq) as usize;
        let known = known.max(op.id.seq);
        let (pos, kind, parent_ids): (usize, PushOp<'_>, Vec<EventId>) = if skip == 0 {
            (op.pos, op.op, op.parents.to_vec())
        } else {
            let prev = vec![EventId { agent: op.id.agent, seq: known - 1 }];
            match op.op {
                PushOp::Ins(s) => (op.pos + skip, PushOp::Ins(&s[oplog::char_to_byte(s, skip)..]), prev),
                PushOp::Del { len, fwd } => (op.pos, PushOp::Del { len: len - skip, fwd }, prev),
                PushOp::Marker(_) => unreachable!("a marker is one version: known or not"),
            }
        };
        let mut parents = Frontier::new();
        for p in &parent_ids {
            parents.push(self.oplog.lv_of(*p).ok_or(RemoteOpError::UnknownParent(*p))?);
        }
        parents.sort_unstable();
        parents.dedup();
        let parents = if parents.len() > 1 { self.oplog.graph.reduce(&parents) } else { parents };
        let ai = self.oplog.agent_index(op.id.agent);
        match kind {
            PushOp::Marker(m) => {
                self.oplog.push_marker(ai, known, &parents, m, op.time);
            }
            _ => {
                self.oplog.push_op(ai, known, &parents, pos, kind, op.time);
            }
        }
        Ok(true)
    }

    /// Applies local edits made against an older version `base` (what the
    /// editor saw), as a branch from it, then merges: edits that arrived
    /// meanwhile are kept, not overwritten. Positions are relative to the
    /// text at `base`, each edit after the ones before it. With `base` the
    /// current version this is a plain local edit.
    pub fn edit_from(&mut self, agent: AgentId, seq: u64, base: &[Lv], edits: &[Edit], time: u64) -> Range<u64> {
        if base == self.version.as_slice() {
            let mut next = seq;
            for e in edits {
                next = self.local_edit_at(agent, next, e, time).end;
            }
            return seq..next;
        }
        let ai = self.oplog.agent_index(agent);
        let mut parents: Frontier = base.iter().copied().collect();
        let mut next = seq;
        for e in edits {
            for op in [PushOp::Del { len: e.del, fwd: true }, PushOp::Ins(&e.ins)] {
                let r = self.oplog.push_op(ai, next, &parents, e.pos, op, time);
                if !r.is_empty() {
                    next += r.len() as u64;
                    parents = smallvec::smallvec![r.end - 1];
                }
            }
        }
        self.merge_pending();
        seq..next
    }

    /// The current version as event ids (to remember as a base).
    pub fn version_ids(&self) -> Vec<EventId> {
        self.version.iter().map(|&lv| self.oplog.id_of(lv)).collect()
    }

    /// Local versions of event ids this document has.
    pub fn lvs_of(&self, ids: &[EventId]) -> Option<Frontier> {
        ids.iter().map(|id| self.oplog.lv_of(*id)).collect()
    }

    /// Appends a local marker event made against the older version `base`
    /// (what the user saw), then merges.
    pub fn marker_from(&mut self, agent: AgentId, seq: u64, base: &[Lv], payload: &[u8], time: u64) -> Lv {
        if base == self.version.as_slice() {
            return self.local_marker(agent, seq, payload, time);
        }
        let ai = self.oplog.agent_index(agent);
        let lv = self.oplog.push_marker(ai, seq, base, payload, time);
        self.merge_pending();
        lv
    }

    /// Appends a local marker event (see [`OpLog::marker`]).
    pub fn local_marker(&mut self, agent: AgentId, seq: u64, payload: &[u8], time: u64) -> Lv {
        let ai = self.oplog.agent_index(agent);
        let parents = self.version.clone();
        let lv = self.oplog.push_marker(ai, seq, &parents, payload, time);
        Graph::advance_frontier(&mut self.version, &parents, lv..lv + 1);
        lv
    }

    /// Takes `text` as the content at version `ids` instead of merging the
    /// history up to there (a reload from a snapshot; [`merge_pending`]
    /// then merges only what came after it). Only on a document not merged
    /// yet; `false`, with nothing changed, when the version is not here.
    ///
    /// [`merge_pending`]: TextDoc::merge_pending
    pub fn restore(&mut self, ids: &[EventId], text: &str) -> bool {
        if !self.version.is_empty() || ids.is_empty() {
            return false;
        }
        let Some(version) = self.lvs_of(ids) else {
            return false;
        };
        self.text = TextBuf::from_text(text);
        self.version = version;
        true
    }

    /// Merges every operation of the log into the text.
    pub fn merge_pending(&mut self) {
        let target = self.oplog.version.clone();
        merge(&mut self.text, &mut self.version, &self.oplog, &target);
    }

    /// The text at a past version (a frontier of local versions).
    pub fn text_at(&self, version: &[Lv]) -> String {
        let mut text = TextBuf::default();
        let mut v = Frontier::new();
        merge(&mut text, &mut v, &self.oplog, version);
        text.to_string()
    }
}

/// An operation received from elsewhere, named by event ids.
#[derive(Clone, Debug)]
pub struct RemoteOp<'a> {
    /// Id of the first unit operation of the run.
    pub id: EventId,
    /// Parents of the first unit operation.
    pub parents: &'a [EventId],
    /// Position in the parents' version.
    pub pos: usize,
    /// What it does.
    pub(crate) op: PushOp<'a>,
    /// When it was made.
    pub time: u64,
}

impl<'a> RemoteOp<'a> {
    /// A view of an exported run.
    pub fn from_exported(run: &'a ExportedRun) -> Self {
        let op = match &run.kind {
            ExportedKind::Ins(s) => PushOp::Ins(s),
            ExportedKind::Del { len, fwd } => PushOp::Del { len: *len, fwd: *fwd },
            ExportedKind::Marker(m) => PushOp::Marker(m),
        };
        RemoteOp { id: run.id, parents: &run.parents, pos: run.pos, op, time: run.time }
    }
    /// An insert of `text` at `pos`.
    pub fn insert(id: EventId, parents: &'a [EventId], pos: usize, text: &'a str) -> Self {
        RemoteOp { id, parents, pos, op: PushOp::Ins(text), time: 0 }
    }
    /// A delete of `len` characters at `pos..pos + len`; `fwd` says whether
    /// the unit operations go forward (Delete) or backward (Backspace).
    pub fn delete(id: EventId, parents: &'a [EventId], pos: usize, len: usize, fwd: bool) -> Self {
        RemoteOp { id, parents, pos, op: PushOp::Del { len, fwd }, time: 0 }
    }
}

/// Why a remote operation was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteOpError {
    /// Its parents are not here yet.
    #[error("operation depends on {0:?}, which this replica does not have")]
    UnknownParent(EventId),
}

/// Brings `buf` (at `version`) up to `version ∪ target`.
pub(crate) fn merge(buf: &mut TextBuf, version: &mut Frontier, oplog: &OpLog, target: &[Lv]) {
    if version.as_slice() == target {
        return;
    }
    let graph = &oplog.graph;
    let zone = graph.conflict_zone(version, target);
    if zone.in_a.is_empty() {
        // The text is at the zone's base: replay from there in segments.
        merge_segmented(buf, zone.base, &zone.only_b, oplog);
    } else {
        let mut t = Tracker::new(zone.base.clone());
        for (p, r) in runs_with_parents(graph, &zone.in_a) {
            t.apply_range(oplog, &p, r, None);
        }
        for (p, r) in runs_with_parents(graph, &zone.only_b) {
            t.apply_range(oplog, &p, r, Some(buf));
        }
    }
    *version = graph.frontier_union(version, target);
}

/// Replays `spans` onto `buf`, which is at the critical version `base`.
/// Wherever the history is linear between two critical versions the
/// operations go straight to the text; a temporary CRDT state exists only
/// from the critical version before a concurrent region to the one after.
fn merge_segmented(buf: &mut TextBuf, base: Frontier, spans: &[Range<Lv>], oplog: &OpLog) {
    let runs: Vec<(Frontier, Range<Lv>)> = runs_with_parents(&oplog.graph, spans).collect();
    // suffix[i]: the smallest parent of any run from i on (-1 for the root).
    // A version [v] with everything before it processed is critical when no
    // later run reaches below v.
    let mut suffix = vec![isize::MAX; runs.len() + 1];
    for i in (0..runs.len()).rev() {
        let m = runs[i].0.first().map_or(-1, |&p| p as isize);
        suffix[i] = suffix[i + 1].min(m);
    }
    let mut frontier = base;
    let mut tracker: Option<Tracker> = None;
    for (i, (parents, range)) in runs.iter().enumerate() {
        let mut range = range.clone();
        let mut parents = parents.clone();
        if tracker.is_none() && parents == frontier {
            // Direct up to the last operation after which the version is
            // still critical.
            let limit = suffix[i + 1];
            let direct_end = if limit >= range.end as isize - 1 {
                range.end
            } else if limit >= range.start as isize {
                limit as usize + 1
            } else {
                range.start
            };
            if direct_end > range.start {
                apply_direct(buf, oplog, range.start..direct_end);
                frontier = smallvec::smallvec![direct_end - 1];
                parents = frontier.clone();
                range.start = direct_end;
            }
        }
        if !range.is_empty() {
            let t = tracker.get_or_insert_with(|| Tracker::new(frontier.clone()));
            t.apply_range(oplog, &parents, range.clone(), Some(buf));
            Graph::advance_frontier(&mut frontier, &parents, range.clone());
        }
        if tracker.is_some() && frontier.len() == 1 && suffix[i + 1] >= frontier[0] as isize {
            tracker = None;
        }
    }
}

/// Applies operations whose positions are already document positions.
fn apply_direct(buf: &mut TextBuf, oplog: &OpLog, range: Range<Lv>) {
    for op in oplog.ops_in(range) {
        let len = buf.len_chars();
        let pos = op.pos.min(len);
        match op.text {
            Some(text) => buf.insert(pos, text),
            None => buf.remove(pos..(pos + op.len).min(len)),
        }
    }
}

#[cfg(test)]
mod tests;
