"""Helpers the benchmark scripts share."""

import json
import os
import socket
import statistics
import subprocess


def free_port():
    """A free UDP port on 127.0.0.1 (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read(p):
    """A file's bytes, or None when it cannot be read."""
    try:
        with open(p, "rb") as f:
            return f.read()
    except OSError:
        return None


def rss_kib(pid):
    """A process's resident memory, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def summary(samples):
    """Median, p90, p99 (ms) of the samples that are not None, and how many were lost."""
    ok = sorted(s for s in samples if s is not None)
    pct = lambda q: ok[min(len(ok) - 1, int(len(ok) * q))] if ok else None
    return {"median_ms": statistics.median(ok) if ok else None, "p90_ms": pct(0.9), "p99_ms": pct(0.99),
            "lost": len(samples) - len(ok), "n": len(samples)}


def save_results(name, results):
    """Writes bench/results/NAME.json."""
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    with open(f"{out}/{name}.json", "w") as f:
        json.dump(results, f, indent=1)


def cli(binary, home, *args):
    """An fsync command on a node's home; its output."""
    return subprocess.run([binary, "--home", home, *args], check=True, capture_output=True, text=True).stdout.strip()


def two_nodes(binary, base):
    """Two initialised nodes under `base` sharing folder "f" with each
    other: their homes, folders and (free) ports."""
    homes, dirs, ports = [f"{base}/ha", f"{base}/hb"], [f"{base}/a", f"{base}/b"], [free_port(), free_port()]
    ids = [cli(binary, h, "init") for h in homes]
    for i in range(2):
        cli(binary, homes[i], "folder", "add", "f", dirs[i])
        cli(binary, homes[i], "peer", "add", ids[1 - i], "--addr", f"127.0.0.1:{ports[1 - i]}", "--folder", "f")
    return homes, dirs, ports
