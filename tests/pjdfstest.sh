#!/usr/bin/env bash
# Runs pjdfstest (the Rust port, crate `pjdfstest`) against a plain
# directory and against an fsync mount, and sorts the mount's failures into
# the categories the mount does not store (docs/fuse.md). Needs root and
# /dev/fuse. Usage: tests/pjdfstest.sh  (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/fsync-pjdfstest.XXXXXX)
# Other users (pjdfstest switches to them) must reach the directories.
chmod 755 "$work"
pjd="$work/bin/pjdfstest"
if command -v pjdfstest >/dev/null; then pjd=$(command -v pjdfstest); else cargo install -q pjdfstest --root "$work"; fi
# pjdfstest changes owners to these users.
id tests >/dev/null 2>&1 || useradd -M tests
cargo build -q -p cli
fsync="$PWD/target/debug/fsync"
mkdir -p "$work/plain" "$work/mnt"
(cd "$work/plain" && "$pjd" -p "$work/plain" > "$work/plain.log" 2>&1) || true
"$fsync" --home "$work/home" init >/dev/null
"$fsync" --home "$work/home" folder add docs "$work/docs" >/dev/null
"$fsync" --home "$work/home" mount docs "$work/mnt" --listen 127.0.0.1:0 > "$work/daemon.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null || true; wait $daemon 2>/dev/null || true; umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do mountpoint -q "$work/mnt" && break; sleep 0.1; done
(cd "$work/mnt" && "$pjd" -p "$work/mnt" > "$work/mount.log" 2>&1) || true
echo "plain directory: $(grep Summary "$work/plain.log")"
echo "fsync mount:     $(grep Summary "$work/mount.log")"
kill -0 $daemon 2>/dev/null && echo "the daemon is still running" || { echo "THE DAEMON DIED"; exit 1; }
grep -E '^[a-z_]+::[a-z_:]+ +FAILED' "$work/mount.log" | awk '{print $1}' > "$work/failed"
special=$(grep -cE '::(fifo|socket|block|char)$|^(mknod|mkfifo)::|^open::(fifo|socket)' "$work/failed" || true)
links=$(grep -vE '::(fifo|socket|block|char)$|^(mknod|mkfifo)::|^open::(fifo|socket)' "$work/failed" | grep -cE '^link::|multiply_linked|^unlink::(unchanged_ctime_failed|update_ctime_success)|^rename::preserve_metadata' || true)
other=$(grep -vE '::(fifo|socket|block|char)$|^(mknod|mkfifo)::|^open::(fifo|socket)|^link::|multiply_linked|^unlink::(unchanged_ctime_failed|update_ctime_success)|^rename::preserve_metadata' "$work/failed" || true)
echo "failures on special files (not stored, EPERM): $special"
echo "failures on hard links (not stored, EPERM): $links"
if [ -n "$other" ]; then echo "other failures:"; echo "$other"; exit 1; fi
echo "no other failures"
