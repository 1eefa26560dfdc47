#!/usr/bin/env bash
# Whole-node start-up: the real `fsync run` on a home whose folder holds
# FILES files of 10 characters (100,000 files = 1,000,000 changes), from
# exec until it serves peers ("fsync running": store opened, history
# loaded, folder rescanned), median of RUNS, beside the floor of walking and
# stat-ing the folder (which any start that looks for offline changes pays).
#
#   bench/startup.sh             # 100,000 files, 5 runs
#   FILES=20000 RUNS=3 bench/startup.sh
#
# Prints a markdown row; bench/results/startup.md records the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-100000}
RUNS=${RUNS:-5}
cargo build --release -q -p cli
exec python3 bench/startup_node.py "$PWD/target/release/fsync" "$FILES" "$RUNS"
