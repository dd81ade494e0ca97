#!/usr/bin/env bash
# The side-by-side benchmark in one command: installs redis-server,
# redis-tools and nutcracker (twemproxy) if missing, builds keyway and the
# harness in release mode, and runs direct Redis, twemproxy and keyway (both
# transports) over one Redis in interleaved rounds. Results go to
# bench/results/<date>-<commit>.json and the table in bench/RESULTS.md.
# Arguments go to keyway-bench (see `--help`); e.g. `bench/run.sh --rounds 3`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release -q -p keyway -p keyway-bench
exec target/release/keyway-bench --transports glommio,uring "$@"
