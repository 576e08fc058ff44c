#!/usr/bin/env bash
# Runs the HTTP caching test suite (cache-tests.fyi,
# github.com/http-tests/cache-tests) against fusebox's HttpCacheLayer, put in
# front of the suite's origin as a reverse proxy (examples/gateway.rs), and
# prints the required tests' results beside the suite's published ones.
#
#   bash scripts/cache-tests.sh
#
# Needs node and npm, redis-server, and the suite: CACHE_TESTS_DIR (a
# checkout) if set, else a clone from GitHub, else the last release on npm
# (http-cache-tests, older). Results: target/cache-tests/fusebox.json.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/cache-tests
outabs="$(pwd)/$out"
mkdir -p "$out"

for tool in node npm redis-server; do
  command -v "$tool" >/dev/null || {
    echo "cache-tests: $tool is missing (apt-get install -y nodejs npm redis-server)" >&2
    exit 2
  }
done

suite="${CACHE_TESTS_DIR:-}"
if [[ -z "$suite" ]]; then
  suite="$out/suite"
  if [[ ! -d "$suite" ]]; then
    if ! git clone -q --depth 1 https://github.com/http-tests/cache-tests "$suite" 2>/dev/null; then
      echo "cache-tests: GitHub unreachable; using the npm release" >&2
      mkdir -p "$out/npm"
      (cd "$out/npm" && npm i -q --no-audit --no-fund http-cache-tests >/dev/null)
      suite="$out/npm/node_modules/http-cache-tests"
    fi
  fi
fi
[[ -d "$suite/node_modules" ]] || (cd "$suite" && npm i -q --no-audit --no-fund --omit=dev >/dev/null)
suite="$(cd "$suite" && pwd)"
if [[ -f "$suite/test-engine/cli.mjs" ]]; then
  cli="$suite/test-engine/cli.mjs" server="$suite/test-engine/server/server.mjs"
else
  cli="$suite/cli.mjs" server="$suite/server/server.mjs"
fi

cargo build -q --release --example gateway --features http

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
redis_port=$(free_port) origin_port=$(free_port) gateway_port=$(free_port)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

redis-server --port "$redis_port" --save '' --appendonly no >"$out/redis.log" 2>&1 &
pids+=($!)
(cd "$suite" && npm_config_port=$origin_port npm_config_protocol=http \
  npm_config_pidfile="$outabs/origin.pid" exec node "$server") >"$out/origin.log" 2>&1 &
pids+=($!)
./target/release/examples/gateway --listen "127.0.0.1:$gateway_port" \
  --origin "127.0.0.1:$origin_port" --redis "redis://127.0.0.1:$redis_port" >"$out/gateway.log" 2>&1 &
pids+=($!)

wait_for() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "cache-tests: nothing listens on $1 (see $out/*.log)" >&2
  exit 1
}
wait_for "$redis_port"; wait_for "$origin_port"; wait_for "$gateway_port"

echo "cache-tests: running the suite through the gateway (about a minute)" >&2
(cd "$suite" && npm_config_base="http://127.0.0.1:$gateway_port" npm_config_id='' npm_package_config_id='' \
  node --no-warnings "$cli") >"$out/fusebox.json"
node scripts/cache-tests/summary.mjs "$suite" "$out/fusebox.json" | tee "$out/summary.md"
