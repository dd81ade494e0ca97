#!/usr/bin/env bash
# A CPU flame graph of process PID while a command runs, as OUT.svg.
# Uses `perf record -e cpu-clock` (software clock: these VMs expose no
# hardware counters) with call graphs, then inferno (installed with cargo if
# missing) to fold and draw. Build keyway with debug line tables (the release
# profile has them) for readable frames.
#
#   perf/flamegraph.sh PID OUT -- redis-benchmark -p 6380 -c 50 -n 400000 -t get -q
set -euo pipefail
[ $# -ge 4 ] && [ "$3" = "--" ] || { echo "usage: $0 PID OUT -- COMMAND..." >&2; exit 2; }
pid=$1 out=$2
shift 3
command -v perf >/dev/null || { echo "perf is not installed (apt-get install -y linux-perf)" >&2; exit 1; }
if ! command -v inferno-flamegraph >/dev/null; then
  cargo install -q --locked inferno
fi
data=$(mktemp)
trap 'rm -f "$data"' EXIT
perf record -q -e cpu-clock -F 2999 -g -p "$pid" -o "$data" &
recorder=$!
sleep 0.3
"$@" >/dev/null
kill -INT "$recorder"
wait "$recorder" 2>/dev/null || true
perf script -i "$data" 2>/dev/null | inferno-collapse-perf | tee "$out.folded" | inferno-flamegraph >"$out.svg"
echo "wrote $out.svg (folded stacks in $out.folded)"
# A text summary: where the samples are, by top-level kernel/user split.
awk '{ n = $NF; total += n; if ($0 ~ /tcp_sendmsg|__sys_sendto|io_send/) send += n; if ($0 ~ /tcp_recvmsg|io_recv/) recv += n; if ($0 ~ /keyway::/) user += n }
     END { if (total) printf "samples %.0f: send path %.1f%%, receive path %.1f%%, keyway code on stack %.1f%%\n", total, 100*send/total, 100*recv/total, 100*user/total }' "$out.folded"
