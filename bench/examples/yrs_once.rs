//! Times one yrs local replay of a trace (a sanity check of the baseline).
use fsync_bench::{baselines, trace};
fn main() {
    let p = std::env::args().nth(1).expect("trace path");
    let t = trace::load(std::path::Path::new(&p)).expect("loads");
    let s = std::time::Instant::now();
    let d = baselines::yrs_local(&t);
    let ms = s.elapsed().as_secs_f64() * 1000.0;
    let ok = baselines::yrs_load(&baselines::yrs_encode(&d)) == t.end;
    println!("{} yrs local {ms:.1} ms ok={ok}", t.name);
}
