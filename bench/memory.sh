#!/usr/bin/env bash
# Memory against binary history: two real nodes on loopback; A writes
# FILES distinct binary files of MB MiB each (and rewrites each once), B
# receives them. Prints the RSS of both daemons after each file beside the
# bytes of binary history so far (the baseline: what a node holding every
# chunk in memory would need), then B's RSS after a restart.
#
#   bench/memory.sh                  # 8 files of 16 MiB
#   FILES=4 MB=60 bench/memory.sh
#   BIN=/path/to/other/fsync bench/memory.sh   # another build, same run
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p cli
  BIN="$PWD/target/release/fsync"
fi
exec python3 bench/memory_nodes.py "$BIN" "${FILES:-8}" "${MB:-16}"
