#!/usr/bin/env bash
# System calls per request made by process PID (all its threads) while a
# command sends REQUESTS requests through it: strace -c -f, then each
# syscall's count divided by REQUESTS. strace slows the process a lot, so the
# counts are what matter, not the times.
#
#   perf/syscalls-per-request.sh PID REQUESTS -- redis-benchmark -p 6380 -c 50 -n 100000 -t get -q
set -euo pipefail
[ $# -ge 4 ] && [ "$3" = "--" ] || { echo "usage: $0 PID REQUESTS -- COMMAND..." >&2; exit 2; }
pid=$1 requests=$2
shift 3
command -v strace >/dev/null || { echo "strace is not installed (apt-get install -y strace)" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
strace -c -f -p "$pid" -o "$out" &
tracer=$!
sleep 0.5
"$@" >/dev/null
kill -INT "$tracer"
wait "$tracer" 2>/dev/null || true
awk -v n="$requests" '
  /^-+/ { sep++; next }
  sep == 1 && NF >= 5 { printf "%-20s %10d calls  %8.3f per request\n", $NF, $4, $4 / n; total += $4 }
  END { printf "%-20s %10d calls  %8.3f per request\n", "all", total, total / n }
' "$out"
