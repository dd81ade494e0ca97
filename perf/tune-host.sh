#!/usr/bin/env bash
# Host tuning for a keyway appliance: NIC interrupts and queues on the CPUs the
# data plane runs on, packet steering to match, and a few sysctls. Prints every
# change; with --dry-run changes nothing. Each knob is explained in
# perf/README.md ("Host tuning").
#
#   perf/tune-host.sh --iface eth0 --cpus 0-3 [--dry-run] [--busy-poll USEC] [--stop-irqbalance]
#
# --cpus must be the CPUs in keyway.toml's `cores` (with `steer = "cpu"`, so
# each connection is served on the CPU its NIC queue interrupts).
set -euo pipefail

iface="" cpus="" dry=0 busy_poll=0 stop_irqbalance=0
while [ $# -gt 0 ]; do
  case "$1" in
    --iface) iface=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --busy-poll) busy_poll=$2; shift 2 ;;
    --stop-irqbalance) stop_irqbalance=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$iface" ] && [ -n "$cpus" ] || { echo "usage: $0 --iface IFACE --cpus LIST [--dry-run] [--busy-poll USEC] [--stop-irqbalance]" >&2; exit 2; }
[ -d "/sys/class/net/$iface" ] || { echo "no network interface $iface" >&2; exit 1; }

# Expand "0-3,6" into "0 1 2 3 6".
expand() {
  local out=() part a b
  IFS=, read -r -a parts <<<"$1"
  for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then a=${part%-*} b=${part#*-}; for ((i = a; i <= b; i++)); do out+=("$i"); done
    else out+=("$part"); fi
  done
  echo "${out[@]}"
}
read -r -a cpu_list <<<"$(expand "$cpus")"
n=${#cpu_list[@]}

# Hex mask for one CPU, or for all of them (comma-grouped 32-bit words as
# sysfs wants them).
mask() {
  local words=() cpu w
  local max=0
  for cpu in "$@"; do ((cpu > max)) && max=$cpu; done
  for ((w = 0; w <= max / 32; w++)); do words[w]=0; done
  for cpu in "$@"; do ((words[cpu / 32] |= 1 << (cpu % 32))); done
  local s=""
  for ((w = ${#words[@]} - 1; w >= 0; w--)); do s+=$(printf '%08x' "${words[w]}"); ((w > 0)) && s+=","; done
  echo "$s"
}

set_value() { # path value
  if ((dry)); then echo "would write $2 > $1"
  elif [ -w "$1" ]; then echo "$2" >"$1" && echo "wrote $2 > $1"
  else echo "skipped $1 (not writable)"; fi
}
run() {
  if ((dry)); then echo "would run: $*"; else echo "running: $*"; "$@" || echo "  (failed: $*)"; fi
}

echo "# keyway host tuning: $iface on CPUs ${cpu_list[*]}$( ((dry)) && echo ' (dry run)')"

# 1. irqbalance would move the interrupts back.
if ((stop_irqbalance)) && command -v systemctl >/dev/null; then
  run systemctl stop irqbalance
fi

# 2. One NIC queue interrupt per data-plane CPU, in order.
irqs=$(awk -v ifc="$iface" '$0 ~ ifc { sub(":", "", $1); print $1 }' /proc/interrupts)
i=0
for irq in $irqs; do
  set_value "/proc/irq/$irq/smp_affinity_list" "${cpu_list[i % n]}"
  i=$((i + 1))
done
[ "$i" -gt 0 ] || echo "note: no interrupts named after $iface in /proc/interrupts (virtual or loopback device): skipping IRQ affinity"

# 3. Receive packet steering: with a hardware queue per CPU the interrupt CPU
#    already processes its packets, so RPS stays off; with fewer queues, spread
#    them over the data-plane CPUs.
rxq=(/sys/class/net/"$iface"/queues/rx-*)
if [ -e "${rxq[0]}" ]; then
  if [ "${#rxq[@]}" -ge "$n" ]; then rps=0; else rps=$(mask "${cpu_list[@]}"); fi
  for q in "${rxq[@]}"; do set_value "$q/rps_cpus" "$rps"; done
fi

# 4. Transmit packet steering: each CPU sends on its own queue.
txq=(/sys/class/net/"$iface"/queues/tx-*)
if [ -e "${txq[0]}" ]; then
  i=0
  for q in "${txq[@]}"; do
    if [ "$i" -lt "$n" ]; then set_value "$q/xps_cpus" "$(mask "${cpu_list[i]}")"; fi
    i=$((i + 1))
  done
fi

# 5. Sysctls: deep accept queues, a bigger input backlog, and optional busy
#    polling of the NIC by blocking socket reads.
sysctl_set() {
  if ((dry)); then echo "would run: sysctl -w $1=$2"; else sysctl -q -w "$1=$2" && echo "sysctl $1=$2" || echo "  (failed: sysctl $1)"; fi
}
sysctl_set net.core.somaxconn 65535
sysctl_set net.ipv4.tcp_max_syn_backlog 65535
sysctl_set net.core.netdev_max_backlog 16384
if ((busy_poll > 0)); then
  sysctl_set net.core.busy_poll "$busy_poll"
  sysctl_set net.core.busy_read "$busy_poll"
fi

# 6. Keep the data-plane CPUs at full clock where cpufreq exists.
for cpu in "${cpu_list[@]}"; do
  gov=/sys/devices/system/cpu/cpu$cpu/cpufreq/scaling_governor
  [ -e "$gov" ] && set_value "$gov" performance
done
echo "# done"
