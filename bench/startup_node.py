"""Times `fsync run` from exec until it logs "fsync running" (see startup.sh)."""
import os, shutil, signal, statistics, subprocess, sys, tempfile, time

BIN, FILES, RUNS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
TIMEOUT = 600


def start(home, log):
    env = dict(os.environ, RUST_LOG="info")
    return subprocess.Popen([BIN, "--home", home, "run", "--listen", "127.0.0.1:0"],
                            stderr=open(log, "w"), stdout=subprocess.DEVNULL, env=env)


def wait_line(p, log, line, since):
    while time.monotonic() - since < TIMEOUT:
        with open(log) as f:
            if line in f.read():
                return time.monotonic() - since
        if p.poll() is not None:
            sys.exit(f"the daemon exited: {open(log).read()}")
        time.sleep(0.002)
    sys.exit(f"no {line!r} within {TIMEOUT} s")


def stop(p, log):
    p.send_signal(signal.SIGTERM)
    if p.wait(timeout=TIMEOUT) != 0:
        sys.exit(f"the daemon did not stop cleanly: {open(log).read()[-3000:]}")


work = tempfile.mkdtemp(prefix="fsync-startup-", dir="/var/tmp")
try:
    home, folder, log = f"{work}/home", f"{work}/docs", f"{work}/daemon.log"
    for i in range(FILES):
        d = f"{folder}/d{i % 100}"
        if i < 100:
            os.makedirs(d)
        with open(f"{d}/f{i}.txt", "w") as f:
            f.write("".join(chr(97 + (i + c) % 26) for c in range(10)))
    subprocess.run([BIN, "--home", home, "init"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([BIN, "--home", home, "folder", "add", "docs", folder], check=True, stdout=subprocess.DEVNULL)
    t = time.monotonic()
    p = start(home, log)
    first = wait_line(p, log, "fsync running", t)
    stop(p, log)
    walk, ready = [], []
    for _ in range(RUNS):
        t = time.monotonic()
        n = 0
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                os.lstat(os.path.join(root, name))
                n += 1
        walk.append(time.monotonic() - t)
        t = time.monotonic()
        p = start(home, log)
        ready.append(wait_line(p, log, "fsync running", t))
        stop(p, log)
    store = os.path.getsize(f"{home}/store.redb")
    w, r = statistics.median(walk) * 1000, statistics.median(ready) * 1000
    print(f"| {FILES:,} files, {FILES * 10:,} chars | first start (takes every file in) {first:.2f} s "
          f"| restart until serving: median {r:.0f} ms (min {min(ready) * 1000:.0f}, max {max(ready) * 1000:.0f}) "
          f"| walk + stat floor {w:.0f} ms | ratio {r / w:.1f} | store {store / 1e6:.1f} MB |")
finally:
    shutil.rmtree(work, ignore_errors=True)
