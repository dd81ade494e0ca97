#!/usr/bin/env bash
# CPU microseconds per request spent by process PID while a command runs:
# (utime + stime from /proc/PID/stat, after - before) / REQUESTS.
#
#   perf/cpu-per-request.sh PID REQUESTS -- redis-benchmark -p 6380 -n 400000 -t get -q
set -euo pipefail
[ $# -ge 4 ] && [ "$3" = "--" ] || { echo "usage: $0 PID REQUESTS -- COMMAND..." >&2; exit 2; }
pid=$1 requests=$2
shift 3
ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks)
"$@"
after=$(ticks)
awk -v a="$after" -v b="$before" -v hz="$hz" -v n="$requests" \
  'BEGIN { printf "cpu_us_per_request %.3f  (%d ticks at %d Hz over %d requests)\n", (a - b) * 1e6 / hz / n, a - b, hz, n }'
