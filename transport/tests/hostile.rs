//! A trusted peer that breaks the protocol: oversized frames, garbage, a
//! rename to "..", frames for folders it was not offered. Each connection is
//! refused; the node stays up, keeps serving an honest peer, and its folder
//! holds nothing bad.

mod common;
use common::TestNode;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fsync_core::encoding::Writer;
use fsync_core::folder::{Changes, EntryId, Folder, Kind, Meta, VersionVector};
use fsync_core::text::{ExportedKind, ExportedRun};
use fsync_core::wire::Message;
use fsync_core::{AgentId, EventId};
use transport::frame::{read_frame, write_frame};
use transport::node::hello;
use transport::{Identity, Node, Trust};

fn node(i: u64) -> (TestNode, Arc<Trust>) {
    let trust = Arc::new(Trust::default());
    let n = TestNode::new(
        Node::bind(Identity::generate().expect("identity"), trust.clone(), "127.0.0.1:0".parse().expect("addr")).expect("bind"),
    );
    n.add_folder("f", Folder::new(AgentId::from_index(i)));
    (n, trust)
}

fn frame(idx: usize, body: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.usize(idx);
    w.raw(body);
    w.into_bytes()
}

/// Opens a raw session to `target`, exchanges hellos, sends `payload` as
/// raw bytes on the stream, and returns whether the target closed on us.
async fn attack(m: &Node, target: &Node, payload: Vec<u8>) -> bool {
    let conn = m.connect_raw(target.local_addr().expect("addr")).await.expect("trusted, so it connects");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    write_frame(&mut send, &hello(&["f".to_owned()], None, 1)).await.expect("hello");
    let _their_hello = read_frame(&mut recv).await.expect("hello back");
    let _ = send.write_all(&payload).await;
    // The node closes the connection (or at least the stream) on us.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match read_frame(&mut recv).await {
                Ok(Some(_)) => continue, // its summary and changes
                _ => return,
            }
        }
    })
    .await;
    closed.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_are_refused_and_the_node_keeps_serving() {
    let (a, a_trust) = node(1);
    let (honest, h_trust) = node(2);
    let (mallory, m_trust) = node(3);
    for (x, tx, y, ty) in [(&a, &a_trust, &honest, &h_trust), (&a, &a_trust, &mallory, &m_trust)] {
        tx.allow(y.device_id(), "f");
        ty.allow(x.device_id(), "f");
    }
    honest.dial(a.local_addr().expect("addr"), a.device_id());

    // 1. A frame announcing 1 GiB.
    assert!(attack(&mallory, &a, (1u32 << 30).to_be_bytes().to_vec()).await, "oversized frame not refused");
    // 2. Garbage inside a well-formed frame.
    let mut garbage = Vec::new();
    let body = frame(0, b"\x01\x09garbage");
    garbage.extend_from_slice(&(body.len() as u32).to_be_bytes());
    garbage.extend_from_slice(&body);
    assert!(attack(&mallory, &a, garbage).await, "garbage not refused");
    // 3. A rename of a new entry to "..".
    let m_agent = AgentId::from_index(3);
    let entry = EntryId(EventId { agent: m_agent, seq: 0 });
    let create = Meta::Create { kind: Kind::File, parent: None, name: "ok".into() };
    let run = |seq: u64, parents: Vec<EventId>, m: Vec<u8>| ExportedRun {
        id: EventId { agent: m_agent, seq },
        parents,
        pos: 0,
        kind: ExportedKind::Marker(m),
        time: 0,
    };
    let evil = Changes {
        runs: vec![
            (entry, run(0, vec![], create.encode())),
            // The encoder writes whatever it is given; the receiver must refuse.
            (
                entry,
                run(1, vec![EventId { agent: m_agent, seq: 0 }], {
                    let mut m = Meta::Move { parent: None, name: "x".into() }.encode();
                    let n = m.len();
                    m[n - 1] = b'.';
                    m.push(b'.');
                    m[n - 2] = 2; // length 2: ".."
                    m
                }),
            ),
        ],
    };
    let body = frame(0, &Message::Changes(evil).encode());
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    assert!(attack(&mallory, &a, bytes).await, "a rename to .. was not refused");
    // 4. A frame for a folder index that was never offered.
    let body = frame(7, &Message::Summary(VersionVector::new()).encode());
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    assert!(attack(&mallory, &a, bytes).await, "unknown folder index not refused");

    // 5. A chunk nobody asked for (its bytes do not even match its name).
    let body = frame(0, &Message::Chunk(fsync_core::chunks::ChunkHash([7; 32]), b"forged".to_vec()).encode());
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    assert!(attack(&mallory, &a, bytes).await, "a forged chunk was not refused");
    // 6. Changes whose parents do not exist: not applied (treated as a gap,
    // which an honest peer fills after a resync; this one cannot).
    let orphan = Changes {
        runs: vec![(
            EntryId(EventId { agent: AgentId::from_index(77), seq: 0 }),
            ExportedRun {
                id: EventId { agent: AgentId::from_index(77), seq: 0 },
                parents: vec![EventId { agent: AgentId::from_index(78), seq: 41 }],
                pos: 0,
                kind: ExportedKind::Ins("orphan".into()),
                time: 0,
            },
        )],
    };
    let body = frame(0, &Message::Changes(orphan).encode());
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let _ = attack(&mallory, &a, bytes).await;
    let vv = a.read("f", |s| s.folder.version_vector().clone()).expect("folder");
    assert!(!vv.contains_key(&AgentId::from_index(77)), "an event with unknown parents was applied");

    // The node still serves the honest peer, and holds nothing bad.
    honest
        .edit("f", |s| {
            let id = s.folder.create("after.txt", Kind::File, 1).expect("create");
            s.folder.set_text(id, "still served", 2).expect("write");
        })
        .expect("folder");
    let start = Instant::now();
    loop {
        let got = a.read("f", |s| {
            let id = s.folder.tree().lookup("after.txt")?.id;
            s.folder.doc(id).map(|d| d.text())
        });
        if got.flatten().as_deref() == Some("still served") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the node stopped serving its honest peer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let paths: Vec<String> = a.read("f", |s| s.folder.tree().nodes().map(|n| n.path.clone()).collect()).expect("folder");
    assert!(paths.iter().all(|p| fsync_core::folder::split_path(p).is_ok()), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("..")), "{paths:?}");
}

/// A trusted peer that says hello and then reads nothing: its connection's
/// frames pile up until its outbox is full, and the folder's owner goes on
/// without it. An honest peer still gets every edit at once, and the
/// folder answers calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_holds_up_no_one() {
    let (a, a_trust) = node(1);
    let (honest, h_trust) = node(2);
    let (mallory, m_trust) = node(3);
    for (x, tx, y, ty) in [(&a, &a_trust, &honest, &h_trust), (&a, &a_trust, &mallory, &m_trust)] {
        tx.allow(y.device_id(), "f");
        ty.allow(x.device_id(), "f");
    }
    let conn = mallory.connect_raw(a.local_addr().expect("addr")).await.expect("trusted, so it connects");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    write_frame(&mut send, &hello(&["f".to_owned()], None, 1)).await.expect("hello");
    let _their_hello = read_frame(&mut recv).await.expect("hello back");
    // Its summary says it has nothing: everything is to be sent to it.
    let summary = Message::Summary(VersionVector::new()).encode();
    write_frame(&mut send, &frame(0, &summary)).await.expect("summary");
    honest.dial(a.local_addr().expect("addr"), a.device_id());
    // Far more than the connection's flow control and outbox hold.
    let line = "x".repeat(1000);
    for batch in 0..40 {
        let body = format!("{line}\n").repeat(100);
        a.edit("f", move |s| {
            for i in 0..25 {
                let id = s.folder.create(&format!("d{batch}/f{i}.txt"), Kind::File, 1).expect("create");
                s.folder.set_text(id, &body, 1).expect("write");
            }
        })
        .expect("folder");
    }
    let t = Instant::now();
    loop {
        let done = honest.read("f", |s| s.folder.tree().len()).unwrap_or(0) >= 40 * 26;
        if done {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the honest peer did not get everything");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new edit reaches the honest peer, and the folder answers, while
    // mallory's frames are still waiting.
    let sent = Instant::now();
    a.edit("f", |s| {
        let id = s.folder.create("last.txt", Kind::File, 2).expect("create");
        s.folder.set_text(id, "last\n", 2).expect("write");
    })
    .expect("folder answers");
    while honest.read("f", |s| s.folder.tree().lookup("last.txt").is_some()) != Some(true) {
        assert!(sent.elapsed() < Duration::from_secs(5), "an edit waited on a peer that reads nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop((send, recv, conn));
}
