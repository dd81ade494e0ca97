#!/usr/bin/env bash
# The Pub/Sub fan-out benchmark in one command: installs redis-server if
# missing, builds keyway and the benchmark in release mode, then delivers
# messages to 1,000 subscribers of one channel, directly from Redis and
# through keyway (one core), in interleaved rounds. Results go to
# bench/results/<date>-<commit>-pubsub.json and the Pub/Sub section of
# bench/RESULTS.md. Arguments go to keyway-pubsub-bench (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release -q -p keyway -p keyway-bench
exec target/release/keyway-pubsub-bench "$@"
