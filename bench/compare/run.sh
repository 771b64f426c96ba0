#!/usr/bin/env bash
# procpool side by side with Python's pools, rayon and the IPC floor, in one interleaved run.
#
#   bench/compare/run.sh [REPS]        (default 7 repetitions; about 40 s each on 2 cores)
#
# Builds procpool-compare (release), then bench/compare/pools.py drives every measurement,
# alternating implementations within each repetition, and rewrites the generated section of
# BENCHMARKS.md at the repository root. Needs cargo and python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/../.."
reps="${1:-7}"
cargo build --release --quiet -p procpool-benches --bin procpool-compare
target="${CARGO_TARGET_DIR:-target}"
exec python3 bench/compare/pools.py run \
  --compare-bin "$target/release/procpool-compare" \
  --reps "$reps" \
  --out BENCHMARKS.md \
  --command "bench/compare/run.sh $reps"
