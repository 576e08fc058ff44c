#!/usr/bin/env bash
# Model checks (loom) of the concurrent protocols, over every interleaving:
# the breaker's epochs and probe slots, the near cache's tickets and
# generations, single flight's hand-over.
# Each model must pass as the code is, and fail with its seeded bug planted
# (FUSEBOX_LOOM_SEED): a model that cannot fail proves nothing.
#
#   bash scripts/loom.sh
#
# Builds with RUSTFLAGS="--cfg fusebox_loom" in target/loom (the normal
# build never sees loom); about 2.5 min the first time on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg fusebox_loom" CARGO_TARGET_DIR=target/loom

echo "== the models, as the code is"
cargo test --release --lib loom_

bin=$(cargo test --release --lib --no-run 2>&1 | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p')
[ -x "$bin" ] || { echo "no test binary found" >&2; exit 1; }

echo "== each model with its seeded bug: must fail"
failed=0
while read -r seed model what; do
  if FUSEBOX_LOOM_SEED=$seed timeout 600 "$bin" "$model" >"target/loom/seed-$seed.log" 2>&1; then
    echo "NOT CAUGHT: $seed ($what) passed $model"
    failed=1
  else
    why=$(grep -m1 -E "panicked at|deadlock" "target/loom/seed-$seed.log" -A1 | tail -1)
    echo "caught: $seed ($what): $why"
  fi
done <<'SEEDS'
breaker_any_epoch breaker::models::loom_an_outcome_from an outcome recorded whatever epoch admitted its call
breaker_probe_limit breaker::models::loom_a_half_open a half-open circuit that admits probes past its slots
near_no_recheck near::models::loom_a_read_racing a fill that does not check its ticket again after storing
near_any_generation near::models::loom_a_read_across a lookup that ignores the entry's generation
flight_no_wake_on_cancel flight::models::loom_a_cancelled a cancelled leader that does not wake its followers
SEEDS
exit $failed
