//! The disk index: what this node last saw or wrote at each path, so a
//! scan reads only what changed and a write-back never clobbers an edit it
//! has not seen. Saved as one row per path ([`Index::take_unsaved`]), so a
//! save costs the paths that changed, not the folder.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Instant;

use fsync_core::folder::{EntryId, Kind};
use fsync_core::EventId;

use crate::scan::UNSEEN_WRITE;

/// What the index remembers of one path: the entry shown there, the disk
/// metadata when it was last read or written, and the entry's version then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    /// The entry.
    pub id: EntryId,
    /// File, directory or link.
    pub kind: Kind,
    /// Disk metadata at that time.
    pub stat: Stat,
    /// The entry's version matching the disk content.
    pub base: Vec<EventId>,
    /// A write-back about to replace this path: if the path holds inode
    /// `.0`, the write landed and the disk holds version `.1` (the index
    /// update after it may have been lost in a crash).
    pub staged: Option<(u64, Vec<EventId>)>,
    /// When our write-back last landed at this path, within the last
    /// [`UNSEEN_WRITE`]; in memory only. A file found cut short of what we
    /// wrote a moment ago is looked at once more before it is taken in (a
    /// rewrite caught half way). A save is taken as made on what the disk
    /// held (`base`); the one other thing it may have been made on is what
    /// a write that raced ours left in the displaced file (see
    /// [`Written::raced`]).
    pub(crate) written: Option<Written>,
}

/// See [`Known::written`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Written {
    /// When the last write landed.
    pub(crate) at: Instant,
    /// A program was writing the file as ours landed: the version of what
    /// it had written into the displaced file (taken in). A program that
    /// read that file before the exchange and writes after it writes on
    /// this version, not on ours: a save is taken as made on whichever of
    /// the two it is the smaller edit of (ours on a tie).
    pub(crate) raced: Option<Vec<EventId>>,
}

impl Written {
    /// A write that landed now.
    pub(crate) fn now() -> Written {
        Written { at: Instant::now(), raced: None }
    }

    /// A write that landed now, displacing a write made on `raced`.
    pub(crate) fn after_race(raced: Vec<EventId>) -> Written {
        Written { at: Instant::now(), raced: Some(raced) }
    }

    /// True while the write is recent (see [`UNSEEN_WRITE`]).
    pub(crate) fn recent(&self) -> bool {
        self.at.elapsed() < UNSEEN_WRITE
    }
}

/// The metadata that tells whether a path changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns.
    pub mtime: i64,
    /// Change time, ns.
    pub ctime: i64,
    /// Executable bit (owner).
    pub exec: bool,
}

impl Stat {
    /// The same file with the same content as `other`, as far as metadata
    /// tells: a rename changes only the ctime.
    pub(crate) fn same_file(&self, other: &Stat) -> bool {
        self.ino == other.ino && self.size == other.size && self.mtime == other.mtime
    }
}

/// What kind of entry a file type is (`None`: a special file, which is
/// not synced).
pub(crate) fn kind_of(ft: &std::fs::FileType) -> Option<Kind> {
    if ft.is_dir() {
        Some(Kind::Dir)
    } else if ft.is_symlink() {
        Some(Kind::Symlink)
    } else if ft.is_file() {
        Some(Kind::File)
    } else {
        None
    }
}

impl Stat {
    pub(crate) fn of(m: &std::fs::Metadata) -> Stat {
        Stat {
            ino: m.ino(),
            size: m.len(),
            mtime: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            // Only a regular file has an executable bit we sync (a
            // symlink's mode is always 0777, a directory's is searchable).
            exec: m.is_file() && m.permissions().mode() & 0o100 != 0,
        }
    }
}

/// Path (relative, `/`-separated) to what was last seen there.
#[derive(Clone, Debug, Default)]
pub struct Index {
    /// The paths.
    pub files: Files,
    /// Paths a scoped scan found gone and did not delete yet, and since
    /// when (see [`ScanReport::deferred`]); kept in memory only.
    pub(crate) deferred: BTreeMap<String, Instant>,
    /// Paths found mid-write by the last scan of them, and left for the
    /// next; in memory only.
    pub(crate) busy: BTreeSet<String>,
    /// New files a write-back is about to put where the index has nothing
    /// (a peer's new file): path -> (entry, inode of our file, version).
    /// Saved with the intents, like [`Known::staged`]: after a crash that
    /// lost the index update, the file found there is ours, not a second
    /// file created here.
    pub(crate) new_intents: BTreeMap<String, (EntryId, u64, Vec<EventId>)>,
    /// Files a write-back just moved away (a peer's rename): old path ->
    /// (entry, when, the version the disk held). In memory only. A program
    /// that read the file before the move may save it to the old path: that
    /// save is an edit of the moved file, not a second file (CONTRACT: file
    /// edited on one node, renamed on another).
    pub(crate) moved_away: BTreeMap<String, (EntryId, Instant, Vec<EventId>)>,
    /// Renames the kernel reported, not scanned yet: new path -> (old
    /// path, when). In memory only (see [`Index::renamed`]).
    pub(crate) renamed: BTreeMap<String, (String, Instant)>,
    /// Files a peer's deletion removed, kept aside for a moment (see
    /// [`crate::write::ASIDE_GRACE`]). In memory only.
    pub(crate) aside: Vec<crate::write::Aside>,
    /// The write intents as [`Index::take_unsaved`] last gave them out
    /// (none: not given out since loading or [`Index::touch_all`]).
    intents_given: Option<Vec<u8>>,
    /// When scans and write-backs hold deletions (see [`crate::guard`]);
    /// set by the caller, not stored.
    pub guard: crate::Guard,
    /// The ignore rules ([`crate::ignore::Ignore::digest`]) of the last
    /// full scan; none before the first. In memory only.
    pub(crate) scanned_rules: Option<Option<[u8; 32]>>,
}

/// What changed in an index since it was last given out for storing.
#[derive(Debug, Default)]
pub struct Unsaved {
    /// (path, row): the rows to put, `None` for paths removed.
    pub rows: Vec<(String, Option<Vec<u8>>)>,
    /// The write intents, when they changed.
    pub intents: Option<Vec<u8>>,
}

impl Unsaved {
    /// True when there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.intents.is_none()
    }
}

use fsync_core::encoding::{DecodeError, Reader, Writer};

const INDEX_MAGIC: &[u8] = b"FSIX";
const INDEX_VERSION: u64 = 3;

impl Index {
    /// True when files removed for a peer's deletion wait to be looked at
    /// once more (see [`crate::write::ASIDE_GRACE`]): a write-back pass
    /// is due when they are.
    pub fn aside_due(&self) -> bool {
        self.aside.iter().any(|a| a.at.elapsed() >= crate::write::ASIDE_GRACE)
    }

    /// Forgets what was seen at `path`: the next write-back puts there
    /// what the folder has, as at a path it never wrote (a held deletion
    /// the user undoes: see [`crate::guard`]).
    pub fn forget(&mut self, path: &str) {
        self.files.remove(path);
        self.deferred.remove(path);
        self.busy.remove(path);
    }

    /// The kernel reported a rename of `from` to `to` (inotify's pair of
    /// events for one `rename`). The scan takes a new file at `to` for the
    /// file known at `from` even with another inode and other content: a
    /// save through a temp file just before the move leaves nothing else to
    /// link them (a binary file shares no lines). Renames in a row are one.
    pub fn renamed(&mut self, from: String, to: String) {
        self.renamed.retain(|_, (_, at)| at.elapsed() < UNSEEN_WRITE);
        let origin = self.renamed.remove(&from).map_or(from, |(o, _)| o);
        if origin != to {
            self.renamed.insert(to, (origin, Instant::now()));
        }
    }

    /// The whole index as bytes (see [`Index::take_unsaved`] for the form
    /// a store keeps): without it, a restarted node could not tell a file
    /// deleted while it was stopped from one it has not written yet.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(INDEX_MAGIC);
        w.varint(INDEX_VERSION);
        w.usize(self.files.len());
        for (path, k) in self.files.iter() {
            w.str(path);
            write_known(&mut w, k);
        }
        write_intents(&mut w, &self.new_intents);
        w.into_bytes()
    }

    /// Reads what [`Index::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Index, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(INDEX_MAGIC, "disk index")?;
        let v = r.varint()?;
        // Version 1 lacks write intents, version 2 those of new files.
        if !(1..=INDEX_VERSION).contains(&v) {
            return Err(DecodeError::UnsupportedVersion(v));
        }
        let mut index = Index::default();
        for _ in 0..r.count(20)? {
            let path = r.str()?.to_owned();
            let k = read_known(&mut r, v)?;
            index.files.put(path, k);
        }
        if v >= 3 {
            index.new_intents = read_intents(&mut r)?;
        }
        r.finish()?;
        Ok(index)
    }

    /// What changed since the last call: the rows of the paths that
    /// changed and the write intents if they did. A store that keeps these
    /// (rows by path, beside them the intents) has the index
    /// ([`Index::from_rows`]).
    pub fn take_unsaved(&mut self) -> Unsaved {
        let touched = std::mem::take(&mut self.files.touched);
        let rows = touched
            .into_iter()
            .map(|p| {
                let row = self.files.map.get(&p).map(|k| {
                    let mut w = Writer::new();
                    w.varint(INDEX_VERSION);
                    write_known(&mut w, k);
                    w.into_bytes()
                });
                (p, row)
            })
            .collect();
        let mut w = Writer::new();
        w.varint(INDEX_VERSION);
        write_intents(&mut w, &self.new_intents);
        let intents = w.into_bytes();
        let intents = (self.intents_given.as_ref() != Some(&intents)).then(|| {
            self.intents_given = Some(intents.clone());
            intents
        });
        Unsaved { rows, intents }
    }

    /// Everything counts as changed (after a store that failed: what was
    /// given out may not be stored).
    pub fn touch_all(&mut self) {
        self.files.touched = self.files.map.keys().cloned().collect();
        self.intents_given = None;
    }

    /// The index from stored rows and intents (see [`Index::take_unsaved`]).
    pub fn from_rows(rows: impl IntoIterator<Item = (String, Vec<u8>)>, intents: Option<&[u8]>) -> Result<Index, DecodeError> {
        let mut index = Index::default();
        for (path, row) in rows {
            let mut r = Reader::new(&row);
            let v = r.varint()?;
            if !(3..=INDEX_VERSION).contains(&v) {
                return Err(DecodeError::UnsupportedVersion(v));
            }
            let k = read_known(&mut r, v)?;
            r.finish()?;
            index.files.put(path, k);
        }
        if let Some(bytes) = intents {
            let mut r = Reader::new(bytes);
            let v = r.varint()?;
            if !(3..=INDEX_VERSION).contains(&v) {
                return Err(DecodeError::UnsupportedVersion(v));
            }
            index.new_intents = read_intents(&mut r)?;
            r.finish()?;
            index.intents_given = Some(bytes.to_vec());
        }
        Ok(index)
    }

    /// True when a scan found `path` gone and waits for a second look
    /// before it counts as deleted (see [`GONE_WAIT`]).
    pub(crate) fn waiting(&self, path: &str) -> bool {
        self.deferred.contains_key(path)
    }

    /// Moves every key at or below `from` to `to`.
    pub(crate) fn rekey(&mut self, from: &str, to: &str) {
        for k in self.files.at_or_below(from) {
            if let Some(v) = self.files.remove(&k) {
                self.files.insert(format!("{to}{}", &k[from.len()..]), v);
            }
        }
    }
}

/// An index's paths, and which of them changed since they were last
/// stored (see [`Index::take_unsaved`]). Reads go to the map itself.
/// The paths of each entry are kept too (almost always one), so the paths
/// of changed entries are found without a walk of the index. An entry's id
/// is never changed through [`Files::get_mut`].
#[derive(Clone, Debug, Default)]
pub struct Files {
    map: BTreeMap<String, Known>,
    touched: BTreeSet<String>,
    ids: HashMap<EntryId, Vec<String>>,
}

impl std::ops::Deref for Files {
    type Target = BTreeMap<String, Known>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Files {
    /// Puts what is at `path` now.
    pub fn insert(&mut self, path: String, k: Known) -> Option<Known> {
        self.touched.insert(path.clone());
        self.put(path, k)
    }

    /// [`Files::insert`], not to be stored (it is as the store has it).
    fn put(&mut self, path: String, k: Known) -> Option<Known> {
        let paths = self.ids.entry(k.id).or_default();
        if let Err(at) = paths.binary_search(&path) {
            paths.insert(at, path.clone());
        }
        let id = k.id;
        let old = self.map.insert(path.clone(), k);
        if let Some(o) = old.as_ref().filter(|o| o.id != id) {
            self.unlink(o.id, &path);
        }
        old
    }

    fn unlink(&mut self, id: EntryId, path: &str) {
        if let Some(paths) = self.ids.get_mut(&id) {
            paths.retain(|p| p != path);
            if paths.is_empty() {
                self.ids.remove(&id);
            }
        }
    }

    /// Forgets `path`.
    pub fn remove(&mut self, path: &str) -> Option<Known> {
        let k = self.map.remove(path)?;
        self.unlink(k.id, path);
        self.touched.insert(path.to_owned());
        Some(k)
    }

    /// What is known at `path`, to change (but not its id).
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Known> {
        let k = self.map.get_mut(path)?;
        self.touched.insert(path.to_owned());
        Some(k)
    }

    /// The paths entry `id` is known at, in order (almost always one).
    pub fn paths_of(&self, id: &EntryId) -> &[String] {
        self.ids.get(id).map(Vec::as_slice).unwrap_or_default()
    }

    /// The known paths at and below `path`, in order (found by range: the
    /// work is theirs, not the index's).
    pub fn at_or_below(&self, path: &str) -> Vec<String> {
        let below = format!("{path}/");
        let mut out: Vec<String> = self.map.get_key_value(path).map(|(k, _)| k.clone()).into_iter().collect();
        out.extend(self.map.range(below.clone()..).take_while(|(k, _)| k.starts_with(&below)).map(|(k, _)| k.clone()));
        out
    }

    /// Forgets our writes that are no longer recent (in memory only, so
    /// nothing to store).
    pub(crate) fn forget_old_writes(&mut self) {
        for k in self.map.values_mut() {
            if k.written.as_ref().is_some_and(|w| !w.recent()) {
                k.written = None;
            }
        }
    }

    /// Moves the paths `which` picks out, as they are (nothing changed).
    pub(crate) fn take_out(&mut self, which: impl Fn(&str, &Known) -> bool) -> Files {
        let keys: Vec<String> = self.map.iter().filter(|(p, k)| which(p, k)).map(|(p, _)| p.clone()).collect();
        self.take_keys(keys)
    }

    /// Moves `keys` out, as they are.
    pub(crate) fn take_keys(&mut self, keys: impl IntoIterator<Item = String>) -> Files {
        let mut out = Files::default();
        for p in keys {
            if let Some(k) = self.map.remove(&p) {
                self.unlink(k.id, &p);
                if self.touched.remove(&p) {
                    out.touched.insert(p.clone());
                }
                out.put(p, k);
            }
        }
        out
    }

    /// Takes back what [`Files::take_out`] moved out (and what changed
    /// there meanwhile), in work proportional to what it takes back.
    pub(crate) fn absorb(&mut self, other: Files) {
        for (p, k) in other.map {
            self.put(p, k);
        }
        self.touched.extend(other.touched);
    }
}

fn write_known(w: &mut Writer, k: &Known) {
    w.raw(&k.id.0.agent.0);
    w.varint(k.id.0.seq);
    w.u8(match k.kind {
        Kind::File => 0,
        Kind::Dir => 1,
        Kind::Symlink => 2,
    });
    w.varint(k.stat.ino);
    w.varint(k.stat.size);
    w.signed(k.stat.mtime);
    w.signed(k.stat.ctime);
    w.u8(k.stat.exec as u8);
    write_ids(w, &k.base);
    match &k.staged {
        Some((ino, v)) => {
            w.u8(1);
            w.varint(*ino);
            write_ids(w, v);
        }
        None => w.u8(0),
    }
}

/// Reads what [`write_known`] wrote, in format version `v`.
fn read_known(r: &mut Reader<'_>, v: u64) -> Result<Known, DecodeError> {
    let id = EntryId(read_id(r)?);
    let kind = match r.u8()? {
        0 => Kind::File,
        1 => Kind::Dir,
        2 => Kind::Symlink,
        _ => return Err(DecodeError::Invalid("kind")),
    };
    let stat = Stat { ino: r.varint()?, size: r.varint()?, mtime: r.signed()?, ctime: r.signed()?, exec: r.u8()? != 0 };
    let base = read_ids(r)?;
    let staged = match if v == 1 { 0 } else { r.u8()? } {
        0 => None,
        1 => Some((r.varint()?, read_ids(r)?)),
        _ => return Err(DecodeError::Invalid("staged")),
    };
    Ok(Known { id, kind, stat, base, staged, written: None })
}

type Intents = BTreeMap<String, (EntryId, u64, Vec<EventId>)>;

fn write_intents(w: &mut Writer, intents: &Intents) {
    w.usize(intents.len());
    for (path, (id, ino, v)) in intents {
        w.str(path);
        w.raw(&id.0.agent.0);
        w.varint(id.0.seq);
        w.varint(*ino);
        write_ids(w, v);
    }
}

fn read_intents(r: &mut Reader<'_>) -> Result<Intents, DecodeError> {
    let mut out = Intents::new();
    for _ in 0..r.count(20)? {
        let path = r.str()?.to_owned();
        let entry = EntryId(read_id(r)?);
        let ino = r.varint()?;
        out.insert(path, (entry, ino, read_ids(r)?));
    }
    Ok(out)
}

fn write_ids(w: &mut Writer, v: &[EventId]) {
    w.usize(v.len());
    for b in v {
        w.raw(&b.agent.0);
        w.varint(b.seq);
    }
}

fn read_id(r: &mut Reader<'_>) -> Result<EventId, DecodeError> {
    let mut a = [0u8; 16];
    a.copy_from_slice(r.raw(16)?);
    Ok(EventId { agent: fsync_core::AgentId(a), seq: r.varint()? })
}

fn read_ids(r: &mut Reader<'_>) -> Result<Vec<EventId>, DecodeError> {
    let mut v = Vec::new();
    for _ in 0..r.count(17)? {
        v.push(read_id(r)?);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fsync_core::AgentId;

    fn known(seq: u64, ino: u64) -> Known {
        let ev = EventId { agent: AgentId::from_index(1), seq };
        Known {
            id: EntryId(ev),
            kind: Kind::File,
            stat: Stat { ino, size: 3, mtime: -5, ctime: 7, exec: true },
            base: vec![ev],
            staged: Some((ino + 1, vec![ev])),
            written: None,
        }
    }

    /// The paths of each entry stay what a walk of the index finds, through
    /// inserts over other entries, removals, an entry at two paths, moves
    /// by prefix and a scoped scan's take and absorb.
    #[test]
    fn the_paths_of_each_entry_are_what_the_index_holds() {
        let mut x = 11u64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let names = ["a", "a/b", "a/b/c", "a-x", "b", "b/a", "c"];
        let mut index = Index::default();
        for _ in 0..5000 {
            let p = names[next(names.len() as u64) as usize].to_owned();
            match next(5) {
                0 | 1 => {
                    index.files.insert(p, known(next(4), 1));
                }
                2 => {
                    index.files.remove(&p);
                }
                3 => {
                    let to = names[next(names.len() as u64) as usize];
                    if !to.starts_with(&p) {
                        index.rekey(&p, to);
                    }
                }
                _ => {
                    let out = index.files.take_keys(index.files.at_or_below(&p));
                    assert!(out.keys().all(|k| k == &p || k.starts_with(&format!("{p}/"))));
                    index.files.absorb(out);
                }
            }
            for seq in 0..4 {
                let id = known(seq, 1).id;
                let walked: Vec<&String> = index.files.iter().filter(|(_, k)| k.id == id).map(|(p, _)| p).collect();
                assert_eq!(index.files.paths_of(&id).iter().collect::<Vec<_>>(), walked);
            }
        }
    }

    #[test]
    fn only_the_paths_that_changed_are_stored_and_rows_load_back() {
        let mut index = Index::default();
        index.files.insert("a".into(), known(1, 10));
        index.files.insert("b".into(), known(2, 20));
        index.new_intents.insert("n".into(), (EntryId(EventId { agent: AgentId::from_index(2), seq: 9 }), 99, Vec::new()));
        let mut stored: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut intents_stored = None;
        let mut save = |index: &mut Index| {
            let u = index.take_unsaved();
            for (p, row) in &u.rows {
                match row {
                    Some(r) => stored.insert(p.clone(), r.clone()),
                    None => stored.remove(p),
                };
            }
            let n = u.rows.len() + usize::from(u.intents.is_some());
            if u.intents.is_some() {
                intents_stored = u.intents;
            }
            n
        };
        assert_eq!(save(&mut index), 3, "two rows and the intents");
        assert_eq!(save(&mut index), 0, "nothing changed");
        index.files.remove("a");
        if let Some(k) = index.files.get_mut("b") {
            k.stat.size = 4;
        }
        // Moved out and back as they were (a scoped scan): not changed.
        let out = index.files.take_out(|p, _| p == "b");
        index.files.absorb(out);
        assert_eq!(save(&mut index), 2);
        index.new_intents.clear();
        assert_eq!(save(&mut index), 1, "the intents changed");
        index.touch_all();
        assert_eq!(save(&mut index), 2, "after a failed store: everything again");
        let back = Index::from_rows(stored.clone(), intents_stored.as_deref()).expect("rows");
        assert_eq!(back.files.keys().collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(back.files.get("b"), index.files.get("b"));
        assert_eq!(back.new_intents, index.new_intents);
        let whole = Index::decode(&index.encode()).expect("whole");
        assert_eq!(whole.files.get("b"), index.files.get("b"));
        assert!(Index::from_rows([("x".to_owned(), vec![3, 1])], None).is_err(), "a damaged row is an error");
    }
}
