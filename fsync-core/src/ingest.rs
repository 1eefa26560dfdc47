//! Content written by someone, taken into a folder: the watcher's scan
//! (a file it read), the FUSE mount (a file written through it) and the
//! HTTP front end (a PUT) record a new content the same way. Text is diffed
//! against what the writer started from and merges with what changed since;
//! binary content is chunked. Pure: the caller reads the bytes.

use crate::chunks::{split, ChunkRef, ChunkStore};
use crate::diff::text_edits;
use crate::folder::{Content, EntryId, Folder, FolderError, Kind};
use crate::EventId;

/// Files above this size are treated as binary (chunked, whole-value
/// merges) even when they are valid UTF-8.
pub const TEXT_MAX: u64 = 4 << 20;

/// What a file holds, read once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Valid UTF-8 without NUL, at most [`TEXT_MAX`] bytes.
    Text(String),
    /// Anything else.
    Binary(Vec<u8>),
    /// Binary content already cut into chunks and stored as it was read
    /// (a big file, never held whole; see [`crate::chunks::split_into`]),
    /// with the hash of the whole content.
    Chunked(Vec<ChunkRef>, crate::chunks::ChunkHash),
    /// A symlink's target.
    Link(String),
    /// A directory.
    Dir,
}

/// Why content could not be taken in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The folder refused the change.
    #[error(transparent)]
    Folder(#[from] FolderError),
    /// The entry is not there.
    #[error("an entry disappeared while being written")]
    Gone,
}

/// Sets a binary content written over `base`, unless it is the content
/// already: what arrived since is concurrent (one wins by the binary rule,
/// both are kept).
fn write_binary(folder: &mut Folder, id: EntryId, base: &[EventId], refs: Vec<ChunkRef>, now: u64) -> Result<(), IngestError> {
    let same = matches!(folder.state(id).map(|s| &s.content), Some(Content::Binary { chunks: c, .. }) if *c == refs);
    if !same {
        folder.write_binary_from(id, base, refs, now)?;
    }
    Ok(())
}

/// Text (valid UTF-8, no NUL, at most [`TEXT_MAX`] bytes) or binary.
pub fn classify(bytes: Vec<u8>) -> Body {
    if bytes.len() as u64 <= TEXT_MAX && !bytes.contains(&0) {
        match String::from_utf8(bytes) {
            Ok(s) => Body::Text(s),
            Err(e) => Body::Binary(e.into_bytes()),
        }
    } else {
        Body::Binary(bytes)
    }
}

/// Records `bytes` as the new content of file `id`, written by someone who
/// started from version `base` (empty: the current one), exactly as a scan
/// takes in a file it read (see [`take_in`]). For writers other than the
/// disk: the FUSE mount, an HTTP PUT of a whole body.
pub fn take_in_bytes(
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    id: EntryId,
    base: &[EventId],
    bytes: Vec<u8>,
    exec: bool,
    now: u64,
) -> Result<Vec<EventId>, IngestError> {
    take_in(folder, chunks, id, base, classify(bytes), exec, now)
}

/// Records `body` as the content of entry `id`, edited from `base` (what
/// the writer read; empty: the current version): text is diffed and merges
/// with what changed since, binary content is chunked into `chunks`.
/// Returns the version the writer holds afterwards (the base of its next
/// change).
pub fn take_in(
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    id: EntryId,
    base: &[EventId],
    body: Body,
    exec: bool,
    now: u64,
) -> Result<Vec<EventId>, IngestError> {
    let doc_version = |f: &Folder| f.doc(id).map(|d| d.version_ids()).unwrap_or_default();
    let current = doc_version(folder);
    let base: Vec<EventId> = if base.is_empty() { current.clone() } else { base.to_vec() };
    // A writer whose content is what the folder holds now (our own write,
    // its index update lost in a crash) or still what it started from (a
    // file only moved or touched) changed no content: whatever arrived
    // since stays (a content of any type, an exec bit), and the
    // write-back brings the disk up to date. Looked at only when something
    // arrived since `base`: otherwise the take-in below changes nothing.
    if base != current {
        let base_lvs = folder.doc(id).and_then(|d| d.lvs_of(&base));
        let was = base_lvs.as_deref().and_then(|lvs| folder.state_at(id, lvs));
        let holds_now = folder.state(id).is_some_and(|s| holds(folder, id, &body, &s.content, None));
        let holds_base = !holds_now
            && was.as_ref().zip(base_lvs.as_deref()).is_some_and(|(w, lvs)| holds(folder, id, &body, &w.content, Some(lvs)));
        if holds_now || holds_base {
            // An exec bit it changed itself is taken.
            if was.is_none_or(|w| w.exec != exec) && folder.state(id).is_some_and(|s| s.kind == Kind::File && s.exec != exec) {
                folder.set_exec(id, exec, now)?;
            }
            return Ok(if holds_now { doc_version(folder) } else { base });
        }
    }
    let ops_before = folder.doc(id).map_or(0, |d| d.oplog().len());
    // The newest of our own text operations, if any (markers added later,
    // like the exec bit, sit on top of the merged version).
    let mut text_tip: Option<EventId> = None;
    match body {
        Body::Dir => {}
        Body::Link(t) => {
            if folder.state(id).map(|s| &s.content) != Some(&Content::Link(t.clone())) {
                folder.set_link(id, &t, now)?;
            }
        }
        Body::Text(t) => {
            let doc = folder.doc(id).ok_or(IngestError::Gone)?;
            let was_text = folder.state(id).is_some_and(|s| s.content == Content::Text);
            let base_text = if base == current {
                doc.text()
            } else {
                match doc.lvs_of(&base) {
                    Some(lvs) => doc.text_at(&lvs),
                    None => doc.text(),
                }
            };
            let edits = text_edits(&base_text, &t);
            if !edits.is_empty() || !was_text {
                folder.edit_text_from(id, &base, &edits, now)?;
                let log = folder.doc(id).ok_or(IngestError::Gone)?.oplog();
                if log.len() > ops_before {
                    text_tip = Some(log.id_of(log.len() - 1));
                }
            }
        }
        Body::Binary(bytes) => write_binary(folder, id, &base, cut(&bytes, chunks), now)?,
        Body::Chunked(refs, _) => write_binary(folder, id, &base, refs, now)?,
    }
    if folder.state(id).is_some_and(|s| s.kind == Kind::File && s.exec != exec) {
        folder.set_exec(id, exec, now)?;
    }
    // If nothing else arrived since `base`, the disk now holds the current
    // version. Otherwise it holds `base` plus our edits, and the write-back
    // brings it up to date with the merge.
    if base == current {
        return Ok(doc_version(folder));
    }
    Ok(text_tip.map_or(base, |t| vec![t]))
}

/// `bytes` cut into chunks, which go into `chunks`.
fn cut(bytes: &[u8], chunks: &mut dyn ChunkStore) -> Vec<ChunkRef> {
    split(bytes)
        .into_iter()
        .map(|(r, b)| {
            chunks.put(r.hash, b);
            r
        })
        .collect()
}

/// True when `body` is `content`, the entry's content at `at` (`None`:
/// now).
fn holds(folder: &Folder, id: EntryId, body: &Body, content: &Content, at: Option<&[crate::Lv]>) -> bool {
    match (body, content) {
        (Body::Text(t), Content::Text) => {
            folder.doc(id).is_some_and(|d| at.map_or_else(|| d.text(), |lvs| d.text_at(lvs)) == *t)
        }
        (Body::Binary(bytes), Content::Binary { size, chunks }) => {
            bytes.len() as u64 == *size && split(bytes).iter().map(|(r, _)| r).eq(chunks.iter())
        }
        (Body::Chunked(refs, _), Content::Binary { chunks, .. }) => chunks == refs,
        (Body::Link(t), Content::Link(l)) => t == l,
        (Body::Dir, Content::None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunks::Chunks;
    use crate::AgentId;

    #[test]
    fn text_from_an_old_base_merges_and_binary_is_chunked() {
        let mut f = Folder::new(AgentId::from_index(1));
        let mut c = Chunks::default();
        let id = f.create("a.txt", Kind::File, 1).expect("create");
        let v1 = take_in_bytes(&mut f, &mut c, id, &[], b"one\ntwo\n".to_vec(), false, 1).expect("text");
        take_in_bytes(&mut f, &mut c, id, &[], b"zero\none\ntwo\n".to_vec(), false, 2).expect("text");
        // Written by someone who read v1: its edit merges with the one since.
        take_in_bytes(&mut f, &mut c, id, &v1, b"one\ntwo\nthree\n".to_vec(), true, 3).expect("text");
        assert_eq!(f.doc(id).expect("doc").text(), "zero\none\ntwo\nthree\n");
        assert!(f.state(id).expect("state").exec);
        assert_eq!(classify(vec![0, 1]), Body::Binary(vec![0, 1]));
        assert_eq!(classify(b"\xff".to_vec()), Body::Binary(vec![0xff]));
        take_in_bytes(&mut f, &mut c, id, &[], vec![0, 1, 2], true, 4).expect("binary");
        assert!(matches!(f.state(id).expect("state").content, Content::Binary { size: 3, .. }));
    }

    /// A writer that wrote back exactly what it read (a file only moved,
    /// or touched) changed nothing: a content of another type, or an exec
    /// bit, that arrived since stays.
    #[test]
    fn a_body_still_at_its_base_takes_nothing_in() {
        let mut f = Folder::new(AgentId::from_index(1));
        let mut c = Chunks::default();
        let id = f.create("a", Kind::File, 1).expect("create");
        let text = take_in_bytes(&mut f, &mut c, id, &[], b"one\n".to_vec(), false, 1).expect("text");
        take_in_bytes(&mut f, &mut c, id, &[], vec![0, 1, 2], false, 2).expect("binary since");
        assert_eq!(take_in_bytes(&mut f, &mut c, id, &text, b"one\n".to_vec(), false, 3).expect("same"), text);
        assert!(matches!(f.state(id).expect("state").content, Content::Binary { size: 3, .. }));
        let bin = f.doc(id).expect("doc").version_ids();
        take_in_bytes(&mut f, &mut c, id, &[], b"two\n".to_vec(), true, 4).expect("text and exec since");
        take_in_bytes(&mut f, &mut c, id, &bin, vec![0, 1, 2], false, 5).expect("same");
        let s = f.state(id).expect("state");
        assert_eq!((&s.content, s.exec), (&Content::Text, true));
        assert_eq!(f.doc(id).expect("doc").text(), "two\n");
        // A change from that base is taken in, as ever.
        take_in_bytes(&mut f, &mut c, id, &bin, vec![0, 1, 2, 3], false, 6).expect("binary");
        assert!(matches!(f.state(id).expect("state").content, Content::Binary { size: 4, .. }));
        // What the folder holds now, from an older base (our own write, its
        // index update lost): nothing new, and the disk holds the version now.
        let (ops, now) = (f.doc(id).expect("doc").oplog().len(), f.doc(id).expect("doc").version_ids());
        assert_eq!(take_in_bytes(&mut f, &mut c, id, &bin, vec![0, 1, 2, 3], false, 7).expect("same"), now);
        assert_eq!(f.doc(id).expect("doc").oplog().len(), ops);
    }
}
