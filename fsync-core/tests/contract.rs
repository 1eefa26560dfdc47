//! One property per row of CONTRACT.md section 2: two replicas make the
//! row's concurrent changes (plus unrelated noise), and three replicas
//! exchange them in random order, with duplicates and re-sends. All three
//! must end identical, with the row's outcome.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use fsync_core::chunks::split;
use fsync_core::folder::{Changes, Content, Folder, Kind, VersionVector};
use fsync_core::AgentId;

/// Delivers what `to` lacks from `from`, one run at a time in a shuffled
/// order with duplicates; runs that arrive before what they depend on are
/// refused and come again in the next round, as after a resync.
fn deliver(from: &Folder, to: &mut Folder, rng: &mut StdRng) {
    let (c, _) = from.changes_since(to.version_vector(), 0, usize::MAX);
    let mut runs: Vec<_> = c.runs.iter().flat_map(|r| std::iter::repeat_n(r.clone(), rng.random_range(1..=2))).collect();
    for _round in 0..runs.len() + 1 {
        runs.shuffle(rng);
        for r in &runs {
            let _ = to.apply_changes(&Changes { runs: vec![r.clone()] });
        }
    }
    let lacking = from.changes_since(to.version_vector(), 0, usize::MAX).0;
    assert!(lacking.runs.is_empty(), "not everything arrived");
}

/// Every replica hears from every other, in a random order.
fn exchange(fs: &mut [Folder], rng: &mut StdRng) {
    let n = fs.len();
    let mut pairs: Vec<(usize, usize)> = (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).filter(|(i, j)| i != j).collect();
    for _ in 0..2 {
        pairs.shuffle(rng);
        for &(i, j) in &pairs {
            let from = fs[j].clone();
            deliver(&from, &mut fs[i], rng);
        }
    }
}

fn snapshot(f: &mut Folder) -> Vec<(String, String)> {
    let nodes: Vec<_> = f.tree().nodes().cloned().collect();
    nodes
        .into_iter()
        .map(|n| {
            let st = f.state(n.id).cloned().expect("state");
            let body = match &st.content {
                Content::Text => f.doc(n.id).map(|d| d.text()).unwrap_or_default(),
                other => format!("{other:?}"),
            };
            (n.path, format!("{:?} {} {body}", st.kind, st.exec))
        })
        .collect()
}

/// Three replicas sharing `base`; returns them converged after `a` and `b`
/// act concurrently (the third only relays).
fn scenario(
    seed: u64,
    base: impl FnOnce(&mut Folder),
    act_a: impl FnOnce(&mut Folder),
    act_b: impl FnOnce(&mut Folder),
) -> Vec<Folder> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fs: Vec<Folder> = (1..=3).map(|i| Folder::new(AgentId::from_index(i))).collect();
    base(&mut fs[0]);
    exchange(&mut fs, &mut rng);
    // Unrelated noise on the relay, so histories are wider than the row.
    let noise = fs[2].create(&format!("noise-{}", rng.random_range(0..100)), Kind::File, 5).expect("noise");
    fs[2].set_text(noise, "noise", 5).expect("noise");
    act_a(&mut fs[0]);
    act_b(&mut fs[1]);
    exchange(&mut fs, &mut rng);
    let first = snapshot(&mut fs[0]);
    for f in fs.iter_mut() {
        assert_eq!(snapshot(f), first, "replicas differ");
    }
    fs
}

fn text(f: &mut Folder, path: &str) -> Option<String> {
    let id = f.tree().lookup(path)?.id;
    f.doc(id).map(|d| d.text())
}

fn write(f: &mut Folder, path: &str, body: &str) {
    let id = match f.tree().lookup(path) {
        Some(n) => n.id,
        None => f.create(path, Kind::File, 1).expect("create"),
    };
    f.set_text(id, body, 2).expect("write");
}

fn id_of(f: &mut Folder, path: &str) -> fsync_core::folder::EntryId {
    f.tree().lookup(path).expect("exists").id
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn row1_text_edits_at_different_places_are_both_present(
        seed in any::<u64>(), lines in prop::collection::vec("[a-z]{1,8}", 2..8), i in 0usize..8, j in 0usize..8,
    ) {
        let (i, j) = (i % lines.len(), j % lines.len());
        prop_assume!(i != j);
        let base = lines.join("\n");
        let mut la = lines.clone();
        la[i] = format!("A{}", la[i]);
        let mut lb = lines.clone();
        lb[j] = format!("{}B", lb[j]);
        let mut fs = scenario(seed, |f| write(f, "t.txt", &base), |f| write(f, "t.txt", &la.join("\n")), |f| write(f, "t.txt", &lb.join("\n")));
        let mut both = lines.clone();
        both[i] = format!("A{}", both[i]);
        both[j] = format!("{}B", both[j]);
        prop_assert_eq!(text(&mut fs[0], "t.txt"), Some(both.join("\n")));
    }

    #[test]
    fn row2_inserts_at_one_place_never_interleave(
        seed in any::<u64>(), base in "[a-z]{0,10}", pos in 0usize..11, sa in "[A-M]{1,6}", sb in "[N-Z]{1,6}",
    ) {
        let pos = pos.min(base.len());
        let ins = |s: &str| format!("{}{}{}", &base[..pos], s, &base[pos..]);
        let (ta, tb) = (ins(&sa), ins(&sb));
        let mut fs = scenario(seed, |f| write(f, "t", &base), |f| write(f, "t", &ta), |f| write(f, "t", &tb));
        let got = text(&mut fs[0], "t").expect("text");
        let ab = format!("{}{}{}{}", &base[..pos], sa, sb, &base[pos..]);
        let ba = format!("{}{}{}{}", &base[..pos], sb, sa, &base[pos..]);
        prop_assert!(got == ab || got == ba, "{} is interleaved", got);
    }

    #[test]
    fn row3_binary_written_twice_has_one_winner_and_keeps_both(seed in any::<u64>(), x in any::<u8>(), y in any::<u8>()) {
        prop_assume!(x != y);
        let ca: Vec<_> = split(&vec![x; 3000]).into_iter().map(|c| c.0).collect();
        let cb: Vec<_> = split(&vec![y; 3000]).into_iter().map(|c| c.0).collect();
        let (ha, hb) = (ca[0].hash, cb[0].hash);
        let mut fs = scenario(
            seed,
            |f| { f.create("b.bin", Kind::File, 1).expect("create"); },
            |f| { let id = id_of(f, "b.bin"); f.write_binary(id, ca, 10).expect("write"); },
            |f| { let id = id_of(f, "b.bin"); f.write_binary(id, cb, 10).expect("write"); },
        );
        let id = id_of(&mut fs[0], "b.bin");
        let is_binary = matches!(fs[0].state(id).map(|s| &s.content), Some(Content::Binary { .. }));
        prop_assert!(is_binary, "binary content lost");
        let refs = fs[0].referenced_chunks();
        prop_assert!(refs.contains(&ha) && refs.contains(&hb), "a version was dropped from history");
    }

    #[test]
    fn row4_edit_beats_concurrent_delete(seed in any::<u64>(), body in "[a-z ]{1,20}", extra in "[A-Z]{1,5}") {
        let edited = format!("{body}{extra}");
        let mut fs = scenario(
            seed,
            |f| write(f, "doc", &body),
            |f| write(f, "doc", &edited),
            |f| { let id = id_of(f, "doc"); f.delete(id, 3).expect("delete"); },
        );
        prop_assert_eq!(text(&mut fs[0], "doc"), Some(edited));
    }

    #[test]
    fn row5_edit_and_concurrent_move_meet(seed in any::<u64>(), body in "[a-z]{1,20}", dir in "[a-z]{1,5}") {
        let to = format!("{dir}/moved.txt");
        let mut fs = scenario(
            seed,
            |f| write(f, "orig.txt", &body),
            |f| write(f, "orig.txt", &format!("{body}!")),
            |f| { let id = id_of(f, "orig.txt"); f.rename(id, &to, 3).expect("move"); },
        );
        prop_assert_eq!(text(&mut fs[0], &to), Some(format!("{body}!")));
        prop_assert!(fs[0].tree().lookup("orig.txt").is_none());
    }

    #[test]
    fn row6_two_renames_end_with_one_name(seed in any::<u64>(), na in "[a-m]{1,6}", nb in "[n-z]{1,6}") {
        let mut fs = scenario(
            seed,
            |f| write(f, "x", "data"),
            |f| { let id = id_of(f, "x"); f.rename(id, &na, 3).expect("rename"); },
            |f| { let id = id_of(f, "x"); f.rename(id, &nb, 3).expect("rename"); },
        );
        let paths: Vec<String> = fs[0].tree().nodes().map(|n| n.path.clone()).filter(|p| !p.starts_with("noise")).collect();
        prop_assert_eq!(paths.len(), 1);
        prop_assert!(paths[0] == na || paths[0] == nb);
    }

    #[test]
    fn row7_same_new_path_keeps_both_contents(seed in any::<u64>(), ba in "[a-m]{1,10}", bb in "[n-z]{1,10}") {
        let mut fs = scenario(seed, |_| {}, |f| write(f, "new.md", &ba), |f| write(f, "new.md", &bb));
        let snap = snapshot(&mut fs[0]);
        let bodies: Vec<&String> = snap.iter().map(|(_, b)| b).collect();
        prop_assert!(bodies.iter().any(|b| b.ends_with(&ba)) && bodies.iter().any(|b| b.ends_with(&bb)), "{:?}", snap);
        prop_assert!(fs[0].tree().lookup("new.md").is_some());
    }

    #[test]
    fn row8_new_file_in_deleted_directory_survives(seed in any::<u64>(), body in "[a-z]{1,10}") {
        let mut fs = scenario(
            seed,
            |f| write(f, "dir/old", "old"),
            |f| { let id = id_of(f, "dir"); f.delete(id, 3).expect("delete"); },
            |f| write(f, "dir/new", &body),
        );
        prop_assert_eq!(text(&mut fs[0], "dir/new"), Some(body));
        prop_assert!(fs[0].tree().lookup("dir/old").is_none());
    }
}

/// What a path becomes in a kind change.
#[derive(Clone, Copy, Debug)]
enum Becomes {
    File,
    DirWithFile,
    EmptyDir,
    Link,
}

/// Replaces whatever is at `path` with a new entry of another kind, as a
/// scan records it: the old entry (and what is below it, deepest first)
/// is deleted, the new one created.
fn replace(f: &mut Folder, path: &str, becomes: Becomes, tag: &str) {
    if let Some(id) = f.tree().lookup(path).map(|n| n.id) {
        let mut below = f.tree().descendants(id);
        below.reverse();
        for d in below {
            f.delete(d, 3).expect("delete below");
        }
        f.delete(id, 3).expect("delete");
    }
    match becomes {
        Becomes::File => write(f, path, &format!("file {tag}")),
        Becomes::DirWithFile => write(f, &format!("{path}/inner"), &format!("inner {tag}")),
        Becomes::EmptyDir => {
            f.create(path, Kind::Dir, 3).expect("mkdir");
        }
        Becomes::Link => {
            let id = f.create(path, Kind::Symlink, 3).expect("link");
            f.set_link(id, &format!("target-{tag}"), 3).expect("target");
        }
    }
}

fn becomes() -> impl Strategy<Value = Becomes> {
    prop_oneof![Just(Becomes::File), Just(Becomes::DirWithFile), Just(Becomes::EmptyDir), Just(Becomes::Link)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Row 9: a path changes kind on one node, or to different kinds on
    /// two: every replica ends with the same kinds at the same paths (the
    /// scenario checks that), one node at the name, a directory if any of
    /// them is one; what either node wrote is still there; and the replaced
    /// content stays in the history.
    #[test]
    fn row9_a_path_that_changes_kind_converges_and_loses_nothing(
        seed in any::<u64>(), start in becomes(), a in becomes(), b in prop::option::of(becomes()), edit_b in any::<bool>(),
    ) {
        let mut fs = scenario(
            seed,
            |f| replace(f, "p", start, "base"),
            |f| replace(f, "p", a, "a"),
            |f| match b {
                Some(kind) => replace(f, "p", kind, "b"),
                // Or an edit of what was there, if it was a file.
                None if edit_b && matches!(start, Becomes::File) => write(f, "p", "file base, edited by b"),
                None => {}
            },
        );
        let f = &mut fs[0];
        let at = f.tree().lookup("p").cloned().expect("something at p");
        let dir_made = matches!(a, Becomes::DirWithFile | Becomes::EmptyDir) || matches!(b, Some(Becomes::DirWithFile | Becomes::EmptyDir));
        if dir_made {
            prop_assert_eq!(at.kind, Kind::Dir, "a directory keeps the name");
        }
        let snap = snapshot(f);
        let all = format!("{snap:?}");
        for (kind, tag) in [(Some(a), "a"), (b, "b")] {
            match kind {
                Some(Becomes::File) => prop_assert!(all.contains(&format!("file {tag}")), "{tag}'s file lost: {all}"),
                Some(Becomes::DirWithFile) => prop_assert!(all.contains(&format!("inner {tag}")), "{tag}'s file lost: {all}"),
                Some(Becomes::Link) => prop_assert!(all.contains(&format!("target-{tag}")), "{tag}'s link lost: {all}"),
                _ => {}
            }
        }
        if b.is_none() && edit_b && matches!(start, Becomes::File) {
            prop_assert!(all.contains("edited by b"), "an edit concurrent with the kind change was lost: {all}");
        }
        // The replaced file's text is still in the history.
        if matches!(start, Becomes::File) {
            let kept = f.entry_ids().any(|id| f.doc(id).is_some_and(|d| d.text().starts_with("file base")));
            prop_assert!(kept, "the replaced file's content left the history");
        }
    }

    /// Deleted stays deleted: a tree deleted on one node while another
    /// changed something elsewhere leaves nothing of it on any replica.
    #[test]
    fn a_deleted_tree_stays_deleted_everywhere(seed in any::<u64>(), files in prop::collection::vec("[a-c]{1,2}/[a-c]{1,2}", 1..6)) {
        let mut fs = scenario(
            seed,
            |f| for (i, p) in files.iter().enumerate() { write(f, &format!("top/{p}"), &format!("{i}")) },
            |f| {
                let id = id_of(f, "top");
                let mut below = f.tree().descendants(id);
                below.reverse();
                for d in below {
                    f.delete(d, 3).expect("delete");
                }
                f.delete(id, 3).expect("delete");
            },
            |f| write(f, "elsewhere.txt", "unrelated"),
        );
        for f in fs.iter_mut() {
            let left: Vec<String> = f.tree().nodes().map(|n| n.path.clone()).filter(|p| p == "top" || p.starts_with("top/")).collect();
            prop_assert!(left.is_empty(), "{:?}", left);
            prop_assert!(f.tree().lookup("elsewhere.txt").is_some());
        }
    }
}

#[test]
fn an_unknown_summary_asks_for_everything() {
    let mut a = Folder::new(AgentId::from_index(1));
    write(&mut a, "x", "hello");
    let (c, _) = a.changes_since(&VersionVector::new(), 0, usize::MAX);
    assert!(!c.runs.is_empty());
}
