#!/usr/bin/env python3
"""How fsync's costs grow with the folder (issue 20), in one run.

For each folder size in SIZES: two fsync nodes on 127.0.0.1; the tree
(SIZE small files over 100 directories) is written on node a before the
daemons start; then
- initial sync: from the start until node b holds every file, beside
  `rsync -a` of the same tree into an empty directory (same run);
- save to peer: LAT_N saves of one small file on a (through a temp file
  and a rename, as editors save), each until b holds it (polled every
  0.5 ms); median, p90, p99;
- idle RSS of both daemons, and per tracked file.

    bench/scale.py FSYNC_BIN [BASE_BIN]

A second binary (BASE_BIN, say a build of an older commit) runs the same
workloads right after, for a ratio in the same run. Knobs (environment):
SIZES (comma list, default 10,20000,100000), LAT_N (40).
Prints a table and writes bench/results/scale.json.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import read, rss_kib, save_results, summary, two_nodes

BINS = sys.argv[1:]
SIZES = [int(x) for x in os.environ.get("SIZES", "10,20000,100000").split(",")]
LAT_N = int(os.environ.get("LAT_N", "40"))
WORK = tempfile.mkdtemp(prefix="fsync-scale-", dir="/var/tmp")








def make_tree(root, n):
    for i in range(n):
        d = f"{root}/d{i % 100}"
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/f{i}.txt", "w") as f:
            f.write(f"file {i}\n")


def count(root):
    return sum(len(fs) for _, _, fs in os.walk(root))


def run_one(binary, n):
    base = f"{WORK}/{n}"
    shutil.rmtree(base, ignore_errors=True)
    homes, dirs, ports = two_nodes(binary, base)
    make_tree(dirs[0], n)
    t = time.monotonic()
    subprocess.run(["rsync", "-a", f"{dirs[0]}/", f"{base}/rsync/"], check=True)
    rsync_s = time.monotonic() - t
    # rsync's copy stays until the end: removed here, its freed inodes
    # made ext4's allocator skip recently deleted inodes while fsync wrote
    # (15% of the receiver's time in perf), a cost rsync did not pay.
    procs = []
    t = time.monotonic()
    for i in range(2):
        log = open(f"{base}/log{i}", "w")
        procs.append(subprocess.Popen([binary, "--home", homes[i], "run", "--listen", f"127.0.0.1:{ports[i]}"], stdout=log, stderr=log))
    try:
        initial = None
        while time.monotonic() - t < 1800:
            if count(dirs[1]) >= n:
                initial = time.monotonic() - t
                break
            time.sleep(0.05 if n < 5000 else 0.5)
        src, dst = f"{dirs[0]}/lat.txt", f"{dirs[1]}/lat.txt"
        with open(src, "w") as f:
            f.write("start\n")
        t0 = time.monotonic()
        while read(dst) != b"start\n" and time.monotonic() - t0 < 120:
            time.sleep(0.01)
        time.sleep(2)
        samples = []
        for i in range(LAT_N):
            body = f"edit {i}\n".encode()
            with open(src + ".tmp", "wb") as f:
                f.write(body)
            os.rename(src + ".tmp", src)
            t0 = time.monotonic()
            while read(dst) != body:
                if time.monotonic() - t0 > 30:
                    break
                time.sleep(0.0005)
            samples.append(None if read(dst) != body else (time.monotonic() - t0) * 1000)
            time.sleep(0.3)
        time.sleep(5)
        rss = [rss_kib(p.pid) for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
    shutil.rmtree(base, ignore_errors=True)
    return {"files": n, "initial_s": initial, "rsync_s": rsync_s, **summary(samples), "rss_kib": rss, "samples_ms": samples}


def label(b):
    """The checkout a binary was built in (its target/release/fsync)."""
    return os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(b))))) or b


def fmt(v, unit):
    return "failed" if v is None else f"{v:,.1f} {unit}"


def main():
    results = {}
    for b in BINS:
        results[b] = [run_one(b, n) for n in SIZES]
    print("| binary | files | save to peer: median | p90 | p99 | lost | initial sync | rsync -a | ratio | RSS a / b |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for b, rows in results.items():
        for r in rows:
            ratio = "" if not r["initial_s"] else f"{r['initial_s'] / r['rsync_s']:.1f}x"
            print(f"| {label(b)} | {r['files']:,} | {fmt(r['median_ms'], 'ms')} | "
                  f"{fmt(r['p90_ms'], 'ms')} | {fmt(r['p99_ms'], 'ms')} | {r['lost']} | {fmt(r['initial_s'], 's')} | "
                  f"{r['rsync_s']:.2f} s | {ratio} | {r['rss_kib'][0] // 1024} / {r['rss_kib'][1] // 1024} MiB |")
    save_results("scale", results)
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
