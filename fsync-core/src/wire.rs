//! Messages of the sync protocol, and their encoding.
//!
//! Each message is `version, tag, body`. Agent ids are written once per
//! message in a table and referred to by index, so a batch of changes from a
//! few devices costs a few bytes per run. Decoding is bounded by the input
//! (see [`crate::encoding`]) and validates what it can without the folder:
//! names, chunk sizes, lengths.

// Parses what peers, users and the disk send: no slicing or indexing that
// can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use crate::chunks::{ChunkHash, MAX_CHUNK};
use crate::encoding::{DecodeError, Reader, Writer};
use crate::folder::{Changes, EntryId, Meta, VersionVector};
use crate::ids::{AgentId, EventId};
use crate::text::{ExportedKind, ExportedRun};

const VERSION: u8 = 1;

/// One protocol message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// What the sender has; the receiver answers with what it lacks.
    Summary(VersionVector),
    /// Events the receiver lacks, in causal order.
    Changes(Changes),
    /// Please send these chunks.
    WantChunks(Vec<ChunkHash>),
    /// A chunk's bytes (checked against the hash on receipt).
    Chunk(ChunkHash, Vec<u8>),
    /// The sender does not have this chunk.
    NoChunk(ChunkHash),
}

struct Agents {
    list: Vec<AgentId>,
}

impl Agents {
    fn index(&mut self, a: AgentId) -> usize {
        match self.list.iter().position(|x| *x == a) {
            Some(i) => i,
            None => {
                self.list.push(a);
                self.list.len() - 1
            }
        }
    }
}

fn put_id(w: &mut Writer, agents: &mut Agents, id: EventId) {
    w.usize(agents.index(id.agent));
    w.varint(id.seq);
}

fn get_id(r: &mut Reader<'_>, agents: &[AgentId]) -> Result<EventId, DecodeError> {
    let i = r.usize_max(agents.len().saturating_sub(1))?;
    let agent = *agents.get(i).ok_or(DecodeError::Invalid("agent index"))?;
    Ok(EventId { agent, seq: r.varint()? })
}

/// Writes a version vector (also used by stores).
pub fn put_version_vector(w: &mut Writer, vv: &VersionVector) {
    w.usize(vv.len());
    for (a, s) in vv {
        w.raw(&a.0);
        w.varint(*s);
    }
}

/// Reads what [`put_version_vector`] wrote.
pub fn get_version_vector(r: &mut Reader<'_>) -> Result<VersionVector, DecodeError> {
    let n = r.count(17)?;
    let mut vv = VersionVector::new();
    for _ in 0..n {
        let mut a = [0u8; 16];
        a.copy_from_slice(r.raw(16)?);
        vv.insert(AgentId(a), r.varint()?);
    }
    Ok(vv)
}

fn get_hash(r: &mut Reader<'_>) -> Result<ChunkHash, DecodeError> {
    let mut h = [0u8; 32];
    h.copy_from_slice(r.raw(32)?);
    Ok(ChunkHash(h))
}

impl Message {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        match self {
            Message::Summary(vv) => {
                w.u8(0);
                put_version_vector(&mut w, vv);
            }
            Message::Changes(c) => {
                w.u8(1);
                // Body first (collecting agents), then the table before it.
                let mut agents = Agents { list: Vec::new() };
                let mut body = Writer::new();
                body.usize(c.runs.len());
                for (entry, run) in &c.runs {
                    put_id(&mut body, &mut agents, entry.0);
                    put_id(&mut body, &mut agents, run.id);
                    body.usize(run.parents.len());
                    for p in &run.parents {
                        put_id(&mut body, &mut agents, *p);
                    }
                    body.varint(run.time);
                    match &run.kind {
                        ExportedKind::Ins(s) => {
                            body.u8(0);
                            body.usize(run.pos);
                            body.str(s);
                        }
                        ExportedKind::Del { len, fwd } => {
                            body.u8(if *fwd { 1 } else { 2 });
                            body.usize(run.pos);
                            body.usize(*len);
                        }
                        ExportedKind::Marker(m) => {
                            body.u8(3);
                            body.bytes(m);
                        }
                    }
                }
                w.usize(agents.list.len());
                for a in &agents.list {
                    w.raw(&a.0);
                }
                w.raw(&body.into_bytes());
            }
            Message::WantChunks(hs) => {
                w.u8(2);
                w.usize(hs.len());
                for h in hs {
                    w.raw(&h.0);
                }
            }
            Message::Chunk(h, bytes) => {
                w.u8(3);
                w.raw(&h.0);
                w.bytes(bytes);
            }
            Message::NoChunk(h) => {
                w.u8(4);
                w.raw(&h.0);
            }
        }
        w.into_bytes()
    }

    /// Decodes a message from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8()?;
        if v != VERSION {
            return Err(DecodeError::UnsupportedVersion(v as u64));
        }
        let m = match r.u8()? {
            0 => Message::Summary(get_version_vector(&mut r)?),
            1 => {
                let n = r.count(16)?;
                let mut agents = Vec::with_capacity(n);
                for _ in 0..n {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(r.raw(16)?);
                    agents.push(AgentId(a));
                }
                let n = r.count(6)?;
                let mut runs = Vec::with_capacity(n);
                for _ in 0..n {
                    let entry = EntryId(get_id(&mut r, &agents)?);
                    let id = get_id(&mut r, &agents)?;
                    let np = r.count(2)?;
                    let mut parents = Vec::with_capacity(np);
                    for _ in 0..np {
                        parents.push(get_id(&mut r, &agents)?);
                    }
                    let time = r.varint()?;
                    let (pos, kind) = match r.u8()? {
                        0 => {
                            let pos = r.usize_max(u32::MAX as usize * 16)?;
                            let s = r.str()?;
                            if s.is_empty() {
                                return Err(DecodeError::Invalid("empty insert"));
                            }
                            (pos, ExportedKind::Ins(s.to_owned()))
                        }
                        t @ (1 | 2) => {
                            let pos = r.usize_max(u32::MAX as usize * 16)?;
                            let len = r.usize_max(u32::MAX as usize * 16)?;
                            if len == 0 {
                                return Err(DecodeError::Invalid("empty delete"));
                            }
                            (pos, ExportedKind::Del { len, fwd: t == 1 })
                        }
                        3 => {
                            let m = r.bytes()?;
                            Meta::decode(m)?;
                            (0, ExportedKind::Marker(m.to_vec()))
                        }
                        _ => return Err(DecodeError::Invalid("run kind")),
                    };
                    if id.seq.checked_add(kind_len(&kind)).is_none() {
                        return Err(DecodeError::Invalid("sequence overflow"));
                    }
                    runs.push((entry, ExportedRun { id, parents, pos, kind, time }));
                }
                Message::Changes(Changes { runs })
            }
            2 => {
                let n = r.count(32)?;
                let mut hs = Vec::with_capacity(n);
                for _ in 0..n {
                    hs.push(get_hash(&mut r)?);
                }
                Message::WantChunks(hs)
            }
            3 => {
                let h = get_hash(&mut r)?;
                let b = r.bytes()?;
                if b.len() > MAX_CHUNK as usize {
                    return Err(DecodeError::Invalid("chunk larger than the maximum"));
                }
                Message::Chunk(h, b.to_vec())
            }
            4 => Message::NoChunk(get_hash(&mut r)?),
            _ => return Err(DecodeError::Invalid("message kind")),
        };
        r.finish()?;
        Ok(m)
    }
}

fn kind_len(k: &ExportedKind) -> u64 {
    match k {
        ExportedKind::Ins(s) => s.chars().count() as u64,
        ExportedKind::Del { len, .. } => *len as u64,
        ExportedKind::Marker(_) => 1,
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::string_slice)]
mod tests {
    use super::*;
    use crate::folder::{Folder, Kind};
    use proptest::prelude::*;

    fn sample() -> Vec<Message> {
        let mut f = Folder::new(AgentId::from_index(1));
        let id = f.create("a/b.txt", Kind::File, 5).expect("create");
        f.set_text(id, "héllo", 6).expect("write");
        f.set_text(id, "hé", 7).expect("write");
        let (c, _) = f.changes_since(&VersionVector::new(), 0, usize::MAX);
        vec![
            Message::Summary(f.version_vector().clone()),
            Message::Changes(c),
            Message::WantChunks(vec![ChunkHash::of(b"x")]),
            Message::Chunk(ChunkHash::of(b"x"), b"x".to_vec()),
            Message::NoChunk(ChunkHash::of(b"y")),
        ]
    }

    #[test]
    fn round_trip() {
        for m in sample() {
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    proptest! {
        #[test]
        fn truncated_and_mutated_messages_never_panic(which in 0usize..5, cut in 0usize..400, flip in 0usize..400, bit in 0u8..8) {
            let bytes = sample()[which].encode();
            let _ = Message::decode(&bytes[..cut.min(bytes.len())]);
            let mut m = bytes.clone();
            let i = flip % m.len();
            m[i] ^= 1 << bit;
            let _ = Message::decode(&m);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Message::decode(&bytes);
        }
    }
}
