//! The same trace operations through diamond-types 1.0 and yrs.

use diamond_types::list::{ListCRDT, OpLog as DtOpLog};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, Transact, Update};

use crate::trace::Trace;

/// diamond-types 1.0: every patch as a local edit.
pub fn dt_local(t: &Trace) -> ListCRDT {
    let mut doc = ListCRDT::new();
    let agent = doc.get_or_create_agent_id("a");
    if !t.start.is_empty() {
        doc.insert(agent, 0, &t.start);
    }
    for txn in &t.txns {
        for (pos, del, ins) in &txn.patches {
            if *del > 0 {
                doc.delete_without_content(agent, *pos..*pos + *del);
            }
            if !ins.is_empty() {
                doc.insert(agent, *pos, ins);
            }
        }
    }
    doc
}

/// diamond-types 1.0: the full history of a concurrent trace.
pub fn dt_concurrent(t: &Trace) -> DtOpLog {
    let mut log = DtOpLog::new();
    let mut after: Vec<Vec<usize>> = Vec::with_capacity(t.txns.len());
    let mut agents = Vec::new();
    for txn in &t.txns {
        let a = txn.agent as usize;
        while agents.len() <= a {
            let id = log.get_or_create_agent_id(&format!("agent{}", agents.len()));
            agents.push(id);
        }
        let mut parents: Vec<usize> = txn.parents.iter().flat_map(|&p| after[p].iter().copied()).collect();
        parents.sort_unstable();
        parents.dedup();
        for (pos, del, ins) in &txn.patches {
            if *del > 0 {
                let v = log.add_delete_at(agents[a], &parents, *pos..*pos + *del);
                parents = vec![v];
            }
            if !ins.is_empty() {
                let v = log.add_insert_at(agents[a], &parents, *pos, ins);
                parents = vec![v];
            }
        }
        after.push(parents);
    }
    log
}

/// diamond-types 1.0: its encoding of a history.
pub fn dt_encode(log: &DtOpLog) -> Vec<u8> {
    log.encode(Default::default())
}

/// diamond-types 1.0: load an encoded history and produce the text.
pub fn dt_load(bytes: &[u8]) -> String {
    let log = DtOpLog::load_from(bytes).expect("dt decodes its own encoding");
    log.checkout_tip().content().to_string()
}

fn ydoc(client: u64) -> Doc {
    Doc::with_options(Options {
        client_id: yrs::block::ClientID::new(client),
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// Converts a position in code points into UTF-16 units of `s`.
fn utf16_pos(s: &str, chars: usize) -> u32 {
    s.chars().take(chars).map(|c| c.len_utf16() as u32).sum()
}

/// yrs: every patch as a local edit. Returns the doc. Trace positions are
/// code points and yrs counts UTF-16 units, so a rope alongside converts
/// them when the trace is not ASCII.
pub fn yrs_local(t: &Trace) -> Doc {
    let doc = ydoc(1);
    let text = doc.get_or_insert_text("t");
    let ascii = t.start.is_ascii() && t.txns.iter().all(|x| x.patches.iter().all(|p| p.2.is_ascii()));
    let mut shadow = ropey::Rope::from_str(&t.start);
    if !t.start.is_empty() {
        text.insert(&mut doc.transact_mut(), 0, &t.start);
    }
    // One transaction per trace transaction, as an editor would commit.
    for x in &t.txns {
        let mut txn = doc.transact_mut();
        for (pos, del, ins) in &x.patches {
            let (p, d) = if ascii {
                (*pos as u32, *del as u32)
            } else {
                let p = shadow.char_to_utf16_cu(*pos);
                let e = shadow.char_to_utf16_cu(pos + del);
                shadow.remove(*pos..pos + del);
                shadow.insert(*pos, ins);
                (p as u32, (e - p) as u32)
            };
            if d > 0 {
                text.remove_range(&mut txn, p, d);
            }
            if !ins.is_empty() {
                text.insert(&mut txn, p, ins);
            }
        }
    }
    doc
}

/// yrs: the whole state as one update.
pub fn yrs_encode(doc: &Doc) -> Vec<u8> {
    doc.transact().encode_state_as_update_v1(&StateVector::default())
}

/// yrs: load an update into an empty doc and produce the text.
pub fn yrs_load(bytes: &[u8]) -> String {
    let doc = ydoc(999_999);
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    txn.apply_update(Update::decode_v1(bytes).expect("yrs decodes its own update")).expect("update applies");
    text.get_string(&txn)
}

/// yrs: the full history of a concurrent trace. Each transaction works on
/// its parents' merged state: it takes over a parent's document when it is
/// that parent's last child, and merges the other parents by state-vector
/// delta. Each agent is one yrs client while its transactions follow each
/// other; where an author continues on a branch that lacks its own latest
/// edits (a git author on two branches), a fresh client id is used so clocks
/// are never reused.
pub fn yrs_concurrent(t: &Trace) -> Doc {
    let n = t.txns.len();
    let mut docs: Vec<Option<Doc>> = (0..n).map(|_| None).collect();
    let mut children: Vec<usize> = vec![0; n];
    for x in &t.txns {
        for &p in &x.parents {
            children[p] += 1;
        }
    }
    // Per agent: (client id in use, that client's clock after its last txn).
    let mut clients: std::collections::HashMap<u64, (u64, u32)> = Default::default();
    let mut fresh = 1_000_000u64;
    let mut leaves: Vec<Doc> = Vec::new();
    let ascii = t.txns.iter().all(|x| x.patches.iter().all(|p| p.2.is_ascii()));
    for (i, x) in t.txns.iter().enumerate() {
        let (mut client, clock) = *clients.entry(x.agent).or_insert((x.agent + 1, 0));
        let cid = |c: u64| yrs::block::ClientID::new(c);
        // Take over a parent's doc if we are its last child and it is ours.
        let mut base: Option<Doc> = None;
        for &p in &x.parents {
            let reusable = children[p] == 1
                && docs[p]
                    .as_ref()
                    .is_some_and(|d| d.client_id() == cid(client) && d.transact().state_vector().get(&cid(client)) == clock);
            if reusable {
                base = docs[p].take();
                break;
            }
        }
        let doc = match base {
            Some(d) => d,
            None => {
                // Does the merge of the parents hold this client's latest edits?
                let probe = ydoc(999_998);
                for &p in &x.parents {
                    if let Some(d) = &docs[p] {
                        let u = d.transact().encode_state_as_update_v1(&probe.transact().state_vector());
                        probe.transact_mut().apply_update(Update::decode_v1(&u).expect("decodes")).expect("applies");
                    }
                }
                if clock > 0 && probe.transact().state_vector().get(&cid(client)) != clock {
                    fresh += 1;
                    client = fresh;
                }
                let d = ydoc(client);
                let u = probe.transact().encode_state_as_update_v1(&StateVector::default());
                d.transact_mut().apply_update(Update::decode_v1(&u).expect("decodes")).expect("applies");
                d
            }
        };
        // Merge the other parents' edits.
        for &p in &x.parents {
            if let Some(d) = &docs[p] {
                let u = d.transact().encode_state_as_update_v1(&doc.transact().state_vector());
                doc.transact_mut().apply_update(Update::decode_v1(&u).expect("decodes")).expect("applies");
            }
        }
        for &p in &x.parents {
            children[p] -= 1;
            if children[p] == 0 {
                docs[p] = None;
            }
        }
        {
            let text = doc.get_or_insert_text("t");
            let mut txn = doc.transact_mut();
            for (pos, del, ins) in &x.patches {
                let (p, d) = if ascii {
                    (*pos as u32, *del as u32)
                } else {
                    let cur = text.get_string(&txn);
                    let p = utf16_pos(&cur, *pos);
                    (p, utf16_pos(&cur, pos + del) - p)
                };
                // Where yrs ordered concurrent inserts differently (A2), later
                // positions can fall past the end: clamp, and the result is
                // reported as not exact.
                let len = text.len(&txn);
                let p = p.min(len);
                let d = d.min(len - p);
                if d > 0 {
                    text.remove_range(&mut txn, p, d);
                }
                if !ins.is_empty() {
                    text.insert(&mut txn, p, ins);
                }
            }
        }
        let new_clock = doc.transact().state_vector().get(&cid(client));
        clients.insert(x.agent, (client, new_clock));
        if children[i] == 0 {
            leaves.push(doc);
        } else {
            docs[i] = Some(doc);
        }
    }
    let out = ydoc(2_000_000_000);
    for d in leaves {
        let u = d.transact().encode_state_as_update_v1(&out.transact().state_vector());
        out.transact_mut().apply_update(Update::decode_v1(&u).expect("decodes")).expect("applies");
    }
    out
}
