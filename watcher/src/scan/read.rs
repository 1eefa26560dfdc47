//! Contents read once per scan, and compared by what they hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use fsync_core::chunks::ChunkStore;
use fsync_core::folder::{Content, EntryId, Folder, Kind};
use fsync_core::ingest::{classify, Body};

use crate::index::Stat;
use crate::WatchError;

use super::on_disk::OnDisk;
use super::{unreadable, ScanProgress, ScanReport, MAX_FILE, NOT_SYNCED, TEXT_MAX};

pub(super) fn read_counted(
    path: &Path,
    kind: Kind,
    chunks: &mut dyn ChunkStore,
    progress: &ScanProgress,
) -> Result<Body, WatchError> {
    let body = read_body(path, kind, chunks)?;
    let len = match &body {
        Body::Text(t) => t.len(),
        Body::Binary(b) => b.len(),
        Body::Chunked(refs, _) => refs.iter().map(|r| r.len as usize).sum(),
        Body::Link(_) => 0,
        Body::Dir => return Ok(body),
    };
    ScanProgress::add(&progress.read, 1);
    ScanProgress::add(&progress.bytes, len as u64);
    Ok(body)
}

/// What is at `path`. A file over [`TEXT_MAX`] (binary whatever it holds)
/// is cut into `chunks` as it is read, never held whole.
pub(super) fn read_body(path: &Path, kind: Kind, chunks: &mut dyn ChunkStore) -> Result<Body, WatchError> {
    use std::io::{Read, Seek};
    let io = |e| WatchError::io(path, e);
    Ok(match kind {
        Kind::Dir => Body::Dir,
        Kind::Symlink => Body::Link(std::fs::read_link(path).map_err(io)?.to_string_lossy().into_owned()),
        Kind::File => {
            let size = std::fs::symlink_metadata(path).map_err(io)?.len();
            if size > MAX_FILE {
                return Err(WatchError::io(path, std::io::Error::other(format!(
                    "{NOT_SYNCED}: {size} bytes, and fsync syncs files of at most {} GiB (the chunk list of a version must fit one message)",
                    MAX_FILE >> 30
                ))));
            }
            let mut f = std::fs::File::open(path).map_err(io)?;
            let mut small = Vec::new();
            (&mut f).take(TEXT_MAX + 1).read_to_end(&mut small).map_err(io)?;
            if small.len() as u64 <= TEXT_MAX {
                classify(small)
            } else {
                drop(small);
                f.rewind().map_err(io)?;
                let (refs, whole) = fsync_core::chunks::split_into(f, chunks).map_err(io)?;
                Body::Chunked(refs, whole)
            }
        }
    })
}

/// A key for matching moved content: the same for a file on disk and the
/// entry it came from.
pub(super) fn content_key(body: &Body) -> Option<[u8; 32]> {
    match body {
        Body::Text(t) => Some(fsync_core::chunks::ChunkHash::of(t.as_bytes()).0),
        Body::Binary(b) => Some(fsync_core::chunks::ChunkHash::of(b).0),
        Body::Chunked(_, whole) => Some(whole.0),
        _ => None,
    }
}

pub(super) fn entry_key(folder: &Folder, id: EntryId, chunks: &dyn ChunkStore) -> Option<[u8; 32]> {
    match &folder.state(id)?.content {
        Content::Text => Some(fsync_core::chunks::ChunkHash::of(folder.doc(id)?.text().as_bytes()).0),
        Content::Binary { chunks: refs, .. } => {
            // Hashed as it is read, chunk by chunk.
            let mut whole = blake3::Hasher::new();
            matches!(fsync_core::chunks::write_chunks(refs, chunks, &mut whole), Ok(true)).then(|| *whole.finalize().as_bytes())
        }
        _ => None,
    }
}

/// True when entry `id` holds exactly `body`.
pub(super) fn same_content(folder: &Folder, chunks: &dyn ChunkStore, id: EntryId, body: &Body) -> bool {
    match (body, folder.state(id).map(|s| &s.content)) {
        (Body::Link(t), Some(Content::Link(u))) => t == u,
        (Body::Chunked(refs, _), Some(Content::Binary { chunks: c, .. })) => refs == c,
        (Body::Text(_) | Body::Binary(_), _) => {
            content_key(body).is_some() && content_key(body) == entry_key(folder, id, chunks)
        }
        _ => false,
    }
}

/// Reads the bodies of `paths` not read yet.
///
/// A new file written while it was read (a program still writing it) is
/// left for a second look shortly (once, by `busy`), as a changed one is:
/// taken in, the half read would be a version of its own, sent to every
/// peer and kept in history (for a big file, most of its size again).
#[allow(clippy::too_many_arguments)]
pub(super) fn read_bodies(
    root: &Path,
    disk: &BTreeMap<String, OnDisk>,
    paths: &[String],
    bodies: &mut HashMap<String, Body>,
    busy: &mut BTreeSet<String>,
    chunks: &mut dyn ChunkStore,
    report: &mut ScanReport,
    progress: &ScanProgress,
) {
    for p in paths {
        let Some(d) = disk.get(p) else { continue };
        if bodies.contains_key(p) {
            continue;
        }
        match read_counted(&root.join(p), d.kind, chunks, progress) {
            Ok(_)
                if d.kind == Kind::File
                    && std::fs::symlink_metadata(root.join(p)).map(|m| Stat::of(&m)).ok() != Some(d.stat)
                    && busy.insert(p.clone()) =>
            {
                report.deferred.push(p.clone());
            }
            Ok(b) => {
                bodies.insert(p.clone(), b);
            }
            Err(e) => unreadable(report, p, e), // or vanished meanwhile
        }
    }
}
