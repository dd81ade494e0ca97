#!/usr/bin/env bash
# The keyway-ctld leader-takeover benchmark in one command: installs etcd and
# redis-server if missing, builds keyway, keyway-ctld and the benchmark in
# release mode, then kills the active ctld of three on one etcd, 7 times per
# election TTL (5 s, the default, and 2 s). Results go to
# bench/results/<date>-<commit>-takeover.json and the takeover section of
# bench/RESULTS.md. Arguments go to keyway-takeover-bench (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release -q -p keyway -p keyway-ctl -p keyway-bench
exec target/release/keyway-takeover-bench "$@"
