//! Network faults made by the test itself: a userspace UDP proxy between two
//! nodes drops, delays (with jitter, so it reorders) and cuts packets. The
//! kernel here has no netem qdisc, so this is the fault injector.

mod common;
use common::TestNode;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fsync_core::folder::{Folder, Kind};
use fsync_core::AgentId;
use tokio::net::UdpSocket;
use transport::{Identity, Node, Trust};

/// Forwards UDP between one client and `server`, with faults.
struct Proxy {
    addr: SocketAddr,
    /// While true, every packet is dropped (a partition).
    cut: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(server: SocketAddr, loss: f64, delay: Duration, jitter: Duration) -> Proxy {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind proxy"));
        let addr = sock.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let (c, d) = (cut.clone(), dropped.clone());
        tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65536];
            // A small xorshift so the faults are seeded and repeatable.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut rand = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 1_000_000) as f64 / 1_000_000.0
            };
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let to = if from == server {
                    match client {
                        Some(c) => c,
                        None => continue,
                    }
                } else {
                    client = Some(from);
                    server
                };
                if c.load(Ordering::Relaxed) || rand() < loss {
                    d.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let wait = delay + jitter.mul_f64(rand());
                let packet = buf[..n].to_vec();
                let s = sock.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = s.send_to(&packet, to).await;
                });
            }
        });
        Proxy { addr, cut, dropped }
    }
}

struct Peer {
    node: TestNode,
    trust: Arc<Trust>,
}

fn peer(i: u64) -> Peer {
    let trust = Arc::new(Trust::default());
    let node = TestNode::new(
        Node::bind(Identity::generate().expect("identity"), trust.clone(), "127.0.0.1:0".parse().expect("addr")).expect("bind"),
    );
    node.add_folder("f", Folder::new(AgentId::from_index(i)));
    Peer { node, trust }
}

fn befriend(a: &Peer, b: &Peer) {
    a.trust.allow(b.node.device_id(), "f");
    b.trust.allow(a.node.device_id(), "f");
}

fn write(p: &Peer, path: &str, body: &str) {
    let (path, body) = (path.to_owned(), body.to_owned());
    p.node
        .edit("f", move |s| {
            let id = match s.folder.tree().lookup(&path) {
                Some(n) => n.id,
                None => s.folder.create(&path, Kind::File, 1).expect("create"),
            };
            s.folder.set_text(id, &body, 2).expect("write");
        })
        .expect("folder");
}

fn read(p: &Peer, path: &str) -> Option<String> {
    let path = path.to_owned();
    p.node.read("f", move |s| {
        let id = s.folder.tree().lookup(&path)?.id;
        s.folder.doc(id).map(|d| d.text())
    })?
}

fn snapshot(p: &Peer) -> Vec<(String, String)> {
    p.node
        .read("f", |s| {
            let nodes: Vec<_> = s.folder.tree().nodes().cloned().collect();
            nodes.into_iter().map(|n| (n.path, s.folder.doc(n.id).map(|d| d.text()).unwrap_or_default())).collect()
        })
        .unwrap_or_default()
}

async fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_delay_and_jitter_still_converge() {
    let (a, b) = (peer(1), peer(2));
    befriend(&a, &b);
    let proxy =
        Proxy::start(b.node.local_addr().expect("addr"), 0.10, Duration::from_millis(100), Duration::from_millis(50)).await;
    a.node.dial(proxy.addr, b.node.device_id());
    for i in 0..20 {
        write(&a, &format!("a{}.txt", i % 5), &format!("edit {i} on a"));
        write(&b, &format!("b{}.txt", i % 5), &format!("edit {i} on b"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually("both sides identical", Duration::from_secs(30), || {
        let (sa, sb) = (snapshot(&a), snapshot(&b));
        sa.len() == 10 && sa == sb
    })
    .await;
    assert!(proxy.dropped.load(Ordering::Relaxed) > 0, "the proxy dropped nothing: no loss was tested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals() {
    let (a, b) = (peer(1), peer(2));
    befriend(&a, &b);
    let proxy = Proxy::start(b.node.local_addr().expect("addr"), 0.0, Duration::from_millis(5), Duration::from_millis(5)).await;
    a.node.dial(proxy.addr, b.node.device_id());
    write(&a, "shared.txt", "line one\nline two\n");
    eventually("first sync", Duration::from_secs(10), || read(&b, "shared.txt").is_some()).await;
    // Cut; both edit the same file at different places.
    proxy.cut.store(true, Ordering::Relaxed);
    write(&a, "shared.txt", "LINE ONE\nline two\n");
    write(&b, "shared.txt", "line one\nLINE TWO\n");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(read(&a, "shared.txt"), read(&b, "shared.txt"), "the cut let data through");
    proxy.cut.store(false, Ordering::Relaxed);
    eventually("merge after healing", Duration::from_secs(40), || {
        read(&a, "shared.txt").as_deref() == Some("LINE ONE\nLINE TWO\n") && read(&b, "shared.txt") == read(&a, "shared.txt")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_four_converges() {
    let ps: Vec<Peer> = (1..=4).map(peer).collect();
    for i in 0..4 {
        let j = (i + 1) % 4;
        befriend(&ps[i], &ps[j]);
        ps[i].node.dial(ps[j].node.local_addr().expect("addr"), ps[j].node.device_id());
    }
    for (i, p) in ps.iter().enumerate() {
        write(p, "ring.txt", &format!("{i}"));
        write(p, &format!("own-{i}.txt"), "mine");
    }
    eventually("all four identical", Duration::from_secs(20), || {
        let s0 = snapshot(&ps[0]);
        s0.len() >= 5 && ps.iter().all(|p| snapshot(p) == s0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_is_found_by_the_idle_timeout() {
    let idle = Duration::from_millis(900);
    let mk = |i: u64| {
        let trust = Arc::new(Trust::default());
        let node = TestNode::new(
            Node::bind_with_idle(
                Identity::generate().expect("identity"),
                trust.clone(),
                "127.0.0.1:0".parse().expect("addr"),
                idle,
            )
            .expect("bind"),
        );
        node.add_folder("f", Folder::new(AgentId::from_index(i)));
        Peer { node, trust }
    };
    let (a, b) = (mk(1), mk(2));
    befriend(&a, &b);
    let proxy = Proxy::start(b.node.local_addr().expect("addr"), 0.0, Duration::ZERO, Duration::ZERO).await;
    a.node.dial(proxy.addr, b.node.device_id());
    eventually("connected", Duration::from_secs(10), || a.node.connected_peers() == vec![b.node.device_id()]).await;
    // Quiet but alive: keep-alives hold the connection past the timeout.
    tokio::time::sleep(idle * 3).await;
    assert_eq!(a.node.connected_peers(), vec![b.node.device_id()], "a live, quiet peer was dropped");
    // The peer vanishes without a word (every packet dropped from now on).
    proxy.cut.store(true, Ordering::Relaxed);
    eventually("the dead peer noticed", idle * 6, || a.node.connected_peers().is_empty()).await;
}
