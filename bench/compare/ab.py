#!/usr/bin/env python3
"""Two builds of procpool-compare side by side: did a change to the core help?

    cargo build --release -p procpool-benches --bin procpool-compare
    cp target/release/procpool-compare /tmp/compare-before
    # ... change the core, build again ...
    cp target/release/procpool-compare /tmp/compare-after
    python3 bench/compare/ab.py /tmp/compare-before /tmp/compare-after apply map100k fact100

Each repetition runs every workload once under each build, alternating which goes first,
each sample in a fresh process; it prints the medians and their ratio, and the paired ratios:
after/before within each repetition (the two samples run back to back), their median and
range. AB_REPS=N sets the repetitions (7 by default). Standard library only.
"""

import json
import os
import statistics
import subprocess
import sys

REPS = int(os.environ.get("AB_REPS", "7"))


def sample(binary, workload):
    out = subprocess.run([binary, "sample", "procpool", workload], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["seconds"]


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    before, after, workloads = sys.argv[1], sys.argv[2], sys.argv[3:]
    times = {}
    for rep in range(REPS):
        order = [before, after] if rep % 2 == 0 else [after, before]
        for workload in workloads:
            for binary in order:
                times.setdefault((workload, binary), []).append(sample(binary, workload))
    print(f"median of {REPS} interleaved samples each")
    for workload in workloads:
        b = statistics.median(times[(workload, before)])
        a = statistics.median(times[(workload, after)])
        paired = sorted(x / y for x, y in zip(times[(workload, after)], times[(workload, before)]))
        print(
            f"{workload:10s} before {b * 1e6:12.1f} µs   after {a * 1e6:12.1f} µs   after/before {a / b:.2f}"
            f"   paired {statistics.median(paired):.2f} ({paired[0]:.2f}–{paired[-1]:.2f})"
        )


if __name__ == "__main__":
    main()
