#!/usr/bin/env bash
# procpool's pool over Redis Streams beside Celery on the same redis-server, in one
# interleaved run.
#
#   bench/compare/redis.sh [REPS] [CELERY_MAP_ITEMS]   (defaults 5 and 100000)
#
# Builds procpool-redis (release, feature `redis`), makes a virtual environment with
# `pip install "celery[redis]"` in target/celery-venv unless it is there, then
# bench/compare/redis_compare.py starts its own redis-server (free loopback port, no
# persistence), a procpool host agent and a Celery worker, runs both sides in turns and
# rewrites the "Over Redis, beside Celery" section of BENCHMARKS.md. Every process it starts
# is stopped by pid at the end. Needs cargo, python3 and redis-server on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
reps="${1:-5}"
items="${2:-100000}"
command -v redis-server >/dev/null || { echo "redis-server is not installed (Debian: apt-get install redis-server)" >&2; exit 1; }
cargo build --release --quiet -p procpool-benches --features redis --bin procpool-redis
target="${CARGO_TARGET_DIR:-target}"
venv="$target/celery-venv"
if ! "$venv/bin/python" -c "import celery, redis" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "celery[redis]"
fi
args=(--bin "$target/release/procpool-redis" --python "$venv/bin/python" --reps "$reps"
  --map-items "$items" --out BENCHMARKS.md --raw "$target/redis-compare.json"
  --command "bench/compare/redis.sh $*")
exec "$venv/bin/python" bench/compare/redis_compare.py run "${args[@]}"
