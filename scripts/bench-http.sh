#!/usr/bin/env bash
# The HTTP response cache's hit path (benches/http.rs) at an earlier commit
# and at the work tree, run alternately on one machine, so that a change's
# cost is measured against the same noise:
#
#   bash scripts/bench-http.sh [BASE] [PAIRS]
#
# BASE defaults to ffbf2b6 (before issue 21 widened the layer); PAIRS (3)
# is how many times each side runs, alternately (each run: FUSEBOX_BENCH_ROUNDS,
# default 3, rounds of FUSEBOX_BENCH_SECONDS, default 3). The base is a git
# worktree under target/, given this tree's bench crate (the bench is newer
# than the base) and built in the same target directory. Prints each run's
# median requests per second and, at the end, both sides' medians and
# their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-ffbf2b6}
pairs=${2:-3}
export FUSEBOX_BENCH_ONLY=fusebox
export FUSEBOX_BENCH_ROUNDS=${FUSEBOX_BENCH_ROUNDS:-3}
export CARGO_TARGET_DIR=$PWD/target
tree=target/bench-base
if [ -d "$tree" ]; then
    git -C "$tree" checkout -q --force --detach "$base"
else
    git worktree add -q --detach "$tree" "$base"
fi
rm -rf "$tree/benches"
cp -r benches "$tree/benches"
cp Cargo.lock "$tree/Cargo.lock"
build() {
    (cd "$1" && cargo bench -p fusebox-benches --bench http --no-run 2>&1) |
        grep -o 'target/release/deps/http-[0-9a-f]*' | tail -1
}
echo "building the bench at $base and at the work tree" >&2
old=$(build "$tree")
new=$(build .)
[ -n "$old" ] && [ -n "$new" ] || { echo "bench build failed" >&2; exit 1; }
run() { "$1" | grep '^| fusebox' | awk -F'|' '{gsub(/ /, "", $3); print $3}'; }
olds=() news=()
for i in $(seq "$pairs"); do
    o=$(run "$old"); olds+=("$o"); echo "pair $i: $base $o req/s"
    n=$(run "$new"); news+=("$n"); echo "pair $i: work tree $n req/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
mo=$(median "${olds[@]}")
mn=$(median "${news[@]}")
echo
echo "| build | median req/s |"
echo "|---|---|"
echo "| $base | $mo |"
echo "| work tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+changes')) | $mn |"
awk -v a="$mo" -v b="$mn" 'BEGIN {printf "\nwork tree / base: %.3f\n", b / a}'
