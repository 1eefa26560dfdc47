#!/usr/bin/env python3
"""fsync against Syncthing and rsync on one machine, in one run (bench/run).

For each system: two nodes on 127.0.0.1 syncing two directories, the
workloads of issue 8, then teardown. Every wait has a timeout; a failed
sample is recorded as failed (None), never dropped. Bytes on the wire are
counted by nftables on the nodes' ports (the same meter for every system).

    bench_sync.py FSYNC_BIN RESULTS_DIR

Knobs (environment): SYSTEMS (comma list of fsync, syncthing-1s,
syncthing, rsync), LAT_N (edits each way, 20), REPS (3), BIG_MB (200),
TRACKED (100000; 0 skips the many-files memory run).
"""

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET

from common import read

FSYNC, RESULTS = sys.argv[1], sys.argv[2]
SYSTEMS = os.environ.get("SYSTEMS", "fsync,syncthing-1s,syncthing,rsync").split(",")
LAT_N = int(os.environ.get("LAT_N", "20"))
REPS = int(os.environ.get("REPS", "3"))
BIG_MB = int(os.environ.get("BIG_MB", "200"))
TRACKED = int(os.environ.get("TRACKED", "100000"))
WORK = tempfile.mkdtemp(prefix="fsync-sync-bench-", dir="/var/tmp")
rng = random.Random(8)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, timeout, check, every=0.001):
    """Seconds until check() holds, or None after timeout."""
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if check():
            return time.monotonic() - t
        time.sleep(every)
    log(f"  timeout: {what}")
    return None


def rss_tree(pid):
    """(VmRSS, VmHWM) in KiB of a process and its children."""
    pids = [pid]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(p))
            except OSError:
                pass
    rss = hwm = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            pass
    return rss, hwm


class Wire:
    """Bytes on the wire between the two nodes' ports, counted by nftables."""

    def __init__(self, ports):
        self.ports = ",".join(str(p) for p in ports)
        subprocess.run(["nft", "delete", "table", "inet", "fsyncbench"], capture_output=True)
        rules = f"""table inet fsyncbench {{
            chain out {{
                type filter hook output priority 0; policy accept;
                meta l4proto {{ tcp, udp }} th dport {{ {self.ports} }} counter
                meta l4proto {{ tcp, udp }} th sport {{ {self.ports} }} th dport != {{ {self.ports} }} counter
            }}
        }}"""
        subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True)

    def bytes(self):
        out = subprocess.run(["nft", "-j", "list", "table", "inet", "fsyncbench"], capture_output=True, check=True).stdout
        total = 0
        for item in json.loads(out)["nftables"]:
            for e in item.get("rule", {}).get("expr", []):
                if "counter" in e:
                    total += e["counter"]["bytes"]
        return total

    def close(self):
        subprocess.run(["nft", "delete", "table", "inet", "fsyncbench"], capture_output=True)


class Pair:
    """Two daemons in `self.procs`."""

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


class Fsync(Pair):
    name = "fsync"

    def __init__(self):
        base = f"{WORK}/fsync"
        self.homes = [f"{base}/a/home", f"{base}/b/home"]
        self.a, self.b = f"{base}/a/dir", f"{base}/b/dir"
        self.ports = [free_port(), free_port()]
        ids = []
        for h, d in zip(self.homes, [self.a, self.b]):
            ids.append(self.cli(h, "init").strip())
            self.cli(h, "folder", "add", "bench", d)
        for i, h in enumerate(self.homes):
            self.cli(h, "peer", "add", ids[1 - i], "--addr", f"127.0.0.1:{self.ports[1 - i]}", "--folder", "bench")
        self.procs = []
        for h, p in zip(self.homes, self.ports):
            logf = open(f"{h}/../daemon.log", "w")
            self.procs.append(subprocess.Popen([FSYNC, "--home", h, "run", "--listen", f"127.0.0.1:{p}"],
                                               stdout=subprocess.DEVNULL, stderr=logf, env=dict(os.environ, RUST_LOG=os.environ.get("FSYNC_LOG", "warn"))))
        ok = wait("fsync peers connected", 60, lambda: all(self.connected(h) for h in self.homes), every=0.1)
        if ok is None:
            raise RuntimeError("fsync nodes did not connect")

    def cli(self, home, *args):
        return subprocess.run([FSYNC, "--home", home, *args], capture_output=True, check=True, text=True).stdout

    def connected(self, home):
        try:
            st = json.loads(self.cli(home, "status", "--json"))
            return any(p.get("connected") for p in st.get("peers", []))
        except (subprocess.CalledProcessError, json.JSONDecodeError):
            return False


class Syncthing(Pair):
    """Two Syncthing instances; `delay` = fsWatcherDelayS (None: default)."""

    def __init__(self, delay):
        self.delay = delay
        self.name = "syncthing" if delay is None else f"syncthing-{delay}s"
        base = f"{WORK}/{self.name}"
        self.homes = [f"{base}/a/home", f"{base}/b/home"]
        self.a, self.b = f"{base}/a/dir", f"{base}/b/dir"
        self.ports = [free_port(), free_port()]
        self.gui = [free_port(), free_port()]
        self.key = "fsyncbenchkey"
        ids = []
        for h in self.homes:
            out = subprocess.run(["syncthing", "generate", f"--home={h}", "--no-default-folder"],
                                 capture_output=True, text=True, check=True)
            ids.append(next(l.split("Device ID:")[1].strip() for l in (out.stdout + out.stderr).splitlines() if "Device ID:" in l))
        for i, (h, d) in enumerate(zip(self.homes, [self.a, self.b])):
            os.makedirs(f"{d}/.stfolder", exist_ok=True)
            self.configure(h, d, ids, i)
        self.ids = ids
        self.procs = []
        env = dict(os.environ, STNOUPGRADE="1", STNODEFAULTFOLDER="1")
        for h in self.homes:
            self.procs.append(subprocess.Popen(
                ["syncthing", "serve", f"--home={h}", "--no-browser", "--no-restart", "--no-upgrade",
                 f"--logfile={h}/../syncthing.log"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        ok = wait("syncthing peers connected", 120, lambda: all(self.connected(i) for i in range(2)), every=0.2)
        if ok is None:
            raise RuntimeError("syncthing nodes did not connect")

    def configure(self, home, path, ids, i):
        cfg = f"{home}/config.xml"
        tree = ET.parse(cfg)
        root = tree.getroot()
        for f in root.findall("folder"):
            root.remove(f)
        for d in root.findall("device"):
            root.remove(d)
        folder = ET.SubElement(root, "folder", id="bench", label="bench", path=path, type="sendreceive",
                               rescanIntervalS="3600", fsWatcherEnabled="true",
                               fsWatcherDelayS=str(self.delay if self.delay is not None else 10))
        for j, dev in enumerate(ids):
            ET.SubElement(folder, "device", id=dev)
            d = ET.Element("device", id=dev, name=f"node{j}", compression="metadata")
            ET.SubElement(d, "address").text = f"tcp://127.0.0.1:{self.ports[j]}" if j != i else "dynamic"
            root.insert(0, d)
        gui = root.find("gui")
        gui.find("address").text = f"127.0.0.1:{self.gui[i]}"
        gui.find("apikey").text = self.key
        opts = root.find("options")
        settings = {
            "listenAddress": f"tcp://127.0.0.1:{self.ports[i]}",
            "globalAnnounceEnabled": "false", "localAnnounceEnabled": "false", "relaysEnabled": "false",
            "natEnabled": "false", "urAccepted": "-1", "urSeen": "3", "autoUpgradeIntervalH": "0",
            "crashReportingEnabled": "false", "startBrowser": "false",
        }
        for k, v in settings.items():
            for e in opts.findall(k):
                opts.remove(e)
            ET.SubElement(opts, k).text = v
        tree.write(cfg)

    def rest(self, i, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.gui[i]}{path}", headers={"X-API-Key": self.key})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def connected(self, i):
        try:
            c = self.rest(i, "/rest/system/connections")["connections"]
            return c.get(self.ids[1 - i], {}).get("connected", False)
        except OSError:
            return False


class Rsync:
    """A one-shot `rsync -a A/ B/` after each change: the floor for copying."""
    name = "rsync"

    def __init__(self):
        self.a, self.b = f"{WORK}/rsync/a", f"{WORK}/rsync/b"
        os.makedirs(self.a)
        os.makedirs(self.b)

    def run(self):
        """Seconds for one rsync, and the bytes it says it sent."""
        t = time.monotonic()
        out = subprocess.run(["rsync", "-a", "--stats", f"{self.a}/", f"{self.b}/"], capture_output=True, text=True, check=True)
        dt = time.monotonic() - t
        sent = next((int(l.split(":")[1].split()[0].replace(",", "")) for l in out.stdout.splitlines()
                     if l.startswith("Total bytes sent")), None)
        return dt, sent


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def summary(samples):
    ok = sorted(s for s in samples if s is not None)
    out = {"n": len(samples), "failed": len(samples) - len(ok)}
    if ok:
        out.update(median=statistics.median(ok), min=ok[0], max=ok[-1],
                   p90=ok[min(len(ok) - 1, int(round(0.9 * (len(ok) - 1))))])
    return out


# ---------------------------------------------------------------- workloads

def latency(s):
    """1: a small edit on one side until the other side's file matches."""
    out = {}
    for src, dst, way in [(s.a, s.b, "a_to_b"), (s.b, s.a, "b_to_a")]:
        name = f"lat-{way}.txt"
        write(f"{src}/{name}", b"start\n")
        wait("latency base", 120, lambda: read(f"{dst}/{name}") == b"start\n", every=0.01)
        time.sleep(0.5)
        samples = []
        for i in range(LAT_N):
            body = f"edit {i} {rng.random()}\n".encode()
            t = time.monotonic()
            write(f"{src}/{name}", body)
            ok = wait("latency sample", 60, lambda: read(f"{dst}/{name}") == body)
            samples.append(None if ok is None else time.monotonic() - t)
            time.sleep(0.2)
        out[way] = samples
    all_samples = out["a_to_b"] + out["b_to_a"]
    return {"samples_s": out, **summary(all_samples)}


def text_line(s):
    """2: one line changed in the middle of a 1 MB text file."""
    lines = [f"line {i:06d} " + "".join(rng.choice("abcdefghij klmnop") for _ in range(50)) + "\n" for i in range(16_000)]
    body = "".join(lines).encode()
    write(f"{s.a}/big.txt", body)
    if isinstance(s, Rsync):
        s.run()
    else:
        wait("1 MB text first copy", 300, lambda: read(f"{s.b}/big.txt") == body, every=0.05)
        time.sleep(1)
    samples = []
    for r in range(REPS + 2):
        lines[8000 + r] = f"changed in round {r} {rng.random()}\n"
        body = "".join(lines).encode()
        t = time.monotonic()
        write(f"{s.a}/big.txt", body)
        if isinstance(s, Rsync):
            samples.append(s.run()[0])
        else:
            ok = wait("1 MB text line change", 120, lambda: read(f"{s.b}/big.txt") == body, every=0.005)
            samples.append(None if ok is None else time.monotonic() - t)
        time.sleep(0.5)
    return {"samples_s": samples, **summary(samples)}


def tree(s, rep):
    """3: 2,000 files of 1 to 8 KB over 20 directories, written at once."""
    files = {f"tree{rep}/d{i % 20}/f{i}.dat": os.urandom(rng.randint(1024, 8192)) for i in range(2000)}
    t = time.monotonic()
    for p, b in files.items():
        write(f"{s.a}/{p}", b)
    if isinstance(s, Rsync):
        s.run()
        return time.monotonic() - t

    def done():
        for p, b in files.items():
            try:
                if os.path.getsize(f"{s.b}/{p}") != len(b):
                    return False
            except OSError:
                return False
        return all(read(f"{s.b}/{p}") == b for p, b in files.items())

    ok = wait("2,000 files", 600, done, every=0.02)
    return None if ok is None else time.monotonic() - t


def region(path, off, n):
    try:
        with open(path, "rb") as f:
            f.seek(off)
            return f.read(n)
    except OSError:
        return None


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def big_binary(s, wire):
    """4: a 200 MB random file, then a 4 KB change in its middle."""
    size = BIG_MB << 20
    src, dst = f"{s.a}/big.bin", f"{s.b}/big.bin"
    h = hashlib.sha256()
    with open(src, "wb") as f:
        for _ in range(BIG_MB):
            block = os.urandom(1 << 20)
            h.update(block)
            f.write(block)
    want = h.hexdigest()
    # Timed from the moment the file is complete on A.
    t = time.monotonic()
    if isinstance(s, Rsync):
        first = s.run()[0]
    else:
        ok = wait("200 MB file", 900, lambda: os.path.exists(dst) and os.path.getsize(dst) == size and sha(dst) == want, every=0.2)
        first = None if ok is None else time.monotonic() - t
        time.sleep(2)
    samples, wire_bytes = [], []
    for r in range(REPS):
        off = size // 2 + r * 8192
        patch = os.urandom(4096)
        before = wire.bytes() if wire else 0
        t = time.monotonic()
        with open(src, "r+b") as f:
            f.seek(off)
            f.write(patch)
        if isinstance(s, Rsync):
            dt, sent = s.run()
            samples.append(dt)
            wire_bytes.append(sent)
            continue
        ok = wait("4 KB change", 300, lambda: region(dst, off, 4096) == patch and os.path.getsize(dst) == size, every=0.002)
        samples.append(None if ok is None else time.monotonic() - t)
        time.sleep(2)  # let acknowledgements and index updates finish
        wire_bytes.append(wire.bytes() - before)
    identical = sha(src) == sha(dst)
    return {"first_copy_s": first, "change_samples_s": samples, "change": summary(samples),
            "wire_bytes": wire_bytes, "wire_bytes_median": statistics.median(wire_bytes) if wire_bytes else None,
            "identical_after": identical}


def concurrent(s, rep):
    """6: different writes to one text file on both nodes within a few ms."""
    name = f"conc{rep}.txt"
    base = "".join(f"line {i}\n" for i in range(1, 11))
    write(f"{s.a}/{name}", base.encode())
    if wait("concurrent base", 120, lambda: read(f"{s.b}/{name}") == base.encode(), every=0.01) is None:
        return {"failed": "the base never arrived"}
    time.sleep(1.5)
    la, lb = base.splitlines(keepends=True), base.splitlines(keepends=True)
    la[1] = f"edited on A {rep}\n"
    lb[7] = f"edited on B {rep}\n"
    write(f"{s.a}/{name}", "".join(la).encode())
    write(f"{s.b}/{name}", "".join(lb).encode())

    def stable():
        return read(f"{s.a}/{name}") == read(f"{s.b}/{name}")

    settle_until = time.monotonic() + 120
    while time.monotonic() < settle_until:
        if stable():
            time.sleep(3 if s.name == "fsync" else 12)
            if stable():
                break
        time.sleep(0.1)
    fa, fb = read(f"{s.a}/{name}") or b"", read(f"{s.b}/{name}") or b""
    conflicts = sorted({f for d in (s.a, s.b) for f in os.listdir(d) if f.startswith(f"conc{rep}") and "conflict" in f})
    conflict_text = b"".join(read(f"{d}/{f}") or b"" for d in (s.a, s.b) for f in os.listdir(d) if f in conflicts)
    a_kept = f"edited on A {rep}".encode() in fa
    b_kept = f"edited on B {rep}".encode() in fa
    lost = [w for w in "AB" if f"edited on {w} {rep}".encode() not in fa and f"edited on {w} {rep}".encode() not in conflict_text]
    return {"identical": fa == fb, "a_ends_with": fa.decode(errors="replace"), "b_ends_with": fb.decode(errors="replace"),
            "both_edits_in_file": a_kept and b_kept, "conflict_files": conflicts, "edits_lost": lost}


def many_files(s):
    """5b: idle RSS with TRACKED more small files tracked; per file: the
    growth over the idle RSS just before, divided by the file count."""
    time.sleep(5)
    baseline_kib = [rss_tree(p)[0] for p in s.pids()]
    t = time.monotonic()
    for i in range(TRACKED):
        write(f"{s.a}/many/d{i % 100}/f{i}.txt", f"{i}\n".encode())

    def count():
        n = 0
        for _, _, fs in os.walk(f"{s.b}/many"):
            n += len(fs)
        return n >= TRACKED

    ok = wait(f"{TRACKED} files", 1800, count, every=1)
    took = None if ok is None else time.monotonic() - t
    time.sleep(10)
    rss = [rss_tree(p) for p in s.pids()]
    per_file = [(r[0] - b) * 1024 / TRACKED for r, b in zip(rss, baseline_kib)]
    return {"files": TRACKED, "sync_s": took, "rss_before_kib": baseline_kib, "rss_kib": [r[0] for r in rss], "peak_kib": [r[1] for r in rss],
            "bytes_per_file": per_file}


def bench_system(name):
    log(f"== {name}")
    res = {}
    if name == "rsync":
        s = Rsync()
        res["text_line"] = text_line(s)
        res["tree"] = [tree(s, r) for r in range(REPS)]
        res["tree_summary"] = summary(res["tree"])
        res["big_binary"] = big_binary(s, None)
        shutil.rmtree(f"{WORK}/rsync", ignore_errors=True)
        return res
    s = Fsync() if name == "fsync" else Syncthing(1 if name == "syncthing-1s" else None)
    wire = Wire(s.ports)
    try:
        time.sleep(3)
        res["rss_start_kib"] = [rss_tree(p)[0] for p in s.pids()]
        log("  latency")
        res["latency"] = latency(s)
        log("  1 MB text")
        res["text_line"] = text_line(s)
        log("  2,000 files")
        res["tree"] = [tree(s, r) for r in range(REPS)]
        res["tree_summary"] = summary(res["tree"])
        time.sleep(5)
        res["rss_after_tree_kib"] = [rss_tree(p) for p in s.pids()]
        log("  200 MB file")
        res["big_binary"] = big_binary(s, wire)
        log("  concurrent writes")
        res["concurrent"] = [concurrent(s, r) for r in range(REPS)]
        if TRACKED and name != "syncthing":
            log(f"  {TRACKED} files")
            res["many_files"] = many_files(s)
    finally:
        wire.close()
        s.stop()
        shutil.rmtree(f"{WORK}/{name}", ignore_errors=True)
    return res


# ------------------------------------------------------------------ report

def ms(v):
    return "failed" if v is None else f"{v * 1000:,.0f} ms" if v < 10 else f"{v:,.1f} s"


def ratio(a, b):
    return "" if not a or not b else f"{a / b:.2f}"


def report(results, meta):
    systems = [s for s in SYSTEMS if s in results]
    others = [s for s in systems if s != "fsync"]

    def cell(s, f):
        try:
            return f(results[s])
        except (KeyError, TypeError, IndexError):
            return None

    rows = [
        (f"1. latency, median ({2 * LAT_N} small edits)", lambda r: r["latency"].get("median")),
        ("1. latency, p90", lambda r: r["latency"].get("p90")),
        ("2. one line of a 1 MB text file, median", lambda r: r["text_line"].get("median")),
        ("3. 2,000 files (1-8 KB, 20 dirs), median", lambda r: r["tree_summary"].get("median")),
        (f"4. {BIG_MB} MB random file, first copy", lambda r: r["big_binary"]["first_copy_s"]),
        ("4. 4 KB change in its middle, median", lambda r: r["big_binary"]["change"].get("median")),
    ]
    head = "| workload | " + " | ".join(systems) + " | " + " | ".join(f"fsync/{o}" for o in others) + " |"
    lines = [head, "|" + "---|" * (1 + len(systems) + len(others))]
    for label, f in rows:
        vals = {s: cell(s, f) for s in systems}
        shown = [ms(vals[s]) if (s != "rsync" or label[0] in "234") else "n/a" for s in systems]
        rat = [ratio(vals.get("fsync"), vals[o]) if (o != "rsync" or label[0] in "234") else "" for o in others]
        lines.append(f"| {label} | " + " | ".join(shown) + " | " + " | ".join(rat) + " |")

    def wire(r):
        return r["big_binary"]["wire_bytes_median"]

    vals = {s: cell(s, wire) for s in systems}
    lines.append("| 4. bytes on the wire for the 4 KB change, median | " +
                 " | ".join("failed" if vals[s] is None else f"{vals[s] / 1024:,.0f} KiB" for s in systems) + " | " +
                 " | ".join(ratio(vals.get("fsync"), vals[o]) for o in others) + " |")

    def mib(kib):
        return f"{kib / 1024:,.0f} MiB"

    lines.append("| 5. RSS idle after workload 3 (A / B) | " + " | ".join(
        "n/a" if s == "rsync" else " / ".join(mib(x[0]) for x in results[s]["rss_after_tree_kib"]) for s in systems) + " |" + " |" * len(others))
    lines.append("| 5. peak RSS after workload 3 (A / B) | " + " | ".join(
        "n/a" if s == "rsync" else " / ".join(mib(x[1]) for x in results[s]["rss_after_tree_kib"]) for s in systems) + " |" + " |" * len(others))
    lines.append(f"| 5. {TRACKED:,} files tracked: idle RSS (A / B), bytes per file | " + " | ".join(
        "n/a" if "many_files" not in results.get(s, {}) else
        " / ".join(mib(x) for x in results[s]["many_files"]["rss_kib"]) + ", " +
        " / ".join(f"{b:,.0f} B" for b in results[s]["many_files"]["bytes_per_file"]) for s in systems) + " |" + " |" * len(others))

    def conc(r):
        cs = r["concurrent"]
        same = sum(1 for c in cs if c.get("identical"))
        both = sum(1 for c in cs if c.get("both_edits_in_file"))
        conf = sum(len(c.get("conflict_files", [])) for c in cs)
        lost = sum(len(c.get("edits_lost", [])) for c in cs)
        return f"{same}/{len(cs)} identical, {both}/{len(cs)} with both edits, {conf} conflict files, {lost} edits lost"

    lines.append("| 6. concurrent writes to one text file | " + " | ".join(
        "n/a" if s == "rsync" else conc(results[s]) for s in systems) + " |" + " |" * len(others))
    md = [f"# fsync vs Syncthing vs rsync: `bench/run`", "",
          f"{meta['date']}, this machine ({os.cpu_count()} cores), one run, every system on 127.0.0.1. "
          f"fsync {meta['fsync']}, {meta['syncthing']}, {meta['rsync']}. "
          f"Latency: {LAT_N} edits each way; other workloads: {REPS} repetitions (the 1 MB text: {REPS + 2}). "
          "Ratios are fsync / other (below 1 = fsync faster or smaller). Every sample is in `sync.json`.", ""]
    md += lines
    return "\n".join(md) + "\n"


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        return "unknown"


def main():
    meta = {"date": time.strftime("%Y-%m-%d"), "fsync": version([FSYNC, "--version"]),
            "syncthing": version(["syncthing", "--version"]), "rsync": version(["rsync", "--version"]),
            "lat_n": LAT_N, "reps": REPS, "big_mb": BIG_MB, "tracked": TRACKED}
    results = {}
    try:
        for name in SYSTEMS:
            try:
                results[name] = bench_system(name)
            except Exception as e:  # a failed system is reported, not dropped
                log(f"  {name} failed: {e!r}")
                results[name] = {"failed": repr(e)}
            with open(f"{RESULTS}/sync.json", "w") as f:
                json.dump({"meta": meta, "results": results}, f, indent=1)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    md = report(results, meta)
    with open(f"{RESULTS}/sync.md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
