#!/usr/bin/env bash
# How procpool scales with its workers, beside rayon and Python's multiprocessing.Pool.
#
#   bench/compare/scaling.sh [--reps N] [--bin PATH] [--out FILE] [--json FILE] [WORKERS...]
#
# Factorials of 1..=3000 (`map`, the CPU-heavy case of the targets in BENCHMARKS.md) at each worker count
# (default 1 2 4 8 16) by procpool, rayon and multiprocessing.Pool (fork), each beside the
# serial loop of its own language: for each repetition (default 3) and each worker count,
# one sample of each, in an order that rotates from one repetition to the next, each
# sample a fresh process. bench/compare/pools.py drives it, prints the table on standard
# output (progress on standard error) and rewrites the section between
# `<!-- scaling:begin` and `<!-- scaling:end -->` in BENCHMARKS.md at the repository root
# with the medians, the speed-ups against the serial loops, the machine and this command.
# Worker counts above the cores available are run all the same, with a warning, and
# marked in the table as oversubscribed.
#
# Expected time for the defaults on a 16-core machine: about 2 minutes of measurement
# (each repetition about 40 s: the Python serial loop, ~2.2 s, runs once per worker count,
# and multiprocessing.Pool with 1 or 2 workers takes 1.5-3 s), plus the release build
# (about 1 minute from scratch) unless --bin is given. On 2 cores, `--reps 2 1 2`
# takes about 30 s of measurement.
#
# Options:
#   --reps N      repetitions (default 3)
#   --bin PATH    use this procpool-compare instead of building one (for a machine without
#                 cargo: build it elsewhere with
#                 `cargo build --release -p procpool-benches --bin procpool-compare`);
#                 set RUSTC_VERSION and BUILT_FROM to name in the report the compiler that
#                 built it and the commit it was built from
#   --out FILE    the BENCHMARKS.md to rewrite (default: the repository's)
#   --json FILE   also save every sample and the machine there, to write the report again
#                 later with `python3 bench/compare/pools.py scaling --from-json FILE --out BENCHMARKS.md`
#
# Needs python3 (standard library only), and cargo unless --bin is given.
set -euo pipefail
cd "$(dirname "$0")/../.."

reps=3
bin=""
out="BENCHMARKS.md"
json=""
workers=()
while (($#)); do
  case "$1" in
    --reps) reps="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "scaling.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) workers+=("$1"); shift ;;
  esac
done
((${#workers[@]})) || workers=(1 2 4 8 16)

rustc_version="${RUSTC_VERSION:-}"
built_from="${BUILT_FROM:-}"
if [[ -z "$bin" ]]; then
  echo "scaling.sh: building procpool-compare (release)" >&2
  cargo build --release --quiet -p procpool-benches --bin procpool-compare
  bin="${CARGO_TARGET_DIR:-target}/release/procpool-compare"
  rustc_version="${rustc_version:-$(rustc --version)}"
  if [[ -z "$built_from" ]] && commit=$(git rev-parse --short HEAD 2>/dev/null); then
    built_from="commit $commit"
    if [[ -n "$(git status --porcelain -- crates benches Cargo.toml Cargo.lock)" ]]; then
      built_from+=", with uncommitted changes in crates/ or benches/"
    fi
  fi
fi

args=(--compare-bin "$bin" --reps "$reps" --workers "${workers[@]}" --out "$out")
args+=(--command "bench/compare/scaling.sh --reps $reps ${workers[*]}")
[[ -n "$json" ]] && args+=(--json "$json")
[[ -n "$rustc_version" ]] && args+=(--rustc "$rustc_version")
[[ -n "$built_from" ]] && args+=(--tree "$built_from")
exec python3 bench/compare/pools.py scaling "${args[@]}"
