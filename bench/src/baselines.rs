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
    Doc::with_options(Options { client_id: yrs::block::ClientID::new(client), offset_kind: OffsetKind::Utf16, ..Options::default() })
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
    let mut txn = doc.transact_mut();
    let ascii = t.start.is_ascii() && t.txns.iter().all(|x| x.patches.iter().all(|p| p.2.is_ascii()));
    let mut shadow = ropey::Rope::from_str(&t.start);
    if !t.start.is_empty() {
        text.insert(&mut txn, 0, &t.start);
    }
    for x in &t.txns {
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
    drop(txn);
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

/// yrs: the full history of a concurrent trace, each transaction on a fork
/// of its parents' merged state (client id per transaction, so an author
/// committing on two branches does not reuse clocks).
pub fn yrs_concurrent(t: &Trace) -> Doc {
    let mut states: Vec<Option<Vec<u8>>> = vec![None; t.txns.len()];
    let mut children: Vec<usize> = vec![0; t.txns.len()];
    for x in &t.txns {
        for &p in &x.parents {
            children[p] += 1;
        }
    }
    let mut leaves = Vec::new();
    for (i, x) in t.txns.iter().enumerate() {
        let doc = ydoc(i as u64 + 1);
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        for &p in &x.parents {
            if let Some(s) = &states[p] {
                txn.apply_update(Update::decode_v1(s).expect("decodes")).expect("applies");
            }
            children[p] -= 1;
            if children[p] == 0 {
                states[p] = None;
            }
        }
        for (pos, del, ins) in &x.patches {
            let cur = text.get_string(&txn);
            let p = utf16_pos(&cur, *pos);
            let d = utf16_pos(&cur, pos + del) - p;
            if d > 0 {
                text.remove_range(&mut txn, p, d);
            }
            if !ins.is_empty() {
                text.insert(&mut txn, p, ins);
            }
        }
        let state = txn.encode_state_as_update_v1(&StateVector::default());
        drop(txn);
        if children[i] == 0 {
            leaves.push(state);
        } else {
            states[i] = Some(state);
        }
    }
    let doc = ydoc(1_000_000);
    {
        let mut txn = doc.transact_mut();
        for s in leaves {
            txn.apply_update(Update::decode_v1(&s).expect("decodes")).expect("applies");
        }
    }
    doc
}
