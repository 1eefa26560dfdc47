//! The HTTP front end of the real binary: Braid-HTTP with curl (every
//! method and error case), the reference Braid client (braid-http's fetch,
//! with simpleton rules on top) editing one file together with a peer's
//! disk, access, ports, limits, and edits acknowledged over HTTP surviving
//! SIGKILL.

#![allow(missing_docs)]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use util::{eventually, free_port, read, Daemon, Node, Pair};

/// Whether `program` runs here; under CI=true its absence fails the test.
fn have(program: &str) -> bool {
    let ok = Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "{program} is needed (.ci/run installs it)");
        eprintln!("skipped: {program} is not installed");
    }
    ok
}

/// The daemon's HTTP address, once it serves.
fn http_of(n: &Node) -> String {
    let mut at = None;
    eventually("the daemon's http address", 20, || {
        at = n.try_status().and_then(|s| s["http"].as_str().map(str::to_owned));
        at.is_some()
    });
    at.unwrap_or_default()
}

fn token(n: &Node) -> String {
    std::fs::read_to_string(n.home.join("http.token")).expect("token").trim().to_owned()
}

/// A node sharing "docs", started.
fn single(name: &str) -> (Node, Daemon) {
    let n = Node::new(name);
    n.ok(&["init"]);
    n.ok(&["folder", "add", "docs", n.scratch.join("docs").to_str().expect("utf-8")]);
    let d = n.start(free_port());
    (n, d)
}

/// One request over a plain TCP connection; the status and the rest.
fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

#[test]
fn curl_scripts_answer_get_subscribe_put_and_every_error() {
    if !have("curl") {
        return;
    }
    let (n, _d) = single("http-curl");
    let at = http_of(&n);
    let outside = n.scratch.join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("http/curl.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(format!("http://{at}/docs"))
        .arg(token(&n))
        .arg(n.scratch.join("docs"))
        .arg(&outside)
        .output()
        .expect("bash");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "curl.sh failed:\n{said}\n--- daemon log:\n{}", n.log_tail(40));
    assert_eq!(said.matches("ok: ").count(), 8, "{said}");
    // The daemon lived through all of it, and said nothing alarming.
    assert!(n.try_status().is_some(), "the daemon still answers");
    assert!(!n.log().contains("panicked"), "{}", n.log_tail(40));
}

/// The page's diff sends only what changed: patches that take the old text
/// to the new, and insertions alone as insertions (a batch of keystrokes
/// sent as one patch once deleted and re-inserted the text between them,
/// and a peer's line typed there concurrently split a line in two).
#[test]
fn the_pages_diff_sends_only_what_changed() {
    if !have("node") {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("http/diff-test.js");
    let out = Command::new("node").arg(script).output().expect("node");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// The node client on the reference braid-http client, driven line by line.
struct Client {
    child: std::process::Child,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl Client {
    fn start(url: &str, token: &str) -> Client {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("http/simpleton-client.js");
        let mut child = Command::new("node")
            .arg(script)
            .arg(url)
            .arg(token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Client { child, lines }
    }

    fn send(&mut self, cmd: serde_json::Value) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{cmd}").expect("to the client");
    }

    /// Its state once nothing is on its way (no PUT out, no unsent edit).
    fn settled(&mut self) -> Option<String> {
        self.send(serde_json::json!({ "cmd": "state" }));
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(v) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if let Some(state) = v.get("state").filter(|_| v.get("event").is_none()) {
                let errors = v["errors"].as_array().map_or(0, Vec::len);
                assert_eq!(errors, 0, "the client had errors: {v}");
                let idle = v["outstanding"] == 0 && v["pending"] == false;
                return idle.then(|| state.as_str().unwrap_or_default().to_owned());
            }
        }
        None
    }

    /// Waits for an event named `name` (other lines are dropped).
    fn event(&mut self, name: &str, secs: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while let Ok(v) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if v["event"] == name {
                return v;
            }
            assert_ne!(v["event"], "error", "the client failed: {v}");
        }
        panic!("no {name} event from the client in {secs}s");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Saves `text` as editors do: a temp file renamed over the file.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Two running nodes; `file` made with `text` on b's disk and arrived on
/// a's. Returns the pair, its daemons and the file's path on a and on b.
fn shared_file(name: &str, file: &str, text: &str) -> (Pair, [Daemon; 2], std::path::PathBuf, std::path::PathBuf) {
    let p = Pair::new(name);
    let daemons = [p.a.start(p.pa), p.b.start(p.pb)];
    let (fa, fb) = (p.da(file), p.db(file));
    std::fs::create_dir_all(fb.parent().expect("dir")).expect("docs");
    save(&fb, text);
    eventually("the file on a", 20, || read(&fa).as_deref() == Some(text));
    (p, daemons, fa, fb)
}

/// Saves `line` into the file at a line boundary picked by `rng`, as an
/// editor saves: what it read, changed, through a temp file put in place
/// by an atomic exchange. True when the save was stale: the file changed
/// between the read and the exchange (a peer's change was written back),
/// so the save, as made, undoes that change.
fn save_line_at_random(path: &Path, line: &str, rng: &mut util::Rng) -> bool {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    let now = read(path).unwrap_or_default();
    let mut lines: Vec<&str> = now.split_inclusive('\n').collect();
    lines.insert(rng.below(lines.len() + 1), line);
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, lines.concat()).expect("write");
    renameat2(AT_FDCWD, &tmp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE).expect("exchange");
    let replaced = read(&tmp);
    std::fs::remove_file(&tmp).expect("remove");
    replaced.as_deref() != Some(now.as_str())
}

#[test]
fn a_braid_client_and_a_peers_disk_edit_one_file_together() {
    if !have("node") {
        return;
    }
    let (p, _daemons, fa, fb) = shared_file("http-braid", "notes.txt", "line one\n");
    let url = format!("http://{}/docs/notes.txt", http_of(&p.a));
    let mut c = Client::start(&url, &token(&p.a));
    // The snapshot, then a save on b's disk arrives as an update.
    let first = c.event("update", 10);
    assert_eq!(first["state"], "line one\n");
    save(&fb, "line one\nfrom b's disk\n");
    let mut state = String::new();
    eventually("b's save in the client", 20, || {
        state = c.settled().unwrap_or_default();
        state == "line one\nfrom b's disk\n"
    });
    // The client's edit reaches b's disk.
    c.send(serde_json::json!({ "cmd": "edit", "pos": 0, "del": 0, "ins": "from the web\n" }));
    eventually("the client's edit on b's disk", 20, || read(&fb).as_deref() == Some("from the web\nline one\nfrom b's disk\n"));
    // Concurrent typing on both sides: the client types, b saves lines.
    c.send(serde_json::json!({ "cmd": "type", "n": 80, "seed": 7 }));
    let mut rng = util::Rng::new(11);
    let mut lines_saved = Vec::new();
    let mut stale = 0;
    for i in 0..12 {
        let line = format!("disk line {i}\n");
        stale += usize::from(save_line_at_random(&fb, &line, &mut rng));
        lines_saved.push(line);
        std::thread::sleep(Duration::from_millis(40 + rng.below(60) as u64));
    }
    c.event("typed", 60);
    // Everyone ends with the same text, every line b saved in it.
    let start = Instant::now();
    let last = loop {
        let client = c.settled().unwrap_or_default();
        let last = (client, read(&fa).unwrap_or_default(), read(&fb).unwrap_or_default());
        if last.0 == last.1 && last.1 == last.2 {
            break last;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not the same after 30 s:\nclient {:?}\na {:?}\nb {:?}",
            last.0,
            last.1,
            last.2
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Nothing lost, nothing twice: every keystroke once (a stale save on
    // b's disk, made over keystrokes written back meanwhile, removes them,
    // as saved), and without them every line b's disk saved, once.
    let typed = last.0.matches('x').count();
    if stale == 0 {
        assert_eq!(typed, 80, "every keystroke once: {:?}", last.0);
    } else {
        assert!(typed <= 80, "no keystroke twice: {:?}", last.0);
        eprintln!("{stale} stale saves on b's disk: {typed} of 80 keystrokes kept");
    }
    let lines: String = last.0.chars().filter(|c| !matches!(c, 'x' | 'é' | '😀')).collect();
    for l in lines_saved.iter().map(String::as_str).chain(["from the web\n", "line one\n", "from b's disk\n"]) {
        assert_eq!(lines.matches(l).count(), 1, "{l:?} once in {lines:?}");
    }
}

#[test]
fn ports_access_and_the_address_in_status() {
    // Two nodes on one machine: the default port is taken by one, the
    // other serves on another and says where.
    let (a, _da) = single("http-port-a");
    let (b, _db) = single("http-port-b");
    let (ha, hb) = (http_of(&a), http_of(&b));
    assert_ne!(ha, hb);
    assert!(ha.starts_with("127.0.0.1:") && hb.starts_with("127.0.0.1:"));
    // `fsync open --print` gives the page's address with the token.
    let url = a.ok(&["open", "--print"]);
    assert_eq!(url.trim(), format!("http://{ha}/?token={}", token(&a)));
    let mode = std::fs::metadata(a.home.join("http.token")).expect("token").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0, "the token is the owner's only");
    // Without the token: 401 and nothing else; with it, the page.
    let (code, head) = raw(&ha, "GET /docs/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 401, "{head}");
    let (code, _) = raw(&ha, &format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", token(&a)));
    assert_eq!(code, 200);
    // HTTP/2 with prior knowledge on the same port.
    if have("curl") {
        let out = Command::new("curl")
            .args(["-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {}", token(&a))])
            .arg(format!("http://{ha}/docs/"))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    }
    // Off, and refused off loopback.
    let c = Node::new("http-off");
    c.ok(&["init"]);
    let port = free_port().to_string();
    let _dc = c.spawn(&["run", "--listen", &format!("127.0.0.1:{port}"), "--http", "off"]);
    eventually("the daemon without HTTP", 20, || c.try_status().is_some_and(|s| s["running"] == true && s["http"].is_null()));
    assert!(c.fails(&["open"]).contains("serves no HTTP"));
    let d = Node::new("http-remote");
    d.ok(&["init"]);
    let err = d.fails(&["run", "--listen", &format!("127.0.0.1:{}", free_port()), "--http", "0.0.0.0:7499"]);
    assert!(err.contains("loopback only"), "{err}");
}

#[test]
fn too_many_subscribers_are_refused_and_the_daemon_keeps_serving() {
    // A lower limit than the default (4096), for a test's file descriptors.
    const MOST: usize = 200;
    let n = Node::new("http-subs");
    n.ok(&["init"]);
    n.ok(&["folder", "add", "docs", n.scratch.join("docs").to_str().expect("utf-8")]);
    let port = free_port().to_string();
    let _d = n.spawn_env(&["run", "--listen", &format!("127.0.0.1:{port}")], &[("FSYNC_HTTP_SUBSCRIBERS", "200")]);
    let docs = n.scratch.join("docs");
    std::fs::write(docs.join("s.txt"), "watched\n").expect("write");
    let at = http_of(&n);
    let t = token(&n);
    let get = |extra: &str| format!("GET /docs/s.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n{extra}\r\n");
    eventually("s.txt served", 20, || raw(&at, &get("")).0 == 200);
    let mut held = Vec::new();
    for i in 0..MOST {
        let mut s = std::net::TcpStream::connect(&at).expect("connect");
        s.write_all(get("Subscribe: true\r\n").as_bytes()).expect("subscribe");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).expect("an answer");
        assert_eq!(&buf, b"HTTP/1.1 209", "subscription {i}");
        held.push(s);
    }
    let (code, head) = raw(&at, &get("Subscribe: true\r\n"));
    assert_eq!(code, 503, "{head}");
    assert!(head.contains("too many subscriptions"), "{head}");
    // A save reaches the subscribers all the same, and plain reads work.
    std::fs::write(docs.join("s.txt"), "watched\nchanged\n").expect("write");
    let mut first = held.swap_remove(0);
    let mut got = Vec::new();
    let start = Instant::now();
    while !String::from_utf8_lossy(&got).contains("changed") && start.elapsed() < Duration::from_secs(10) {
        let mut buf = [0u8; 4096];
        match first.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(String::from_utf8_lossy(&got).contains("changed"), "{}", String::from_utf8_lossy(&got));
    drop(held);
    drop(first);
    // Closed subscriptions are let go: a new one is taken.
    eventually("a subscription taken again", 20, || raw(&at, &get("Subscribe: true\r\n")).0 == 209);
    assert_eq!(raw(&at, &get("")).0, 200);
}

#[test]
fn an_edit_acknowledged_over_http_survives_sigkill() {
    if !have("curl") {
        return;
    }
    let (n, d) = single("http-kill");
    let docs = n.scratch.join("docs");
    std::fs::write(docs.join("k.txt"), "before\n").expect("write");
    let at = http_of(&n);
    let t = token(&n);
    let url = format!("http://{at}/docs/k.txt");
    eventually("k.txt served", 20, || {
        Command::new("curl")
            .args(["-sf", "-H", &format!("Authorization: Bearer {t}"), &url])
            .output()
            .is_ok_and(|o| o.stdout == b"before\n")
    });
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", &format!("Authorization: Bearer {t}")])
        .args(["-H", "Version: \"kill-12\"", "-H", "Content-Range: text [7:7]", "--data-binary", "acknowledged\n", &url])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    // No grace: SIGKILL at once, before any write-back may have run.
    let mut d = d;
    d.child.kill().expect("kill");
    let _ = d.child.wait();
    let _d = n.start(free_port());
    eventually("the edit on disk after the restart", 20, || {
        read(&docs.join("k.txt")).as_deref() == Some("before\nacknowledged\n")
    });
    assert_eq!(n.ok(&["cat", docs.join("k.txt").to_str().expect("utf-8")]), "before\nacknowledged\n");
    // The edit itself was kept, not only its copy on disk (taken in again
    // by the scan, it would be another version): its name still reads.
    let at = http_of(&n);
    let kept = Command::new("curl")
        .args(["-s", "-H", &format!("Authorization: Bearer {}", token(&n)), "-H", "Version: \"kill-12\""])
        .arg(format!("http://{at}/docs/k.txt"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&kept.stdout), "before\nacknowledged\n");
}

/// The page in headless Chromium: two browsers type into one file while a
/// peer's disk saves lines in it; everyone ends with the same text, every
/// keystroke and line once. Needs Chromium and playwright-core (NODE_PATH);
/// `.ci/run` installs both.
#[test]
fn two_browsers_and_a_peers_disk_edit_one_file_on_the_page() {
    let ready = have("node")
        && Command::new("node")
            .args(["-e", "require('playwright-core')"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        && Path::new(&std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())).exists();
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium and playwright-core (on NODE_PATH) are needed; .ci/run installs them"
        );
        eprintln!("skipped: Chromium or playwright-core (NODE_PATH) missing");
        return;
    }
    let (p, _daemons, fa, fb) = shared_file("http-page", "page.txt", "shared\n");
    http_of(&p.a);
    let url = p.a.ok(&["open", "--print"]).trim().to_owned();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("http/page-test.js");
    let mut child = Command::new("node")
        .arg(script)
        .args([url.as_str(), "page.txt", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut stdin = child.stdin.take().expect("stdin");
    let (tx, lines) = mpsc::channel::<serde_json::Value>();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let next = |what: &str| -> serde_json::Value {
        let v = lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no {what} from the browsers"));
        assert_ne!(v["event"], "error", "{v}");
        v
    };
    assert_eq!(next("ready")["event"], "ready");
    let mut saved = Vec::new();
    let mut stale = 0;
    let mut rng = util::Rng::new(5);
    for i in 0..10 {
        let line = format!("disk {i}\n");
        stale += usize::from(save_line_at_random(&fb, &line, &mut rng));
        saved.push(line);
        std::thread::sleep(Duration::from_millis(150 + rng.below(150) as u64));
    }
    let typed = next("typed");
    let (na, nb) = (typed["typed"][0].as_u64().unwrap_or(0) as usize, typed["typed"][1].as_u64().unwrap_or(0) as usize);
    assert!(na > 5 && nb > 5, "{typed}");
    let start = Instant::now();
    let text = loop {
        writeln!(stdin, "texts").expect("ask");
        let v = next("texts");
        assert_eq!(v["errors"], serde_json::json!([]), "{v}");
        let (t0, t1) = (v["texts"][0].as_str().unwrap_or_default().to_owned(), v["texts"][1].as_str().unwrap_or_default());
        if t0 == t1 && Some(&t0) == read(&fa).as_ref() && Some(&t0) == read(&fb).as_ref() {
            break t0;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not the same after 30 s: {v}\na {:?}\nb {:?}",
            read(&fa),
            read(&fb)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The page's history: the first version viewed, then restored; the
    // restore reaches the peer's disk.
    writeln!(stdin, "history").expect("ask");
    let h = next("history");
    assert_eq!(h["viewed"], "shared\n", "{h}");
    eventually("the restored version on b", 20, || read(&fb).as_deref() == Some("shared\n"));
    let _ = writeln!(stdin, "quit");
    let _ = child.wait();
    // Every keystroke once, unless a stale save on b's disk removed some.
    let (ka, kb) = (text.matches('A').count(), text.matches('B').count());
    if stale == 0 {
        assert_eq!((ka, kb), (na, nb), "every keystroke of both browsers once: {text:?} ({typed})");
    } else {
        assert!(ka <= na && kb <= nb, "no keystroke twice: {text:?}");
        eprintln!("{stale} stale saves on b's disk: {ka} of {na} and {kb} of {nb} keystrokes kept");
    }
    let lines: String = text.chars().filter(|c| !matches!(c, 'A' | 'B')).collect();
    for l in saved.iter().map(String::as_str).chain(["shared\n"]) {
        assert_eq!(lines.matches(l).count(), 1, "{l:?} once in {lines:?}");
    }
}
