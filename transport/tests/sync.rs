//! Real QUIC on 127.0.0.1: nodes converge, relay through the graph, refuse
//! strangers, and keep folders private to the peers trusted for them.

mod common;
use common::TestNode;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fsync_core::folder::{Folder, Kind};
use fsync_core::AgentId;
use transport::{Identity, Node, Trust};

struct Peer {
    node: TestNode,
    trust: Arc<Trust>,
}

fn peer(i: u64, folders: &[&str]) -> Peer {
    let trust = Arc::new(Trust::default());
    let node = TestNode::new(
        Node::bind(Identity::generate().expect("identity"), trust.clone(), "127.0.0.1:0".parse().expect("addr")).expect("bind"),
    );
    for f in folders {
        node.add_folder(f, Folder::new(AgentId::from_index(i)));
    }
    Peer { node, trust }
}

/// `a` and `b` trust each other for `folders`.
fn befriend(a: &Peer, b: &Peer, folders: &[&str]) {
    for f in folders {
        a.trust.allow(b.node.device_id(), f);
        b.trust.allow(a.node.device_id(), f);
    }
}

fn write(p: &Peer, folder: &str, path: &str, body: &str) {
    let (path, body) = (path.to_owned(), body.to_owned());
    p.node
        .edit(folder, move |s| {
            let id = match s.folder.tree().lookup(&path) {
                Some(n) => n.id,
                None => s.folder.create(&path, Kind::File, 1).expect("create"),
            };
            s.folder.set_text(id, &body, 2).expect("write");
        })
        .expect("folder exists");
}

fn read(p: &Peer, folder: &str, path: &str) -> Option<String> {
    let path = path.to_owned();
    p.node.read(folder, move |s| {
        let id = s.folder.tree().lookup(&path)?.id;
        s.folder.doc(id).map(|d| d.text())
    })?
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sync_both_ways() {
    let a = peer(1, &["docs"]);
    let b = peer(2, &["docs"]);
    befriend(&a, &b, &["docs"]);
    write(&a, "docs", "from-a.txt", "hello from a");
    a.node.dial(b.node.local_addr().expect("addr"), b.node.device_id());
    eventually("a's file on b", || read(&b, "docs", "from-a.txt").as_deref() == Some("hello from a")).await;
    assert_eq!(a.node.connected_peers(), vec![b.node.device_id()]);
    assert_eq!(b.node.connected_peers(), vec![a.node.device_id()]);
    // Live edits, both ways, after the first exchange.
    let t = Instant::now();
    write(&b, "docs", "from-a.txt", "hello from a, edited on b");
    eventually("b's edit on a", || read(&a, "docs", "from-a.txt").as_deref() == Some("hello from a, edited on b")).await;
    eprintln!("live edit propagated in {:?}", t.elapsed());
    write(&a, "docs", "new.txt", "second");
    eventually("a's new file on b", || read(&b, "docs", "new.txt").as_deref() == Some("second")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_travel_through_a_line_of_three() {
    let (a, b, c) = (peer(1, &["f"]), peer(2, &["f"]), peer(3, &["f"]));
    befriend(&a, &b, &["f"]);
    befriend(&b, &c, &["f"]);
    a.node.dial(b.node.local_addr().expect("addr"), b.node.device_id());
    c.node.dial(b.node.local_addr().expect("addr"), b.node.device_id());
    write(&a, "f", "x.txt", "from a");
    eventually("a's file on c (via b)", || read(&c, "f", "x.txt").as_deref() == Some("from a")).await;
    write(&c, "f", "x.txt", "from a, then c");
    eventually("c's edit on a (via b)", || read(&a, "f", "x.txt").as_deref() == Some("from a, then c")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_device_is_refused_and_gets_nothing() {
    let a = peer(1, &["secret"]);
    let stranger = peer(9, &["secret"]);
    // The stranger trusts a, but a does not know it.
    stranger.trust.allow(a.node.device_id(), "secret");
    write(&a, "secret", "plans.txt", "do not leak");
    write(&stranger, "secret", "junk.txt", "do not accept");
    stranger.node.dial(a.node.local_addr().expect("addr"), a.node.device_id());
    // Keep looking while the stranger retries: no connection ever stands.
    for _ in 0..30 {
        assert!(a.node.connected_peers().is_empty(), "a stranger got through the handshake");
        assert!(stranger.node.connected_peers().is_empty(), "a stranger got through the handshake");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read(&stranger, "secret", "plans.txt"), None, "a stranger received data");
    assert_eq!(read(&a, "secret", "junk.txt"), None, "data from a stranger was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gets_only_the_folders_it_is_trusted_for() {
    let a = peer(1, &["shared", "private"]);
    let b = peer(2, &["shared", "private"]);
    // a trusts b for "shared" only; b would take both.
    a.trust.allow(b.node.device_id(), "shared");
    b.trust.allow(a.node.device_id(), "shared");
    b.trust.allow(a.node.device_id(), "private");
    write(&a, "shared", "s.txt", "ok to share");
    write(&a, "private", "p.txt", "not for b");
    write(&b, "private", "intrusion.txt", "not for a");
    b.node.dial(a.node.local_addr().expect("addr"), a.node.device_id());
    eventually("the shared folder on b", || read(&b, "shared", "s.txt").as_deref() == Some("ok to share")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(read(&b, "private", "p.txt"), None, "a folder leaked to an untrusted peer");
    assert_eq!(read(&a, "private", "intrusion.txt"), None, "an untrusted peer wrote a folder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_reconnected() {
    let a = peer(1, &["f"]);
    let b_identity = Identity::generate().expect("identity");
    let b_trust = Arc::new(Trust::default());
    let b_node =
        TestNode::new(Node::bind(b_identity.clone(), b_trust.clone(), "127.0.0.1:0".parse().expect("addr")).expect("bind"));
    b_node.add_folder("f", Folder::new(AgentId::from_index(2)));
    let b = Peer { node: b_node, trust: b_trust };
    befriend(&a, &b, &["f"]);
    let addr = b.node.local_addr().expect("addr");
    a.node.dial(addr, b.node.device_id());
    write(&a, "f", "one.txt", "1");
    eventually("first file", || read(&b, "f", "one.txt").is_some()).await;

    // b stops; a keeps editing; b comes back with its identity, its folder
    // and its port, and a reconnects without being told.
    let b_folder = b.node.read("f", |s| s.folder.clone()).expect("folder");
    b.node.close().await;
    drop(b);
    write(&a, "f", "two.txt", "2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let trust = Arc::new(Trust::default());
    trust.allow(a.node.device_id(), "f");
    let node = TestNode::new(Node::bind(b_identity, trust.clone(), addr).expect("re-bind on the same port"));
    node.add_folder("f", b_folder);
    let b = Peer { node, trust };
    eventually("the edit made while b was down", || read(&b, "f", "two.txt").as_deref() == Some("2")).await;
    assert_eq!(read(&b, "f", "one.txt").as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_dialling_end_with_one_connection() {
    let a = peer(1, &["f"]);
    let b = peer(2, &["f"]);
    befriend(&a, &b, &["f"]);
    a.node.dial(b.node.local_addr().expect("addr"), b.node.device_id());
    b.node.dial(a.node.local_addr().expect("addr"), a.node.device_id());
    write(&a, "f", "x.txt", "x");
    eventually("sync", || read(&b, "f", "x.txt").is_some()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ca, cb) = (a.node.connections(), b.node.connections());
    assert_eq!(a.node.running_connections(), 1, "a runs more than one connection");
    assert_eq!(b.node.running_connections(), 1, "b runs more than one connection");
    assert_eq!(ca, cb, "the two sides kept different connections");
    // And it still works both ways.
    write(&b, "f", "y.txt", "y");
    eventually("sync back", || read(&a, "f", "y.txt").is_some()).await;
}

fn far_future() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 3600
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_is_redeemed_once_and_only_with_its_secret() {
    use transport::tls::Invite;
    let inviter = peer(1, &["docs", "private"]);
    let secret = [7u8; transport::tls::SECRET_LEN];
    inviter.trust.invite(Invite { folder: "docs".into(), secret, expires: far_future() });
    let joined = Arc::new(std::sync::Mutex::new(Vec::new()));
    let j = joined.clone();
    inviter.trust.on_join(move |x| j.lock().expect("lock").push(x.clone()));
    write(&inviter, "docs", "a.txt", "shared");
    write(&inviter, "private", "p.txt", "secret");
    let addr = inviter.node.local_addr().expect("addr");

    // A stranger with a wrong secret: refused, learns nothing.
    let stranger = peer(3, &["docs"]);
    stranger.trust.allow(inviter.node.device_id(), "docs");
    stranger.trust.set_join_secret(inviter.node.device_id(), [8u8; transport::tls::SECRET_LEN]);
    stranger.node.dial(addr, inviter.node.device_id());

    // The joiner knows only the inviter and the secret (from the ticket).
    let joiner = peer(2, &["docs", "private"]);
    joiner.trust.allow(inviter.node.device_id(), "docs");
    joiner.trust.allow(inviter.node.device_id(), "private");
    joiner.trust.set_join_secret(inviter.node.device_id(), secret);
    joiner.node.dial(addr, inviter.node.device_id());
    eventually("the joiner syncs", || read(&joiner, "docs", "a.txt").as_deref() == Some("shared")).await;
    write(&joiner, "docs", "b.txt", "back");
    eventually("the inviter trusts it back", || read(&inviter, "docs", "b.txt").as_deref() == Some("back")).await;
    {
        let j = joined.lock().expect("lock");
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].device, joiner.node.device_id());
        assert_eq!(j[0].folder, "docs");
        assert_eq!(j[0].addr, joiner.node.local_addr().expect("addr"), "the address a node dials from is its own");
    }
    assert_eq!(read(&joiner, "private", "p.txt"), None, "only the invited folder is shared");

    // The secret is used up: another device proving it is refused.
    let thief = peer(4, &["docs"]);
    thief.trust.allow(inviter.node.device_id(), "docs");
    thief.trust.set_join_secret(inviter.node.device_id(), secret);
    thief.node.dial(addr, inviter.node.device_id());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(read(&thief, "docs", "a.txt"), None);
    assert_eq!(read(&stranger, "docs", "a.txt"), None);
    assert!(!inviter.node.connected_peers().contains(&thief.node.device_id()));
    assert!(!inviter.node.connected_peers().contains(&stranger.node.device_id()));
    assert!(!inviter.trust.is_trusted(&thief.node.device_id()));
    assert_eq!(joined.lock().expect("lock").len(), 1);
    // Status knows how far the joiner is.
    let info = inviter.node.peer_info();
    let p = info.get(&joiner.node.device_id()).expect("joiner info");
    assert_eq!(p.folders.get("docs").and_then(|f| f.to_send), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_invitation_lets_no_one_in() {
    use transport::tls::Invite;
    let inviter = peer(1, &["docs"]);
    let secret = [9u8; transport::tls::SECRET_LEN];
    inviter.trust.invite(Invite { folder: "docs".into(), secret, expires: 1 });
    write(&inviter, "docs", "a.txt", "shared");
    let joiner = peer(2, &["docs"]);
    joiner.trust.allow(inviter.node.device_id(), "docs");
    joiner.trust.set_join_secret(inviter.node.device_id(), secret);
    joiner.node.dial(inviter.node.local_addr().expect("addr"), inviter.node.device_id());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(read(&joiner, "docs", "a.txt"), None);
    assert!(!inviter.trust.is_trusted(&joiner.node.device_id()));
}
