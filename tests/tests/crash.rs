//! Crash safety on the real binary: nodes are SIGKILLed again and again in
//! the middle of heavy writes; after every restart the store opens, and at
//! the end both nodes hold every line ever written, exactly once.
//!
//! `FSYNC_CRASH_ROUNDS=N` runs longer (default 12 kills).

#![allow(missing_docs)]

mod util;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use util::{Daemon, Node, Pair};

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open for append");
    // One write per line: a scan never sees half a line.
    f.write_all(line.as_bytes()).expect("append");
}

fn kill9(d: Daemon) {
    let mut d = d;
    let _ = d.child.kill(); // SIGKILL
    let _ = d.child.wait();
}

/// Every file under `root` (relative path -> content), skipping our temp files.
fn files(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".fsync-tmp-") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(s) = std::fs::read_to_string(&p) {
                out.insert(p.strip_prefix(root).expect("inside").to_string_lossy().into_owned(), s);
            }
        }
    }
    out
}

/// Waits for a restarted daemon to answer; fails with its log.
fn wait_running(n: &Node) {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(15) {
        if n.try_status().is_some_and(|s| s["running"] == true) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("the restarted daemon did not come up: {:?}\n{}", n.run(&["status"]), n.log());
}

#[test]
fn sigkill_during_heavy_writes_loses_and_doubles_nothing() {
    let rounds: usize = std::env::var("FSYNC_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let p = Pair::new("crash");
    let (a, b, pa, pb) = (&p.a, &p.b, p.pa, p.pb);
    let (ra, rb) = (p.da(""), p.db(""));
    // The shared file exists on both before the storm (created on both at
    // once it would be two files by the CONTRACT's same-new-path rule).
    std::fs::write(ra.join("shared.txt"), "").expect("write");
    let (mut da, mut db) = (Some(a.start(pa)), Some(b.start(pb)));
    let start = std::time::Instant::now();
    while !rb.join("shared.txt").exists() {
        assert!(start.elapsed() < std::time::Duration::from_secs(15), "first sync: {}", b.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // What each file must end with: every line written, once.
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..rounds {
        // Heavy writes on both sides: appends to shared and own files, new
        // files; the node to be killed is picked at random.
        let victim_is_a = rand() % 2 == 0;
        let kill_at = 20 + (rand() % 30) as usize;
        for i in 0..60 {
            for (side, root) in [("a", &ra), ("b", &rb)] {
                let file = match rand() % 4 {
                    0 => "shared.txt".to_owned(),
                    1 => format!("{side}-log.txt"),
                    2 => format!("{side}-{round}.txt"),
                    _ => format!("dir{}/{side}.txt", round % 3),
                };
                std::fs::create_dir_all(root.join(&file).parent().expect("parent")).expect("mkdir");
                let line = format!("{side} {round} {i}\n");
                append(&root.join(&file), &line);
                expected.entry(file).or_default().push(line);
            }
            if i == kill_at {
                // Mid-burst: SIGKILL.
                if victim_is_a {
                    kill9(da.take().expect("a runs"));
                } else {
                    kill9(db.take().expect("b runs"));
                }
            }
            if i % 10 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        // Restart whoever was killed: its store must open every time.
        if da.is_none() {
            da = Some(a.start(pa));
            wait_running(a);
        }
        if db.is_none() {
            db = Some(b.start(pb));
            wait_running(b);
        }
        std::thread::sleep(std::time::Duration::from_millis(50 + rand() % 200));
    }
    // Converge, then check every line is there exactly once.
    let want: BTreeMap<String, Vec<String>> = expected
        .into_iter()
        .map(|(f, mut lines)| {
            lines.sort();
            (f, lines)
        })
        .collect();
    let lines_of = |root: &Path| -> BTreeMap<String, Vec<String>> {
        files(root)
            .into_iter()
            .map(|(f, s)| {
                let mut l: Vec<String> = s.split_inclusive('\n').map(str::to_owned).collect();
                l.sort();
                (f, l)
            })
            .collect()
    };
    let start = std::time::Instant::now();
    while !(files(&ra) == files(&rb) && lines_of(&ra) == want) {
        if start.elapsed() > std::time::Duration::from_secs(60) {
            let (la, lb) = (lines_of(&ra), lines_of(&rb));
            let mut report = String::new();
            for f in la.keys().chain(lb.keys()).filter(|f| !want.contains_key(*f)) {
                report.push_str(&format!("unexpected file {f}\n"));
            }
            for (f, w) in &want {
                for (side, got) in [("a", la.get(f)), ("b", lb.get(f))] {
                    let got = got.cloned().unwrap_or_default();
                    if &got != w {
                        let missing: Vec<&String> = w.iter().filter(|l| !got.contains(l)).collect();
                        let extra: Vec<&String> = got.iter().filter(|l| !w.contains(l)).collect();
                        let doubled = got.len() as i64 - w.len() as i64 + missing.len() as i64 - extra.len() as i64;
                        report.push_str(&format!("{side} {f}: missing {missing:?} extra {extra:?} doubled {doubled}\n"));
                    }
                }
            }
            panic!("not converged after 60s:\n{report}\n--- a log:\n{}\n--- b log:\n{}", a.log(), b.log());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let got = lines_of(&ra);
    for (f, lines) in &want {
        assert_eq!(got.get(f), Some(lines), "{f}: lines lost or doubled");
    }
    let total: usize = want.values().map(Vec::len).sum();
    eprintln!("{rounds} SIGKILLs, {total} lines written, all present exactly once on both nodes (converged {:?} after the last restart)", start.elapsed());
    for (n, d) in [(a, da), (b, db)] {
        assert_eq!(d.expect("running").stop(), Some(0), "{}", n.log());
    }
}
