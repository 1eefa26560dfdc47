//! Helpers: a node home in a temp dir, and the real binary run in it.

#![allow(dead_code, missing_docs, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `fsync` binary next to this test executable (target/<profile>/).
pub fn fsync_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("fsync");
    assert!(bin.exists(), "{} not built (run `cargo test` at the workspace root)", bin.display());
    bin
}

/// A node: its own home and a scratch directory.
pub struct Node {
    pub home: PathBuf,
    pub scratch: PathBuf,
    /// Runs every command as this user (and group) instead of ours.
    pub uid: Option<u32>,
}

impl Node {
    pub fn new(name: &str) -> Node {
        let base = std::env::temp_dir().join(format!("fsync-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("mkdir");
        Node { home: base.join("home"), scratch: base, uid: None }
    }

    /// A node whose commands and daemon run as `uid` (root only: file
    /// permissions do not stop root, so permission tests need another
    /// user). Its scratch directory belongs to that user.
    pub fn new_as(name: &str, uid: u32) -> Node {
        let mut n = Node::new(name);
        std::os::unix::fs::chown(&n.scratch, Some(uid), Some(uid)).expect("chown");
        n.uid = Some(uid);
        n
    }

    /// `fsync --home HOME` as this node's user.
    pub fn command(&self) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(fsync_bin());
        if let Some(u) = self.uid {
            c.uid(u).gid(u);
        }
        c.arg("--home").arg(&self.home);
        c
    }

    /// Runs `fsync --home HOME args...`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("fsync runs")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "fsync {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "fsync {args:?} should have failed");
        assert!(out.stdout.is_empty(), "a failing command printed to stdout");
        String::from_utf8(out.stderr).expect("utf-8 output")
    }

    /// `fsync status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.ok(&["status", "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"))
    }

    /// `fsync status --json` if it answers (a daemon may be starting).
    pub fn try_status(&self) -> Option<serde_json::Value> {
        let out = self.run(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn config(&self) -> String {
        std::fs::read_to_string(self.home.join("config.toml")).expect("config")
    }

    /// Sets `option` (a `key = value` line) for `folder` in the config
    /// (before the daemon starts).
    pub fn set_folder_option(&self, folder: &str, option: &str) {
        let line = format!("name = \"{folder}\"\n");
        let config = self.config().replacen(&line, &format!("{line}{option}\n"), 1);
        std::fs::write(self.home.join("config.toml"), config).expect("config");
    }

    /// Turns the mass-deletion guard off for `folder`: for workloads whose
    /// every deletion must go through as made.
    pub fn guard_off(&self, folder: &str) {
        self.set_folder_option(folder, "delete_guard_percent = 0");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A failed test shows what its daemons said last (CI keeps nothing).
        if std::thread::panicking() {
            eprintln!("--- {} daemon log, last 60 lines:\n{}", self.scratch.display(), self.log_tail(60));
        }
        // FSYNC_KEEP=1 keeps homes, folders and logs for a post-mortem.
        if std::env::var_os("FSYNC_KEEP").is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Pseudo-random bytes from `seed` (xorshift; incompressible, so binary
/// content is split into real chunks).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A free UDP port on 127.0.0.1 (bound and released; fine for tests).
/// A UDP port free now, and never handed out before by this process: the
/// kernel may give the same free port to two calls in a row (two nodes of
/// one test then fought over it, and one never started).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> = std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if GIVEN.lock().expect("ports").insert(port) {
            return port;
        }
    }
}

/// A running `fsync run`; killed if the test ends without stopping it.
pub struct Daemon {
    pub child: std::process::Child,
}

impl Daemon {
    /// SIGTERM, then the exit code (None if it had to be killed).
    pub fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(15) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Daemon {
    /// The CPU the daemon has used so far (utime + stime), in clock ticks
    /// (100 per second).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        field(11) + field(12)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// `fsync run --listen 127.0.0.1:PORT`, logs to HOME/../daemon.log.
    pub fn start(&self, port: u16) -> Daemon {
        let log = self.log_file();
        let child = self
            .command()
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("fsync run starts");
        Daemon { child }
    }

    /// `fsync run --listen ADDR` run through `prefix` (e.g. `ip netns exec
    /// NS`), logs to HOME/../daemon.log.
    pub fn start_through(&self, mut prefix: Command, listen: &str) -> Daemon {
        let child = prefix
            .arg(fsync_bin())
            .arg("--home")
            .arg(&self.home)
            .args(["run", "--listen", listen])
            .stdout(std::process::Stdio::null())
            .stderr(self.log_file())
            .spawn()
            .expect("fsync run starts");
        Daemon { child }
    }

    /// `fsync run ARGS...` with stdout kept in HOME/../daemon.out.
    pub fn spawn(&self, args: &[&str]) -> Daemon {
        self.spawn_env(args, &[])
    }

    /// [`Node::spawn`] with environment variables.
    pub fn spawn_env(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = self.log_file();
        let out = std::fs::File::create(self.scratch.join("daemon.out")).expect("out");
        let child = self.command().envs(env.iter().copied()).args(args).stdout(out).stderr(log).spawn().expect("fsync starts");
        Daemon { child }
    }

    /// The daemon log, appended to by every start (a restarted node keeps
    /// the story of its earlier runs).
    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new().create(true).append(true).open(self.scratch.join("daemon.log")).expect("log")
    }

    /// What a spawned daemon printed on stdout.
    pub fn out(&self) -> String {
        std::fs::read_to_string(self.scratch.join("daemon.out")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.join("daemon.log")).unwrap_or_default()
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Waits until `f` holds (at most `secs`), else fails with `what`.
pub fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("timed out after {secs}s waiting for {what}");
}

pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Two initialised nodes sharing "docs" with each other.
pub struct Pair {
    pub a: Node,
    pub b: Node,
    pub pa: u16,
    pub pb: u16,
}

impl Pair {
    pub fn new(name: &str) -> Pair {
        Pair::with_b_as(name, None)
    }

    /// B's commands and daemon run as `uid` when given (see [`Node::new_as`]).
    pub fn with_b_as(name: &str, uid: Option<u32>) -> Pair {
        let a = Node::new(&format!("{name}-a"));
        let b = match uid {
            Some(u) => Node::new_as(&format!("{name}-b"), u),
            None => Node::new(&format!("{name}-b")),
        };
        let (pa, pb) = (free_port(), free_port());
        let a_id = a.ok(&["init"]).trim().to_owned();
        let b_id = b.ok(&["init"]).trim().to_owned();
        a.ok(&["folder", "add", "docs", a.scratch.join("docs").to_str().expect("utf-8")]);
        b.ok(&["folder", "add", "docs", b.scratch.join("docs").to_str().expect("utf-8")]);
        a.ok(&["peer", "add", &b_id, "--addr", &format!("127.0.0.1:{pb}"), "--folder", "docs"]);
        b.ok(&["peer", "add", &a_id, "--addr", &format!("127.0.0.1:{pa}"), "--folder", "docs"]);
        Pair { a, b, pa, pb }
    }
    pub fn da(&self, f: &str) -> PathBuf {
        self.a.scratch.join("docs").join(f)
    }
    pub fn db(&self, f: &str) -> PathBuf {
        self.b.scratch.join("docs").join(f)
    }
}

/// Every file tree in `root`: relative path -> content (links as "-> T",
/// directories as "<dir>", executables marked).
pub fn snapshot(root: &std::path::Path) -> Vec<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        // The daemon writes while we look: what vanishes meanwhile (its temp
        // files, replaced files) is skipped; the caller polls again anyway.
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let rel = e.path().strip_prefix(root).expect("inside").to_string_lossy().into_owned();
            if not_user_data(root, &dir, &e.file_name().to_string_lossy()) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_symlink() {
                let Ok(t) = std::fs::read_link(e.path()) else {
                    continue;
                };
                out.push((rel, format!("-> {}", t.display())));
            } else if meta.is_dir() {
                out.push((rel, "<dir>".into()));
                stack.push(e.path());
            } else {
                let exec = if meta.permissions().mode() & 0o100 != 0 { "x " } else { "" };
                let Ok(body) = std::fs::read(e.path()) else {
                    continue;
                };
                out.push((rel, format!("{exec}{}", String::from_utf8_lossy(&body))));
            }
        }
    }
    out.sort();
    out
}

/// fsync's own files in a folder, which no tree comparison counts: its temp
/// files, and the folder marker at the root.
pub fn not_user_data(root: &Path, dir: &Path, name: &str) -> bool {
    name.starts_with(".fsync-tmp-") || (dir == root && name == ".fsync-folder")
}

/// xorshift64*: seeded, so a failing run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len())])
    }
}
