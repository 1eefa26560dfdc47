#!/usr/bin/env python3
"""The HTTP front end's latency and cost (issue 23), beside disk-to-disk
sync in the same run.

Two fsync nodes on 127.0.0.1 share one folder. Each sample appends one new
line to a text file (a save through a temp file and a rename, or a PUT at
the end of the text), and is timed until it is where it goes:
- disk to disk (the baseline): a save on a's disk, until b's disk has it;
- PUT to disk: a PUT to a's HTTP, until b's disk has it;
- disk to subscriber: a save on b's disk, until a client subscribed on a's
  HTTP has the update;
- fan-out: FANOUT clients subscribed on a to one file; a PUT to a, until
  each of them has it (every client's time is a sample);
- idle subscriptions: a's RSS before and after IDLE subscriptions.

    bench/http_bench.py FSYNC_BIN

Knobs (environment): N (samples, 50), FANOUT (100), IDLE (1000). Prints a
table and writes bench/results/http.json.
"""

import http.client
import json
import os
import secrets
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from common import cli, read as read_or_none, rss_kib, save_results, summary, two_nodes

BIN = sys.argv[1]
N = int(os.environ.get("N", "50"))
FANOUT = int(os.environ.get("FANOUT", "100"))
IDLE = int(os.environ.get("IDLE", "1000"))
WORK = tempfile.mkdtemp(prefix="fsync-http-", dir="/var/tmp")








def read(p):
    return read_or_none(p) or b""


def save_line(path, line):
    """Appends a line as editors save: the whole file to a temp, renamed."""
    body = read(path) + line
    with open(path + ".tmp~", "wb") as f:
        f.write(body)
    os.rename(path + ".tmp~", path)


def wait(cond, secs=30):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > secs:
            return None
        time.sleep(0.0005)
    return (time.monotonic() - t0) * 1000


class Sub:
    """One subscription on a raw socket: what has arrived so far."""

    def __init__(self, addr, token, path):
        host, port = addr.split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n"
            f"Subscribe: true\r\nMerge-Type: simpleton\r\n\r\n".encode())
        self.buf = b""
        self.sock.setblocking(False)

    def pump(self):
        try:
            while True:
                b = self.sock.recv(65536)
                if not b:
                    return
                self.buf += b
        except BlockingIOError:
            pass


def put_line(conn, token, path, line, length):
    conn.request("PUT", path, body=line, headers={
        "Authorization": f"Bearer {token}", "Content-Range": f"text [{length}:{length}]"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200, r.status


def main():
    homes, dirs, ports = two_nodes(BIN, WORK)
    procs = [subprocess.Popen([BIN, "--home", homes[i], "run", "--listen", f"127.0.0.1:{ports[i]}"],
                              stdout=subprocess.DEVNULL, stderr=open(f"{WORK}/log{i}", "w")) for i in range(2)]
    results = {}
    try:
        addr = None
        while addr is None:
            time.sleep(0.2)
            try:
                addr = json.loads(cli(BIN, homes[0], "status", "--json")).get("http")
            except subprocess.CalledProcessError:
                pass
        token = read(f"{homes[0]}/http.token").decode().strip()
        for name in ["disk.txt", "put.txt", "sub.txt", "fan.txt"]:
            with open(f"{dirs[0]}/{name}", "w") as f:
                f.write("start\n")
        for name in ["disk.txt", "put.txt", "sub.txt", "fan.txt"]:
            wait(lambda: read(f"{dirs[1]}/{name}") == b"start\n", 60)
        time.sleep(1)
        mark = lambda i: f"sample {i} {secrets.token_hex(6)}\n".encode()

        # Disk to disk.
        samples = []
        for i in range(N):
            line = mark(i)
            save_line(f"{dirs[0]}/disk.txt", line)
            samples.append(wait(lambda: line in read(f"{dirs[1]}/disk.txt")))
            time.sleep(0.1)
        results["disk to disk"] = summary(samples)

        # PUT to a peer's disk.
        conn = http.client.HTTPConnection(addr)
        samples = []
        length = len("start\n")
        for i in range(N):
            line = mark(i)
            t0 = time.monotonic()
            put_line(conn, token, "/f/put.txt", line, length)
            length += len(line.decode())
            samples.append(wait(lambda: line in read(f"{dirs[1]}/put.txt")) and (time.monotonic() - t0) * 1000)
            time.sleep(0.1)
        results["PUT to a peer's disk"] = summary(samples)

        # A save on the peer's disk to a subscriber here.
        sub = Sub(addr, token, "/f/sub.txt")
        wait(lambda: sub.pump() or b"start" in sub.buf, 10)
        samples = []
        for i in range(N):
            line = mark(i)
            save_line(f"{dirs[1]}/sub.txt", line)
            samples.append(wait(lambda: sub.pump() or line in sub.buf))
            time.sleep(0.1)
        results["disk save to a subscriber"] = summary(samples)

        # Fan-out.
        subs = [Sub(addr, token, "/f/fan.txt") for _ in range(FANOUT)]
        wait(lambda: all(s.pump() or b"start" in s.buf for s in subs), 30)
        sel = selectors.DefaultSelector()
        for s in subs:
            sel.register(s.sock, selectors.EVENT_READ, s)
        samples = []
        length = len("start\n")
        for i in range(max(5, N // 5)):
            line = mark(i)
            t0 = time.monotonic()
            put_line(conn, token, "/f/fan.txt", line, length)
            length += len(line.decode())
            waiting = set(subs)
            while waiting and time.monotonic() - t0 < 30:
                for key, _ in sel.select(timeout=0.1):
                    s = key.data
                    s.pump()
                    if s in waiting and line in s.buf:
                        waiting.discard(s)
                        samples.append((time.monotonic() - t0) * 1000)
            samples.extend([None] * len(waiting))
            time.sleep(0.1)
        results[f"PUT to {FANOUT} subscribers"] = summary(samples)
        for s in subs:
            s.sock.close()
        sub.sock.close()
        time.sleep(2)

        # Idle subscriptions.
        before = rss_kib(procs[0].pid)
        idle = [Sub(addr, token, "/f/fan.txt") for _ in range(IDLE)]
        wait(lambda: all(s.pump() or b"start" in s.buf for s in idle), 60)
        time.sleep(2)
        after = rss_kib(procs[0].pid)
        results[f"{IDLE} idle subscriptions"] = {"rss_before_kib": before, "rss_after_kib": after,
                                                  "cost_mib": (after - before) / 1024, "n": IDLE}
        for s in idle:
            s.sock.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
    base = results["disk to disk"]["median_ms"]
    print("| workload | median | p90 | p99 | lost | median / disk to disk |")
    print("|---|---|---|---|---|---|")
    for k, r in results.items():
        if "median_ms" in r:
            f = lambda v: "-" if v is None else f"{v:.1f} ms"
            ratio = f"{r['median_ms'] / base:.2f}x" if r["median_ms"] and base else "-"
            print(f"| {k} | {f(r['median_ms'])} | {f(r['p90_ms'])} | {f(r['p99_ms'])} | {r['lost']} of {r['n']} | {ratio} |")
        else:
            print(f"| {k} | RSS {r['rss_before_kib'] // 1024} -> {r['rss_after_kib'] // 1024} MiB: "
                  f"{r['cost_mib']:.1f} MiB | | | | |")
    save_results("http", results)
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
