#!/usr/bin/env bash
# The soak (issue 24): a service like the incident replay's, with the near
# cache and the HTTP cache on, run through a cycle of real Redis faults
# (kill, SIGSTOP, OOM, READONLY, the tracking connection killed, a cluster
# primary killed and promoted) for MINUTES (default 30), a row of figures a
# minute. Fails on a wrong value, an error surfaced, or a figure that grows.
#
#   bash scripts/soak.sh        # 30 minutes
#   bash scripts/soak.sh 5      # 5 minutes
#
# Needs redis-server and redis-cli on PATH (`sudo apt-get install
# redis-server`). The output is kept in target/soak.log.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-30}"
if ! command -v redis-server >/dev/null; then
    echo "the soak needs redis-server: sudo apt-get install redis-server" >&2
    exit 2
fi
cargo build --release --example soak --features http,cluster
mkdir -p target
./target/release/examples/soak --minutes "$minutes" 2>&1 | tee target/soak.log
exit "${PIPESTATUS[0]}"
