#!/usr/bin/env bash
# Installs the Debian packages keyway's local run, tests and benchmarks use,
# when any is missing: redis-server; redis-tools for redis-cli and
# redis-benchmark; nutcracker (twemproxy) for the side-by-side benchmark;
# capnproto, whose compiler checks the committed schema code is fresh;
# protobuf-compiler (protoc), which the etcd-client crate's build needs;
# etcd-server and etcd-client (etcdctl) for keyway-ctld on etcd and its
# tests; openssl, whose command makes the TLS tests' certificates;
# prometheus for promtool, which checks /metrics and deploy/'s alert rules.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if ! command -v redis-cli >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
  need+=(redis-tools)
fi

command -v nutcracker >/dev/null 2>&1 || need+=(nutcracker)
command -v capnp >/dev/null 2>&1 || need+=(capnproto)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)

if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing: ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
