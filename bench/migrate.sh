#!/usr/bin/env bash
# The online-migration benchmark in one command: installs redis-server if
# missing, builds keyway, keyway-ctld, keywayctl and the benchmark in release
# mode, and moves 1M keys of 100 bytes between two Redis groups under an
# open-loop client load (3 rounds per sweep rate limit, then one big key).
# Results go to bench/results/<date>-<commit>-migrate.json and the migration
# section of bench/RESULTS.md. Arguments go to keyway-migrate-bench (see
# `--help`); e.g. `bench/migrate.sh --keys 100000 --rounds 1`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release -q -p keyway -p keyway-ctl -p keyway-bench
exec target/release/keyway-migrate-bench "$@"
