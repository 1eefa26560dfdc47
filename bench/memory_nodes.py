"""RSS of two fsync daemons against the binary history they hold (see memory.sh)."""
import json, os, random, shutil, signal, socket, subprocess, sys, tempfile, time

BIN, FILES, MB = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def fsync(home, *args):
    return subprocess.run([BIN, "--home", home, *args], check=True, capture_output=True, text=True).stdout.strip()


def rss_mib(p):
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start(home, listen, log):
    return subprocess.Popen([BIN, "--home", home, "run", "--listen", f"127.0.0.1:{listen}"],
                            stderr=open(log, "a"), stdout=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="info"))


def wait_same(a, b, timeout=300):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        try:
            if os.path.getsize(b) == os.path.getsize(a):
                with open(a, "rb") as fa, open(b, "rb") as fb:
                    if fa.read() == fb.read():
                        return time.monotonic() - t
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"{b} did not arrive within {timeout} s")


work = tempfile.mkdtemp(prefix="fsync-memory-", dir="/var/tmp")
procs = []
try:
    homes = [f"{work}/a", f"{work}/b"]
    dirs = [f"{work}/docs-a", f"{work}/docs-b"]
    ports = [port(), port()]
    ids = [fsync(h, "init") for h in homes]
    for i in range(2):
        fsync(homes[i], "folder", "add", "docs", dirs[i])
        fsync(homes[i], "peer", "add", ids[1 - i], "--addr", f"127.0.0.1:{ports[1 - i]}", "--folder", "docs")
    procs = [start(homes[i], ports[i], f"{work}/log-{i}") for i in range(2)]
    time.sleep(1)
    rng = random.Random(7)
    history = 0
    print(f"| step | history MiB | A RSS MiB | B RSS MiB | arrived in s |")
    print(f"|---|---|---|---|---|")
    print(f"| start | 0 | {rss_mib(procs[0]):.0f} | {rss_mib(procs[1]):.0f} | |")
    for n in range(FILES):
        for rewrite in (False, True):
            path = f"{dirs[0]}/f{n}.bin"
            data = bytearray(rng.randbytes(MB << 20)) if not rewrite else bytearray(open(path, "rb").read())
            if rewrite:  # a new version: a few changed chunks
                for k in range(4):
                    at = rng.randrange(len(data) - 4096)
                    data[at:at + 4096] = rng.randbytes(4096)
                history += 4 * 64 * 1024 / (1 << 20)  # about the changed chunks
            else:
                history += MB
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.rename(path + ".tmp", path)
            took = wait_same(path, f"{dirs[1]}/f{n}.bin")
            step = f"f{n} {'rewritten' if rewrite else 'new'}"
            print(f"| {step} | {history:.0f} | {rss_mib(procs[0]):.0f} | {rss_mib(procs[1]):.0f} | {took:.1f} |", flush=True)
    procs[1].send_signal(signal.SIGTERM)
    procs[1].wait(timeout=120)
    procs[1] = start(homes[1], ports[1], f"{work}/log-1")
    time.sleep(3)
    print(f"| B restarted | {history:.0f} | {rss_mib(procs[0]):.0f} | {rss_mib(procs[1]):.0f} | |")
finally:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=120)
    shutil.rmtree(work, ignore_errors=True)
