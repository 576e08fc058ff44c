#!/usr/bin/env bash
# Instructions, clock reads and allocations per call, counted by callgrind
# (stable on a noisy machine): (count(N) - count(0)) / N for each case.
#
#   bash benches/callgrind.sh [N]          the table for every case
#   bash benches/callgrind.sh --check [N]  fusebox only; fails if a closed or
#                                          rejected call costs more than
#                                          LIMIT (default 40) instructions
#                                          over the plain tower service
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK=
if [ "${1:-}" = --check ]; then CHECK=1; shift; fi
N=${1:-1000000}
LIMIT=${LIMIT:-40}
cargo build -q --profile bench -p fusebox-benches --bin calls
BIN=target/release/calls
[ -x "$BIN" ] || BIN=target/bench/calls
OUT=$(mktemp -d)
count() { # case n -> "Ir clock_gettime malloc"
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$1.$2" "$BIN" "$1" "$2" >/dev/null 2>&1
  python3 - "$OUT/$1.$2" <<'PY'
import re, sys
names, calls, cur, total = {}, {}, None, 0
for line in open(sys.argv[1]):
    if line.startswith("summary:") or line.startswith("totals:"):
        total = int(line.split()[1])
    # Names are compressed: the first "fn=(id) name" or "cfn=(id) name"
    # defines an id, later ones repeat only "(id)".
    m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3): names[m.group(2)] = m.group(3)
        if m.group(1): cur = names.get(m.group(2), "")
        continue
    m = re.match(r"calls=(\d+)", line)
    if m and cur is not None:
        calls[cur] = calls.get(cur, 0) + int(m.group(1)); cur = None
def n(pat): return sum(v for k, v in calls.items() if re.search(pat, k))
print(total, n(r"^(__)?clock_gettime|^__vdso_clock_gettime"), n(r"^(__libc_)?malloc$"))
PY
}
per_call() { # case -> "instructions clock_reads allocations" per call
  read -r i0 c0 m0 <<<"$(count "$1" 0)"
  read -r i1 c1 m1 <<<"$(count "$1" "$N")"
  # Rounded, and -0.00 (one startup allocation fewer) shown as 0.00.
  python3 -c "print(' '.join('%.2f' % (round(v, 2) or 0.0) for v in (($i1-$i0)/$N, ($c1-$c0)/$N, ($m1-$m0)/$N)))"
}
if [ -n "$CHECK" ]; then
  read -r floor _ _ <<<"$(per_call baseline)"
  status=0
  for c in fusebox fusebox-open; do
    read -r ir clocks mallocs <<<"$(per_call "$c")"
    verdict=$(python3 -c "print('ok' if $ir - $floor <= $LIMIT and $clocks == 0 and $mallocs == 0 else 'FAIL')")
    echo "$c: $ir instructions per call (floor $floor, limit +$LIMIT), $clocks clock reads, $mallocs allocations: $verdict"
    [ "$verdict" = ok ] || status=1
  done
  rm -rf "$OUT"
  exit $status
fi
echo "| case | instructions/call | clock reads/call | allocations/call |"
echo "|---|---|---|---|"
for c in baseline fusebox recloser failsafe tower-resilience fusebox-open recloser-open failsafe-open tower-resilience-open; do
  read -r ir clocks mallocs <<<"$(per_call "$c")"
  echo "| $c | $ir | $clocks | $mallocs |"
done
rm -rf "$OUT"
