use proptest::prelude::*;

use super::super::tests::{agent, send, snapshot};
use super::*;
use crate::chunks::split;

fn all(_: &ChunkRef) -> bool {
    true
}

fn file(f: &mut Folder, path: &str, text: &str, now: u64) -> EntryId {
    let id = f.create(path, Kind::File, now).expect("create");
    f.set_text(id, text, now).expect("write");
    id
}

fn text(f: &mut Folder, path: &str) -> Option<String> {
    let id = f.tree().lookup(path)?.id;
    f.doc(id).map(|d| d.text())
}

/// Deletes what is at `path` (with all below it) at time `at`.
fn rm(f: &mut Folder, path: &str, at: u64) {
    let id = f.tree().lookup(path).expect("there").id;
    f.delete(id, at).expect("delete");
}

fn under_proj(f: &mut Folder) -> Vec<(String, String)> {
    snapshot(f).into_iter().filter(|(p, _)| p == "proj" || p.starts_with("proj/")).collect()
}

fn proj(f: &mut Folder) {
    file(f, "proj/a.txt", "alpha\n", 10);
    file(f, "proj/sub/b.txt", "beta\n", 10);
    let bin = f.create("proj/img.bin", Kind::File, 10).expect("create");
    let refs = split(&[0u8, 1, 2, 255]).into_iter().map(|(r, _)| r).collect();
    f.write_binary(bin, refs, 10).expect("binary");
    f.set_exec(bin, true, 10).expect("exec");
    let l = f.create("proj/link", Kind::Symlink, 10).expect("create");
    f.set_link(l, "a.txt", 10).expect("link");
}

#[test]
fn the_folder_as_of_a_time_keeps_binary_links_and_the_executable_bit() {
    let mut f = Folder::new(agent(1));
    proj(&mut f);
    let then = under_proj(&mut f);
    rm(&mut f, "proj", 20);
    file(&mut f, "later.txt", "new\n", 30);
    let mut past = f.as_of(15, agent(2)).expect("as of");
    assert_eq!(snapshot(&mut past), then);
    assert!(f.as_of(5, agent(2)).expect("as of").tree().is_empty(), "nothing existed then");
}

#[test]
fn a_tree_deleted_on_another_replica_comes_back_whole_and_reaches_it() {
    let mut a = Folder::new(agent(1));
    proj(&mut a);
    let before = under_proj(&mut a);
    let mut b = Folder::new(agent(2));
    send(&a, &mut b);
    rm(&mut b, "proj", 1_000);
    send(&b, &mut a);
    assert!(under_proj(&mut a).is_empty());
    let done = a.restore("proj", RestorePoint::BeforeDeletion, 2_000, &all).expect("restore");
    assert!(done.skipped.is_empty(), "{done:?}");
    assert_eq!(done.restored.len(), before.len());
    assert_eq!(under_proj(&mut a), before);
    send(&a, &mut b);
    assert_eq!(under_proj(&mut b), before, "the restore syncs like any change");
}

#[test]
fn a_file_deleted_long_before_its_directory_stays_deleted() {
    let mut f = Folder::new(agent(1));
    proj(&mut f);
    rm(&mut f, "proj/a.txt", 1_000);
    rm(&mut f, "proj", 1_000 + 3 * DELETION_EPISODE_MS);
    f.restore("proj", RestorePoint::BeforeDeletion, 1_000 + 4 * DELETION_EPISODE_MS, &all).expect("restore");
    assert!(f.tree().lookup("proj/sub/b.txt").is_some());
    assert!(f.tree().lookup("proj/a.txt").is_none(), "deleted on its own, long before");
}

#[test]
fn before_a_time_gives_the_contents_of_then_and_keeps_what_came_later() {
    let mut f = Folder::new(agent(1));
    let a = file(&mut f, "d/a.txt", "v1\n", 10);
    let gone = file(&mut f, "d/gone.txt", "here\n", 10);
    f.set_text(a, "v2\n", 100).expect("edit");
    f.delete(gone, 100).expect("delete");
    file(&mut f, "d/new.txt", "later\n", 100);
    let done = f.restore("d", RestorePoint::Before(50), 200, &all).expect("restore");
    assert_eq!(text(&mut f, "d/a.txt").as_deref(), Some("v1\n"));
    assert_eq!(text(&mut f, "d/gone.txt").as_deref(), Some("here\n"));
    assert_eq!(text(&mut f, "d/new.txt").as_deref(), Some("later\n"), "made after the time: left alone");
    assert_eq!(done.restored, vec!["d", "d/a.txt", "d/gone.txt"]);
    assert!(matches!(f.restore("d", RestorePoint::Before(5), 300, &all), Err(RestoreError::NotFound(_))));
}

#[test]
fn a_version_from_the_log_is_restored_as_a_new_version() {
    let mut f = Folder::new(agent(1));
    let id = file(&mut f, "t.txt", "one\n", 10);
    let v1 = f.doc(id).expect("doc").version_ids()[0];
    f.set_text(id, "two\n", 20).expect("edit");
    f.restore("t.txt", RestorePoint::Version(v1), 30, &all).expect("restore");
    assert_eq!(text(&mut f, "t.txt").as_deref(), Some("one\n"));
    let log_len = f.doc(id).expect("doc").oplog().len();
    assert!(log_len > 3, "history kept, the restore added to it");
    let other = EventId { agent: agent(9), seq: 1 };
    assert!(matches!(f.restore("t.txt", RestorePoint::Version(other), 40, &all), Err(RestoreError::NotAVersion(_))));
    assert!(matches!(f.restore("t.txt", RestorePoint::BeforeDeletion, 40, &all), Err(RestoreError::Exists(_))));
}

#[test]
fn a_path_that_changed_kind_is_left_as_it_is() {
    let mut f = Folder::new(agent(1));
    let x = file(&mut f, "x", "file\n", 10);
    f.delete(x, 20).expect("delete");
    file(&mut f, "x/inner", "dir now\n", 30);
    let done = f.restore("x", RestorePoint::Before(15), 40, &all).expect("restore");
    assert!(done.restored.is_empty());
    assert_eq!(done.skipped.len(), 1, "{done:?}");
    assert_eq!(text(&mut f, "x/inner").as_deref(), Some("dir now\n"));
}

#[test]
fn a_binary_version_whose_chunks_are_missing_is_skipped() {
    let mut f = Folder::new(agent(1));
    proj(&mut f);
    rm(&mut f, "proj", 1_000);
    let done = f.restore("proj", RestorePoint::BeforeDeletion, 2_000, &|_: &ChunkRef| false).expect("restore");
    assert_eq!(done.skipped.len(), 1);
    assert_eq!(done.skipped[0].0, "proj/img.bin");
    assert!(f.tree().lookup("proj/a.txt").is_some());
}

#[test]
fn deleted_files_are_listed_once_per_path_and_not_when_made_anew() {
    let mut f = Folder::new(agent(1));
    let a = file(&mut f, "d/a.txt", "1\n", 10);
    f.delete(a, 20).expect("delete");
    let a2 = file(&mut f, "d/a.txt", "2\n", 30);
    f.delete(a2, 40).expect("delete");
    let b = file(&mut f, "d/b.txt", "b\n", 10);
    f.delete(b, 20).expect("delete");
    file(&mut f, "d/b.txt", "again\n", 30);
    let listed = f.deleted("d");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].path, "d/a.txt");
    assert_eq!(listed[0].deleted_at, 40);
    assert_eq!(f.doc(a2).expect("doc").text_at(&listed[0].last.version), "2\n");
    assert!(f.deleted("e").is_empty());
    assert_eq!(f.deleted("").len(), 1);
}

#[test]
fn a_restore_merges_with_a_concurrent_edit_elsewhere() {
    let mut a = Folder::new(agent(1));
    let id = file(&mut a, "t.txt", "one\ntwo\nthree\n", 10);
    let v1 = a.doc(id).expect("doc").version_ids()[0];
    a.set_text(id, "one\nthree\n", 20).expect("edit");
    let mut b = Folder::new(agent(2));
    send(&a, &mut b);
    a.restore("t.txt", RestorePoint::Version(v1), 30, &all).expect("restore");
    b.set_text(id, "one\nthree\nfour\n", 30).expect("edit");
    let a0 = a.clone();
    send(&b, &mut a);
    send(&a0, &mut b);
    assert_eq!(text(&mut a, "t.txt").as_deref(), Some("one\ntwo\nthree\nfour\n"));
    assert_eq!(snapshot(&mut a), snapshot(&mut b));
}

/// One random step of the folder's life at time `t`.
#[derive(Clone, Debug)]
enum Step {
    Write(u8, String),
    Delete(u8),
    Move(u8, u8),
    Mkdir(u8),
}

fn name(i: u8) -> String {
    let dirs = ["", "d/", "d/e/", "f/"];
    format!("{}n{}", dirs[usize::from(i / 4) % dirs.len()], i % 4)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..16, "[a-c\n]{0,6}").prop_map(|(i, s)| Step::Write(i, s)),
        (0u8..16).prop_map(Step::Delete),
        (0u8..16, 0u8..16).prop_map(|(i, j)| Step::Move(i, j)),
        (0u8..16).prop_map(Step::Mkdir),
    ]
}

fn apply(f: &mut Folder, s: &Step, t: u64) {
    let _ = match s {
        Step::Write(i, body) => match f.tree().lookup(&name(*i)).map(|n| (n.id, n.kind)) {
            Some((id, Kind::File)) => f.set_text(id, body, t),
            Some(_) => Ok(()),
            None => f.create(&name(*i), Kind::File, t).and_then(|id| f.set_text(id, body, t)),
        },
        Step::Delete(i) => match f.tree().lookup(&name(*i)).map(|n| n.id) {
            Some(id) => f.delete(id, t),
            None => Ok(()),
        },
        Step::Move(i, j) => match f.tree().lookup(&name(*i)).map(|n| n.id) {
            Some(id) => f.rename(id, &name(*j), t),
            None => Ok(()),
        },
        Step::Mkdir(i) => f.create(&name(*i), Kind::Dir, t).map(|_| ()),
    };
}

/// Applies `steps` (step i at time 10 (i + 1)): the folder, what it held
/// just before step `cut` (or after the last), and that time.
fn replay(steps: &[Step], cut: usize) -> (Folder, Vec<(String, String)>, u64) {
    let mut f = Folder::new(agent(1));
    let cut = cut.min(steps.len());
    let mut then = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if i == cut {
            then = snapshot(&mut f);
        }
        apply(&mut f, s, 10 * (i as u64 + 1));
    }
    if cut == steps.len() {
        then = snapshot(&mut f);
    }
    (f, then, 10 * (cut as u64 + 1))
}

proptest! {
    /// The folder as of a time is exactly what it held then, whatever
    /// happened since, and the live folder is left as it is.
    #[test]
    fn the_folder_as_of_a_time_is_what_it_held_then(
        steps in prop::collection::vec(step(), 1..40),
        cut in 0usize..40,
    ) {
        let (mut f, then, t) = replay(&steps, cut);
        let now = snapshot(&mut f);
        let mut past = f.as_of(t, agent(9)).expect("as of");
        prop_assert_eq!(snapshot(&mut past), then);
        prop_assert_eq!(snapshot(&mut f), now);
    }

    /// Whatever happened since, restoring the whole folder as it was before
    /// a time brings back every path of then with its content, except the
    /// ones it reports as left alone (their path holds another kind now).
    #[test]
    fn restoring_the_folder_before_a_time_brings_back_what_it_held(
        steps in prop::collection::vec(step(), 1..40),
        cut in 0usize..40,
    ) {
        let (mut f, then, t) = replay(&steps, cut);
        match f.restore("", RestorePoint::Before(t), 10_000, &all) {
            Ok(done) => {
                let now = snapshot(&mut f);
                for (p, body) in &then {
                    let skipped = done.skipped.iter().any(|(s, _)| p == s || p.starts_with(&format!("{s}/")));
                    if !skipped {
                        prop_assert!(now.contains(&(p.clone(), body.clone())), "{p} {body} missing in {now:?} ({done:?})");
                    }
                }
            }
            Err(RestoreError::NotFound(_)) => prop_assert!(then.is_empty()),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}

#[test]
fn within_a_directory_means_it_or_below_not_a_name_that_starts_alike() {
    assert!(within("d", "d") && within("d/x", "d") && within("d/x/y", "d") && within("anything", ""));
    assert!(!within("d-x", "d") && !within("dx/y", "d") && !within("", "d") && !within("e", "d"));
    let mut f = Folder::new(agent(1));
    for p in ["d/a.txt", "d/sub/b.txt", "d-x/c.txt", "d0.txt", "e.txt"] {
        file(&mut f, p, "x\n", 10);
    }
    let paths =
        |f: &mut Folder, dir: &str| -> Vec<String> { f.tree().below(dir).into_iter().map(|n| n.path.clone()).collect() };
    assert_eq!(paths(&mut f, "d"), ["d", "d/a.txt", "d/sub", "d/sub/b.txt"]);
    assert_eq!(paths(&mut f, "d/sub/b.txt"), ["d/sub/b.txt"]);
    assert!(paths(&mut f, "nope").is_empty());
    assert_eq!(paths(&mut f, "").len(), f.tree().len());
}
