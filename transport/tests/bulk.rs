//! A big binary file transfers on its own streams while small text edits
//! keep flowing: the edits are not queued behind the transfer.

mod common;
use common::TestNode;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fsync_core::chunks::{split, ChunkStore};
use fsync_core::folder::{Folder, Kind};
use fsync_core::AgentId;
use transport::{Identity, Node, Trust};

const SIZE: usize = 200 << 20;

fn node(i: u64) -> (TestNode, Arc<Trust>) {
    let trust = Arc::new(Trust::default());
    let n = TestNode::new(
        Node::bind(Identity::generate().expect("identity"), trust.clone(), "127.0.0.1:0".parse().expect("addr")).expect("bind"),
    );
    n.add_folder("f", Folder::new(AgentId::from_index(i)));
    (n, trust)
}

fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

fn missing_chunks(n: &TestNode) -> usize {
    n.read("f", |s| s.folder.referenced_chunks().iter().filter(|h| !s.chunks.has(h)).count()).unwrap_or(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_edits_flow_during_a_200_mb_transfer() {
    let (a, ta) = node(1);
    let (b, tb) = node(2);
    ta.allow(b.device_id(), "f");
    tb.allow(a.device_id(), "f");
    let data = pseudo_random(SIZE);
    a.edit("f", move |s| {
        let refs: Vec<_> = split(&data)
            .into_iter()
            .map(|(r, bytes)| {
                s.chunks.put(r.hash, bytes);
                r
            })
            .collect();
        let id = s.folder.create("big.bin", Kind::File, 1).expect("create");
        s.folder.write_binary(id, refs, 1).expect("write");
        let t = s.folder.create("notes.txt", Kind::File, 1).expect("create");
        s.folder.set_text(t, "0", 1).expect("write");
    })
    .expect("folder");
    let start = Instant::now();
    a.dial(b.local_addr().expect("addr"), b.device_id());

    let mut latencies = Vec::new();
    let mut during_transfer = 0;
    let mut i = 1;
    while missing_chunks(&b) != 0 || b.read("f", |s| s.folder.tree().len()).unwrap_or(0) < 2 {
        assert!(start.elapsed() < Duration::from_secs(300), "transfer did not finish");
        let body = i.to_string();
        let sent = Instant::now();
        let new = body.clone();
        a.edit("f", move |s| {
            let id = s.folder.tree().lookup("notes.txt").expect("notes").id;
            s.folder.set_text(id, &new, 2).expect("write");
        });
        loop {
            let seen = b.read("f", |s| {
                let id = s.folder.tree().lookup("notes.txt")?.id;
                s.folder.doc(id).map(|d| d.text())
            });
            if seen.flatten().as_deref() == Some(body.as_str()) {
                latencies.push(sent.elapsed());
                if missing_chunks(&b) > 0 {
                    during_transfer += 1;
                }
                break;
            }
            assert!(sent.elapsed() < Duration::from_secs(60), "an edit was stuck behind the transfer");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = start.elapsed();
    latencies.sort();
    let median = latencies.get(latencies.len() / 2).copied().unwrap_or_default();
    let max = latencies.last().copied().unwrap_or_default();
    eprintln!(
        "200 MiB in {took:.2?} ({:.0} MiB/s, debug build); {} edits during it: median latency {median:?}, max {max:?}",
        200.0 / took.as_secs_f64(),
        latencies.len()
    );
    assert!(during_transfer >= 3, "only {during_transfer} edits arrived while the transfer ran");
}
