//! The encoded history of one text document.
//!
//! Layout (all numbers varints unless noted):
//!
//! ```text
//! "FSTX" version=1
//! agents:  n, n × 16 raw bytes
//! authors: n, n × (agent index, first seq, len)        local versions implicit
//! graph:   n, n × (len, parent count, parents as start - parent)
//! ops:     n, n × (len << 2 | kind, then by kind:)    kind 0 ins, 1 del, 2 backspace:
//!            position delta; kind 3 marker (len 1): payload bytes
//! times:   n, n × (first local version delta, time delta (signed))
//! content: 0, bytes (raw) | 1, uncompressed len, lz4 bytes
//! ```
//!
//! Runs (of authors, of causal history, of operations) are what make it
//! small: a typed paragraph is one entry in each list. Positions are stored
//! relative to where the previous run ended, so typing and backspacing cost a
//! byte or two. Decoding checks that the three run lists cover the same local
//! versions and that every reference points backwards, so a decoded log is
//! always a well-formed causal history.

// Parses what peers, users and the disk send: no slicing or indexing that
// can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use super::oplog::{AgentSpan, OpKind, OpLog, OpRun};
use crate::encoding::{DecodeError, Reader, Writer};
use crate::graph::{Frontier, Graph};
use crate::ids::AgentId;

const MAGIC: &[u8; 4] = b"FSTX";
const VERSION: u64 = 1;
/// Content below this is stored raw: compressing it gains nothing.
const COMPRESS_MIN: usize = 256;

impl OpLog {
    /// Encodes the whole history.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC);
        w.varint(VERSION);
        w.usize(self.agents.len());
        for a in &self.agents {
            w.raw(&a.0);
        }
        w.usize(self.lv_to_agent.len());
        for s in &self.lv_to_agent {
            w.varint(s.agent as u64);
            w.varint(s.seq);
            w.usize(s.len);
        }
        let entries = self.graph.entries();
        w.usize(entries.len());
        for e in entries {
            w.usize(e.end - e.start);
            w.usize(e.parents.len());
            for &p in &e.parents {
                w.usize(e.start - p);
            }
        }
        w.usize(self.ops.len() + self.markers.len());
        let mut prev_end = 0i64;
        let mut markers = self.markers.iter().peekable();
        for o in &self.ops {
            while let Some((lv, payload)) = markers.next_if(|(lv, _)| *lv < o.lv) {
                let _ = lv;
                w.usize(1 << 2 | 3);
                w.bytes(payload);
            }
            let kind = match o.kind {
                OpKind::Ins { .. } => 0,
                OpKind::Del { fwd: true } => 1,
                OpKind::Del { fwd: false } => 2,
            };
            w.usize(o.len << 2 | kind);
            w.signed(o.pos as i64 - prev_end);
            prev_end = match o.kind {
                OpKind::Ins { .. } => (o.pos + o.len) as i64,
                OpKind::Del { .. } => o.pos as i64,
            };
        }
        for (_, payload) in markers {
            w.usize(1 << 2 | 3);
            w.bytes(payload);
        }
        w.usize(self.times.len());
        let (mut prev_lv, mut prev_time) = (0usize, 0i64);
        for &(lv, time) in &self.times {
            w.usize(lv - prev_lv);
            w.signed(time as i64 - prev_time);
            (prev_lv, prev_time) = (lv, time as i64);
        }
        let content = self.content.as_bytes();
        if content.len() >= COMPRESS_MIN {
            w.u8(1);
            w.usize(content.len());
            w.bytes(&lz4_flex::block::compress(content));
        } else {
            w.u8(0);
            w.bytes(content);
        }
        w.into_bytes()
    }

    /// Decodes a history written by [`OpLog::encode`].
    pub fn decode(bytes: &[u8]) -> Result<OpLog, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(MAGIC, "text history")?;
        let version = r.varint()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let mut log = OpLog::new();

        let n = r.count(16)?;
        for _ in 0..n {
            let mut id = [0u8; 16];
            id.copy_from_slice(r.raw(16)?);
            if log.agents.contains(&AgentId(id)) {
                return Err(DecodeError::Invalid("agent listed twice"));
            }
            log.agents.push(AgentId(id));
            log.agent_to_lv.push(Vec::new());
        }

        let n = r.count(3)?;
        let mut total = 0usize;
        for _ in 0..n {
            let agent = r.usize_max(log.agents.len().saturating_sub(1))?;
            if log.agents.is_empty() {
                return Err(DecodeError::Invalid("author without agents"));
            }
            let seq = r.varint()?;
            let len = r.usize_max(u32::MAX as usize)?;
            let seq_end = seq.checked_add(len as u64).ok_or(DecodeError::Invalid("sequence overflow"))?;
            if len == 0 {
                return Err(DecodeError::Invalid("empty author run"));
            }
            let spans = log.agent_to_lv.get_mut(agent).ok_or(DecodeError::Invalid("author without agents"))?;
            if let Some(&(s, _, l)) = spans.last() {
                if seq < s + l as u64 {
                    return Err(DecodeError::Invalid("sequence numbers go backwards"));
                }
            }
            let _ = seq_end;
            spans.push((seq, total, len));
            log.lv_to_agent.push(AgentSpan { lv: total, len, agent: agent as u32, seq });
            total = total.checked_add(len).ok_or(DecodeError::Invalid("too many operations"))?;
        }

        let n = r.count(2)?;
        let mut graph = Graph::new();
        let mut version = Frontier::new();
        for _ in 0..n {
            let start = graph.len();
            let len = r.usize_max(total - start)?;
            if len == 0 {
                return Err(DecodeError::Invalid("empty history run"));
            }
            let np = r.count(1)?;
            let mut parents = Frontier::new();
            for _ in 0..np {
                let back = r.usize_max(start)?;
                if back == 0 {
                    return Err(DecodeError::Invalid("operation is its own parent"));
                }
                parents.push(start - back);
            }
            parents.sort_unstable();
            parents.dedup();
            graph.push(&parents, start..start + len);
            Graph::advance_frontier(&mut version, &parents, start..start + len);
        }
        if graph.len() != total {
            return Err(DecodeError::Invalid("history and authors disagree"));
        }

        let n = r.count(2)?;
        let mut lv = 0usize;
        let mut prev_end = 0i64;
        let mut ins_chars = 0usize;
        for _ in 0..n {
            let header = r.usize_max(usize::MAX)?;
            let len = header >> 2;
            if len == 0 || len > total - lv {
                return Err(DecodeError::Invalid("operation run length"));
            }
            if header & 3 == 3 {
                if len != 1 {
                    return Err(DecodeError::Invalid("marker length"));
                }
                log.markers.insert(lv, r.bytes()?.into());
                lv += 1;
                continue;
            }
            let pos = prev_end.checked_add(r.signed()?).ok_or(DecodeError::Invalid("position"))?;
            let pos = usize::try_from(pos).map_err(|_| DecodeError::Invalid("negative position"))?;
            let kind = match header & 3 {
                0 => OpKind::Ins { content: 0 },
                1 => OpKind::Del { fwd: true },
                _ => OpKind::Del { fwd: false },
            };
            prev_end = match kind {
                OpKind::Ins { .. } => {
                    ins_chars += len;
                    pos.checked_add(len).ok_or(DecodeError::Invalid("position"))? as i64
                }
                OpKind::Del { .. } => pos as i64,
            };
            log.ops.push(OpRun { lv, len, pos, kind });
            lv += len;
        }
        if lv != total {
            return Err(DecodeError::Invalid("operations and history disagree"));
        }
        let n = r.count(2)?;
        let (mut prev_lv, mut prev_time) = (0usize, 0i64);
        for i in 0..n {
            let lv = prev_lv.checked_add(r.usize_max(total)?).ok_or(DecodeError::Invalid("time index"))?;
            if lv >= total || (i > 0 && lv == prev_lv) {
                return Err(DecodeError::Invalid("time index"));
            }
            let time = prev_time.checked_add(r.signed()?).ok_or(DecodeError::Invalid("time"))?;
            log.times.push((lv, time.max(0) as u64));
            (prev_lv, prev_time) = (lv, time);
        }

        let content = match r.u8()? {
            0 => r.str()?.to_owned(),
            1 => {
                let len = r.usize_max(ins_chars.saturating_mul(4))?;
                let packed = r.bytes()?;
                // lz4 expands at most ~255x; refuse claims beyond that.
                if len > packed.len().saturating_mul(255) + 16 {
                    return Err(DecodeError::BadCompression);
                }
                let raw = lz4_flex::block::decompress(packed, len).map_err(|_| DecodeError::BadCompression)?;
                String::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?
            }
            _ => return Err(DecodeError::Invalid("content flag")),
        };
        r.finish()?;
        // Give every insert run its byte offset in the content.
        let mut chars = content.char_indices().map(|(b, _)| b).chain(std::iter::once(content.len()));
        let mut at = 0usize;
        for o in &mut log.ops {
            if let OpKind::Ins { content: c } = &mut o.kind {
                *c = chars.next().ok_or(DecodeError::Invalid("content shorter than inserts"))?;
                at += o.len;
                // Skip the rest of this run's characters.
                for _ in 1..o.len {
                    chars.next();
                }
            }
        }
        if content.chars().count() != at {
            return Err(DecodeError::Invalid("content length differs from inserts"));
        }
        log.content = content;
        log.graph = graph;
        log.version = version;
        Ok(log)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::string_slice)]
mod tests {
    use super::*;
    use crate::text::{Edit, TextDoc};
    use proptest::prelude::*;

    fn sample() -> TextDoc {
        let mut d = TextDoc::new();
        let a = AgentId::from_index(1);
        let mut s = 0;
        for (pos, del, ins) in [(0, 0, "héllo wörld, a longer line of text 😀"), (5, 3, "XY"), (2, 0, "ab"), (10, 1, "")] {
            s = d.local_edit_at(a, s, &Edit { pos, del, ins: ins.into() }, 1_700_000_000_000 + s).end;
            d.local_marker(a, s, b"meta", 1_700_000_000_500 + s);
            s += 1;
        }
        d
    }

    #[test]
    fn round_trip() {
        let d = sample();
        let bytes = d.oplog().encode();
        let back = OpLog::decode(&bytes).expect("decodes");
        assert_eq!(back.markers().count(), 4);
        assert_eq!(back.times, d.oplog().times);
        assert_eq!(back.encode(), bytes);
        assert_eq!(TextDoc::from_oplog(back).text(), d.text());
    }

    #[test]
    fn newer_version_is_refused() {
        let mut bytes = sample().oplog().encode();
        bytes[4] = 9;
        assert_eq!(OpLog::decode(&bytes).err(), Some(DecodeError::UnsupportedVersion(9)));
    }

    proptest! {
        #[test]
        fn truncated_or_mutated_bytes_never_panic(cut in 0usize..200, flip in 0usize..200, bit in 0u8..8) {
            let bytes = sample().oplog().encode();
            let cut = cut.min(bytes.len());
            let _ = OpLog::decode(&bytes[..cut]);
            let mut m = bytes.clone();
            let i = flip % m.len();
            m[i] ^= 1 << bit;
            if let Ok(log) = OpLog::decode(&m) {
                // A log that decodes is well formed enough to check out.
                let _ = TextDoc::from_oplog(log).text();
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = OpLog::decode(&bytes);
            let mut with_magic = b"FSTX\x01".to_vec();
            with_magic.extend_from_slice(&bytes);
            if let Ok(log) = OpLog::decode(&with_magic) {
                let _ = TextDoc::from_oplog(log).text();
            }
        }
    }
}
