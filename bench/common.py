"""Helpers the benchmark scripts share."""

import json
import os
import socket
import statistics


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
