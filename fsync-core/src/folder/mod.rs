//! One shared folder on one replica: entries, their histories, and the tree
//! that results.
//!
//! Every file, directory and symlink is an *entry* with a stable identity
//! (the id of the event that created it) and one causal graph holding both
//! its text operations and its metadata events ([`Meta`]). The rules of
//! `CONTRACT.md` section 2 are then plain questions about that graph:
//!
//! - **Deleted** only when every newest event is a delete: an edit or a
//!   move made concurrently with a delete keeps the file, with the edit,
//!   where it was moved.
//! - **Location, executable bit, content kind, binary content, link target**
//!   are registers: the newest events of that kind that no other such event
//!   follows; among concurrent ones the winner is the greatest (time, agent,
//!   seq), the same everywhere. Losing binary versions stay in the history.
//! - **Text** merges character by character ([`crate::text`]).
//! - **Paths** are derived ([`tree`]): a directory that was deleted while a
//!   new file was put in it survives; same-named directories merge; a name
//!   taken by several files goes to the smallest entry id and the others get
//!   a suffix (see [`tree::conflict_name`]); move cycles are broken.
//!
//! Sequence numbers of one agent are folder-wide, so a version vector says
//! exactly which events a replica has, and [`Folder::changes_since`] sends
//! exactly what the other side lacks, in an order that respects causality.

mod history;
mod meta;
pub mod tree;

use std::collections::{BTreeMap, HashMap, HashSet};

pub use history::{Deleted, Past, RestoreError, RestorePoint, Restored, DELETION_EPISODE_MS};
pub use meta::{split_path, validate_name, within, EntryId, Kind, Meta, PathError, MAX_NAME};
pub use tree::{Node, Tree};

use crate::chunks::ChunkRef;
use crate::encoding::{Reader, Writer};
use crate::graph::Frontier;
use crate::ids::{AgentId, EventId, Lv};
use crate::text::{Edit, ExportedRun, RemoteOp, RemoteOpError, TextDoc};

/// The most bytes of operations one batch of [`Folder::changes_since`]
/// holds (about: see [`ExportedRun::encoded_bound`]), beside its count of
/// operations. One run may be larger (a text file's whole insert, a big
/// file's chunk list), up to [`MAX_RUN_BYTES`].
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// The largest single run a replica makes or takes: it must fit a frame
/// of the transport (16 MiB) with room to spare. A binary version's chunk
/// list is the largest run there is: this bounds a file to about 300,000
/// chunks (some 20 GiB at the average chunk size); larger files are not
/// synced and are listed as such ([`MAX_CHUNKS`]).
pub const MAX_RUN_BYTES: usize = 12 << 20;

/// The most chunks one binary version may have (see [`MAX_RUN_BYTES`]).
pub const MAX_CHUNKS: usize = MAX_RUN_BYTES / 40;

/// What a replica has: per agent, the next sequence number it lacks.
pub type VersionVector = BTreeMap<AgentId, u64>;

/// An entry's resolved state (the registers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryState {
    /// File, directory or link.
    pub kind: Kind,
    /// Not deleted (a directory may still show if something in it lives).
    pub alive: bool,
    /// Containing directory (`None` = root).
    pub parent: Option<EntryId>,
    /// Name in it.
    pub name: String,
    /// Executable bit.
    pub exec: bool,
    /// What its content is.
    pub content: Content,
}

/// The content register of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Directories.
    None,
    /// The text of the entry's history.
    Text,
    /// Binary bytes, as chunks.
    Binary {
        /// Size in bytes.
        size: u64,
        /// The chunks in order.
        chunks: Vec<ChunkRef>,
    },
    /// A symlink's target.
    Link(String),
}

#[derive(Clone, Debug)]
struct Entry {
    doc: TextDoc,
    state: EntryState,
}

/// A record of the folder's log: events `seq..seq + len` of `agent`, for
/// `entry`, at local versions `lv..` of that entry.
#[derive(Clone, Copy, Debug)]
struct LogRecord {
    agent: AgentId,
    seq: u64,
    len: u64,
    entry: EntryId,
    lv: Lv,
}

/// A batch of changes for another replica: runs of events, each for one
/// entry, in causal order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The runs.
    pub runs: Vec<(EntryId, ExportedRun)>,
}

/// Why a local operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FolderError {
    /// The path is not valid.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Nothing at that path.
    #[error("no such file or directory: {0}")]
    NotFound(String),
    /// Something is already there.
    #[error("already exists: {0}")]
    Exists(String),
    /// A path component is a file.
    #[error("not a directory: {0}")]
    NotADirectory(String),
    /// The entry id is unknown.
    #[error("unknown entry {0:?}")]
    UnknownEntry(EntryId),
    /// Moving a directory into itself.
    #[error("cannot move a directory into itself")]
    IntoItself,
    /// A binary version with more chunks than one message carries.
    #[error("a version of {0} chunks is more than the {MAX_CHUNKS} one message carries")]
    TooBig(usize),
    /// An author's edit that does not follow its previous one.
    #[error("{agent:?}'s next edit is number {expected}, not {got}")]
    OutOfOrder {
        /// The author.
        agent: AgentId,
        /// The sequence number its next event must have.
        expected: u64,
        /// The one given.
        got: u64,
    },
}

/// Why remote changes were refused. Runs before the bad one were applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The sender skipped events: ask again from our version vector.
    #[error("events of {agent:?} from {expected} are missing (got {got})")]
    Gap {
        /// The author.
        agent: AgentId,
        /// Next sequence number this replica needs.
        expected: u64,
        /// What came.
        got: u64,
    },
    /// An event for an entry this replica has never heard of, that is not
    /// its creation.
    #[error("event {0:?} for an unknown entry")]
    UnknownEntry(EventId),
    /// Malformed metadata (for example a name with `/` or `..`).
    #[error("invalid metadata in {0:?}")]
    BadMeta(EventId),
    /// The run's parents are unknown.
    #[error(transparent)]
    Op(#[from] RemoteOpError),
}

/// One shared folder on one replica.
#[derive(Clone, Debug)]
pub struct Folder {
    agent: AgentId,
    next_seq: u64,
    entries: HashMap<EntryId, Entry>,
    vv: VersionVector,
    log: Vec<LogRecord>,
    tree: Tree,
    tree_dirty: bool,
    /// Entries whose history, path or visibility changed since the last
    /// [`Folder::take_changed`] (see there).
    changed: HashSet<EntryId>,
    /// What peers may be sent (see [`Folder::set_shareable`]).
    shareable: Option<VersionVector>,
    /// Binary versions replaced before this time (ms) keep no content (see
    /// [`Folder::set_retention`]).
    keep_since: Option<u64>,
}

impl Folder {
    /// An empty folder whose local changes are made as `agent`.
    pub fn new(agent: AgentId) -> Self {
        Folder {
            agent,
            next_seq: 0,
            entries: HashMap::new(),
            vv: VersionVector::new(),
            log: Vec::new(),
            tree: Tree::default(),
            tree_dirty: false,
            changed: HashSet::new(),
            shareable: None,
            keep_since: None,
        }
    }

    /// Limits what [`Folder::changes_for_peer`] hands out to the events
    /// within `vv` (`None`: everything). A node sets it to what its store
    /// holds, so a peer never receives an event the node could lose in a
    /// crash: after a restart the node would hand out the same event ids
    /// again for different changes.
    pub fn set_shareable(&mut self, vv: Option<VersionVector>) {
        self.shareable = vv;
    }

    /// The local agent.
    pub fn agent(&self) -> AgentId {
        self.agent
    }

    /// What this replica has.
    pub fn version_vector(&self) -> &VersionVector {
        &self.vv
    }

    /// Number of records in the folder's log (for cursors into it).
    pub(crate) fn log_len(&self) -> usize {
        self.log.len()
    }

    /// The resolved tree: paths to entries.
    pub fn tree(&mut self) -> &Tree {
        if self.tree_dirty {
            let fresh = Tree::build(self.entries.iter().map(|(id, e)| (*id, &e.state)));
            let old = std::mem::replace(&mut self.tree, fresh);
            // A rebuild can move or hide entries that had no event of their
            // own (a conflict name given up, what was below a deleted
            // directory): they changed too.
            self.changed.extend(self.tree.moved_since(&old));
            self.tree_dirty = false;
        }
        &self.tree
    }

    /// The entries that changed since the last call, by any means (a local
    /// edit, a peer's changes, a rebuild of the tree that moved or hid
    /// them), and forgets them. What writes the folder to disk looks at
    /// these only: its work is that of the change, not of the folder.
    ///
    /// Their texts are compacted too (done changing for now, they hold
    /// what they need, not room for edits: most of a small file's memory).
    pub fn take_changed(&mut self) -> HashSet<EntryId> {
        // Pending path changes are counted first.
        let _ = self.tree();
        let changed = std::mem::take(&mut self.changed);
        for id in &changed {
            if let Some(e) = self.entries.get_mut(id) {
                e.doc.compact();
            }
        }
        changed
    }

    /// Counts `id` as changed with no event of its own: the disk shows it
    /// other than the folder does (a local move the folder refused), so
    /// what writes the folder to disk must look at it.
    pub fn mark_changed(&mut self, id: EntryId) {
        self.changed.insert(id);
    }

    /// Checks that the tree kept up to date incrementally equals a full
    /// rebuild (for tests).
    #[cfg(test)]
    pub(crate) fn assert_tree_consistent(&mut self) {
        let kept: Vec<Node> = self.tree().nodes().cloned().collect();
        let full = Tree::build(self.entries.iter().map(|(id, e)| (*id, &e.state)));
        let rebuilt: Vec<Node> = full.nodes().cloned().collect();
        assert_eq!(kept, rebuilt, "incremental tree differs from a rebuild");
    }

    /// The state of an entry.
    pub fn state(&self, id: EntryId) -> Option<&EntryState> {
        self.entries.get(&id).map(|e| &e.state)
    }

    /// An entry's registers as they were at version `at` (a frontier of its
    /// history): what a reader of that version saw.
    pub fn state_at(&self, id: EntryId, at: &[Lv]) -> Option<EntryState> {
        let e = self.entries.get(&id)?;
        Some(resolve_at(&e.doc, e.state.kind, at, true))
    }

    /// The text history (and current text) of an entry.
    pub fn doc(&self, id: EntryId) -> Option<&TextDoc> {
        self.entries.get(&id).map(|e| &e.doc)
    }

    /// Every entry id, in no particular order.
    pub fn entry_ids(&self) -> impl Iterator<Item = EntryId> + '_ {
        self.entries.keys().copied()
    }

    /// History retention: the content of a binary version replaced (by a
    /// newer content, or by the file's deletion) before `since` (ms since
    /// the epoch, by the replacing event's clock) is no longer kept; its
    /// place in the history stays. `None` keeps every version's content.
    /// The current content of every file is always kept.
    pub fn set_retention(&mut self, since: Option<u64>) {
        self.keep_since = since;
    }

    /// Every binary chunk of a kept version of any entry (see
    /// [`Folder::set_retention`]): what a replica must have and serve.
    pub fn referenced_chunks(&self) -> HashSet<crate::chunks::ChunkHash> {
        let mut out = HashSet::new();
        for e in self.entries.values() {
            out.extend(kept_chunks(e, self.keep_since));
        }
        out
    }

    /// [`Folder::referenced_chunks`] of one entry.
    pub fn kept_chunks_of(&self, id: EntryId) -> HashSet<crate::chunks::ChunkHash> {
        self.entries.get(&id).map(|e| kept_chunks(e, self.keep_since).collect()).unwrap_or_default()
    }

    // ----- local changes -------------------------------------------------

    fn bump(&mut self, n: u64) -> u64 {
        let s = self.next_seq;
        self.next_seq += n;
        self.vv.insert(self.agent, self.next_seq);
        s
    }

    fn record(&mut self, entry: EntryId, agent: AgentId, seq: u64, len: u64, lv: Lv) {
        self.changed.insert(entry);
        if let Some(last) = self.log.last_mut() {
            if last.entry == entry && last.agent == agent && last.seq + last.len == seq && last.lv + last.len as usize == lv {
                last.len += len;
                return;
            }
        }
        self.log.push(LogRecord { agent, seq, len, entry, lv });
    }

    fn local_meta(&mut self, id: EntryId, meta: &Meta, now: u64) {
        let seq = self.bump(1);
        let agent = self.agent;
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        let lv = e.doc.local_marker(agent, seq, &meta.encode(), now);
        self.record(id, agent, seq, 1, lv);
        self.refresh(id);
    }

    /// Recomputes an entry's registers after its history changed. The tree
    /// is rebuilt only when a path may have changed, and a new entry at a
    /// free name is simply added.
    fn refresh(&mut self, id: EntryId) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        let fresh = resolve(&e.doc, e.state.kind);
        let old = std::mem::replace(&mut e.state, fresh);
        let new = &e.state;
        let same_place = old.alive == new.alive && old.parent == new.parent && old.name == new.name && old.kind == new.kind;
        if same_place && (self.tree_dirty || self.tree.path_of(id).is_some() || !new.alive) {
            return;
        }
        if !self.tree_dirty && self.tree.path_of(id).is_none() && self.tree.try_insert(id, new) {
            return;
        }
        self.tree_dirty = true;
    }

    /// The directory at `path` (`""` = root), creating missing ones.
    fn ensure_dir(&mut self, parts: &[&str], now: u64) -> Result<Option<EntryId>, FolderError> {
        let mut parent = None;
        for (i, name) in parts.iter().enumerate() {
            let sub = parts[..=i].join("/");
            match self.tree().lookup(&sub) {
                Some(n) if n.kind == Kind::Dir => parent = Some(n.id),
                Some(_) => return Err(FolderError::NotADirectory(sub)),
                None => parent = Some(self.create_in(parent, name, Kind::Dir, now)),
            }
        }
        Ok(parent)
    }

    fn create_in(&mut self, parent: Option<EntryId>, name: &str, kind: Kind, now: u64) -> EntryId {
        let seq = self.bump(1);
        let id = EntryId(EventId { agent: self.agent, seq });
        let mut doc = TextDoc::new();
        let meta = Meta::Create { kind, parent, name: name.to_owned() };
        let lv = doc.local_marker(self.agent, seq, &meta.encode(), now);
        let state = resolve(&doc, kind);
        if self.tree_dirty || !self.tree.try_insert(id, &state) {
            self.tree_dirty = true;
        }
        self.entries.insert(id, Entry { doc, state });
        self.record(id, self.agent, seq, 1, lv);
        id
    }

    /// Creates an empty file, directory or symlink at `path` (missing
    /// parent directories too).
    pub fn create(&mut self, path: &str, kind: Kind, now: u64) -> Result<EntryId, FolderError> {
        let parts = split_path(path)?;
        if self.tree().lookup(path).is_some() {
            return Err(FolderError::Exists(path.to_owned()));
        }
        let (name, dirs) = parts.split_last().ok_or(PathError::Empty)?;
        let parent = self.ensure_dir(dirs, now)?;
        Ok(self.create_in(parent, name, kind, now))
    }

    /// Applies text edits (positions in Unicode scalar values, each relative
    /// to the text after the previous edit) as one change.
    pub fn edit_text(&mut self, id: EntryId, edits: &[Edit], now: u64) -> Result<(), FolderError> {
        self.ensure_text(id, now)?;
        let base = self.entries.get(&id).ok_or(FolderError::UnknownEntry(id))?.doc.version_ids();
        self.edit_text_from(id, &base, edits, now)
    }

    /// Switches the entry's content to text, if it is not already.
    fn ensure_text(&mut self, id: EntryId, now: u64) -> Result<(), FolderError> {
        let e = self.entries.get(&id).ok_or(FolderError::UnknownEntry(id))?;
        if e.state.content != Content::Text {
            self.local_meta(id, &Meta::Text, now);
        }
        Ok(())
    }

    /// Applies edits made against the entry's version `base` (event ids, as
    /// remembered when the disk was last read or written): they merge with
    /// whatever changed since instead of overwriting it. An unknown base
    /// (never the case for ids this folder handed out) falls back to the
    /// current version.
    pub fn edit_text_from(&mut self, id: EntryId, base: &[EventId], edits: &[Edit], now: u64) -> Result<(), FolderError> {
        self.edit_text_by(id, None, base, edits, now).map(|_| ())
    }

    /// [`Folder::edit_text_from`], made by `author` (an agent and the
    /// sequence number of its first operation) instead of this replica:
    /// an editor that names its own versions, such as a Braid client. Its
    /// operations are numbered from there on, one per character deleted
    /// or inserted, and must follow its last event here. Returns the last
    /// event made (none for edits that change nothing).
    pub fn edit_text_by(
        &mut self,
        id: EntryId,
        author: Option<(AgentId, u64)>,
        base: &[EventId],
        edits: &[Edit],
        now: u64,
    ) -> Result<Option<EventId>, FolderError> {
        if !self.entries.contains_key(&id) {
            return Err(FolderError::UnknownEntry(id));
        }
        if let Some((agent, seq)) = author {
            let expected = self.vv.get(&agent).copied().unwrap_or(0);
            if agent == self.agent || seq != expected {
                return Err(FolderError::OutOfOrder { agent, expected, got: seq });
            }
        }
        self.ensure_text(id, now)?;
        let (agent, seq) = author.unwrap_or((self.agent, self.next_seq));
        let e = self.entries.get_mut(&id).ok_or(FolderError::UnknownEntry(id))?;
        let base_lvs = e.doc.lvs_of(base).unwrap_or_else(|| e.doc.version().iter().copied().collect());
        let before = e.doc.oplog().len();
        let r = e.doc.edit_from(agent, seq, &base_lvs, edits, now);
        let n = r.end - r.start;
        if n > 0 {
            if author.is_some() {
                self.vv.insert(agent, seq + n);
            } else {
                self.bump(n);
            }
            self.record(id, agent, seq, n, before);
        }
        self.refresh(id);
        Ok((n > 0).then(|| EventId { agent, seq: seq + n - 1 }))
    }

    /// Replaces the whole text, as the smallest single edit (common prefix
    /// and suffix kept). The watcher computes finer diffs.
    pub fn set_text(&mut self, id: EntryId, new: &str, now: u64) -> Result<(), FolderError> {
        let e = self.entries.get(&id).ok_or(FolderError::UnknownEntry(id))?;
        let old = e.doc.text();
        let is_text = e.state.content == Content::Text;
        if old == new && is_text {
            return Ok(());
        }
        let edit = simple_diff(&old, new);
        self.edit_text(id, &[edit], now)
    }

    /// Sets binary content.
    pub fn write_binary(&mut self, id: EntryId, chunks: Vec<ChunkRef>, now: u64) -> Result<(), FolderError> {
        if !self.entries.contains_key(&id) {
            return Err(FolderError::UnknownEntry(id));
        }
        if chunks.len() > MAX_CHUNKS {
            return Err(FolderError::TooBig(chunks.len()));
        }
        let size = chunks.iter().map(|c| c.len as u64).sum();
        self.local_meta(id, &Meta::Binary { size, chunks }, now);
        Ok(())
    }

    /// Sets a symlink's target.
    pub fn set_link(&mut self, id: EntryId, target: &str, now: u64) -> Result<(), FolderError> {
        if !self.entries.contains_key(&id) {
            return Err(FolderError::UnknownEntry(id));
        }
        self.local_meta(id, &Meta::Link(target.to_owned()), now);
        Ok(())
    }

    /// Sets the executable bit.
    pub fn set_exec(&mut self, id: EntryId, exec: bool, now: u64) -> Result<(), FolderError> {
        let e = self.entries.get(&id).ok_or(FolderError::UnknownEntry(id))?;
        if e.state.exec != exec {
            self.local_meta(id, &Meta::Exec(exec), now);
        }
        Ok(())
    }

    /// Renames or moves an entry to `path` (missing parents are created).
    pub fn rename(&mut self, id: EntryId, path: &str, now: u64) -> Result<(), FolderError> {
        let parts = split_path(path)?;
        if self.tree().lookup(path).is_some_and(|n| n.id != id) {
            return Err(FolderError::Exists(path.to_owned()));
        }
        let (name, dirs) = parts.split_last().ok_or(PathError::Empty)?;
        // Before any missing parent is made below the entry itself.
        if let Some(p) = self.tree().path_of(id).map(str::to_owned) {
            if path.starts_with(&format!("{p}/")) {
                return Err(FolderError::IntoItself);
            }
        }
        let parent = self.ensure_dir(dirs, now)?;
        self.move_into(id, parent, name, now)
    }

    /// Moves entry `id` into directory entry `parent` (`None`: the root) as
    /// `name`, wherever that directory shows now, or even if it was deleted
    /// meanwhile: a move into a directory that another replica deleted
    /// concurrently keeps the directory (rule 1 of [`tree`]), where a move
    /// by path would find the name taken (by a file of that name the other
    /// replica made there) and fail.
    pub fn move_into(&mut self, id: EntryId, parent: Option<EntryId>, name: &str, now: u64) -> Result<(), FolderError> {
        validate_name(name)?;
        if !self.entries.contains_key(&id) {
            return Err(FolderError::UnknownEntry(id));
        }
        let merged = self.merged_with(id, parent)?;
        let meta = Meta::Move { parent, name: name.to_owned() };
        for e in std::iter::once(id).chain(merged) {
            self.local_meta(e, &meta, now);
        }
        Ok(())
    }

    /// The other directory entries merged at `id`'s path, once `parent` is
    /// checked to take `id` and each of them: a merged directory is one
    /// directory to whoever sees the tree, and moves and is deleted whole
    /// (moved alone, an entry left the others showing the directory at its
    /// old path, with what hangs below them).
    fn merged_with(&mut self, id: EntryId, parent: Option<EntryId>) -> Result<Vec<EntryId>, FolderError> {
        let merged = self.tree().aliases_of(id);
        for e in std::iter::once(id).chain(merged.iter().copied()) {
            self.check_parent(parent, Some(e))?;
        }
        Ok(merged)
    }

    /// Moves entry `id` as [`Folder::move_into`] does, as the disk showed it
    /// at `base` (remembered when the disk was last read): a deletion that
    /// arrived since and was never on disk is concurrent with the move, and
    /// the entry lives on where it was moved (an entry lives while any of
    /// its latest changes is not a deletion), as it would had the move
    /// reached the deleting replica first.
    pub fn move_into_from(
        &mut self,
        id: EntryId,
        base: &[EventId],
        parent: Option<EntryId>,
        name: &str,
        now: u64,
    ) -> Result<(), FolderError> {
        validate_name(name)?;
        let merged = self.merged_with(id, parent)?;
        let meta = Meta::Move { parent, name: name.to_owned() };
        self.meta_from(id, base, &meta, now)?;
        // The others as they are: `base` is of `id` only.
        for e in merged {
            self.local_meta(e, &meta, now);
        }
        Ok(())
    }

    /// Creates an entry in directory entry `parent` (`None`: the root), as
    /// [`Folder::move_into`] moves one: wherever that directory is now,
    /// deleted or not.
    pub fn create_into(&mut self, parent: Option<EntryId>, name: &str, kind: Kind, now: u64) -> Result<EntryId, FolderError> {
        validate_name(name)?;
        self.check_parent(parent, None)?;
        Ok(self.create_in(parent, name, kind, now))
    }

    /// `parent` is a directory entry, and not `moving` nor below it.
    fn check_parent(&self, parent: Option<EntryId>, moving: Option<EntryId>) -> Result<(), FolderError> {
        let mut at = parent;
        let mut steps = 0;
        while let Some(p) = at {
            let state = &self.entries.get(&p).ok_or(FolderError::UnknownEntry(p))?.state;
            if steps == 0 && state.kind != Kind::Dir {
                return Err(FolderError::NotADirectory(state.name.clone()));
            }
            if Some(p) == moving {
                return Err(FolderError::IntoItself);
            }
            steps += 1;
            if steps > self.entries.len() {
                break;
            }
            at = state.parent;
        }
        Ok(())
    }

    /// Deletes one entry as the disk showed it at `base` (remembered when
    /// the disk was last read): changes that arrived since and were never
    /// on disk are concurrent with the deletion, so an edit made meanwhile
    /// elsewhere keeps the file. Nothing below the entry is touched; the
    /// other directory entries merged at its path go too, as they are.
    pub fn delete_from(&mut self, id: EntryId, base: &[EventId], now: u64) -> Result<(), FolderError> {
        let merged = self.tree().aliases_of(id);
        self.meta_from(id, base, &Meta::Delete, now)?;
        for e in merged {
            self.local_meta(e, &Meta::Delete, now);
        }
        Ok(())
    }

    /// Sets binary content as written by someone who last saw version
    /// `base`: what arrived since is concurrent with it (the binary rule
    /// picks the winner, the other stays in history).
    pub fn write_binary_from(
        &mut self,
        id: EntryId,
        base: &[EventId],
        chunks: Vec<ChunkRef>,
        now: u64,
    ) -> Result<(), FolderError> {
        if chunks.len() > MAX_CHUNKS {
            return Err(FolderError::TooBig(chunks.len()));
        }
        let size = chunks.iter().map(|c| c.len as u64).sum();
        self.meta_from(id, base, &Meta::Binary { size, chunks }, now)
    }

    /// A metadata event whose parents are `base` (unknown: the current
    /// version).
    fn meta_from(&mut self, id: EntryId, base: &[EventId], meta: &Meta, now: u64) -> Result<(), FolderError> {
        if !self.entries.contains_key(&id) {
            return Err(FolderError::UnknownEntry(id));
        }
        let seq = self.bump(1);
        let agent = self.agent;
        let e = self.entries.get_mut(&id).ok_or(FolderError::UnknownEntry(id))?;
        let base_lvs = e.doc.lvs_of(base).unwrap_or_else(|| e.doc.version().iter().copied().collect());
        let lv = e.doc.marker_from(agent, seq, &base_lvs, &meta.encode(), now);
        self.record(id, agent, seq, 1, lv);
        self.refresh(id);
        Ok(())
    }

    /// Deletes an entry; a directory with everything in it.
    pub fn delete(&mut self, id: EntryId, now: u64) -> Result<(), FolderError> {
        if !self.entries.contains_key(&id) {
            return Err(FolderError::UnknownEntry(id));
        }
        let below: Vec<EntryId> = self.tree().descendants(id);
        let same: Vec<EntryId> = self.tree().aliases_of(id);
        for d in below.into_iter().rev().chain(same) {
            self.local_meta(d, &Meta::Delete, now);
        }
        self.local_meta(id, &Meta::Delete, now);
        Ok(())
    }

    // ----- sync ----------------------------------------------------------

    /// Everything this replica has that a replica with version vector
    /// `have` lacks, starting at log record `from` (0 for all), in causal
    /// order. Stops after about `max_ops` unit operations; returns the log
    /// position to continue from.
    pub fn changes_since(&self, have: &VersionVector, from: usize, max_ops: usize) -> (Changes, usize) {
        self.changes_within(have, from, max_ops, None)
    }

    /// [`Folder::changes_since`] for a peer: only what is shareable (see
    /// [`Folder::set_shareable`]). It stops at the first record that is not
    /// wholly shareable, and returns that record's position, so the rest
    /// goes out once it is.
    pub fn changes_for_peer(&self, have: &VersionVector, from: usize, max_ops: usize) -> (Changes, usize) {
        self.changes_within(have, from, max_ops, self.shareable.as_ref())
    }

    fn changes_within(
        &self,
        have: &VersionVector,
        from: usize,
        max_ops: usize,
        limit: Option<&VersionVector>,
    ) -> (Changes, usize) {
        let mut out = Changes::default();
        let mut ops = 0usize;
        let mut bytes = 0usize;
        // The last record seen may have grown since (records merge at the
        // tail): look at it again; `have` filters what was sent already.
        let mut pos = from.saturating_sub(1);
        while pos < self.log.len() {
            if (ops >= max_ops || bytes >= MAX_BATCH_BYTES) && !out.runs.is_empty() {
                break;
            }
            let rec = self.log[pos];
            let end = match limit {
                Some(l) => (rec.seq + rec.len).min(l.get(&rec.agent).copied().unwrap_or(0)),
                None => rec.seq + rec.len,
            };
            let h = have.get(&rec.agent).copied().unwrap_or(0);
            if h >= end {
                if end < rec.seq + rec.len {
                    // Held back: look here again next time.
                    break;
                }
                pos += 1;
                continue;
            }
            let skip = h.saturating_sub(rec.seq) as usize;
            let Some(e) = self.entries.get(&rec.entry) else {
                pos += 1;
                continue;
            };
            let take = (end - rec.seq) as usize;
            let mut runs = Vec::new();
            e.doc.oplog().export_range(rec.lv + skip..rec.lv + take, &mut runs);
            // Bytes cap a batch as well as operations (a binary version
            // carries its whole chunk list): a batch stays far below a
            // frame. What is left of the record goes in the next batch.
            let mut cut = false;
            for r in runs {
                let b = r.encoded_bound();
                if bytes + b > MAX_BATCH_BYTES && !out.runs.is_empty() {
                    cut = true;
                    break;
                }
                bytes += b;
                ops += r.len();
                out.runs.push((rec.entry, r));
            }
            if cut || take < rec.len as usize {
                break;
            }
            pos += 1;
        }
        (out, pos)
    }

    /// The text of every file with the version it is at, encoded: kept
    /// beside the history, it spares a reload ([`Folder::load`]) the merge
    /// of the whole history. The history itself stays whole (merges and
    /// `cat --at` need it); only the resolved text is cached.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(SNAPSHOT_MAGIC);
        let files: Vec<(&EntryId, &Entry)> =
            self.entries.iter().filter(|(_, e)| e.state.kind == Kind::File && !e.doc.version().is_empty()).collect();
        w.usize(files.len());
        for (id, e) in files {
            meta::put_entry(&mut w, Some(*id));
            let version = e.doc.version_ids();
            w.usize(version.len());
            for v in version {
                w.raw(&v.agent.0);
                w.varint(v.seq);
            }
            w.str(&e.doc.text());
        }
        w.into_bytes()
    }

    /// Rebuilds a folder from its saved history, batch by batch in the order
    /// saved, and a [`Folder::snapshot`] if there is one: texts it holds are
    /// taken as they are and only events after it are merged. A snapshot
    /// that does not decode, or an entry of it at a version not in the
    /// history, is ignored (the text is merged instead): it is only a cache.
    pub fn load<E: From<ApplyError>>(
        agent: AgentId,
        batches: impl IntoIterator<Item = Result<Changes, E>>,
        snapshot: Option<&[u8]>,
    ) -> Result<Folder, E> {
        let mut folder = Folder::new(agent);
        let mut touched: Vec<EntryId> = Vec::new();
        let mut seen: HashSet<EntryId> = HashSet::new();
        for changes in batches {
            for (entry, run) in &changes?.runs {
                if folder.apply_run(*entry, run)? && seen.insert(*entry) {
                    touched.push(*entry);
                }
            }
        }
        let mut texts = snapshot.and_then(|b| decode_snapshot(b).ok()).unwrap_or_default();
        folder.settle(&touched, &mut texts);
        Ok(folder)
    }

    /// Takes changes from another replica. Duplicates are skipped; runs are
    /// applied in order until one cannot be (see [`ApplyError`]), and what
    /// came before it stays applied. Returns the entries that changed, and
    /// the error that stopped it, if one did.
    pub fn apply_changes(&mut self, changes: &Changes) -> (Vec<EntryId>, Result<(), ApplyError>) {
        let mut touched: Vec<EntryId> = Vec::new();
        let mut seen: HashSet<EntryId> = HashSet::new();
        let mut result = Ok(());
        for (entry, run) in &changes.runs {
            match self.apply_run(*entry, run) {
                Ok(applied) => {
                    if applied && seen.insert(*entry) {
                        touched.push(*entry);
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.settle(&touched, &mut HashMap::new());
        (touched, result)
    }

    /// After runs were applied: merges each touched entry's text (starting
    /// from a snapshot's text where `texts` has one) and resolves its state.
    fn settle(&mut self, touched: &[EntryId], texts: &mut HashMap<EntryId, (Vec<EventId>, String)>) {
        for id in touched {
            if let Some(e) = self.entries.get_mut(id) {
                if let Some((version, text)) = texts.remove(id) {
                    e.doc.restore(&version, &text);
                }
                e.doc.merge_pending();
            }
            self.refresh(*id);
        }
    }

    /// Applies one run without merging; `true` when it added events.
    fn apply_run(&mut self, entry: EntryId, run: &ExportedRun) -> Result<bool, ApplyError> {
        let agent = run.id.agent;
        let have = self.vv.get(&agent).copied().unwrap_or(0);
        let len = run.len() as u64;
        if len == 0 || run.id.seq + len <= have {
            return Ok(false);
        }
        if run.id.seq > have {
            return Err(ApplyError::Gap { agent, expected: have, got: run.id.seq });
        }
        if let crate::text::ExportedKind::Marker(m) = &run.kind {
            Meta::decode(m).map_err(|_| ApplyError::BadMeta(run.id))?;
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = self.entries.entry(entry) {
            // Only the entry's own creation may introduce it.
            let kind = match &run.kind {
                crate::text::ExportedKind::Marker(m) if run.id == entry.0 && run.parents.is_empty() => match Meta::decode(m) {
                    Ok(Meta::Create { kind, .. }) => kind,
                    _ => return Err(ApplyError::UnknownEntry(run.id)),
                },
                _ => return Err(ApplyError::UnknownEntry(run.id)),
            };
            let doc = TextDoc::new();
            let state =
                EntryState { kind, alive: true, parent: None, name: String::new(), exec: false, content: Content::None };
            slot.insert(Entry { doc, state });
        }
        let e = self.entries.get_mut(&entry).ok_or(ApplyError::UnknownEntry(run.id))?;
        let before = e.doc.oplog().len();
        e.doc.add_remote(&RemoteOp::from_exported(run))?;
        let added = (e.doc.oplog().len() - before) as u64;
        let start_seq = run.id.seq + len - added;
        self.vv.insert(agent, start_seq + added);
        if agent == self.agent {
            // Our own events, reloaded: keep numbering after them.
            self.next_seq = self.next_seq.max(start_seq + added);
        }
        self.record(entry, agent, start_seq, added, before);
        Ok(true)
    }
}

/// The chunks of an entry's binary versions that are kept: the current
/// content, and every version replaced at or after `since` (by the next
/// content in (time, id) order, or by the deletion of the file). All of
/// them when `since` is none.
fn kept_chunks(e: &Entry, since: Option<u64>) -> impl Iterator<Item = crate::chunks::ChunkHash> + '_ {
    let log = e.doc.oplog();
    let mut contents: Vec<(u64, EventId, Option<Vec<ChunkRef>>)> = Vec::new();
    let mut deleted_at: Option<u64> = None;
    for (lv, m) in log.markers() {
        match Meta::decode(m) {
            Ok(Meta::Binary { chunks, .. }) => contents.push((log.time_of(lv), log.id_of(lv), Some(chunks))),
            Ok(Meta::Text) => contents.push((log.time_of(lv), log.id_of(lv), None)),
            Ok(Meta::Delete) => deleted_at = deleted_at.max(Some(log.time_of(lv))),
            _ => {}
        }
    }
    contents.sort_by_key(|(t, id, _)| (*t, *id));
    let deleted_at = deleted_at.filter(|_| !e.state.alive);
    let replaced: Vec<Option<u64>> = (0..contents.len()).map(|i| contents.get(i + 1).map(|c| c.0).or(deleted_at)).collect();
    let current = match &e.state.content {
        Content::Binary { chunks, .. } if e.state.alive => chunks.clone(),
        _ => Vec::new(),
    };
    contents
        .into_iter()
        .zip(replaced)
        .filter_map(move |((_, _, refs), replaced)| {
            let kept = match (since, replaced) {
                (None, _) | (_, None) => true,
                (Some(since), Some(at)) => at >= since,
            };
            refs.filter(|_| kept)
        })
        .flatten()
        .chain(current)
        .map(|c| c.hash)
}

/// Resolves an entry's registers from its history.
fn resolve(doc: &TextDoc, kind: Kind) -> EntryState {
    resolve_at(doc, kind, doc.version(), false)
}

/// Resolves an entry's registers as the events of version `at` (a frontier
/// of its history) and their causes left them; `within` filters the events
/// to that history (not needed for the current version, which holds all).
fn resolve_at(doc: &TextDoc, kind: Kind, at: &[Lv], within: bool) -> EntryState {
    let log = doc.oplog();
    let graph = log.graph();
    // Newest events first; an event counts for a register unless a later
    // event of the same register follows it.
    let mut metas: Vec<(Lv, Meta)> = log
        .markers()
        .filter(|(lv, _)| !within || graph.frontier_contains(at, *lv))
        .filter_map(|(lv, m)| Some((lv, Meta::decode(m).ok()?)))
        .collect();
    metas.reverse();
    let mut winners: [Option<(u64, EventId, Lv)>; 4] = [None; 4];
    let mut accepted: [Frontier; 4] = Default::default();
    for (lv, m) in &metas {
        // Registers: 0 location, 1 exec, 2 content, 3 link target.
        let regs: &[usize] = match m {
            Meta::Create { kind: Kind::File, .. } => &[0, 2],
            Meta::Create { .. } => &[0],
            Meta::Move { .. } => &[0],
            Meta::Exec(_) => &[1],
            Meta::Binary { .. } | Meta::Text => &[2],
            Meta::Link(_) => &[3],
            Meta::Delete => &[],
        };
        for &r in regs {
            if graph.frontier_contains(&accepted[r], *lv) {
                continue;
            }
            accepted[r].push(*lv);
            let key = (log.time_of(*lv), log.id_of(*lv), *lv);
            if winners[r].is_none_or(|w| (key.0, key.1) > (w.0, w.1)) {
                winners[r] = Some(key);
            }
        }
    }
    let meta_at = |r: usize| winners[r].and_then(|(_, _, lv)| metas.iter().find(|(l, _)| *l == lv)).map(|(_, m)| m);
    let (parent, name) = match meta_at(0) {
        Some(Meta::Create { parent, name, .. }) | Some(Meta::Move { parent, name }) => (*parent, name.clone()),
        _ => (None, String::new()),
    };
    let exec = matches!(meta_at(1), Some(Meta::Exec(true)));
    let content = match kind {
        Kind::Dir => Content::None,
        Kind::Symlink => match meta_at(3) {
            Some(Meta::Link(t)) => Content::Link(t.clone()),
            _ => Content::Link(String::new()),
        },
        Kind::File => match meta_at(2) {
            Some(Meta::Binary { size, chunks }) => Content::Binary { size: *size, chunks: chunks.clone() },
            _ => Content::Text,
        },
    };
    // Deleted only when every newest event is a delete.
    let alive = !at.iter().all(|&lv| matches!(log.marker(lv).map(Meta::decode), Some(Ok(Meta::Delete))));
    EntryState { kind, alive, parent, name, exec, content }
}

const SNAPSHOT_MAGIC: &[u8] = b"fsync-snapshot-1";

/// A [`Folder::snapshot`]: entry -> (version, text).
fn decode_snapshot(b: &[u8]) -> Result<HashMap<EntryId, (Vec<EventId>, String)>, crate::encoding::DecodeError> {
    let mut r = Reader::new(b);
    r.magic(SNAPSHOT_MAGIC, "folder snapshot")?;
    let n = r.count(20)?;
    let mut out = HashMap::with_capacity(n);
    for _ in 0..n {
        let id = meta::get_entry(&mut r)?.ok_or(crate::encoding::DecodeError::Invalid("snapshot entry"))?;
        let k = r.count(17)?;
        let mut version = Vec::with_capacity(k);
        for _ in 0..k {
            let mut a = [0u8; 16];
            a.copy_from_slice(r.raw(16)?);
            version.push(EventId { agent: AgentId(a), seq: r.varint()? });
        }
        out.insert(id, (version, r.str()?.to_owned()));
    }
    r.finish()?;
    Ok(out)
}

/// The single edit turning `old` into `new`: common prefix and suffix kept.
pub fn simple_diff(old: &str, new: &str) -> Edit {
    let o: Vec<char> = old.chars().collect();
    let n: Vec<char> = new.chars().collect();
    let pre = o.iter().zip(&n).take_while(|(a, b)| a == b).count();
    let max_suf = o.len().min(n.len()) - pre;
    let suf = o.iter().rev().zip(n.iter().rev()).take(max_suf).take_while(|(a, b)| a == b).count();
    Edit { pos: pre, del: o.len() - pre - suf, ins: n[pre..n.len() - suf].iter().collect() }
}

#[cfg(test)]
pub(crate) mod tests;
