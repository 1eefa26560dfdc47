//! A hostile peer against the real daemon: it holds a trusted key and
//! speaks the protocol itself, then sends oversized, truncated and garbage
//! frames, changes with unknown or cyclic parents, a version id reused with
//! other content, forged chunks, hostile names (`..`, absolute, NUL, `/`),
//! symlinks out of the folder with files written "through" them, and a
//! flood of tiny changes. The daemon stays up, keeps serving its honest
//! peer, writes nothing outside its folder, and logs every refusal. An
//! untrusted device is refused at the handshake. Random requests on the
//! control socket get an answer or a closed socket, never a dead daemon.

#![allow(missing_docs)]

mod util;

use std::sync::Arc;
use std::time::Duration;

use fsync_core::chunks::ChunkHash;
use fsync_core::encoding::Writer;
use fsync_core::folder::{Changes, EntryId, Kind, Meta};
use fsync_core::text::{ExportedKind, ExportedRun};
use fsync_core::wire::Message;
use fsync_core::{AgentId, EventId};
use transport::frame::{read_frame, write_frame};
use transport::node::hello;
use transport::{DeviceId, Identity, Node, Trust};
use util::{eventually, read, Pair, Rng};

thread_local! {
    /// The agent the hostile events claim (one per attack: a node applies
    /// an agent's events only in sequence, from 0).
    static AGENT: std::cell::Cell<u8> = const { std::cell::Cell::new(0x60) };
}

/// Starts the next attack's events with a fresh agent.
fn fresh_agent() {
    AGENT.with(|a| a.set(a.get() + 1));
}

fn id(seq: u64) -> EventId {
    EventId { agent: AgentId([AGENT.with(|a| a.get()); 16]), seq }
}

fn run(seq: u64, parents: &[u64], kind: ExportedKind) -> ExportedRun {
    ExportedRun { id: id(seq), parents: parents.iter().map(|&s| id(s)).collect(), pos: 0, kind, time: 1 }
}

fn marker(seq: u64, parents: &[u64], m: &Meta) -> ExportedRun {
    run(seq, parents, ExportedKind::Marker(m.encode()))
}

fn create(seq: u64, kind: Kind, parent: Option<u64>, name: &str) -> (EntryId, ExportedRun) {
    let m = Meta::Create { kind, parent: parent.map(|p| EntryId(id(p))), name: name.into() };
    (EntryId(id(seq)), marker(seq, &[], &m))
}

/// A text file `name` (under `parent`) holding `text`, from `seq` on (3 ids).
fn text_file(seq: u64, parent: Option<u64>, name: &str, text: &str) -> Vec<(EntryId, ExportedRun)> {
    let e = EntryId(id(seq));
    vec![
        create(seq, Kind::File, parent, name),
        (e, marker(seq + 1, &[seq], &Meta::Text)),
        (e, run(seq + 2, &[seq + 1], ExportedKind::Ins(text.into()))),
    ]
}

/// One frame on the control stream: length, folder index 0, message.
fn framed(msg: &Message) -> Vec<u8> {
    let mut w = Writer::new();
    w.usize(0);
    w.raw(&msg.encode());
    let body = w.into_bytes();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn changes(runs: Vec<(EntryId, ExportedRun)>) -> Vec<u8> {
    framed(&Message::Changes(Changes { runs }))
}

/// Connects as `m`, exchanges hellos, sends `payload` raw, and says whether
/// the daemon closed the connection on us within a few seconds.
async fn attack(m: &Node, target: std::net::SocketAddr, payload: Vec<u8>) -> bool {
    attack_then(m, target, payload, false).await
}

/// Sends `payload` and keeps the connection until `done` (at most 60 s).
async fn send_until(m: &Node, target: std::net::SocketAddr, payload: Vec<u8>, done: impl Fn() -> bool) {
    let conn = m.connect_raw(target).await.expect("trusted, so it connects");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    write_frame(&mut send, &hello(&["docs".to_owned()], None, 7)).await.expect("hello");
    let _ = read_frame(&mut recv).await;
    // Its replies are read (and dropped) so its flow control never stalls.
    tokio::spawn(async move { while let Ok(Some(_)) = read_frame(&mut recv).await {} });
    send.write_all(&payload).await.expect("the flood is accepted");
    let start = std::time::Instant::now();
    while !done() && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn.close(0u32.into(), b"done");
}

/// [`attack`], ending our side of the stream after the payload if `finish`.
async fn attack_then(m: &Node, target: std::net::SocketAddr, payload: Vec<u8>, finish: bool) -> bool {
    let conn = m.connect_raw(target).await.expect("trusted, so it connects");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    write_frame(&mut send, &hello(&["docs".to_owned()], None, 7)).await.expect("hello");
    let _ = read_frame(&mut recv).await;
    let _ = send.write_all(&payload).await;
    if finish {
        let _ = send.finish();
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), async { while let Ok(Some(_)) = read_frame(&mut recv).await {} })
        .await
        .is_ok();
    conn.close(0u32.into(), b"done");
    closed
}

#[test]
fn a_hostile_trusted_peer_is_refused_and_writes_nothing_outside_the_folder() {
    let p = Pair::new("hostile");
    let outside = p.a.scratch.join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let a_id: DeviceId = p.a.ok(&["id"]).trim().parse().expect("device id");
    let trust = Arc::new(Trust::default());
    trust.allow(a_id, "docs");
    let mallory = rt
        .block_on(async { Node::bind(Identity::generate().expect("identity"), trust, "127.0.0.1:0".parse().expect("addr")) })
        .expect("bind");
    p.a.ok(&["peer", "add", &mallory.device_id().to_string(), "--folder", "docs"]);
    std::fs::write(p.da("before.txt"), "honest\n").expect("write");
    let (da, db) = (p.a.start(p.pa), p.b.start(p.pb));
    eventually("the first sync", 20, || read(&p.db("before.txt")).is_some());
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", p.pa).parse().expect("addr");

    let (refused, tried) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    // Frames. A truncated one: the stream ends inside it.
    tried.set(tried.get() + 1);
    assert!(
        rt.block_on(attack_then(&mallory, target, [&100u32.to_be_bytes()[..], b"short"].concat(), true)),
        "a truncated frame: not refused"
    );
    refused.set(refused.get() + 1);
    let expect_refused = |what: &str, payload: Vec<u8>| {
        tried.set(tried.get() + 1);
        assert!(rt.block_on(attack(&mallory, target, payload)), "{what}: not refused");
        refused.set(refused.get() + 1);
    };
    expect_refused("a 1 GiB frame", (1u32 << 30).to_be_bytes().to_vec());
    expect_refused("garbage", {
        let mut g = 9u32.to_be_bytes().to_vec();
        g.extend_from_slice(b"\x00\x01\xffgarbage");
        g
    });
    // Changes with unknown parents, and cyclic ones (an event its own
    // parent, two events each other's): never applied. Unknown parents are
    // what an honest peer's reordered batch looks like too, so the node
    // asks for a resync instead of hanging up; it must not apply them.
    let orphans = vec![
        vec![(EntryId(id(0)), run(0, &[7], ExportedKind::Ins("x".into())))],
        vec![(EntryId(id(0)), run(0, &[0], ExportedKind::Ins("x".into())))],
        vec![
            (EntryId(id(0)), run(0, &[1], ExportedKind::Ins("x".into()))),
            (EntryId(id(0)), run(1, &[0], ExportedKind::Ins("y".into()))),
        ],
    ];
    for o in orphans {
        fresh_agent();
        let o: Vec<_> = o
            .into_iter()
            .map(|(_, r)| {
                (
                    EntryId(EventId { seq: 0, ..r.id }),
                    ExportedRun {
                        id: EventId { agent: id(0).agent, ..r.id },
                        parents: r.parents.iter().map(|p| EventId { agent: id(0).agent, ..*p }).collect(),
                        ..r
                    },
                )
            })
            .collect();
        let _ = rt.block_on(attack(&mallory, target, changes(o)));
        tried.set(tried.get() + 1);
    }
    // Hostile names.
    for name in ["..", ".", "/etc/passwd", "a\0b", "a/b", ""] {
        fresh_agent();
        expect_refused(&format!("the name {name:?}"), changes(vec![create(0, Kind::File, None, name)]));
    }
    // A chunk nobody asked for, whose bytes do not match its hash.
    expect_refused("a forged chunk", framed(&Message::Chunk(ChunkHash::of(b"real"), b"forged".to_vec())));

    // Symlinks out of the folder, then files written "through" them.
    let abs = outside.to_str().expect("utf-8").to_owned();
    fresh_agent();
    let mut links = vec![create(0, Kind::Symlink, None, "evil"), (EntryId(id(0)), marker(1, &[0], &Meta::Link(abs)))];
    links.extend(text_file(2, Some(0), "x.txt", "written through a link\n"));
    links.push(create(5, Kind::Symlink, None, "up"));
    links.push((EntryId(id(5)), marker(6, &[5], &Meta::Link("../../outside".into()))));
    links.extend(text_file(7, Some(5), "y.txt", "written through a link\n"));
    let _ = rt.block_on(attack(&mallory, target, changes(links)));
    tried.set(tried.get() + 1);

    // A version id used again with other content: the first one stays.
    fresh_agent();
    let _ = rt.block_on(attack(&mallory, target, changes(text_file(0, None, "reused.txt", "first\n"))));
    eventually("the first content", 10, || read(&p.da("reused.txt")).as_deref() == Some("first\n"));
    let mut again = text_file(0, None, "reused.txt", "first\n");
    again[2].1.kind = ExportedKind::Ins("OTHER\n".into()); // the same ids 2..=7
    let _ = rt.block_on(attack(&mallory, target, changes(again)));
    tried.set(tried.get() + 2);

    // A flood: 3,000 one-character changes, each its own frame.
    fresh_agent();
    let mut flood = changes(text_file(0, None, "flood.txt", "start\n"));
    for i in 0..3000u64 {
        let seq = 8 + i; // "start\n" took ids 2..=7
        flood.extend(changes(vec![(
            EntryId(id(0)),
            ExportedRun {
                id: id(seq),
                parents: vec![id(seq - 1)],
                pos: 6 + i as usize,
                kind: ExportedKind::Ins("z".into()),
                time: 1,
            },
        )]));
    }
    let flood_started = std::time::Instant::now();
    rt.block_on(send_until(&mallory, target, flood, || read(&p.da("flood.txt")).is_some_and(|t| t.len() == 3006)));
    let flood_took = flood_started.elapsed();
    tried.set(tried.get() + 3000);

    // An untrusted device: refused at the handshake.
    // (It trusts the daemon; the daemon does not trust it.)
    let stranger_trust = Arc::new(Trust::default());
    stranger_trust.allow(a_id, "docs");
    let stranger = rt
        .block_on(async {
            Node::bind(Identity::generate().expect("identity"), stranger_trust, "127.0.0.1:0".parse().expect("addr"))
        })
        .expect("bind");
    let got_in = rt.block_on(async {
        match stranger.connect_raw(target).await {
            Err(_) => false,
            Ok(conn) => match conn.open_bi().await {
                Err(_) => false,
                Ok((mut s, mut r)) => {
                    let _ = write_frame(&mut s, &hello(&["docs".to_owned()], None, 8)).await;
                    matches!(tokio::time::timeout(Duration::from_secs(5), read_frame(&mut r)).await, Ok(Ok(Some(_))))
                }
            },
        }
    });
    assert!(!got_in, "an untrusted device got a hello back");
    tried.set(tried.get() + 1);

    // Still up, still serving the honest peer.
    std::fs::write(p.db("after.txt"), "still served\n").expect("write");
    eventually("an honest edit after the attacks", 15, || read(&p.da("after.txt")).as_deref() == Some("still served\n"));
    assert!(p.a.try_status().is_some_and(|s| s["running"] == true), "the daemon is down: {}", p.a.log());
    assert_eq!(read(&p.da("flood.txt")).map(|t| t.len()), Some(3006), "the flood was not applied in 60 s");
    // Nothing outside the folder; nothing through the links.
    let leaked: Vec<_> = std::fs::read_dir(&outside).expect("outside").flatten().map(|e| e.path()).collect();
    assert!(leaked.is_empty(), "written outside the folder: {leaked:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(&p.da("reused.txt")).as_deref(), Some("first\n"), "a reused version id replaced content");
    assert_eq!(read(&p.db("reused.txt")).as_deref(), Some("first\n"));
    let log = p.a.log();
    let refusals = log.lines().filter(|l| l.contains("WARN") || l.contains("refused")).count();
    let (refused, tried) = (refused.get(), tried.get());
    assert!(refusals >= refused, "{refused} refused attacks but {refusals} lines about them in the log:\n{log}");
    let stranger_id = stranger.device_id().to_string();
    assert!(
        log.lines().any(|l| l.contains("refused a connection from an unknown device") && l.contains(&stranger_id)),
        "the untrusted device is not in the log:\n{log}"
    );
    eprintln!("{tried} hostile inputs tried, {refused} connections refused, {refusals} log lines; nothing written outside; 3,000 one-character changes applied in {flood_took:?}");
    assert_eq!(da.stop(), Some(0));
    assert_eq!(db.stop(), Some(0));
}

/// One random control-socket request line: garbage bytes, an oversized
/// line, JSON of the wrong shape, or a well-formed request whose strings
/// and numbers are hostile (traversal, NUL, huge, non-ASCII, extremes).
fn random_request(rng: &mut Rng) -> Vec<u8> {
    const STRINGS: [&str; 14] = [
        "",
        "docs",
        "f.txt",
        "..",
        "../secret.txt",
        "../../../../etc/passwd",
        "/etc/passwd",
        "docs/../..",
        r"a\u0000b",
        r"\t\n",
        "ééé",
        r"\ud800",
        "0123456789abcdef0123456789abcdef:1",
        ":::",
    ];
    let s = |rng: &mut Rng| -> String {
        if rng.chance(0.1) {
            "x".repeat(rng.below(70_000))
        } else {
            (*rng.pick(&STRINGS).unwrap_or(&"")).to_owned()
        }
    };
    // Mostly the real folder and file, so requests get past the lookup.
    let folder = |rng: &mut Rng| if rng.chance(0.5) { "docs".to_owned() } else { s(rng) };
    let path = |rng: &mut Rng| if rng.chance(0.3) { "f.txt".to_owned() } else { s(rng) };
    const NUMBERS: [&str; 6] = ["0", "1", "18446744073709551615", "-1", "1e400", "9223372036854775808"];
    let n = |rng: &mut Rng| *rng.pick(&NUMBERS).unwrap_or(&"0");
    let line = match rng.below(9) {
        0 => return (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        1 => return vec![b'{'; 100_000 + rng.below(100_000)],
        2 => "[".repeat(rng.below(20_000)),
        3 => format!(r#"{{"cmd":"{}"}}"#, s(rng)),
        4 => format!(r#"{{"cmd":"cat","folder":"{}","path":"{}","at":"{}"}}"#, folder(rng), path(rng), s(rng)),
        5 => format!(r#"{{"cmd":"log","folder":"{}","path":"{}","json":{}}}"#, folder(rng), path(rng), rng.chance(0.5)),
        6 => format!(r#"{{"cmd":"invite","folder":"{}","ttl":{},"addrs":["{}","{}"]}}"#, folder(rng), n(rng), s(rng), s(rng)),
        7 => format!(r#"{{"cmd":"status","json":{}}}"#, if rng.chance(0.5) { "true" } else { n(rng) }),
        _ => format!(r#"{{"cmd":"cat","folder":{},"path":null,"extra":1}}"#, n(rng)),
    };
    let mut b = line.into_bytes();
    if rng.chance(0.9) {
        b.push(b'\n');
    }
    b
}

/// Seeded random requests on the running daemon's control socket (as
/// `fsync cat` with any path, `fsync invite` with any ttl, or bytes no
/// client sends): each gets an answer (`0` or `1` and a message), or a
/// line too long to read gets its socket closed; nothing outside the folder is read; the daemon lives on,
/// answers `fsync status` and keeps syncing.
#[test]
fn random_requests_on_the_control_socket_leave_the_daemon_serving() {
    use std::io::{Read, Write};
    let p = Pair::new("control-fuzz");
    let (ra, rb) = (p.a.scratch.join("docs"), p.b.scratch.join("docs"));
    std::fs::create_dir_all(&ra).expect("mkdir");
    std::fs::write(ra.join("f.txt"), "in the folder\n").expect("write");
    std::fs::write(p.a.scratch.join("secret.txt"), "SECRET outside the folder\n").expect("write");
    let (_da, _db) = (p.a.start(p.pa), p.b.start(p.pb));
    eventually("f.txt on b", 15, || read(&rb.join("f.txt")).is_some());
    let sock = p.a.home.join("control.sock");
    let seed = std::env::var("FSYNC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let mut rng = Rng::new(seed);
    let (mut answered, mut closed) = (0, 0);
    for i in 0..300 {
        let req = random_request(&mut rng);
        let mut c = std::os::unix::net::UnixStream::connect(&sock).expect("the control socket is there");
        c.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        c.set_write_timeout(Some(Duration::from_secs(20))).expect("timeout");
        // The daemon may stop reading an oversized line and answer: a
        // failed write is then expected.
        let _ = c.write_all(&req);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let r = c.read_to_end(&mut answer);
        let shown = String::from_utf8_lossy(&req).chars().take(120).collect::<String>();
        // A line longer than the daemon reads is closed with the rest
        // unread, which the kernel reports as a reset.
        let reset = r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(r.is_ok() || (reset && req.len() > 64 * 1024), "request {i} ({shown:?}) got no answer in 20 s: {r:?}");
        match answer.first() {
            None if reset => closed += 1,
            Some(b'0' | b'1') => answered += 1,
            _ => panic!("request {i} ({shown:?}): {:?}", String::from_utf8_lossy(&answer)),
        }
        assert!(!String::from_utf8_lossy(&answer).contains("SECRET"), "request {i} ({shown:?}) read outside the folder");
    }
    assert!(answered > 200, "too few requests reached the daemon: {answered} answered, {closed} closed");
    assert!(p.a.try_status().is_some_and(|s| s["running"] == true), "the daemon died: {}", p.a.log_tail(30));
    std::fs::write(ra.join("after.txt"), "still syncing\n").expect("write");
    eventually("after.txt on b", 15, || read(&rb.join("after.txt")).as_deref() == Some("still syncing\n"));
    assert!(!p.a.log().contains("panicked"), "{}", p.a.log_tail(30));
}
