//! Replays an editing trace through fsync's text CRDT and prints one JSON
//! line (see CONTRACT.md section 4):
//!
//! ```text
//! cargo run --release -p fsync-core --example replay -- TRACE.json.gz
//! ```
//!
//! `local_ms`: every patch applied as a local edit (sequential traces only).
//! `merge_ms`: decoding the encoded full history into an empty replica and
//! producing the text. Times are medians of several runs in this process.

#[path = "support/trace.rs"]
mod trace;

use std::path::Path;
use std::time::Instant;

use fsync_core::text::{OpLog, TextDoc};

/// Median wall time in milliseconds of `f`, over at least 5 runs and about
/// a second in all.
fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < 5 || (started.elapsed().as_secs_f64() < 1.0 && times.len() < 101) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: replay TRACE.json.gz");
        std::process::exit(2);
    };
    let t = match trace::load(Path::new(&path)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let (doc, local_ms) = if t.concurrent {
        match t.replay_concurrent() {
            Ok(d) => (d, None),
            Err(e) => {
                eprintln!("error: {}: {e}", t.name);
                std::process::exit(1);
            }
        }
    } else {
        let ms = median_ms(|| {
            std::hint::black_box(t.replay_local());
        });
        (t.replay_local(), Some(ms))
    };
    let encoded = doc.oplog().encode();
    let mut merged = String::new();
    let merge_ms = median_ms(|| {
        let log = OpLog::decode(&encoded).expect("our own encoding decodes");
        merged = TextDoc::from_oplog(log).text();
    });
    let ok = merged == t.end && doc.text() == t.end;
    let local = local_ms.map_or("null".to_owned(), |m| format!("{m:.3}"));
    println!(
        "{{\"trace\": {}, \"ok\": {ok}, \"final_len\": {}, \"local_ms\": {local}, \"merge_ms\": {merge_ms:.3}, \"encoded_bytes\": {}}}",
        serde_json::to_string(&t.name).unwrap_or_default(),
        merged.chars().count(),
        encoded.len()
    );
}
