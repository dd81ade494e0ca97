#!/usr/bin/env bash
# CPU per request of keyway builds or settings side by side, to the
# scheduler's nanosecond: what a feature costs when the harness's CPU figure
# (50 clients, whose batching moves with each run's throughput) is too noisy.
#
#   bench/cpu.sh [-n REQUESTS] [-P PIPELINE] [-c CLIENTS] [-t TEST] [-r ROUNDS] [-C CPUS] \
#       NAME[/TEST][@ARGS]=BINARY[:EXTRA] ...
#
# One redis-server (pinned to CPU 1 with keyway, redis-benchmark on CPU 0;
# `-C 0,1` gives keyway `cores = [0, 1]` instead, for scaling, with
# redis-benchmark unpinned)
# holds key `k`; each round starts each target in turn (interleaved: A B C
# A B C ...) on a free loopback port with one core and one group, warms it
# with 20,000 requests, then runs `redis-benchmark -t TEST` with a fixed
# key, a few clients and PIPELINE, and reports keyway's CPU per request:
# the run time of all its threads (`/proc/PID/task/*/schedstat`, user and
# kernel time spent in its context) over the run, divided by the requests.
# EXTRA is appended to the target's config (`\n` for a newline), e.g.
#   'nolatency=target/release/keyway:[metrics]\nlatency = false'
# A target whose BINARY is `nutcracker` is twemproxy (one server, as the
# harness runs it; EXTRA unused). `NAME/TEST` gives that target its own
# redis-benchmark test, e.g. `ping/ping_mbulk=target/release/keyway` beside
# `get=target/release/keyway` for the hop's cost (GET through keyway
# against PING answered by keyway) in one run. `@ARGS` adds redis-benchmark
# arguments for that target (after its `-p`, so a `-p` there wins). In
# EXTRA and ARGS, `{tlsport}` is a free port picked for the target and
# `{dir}` the scratch directory, which holds a CA and a server certificate
# for 127.0.0.1 (`ca.crt`, `server.crt`, `server.key`). E.g. a TLS client
# and an ACL user beside plain keyway:
#   'tls@-p {tlsport} --tls --cacert {dir}/ca.crt=target/release/keyway:[tls]\nlisten = "127.0.0.1:{tlsport}"\ncert = "{dir}/server.crt"\nkey = "{dir}/server.key"'
#   'acl@--user app -a pass=target/release/keyway:[[user]]\nname = "default"\nrules = "on >d ~* &* +@all"\n[[user]]\nname = "app"\nrules = "on >pass ~key:* &* +@all -@dangerous"'
# and `resp3@-3=target/release/keyway` for a RESP3 client.
# Prints one line per run, then each target's median and its ratio to the
# first target's.
set -euo pipefail

n=3000000 pipeline=16 clients=4 test=get rounds=3 cpus=1
while getopts "n:P:c:t:r:C:" o; do
  case $o in
    n) n=$OPTARG ;;
    P) pipeline=$OPTARG ;;
    c) clients=$OPTARG ;;
    t) test=$OPTARG ;;
    r) rounds=$OPTARG ;;
    C) cpus=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(($#)) || { sed -n '5,7p' "$0" >&2; exit 2; }
for tool in redis-server redis-cli redis-benchmark openssl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "bench/cpu.sh needs $tool (scripts/deps.sh installs Redis's)" >&2; exit 1; }
done
name_of() { local n=${1%%=*}; n=${n%%@*}; echo "${n%%/*}"; }
test_of() { local n=${1%%=*}; n=${n%%@*}; [[ $n == */* ]] && echo "${n#*/}" || echo "$test"; }
args_of() { local n=${1%%=*}; [[ $n == *@* ]] && echo "${n#*@}" || true; }

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

# A CA and a server certificate for 127.0.0.1, for TLS targets.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
  -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/san.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 2 -extfile "$dir/san.ext" -out "$dir/server.crt" >/dev/null 2>&1

redis_port=$(free_port)
taskset -c 1 redis-server --port "$redis_port" --save '' --appendonly no >"$dir/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port"
redis-cli -p "$redis_port" set k v >/dev/null
redis-cli -p "$redis_port" set key:__rand_int__ v >/dev/null

echo "bench/cpu.sh -n $n -P $pipeline -c $clients -t $test -r $rounds: keyway CPU ns per request"
for r in $(seq "$rounds"); do
  for spec in "$@"; do
    name=$(name_of "$spec") t=$(test_of "$spec") rest=${spec#*=}
    bin=${rest%%:*} extra=""
    [[ $rest == *:* ]] && extra=${rest#*:}
    port=$(free_port) tlsport=$(free_port)
    extra=${extra//\{tlsport\}/$tlsport} extra=${extra//\{dir\}/$dir}
    args=$(args_of "$spec")
    args=${args//\{tlsport\}/$tlsport} args=${args//\{dir\}/$dir}
    if [ "$(basename "$bin")" = nutcracker ]; then
      printf 'bench:\n  listen: 127.0.0.1:%s\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  timeout: 5000\n  servers:\n   - 127.0.0.1:%s:1\n' \
        "$port" "$redis_port" >"$dir/$name.yml"
      taskset -c 1 "$bin" -c "$dir/$name.yml" -s "$(free_port)" -o "$dir/$name.log" &
    else
      printf 'listen = "127.0.0.1:%s"\ncores = [%s]\n%b\n[[group]]\nname = "g1"\nmaster = "127.0.0.1:%s"\n' \
        "$port" "${cpus//,/, }" "$extra" "$redis_port" >"$dir/$name.toml"
      KEYWAY_LOG=warn "$bin" --config "$dir/$name.toml" >"$dir/$name.log" 2>&1 &
    fi
    kp=$!
    pids+=("$kp")
    wait_port "$port"
    # shellcheck disable=SC2086 # ARGS are words
    redis-benchmark -p "$port" $args -n 20000 -P "$pipeline" -c "$clients" -t "$t" >/dev/null 2>&1
    t0=$(run_ns "$kp")
    # shellcheck disable=SC2086
    pin=(taskset -c 0)
    [ "$cpus" = 1 ] || pin=()
    rps=$("${pin[@]}" redis-benchmark -p "$port" $args -n "$n" -P "$pipeline" -c "$clients" -t "$t" -q 2>/dev/null |
      tr '\r' '\n' | grep -a "requests per second" | tail -1 | awk '{ print $2 }')
    t1=$(run_ns "$kp")
    kill "$kp"
    wait "$kp" 2>/dev/null || true
    per=$(awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN { printf "%.1f", (b - a) / n }')
    echo "round $r $name $per ns/req ($rps req/s)" | tee -a "$dir/runs"
  done
done

echo "median over rounds (ratio to $(name_of "$1")):"
first=""
for spec in "$@"; do
  name=$(name_of "$spec")
  med=$(awk -v t="$name" '$3 == t { print $4 }' "$dir/runs" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
  [ -n "$first" ] || first=$med
  echo "$name $med ns/req $(awk -v a="$med" -v b="$first" 'BEGIN { printf "%.4f", a / b }')"
done
