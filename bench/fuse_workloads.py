#!/usr/bin/env python3
"""Workloads of bench/fuse.sh, run against one directory (a mount or a plain
directory on the disk underneath). Prints one JSON object of timings (s)."""
import json, os, subprocess, sys, time

target, src_dir, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
MB = 1 << 20

def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass

def write_big(src, dst, fsync):
    t = time.perf_counter()
    with open(src, "rb") as s, open(dst, "wb") as d:
        while True:
            b = s.read(MB)
            if not b:
                break
            d.write(b)
        d.flush()
        if fsync:
            os.fsync(d.fileno())
    return time.perf_counter() - t

def read_big(path):
    drop_caches()
    t = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(MB)
            if not b:
                break
            n += len(b)
    return time.perf_counter() - t, n

def small_files(base, n=10000):
    os.makedirs(base)
    for d in range(20):
        os.mkdir(os.path.join(base, f"d{d}"))
    payload = [os.urandom(512).hex().encode()[: 1024 + (i * 37) % 3072] for i in range(64)]
    paths = [os.path.join(base, f"d{i % 20}", f"f{i}.txt") for i in range(n)]
    t = time.perf_counter()
    for i, p in enumerate(paths):
        with open(p, "wb") as f:
            f.write(payload[i % 64])
    create = time.perf_counter() - t
    drop_caches()
    t = time.perf_counter()
    for p in paths:
        os.stat(p)
    stat = time.perf_counter() - t
    t = time.perf_counter()
    total = 0
    for p in paths:
        with open(p, "rb") as f:
            total += len(f.read())
    read = time.perf_counter() - t
    return create, stat, read

out = {"write": [], "write_fsync": [], "read": [], "create": [], "stat": [], "read_small": []}
size = 0
for r in range(runs):
    src = os.path.join(src_dir, f"rand{r}")
    size = os.path.getsize(src)
    out["write"].append(write_big(src, os.path.join(target, f"big{r}"), False))
    out["write_fsync"].append(write_big(src, os.path.join(target, f"bigf{r}"), True))
    t, n = read_big(os.path.join(target, f"big{r}"))
    assert n == size, (n, size)
    out["read"].append(t)
    c, s, rd = small_files(os.path.join(target, f"small{r}"))
    out["create"].append(c)
    out["stat"].append(s)
    out["read_small"].append(rd)
out["bytes"] = size
print(json.dumps(out))
