#!/usr/bin/env bash
# CPU per request of keyway builds or settings side by side, to the
# scheduler's nanosecond: what a feature costs when the harness's CPU figure
# (50 clients, whose batching moves with each run's throughput) is too noisy.
#
#   bench/cpu.sh [-n REQUESTS] [-P PIPELINE] [-c CLIENTS] [-t TEST] [-r ROUNDS] \
#       NAME=BINARY[:EXTRA] ...
#
# One redis-server (pinned to CPU 1 with keyway, redis-benchmark on CPU 0)
# holds key `k`; each round starts each target in turn (interleaved: A B C
# A B C ...) on a free loopback port with one core and one group, warms it
# with 20,000 requests, then runs `redis-benchmark -t TEST` with a fixed
# key, a few clients and PIPELINE, and reports keyway's CPU per request:
# the run time of all its threads (`/proc/PID/task/*/schedstat`, user and
# kernel time spent in its context) over the run, divided by the requests.
# EXTRA is appended to the target's config (`\n` for a newline), e.g.
#   'nolatency=target/release/keyway:[metrics]\nlatency = false'
# Prints one line per run, then each target's median and its ratio to the
# first target's.
set -euo pipefail

n=3000000 pipeline=16 clients=4 test=get rounds=3
while getopts "n:P:c:t:r:" o; do
  case $o in
    n) n=$OPTARG ;;
    P) pipeline=$OPTARG ;;
    c) clients=$OPTARG ;;
    t) test=$OPTARG ;;
    r) rounds=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(($#)) || { sed -n '5,7p' "$0" >&2; exit 2; }

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
  for _ in $(seq 100); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "nothing answers on port $1" >&2
  exit 1
}

run_ns() {
  cat /proc/"$1"/task/*/schedstat | awk '{ s += $1 } END { printf "%d", s }'
}

redis_port=$(free_port)
taskset -c 1 redis-server --port "$redis_port" --save '' --appendonly no >"$dir/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port"
redis-cli -p "$redis_port" set k v >/dev/null
redis-cli -p "$redis_port" set key:__rand_int__ v >/dev/null

echo "bench/cpu.sh -n $n -P $pipeline -c $clients -t $test -r $rounds: keyway CPU ns per request"
for r in $(seq "$rounds"); do
  for spec in "$@"; do
    name=${spec%%=*} rest=${spec#*=}
    bin=${rest%%:*} extra=""
    [[ $rest == *:* ]] && extra=${rest#*:}
    port=$(free_port)
    printf 'listen = "127.0.0.1:%s"\ncores = [1]\n%b\n[[group]]\nname = "g1"\nmaster = "127.0.0.1:%s"\n' \
      "$port" "$extra" "$redis_port" >"$dir/$name.toml"
    KEYWAY_LOG=warn "$bin" --config "$dir/$name.toml" >"$dir/$name.log" 2>&1 &
    kp=$!
    pids+=("$kp")
    wait_port "$port"
    redis-benchmark -p "$port" -n 20000 -P "$pipeline" -c "$clients" -t "$test" >/dev/null 2>&1
    t0=$(run_ns "$kp")
    rps=$(taskset -c 0 redis-benchmark -p "$port" -n "$n" -P "$pipeline" -c "$clients" -t "$test" -q 2>/dev/null |
      tr '\r' '\n' | grep -a "requests per second" | tail -1 | awk '{ print $2 }')
    t1=$(run_ns "$kp")
    kill "$kp"
    wait "$kp" 2>/dev/null || true
    per=$(awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN { printf "%.1f", (b - a) / n }')
    echo "round $r $name $per ns/req ($rps req/s)" | tee -a "$dir/runs"
  done
done

echo "median over rounds (ratio to $(echo "$1" | cut -d= -f1)):"
first=""
for spec in "$@"; do
  name=${spec%%=*}
  med=$(awk -v t="$name" '$3 == t { print $4 }' "$dir/runs" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
  [ -n "$first" ] || first=$med
  echo "$name $med ns/req $(awk -v a="$med" -v b="$first" 'BEGIN { printf "%.4f", a / b }')"
done
