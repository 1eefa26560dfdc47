#!/usr/bin/env bash
# The FUSE mount against the disk underneath, in one run: sequential write
# (plain, and with fsync) and read of a big file, and creating, stat-ing and
# reading 10,000 small files. Needs root and /dev/fuse.
#
#   bench/fuse.sh            # 1 GiB file, 3 runs
#   SIZE_MB=256 RUNS=5 bench/fuse.sh
#
# Writes bench/results/fuse.md and bench/results/fuse.json.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
cargo build --release -q -p cli
BIN=$PWD/target/release/fsync
WORK=$(mktemp -d /var/tmp/fsync-fuse-bench.XXXXXX)   # on the disk, not tmpfs
SRC=$(mktemp -d /dev/shm/fsync-fuse-src.XXXXXX)       # random input, in memory
MNT=$WORK/mnt
PID=
cleanup() {
    [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    mountpoint -q "$MNT" 2>/dev/null && umount -l "$MNT" || true
    rm -rf "$WORK" "$SRC"
}
trap cleanup EXIT

for r in $(seq 0 $((RUNS - 1))); do
    head -c $((SIZE_MB << 20)) /dev/urandom > "$SRC/rand$r"
done
mkdir -p "$WORK/native" "$MNT"
"$BIN" --home "$WORK/home" init > /dev/null
"$BIN" --home "$WORK/home" folder add bench "$WORK/folder"
RUST_LOG=warn "$BIN" --home "$WORK/home" mount bench "$MNT" --listen 127.0.0.1:0 2> "$WORK/daemon.log" &
PID=$!
for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
mountpoint -q "$MNT" || { cat "$WORK/daemon.log"; exit 1; }

native=$(python3 bench/fuse_workloads.py "$WORK/native" "$SRC" "$RUNS")
mount=$(python3 bench/fuse_workloads.py "$MNT" "$SRC" "$RUNS")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")

mkdir -p bench/results
python3 - "$native" "$mount" "$SIZE_MB" "$RUNS" "$rss" <<'PY'
import json, statistics, sys
native, mount = json.loads(sys.argv[1]), json.loads(sys.argv[2])
size_mb, runs, rss_kb = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
med = lambda xs: statistics.median(xs)
rows = [
    ("write %d MiB (close)" % size_mb, "write", True),
    ("write %d MiB + fsync" % size_mb, "write_fsync", True),
    ("read %d MiB (cold)" % size_mb, "read", True),
    ("create 10,000 small files", "create", False),
    ("stat 10,000 small files", "stat", False),
    ("read 10,000 small files", "read_small", False),
]
lines = [
    "# FUSE mount vs the disk underneath (`bench/fuse.sh`)",
    "",
    f"Medians of {runs} runs in one script run; each run writes fresh random data. "
    "The mount's daemon peaked at %.0f MiB RSS." % (rss_kb / 1024),
    "",
    "| workload | disk | mount | mount / disk |",
    "|---|---|---|---|",
]
for name, key, throughput in rows:
    n, m = med(native[key]), med(mount[key])
    if throughput:
        nt, mt = size_mb / n, size_mb / m
        lines.append(f"| {name} | {nt:.0f} MiB/s | {mt:.0f} MiB/s | {mt / nt:.2f}x throughput |")
    else:
        lines.append(f"| {name} | {n * 1000:.0f} ms | {m * 1000:.0f} ms | {m / n:.1f}x time |")
open("bench/results/fuse.md", "w").write("\n".join(lines) + "\n")
json.dump({"disk": native, "mount": mount, "size_mb": size_mb, "runs": runs, "daemon_peak_rss_kb": rss_kb},
          open("bench/results/fuse.json", "w"), indent=1)
print("\n".join(lines))
PY
