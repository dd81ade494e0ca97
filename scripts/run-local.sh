#!/usr/bin/env bash
# Runs the whole system locally on loopback: three Redis groups with a
# replica each, keyway-ctld on its file store, and a keyway data plane on
# 127.0.0.1:6380 (keywayctl local up). Installs redis-server if missing and
# builds the release binaries first. Ctrl-C stops everything it started;
# with --detach it returns and leaves the system running
# (stop it with: target/release/keywayctl local down).
# Other arguments go to `keywayctl local up` (e.g. --groups 4 --replicas 2).
set -euo pipefail
cd "$(dirname "$0")/.."

detach=0
args=()
for a in "$@"; do
  if [ "$a" = --detach ]; then detach=1; else args+=("$a"); fi
done

scripts/deps.sh
cargo build --release -q -p keyway -p keyway-ctl

ctl=target/release/keywayctl
if ((detach)); then
  exec "$ctl" local up --groups 3 --replicas 1 "${args[@]}"
fi
trap '"$ctl" local down' EXIT INT TERM
"$ctl" local up --groups 3 --replicas 1 "${args[@]}"
echo "Ctrl-C stops it."
while true; do sleep 3600; done
