#!/usr/bin/env bash
# Runs keyway on 127.0.0.1:${KEYWAY_PORT:-6380} in front of three local
# redis-servers (ports ${REDIS_PORTS:-7001 7002 7003}), installing redis-server
# if it is missing. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

port=${KEYWAY_PORT:-6380}
read -r -a redis_ports <<<"${REDIS_PORTS:-7001 7002 7003}"
cores=${KEYWAY_CORES:-1}

scripts/deps.sh
cargo build --release -q -p keyway

dir=$(mktemp -d "${TMPDIR:-/tmp}/keyway-local.XXXXXX")
pids=()
cleanup() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

config="$dir/keyway.toml"
printf 'listen = "127.0.0.1:%s"\ncores = %s\n' "$port" "$cores" >"$config"
i=1
for p in "${redis_ports[@]}"; do
  redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$dir" --logfile "$dir/redis-$p.log" &
  pids+=($!)
  printf '\n[[group]]\nname = "g%s"\nmaster = "127.0.0.1:%s"\n' "$i" "$p" >>"$config"
  i=$((i + 1))
done
for p in "${redis_ports[@]}"; do
  for _ in $(seq 100); do
    redis-cli -p "$p" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  redis-cli -p "$p" ping >/dev/null || { echo "redis-server on port $p did not start (see $dir/redis-$p.log)" >&2; exit 1; }
done

target/release/keyway --config "$config" &
pids+=($!)
for _ in $(seq 100); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.05
done
cat <<MSG
keyway is serving 127.0.0.1:$port in front of redis-servers on ports ${redis_ports[*]}.
  connect:  redis-cli -p $port
  config:   $config  (edit, then: kill -HUP ${pids[-1]})
Ctrl-C stops keyway and the redis-servers.
MSG
wait "${pids[-1]}"
