//! A seeded network of in-memory peers with virtual time, latency, loss,
//! duplication, reordering and partitions (quinn-proto's `Pair`, grown to N
//! peers). Every peer edits at random; after healing, all must converge.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::chunks::{split, Chunks};
use crate::folder::tests::snapshot;
use crate::folder::{Content, Kind};
use crate::ids::AgentId;
use crate::text::Edit;

struct Peer {
    folder: Folder,
    chunks: Chunks,
    sessions: BTreeMap<usize, Session>,
}

struct Packet {
    from: usize,
    to: usize,
    at: u64,
    bytes: Vec<u8>,
}

pub(crate) struct Faults {
    pub(crate) loss: f64,
    pub(crate) dup: f64,
    pub(crate) max_delay: u64,
    pub(crate) partitions: bool,
    /// Now and then a link's connection is replaced: fresh sessions on both
    /// ends, and what was in flight on the old one is gone.
    pub(crate) reconnects: bool,
}

struct Net {
    peers: Vec<Peer>,
    links: Vec<(usize, usize)>,
    cut: Vec<bool>,
    flight: Vec<Packet>,
    now: u64,
    rng: StdRng,
}

impl Net {
    fn new(n: usize, seed: u64) -> Net {
        let mut rng = StdRng::seed_from_u64(seed);
        // A random spanning tree (so the graph is connected, and relaying is
        // needed) plus a few extra edges.
        let mut links = Vec::new();
        for i in 1..n {
            links.push((rng.random_range(0..i), i));
        }
        for _ in 0..rng.random_range(0..n) {
            let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
            if a != b && !links.contains(&(a.min(b), a.max(b))) {
                links.push((a.min(b), a.max(b)));
            }
        }
        let mut peers: Vec<Peer> = (0..n)
            .map(|i| Peer {
                folder: Folder::new(AgentId::from_index(i as u64 + 1)),
                chunks: Chunks::default(),
                sessions: BTreeMap::new(),
            })
            .collect();
        for &(a, b) in &links {
            for (x, y) in [(a, b), (b, a)] {
                let mut s = Session::new();
                s.start(&peers[x].folder, &peers[x].chunks);
                peers[x].sessions.insert(y, s);
            }
        }
        let cut = vec![false; links.len()];
        Net { peers, links, cut, flight: Vec::new(), now: 0, rng }
    }

    fn link_cut(&self, a: usize, b: usize) -> bool {
        let l = (a.min(b), a.max(b));
        self.links.iter().position(|x| *x == l).is_some_and(|i| self.cut[i])
    }

    /// Collects every message the sessions want to send.
    fn pump(&mut self, f: &Faults) {
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            for (&to, s) in p.sessions.iter_mut() {
                let mut out = Vec::new();
                while let Some(bytes) = s.poll_transmit(&p.folder) {
                    out.push(bytes);
                }
                while let Some(bytes) = s.poll_bulk(&p.chunks) {
                    out.push(bytes);
                }
                for bytes in out {
                    let lost = self.rng.random_bool(f.loss);
                    let copies = if self.rng.random_bool(f.dup) { 2 } else { 1 };
                    for _ in 0..copies {
                        if !lost {
                            let at = self.now + self.rng.random_range(0..=f.max_delay);
                            self.flight.push(Packet { from: i, to, at, bytes: bytes.clone() });
                        }
                    }
                }
            }
        }
    }

    /// Delivers due packets in random order.
    fn deliver(&mut self) {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.flight.len() {
            if self.flight[i].at <= self.now {
                due.push(self.flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        while !due.is_empty() {
            let pk = due.swap_remove(self.rng.random_range(0..due.len()));
            if self.link_cut(pk.from, pk.to) {
                continue;
            }
            let now = self.now;
            let p = &mut self.peers[pk.to];
            let s = p.sessions.get_mut(&pk.from).expect("session exists");
            s.handle_message(now, &pk.bytes, &mut p.folder, &mut p.chunks).expect("honest peers send valid messages");
            while s.poll_event().is_some() {}
        }
    }

    fn random_edit(&mut self, i: usize) {
        // The incremental tree must match a rebuild after every step.
        self.peers[i].folder.assert_tree_consistent();
        let now = self.now;
        let choice = self.rng.random_range(0..100);
        let n = self.rng.random_range(0..1000u32);
        let p = &mut self.peers[i];
        let f = &mut p.folder;
        let nodes: Vec<_> = f.tree().nodes().cloned().collect();
        let files: Vec<_> = nodes.iter().filter(|n| n.kind == Kind::File).cloned().collect();
        let dirs: Vec<_> = nodes.iter().filter(|n| n.kind == Kind::Dir).cloned().collect();
        let pick = |v: &Vec<crate::folder::Node>| v.get(n as usize % v.len().max(1)).cloned();
        match choice {
            0..=14 => {
                let dir = pick(&dirs).map(|d| format!("{}/", d.path)).unwrap_or_default();
                let _ = f.create(&format!("{dir}f{}", n % 7), Kind::File, now);
            }
            15..=17 => {
                let _ = f.create(&format!("d{}", n % 3), Kind::Dir, now);
            }
            18 | 19 => {
                // A name reused across kinds: a file made a directory (or a
                // link) at its path here, or a directory made where
                // another replica may make a file of that name.
                let at = pick(&files).map_or_else(|| format!("f{}", n % 7), |x| x.path.clone());
                if let Some(old) = f.tree().lookup(&at).map(|x| x.id) {
                    let _ = f.delete(old, now);
                }
                let kind = if n % 3 == 0 { Kind::Symlink } else { Kind::Dir };
                if let Ok(id) = f.create(&at, kind, now) {
                    if kind == Kind::Symlink {
                        let _ = f.set_link(id, "f0", now);
                    }
                }
            }
            20..=59 => {
                if let Some(file) = pick(&files) {
                    if f.state(file.id).is_some_and(|s| s.content == Content::Text) {
                        let len = f.doc(file.id).map_or(0, |d| d.len_chars());
                        let pos = n as usize % (len + 1);
                        let del = if len > pos && n % 3 == 0 { (n as usize % 4).min(len - pos) } else { 0 };
                        let ins: String = (0..n % 5).map(|k| char::from(b'a' + ((n + k) % 26) as u8)).collect();
                        let _ = f.edit_text(file.id, &[Edit { pos, del, ins }], now);
                    }
                }
            }
            60..=67 => {
                if let Some(file) = pick(&files) {
                    let bytes: Vec<u8> = (0..(n as usize * 40)).map(|k| (k as u32 ^ n) as u8).collect();
                    let refs: Vec<_> = split(&bytes)
                        .into_iter()
                        .map(|(r, b)| {
                            p.chunks.put(r.hash, b);
                            r
                        })
                        .collect();
                    let _ = f.write_binary(file.id, refs, now);
                }
            }
            68..=77 => {
                if let Some(node) = pick(&nodes) {
                    let dir = pick(&dirs).map(|d| format!("{}/", d.path)).unwrap_or_default();
                    let _ = f.rename(node.id, &format!("{dir}r{}", n % 5), now);
                }
            }
            78..=85 => {
                if let Some(node) = pick(&nodes) {
                    let _ = f.delete(node.id, now);
                }
            }
            86..=90 => {
                if let Some(file) = pick(&files) {
                    let _ = f.set_exec(file.id, n % 2 == 0, now);
                }
            }
            _ => {
                if let Some(file) = pick(&files) {
                    let _ = f.set_text(file.id, "replaced whole\n", now);
                }
            }
        }
    }

    fn run(&mut self, steps: usize, f: &Faults) {
        for step in 0..steps {
            self.now += 1;
            if self.rng.random_bool(0.5) {
                let i = self.rng.random_range(0..self.peers.len());
                self.random_edit(i);
            }
            if f.partitions && self.rng.random_bool(0.02) {
                let l = self.rng.random_range(0..self.links.len());
                self.cut[l] = !self.cut[l];
            }
            if f.reconnects && self.rng.random_bool(0.02) {
                let l = self.rng.random_range(0..self.links.len());
                self.reconnect(self.links[l]);
            }
            if step % 50 == 49 {
                self.resync_all();
            }
            self.pump(f);
            self.deliver();
        }
    }

    fn reconnect(&mut self, (a, b): (usize, usize)) {
        self.flight.retain(|pk| (pk.from.min(pk.to), pk.from.max(pk.to)) != (a, b));
        for (x, y) in [(a, b), (b, a)] {
            let p = &mut self.peers[x];
            let mut s = Session::new();
            s.start(&p.folder, &p.chunks);
            p.sessions.insert(y, s);
        }
    }

    fn resync_all(&mut self) {
        for p in &mut self.peers {
            for s in p.sessions.values_mut() {
                s.resync(&p.folder, &p.chunks);
            }
        }
    }

    /// Heals everything and runs without faults until quiet.
    fn settle(&mut self) {
        self.cut.iter_mut().for_each(|c| *c = false);
        let calm = Faults { loss: 0.0, dup: 0.0, max_delay: 3, partitions: false, reconnects: false };
        self.resync_all();
        for _ in 0..400 {
            self.now += 1;
            self.pump(&calm);
            self.deliver();
            if self.flight.is_empty() && self.now.is_multiple_of(20) {
                self.resync_all();
            }
        }
    }

    /// Checks convergence; returns (paths, operations sent) so callers can
    /// check the run did something.
    fn assert_converged(&mut self, seed: u64) -> (usize, u64) {
        let first = snapshot(&mut self.peers[0].folder);
        let sent: u64 = self.peers.iter().flat_map(|p| p.sessions.values()).map(|s| s.stats().sent_ops).sum();
        for (i, p) in self.peers.iter_mut().enumerate() {
            p.folder.assert_tree_consistent();
            assert_eq!(snapshot(&mut p.folder), first, "seed {seed}: peer {i} differs from peer 0");
            for h in p.folder.referenced_chunks() {
                assert!(p.chunks.has(&h), "seed {seed}: peer {i} lacks chunk {h:?}");
            }
        }
        (first.len(), sent)
    }
}

pub(crate) fn simulate(seed: u64, peers: usize, steps: usize, faults: &Faults) -> (usize, u64) {
    let mut net = Net::new(peers, seed);
    net.run(steps, faults);
    net.settle();
    net.assert_converged(seed)
}

#[test]
fn converges_on_a_perfect_network() {
    let f = Faults { loss: 0.0, dup: 0.0, max_delay: 0, partitions: false, reconnects: false };
    let (mut paths, mut ops) = (0, 0);
    for seed in 0..10 {
        let (p, o) = simulate(seed, 3, 150, &f);
        paths += p;
        ops += o;
    }
    eprintln!("perfect network: {paths} paths, {ops} operations sent");
    assert!(paths > 30 && ops > 500, "the simulation did too little: {paths} paths, {ops} ops");
}

#[test]
fn converges_with_loss_duplication_reordering_and_partitions() {
    let f = Faults { loss: 0.1, dup: 0.1, max_delay: 8, partitions: true, reconnects: true };
    let (mut paths, mut ops) = (0, 0);
    for seed in 0..20 {
        let (p, o) = simulate(seed, 3 + (seed % 3) as usize, 250, &f);
        paths += p;
        ops += o;
    }
    eprintln!("faulty network: {paths} paths, {ops} operations sent");
    assert!(paths > 60 && ops > 1000, "the simulation did too little: {paths} paths, {ops} ops");
}

/// The long run: `cargo test -p fsync-core --release -- --ignored`.
#[test]
#[ignore]
fn converges_forever() {
    let f = Faults { loss: 0.2, dup: 0.2, max_delay: 20, partitions: true, reconnects: true };
    let first: u64 = std::env::var("FSYNC_SIM_FROM").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    for seed in first..first + 2000 {
        let r = std::panic::catch_unwind(|| simulate(seed, 3 + (seed % 4) as usize, 600, &f));
        assert!(r.is_ok(), "seed {seed} failed (FSYNC_SIM_FROM={seed} reruns from it)");
    }
}

/// One end of a two-peer test: a folder, its chunks, and a session to the
/// other end.
struct Side {
    folder: Folder,
    chunks: Chunks,
    session: Session,
}

impl Side {
    fn new(folder: Folder, chunks: Chunks) -> Side {
        let mut s = Side { folder, chunks, session: Session::new() };
        s.connect();
        s
    }

    /// A fresh session (a new connection).
    fn connect(&mut self) {
        self.session = Session::new();
        self.session.start(&self.folder, &self.chunks);
    }
}

/// `rounds` times, each side sends until quiet; chunk replies travel only
/// with `bulk`.
fn exchange(x: &mut Side, y: &mut Side, rounds: usize, bulk: bool) {
    fn send(from: &mut Side, to: &mut Side, bulk: bool) {
        loop {
            let m = from
                .session
                .poll_transmit(&from.folder)
                .or_else(|| bulk.then(|| from.session.poll_bulk(&from.chunks)).flatten());
            let Some(m) = m else { break };
            to.session.handle_message(0, &m, &mut to.folder, &mut to.chunks).expect("valid");
        }
    }
    for _ in 0..rounds {
        send(x, y, bulk);
        send(y, x, bulk);
    }
}

#[test]
fn a_session_sends_only_what_the_peer_lacks() {
    let mut a = Folder::new(AgentId::from_index(1));
    let id = a.create("x.txt", Kind::File, 1).expect("create");
    a.set_text(id, "hello", 1).expect("write");
    let mut b = Folder::new(AgentId::from_index(2));
    crate::folder::tests::send(&a, &mut b);
    a.set_text(id, "hello world", 2).expect("write");
    let (mut a, mut b) = (Side::new(a, Chunks::default()), Side::new(b, Chunks::default()));
    exchange(&mut a, &mut b, 4, true);
    // Only the 6 new characters travelled.
    assert_eq!(a.session.stats().sent_ops, 6);
    assert_eq!(b.session.stats().sent_ops, 0);
    assert_eq!(b.folder.doc(id).map(|d| d.text()).as_deref(), Some("hello world"));
}

/// Regression: a connection replaced after the changes of a binary file
/// arrived but before its chunks did. The new session must fetch them at
/// once, not at the next resync (a 30 s stall in the daemon).
#[test]
fn a_new_session_fetches_chunks_an_ended_one_left_missing() {
    let mut a = Folder::new(AgentId::from_index(1));
    let mut ca = Chunks::default();
    let id = a.create("big.bin", Kind::File, 1).expect("create");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let refs: Vec<_> = split(&bytes)
        .into_iter()
        .map(|(r, data)| {
            ca.put(r.hash, data);
            r
        })
        .collect();
    assert!(!refs.is_empty());
    a.write_binary(id, refs, 2).expect("write");
    let (mut a, mut b) = (Side::new(a, ca), Side::new(Folder::new(AgentId::from_index(2)), Chunks::default()));
    // First connection: only control messages get through, then it drops.
    exchange(&mut a, &mut b, 3, false);
    assert!(b.folder.referenced_chunks().iter().any(|h| !b.chunks.has(h)), "the chunks must still be missing");
    // Second connection: no resync, just the normal exchange.
    a.connect();
    b.connect();
    exchange(&mut a, &mut b, 4, true);
    assert!(b.folder.referenced_chunks().iter().all(|h| b.chunks.has(h)), "b still lacks chunks");
    assert_eq!(b.session.chunks_in_flight(), 0);
}

#[test]
fn bad_chunks_and_garbage_are_refused() {
    let mut f = Folder::new(AgentId::from_index(1));
    let mut c = Chunks::default();
    let mut s = Session::new();
    assert!(matches!(s.handle_message(0, b"\x01\x07", &mut f, &mut c), Err(SessionError::Decode(_))));
    let h = ChunkHash::of(b"real");
    s.want_chunk(h);
    while s.poll_transmit(&f).is_some() {}
    let forged = Message::Chunk(h, b"fake".to_vec()).encode();
    assert_eq!(s.handle_message(0, &forged, &mut f, &mut c), Err(SessionError::BadChunk(h)));
    assert!(!c.has(&h));
    let unasked = Message::Chunk(ChunkHash::of(b"z"), b"z".to_vec()).encode();
    assert!(matches!(s.handle_message(0, &unasked, &mut f, &mut c), Err(SessionError::UnrequestedChunk(_))));
}

/// Regression: consecutive local edits grow the log's last record; a live
/// session that had already sent that record must still send the growth.
#[test]
fn live_edits_that_extend_the_last_log_record_are_sent() {
    let mut a = Side::new(Folder::new(AgentId::from_index(1)), Chunks::default());
    let mut b = Side::new(Folder::new(AgentId::from_index(2)), Chunks::default());
    let id = a.folder.create("live.txt", Kind::File, 1).expect("create");
    for word in ["a", "ab", "abc", "abcd"] {
        a.folder.set_text(id, word, 2).expect("type");
        exchange(&mut a, &mut b, 3, false);
        assert_eq!(b.folder.doc(id).map(|d| d.text()).as_deref(), Some(word));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

    /// 3 to 5 replicas, random topology and edits, any loss, duplication,
    /// delay and partitions: after healing, all converge.
    #[test]
    fn any_faulty_network_converges(seed in proptest::prelude::any::<u64>(), peers in 3usize..=5, loss in 0.0f64..0.3, dup in 0.0f64..0.3, delay in 0u64..20) {
        simulate(seed, peers, 200, &Faults { loss, dup, max_delay: delay, partitions: true, reconnects: true });
    }
}

/// Chunks to ask for keep their order, are asked once, and one that
/// arrived before it was asked is not asked at all.
#[test]
fn chunks_to_ask_for_keep_their_order_and_skip_what_arrived() {
    let h = |i: u8| ChunkHash([i; 32]);
    let mut w = super::ToWant::of(vec![h(1), h(2), h(3)]);
    w.push(h(2));
    w.push(h(4));
    w.set.remove(&h(3));
    assert_eq!(w.take(2), vec![h(1), h(2)]);
    assert_eq!(w.take(10), vec![h(4)]);
    assert!(w.take(10).is_empty() && w.set.is_empty());
}

/// A replica whose retention drops replaced binary versions fetches only
/// the versions it keeps: an old version a peer still has is not
/// downloaded to be dropped.
#[test]
fn a_replica_fetches_only_the_binary_versions_it_keeps() {
    let mut a = Folder::new(AgentId::from_index(1));
    let mut ca = Chunks::default();
    let id = a.create("b.bin", Kind::File, 1).expect("create");
    let mut version = |seed: u32, a: &mut Folder, time: u64| {
        let bytes: Vec<u8> =
            (0..100_000u32).map(|i| ((i ^ seed.wrapping_mul(0x9E37_79B9)).wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let refs: Vec<_> = split(&bytes)
            .into_iter()
            .map(|(r, d)| {
                ca.put(r.hash, d);
                r
            })
            .collect();
        a.write_binary(id, refs.clone(), time).expect("write");
        refs
    };
    let old = version(1, &mut a, 10);
    let new = version(2, &mut a, 20);
    assert!(old.iter().all(|c| new.iter().all(|n| n.hash != c.hash)), "two contents with no chunk in common");
    let mut bf = Folder::new(AgentId::from_index(2));
    bf.set_retention(Some(21));
    let (mut a, mut b) = (Side::new(a, ca), Side::new(bf, Chunks::default()));
    exchange(&mut a, &mut b, 6, true);
    assert!(new.iter().all(|c| b.chunks.has(&c.hash)), "the current version arrived");
    assert!(old.iter().all(|c| !b.chunks.has(&c.hash)), "the replaced one was not fetched");
    assert_eq!(b.session.chunks_in_flight(), 0);
}
