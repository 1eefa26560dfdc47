//! What the HTTP front end asks of a folder: reads now or at a version,
//! and edits merged like saves. Pure functions over a folder and its
//! chunks; the daemon calls them on its own task and saves after a write.
//!
//! Versions on the wire are lists of strings. This node's versions are
//! `AGENT:SEQ` as `fsync log` prints them. A Braid client names its own
//! edits `PEER-N`, counting one per code point deleted or inserted (as
//! braid-text's clients do); such an edit becomes events of an agent of
//! its own, derived from this node, the file and the peer, numbered by the
//! client's counter. So a client's versions stay meaningful after a
//! restart, and two clients, or one client on two nodes, never share an
//! agent.

// Parses what clients send: no slicing or indexing that can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use fsync_core::chunks::{assemble, ChunkStore};
use fsync_core::folder::{split_path, Content, EntryId, Folder, FolderError, Kind};
use fsync_core::text::TextDoc;
use fsync_core::{AgentId, EventId, Lv};
use fsync_http::braid::PutBody;
use fsync_http::{DirEntry, Read, Refusal, Write, Written};

use crate::query::{parse_version, version_string};

/// The agent of a Braid client's edits of one file through this node.
pub fn client_agent(node: AgentId, folder: &str, entry: EntryId, peer: &str) -> AgentId {
    let mut h = blake3::Hasher::new();
    h.update(b"fsync braid client\0");
    h.update(&node.0);
    h.update(folder.as_bytes());
    h.update(b"\0");
    h.update(&entry.0.agent.0);
    h.update(&entry.0.seq.to_le_bytes());
    h.update(peer.as_bytes());
    let mut a = [0u8; 16];
    a.copy_from_slice(h.finalize().as_bytes().get(..16).unwrap_or(&[0; 16]));
    AgentId(a)
}

/// `PEER-N`: a client's name for its edit.
fn client_version(s: &str) -> Option<(&str, u64)> {
    let (peer, n) = s.rsplit_once('-')?;
    (!peer.is_empty()).then_some(())?;
    Some((peer, n.parse().ok()?))
}

/// Where version strings are resolved: one file of one folder.
pub struct Scope<'a> {
    /// This node's agent.
    pub node: AgentId,
    /// The folder's name.
    pub folder: &'a str,
}

impl Scope<'_> {
    /// The event a version string names in entry `id`, if it is a version
    /// string at all.
    fn event(&self, id: EntryId, s: &str) -> Option<EventId> {
        if let Ok(e) = parse_version(s) {
            return Some(e);
        }
        let (peer, n) = client_version(s)?;
        Some(EventId { agent: client_agent(self.node, self.folder, id, peer), seq: n })
    }

    /// The local versions of `versions` in `doc`, or the ones it lacks.
    fn resolve(&self, id: EntryId, doc: &TextDoc, versions: &[String]) -> Result<Vec<Lv>, Refusal> {
        let mut lvs = Vec::with_capacity(versions.len());
        let mut unknown = Vec::new();
        for v in versions {
            match self.event(id, v).and_then(|e| doc.oplog().lv_of(e)) {
                Some(lv) => lvs.push(lv),
                None => unknown.push(v.clone()),
            }
        }
        if unknown.is_empty() {
            lvs.sort_unstable();
            lvs.dedup();
            Ok(lvs)
        } else {
            Err(Refusal::UnknownVersions(unknown))
        }
    }
}

/// A version (local versions of `doc`) as the wire names it, sorted.
fn names(doc: &TextDoc, lvs: &[Lv]) -> Vec<String> {
    let mut v: Vec<String> = lvs.iter().map(|&lv| version_string(doc.oplog().id_of(lv))).collect();
    v.sort();
    v
}

fn not_found(folder: &str, path: &str) -> Refusal {
    Refusal::NotFound(format!("{folder}/{path}: no such file or directory"))
}

/// A file or directory now (`at` none) or at a version; [`Read::Unchanged`]
/// when its version now is `known`.
pub fn read(
    scope: &Scope<'_>,
    folder: &mut Folder,
    chunks: &dyn ChunkStore,
    path: &str,
    at: Option<&[String]>,
    known: Option<&[String]>,
) -> Result<Read, Refusal> {
    if path.is_empty() {
        return Ok(Read::Dir { version: Vec::new(), entries: listing(folder, "") });
    }
    let id = match folder.tree().lookup(path) {
        Some(n) => n.id,
        // A version of a deleted file is still there to read.
        None if at.is_some() => folder.entries_at(path).first().copied().ok_or_else(|| not_found(scope.folder, path))?,
        None => return Err(not_found(scope.folder, path)),
    };
    let doc = folder.doc(id).ok_or_else(|| not_found(scope.folder, path))?;
    let (lvs, now) = match at {
        Some(v) if !v.is_empty() => (scope.resolve(id, doc, v)?, false),
        _ => (doc.version().to_vec(), true),
    };
    let version = names(doc, &lvs);
    if now && known.is_some_and(|k| k == version.as_slice()) {
        return Ok(Read::Unchanged);
    }
    let state = if now { folder.state(id).cloned() } else { folder.state_at(id, &lvs) };
    let state = state.ok_or_else(|| not_found(scope.folder, path))?;
    let missing = || {
        Refusal::Unavailable(format!(
            "{path}: that content is not on this node (older than the folder's keep_days, or not arrived yet)"
        ))
    };
    Ok(match (state.kind, state.content) {
        (Kind::Dir, _) => Read::Dir { version, entries: listing(folder, path) },
        (_, Content::Link(target)) => Read::Link { version, target },
        (_, Content::Binary { size, .. }) if size > fsync_http::MAX_READ => {
            return Err(Refusal::TooLarge(format!(
                "{path}: {size} bytes; HTTP serves binary files of at most {} MiB",
                fsync_http::MAX_READ >> 20
            )))
        }
        (_, Content::Binary { chunks: refs, .. }) => {
            Read::Binary { version, bytes: assemble(&refs, chunks).ok_or_else(missing)? }
        }
        (_, Content::Text | Content::None) => {
            let text = if now { doc.text() } else { doc.text_at(&lvs) };
            Read::Text { version, text }
        }
    })
}

/// What directory `dir` holds, by name.
fn listing(folder: &mut Folder, dir: &str) -> Vec<DirEntry> {
    let nodes: Vec<_> = folder.tree().children(dir).into_iter().cloned().collect();
    let mut out: Vec<DirEntry> = nodes
        .into_iter()
        .filter_map(|n| {
            let st = folder.state(n.id)?;
            let doc = folder.doc(n.id)?;
            let (size, text) = match &st.content {
                Content::Text if n.kind == Kind::File => (Some(doc.text().len() as u64), Some(true)),
                Content::Binary { size, .. } => (Some(*size), Some(false)),
                _ => (None, None),
            };
            let name = n.path.rsplit('/').next().unwrap_or(&n.path).to_owned();
            Some(DirEntry {
                name,
                kind: n.kind.name().to_owned(),
                size,
                text,
                exec: st.exec,
                version: names(doc, doc.version()),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// An edit of file `path`, merged with whatever happened since the
/// versions it was made on. `ignored` says whether this node ignores a
/// path (it never writes one). The caller saves the folder before it
/// answers.
pub fn write(
    scope: &Scope<'_>,
    folder: &mut Folder,
    chunks: &mut dyn ChunkStore,
    path: &str,
    w: Write,
    ignored: &dyn Fn(&str) -> bool,
    now: u64,
) -> Result<Written, Refusal> {
    split_path(path).map_err(|e| Refusal::BadRequest(format!("{path:?}: {e}")))?;
    if ignored(path) {
        return Err(Refusal::Forbidden(format!("{path}: ignored on this node (.fsyncignore or a temp-file name)")));
    }
    let parents = w.parents.unwrap_or_default();
    // Patches for a file not made yet apply to the empty text: checked
    // before it is made, so a refused edit makes nothing.
    if let PutBody::Patches(p) = &w.body {
        if parents.is_empty() && folder.tree().lookup(path).is_none() {
            fsync_http::patch::edits_of(p, 0).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        }
    }
    let id = entry_for(scope, folder, path, &parents, now)?;
    let doc = folder.doc(id).ok_or_else(|| not_found(scope.folder, path))?;
    let base_lvs = if parents.is_empty() { doc.version().to_vec() } else { scope.resolve(id, doc, &parents)? };
    let base: Vec<EventId> = base_lvs.iter().map(|&lv| doc.oplog().id_of(lv)).collect();
    let made = match w.body {
        PutBody::Patches(patches) => {
            if matches!(folder.state(id).map(|s| &s.content), Some(Content::Binary { .. })) {
                return Err(Refusal::Conflict(format!("{path} is binary: PUT its whole content")));
            }
            let doc = folder.doc(id).ok_or_else(|| not_found(scope.folder, path))?;
            let len = if base_lvs == doc.version() { doc.len_chars() } else { doc.text_at(&base_lvs).chars().count() };
            let edits = fsync_http::patch::edits_of(&patches, len).map_err(|e| Refusal::BadRequest(e.to_string()))?;
            let count = fsync_http::patch::count(&patches);
            let author = match w.version.as_deref() {
                None => None,
                Some(v) => {
                    let (peer, n) = client_version(v).ok_or_else(|| {
                        Refusal::BadRequest(format!("Version {v:?}: name an edit PEER-N (N counts code points)"))
                    })?;
                    let agent = client_agent(scope.node, scope.folder, id, peer);
                    if doc.oplog().lv_of(EventId { agent, seq: n }).is_some() {
                        // Sent again (a retry after a lost answer): made already.
                        return Ok(Written { version: names(doc, doc.version()), made: vec![v.to_owned()] });
                    }
                    if count == 0 {
                        None
                    } else {
                        let first = (n + 1).checked_sub(count).ok_or_else(|| {
                            Refusal::BadRequest(format!(
                                "Version {v:?}: this edit changes {count} code points, more than {} counted",
                                n + 1
                            ))
                        })?;
                        Some((agent, first))
                    }
                }
            };
            if count == 0 {
                return Ok(Written { version: names(doc, doc.version()), made: names(doc, &base_lvs) });
            }
            let last = folder.edit_text_by(id, author, &base, &edits, now).map_err(|e| match e {
                FolderError::OutOfOrder { expected, got, .. } => Refusal::BadRequest(format!(
                    "Version {:?} does not follow this peer's last edit here (its next is number {expected}, this starts at {got})",
                    w.version.as_deref().unwrap_or_default()
                )),
                e => Refusal::Conflict(e.to_string()),
            })?;
            last.map(version_string).into_iter().collect()
        }
        PutBody::Whole(bytes) => {
            let exec = folder.state(id).is_some_and(|s| s.exec);
            let mine = fsync_core::ingest::take_in_bytes(folder, chunks, id, &base, bytes, exec, now)
                .map_err(|e| Refusal::Conflict(format!("{path}: {e}")))?;
            let mut v: Vec<String> = mine.into_iter().map(version_string).collect();
            v.sort();
            v
        }
    };
    let doc = folder.doc(id).ok_or_else(|| not_found(scope.folder, path))?;
    let made = if made.is_empty() { names(doc, &base_lvs) } else { made };
    Ok(Written { version: names(doc, doc.version()), made })
}

/// The file a write goes to: the one at `path`; a deleted one there whose
/// history holds `parents` (an edit concurrent with the deletion brings
/// it back, as on disk); or a new one when no parents are named.
fn entry_for(scope: &Scope<'_>, folder: &mut Folder, path: &str, parents: &[String], now: u64) -> Result<EntryId, Refusal> {
    if let Some(n) = folder.tree().lookup(path).cloned() {
        return match n.kind {
            Kind::File => Ok(n.id),
            Kind::Dir => Err(Refusal::Conflict(format!("{path} is a directory"))),
            Kind::Symlink => Err(Refusal::Conflict(format!("{path} is a symlink"))),
        };
    }
    if parents.is_empty() {
        return folder.create(path, Kind::File, now).map_err(|e| match e {
            FolderError::Path(e) => Refusal::BadRequest(format!("{path:?}: {e}")),
            e => Refusal::Conflict(e.to_string()),
        });
    }
    let ids = folder.entries_at(path);
    let mut unknown = None;
    for id in ids {
        let Some(doc) = folder.doc(id) else { continue };
        match scope.resolve(id, doc, parents) {
            Ok(_) if folder.state(id).is_some_and(|s| s.kind == Kind::File) => return Ok(id),
            Ok(_) => return Err(Refusal::Conflict(format!("{path} was not a file at that version"))),
            Err(e) => unknown = Some(e),
        }
    }
    Err(unknown.unwrap_or_else(|| Refusal::UnknownVersions(parents.to_vec())))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::string_slice, clippy::unwrap_used)]
mod tests {
    use super::*;
    use fsync_core::chunks::Chunks;
    use fsync_http::braid::Patch;

    const NODE: AgentId = AgentId([7; 16]);

    fn scope() -> Scope<'static> {
        Scope { node: NODE, folder: "docs" }
    }

    fn patch(start: usize, end: usize, content: &str) -> PutBody {
        PutBody::Patches(vec![Patch { start, end, content: content.into() }])
    }

    fn put(
        f: &mut Folder,
        c: &mut Chunks,
        path: &str,
        version: Option<&str>,
        parents: Option<Vec<String>>,
        body: PutBody,
    ) -> Result<Written, Refusal> {
        write(&scope(), f, c, path, Write { version: version.map(str::to_owned), parents, body }, &|p| p.ends_with(".swp"), 5)
    }

    fn text(f: &mut Folder, c: &Chunks, path: &str, at: Option<Vec<String>>) -> String {
        match read(&scope(), f, c, path, at.as_deref(), None).unwrap() {
            Read::Text { text, .. } => text,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_client_edits_at_its_version_and_names_it() {
        let (mut f, mut c) = (Folder::new(NODE), Chunks::default());
        // A new file from a whole body, then the client's own edits.
        let w = put(&mut f, &mut c, "n.txt", None, None, PutBody::Whole(b"hello".to_vec())).unwrap();
        assert_eq!(text(&mut f, &c, "n.txt", None), "hello");
        let w2 = put(&mut f, &mut c, "n.txt", Some("alice-5"), Some(w.version.clone()), patch(5, 5, " world")).unwrap();
        assert_eq!(w2.made, vec![w2.version[0].clone()]);
        assert_eq!(text(&mut f, &c, "n.txt", None), "hello world");
        // Its name reads back, and so does the version before it.
        assert_eq!(text(&mut f, &c, "n.txt", Some(vec!["alice-5".into()])), "hello world");
        assert_eq!(text(&mut f, &c, "n.txt", Some(w.version.clone())), "hello");
        // Sent twice: made once.
        put(&mut f, &mut c, "n.txt", Some("alice-5"), Some(w.version.clone()), patch(5, 5, " world")).unwrap();
        assert_eq!(text(&mut f, &c, "n.txt", None), "hello world");
        // Made on the old version, concurrently: merged, both kept.
        put(&mut f, &mut c, "n.txt", Some("bob-1"), Some(w.version), patch(0, 0, "Oh")).unwrap();
        assert_eq!(text(&mut f, &c, "n.txt", None), "Ohhello world");
        assert_eq!(text(&mut f, &c, "n.txt", Some(vec!["bob-1".into()])), "Ohhello");
    }

    #[test]
    fn bad_writes_are_refused_and_change_nothing() {
        let (mut f, mut c) = (Folder::new(NODE), Chunks::default());
        let w = put(&mut f, &mut c, "n.txt", None, None, patch(0, 0, "abc")).unwrap();
        let before = text(&mut f, &c, "n.txt", None);
        type Case = (Option<&'static str>, Option<Vec<String>>, PutBody, &'static str);
        let cases: Vec<Case> = vec![
            (None, None, patch(2, 9, ""), "past the end"),
            (None, Some(vec!["nobody-3".into()]), patch(0, 0, "x"), "unknown parents"),
            (None, Some(vec!["zz".into()]), patch(0, 0, "x"), "not a version"),
            (Some("alice-0"), None, patch(0, 0, "xy"), "two code points counted as one"),
            (Some("alice-9"), None, patch(0, 0, "x"), "a counter that skips"),
            (Some("no-counter"), None, patch(0, 0, "x"), "a bad name"),
        ];
        for (v, p, body, why) in cases {
            assert!(put(&mut f, &mut c, "n.txt", v, p, body).is_err(), "{why}");
            assert_eq!(text(&mut f, &c, "n.txt", None), before, "{why}");
        }
        assert!(matches!(put(&mut f, &mut c, "x.swp", None, None, patch(0, 0, "x")), Err(Refusal::Forbidden(_))));
        // Not made when its first edit is refused.
        assert!(matches!(put(&mut f, &mut c, "new.txt", None, None, patch(0, 3, "x")), Err(Refusal::BadRequest(_))));
        assert!(f.tree().lookup("new.txt").is_none(), "a refused edit made a file");
        assert!(matches!(put(&mut f, &mut c, "../x", None, None, patch(0, 0, "x")), Err(Refusal::BadRequest(_))));
        assert!(matches!(put(&mut f, &mut c, "n.txt/y", None, None, patch(0, 0, "x")), Err(Refusal::Conflict(_))));
        f.create("d", Kind::Dir, 1).unwrap();
        assert!(matches!(put(&mut f, &mut c, "d", None, None, patch(0, 0, "x")), Err(Refusal::Conflict(_))));
        let bin = put(&mut f, &mut c, "b.bin", None, None, PutBody::Whole(vec![0, 1, 2])).unwrap();
        assert!(matches!(put(&mut f, &mut c, "b.bin", None, Some(bin.version), patch(0, 0, "x")), Err(Refusal::Conflict(_))));
        // Not one of them made a version.
        assert_eq!(read(&scope(), &mut f, &c, "n.txt", None, Some(&w.version)), Ok(Read::Unchanged));
    }

    #[test]
    fn an_edit_made_on_a_deleted_files_version_brings_it_back() {
        let (mut f, mut c) = (Folder::new(NODE), Chunks::default());
        let w = put(&mut f, &mut c, "n.txt", None, None, patch(0, 0, "keep me")).unwrap();
        let id = f.tree().lookup("n.txt").unwrap().id;
        f.delete(id, 6).unwrap();
        assert!(matches!(read(&scope(), &mut f, &c, "n.txt", None, None), Err(Refusal::NotFound(_))));
        put(&mut f, &mut c, "n.txt", Some("carol-1"), Some(w.version), patch(7, 7, "!!")).unwrap();
        assert_eq!(text(&mut f, &c, "n.txt", None), "keep me!!");
    }

    #[test]
    fn reads_of_binaries_links_and_directories() {
        let (mut f, mut c) = (Folder::new(NODE), Chunks::default());
        let v1 = put(&mut f, &mut c, "d/b.bin", None, None, PutBody::Whole(vec![0, 1, 2])).unwrap();
        put(&mut f, &mut c, "d/b.bin", None, None, PutBody::Whole(vec![9, 0])).unwrap();
        assert_eq!(
            read(&scope(), &mut f, &c, "d/b.bin", None, None).unwrap(),
            Read::Binary {
                version: read(&scope(), &mut f, &c, "d/b.bin", None, None).unwrap().version().to_vec(),
                bytes: vec![9, 0]
            }
        );
        match read(&scope(), &mut f, &c, "d/b.bin", Some(&v1.made), None).unwrap() {
            Read::Binary { bytes, .. } => assert_eq!(bytes, vec![0, 1, 2]),
            other => panic!("{other:?}"),
        }
        let l = f.create("d/l", Kind::Symlink, 1).unwrap();
        f.set_link(l, "b.bin", 1).unwrap();
        assert!(matches!(read(&scope(), &mut f, &c, "d/l", None, None), Ok(Read::Link { target, .. }) if target == "b.bin"));
        match read(&scope(), &mut f, &c, "d", None, None).unwrap() {
            Read::Dir { entries, .. } => {
                let names: Vec<(&str, &str)> = entries.iter().map(|e| (e.name.as_str(), e.kind.as_str())).collect();
                assert_eq!(names, vec![("b.bin", "file"), ("l", "symlink")]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(read(&scope(), &mut f, &c, "", None, None), Ok(Read::Dir { .. })));
        let now = read(&scope(), &mut f, &c, "d/b.bin", None, None).unwrap().version().to_vec();
        assert_eq!(read(&scope(), &mut f, &c, "d/b.bin", None, Some(&now)), Ok(Read::Unchanged));
    }
}
