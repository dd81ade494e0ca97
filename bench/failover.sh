#!/usr/bin/env bash
# The failover benchmark in one command: installs what is missing, builds
# keyway, keyway-ctld, keywayctl and the benchmark in release mode, then
# kills a group's master 10 times for each down_after (5 s and 1 s) and
# times the first write answered after each kill, then times 10
# switchovers. Results go to bench/results/<date>-<commit>-failover.json and
# the failover section of bench/RESULTS.md. Arguments go to keyway-ha-bench
# (see `--help`); e.g. `bench/failover.sh --kills 3 --switchovers 3`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release -q -p keyway -p keyway-ctl -p keyway-bench
exec target/release/keyway-ha-bench "$@"
