#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run): installs what the tests need,
# checks formatting and lints, runs every unit, property and integration test
# against real redis-server processes (the integration tests on both
# transports), checks the generated command table is fresh, runs the benchmark
# harness once on a small load, and fuzzes the RESP parsers briefly.
#
#   KEYWAY_FUZZ_SECONDS=0 scripts/test.sh   # skip the fuzz run
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

cargo fmt --all -- --check
cargo clippy -q --workspace --all-targets -- -D warnings
# Tests that cannot run here print `SKIP: <test>: <reason>` (testkit's
# `skip!`); they are listed again at the end so a skip is never silent.
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
cargo test -q --workspace 2>&1 | tee -a "$test_log"
# The integration tests once more on the other transport (uring is the default),
# but for the memory-growth tests (`slow_*`, in tests/memory.rs), which run once.
KEYWAY_TEST_TRANSPORT=glommio cargo test -q -p keyway --tests -- --skip slow_ 2>&1 | tee -a "$test_log"
perf/tune-host.sh --iface lo --cpus 0 --dry-run >/dev/null

fuzz_seconds=${KEYWAY_FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" != 0 ]; then
  command -v cargo-fuzz >/dev/null 2>&1 || cargo install -q --locked cargo-fuzz
  (
    cd dataplane/protocol
    for target in request reply; do
      # A target that does not build, a crash (which also leaves an
      # artifact) or a run that executed nothing fails the suite.
      log=$(mktemp)
      if ! cargo fuzz run -s none -O "$target" -- -dict=fuzz/resp.dict \
        -max_total_time="$fuzz_seconds" -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz target $target did not build or run, or crashed (see fuzz/artifacts/$target)" >&2
        exit 1
      fi
      units=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
      if [ -z "$units" ] || [ "$units" -eq 0 ]; then
        tail -20 "$log" >&2
        echo "fuzz target $target executed no units" >&2
        exit 1
      fi
      rm -f "$log"
      echo "fuzz $target: $units units in ${fuzz_seconds}s"
      [ -z "$(ls fuzz/artifacts/$target 2>/dev/null)" ] || { echo "fuzz target $target crashed: see fuzz/artifacts/$target" >&2; exit 1; }
    done
  )
fi
if grep -q '^SKIP: ' "$test_log"; then
  echo "skipped tests:"
  grep '^SKIP: ' "$test_log"
fi
echo "all tests passed"
