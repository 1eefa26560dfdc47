//! The history of one text document: every operation ever made, with its
//! original position, its author and its parents.

use std::ops::Range;

use crate::graph::{Frontier, Graph};
use crate::ids::{AgentId, EventId, Lv};

/// What a run of operations does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Inserts text; `content` is a byte range of [`OpLog::content`].
    Ins {
        /// Start of the run's text in the content buffer.
        content: usize,
    },
    /// Deletes text. Forward runs delete at the same position again and
    /// again (the Delete key); backward runs delete from the end (Backspace).
    Del {
        /// Direction of the run.
        fwd: bool,
    },
}

/// A run of `len` unit operations starting at `lv`. For inserts, operation
/// `lv + i` puts one character at `pos + i`. For deletes, the run removes the
/// `len` characters at `pos..pos + len` of the version before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpRun {
    /// First local version.
    pub lv: Lv,
    /// Number of unit operations.
    pub len: usize,
    /// Position in Unicode scalar values, in the version before the run.
    pub pos: usize,
    /// Insert or delete.
    pub kind: OpKind,
}

/// A borrowed piece of an [`OpRun`], possibly cut to a sub-range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpSlice<'a> {
    /// First local version.
    pub lv: Lv,
    /// Number of unit operations.
    pub len: usize,
    /// Position, as in [`OpRun`].
    pub pos: usize,
    /// For inserts, the inserted text; `None` for deletes.
    pub text: Option<&'a str>,
    /// Direction for deletes (always true for inserts).
    pub fwd: bool,
}

/// A run of local versions made by one agent with consecutive sequence
/// numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AgentSpan {
    pub(crate) lv: Lv,
    pub(crate) len: usize,
    pub(crate) agent: u32,
    pub(crate) seq: u64,
}

/// Every operation of one document.
#[derive(Clone, Debug, Default)]
pub struct OpLog {
    pub(crate) graph: Graph,
    pub(crate) agents: Vec<AgentId>,
    /// Local version to author, ascending by `lv`.
    pub(crate) lv_to_agent: Vec<AgentSpan>,
    /// Per agent (index as in `agents`): (seq, lv, len) ascending by seq.
    pub(crate) agent_to_lv: Vec<Vec<(u64, Lv, usize)>>,
    pub(crate) ops: Vec<OpRun>,
    pub(crate) content: String,
    /// Events that are not text operations (file metadata), by local
    /// version; the text merge skips them.
    pub(crate) markers: Markers,
    /// When each change was made (milliseconds since the Unix epoch, as the
    /// author's clock said): (first local version, time), ascending.
    pub(crate) times: Vec<(Lv, u64)>,
    /// The newest version: everything in the log.
    pub(crate) version: Frontier,
}

/// Marker events by local version, ascending: a sorted vector (markers
/// come with new, hence growing, local versions; a map's node would cost
/// more than the few markers of a typical file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Markers(Vec<(Lv, Box<[u8]>)>);

impl Markers {
    fn find(&self, lv: Lv) -> Result<usize, usize> {
        self.0.binary_search_by_key(&lv, |(l, _)| *l)
    }

    /// Adds (or replaces) the marker at `lv`.
    pub(crate) fn insert(&mut self, lv: Lv, payload: Box<[u8]>) {
        match self.find(lv) {
            Ok(i) => {
                if let Some(m) = self.0.get_mut(i) {
                    m.1 = payload;
                }
            }
            Err(i) => self.0.insert(i, (lv, payload)),
        }
    }

    /// The marker at `lv`.
    pub(crate) fn get(&self, lv: Lv) -> Option<&[u8]> {
        self.find(lv).ok().and_then(|i| self.0.get(i)).map(|(_, b)| &b[..])
    }

    /// The first marker's version within `range`.
    pub(crate) fn first_in(&self, range: Range<Lv>) -> Option<Lv> {
        let i = self.find(range.start).unwrap_or_else(|i| i);
        self.0.get(i).map(|(l, _)| *l).filter(|l| *l < range.end)
    }

    /// Every marker, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Lv, &[u8])> + '_ {
        self.0.iter().map(|(l, b)| (*l, &b[..]))
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl OpLog {
    /// Gives back the spare room of short lists (see
    /// [`crate::graph::shrink_short`]): called after each change, so an
    /// idle file with a short history holds what it needs.
    pub(crate) fn shrink_short(&mut self) {
        use crate::graph::shrink_short;
        self.graph.shrink_short();
        shrink_short(&mut self.agents);
        shrink_short(&mut self.lv_to_agent);
        shrink_short(&mut self.agent_to_lv);
        self.agent_to_lv.iter_mut().for_each(shrink_short);
        shrink_short(&mut self.ops);
        shrink_short(&mut self.markers.0);
        shrink_short(&mut self.times);
        if self.content.capacity() <= 1024 {
            self.content.shrink_to_fit();
        }
    }

    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of unit operations.
    pub fn len(&self) -> Lv {
        self.graph.len()
    }

    /// True when nothing was ever done.
    pub fn is_empty(&self) -> bool {
        self.graph.is_empty()
    }

    /// The causal graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The version holding every operation.
    pub fn version(&self) -> &[Lv] {
        &self.version
    }

    /// All operation runs, ascending.
    pub fn ops(&self) -> &[OpRun] {
        &self.ops
    }

    /// The agents that appear in this log.
    pub fn agents(&self) -> &[AgentId] {
        &self.agents
    }

    /// Index of `agent`, adding it if new.
    pub(crate) fn agent_index(&mut self, agent: AgentId) -> u32 {
        if let Some(i) = self.agents.iter().position(|a| *a == agent) {
            return i as u32;
        }
        self.agents.push(agent);
        self.agent_to_lv.push(Vec::new());
        (self.agents.len() - 1) as u32
    }

    /// The next sequence number this log expects from `agent` (0 if none).
    pub fn next_seq(&self, agent: AgentId) -> u64 {
        self.agents
            .iter()
            .position(|a| *a == agent)
            .and_then(|i| self.agent_to_lv[i].last())
            .map_or(0, |&(seq, _, len)| seq + len as u64)
    }

    /// Local version of an event, if this log has it.
    pub fn lv_of(&self, id: EventId) -> Option<Lv> {
        let ai = self.agents.iter().position(|a| *a == id.agent)?;
        let spans = &self.agent_to_lv[ai];
        let i = spans.partition_point(|&(seq, _, _)| seq <= id.seq);
        let &(seq, lv, len) = spans.get(i.checked_sub(1)?)?;
        (id.seq < seq + len as u64).then(|| lv + (id.seq - seq) as usize)
    }

    /// The author and sequence number of a local version.
    pub fn id_of(&self, lv: Lv) -> EventId {
        let s = &self.lv_to_agent[self.lv_to_agent.partition_point(|s| s.lv <= lv) - 1];
        EventId { agent: self.agents[s.agent as usize], seq: s.seq + (lv - s.lv) as u64 }
    }

    /// Agent index and sequence number of `lv`, for tie-breaking.
    pub(crate) fn agent_seq(&self, lv: Lv) -> (AgentId, u64) {
        let id = self.id_of(lv);
        (id.agent, id.seq)
    }

    /// Runs of authors covering `range`, as (range, agent, first seq).
    pub fn authors(&self, range: Range<Lv>) -> impl Iterator<Item = (Range<Lv>, AgentId, u64)> + '_ {
        let first = self.lv_to_agent.partition_point(|s| s.lv + s.len <= range.start);
        self.lv_to_agent[first..].iter().take_while(move |s| s.lv < range.end).map(move |s| {
            let start = s.lv.max(range.start);
            let end = (s.lv + s.len).min(range.end);
            (start..end, self.agents[s.agent as usize], s.seq + (start - s.lv) as u64)
        })
    }

    /// The time of the change holding `lv`.
    pub fn time_of(&self, lv: Lv) -> u64 {
        let i = self.times.partition_point(|&(l, _)| l <= lv);
        i.checked_sub(1).map_or(0, |i| self.times[i].1)
    }

    /// The marker event at `lv`, if it is one.
    pub fn marker(&self, lv: Lv) -> Option<&[u8]> {
        self.markers.get(lv)
    }

    /// All marker events, ascending.
    pub fn markers(&self) -> impl Iterator<Item = (Lv, &[u8])> + '_ {
        self.markers.iter()
    }

    fn note_time(&mut self, lv: Lv, time: u64) {
        if self.times.last().is_none_or(|&(_, t)| t != time) {
            self.times.push((lv, time));
        }
    }

    /// Appends a marker event (one local version) carrying `payload`.
    pub(crate) fn push_marker(&mut self, agent: u32, seq: u64, parents: &[Lv], payload: &[u8], time: u64) -> Lv {
        let range = self.assign(agent, seq, 1);
        self.graph.push(parents, range.clone());
        Graph::advance_frontier(&mut self.version, parents, range.clone());
        self.note_time(range.start, time);
        self.markers.insert(range.start, payload.into());
        range.start
    }

    fn assign(&mut self, agent: u32, seq: u64, len: usize) -> Range<Lv> {
        let lv = self.len();
        if let Some(last) = self.lv_to_agent.last_mut() {
            if last.agent == agent && last.lv + last.len == lv && last.seq + last.len as u64 == seq {
                last.len += len;
            } else {
                self.lv_to_agent.push(AgentSpan { lv, len, agent, seq });
            }
        } else {
            self.lv_to_agent.push(AgentSpan { lv, len, agent, seq });
        }
        let spans = &mut self.agent_to_lv[agent as usize];
        match spans.last_mut() {
            Some(last) if last.0 + last.2 as u64 == seq && last.1 + last.2 == lv => last.2 += len,
            _ => spans.push((seq, lv, len)),
        }
        lv..lv + len
    }

    /// Appends one run (an insert of `text` or a delete of `del_len`
    /// characters) made by `agent` as sequence numbers `seq..`, on top of
    /// `parents`. The caller guarantees causal order and fresh sequence
    /// numbers. Returns the new local versions.
    pub(crate) fn push_op(&mut self, agent: u32, seq: u64, parents: &[Lv], pos: usize, op: PushOp<'_>, time: u64) -> Range<Lv> {
        let len = op.len();
        if len == 0 {
            return self.len()..self.len();
        }
        let range = self.assign(agent, seq, len);
        self.graph.push(parents, range.clone());
        Graph::advance_frontier(&mut self.version, parents, range.clone());
        self.note_time(range.start, time);
        let linear = parents.len() == 1 && parents[0] + 1 == range.start;
        match op {
            PushOp::Ins(s) => {
                let start = self.content.len();
                self.content.push_str(s);
                if let Some(last) = self.ops.last_mut() {
                    if linear
                        && matches!(last.kind, OpKind::Ins { .. })
                        && last.lv + last.len == range.start
                        && last.pos + last.len == pos
                    {
                        last.len += len;
                        return range;
                    }
                }
                self.ops.push(OpRun { lv: range.start, len, pos, kind: OpKind::Ins { content: start } });
            }
            PushOp::Del { len, fwd } => {
                if let Some(last) = self.ops.last_mut() {
                    if linear && last.lv + last.len == range.start {
                        if let OpKind::Del { fwd: lf } = last.kind {
                            // Delete key again at the same place.
                            if lf && fwd && pos == last.pos {
                                last.len += len;
                                return range;
                            }
                            // Backspace again just before.
                            if (!lf || last.len == 1) && len == 1 && pos + 1 == last.pos {
                                last.len += 1;
                                last.pos = pos;
                                last.kind = OpKind::Del { fwd: false };
                                return range;
                            }
                        }
                    }
                }
                self.ops.push(OpRun { lv: range.start, len, pos, kind: OpKind::Del { fwd } });
            }
            PushOp::Marker(m) => {
                self.markers.insert(range.start, m.into());
            }
        }
        range
    }

    /// Index of the op run holding `lv`.
    fn op_idx(&self, lv: Lv) -> usize {
        self.ops.partition_point(|o| o.lv + o.len <= lv)
    }

    /// The operations in `range`, cut to it, ascending.
    pub fn ops_in(&self, range: Range<Lv>) -> impl Iterator<Item = OpSlice<'_>> + '_ {
        let first = self.op_idx(range.start);
        self.ops[first..].iter().take_while(move |o| o.lv < range.end).map(move |o| {
            let start = o.lv.max(range.start);
            let end = (o.lv + o.len).min(range.end);
            self.slice(o, start - o.lv, end - o.lv)
        })
    }

    /// Unit operations `from..to` of run `o`, as a run of their own.
    fn slice<'a>(&'a self, o: &OpRun, from: usize, to: usize) -> OpSlice<'a> {
        let len = to - from;
        match o.kind {
            OpKind::Ins { content } => {
                let run_text = self.run_text(o, content);
                let text = if from == 0 && to == o.len {
                    run_text
                } else {
                    let b0 = char_to_byte(run_text, from);
                    let b1 = b0 + char_to_byte(&run_text[b0..], len);
                    &run_text[b0..b1]
                };
                OpSlice { lv: o.lv + from, len, pos: o.pos + from, text: Some(text), fwd: true }
            }
            OpKind::Del { fwd } => {
                // Forward: every op deletes at `pos`. Backward: op i deletes at
                // pos + len - 1 - i, so ops from..to cover the tail end first.
                let pos = if fwd { o.pos } else { o.pos + o.len - to };
                OpSlice { lv: o.lv + from, len, pos, text: None, fwd }
            }
        }
    }

    /// The whole text of an insert run.
    fn run_text<'a>(&'a self, o: &OpRun, content: usize) -> &'a str {
        let rest = &self.content[content..];
        &rest[..char_to_byte(rest, o.len)]
    }
}

/// A run of operations in a form another replica can take: one author,
/// consecutive sequence numbers, one set of parents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedRun {
    /// Id of the first unit operation.
    pub id: EventId,
    /// Parents of the first unit operation.
    pub parents: Vec<EventId>,
    /// Position in the parents' version.
    pub pos: usize,
    /// What it does.
    pub kind: ExportedKind,
    /// When it was made (ms since the Unix epoch, author's clock).
    pub time: u64,
}

/// What an [`ExportedRun`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportedKind {
    /// Insert this text.
    Ins(String),
    /// Delete this many characters, forward or backward.
    Del {
        /// Number of characters.
        len: usize,
        /// Direction.
        fwd: bool,
    },
    /// A marker event with its payload.
    Marker(Vec<u8>),
}

impl ExportedRun {
    /// Number of unit operations.
    pub fn len(&self) -> usize {
        match &self.kind {
            ExportedKind::Ins(s) => s.chars().count(),
            ExportedKind::Del { len, .. } => *len,
            ExportedKind::Marker(_) => 1,
        }
    }
    /// True for an empty run (never produced by [`OpLog::export`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// About how many bytes the run takes encoded (never less): what
    /// batches are capped by.
    pub fn encoded_bound(&self) -> usize {
        let body = match &self.kind {
            ExportedKind::Ins(s) => s.len(),
            ExportedKind::Del { .. } => 0,
            ExportedKind::Marker(p) => p.len(),
        };
        // id, position, time, kind and length varints; each parent.
        64 + 32 * self.parents.len() + body
    }
}

impl OpLog {
    /// Every operation the other side lacks, in causal order, given how many
    /// operations of each agent it has (`have(agent)` = its next sequence
    /// number).
    pub fn export(&self, have: impl Fn(AgentId) -> u64) -> Vec<ExportedRun> {
        let mut out = Vec::new();
        for s in &self.lv_to_agent {
            let agent = self.agents[s.agent as usize];
            let h = have(agent);
            let end_seq = s.seq + s.len as u64;
            if h >= end_seq {
                continue;
            }
            let start = s.lv + h.saturating_sub(s.seq) as usize;
            self.export_range(start..s.lv + s.len, &mut out);
        }
        out
    }

    /// Appends the operations `range` (one author) to `out`, cut at graph
    /// entries and op runs.
    pub(crate) fn export_range(&self, range: Range<Lv>, out: &mut Vec<ExportedRun>) {
        let mut lv = range.start;
        while lv < range.end {
            let e = self.graph.entry_of(lv);
            let end = e.end.min(range.end);
            let parents = if lv == e.start { e.parents.clone() } else { smallvec::smallvec![lv - 1] };
            let mut parents: Vec<EventId> = parents.iter().map(|&p| self.id_of(p)).collect();
            // Text runs and markers interleave; walk both in order, also
            // cutting where the change time changes.
            let mut at = lv;
            while at < end {
                let (kind, pos, len) = if let Some(m) = self.markers.get(at) {
                    (ExportedKind::Marker(m.to_vec()), 0, 1)
                } else {
                    let next_marker = self.markers.first_in(at..end).unwrap_or(end);
                    let next_time = self.times.get(self.times.partition_point(|&(l, _)| l <= at)).map_or(end, |&(l, _)| l);
                    let op = self
                        .ops_in(at..next_marker.min(next_time).min(end))
                        .next()
                        .expect("every version is an op or a marker");
                    let kind = match op.text {
                        Some(t) => ExportedKind::Ins(t.to_owned()),
                        None => ExportedKind::Del { len: op.len, fwd: op.fwd },
                    };
                    (kind, op.pos, op.len)
                };
                let id = self.id_of(at);
                let time = self.time_of(at);
                out.push(ExportedRun { id, parents: std::mem::take(&mut parents), pos, kind, time });
                parents = vec![EventId { agent: id.agent, seq: id.seq + len as u64 - 1 }];
                at += len;
            }
            lv = end;
        }
    }
}

/// One edit to append.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PushOp<'a> {
    Ins(&'a str),
    Del { len: usize, fwd: bool },
    Marker(&'a [u8]),
}

impl PushOp<'_> {
    /// Number of unit operations.
    pub(crate) fn len(&self) -> usize {
        match self {
            PushOp::Ins(s) => s.chars().count(),
            PushOp::Del { len, .. } => *len,
            PushOp::Marker(_) => 1,
        }
    }
}

/// Byte offset of the `chars`-th character of `s` (or its length).
pub(crate) fn char_to_byte(s: &str, chars: usize) -> usize {
    if s.len() == chars && s.is_ascii() {
        return chars;
    }
    s.char_indices().nth(chars).map_or(s.len(), |(b, _)| b)
}
