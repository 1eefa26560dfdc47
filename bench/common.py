"""Helpers the benchmark scripts share."""

import socket


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
