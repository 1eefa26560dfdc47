use super::*;
use crate::ids::{AgentId, EventId};

fn a(i: u64) -> AgentId {
    AgentId::from_index(i)
}

fn edit(pos: usize, del: usize, ins: &str) -> Edit {
    Edit { pos, del, ins: ins.into() }
}

/// Sends everything `from` has that `to` lacks, then merges.
fn sync(from: &TextDoc, to: &mut TextDoc) {
    let runs = from.oplog().export(|ag| to.oplog().next_seq(ag));
    for r in &runs {
        to.add_remote(&RemoteOp::from_exported(r)).expect("valid run");
    }
    to.merge_pending();
}

#[test]
fn local_edits() {
    let mut d = TextDoc::new();
    d.local_edit(a(1), 0, &edit(0, 0, "hello world"));
    d.local_edit(a(1), 11, &edit(5, 6, "!"));
    assert_eq!(d.text(), "hello!");
    assert_eq!(d.text_at(&[10]), "hello world");
}

#[test]
fn concurrent_edits_at_different_places_both_survive() {
    let mut x = TextDoc::new();
    x.local_edit(a(1), 0, &edit(0, 0, "one two three"));
    let mut y = TextDoc::new();
    sync(&x, &mut y);
    x.local_edit(a(1), 13, &edit(0, 3, "ONE"));
    y.local_edit(a(2), 0, &edit(8, 5, "THREE"));
    let x0 = x.clone();
    sync(&y, &mut x);
    sync(&x0, &mut y);
    assert_eq!(x.text(), "ONE two THREE");
    assert_eq!(y.text(), "ONE two THREE");
}

#[test]
fn concurrent_inserts_at_one_place_do_not_interleave() {
    let mut x = TextDoc::new();
    x.local_edit(a(1), 0, &edit(0, 0, "[]"));
    let mut y = TextDoc::new();
    sync(&x, &mut y);
    let mut sx = 2;
    let mut sy = 0;
    for (i, c) in "abc".chars().enumerate() {
        sx = x.local_edit(a(1), sx, &edit(1 + i, 0, &c.to_string())).end;
    }
    for (i, c) in "XYZ".chars().enumerate() {
        sy = y.local_edit(a(2), sy, &edit(1 + i, 0, &c.to_string())).end;
    }
    let x0 = x.clone();
    sync(&y, &mut x);
    sync(&x0, &mut y);
    assert_eq!(x.text(), y.text());
    assert!(x.text() == "[abcXYZ]" || x.text() == "[XYZabc]", "{}", x.text());
}

#[test]
fn concurrent_delete_and_retreat() {
    let mut x = TextDoc::new();
    x.local_edit(a(1), 0, &edit(0, 0, "abcdef"));
    let mut y = TextDoc::new();
    sync(&x, &mut y);
    x.local_edit(a(1), 6, &edit(1, 2, ""));
    x.local_edit(a(1), 8, &edit(1, 0, "12"));
    y.local_edit(a(2), 0, &edit(2, 3, "Q"));
    y.local_edit(a(2), 4, &edit(0, 0, "<"));
    let x0 = x.clone();
    sync(&y, &mut x);
    sync(&x0, &mut y);
    assert_eq!(x.text(), y.text());
    let fresh = TextDoc::from_oplog(x.oplog().clone());
    assert_eq!(fresh.text(), x.text());
}

#[test]
fn remote_op_with_unknown_parent_is_refused() {
    let mut d = TextDoc::new();
    let p = [EventId { agent: a(9), seq: 3 }];
    let err = d.add_remote(&RemoteOp::insert(EventId { agent: a(1), seq: 0 }, &p, 0, "x"));
    assert!(matches!(err, Err(RemoteOpError::UnknownParent(_))));
    // Known runs are skipped, partly known ones trimmed.
    assert_eq!(d.add_remote(&RemoteOp::insert(EventId { agent: a(1), seq: 0 }, &[], 0, "ab")), Ok(true));
    assert_eq!(d.add_remote(&RemoteOp::insert(EventId { agent: a(1), seq: 0 }, &[], 0, "a")), Ok(false));
    let p = [EventId { agent: a(1), seq: 0 }];
    assert_eq!(d.add_remote(&RemoteOp::insert(EventId { agent: a(1), seq: 1 }, &p, 1, "bc")), Ok(true));
    d.merge_pending();
    assert_eq!(d.text(), "abc");
}

/// Random edits on `n` replicas with random pairwise syncs; at the end all
/// replicas and a fresh checkout of the log agree.
pub(crate) fn fuzz_once(seed: u64, n: usize, steps: usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut docs: Vec<TextDoc> = (0..n).map(|_| TextDoc::new()).collect();
    let mut seqs = vec![0u64; n];
    let alphabet: Vec<char> = "abcdefghij😀é".chars().collect();
    for _ in 0..steps {
        let i = rng.random_range(0..n);
        if rng.random_bool(0.3) {
            let j = rng.random_range(0..n);
            if i != j {
                let from = docs[j].clone();
                sync(&from, &mut docs[i]);
            }
            continue;
        }
        let len = docs[i].len_chars();
        let pos = rng.random_range(0..=len);
        let del = if len > pos && rng.random_bool(0.4) { rng.random_range(0..=(len - pos).min(4)) } else { 0 };
        let ins: String = (0..rng.random_range(0..4)).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
        seqs[i] = docs[i].local_edit(a(i as u64 + 1), seqs[i], &Edit { pos, del, ins }).end;
    }
    for _ in 0..2 {
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let from = docs[j].clone();
                    sync(&from, &mut docs[i]);
                }
            }
        }
    }
    let t = docs[0].text();
    for d in &docs {
        assert_eq!(d.text(), t, "seed {seed}: replicas differ");
    }
    assert_eq!(TextDoc::from_oplog(docs[0].oplog().clone()).text(), t, "seed {seed}: checkout differs");
}

#[test]
fn fuzz_small() {
    for seed in 0..300 {
        fuzz_once(seed, 3, 30);
    }
}

#[test]
fn edits_from_an_old_base_merge_with_what_came_since() {
    let mut d = TextDoc::new();
    let s = d.local_edit(a(1), 0, &edit(0, 0, "one two three")).end;
    let base: Vec<Lv> = d.version().to_vec();
    // A remote change lands after the editor read the file...
    let r = d.oplog().export(|_| 0).last().map(|r| r.id).expect("ops");
    let p = [r];
    d.add_remote(&RemoteOp::insert(EventId { agent: a(2), seq: 0 }, &p, 13, " four")).expect("valid");
    d.merge_pending();
    assert_eq!(d.text(), "one two three four");
    // ...and the editor saves its own change made on the old text.
    d.edit_from(a(1), s, &base, &[edit(0, 3, "ONE")], 0);
    assert_eq!(d.text(), "ONE two three four");
}
