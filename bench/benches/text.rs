//! fsync-core's text CRDT against diamond-types 1.0 and yrs on real traces:
//! local replay, full-history merge (decode + produce the text) and encoded
//! size, plus merging one small remote change into a long history.
//!
//! `cargo bench -p fsync-bench --bench text`. Sizes and correctness are
//! printed first; criterion prints the times. `FSYNC_BENCH_TRACES=A1,A2`
//! (names, comma separated; `remote-change` for the last group) selects.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use fsync_bench::baselines::*;
use fsync_bench::trace::{self, Trace};
use fsync_core::text::{OpLog, RemoteOp, TextDoc};
use fsync_core::{AgentId, EventId};

const TRACES: &[&str] = &[
    "sequential/automerge-paper",
    "sequential/seph-blog1",
    "concurrent/friendsforever",
    "concurrent/clownschool",
    "concurrent/A1",
    "concurrent/A2",
];

fn load(name: &str) -> Trace {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../traces");
    trace::load(&dir.join(format!("{name}.json.gz"))).expect("trace loads")
}

fn fsync_merge(bytes: &[u8]) -> String {
    TextDoc::from_oplog(OpLog::decode(bytes).expect("decodes")).text()
}

/// `FSYNC_BENCH_TRACES=friendsforever,A1` runs only those traces.
fn selected(name: &str) -> bool {
    match std::env::var("FSYNC_BENCH_TRACES") {
        Ok(list) => list.split(',').any(|t| name.ends_with(t.trim())),
        Err(_) => true,
    }
}

fn traces(c: &mut Criterion) {
    for name in TRACES.iter().filter(|n| selected(n)) {
        let t = load(name);
        let fs = if t.concurrent { t.replay_concurrent().expect("builds") } else { t.replay_local() };
        let fs_bytes = fs.oplog().encode();
        let dt_log = if t.concurrent { dt_concurrent(&t) } else { dt_local(&t).oplog };
        let dt_bytes = dt_encode(&dt_log);
        // diamond-types 1.0 panics checking out A2: report, do not time it.
        let dt_ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dt_load(&dt_bytes) == t.end));
        let y = if t.concurrent { yrs_concurrent(&t) } else { yrs_local(&t) };
        let y_bytes = yrs_encode(&y);
        println!(
            "{}: encoded bytes fsync {} dt1 {} ({:.2}x) yrs {} ({:.2}x); exact: fsync {} dt1 {} yrs {}",
            t.name,
            fs_bytes.len(),
            dt_bytes.len(),
            fs_bytes.len() as f64 / dt_bytes.len() as f64,
            y_bytes.len(),
            fs_bytes.len() as f64 / y_bytes.len() as f64,
            fsync_merge(&fs_bytes) == t.end,
            match dt_ok {
                Ok(ok) => ok.to_string(),
                Err(_) => "panicked".to_owned(),
            },
            yrs_load(&y_bytes) == t.end,
        );
        let mut g = c.benchmark_group(t.name.clone());
        g.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
        if !t.concurrent {
            g.bench_function("local/fsync", |b| b.iter(|| t.replay_local()));
            g.bench_function("local/dt1", |b| b.iter(|| dt_local(&t)));
            g.bench_function("local/yrs", |b| b.iter(|| yrs_local(&t)));
        }
        g.bench_function("merge/fsync", |b| b.iter(|| fsync_merge(&fs_bytes)));
        if dt_ok.is_ok() {
            g.bench_function("merge/dt1", |b| b.iter(|| dt_load(&dt_bytes)));
        }
        g.bench_function("merge/yrs", |b| b.iter(|| yrs_load(&y_bytes)));
        g.finish();
    }
}

/// One small remote edit arriving at a replica that holds the whole
/// automerge-paper history: on top of the newest version (the live case)
/// and concurrent with the last 100 local edits (a peer slightly behind).
fn remote_change(c: &mut Criterion) {
    if !selected("remote-change") {
        return;
    }
    let t = load("sequential/automerge-paper");
    let doc = t.replay_local();
    let tip = doc.oplog().id_of(doc.oplog().len() - 1);
    let older = doc.oplog().id_of(doc.oplog().len() - 101);
    let peer = AgentId::from_index(7);
    let dt = dt_local(&t);
    let dt_tip = dt.oplog.len() - 1;

    let mut g = c.benchmark_group("remote-change-into-automerge-paper");
    g.sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    for (label, parent) in [("on-tip", tip), ("behind-100", older)] {
        g.bench_function(format!("fsync/{label}"), |b| {
            b.iter_batched(
                || doc.clone(),
                |mut d| {
                    let p = [parent];
                    let op = RemoteOp::insert(EventId { agent: peer, seq: 0 }, &p, 1000, "x");
                    d.add_remote(&op).expect("valid");
                    d.merge_pending();
                    d
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.bench_function("dt1/on-tip", |b| {
        b.iter_batched(
            || (dt.oplog.clone(), dt.branch.clone()),
            |(mut log, mut branch)| {
                let a = log.get_or_create_agent_id("peer");
                let v = log.add_insert_at(a, &[dt_tip], 1000, "x");
                branch.merge(&log, &[v]);
                (log, branch)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("dt1/behind-100", |b| {
        b.iter_batched(
            || (dt.oplog.clone(), dt.branch.clone()),
            |(mut log, mut branch)| {
                let a = log.get_or_create_agent_id("peer");
                let v = log.add_insert_at(a, &[dt_tip - 100], 1000, "x");
                let tip = log.local_version();
                let _ = v;
                branch.merge(&log, &tip);
                (log, branch)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, traces, remote_change);
criterion_main!(benches);
