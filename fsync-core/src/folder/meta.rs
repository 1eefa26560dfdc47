//! Metadata events of an entry, and path validation.

// Parses what peers, users and the disk send: no slicing or indexing that
// can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use crate::chunks::{ChunkHash, ChunkRef, MAX_CHUNK};
use crate::encoding::{DecodeError, Reader, Writer};
use crate::ids::{AgentId, EventId};

/// An entry's identity everywhere: the id of the event that created it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct EntryId(pub EventId);

/// What an entry is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// A regular file (text or binary).
    File,
    /// A directory.
    Dir,
    /// A symbolic link (synced as a link, never followed).
    Symlink,
}

impl Kind {
    /// The kind as users read it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
        }
    }
}

/// A metadata event. Every entry starts with `Create`; the others are
/// registers over the entry's causal graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Meta {
    /// The entry comes into being at `parent`/`name` (`None` = folder root).
    Create {
        /// File, directory or link.
        kind: Kind,
        /// Containing directory.
        parent: Option<EntryId>,
        /// Name in it.
        name: String,
    },
    /// Rename or move.
    Move {
        /// New containing directory.
        parent: Option<EntryId>,
        /// New name.
        name: String,
    },
    /// Deletion; undone by any concurrent or later event.
    Delete,
    /// The executable bit.
    Exec(bool),
    /// The content becomes these bytes (binary files).
    Binary {
        /// Total size in bytes.
        size: u64,
        /// The chunks, in order.
        chunks: Vec<ChunkRef>,
    },
    /// The content becomes the text of the entry's text history.
    Text,
    /// A symlink's target.
    Link(String),
}

/// Longest name in bytes (as on common filesystems).
pub const MAX_NAME: usize = 255;

/// Why a path or name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Empty path or name.
    #[error("empty path")]
    Empty,
    /// Starts at `/`: paths are relative to the shared folder.
    #[error("absolute path {0:?}: paths must be relative to the shared folder")]
    Absolute(String),
    /// `.`, `..`, an empty component, or a name with `/` or NUL.
    #[error("invalid name {0:?} (., .., empty, '/' and NUL are not allowed)")]
    InvalidName(String),
    /// Longer than [`MAX_NAME`].
    #[error("name longer than {MAX_NAME} bytes")]
    TooLong,
}

/// Checks one name: no way for it to leave its directory.
pub fn validate_name(name: &str) -> Result<(), PathError> {
    if name.is_empty() {
        return Err(PathError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(PathError::TooLong);
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(PathError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// True when `path` is `dir` or below it (`dir` empty: the root, which
/// holds everything).
pub fn within(path: &str, dir: &str) -> bool {
    dir.is_empty() || path.strip_prefix(dir).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Splits a relative path into validated names.
pub fn split_path(path: &str) -> Result<Vec<&str>, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute(path.to_owned()));
    }
    let parts: Vec<&str> = path.split('/').collect();
    for p in &parts {
        validate_name(p).map_err(|e| match e {
            PathError::Empty => PathError::InvalidName(path.to_owned()),
            e => e,
        })?;
    }
    Ok(parts)
}

pub(crate) fn put_entry(w: &mut Writer, e: Option<EntryId>) {
    match e {
        None => w.u8(0),
        Some(EntryId(id)) => {
            w.u8(1);
            w.raw(&id.agent.0);
            w.varint(id.seq);
        }
    }
}

pub(crate) fn get_entry(r: &mut Reader<'_>) -> Result<Option<EntryId>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(r.raw(16)?);
            Ok(Some(EntryId(EventId { agent: AgentId(a), seq: r.varint()? })))
        }
        _ => Err(DecodeError::Invalid("entry reference")),
    }
}

fn get_name(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let name = r.str()?;
    validate_name(name).map_err(|_| DecodeError::Invalid("file name"))?;
    Ok(name.to_owned())
}

impl Meta {
    /// The payload of a marker event.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Meta::Create { kind, parent, name } => {
                w.u8(match kind {
                    Kind::File => 0,
                    Kind::Dir => 1,
                    Kind::Symlink => 2,
                });
                put_entry(&mut w, *parent);
                w.str(name);
            }
            Meta::Move { parent, name } => {
                w.u8(3);
                put_entry(&mut w, *parent);
                w.str(name);
            }
            Meta::Delete => w.u8(4),
            Meta::Exec(x) => {
                w.u8(5);
                w.u8(*x as u8);
            }
            Meta::Binary { size, chunks } => {
                w.u8(6);
                w.varint(*size);
                w.usize(chunks.len());
                for c in chunks {
                    w.raw(&c.hash.0);
                    w.varint(c.len as u64);
                }
            }
            Meta::Text => w.u8(7),
            Meta::Link(t) => {
                w.u8(8);
                w.str(t);
            }
        }
        w.into_bytes()
    }

    /// Decodes and validates a payload from anywhere (names can not escape
    /// their directory, chunk sizes add up).
    pub fn decode(bytes: &[u8]) -> Result<Meta, DecodeError> {
        let mut r = Reader::new(bytes);
        let tag = r.u8()?;
        let m = match tag {
            0..=2 => Meta::Create {
                kind: match tag {
                    0 => Kind::File,
                    1 => Kind::Dir,
                    _ => Kind::Symlink,
                },
                parent: get_entry(&mut r)?,
                name: get_name(&mut r)?,
            },
            3 => Meta::Move { parent: get_entry(&mut r)?, name: get_name(&mut r)? },
            4 => Meta::Delete,
            5 => Meta::Exec(r.u8()? != 0),
            6 => {
                let size = r.varint()?;
                let n = r.count(33)?;
                if n > super::MAX_CHUNKS {
                    return Err(DecodeError::Invalid("more chunks than one version may have"));
                }
                let mut chunks = Vec::with_capacity(n);
                let mut total = 0u64;
                for _ in 0..n {
                    let mut h = [0u8; 32];
                    h.copy_from_slice(r.raw(32)?);
                    let len = r.usize_max(MAX_CHUNK as usize)? as u32;
                    if len == 0 {
                        return Err(DecodeError::Invalid("empty chunk"));
                    }
                    total += len as u64;
                    chunks.push(ChunkRef { hash: ChunkHash(h), len });
                }
                if total != size {
                    return Err(DecodeError::Invalid("chunk sizes do not add up"));
                }
                Meta::Binary { size, chunks }
            }
            7 => Meta::Text,
            8 => {
                let t = r.str()?;
                if t.is_empty() || t.contains('\0') || t.len() > 4096 {
                    return Err(DecodeError::Invalid("link target"));
                }
                Meta::Link(t.to_owned())
            }
            _ => return Err(DecodeError::Invalid("metadata kind")),
        };
        r.finish()?;
        Ok(m)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::string_slice)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "a\0b", "a/"] {
            assert!(split_path(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(split_path("a/b c/d.txt"), Ok(vec!["a", "b c", "d.txt"]));
        assert!(validate_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn meta_round_trip_and_validation() {
        let e = Some(EntryId(EventId { agent: AgentId::from_index(3), seq: 9 }));
        let all = [
            Meta::Create { kind: Kind::Dir, parent: e, name: "d".into() },
            Meta::Move { parent: None, name: "n".into() },
            Meta::Delete,
            Meta::Exec(true),
            Meta::Binary { size: 5, chunks: vec![ChunkRef { hash: ChunkHash::of(b"hello"), len: 5 }] },
            Meta::Text,
            Meta::Link("../t".into()),
        ];
        for m in all {
            assert_eq!(Meta::decode(&m.encode()), Ok(m));
        }
        let evil = Meta::Move { parent: None, name: "..".into() }.encode();
        assert!(Meta::decode(&evil).is_err());
        let lying = Meta::Binary { size: 6, chunks: vec![ChunkRef { hash: ChunkHash::of(b"hello"), len: 5 }] };
        assert!(Meta::decode(&lying.encode()).is_err());
    }
}
