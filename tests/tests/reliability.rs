//! The reliability suite: random edits on 3 to 5 real daemons through a
//! fault proxy, with loss, delay, reordering, partitions, a flapping node
//! and SIGKILLs; the convergence oracle (`oracle/`) checks that all nodes end
//! identical and no edit is lost.
//!
//! CI runs short seeded versions. Longer runs, same code:
//!   FSYNC_SEED=N               replay one seed
//!   FSYNC_SCALE=K              K times the steps and kills (e.g. 10)
//!   FSYNC_PARTITION_SECS=S     partitions of S seconds (e.g. 120)
//!   FSYNC_DIR_OPS=1            directory moves and removals in every scenario
//!   FSYNC_SOAK_MINUTES=30 cargo test --release -p fsync-tests --test reliability soak -- --ignored --nocapture

#![allow(missing_docs)]

mod oracle;
mod util;

use std::time::{Duration, Instant};

use oracle::proxy::Faults;
use oracle::{check, Cluster, Driver, Rng};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What happens to the network and the nodes while the driver edits.
#[derive(Clone, Copy, Default)]
struct Scenario {
    nodes: usize,
    steps: usize,
    /// Pause between edits (0..this ms, at random).
    gap_ms: u64,
    faults: Faults,
    /// Split the cluster in two now and then, for `partition_ms`.
    partition_ms: u64,
    /// One node's links go down and up every this many ms.
    flap_ms: u64,
    /// SIGKILL a random node about this often (ms), restart it soon after.
    kill_ms: u64,
    /// Time allowed to converge after healing.
    settle_secs: u64,
    /// Only the last node is killed (the others' memory is sampled).
    kill_last_only: bool,
    /// Stop editing after this long even if steps remain (the soak).
    max_time: Option<Duration>,
    /// Directory moves and recursive removals in the workload (also turned
    /// on for every scenario by FSYNC_DIR_OPS=1).
    dir_ops: bool,
    /// Paths that change kind in the workload (FSYNC_KIND_OPS=1).
    kind_ops: bool,
    /// Each node in its own network namespace, loss and partitions made by
    /// nftables (delay and jitter are then not available).
    netns: bool,
}

/// Figures of one run, for the closing note and the soak log.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug, in the printed figures
struct Figures {
    seed: u64,
    edits: usize,
    kills: usize,
    packets_dropped: u64,
    partitions: usize,
    flaps: usize,
    tokens_checked: usize,
    tokens_superseded: usize,
    blobs_checked: usize,
    lost: usize,
    doubled: usize,
    dir_moves: usize,
    dir_removals: usize,
    kind_changes: usize,
    converged_in: Duration,
    /// RSS (KiB) of node 0 and 1, sampled every 30 s.
    rss: Vec<[u64; 2]>,
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs a scenario; None when it cannot run here (network namespaces need
/// root; under CI=true that is a failure instead).
/// One scenario at a time: four clusters of daemons and their drivers at
/// once on two cores starve each other (a step meant to take 15 ms takes a
/// second), which tests the machine more than the sync.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(name: &str, seed: u64, s: Scenario) -> Option<Figures> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let seed = env_u64("FSYNC_SEED", seed);
    // FSYNC_PARTITION_SECS: partitions of that long instead (minutes, in
    // the long runs).
    let mut s = s;
    if s.partition_ms > 0 {
        s.partition_ms = env_u64("FSYNC_PARTITION_SECS", 0).checked_mul(1000).filter(|&ms| ms > 0).unwrap_or(s.partition_ms);
    }
    let mut rng = Rng::new(seed ^ 0xABCD);
    let mut c = if s.netns {
        match Cluster::in_namespaces(name, s.nodes) {
            Ok(c) => c,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("{name}: skipped, network namespaces are not available here: {e}");
                return None;
            }
            Err(e) => panic!("{name}: network namespaces are not available: {e}"),
        }
    } else {
        Cluster::new(name, s.nodes, seed)
    };
    c.set_faults(s.faults);
    let mut d = Driver::new(seed);
    d.dir_ops |= s.dir_ops;
    d.kind_ops |= s.kind_ops;
    // Let the first connections form before the storm (not required, but a
    // cold start under faults is its own test below).
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let (mut partitions, mut flaps) = (0, 0);
    let mut partition_until: Option<Instant> = None;
    let mut next_partition = Instant::now() + Duration::from_millis(s.partition_ms);
    let flapper = s.nodes - 1;
    let mut flap_down = false;
    let mut next_flap = Instant::now() + Duration::from_millis(s.flap_ms);
    let mut restart_at: Vec<Option<Instant>> = vec![None; s.nodes];
    let mut rss = Vec::new();
    let mut next_sample = Instant::now();
    let mut next_kill = Instant::now() + Duration::from_millis(s.kill_ms / 2 + rng.next() % s.kill_ms.max(1));
    for _ in 0..s.steps {
        let now = Instant::now();
        if s.max_time.is_some_and(|t| start.elapsed() >= t) {
            break;
        }
        if s.partition_ms > 0 {
            match partition_until {
                Some(t) if now >= t => {
                    c.partition(&[]);
                    partition_until = None;
                    next_partition = now + Duration::from_millis(s.partition_ms);
                }
                None if now >= next_partition => {
                    let side: Vec<usize> = (0..s.nodes).filter(|_| rng.chance(0.5)).collect();
                    c.partition(&side);
                    partitions += 1;
                    partition_until = Some(now + Duration::from_millis(s.partition_ms));
                }
                _ => {}
            }
        }
        if s.flap_ms > 0 && now >= next_flap {
            flap_down = !flap_down;
            c.isolate(flapper, flap_down);
            flaps += 1;
            next_flap = now + Duration::from_millis(s.flap_ms);
        }
        if s.kill_ms > 0 {
            for (i, at) in restart_at.iter_mut().enumerate() {
                if at.is_some_and(|t| now >= t) {
                    c.start(i);
                    *at = None;
                }
            }
            if now >= next_kill {
                // A node that is up (one that is down again was a lost
                // turn: some seeds then killed too rarely).
                let up: Vec<usize> = (0..s.nodes).filter(|&i| c.running(i)).collect();
                let i = if s.kill_last_only || up.is_empty() { s.nodes - 1 } else { up[rng.below(up.len())] };
                if c.running(i) {
                    c.kill(i);
                    restart_at[i] = Some(now + Duration::from_millis(200 + rng.next() % 1500));
                }
                next_kill = now + Duration::from_millis(s.kill_ms / 2 + rng.next() % s.kill_ms);
            }
        }
        if now >= next_sample {
            let pid = |i: usize| c.members[i].daemon.as_ref().map_or(0, |d| d.child.id());
            rss.push([rss_kib(pid(0)), rss_kib(pid(1))]);
            next_sample = now + Duration::from_secs(30);
        }
        // Edits go to any node, running or not: a stopped node finds them
        // when it starts (scan).
        let node = rng.below(s.nodes);
        d.step(&c.root(node));
        if s.gap_ms > 0 {
            std::thread::sleep(Duration::from_millis(rng.next() % s.gap_ms));
        }
    }
    let busy = start.elapsed();
    c.heal();
    for i in 0..s.nodes {
        c.start(i);
    }
    let (tree, converged_in) = match c.converge(Duration::from_secs(s.settle_secs)) {
        Ok(x) => x,
        // Each node's log tail is printed as it is dropped.
        Err(e) => panic!("seed {seed}: {e}"),
    };
    let v = check(&d.ledger, &tree, &c.members[0].node, &c.root(0));
    let f = Figures {
        seed,
        edits: d.ledger.edits(),
        kills: c.kills,
        packets_dropped: c.packets_dropped(),
        partitions,
        flaps,
        tokens_checked: v.tokens_checked,
        tokens_superseded: v.tokens_superseded,
        blobs_checked: v.blobs_checked,
        lost: v.lost.len(),
        doubled: v.doubled.len(),
        dir_moves: d.ledger.ops.get("move dir").copied().unwrap_or(0),
        dir_removals: d.ledger.ops.get("remove dir").copied().unwrap_or(0),
        kind_changes: d.ledger.ops.get("kind change").copied().unwrap_or(0),
        converged_in,
        rss,
    };
    eprintln!("{name}: {f:?} in {busy:?}; edits by kind {:?}; {} files at the end", d.ledger.ops, tree.len());
    assert!(v.lost.is_empty() && v.doubled.is_empty(), "seed {seed}: lost {:#?}\ndoubled {:#?}", v.lost, v.doubled);
    // Then changes that are not concurrent, each right after the one
    // before reached its node: each must arrive exactly as made.
    let relayed = d.relay(&c, 12 * scale(), Duration::from_secs(s.settle_secs)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    eprintln!("{name}: relay of {relayed} changes arrived as made");
    c.stop_all();
    Some(f)
}

fn scale() -> usize {
    env_u64("FSYNC_SCALE", 1) as usize
}

#[test]
fn random_edits_on_four_nodes_converge_and_lose_nothing() {
    let f =
        run("oracle-plain", 1, Scenario { nodes: 4, steps: 300 * scale(), gap_ms: 15, settle_secs: 60, ..Default::default() })
            .expect("ran");
    assert!(f.tokens_checked > 15 && f.blobs_checked > 1, "the run did too little: {f:?}");
}

/// The same with directory moves and recursive removals in the mix:
/// crossing moves of a directory and of what is inside it, a directory
/// removed while a peer writes into it, files moved out of it meanwhile.
#[test]
fn directory_moves_and_removals_on_four_nodes() {
    let s = Scenario { nodes: 4, steps: 300 * scale(), gap_ms: 15, settle_secs: 60, dir_ops: true, ..Default::default() };
    let f = run("oracle-dirs", 5, s).expect("ran");
    assert!(f.tokens_checked > 15, "the run did too little: {f:?}");
    assert!(f.dir_moves > 3 && f.dir_removals > 1, "too few directory operations: {f:?}");
}

/// Paths that change kind in the mix as well (a file made a directory on
/// one node while another edits it, a directory made a file or a link).
/// `FSYNC_SEED=N` runs another seed.
#[test]
fn kind_changes_on_four_nodes() {
    let s = Scenario {
        nodes: 4,
        steps: 300 * scale(),
        gap_ms: 15,
        settle_secs: 60,
        dir_ops: true,
        kind_ops: true,
        ..Default::default()
    };
    let f = run("oracle-kinds", 6, s).expect("ran");
    assert!(f.kind_changes > 0, "no kind changes were made: {f:?}");
}

/// Loss (and whatever else `faults` adds), partitions now and then and a
/// flapping node: the same scenario whether the proxy or the kernel makes
/// the faults. Checks that they were made.
fn partitions_and_flaps(name: &str, seed: u64, faults: Faults, netns: bool) {
    let s = Scenario {
        nodes: 3,
        steps: 150 * scale(),
        gap_ms: 120,
        faults,
        partition_ms: 1500,
        flap_ms: 2000,
        settle_secs: 120,
        netns,
        ..Default::default()
    };
    // Only network namespaces can be missing (and only outside CI).
    let Some(f) = run(name, seed, s) else {
        assert!(netns, "{name} did not run");
        return;
    };
    assert!(f.packets_dropped > 50 && f.partitions > 0 && f.flaps > 1, "no faults were injected: {f:?}");
}

#[test]
fn loss_delay_reordering_partitions_and_a_flapping_node() {
    let faults = Faults { loss: 0.2, delay: Duration::from_millis(200), jitter: Duration::from_millis(100) };
    partitions_and_flaps("oracle-faults", 2, faults, false);
}

#[test]
fn sigkill_a_random_node_again_and_again() {
    let s = Scenario { nodes: 3, steps: 200 * scale(), gap_ms: 80, kill_ms: 1200, settle_secs: 90, ..Default::default() };
    let f = run("oracle-kills", 3, s).expect("ran");
    assert!(f.kills >= 5, "too few kills: {f:?}");
}

/// The same faults made by the kernel: each node in its own network
/// namespace behind a bridge, 20% loss, partitions and a flapping node by
/// nftables rules.
#[test]
fn nftables_loss_and_partitions_between_network_namespaces() {
    partitions_and_flaps("oracle-netns", 4, Faults { loss: 0.2, ..Default::default() }, true);
}

/// 3 nodes, `FSYNC_SOAK_MINUTES` (default 30) of edits with every fault at
/// once; memory of each daemon is sampled and must stay flat.
#[test]
#[ignore]
fn soak() {
    let minutes = env_u64("FSYNC_SOAK_MINUTES", 30);
    let faults = Faults { loss: 0.05, delay: Duration::from_millis(30), jitter: Duration::from_millis(30) };
    // Edits until the time is up.
    let s = Scenario {
        nodes: 3,
        steps: usize::MAX,
        max_time: Some(Duration::from_secs(minutes * 60)),
        gap_ms: 200,
        faults,
        partition_ms: 20_000,
        flap_ms: 7_000,
        kill_ms: 60_000,
        settle_secs: 300,
        kill_last_only: true,
        dir_ops: false,
        kind_ops: false,
        netns: false,
    };
    let f = run("oracle-soak", env_u64("FSYNC_SEED", 9), s).expect("ran");
    eprintln!("soak done: {f:?}");
    // Flat: the last third's peak within 1.5x of the first third's (after
    // the first minute), for both never-killed nodes.
    let n = f.rss.len();
    if n >= 6 {
        for node in 0..2 {
            let peak = |r: &[[u64; 2]]| r.iter().map(|x| x[node]).max().unwrap_or(0);
            let (early, late) = (peak(&f.rss[2..n / 3 + 2]), peak(&f.rss[n - n / 3..]));
            assert!(late * 2 <= early * 3, "node {node} memory grew from {early} KiB to {late} KiB: {:?}", f.rss);
        }
    }
}

/// What users did is what the folder holds, on every node, when nothing
/// was concurrent with it: random nodes overwrite one file each moment
/// after the last overwrite reached them (0 to 300 ms), and each overwrite
/// is found verbatim everywhere (a guess that a program had read the file
/// before our write once merged the removed lines back); trees deleted
/// right after they arrived stay deleted on every node; a path made a
/// directory where a file was is a directory everywhere.
#[test]
fn saves_right_after_a_remote_change_and_deletions_are_what_users_did() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let seed = env_u64("FSYNC_SEED", 7);
    let n = env_u64("FSYNC_NODES", 3) as usize;
    let c = Cluster::new("oracle-intent", n, seed);
    let mut rng = Rng::new(seed);
    let read = |i: usize, p: &str| std::fs::read_to_string(c.root(i).join(p)).ok();
    let wait = |what: &str, secs: u64, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < Duration::from_secs(secs), "seed {seed}: timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    std::fs::create_dir_all(c.root(0)).expect("mkdir");
    let mut content = "round 0, from node 0\n".to_owned();
    std::fs::write(c.root(0).join("s.txt"), &content).expect("write");
    let mut writer = 0;
    for round in 1..=24 {
        let w = rng.below(n);
        wait(&format!("round {}'s save on node {w}", round - 1), 20, &|| read(w, "s.txt").as_deref() == Some(content.as_str()));
        std::thread::sleep(Duration::from_millis(rng.next() % 300));
        let new = format!("round {round}, from node {w}\nline two of round {round}\n");
        let path = c.root(w).join("s.txt");
        if rng.chance(0.5) {
            std::fs::write(&path, &new).expect("write in place");
        } else {
            let tmp = c.root(w).join(format!(".s.txt.tmp{round}"));
            std::fs::write(&tmp, &new).expect("write temp");
            std::fs::rename(&tmp, &path).expect("rename over");
        }
        content = new;
        writer = w;
    }
    let verbatim = || (0..n).all(|i| read(i, "s.txt").as_deref() == Some(content.as_str()));
    let start = Instant::now();
    while !verbatim() {
        if start.elapsed() > Duration::from_secs(20) {
            let held: Vec<Option<String>> = (0..n).map(|i| read(i, "s.txt")).collect();
            panic!("seed {seed}: node {writer}'s last save is not what every node holds: {held:#?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Deleted right after it arrived (or where it was made): gone for good.
    for round in 0..6 {
        let (a, b) = (rng.below(n), rng.below(n));
        let top = format!("tree{round}");
        for f in ["f.txt", "sub/g.txt", "sub/deeper/h.txt"] {
            let p = c.root(a).join(&top).join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, format!("{top}/{f}\n")).expect("write");
        }
        // Whole: a node that deletes a file before the last save of it
        // arrived deleted an older version, and that save, concurrent with
        // the deletion, keeps the file (as documented).
        wait(&format!("{top} on node {b}"), 20, &|| {
            ["f.txt", "sub/g.txt", "sub/deeper/h.txt"]
                .iter()
                .all(|f| read(b, &format!("{top}/{f}")).is_some_and(|t| t == format!("{top}/{f}\n")))
        });
        std::fs::remove_dir_all(c.root(b).join(&top)).expect("rm -r");
        wait(&format!("{top} gone everywhere"), 20, &|| (0..n).all(|i| !c.root(i).join(&top).exists()));
    }
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..n {
        let left: Vec<String> = oracle::tree(&c.root(i)).into_keys().filter(|p| p.starts_with("tree")).collect();
        assert!(left.is_empty(), "seed {seed}: deleted trees came back on node {i}: {left:?}");
    }
    // A file made a directory on one node, right after it arrived there.
    let (a, b) = (rng.below(n), rng.below(n));
    std::fs::write(c.root(a).join("k"), "a file\n").expect("write");
    wait("k on the other node", 20, &|| read(b, "k").is_some());
    std::fs::remove_file(c.root(b).join("k")).expect("rm");
    std::fs::create_dir(c.root(b).join("k")).expect("mkdir");
    std::fs::write(c.root(b).join("k/inside.txt"), "inside\n").expect("write");
    wait("k a directory everywhere", 20, &|| (0..n).all(|i| read(i, "k/inside.txt").as_deref() == Some("inside\n")));
    let trees: Vec<_> = (0..n).map(|i| oracle::tree(&c.root(i))).collect();
    assert!(trees.iter().all(|t| *t == trees[0]), "seed {seed}: the nodes differ");
}
