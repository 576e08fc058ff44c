#!/usr/bin/env bash
# Runs the test suite (the command README.md documents) RUNS times in a row
# while other processes keep every core busy, and says how many runs passed.
# Tests must hold on a loaded machine: deadlines that fit it, events rather
# than sleeps.
#
#   bash scripts/busy-test.sh        # 10 runs
#   RUNS=3 bash scripts/busy-test.sh
#
# Builds first, unloaded, so the runs measure the tests, not the compiler.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${RUNS:-10}
cores=$(nproc)
cargo test --all-features --no-run -q

hogs=()
stop_hogs() {
  if [ ${#hogs[@]} -gt 0 ]; then kill "${hogs[@]}" 2>/dev/null || true; fi
}
trap stop_hogs EXIT
for _ in $(seq "$cores"); do
  # A busy loop per core, at the same priority as the tests.
  bash -c 'while :; do :; done' &
  hogs+=("$!")
done

passed=0
logs=$(mktemp -d)
for i in $(seq "$runs"); do
  start=$(date +%s)
  if cargo test --all-features -q >"$logs/run-$i.log" 2>&1; then
    passed=$((passed + 1))
    echo "run $i: passed in $(( $(date +%s) - start )) s"
  else
    echo "run $i: FAILED in $(( $(date +%s) - start )) s; failures:"
    grep -aE "^    [a-z_:]+$|panicked at" "$logs/run-$i.log" | head -20 || true
  fi
done
echo "$passed of $runs runs passed with $cores busy loops on $cores cores (logs in $logs)"
[ "$passed" -eq "$runs" ]
