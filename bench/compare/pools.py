#!/usr/bin/env python3
"""procpool side by side with Python's pools, rayon and the IPC floor, in one run.

Two roles, standard library only:

* ``pools.py sample IMPL WORKLOAD [--workers N]`` runs one sample of one workload with one
  of Python's pools (or Python's serial loop or copy) in this fresh process and prints one
  line of JSON, as ``procpool-compare sample`` does for the Rust side. ``--workers N`` gives
  the pool N processes instead of 2 (the line then names it); the serial loop and the copy
  refuse it.
* ``pools.py run --compare-bin PATH --reps N --out BENCHMARKS.md`` is the driver: for each
  repetition, for each workload, it runs one sample of every implementation, in an order
  that rotates with the repetition, each in a fresh process, so that drift of the machine
  hits every implementation alike. It then writes the medians, the ratios against the
  targets, the machine, the versions and the command into ``BENCHMARKS.md``
  between the ``compare:begin`` and ``compare:end`` markers, keeping the rest of the file.
* ``pools.py scaling --compare-bin PATH --reps N --workers 1 2 4 8 16`` is the driver of the
  scaling run (``bench/compare/scaling.sh``): factorials of 1..=3000 by procpool, rayon and
  ``multiprocessing.Pool`` (fork) at each worker count, beside the serial loop of the same
  language, interleaved the same way; it writes the medians and speed-ups into
  ``BENCHMARKS.md`` between the ``scaling:begin`` and ``scaling:end`` markers.

Every sample reports the time of one operation: one pool started and its first result
back, one ``apply`` round trip, one whole ``map``, one round trip of 64 MiB; ``maxtasks1``
reports the time per task of a map, each task in a worker of its own.
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import textwrap
import time

# Processes in every pool unless ``sample --workers`` says otherwise, as the targets ask.
WORKERS = 2
BIG = 64 << 20
# The processes of the ``pool100`` pool, and the no-ops of its first map.
LARGE_POOL = 100
# The tasks of one ``maxtasks1`` map, each in a fresh worker: fewer than procpool's 1,000,
# at a few milliseconds each; the sample is the time per task.
ONE_JOB_TASKS = 200

WORKLOADS = {
    "startup": "start-up: pool of 2 ready and first result back",
    "pool100": "pool of 100 ready and a first `map` of 100 no-ops back",
    "respawn": "pool of 1: from a failed `apply` (its worker exited) to the replacement's first"
    " result back",
    "apply": "no-op `apply` round trip, warm pool",
    "map100k": "`map` of 100,000 no-op tasks, default chunk size",
    "maxtasks1": "`map` of no-ops with `max_tasks_per_child=1` (`maxtasksperchild=1`), chunk"
    " size 1, so that each task runs in a worker started for it: time per task",
    "fact100": "factorials of 1..=100, warm pool (`map`)",
    "fact3000": "factorials of 1..=3000, 2 workers (`map`)",
    "bytes64m": "64 MiB argument and result round trip (`apply`)",
}

# Python's implementations and the workloads each runs.
PYTHON = {
    "mp-fork": [
        "startup",
        "pool100",
        "apply",
        "map100k",
        "maxtasks1",
        "fact100",
        "fact3000",
        "bytes64m",
    ],
    "mp-forkserver": ["startup", "pool100", "apply", "map100k", "fact100"],
    "mp-spawn": ["startup", "apply", "map100k", "fact100"],
    "cf-executor": ["startup", "apply", "map100k", "fact100", "fact3000", "bytes64m"],
    "py-serial": ["fact100", "fact3000"],
    "py-copy": ["bytes64m"],
}

LABELS = {
    "procpool": "procpool, forkserver (the default; 64 MiB as `SharedBytes`)",
    "procpool-spawn": "procpool, spawn (`StartMethod::Spawn`)",
    "procpool-copied": "procpool, 64 MiB as `ByteBuf`, copied through the socket",
    "procpool-read": "procpool, 64 MiB `SharedBytes` read whole by the task and again by the caller",
    "rayon": "rayon, 2 threads (in-process floor)",
    "pipe": "pipe ping-pong, 2 processes, blocking reads (IPC floor)",
    "pipe-watch": "socket-pair ping-pong, 2 processes, watching as the pool does (IPC floor)",
    "serial": "Rust serial loop",
    "memcpy": "Rust `memcpy` of 64 MiB",
    "mp-fork": "multiprocessing.Pool, fork",
    "mp-forkserver": "multiprocessing.Pool, forkserver",
    "mp-spawn": "multiprocessing.Pool, spawn",
    "cf-executor": "ProcessPoolExecutor (fork)",
    "py-serial": "Python serial loop",
    "py-copy": "Python copy of 64 MiB (`bytearray`)",
}

# What procpool-compare measures (its constants of the same names), for the report: the
# tasks of one ``maxtasks1`` map, and the deaths ``respawn`` averages over.
ONE_JOB_CALLS = 1_000
RESPAWN_DEATHS = 20

# ProcessPoolExecutor.map sends one task a message by default: its 100,000-task map is
# measured on fewer tasks and reported as the time 100,000 would take at that rate.
EXECUTOR_MAP_ITEMS = 2_000


def noop(x):
    return x


def echo(b):
    return b


def factorial(n):
    """n!, by the product of 1..=n, as the Pool tutorial computes it."""
    result = 1
    for k in range(1, n + 1):
        result *= k
    return result


def per_op(warm, reps, op):
    for _ in range(warm):
        op()
    started = time.perf_counter()
    for _ in range(reps):
        op()
    return (time.perf_counter() - started) / reps


class Executor:
    """ProcessPoolExecutor with the few Pool methods the workloads use."""

    def __init__(self, workers):
        self.inner = concurrent.futures.ProcessPoolExecutor(workers)

    def apply(self, f, args):
        return self.inner.submit(f, *args).result()

    def map(self, f, items):
        return list(self.inner.map(f, items))

    def terminate(self):
        self.inner.shutdown(wait=True, cancel_futures=True)


def make_pool(impl, workers, maxtasksperchild=None):
    if impl == "cf-executor":
        return Executor(workers)
    method = impl.removeprefix("mp-")
    return multiprocessing.get_context(method).Pool(workers, maxtasksperchild=maxtasksperchild)


def sample(impl, workload, workers=WORKERS):
    """One sample of `workload` by `impl`, its pool (if any) of `workers` processes."""
    if impl == "py-serial":
        n = 100 if workload == "fact100" else 3000
        reps = (20, 200) if workload == "fact100" else (0, 1)
        return per_op(*reps, lambda: [factorial(k) for k in range(1, n + 1)])
    if impl == "py-copy":
        data = bytes(range(251)) * (BIG // 251 + 1)
        data = data[:BIG]
        return per_op(2, 10, lambda: bytearray(data))

    if workload == "startup":
        started = time.perf_counter()
        pool = make_pool(impl, workers)
        assert pool.apply(noop, (1,)) == 1
        elapsed = time.perf_counter() - started
        pool.terminate()
        return elapsed
    if workload == "pool100":
        started = time.perf_counter()
        pool = make_pool(impl, LARGE_POOL)
        assert pool.map(noop, range(LARGE_POOL)) == list(range(LARGE_POOL))
        elapsed = time.perf_counter() - started
        pool.terminate()
        return elapsed
    if workload == "maxtasks1":
        pool = make_pool(impl, workers, maxtasksperchild=1)
        try:
            one_map = per_op(0, 1, lambda: pool.map(noop, range(ONE_JOB_TASKS), chunksize=1))
            return one_map / ONE_JOB_TASKS
        finally:
            pool.terminate()

    pool = make_pool(impl, workers)
    try:
        if workload == "apply":
            return per_op(200, 2_000, lambda: pool.apply(noop, (1,)))
        if workload == "map100k":
            items = EXECUTOR_MAP_ITEMS if impl == "cf-executor" else 100_000
            seconds = per_op(1, 3, lambda: pool.map(noop, range(items)))
            return seconds * 100_000 / items
        if workload == "fact100":
            return per_op(20, 200, lambda: pool.map(factorial, range(1, 101)))
        if workload == "fact3000":
            pool.apply(noop, (1,))
            return per_op(0, 1, lambda: pool.map(factorial, range(1, 3001)))
        if workload == "bytes64m":
            data = bytes(range(251)) * (BIG // 251 + 1)
            held = [data[:BIG]]

            def round_trip():
                held[0] = pool.apply(echo, (held[0],))

            return per_op(1, 3, round_trip)
    finally:
        pool.terminate()
    raise SystemExit(f"pools.py: no such measurement: {impl} {workload}")


def run_sample(command):
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def pairs(compare_bin):
    listed = subprocess.run(
        [compare_bin, "list"], check=True, capture_output=True, text=True
    ).stdout
    found = []
    for line in listed.splitlines():
        impl, workload = line.split()
        found.append((impl, workload, [compare_bin, "sample", impl, workload]))
    me = os.path.abspath(__file__)
    for impl, workloads in PYTHON.items():
        for workload in workloads:
            found.append((impl, workload, [sys.executable, me, "sample", impl, workload]))
    return found


def drive(compare_bin, reps, log):
    """Every pair `reps` times, interleaved; returns {(impl, workload): [seconds, ...]}."""
    todo = pairs(compare_bin)
    times = {(impl, workload): [] for impl, workload, _ in todo}
    for rep in range(reps):
        for workload in WORKLOADS:
            group = [p for p in todo if p[1] == workload]
            shift = rep % len(group)
            for impl, _, command in group[shift:] + group[:shift]:
                seconds = run_sample(command)
                times[(impl, workload)].append(seconds)
                print(f"rep {rep + 1}/{reps} {workload:9} {impl:14} {fmt(seconds)}", file=log)
    return times


def fmt(seconds):
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def shell(command):
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine():
    model = "unknown"
    for line in shell(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    memory = "unknown"
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    return {
        "CPU": model,
        "cores (available to this process)": str(len(os.sched_getaffinity(0))),
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "rustc": shell(["rustc", "--version"]).strip() or "unknown",
        "python": f"Python {platform.python_version()}",
    }


def busy_seconds():
    """CPU seconds the whole machine has spent busy, and those of this process's reaped
    children (every sample), so that the difference is what other processes took."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = sum(fields[:3]) + sum(fields[5:8])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy / os.sysconf("SC_CLK_TCK"), children.ru_utime + children.ru_stime


def ratio_text(ratio):
    """A bandwidth ratio as "1/N" below 1 and "N×" above."""
    return f"1/{1 / ratio:.1f}" if ratio < 1 else f"{ratio:.1f}×"


def report(times, reps, command, other_load):
    med = {key: statistics.median(values) for key, values in times.items()}

    def m(impl, workload):
        return med.get((impl, workload))

    def paired(a, b, workload):
        """The median over repetitions of a/b, each pair measured seconds apart."""
        return statistics.median(
            x / y for x, y in zip(times[(a, workload)], times[(b, workload)])
        )

    lines = []
    lines.append(f"Measured by `{command}` with {reps} interleaved repetitions; each cell is the")
    lines.append("median over the repetitions, each repetition a fresh process. Numbers are from a")
    lines.append("machine that may be shared with other work, so treat single-digit-percent differences")
    lines.append("as noise; the ratios are what the targets are about, and both sides of each ratio")
    lines.append("come from this one run. Each ratio below is the median of the ratios of the two")
    lines.append("sides within each repetition (paired), so that a burst of other work hits both.")
    lines.append(
        f"While it ran, other processes kept {other_load:.2f} of the 2 cores busy on average"
        " (from `/proc/stat`, less this run's own processes)."
    )
    lines.append("")
    lines.append("| | |")
    lines.append("|---|---|")
    for key, value in machine().items():
        lines.append(f"| {key} | {value} |")
    lines.append("")

    lines.append("### Medians")
    lines.append("")
    impls = list(LABELS)
    header = "| implementation | " + " | ".join(WORKLOADS) + " |"
    lines.append(header)
    lines.append("|---" * (len(WORKLOADS) + 1) + "|")
    for impl in impls:
        row = [LABELS[impl]]
        if not any((impl, w) in med for w in WORKLOADS):
            continue
        for workload in WORKLOADS:
            value = m(impl, workload)
            row.append(fmt(value) if value is not None else "")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Workloads: " + "; ".join(f"`{k}`: {v}" for k, v in WORKLOADS.items()) + ".")
    lines.append(
        "Every pool has 2 processes but in `pool100` (100) and `respawn` (1)."
        f" `ProcessPoolExecutor.map` (chunk size 1 by default) ran {EXECUTOR_MAP_ITEMS:,} tasks,"
        " scaled to 100,000."
    )
    lines.append(
        f"`maxtasks1` is one map of {ONE_JOB_CALLS:,} tasks for procpool and of"
        f" {ONE_JOB_TASKS:,} for Python, divided by the count. `respawn` is the mean over"
        f" {RESPAWN_DEATHS} deaths of the time from the failed `apply` returning `WorkerDied` to an `apply`"
        " of the no-op, issued at once, coming back: the replacement's start, its handshake"
        " and one round trip; Python's pools have no such row (a worker that exits under"
        " `Pool.apply` leaves the call waiting forever)."
    )
    lines.append(
        "rayon's start-up is a thread pool of 2 built and one `install` back; its `apply` is"
        " one `install` of a no-op; its maps are `into_par_iter().map().collect()`."
    )
    lines.append("")

    lines.append("### Targets")
    lines.append("")
    lines.append("| target | measured | met |")
    lines.append("|---|---|---|")

    def row(target, value, ok, detail):
        lines.append(f"| {target} | {detail} | {'met' if ok else '**not met**'} |")

    start = m("procpool", "startup")
    py_starts = {i: m(i, "startup") for i in PYTHON if m(i, "startup") is not None}
    fastest = min(py_starts, key=py_starts.get)
    ratio = paired(fastest, "procpool", "startup")
    row(
        "start-up ≥ 5× faster than Python's fastest pool",
        ratio,
        ratio >= 5,
        f"{ratio:.1f}× ({fmt(start)} vs {LABELS[fastest]} {fmt(py_starts[fastest])})",
    )
    for impl in ("mp-spawn", "mp-forkserver"):
        ratio = paired(impl, "procpool", "startup")
        row(
            f"start-up ≥ 50× faster than {LABELS[impl]}",
            ratio,
            ratio >= 50,
            f"{ratio:.1f}× ({fmt(py_starts[impl])})",
        )
    took = m("procpool", "pool100")
    beside = "; ".join(
        f"{LABELS[i]} {fmt(m(i, 'pool100'))}, {paired(i, 'procpool', 'pool100'):.0f}× as long"
        for i in ("mp-fork", "mp-forkserver")
    )
    row(
        "a pool of 100 ready and a first `map` of 100 back ≤ 30 ms",
        took,
        took <= 30e-3,
        f"{fmt(took)} ({beside})",
    )
    took = m("procpool", "respawn")
    row(
        "a replacement worker ready ≤ 1 ms after a death is noticed",
        took,
        took <= 1e-3,
        f"{fmt(took)}, one no-op round trip included"
        f" (spawn: {fmt(m('procpool-spawn', 'respawn'))})",
    )
    ratio = paired("procpool", "pipe-watch", "apply")
    row(
        "`apply` no-op ≤ 1.5× the ping-pong that watches as the pool does",
        ratio,
        ratio <= 1.5,
        f"{ratio:.2f}× ({fmt(m('procpool', 'apply'))} vs {fmt(m('pipe-watch', 'apply'))})",
    )
    ratio = paired("mp-fork", "procpool", "map100k")
    row(
        "`map` 100k no-ops ≥ 20× the throughput of `multiprocessing.Pool.map`",
        ratio,
        ratio >= 20,
        f"{ratio:.1f}× ({100_000 / m('procpool', 'map100k') / 1e6:.2f} M tasks/s vs"
        f" {100_000 / m('mp-fork', 'map100k') / 1e6:.2f} M tasks/s, fork)",
    )
    rate = 1 / m("procpool", "maxtasks1")
    row(
        "`max_tasks_per_child=1`, chunk size 1: ≥ 5,000 tasks/s",
        rate,
        rate >= 5_000,
        f"{rate:,.0f} tasks/s ({paired('mp-fork', 'procpool', 'maxtasks1'):.1f}× the"
        f" {1 / m('mp-fork', 'maxtasks1'):,.0f} tasks/s of {LABELS['mp-fork']},"
        " `maxtasksperchild=1`)",
    )
    ratio = paired("procpool", "serial", "fact100")
    row(
        "factorials 1..=100, warm pool ≤ 2× serial",
        ratio,
        ratio <= 2,
        f"{ratio:.1f}× ({fmt(m('procpool', 'fact100'))} vs {fmt(m('serial', 'fact100'))})",
    )
    # Both speed-ups share the serial loop, so procpool's is at least rayon's exactly when
    # its time is at most rayon's: compared directly, pair by pair, the serial loop's own
    # noise (its samples ranged by half within one run) stays out of it.
    ratio = paired("rayon", "procpool", "fact3000")
    row(
        "factorials 1..=3000, 2 workers: a speed-up over serial ≥ rayon's",
        ratio,
        ratio >= 1,
        f"rayon's time / procpool's {ratio:.3f} ({fmt(m('procpool', 'fact3000'))},"
        f" {fmt(m('rayon', 'fact3000'))}; speed-ups over serial"
        f" {paired('serial', 'procpool', 'fact3000'):.2f}× and"
        f" {paired('serial', 'rayon', 'fact3000'):.2f}×)",
    )
    ratio = paired("memcpy", "procpool", "bytes64m")
    row(
        "64 MiB `SharedBytes` round trip ≥ 1/3 of `memcpy` bandwidth",
        ratio,
        ratio >= 1 / 3,
        f"{ratio:.0f}× ({fmt(m('procpool', 'bytes64m'))} a round trip,"
        f" {fmt(m('memcpy', 'bytes64m'))} a `memcpy`)",
    )
    ratio = paired("memcpy", "procpool-copied", "bytes64m")
    row(
        "64 MiB `ByteBuf` round trip ≥ 1/3 of `memcpy` bandwidth",
        ratio,
        ratio >= 1 / 3,
        f"1/{1 / ratio:.1f} ({fmt(m('procpool-copied', 'bytes64m'))} a round trip,"
        f" {fmt(m('memcpy', 'bytes64m'))} a `memcpy`; why: docs/perf/journal.md § 11)",
    )
    lines.append("")
    lines.append("Bandwidths count the 64 MiB once per round trip. Context, same run:")
    lines.append("")
    lines.append(
        f"- start methods: a pool of 2 started by spawn takes {fmt(m('procpool-spawn', 'startup'))}"
        f" ({paired('procpool-spawn', 'procpool', 'startup'):.1f}× the forkserver's), a pool of"
        f" 100 {fmt(m('procpool-spawn', 'pool100'))}"
        f" ({paired('procpool-spawn', 'procpool', 'pool100'):.1f}×), and"
        f" `max_tasks_per_child=1` runs {1 / m('procpool-spawn', 'maxtasks1'):,.0f} tasks/s"
        f" ({paired('procpool-spawn', 'procpool', 'maxtasks1'):.1f}× the time per task);"
    )
    lines.append(
        f"- `apply` is {paired('procpool', 'pipe', 'apply'):.2f}× the ping-pong over pipes whose"
        f" ends sleep in blocking reads ({fmt(m('pipe', 'apply'))}), which pays a wake-up each"
        " way;"
    )
    read = paired("memcpy", "procpool-read", "bytes64m")
    copied = paired("memcpy", "procpool-copied", "bytes64m")
    lines.append(
        "- a `SharedBytes` round trip maps the same memory on each side and copies no byte;"
        f" when the task reads all 64 MiB and the caller reads them all again, the round trip"
        f" takes {fmt(m('procpool-read', 'bytes64m'))}, {ratio_text(read)} of `memcpy`"
        f" bandwidth; the same bytes as a `ByteBuf`, copied through the socket both ways,"
        f" {ratio_text(copied)};"
    )
    lines.append(
        f"- the pool as it is, with one chunk per worker (`map_with`, chunk size n/2):"
        f" factorials 1..=100 {paired('procpool-2chunks', 'serial', 'fact100'):.1f}× serial;"
        f" map of 100k no-ops {paired('mp-fork', 'procpool-2chunks', 'map100k'):.1f}×"
        " Python's throughput;"
    )
    floor = paired("memcpy", "pipe", "bytes64m")
    lines.append(
        f"- the bare socket-pair stream of 64 MiB there and back (buffers reused) reaches"
        f" 1/{1 / floor:.1f} of `memcpy` bandwidth"
        + (": no design that copies through a socket reaches 1/3 here;" if floor < 1 / 3 else ";")
    )
    lines.append(
        f"- rayon's threads: `apply` {paired('rayon', 'pipe-watch', 'apply'):.1f}× the watching"
        " ping-pong,"
        f" factorials 1..=100 {paired('rayon', 'serial', 'fact100'):.1f}× serial;"
    )
    lines.append(
        "- Python's pools beside Python's serial loop: "
        + "; ".join(
            f"{LABELS[i]} {paired(i, 'py-serial', 'fact100'):.1f}× serial on 1..=100"
            for i in ("mp-fork", "cf-executor")
        )
        + "; "
        + "; ".join(
            f"{LABELS[i]} {paired('py-serial', i, 'fact3000'):.2f}× faster on 1..=3000"
            for i in ("mp-fork", "cf-executor")
        )
        + "."
    )
    return "\n".join(lines)


BEGIN = "<!-- compare:begin (written by bench/compare/pools.py; edits here are lost) -->"
END = "<!-- compare:end -->"


def write(path, section):
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = "# Benchmarks\n\n## Side by side\n\n" + block + "\n" + text
    with open(path, "w") as f:
        f.write(text)


# The scaling run: factorials of 1..=3000 (`fact3000`) by each pool at each worker count,
# each beside the serial loop of its own language. Pools: implementation -> serial loop.
SCALING_POOLS = {"procpool": "serial", "rayon": "serial", "mp-fork": "py-serial"}
SCALING_SERIAL = ("serial", "py-serial")
SCALING_LABELS = {
    "procpool": "procpool `map`",
    "rayon": "rayon `par_iter`",
    "mp-fork": "`multiprocessing.Pool.map`, fork",
}
SCALING_BEGIN = "<!-- scaling:begin (written by bench/compare/scaling.sh; edits here are lost) -->"
SCALING_END = "<!-- scaling:end -->"
SCALING_HEADING = "## Scaling on 16 cores"


def positive(text):
    """An argparse type: a whole number of 1 or more."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a count of 1 or more: {text}")
    return value


def scaling_command(compare_bin, impl, workers):
    """The command that takes one `fact3000` sample of `impl`; `workers` is None for the
    serial loops, which have none."""
    if impl in ("procpool", "rayon", "serial"):
        command = [compare_bin, "sample", impl, "fact3000"]
    else:
        command = [sys.executable, os.path.abspath(__file__), "sample", impl, "fact3000"]
    if workers is not None:
        command += ["--workers", str(workers)]
    return command


def drive_scaling(compare_bin, counts, reps, log):
    """For each repetition and each worker count (a block), one sample of each serial loop
    and of each pool at that count, in an order that rotates with the repetition, each in a
    fresh process. Returns {(impl, count): [seconds, one a repetition]}: the serial loops
    are measured in every block, so that each speed-up pairs samples taken seconds apart."""
    block = ["serial", "procpool", "rayon", "py-serial", "mp-fork"]
    times = {(impl, n): [] for n in counts for impl in block}
    total = reps * len(counts) * len(block)
    done = 0
    started = time.monotonic()
    for rep in range(reps):
        shift = rep % len(counts)
        for n in counts[shift:] + counts[:shift]:
            turn = rep % len(block)
            for impl in block[turn:] + block[:turn]:
                workers = None if impl in SCALING_SERIAL else n
                seconds = run_sample(scaling_command(compare_bin, impl, workers))
                times[(impl, n)].append(seconds)
                done += 1
                print(
                    f"rep {rep + 1}/{reps} workers {n:3} {impl:10} {fmt(seconds):>10}"
                    f"   [{done}/{total}, {time.monotonic() - started:.0f} s]",
                    file=log,
                    flush=True,
                )
    return times


def topology():
    """Sockets, cores and threads per core as lscpu counts them (empty where it cannot)."""
    fields = {}
    for line in shell(["lscpu"]).splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    try:
        sockets = int(fields["Socket(s)"])
        cores = int(fields["Core(s) per socket"])
        threads = int(fields["Thread(s) per core"])
    except (KeyError, ValueError):
        return ""
    return (
        f"{sockets} socket{'s' if sockets > 1 else ''} × {cores} core{'s' if cores > 1 else ''}"
        f" × {threads} thread{'s' if threads > 1 else ''} ({sockets * cores} physical cores)"
    )


def cpu_quota():
    """The CPUs' worth of time the cgroup of this process may use (its CFS quota over its
    period, cgroup v2 or v1), or None where there is no quota."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
    except (OSError, ValueError):
        try:
            with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
                quota = f.read().strip()
            with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                period = f.read().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    return int(quota) / int(period)


def usable_cores():
    """The cores this process can run on at once: those it may be scheduled on, fewer where
    a cgroup quota allows less time than that."""
    cores = len(os.sched_getaffinity(0))
    quota = cpu_quota()
    return cores if quota is None else min(cores, quota)


def scaling_machine(rustc, tree):
    """The machine table of the compare run, with the CPU topology and the online CPUs;
    `rustc`, where given, names the compiler that built procpool-compare, and `tree` the
    source it was built from."""
    found = machine()
    rows = {"CPU": found["CPU"]}
    rows["CPUs online / available to this process"] = (
        f"{os.cpu_count()} / {len(os.sched_getaffinity(0))}"
    )
    shape = topology()
    if shape:
        rows["topology (lscpu)"] = shape
    quota = cpu_quota()
    rows["cgroup CPU quota"] = "none" if quota is None else f"{quota:g} CPUs"
    for key in ("memory", "kernel", "rustc", "python"):
        rows[key] = found[key]
    if rustc:
        rows["rustc"] = rustc
    rows["procpool built from"] = tree or "unknown"
    return rows


def scaling_report(data):
    """The generated section of the scaling run, from what `drive_scaling` measured and the
    circumstances `main` recorded in `data` (the same dict the `--json` file holds)."""
    counts = data["workers"]
    cores = data["cores"]
    reps = data["reps"]
    times = {(t["impl"], t["workers"]): t["seconds"] for t in data["times"]}

    def median(impl, n):
        return statistics.median(times[(impl, n)])

    def speedup(impl, n):
        """Serial time over pool time, paired within each repetition's block, median."""
        serial = times[(SCALING_POOLS[impl], n)]
        return statistics.median(s / p for s, p in zip(serial, times[(impl, n)]))

    over = [n for n in counts if n > cores]
    lines = textwrap.wrap(
        f"Measured by `{data['command']}` with {reps} interleaved"
        f" repetition{'s' if reps > 1 else ''}. For each worker count, each repetition runs the"
        " Rust serial loop, procpool, rayon, Python's serial loop and `multiprocessing.Pool`"
        " (fork) once each on factorials of 1..=3000, in an order that rotates from one"
        " repetition to the next, each sample in a fresh process. Times are medians over the"
        " repetitions; each speed-up is the median over the repetitions of the time of the"
        " serial loop of the same language (Rust for procpool and rayon, Python for"
        " `multiprocessing.Pool`) over the time of the pool, both measured in the same block."
        f" While it ran, other processes kept {data['other_load']:.2f} of the {cores:g} cores"
        " busy on average (from `/proc/stat`, less this run's own processes); the whole run"
        f" took {data['wall_seconds'] / 60:.1f} minutes.",
        width=92,
        break_long_words=False,
        break_on_hyphens=False,
    )
    lines.append("")
    lines.append("| | |")
    lines.append("|---|---|")
    for key, value in data["machine"].items():
        lines.append(f"| {key} | {value} |")
    lines.append("")
    header = ["workers"]
    for impl in SCALING_POOLS:
        header += [SCALING_LABELS[impl], "speed-up"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---" * len(header) + "|")
    for n in counts:
        row = [f"{n} †" if n > cores else str(n)]
        for impl in SCALING_POOLS:
            row += [fmt(median(impl, n)), f"{speedup(impl, n):.2f}×"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    rust = statistics.median(s for n in counts for s in times[("serial", n)])
    python = statistics.median(s for n in counts for s in times[("py-serial", n)])
    lines.append(
        f"Serial loops, median over every block: Rust {fmt(rust)}, Python {fmt(python)}."
        " The ideal speed-up at n workers is n."
    )
    if over:
        lines.append("")
        lines.append(
            f"**† More workers than cores:** {', '.join(map(str, over))} worker"
            f"{'s' if over != [1] else ''} asked for, with {cores:g} cores available to the run;"
            " those rows measure the cores oversubscribed, not scaling."
        )
    return "\n".join(lines)


def write_scaling(path, section):
    """Puts `section` between the scaling markers of `path`; where they are missing, at the
    end of its scaling heading's section, or at the end of the file under that heading."""
    with open(path) as f:
        text = f.read()
    block = f"{SCALING_BEGIN}\n{section}\n{SCALING_END}"
    begin = text.find("<!-- scaling:begin")
    end = text.find(SCALING_END)
    if begin >= 0 and end > begin:
        text = text[:begin] + block + text[end + len(SCALING_END):]
    elif SCALING_HEADING in text:
        at = text.index(SCALING_HEADING) + len(SCALING_HEADING)
        after = text.find("\n## ", at)
        after = len(text) if after < 0 else after + 1
        text = text[:after].rstrip("\n") + "\n\n" + block + "\n\n" + text[after:]
        text = text.rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + f"\n\n{SCALING_HEADING}\n\n{block}\n"
    with open(path, "w") as f:
        f.write(text)


def scaling(args):
    """The `scaling` subcommand: drive (or read back with `--from-json`), then write."""
    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
    else:
        cores = usable_cores()
        over = [n for n in args.workers if n > cores]
        if over:
            print(
                f"pools.py scaling: WARNING: {', '.join(map(str, over))} workers asked for, but"
                f" only {cores:g} cores are available: those rows will oversubscribe the cores"
                " and are marked † in the table",
                file=sys.stderr,
            )
        busy_before, ours_before = busy_seconds()
        started = time.monotonic()
        times = drive_scaling(args.compare_bin, args.workers, args.reps, sys.stderr)
        busy_after, ours_after = busy_seconds()
        wall = time.monotonic() - started
        ours = ours_after - ours_before + time.process_time()
        data = {
            "command": args.command or " ".join(sys.argv),
            "reps": args.reps,
            "workers": args.workers,
            "cores": cores,
            "machine": scaling_machine(args.rustc, args.tree),
            "other_load": max(0.0, busy_after - busy_before - ours) / wall,
            "wall_seconds": wall,
            "times": [
                {"impl": impl, "workers": n, "seconds": seconds}
                for (impl, n), seconds in times.items()
            ],
        }
        if args.json:
            with open(args.json, "w") as f:
                json.dump(data, f, indent=1)
            print(f"wrote {args.json}", file=sys.stderr)
    section = scaling_report(data)
    print(section)
    if args.out:
        write_scaling(args.out, section)
        print(f"wrote {args.out}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("sample", help="one sample, printed as JSON")
    one.add_argument("impl", choices=sorted(PYTHON))
    one.add_argument("workload", choices=sorted(WORKLOADS))
    one.add_argument(
        "--workers", type=positive, default=None, help=f"processes in the pool (default {WORKERS})"
    )
    run = sub.add_parser("run", help="the whole interleaved comparison")
    run.add_argument("--compare-bin", required=True, help="path of procpool-compare")
    run.add_argument("--reps", type=int, default=5)
    run.add_argument("--out", default="BENCHMARKS.md")
    run.add_argument("--command", default=None, help="the command to print in the report")
    scale = sub.add_parser("scaling", help="the scaling run on factorials of 1..=3000")
    scale.add_argument("--compare-bin", help="path of procpool-compare")
    scale.add_argument("--reps", type=positive, default=3)
    scale.add_argument(
        "--workers", type=positive, nargs="+", default=[1, 2, 4, 8, 16], help="worker counts"
    )
    scale.add_argument("--out", default=None, help="the BENCHMARKS.md to rewrite")
    scale.add_argument("--json", default=None, help="also save every sample there")
    scale.add_argument("--from-json", default=None, help="write the report of a saved run")
    scale.add_argument("--rustc", default=None, help="the compiler that built procpool-compare")
    scale.add_argument("--tree", default=None, help="the source it was built from (a commit)")
    scale.add_argument("--command", default=None, help="the command to print in the report")
    args = parser.parse_args()
    if args.what == "scaling":
        if not args.compare_bin and not args.from_json:
            parser.error("scaling needs --compare-bin (or --from-json)")
        scaling(args)
        return
    if args.what == "sample":
        if args.workload not in PYTHON[args.impl]:
            raise SystemExit(f"pools.py: no such measurement: {args.impl} {args.workload}")
        if args.workers is not None and args.impl in ("py-serial", "py-copy"):
            raise SystemExit(f"pools.py: {args.impl} has no workers to count: drop --workers")
        if args.workers is not None and args.workload == "pool100":
            raise SystemExit("pools.py: pool100 sets its own pool size: drop --workers")
        line = {"impl": args.impl, "workload": args.workload}
        if args.workers is not None:
            line["workers"] = args.workers
        line["seconds"] = sample(args.impl, args.workload, args.workers or WORKERS)
        print(json.dumps(line))
        return
    busy_before, ours_before = busy_seconds()
    started = time.monotonic()
    times = drive(args.compare_bin, args.reps, sys.stderr)
    busy_after, ours_after = busy_seconds()
    ours = ours_after - ours_before + time.process_time()
    other_load = max(0.0, busy_after - busy_before - ours) / (time.monotonic() - started)
    command = args.command or " ".join(sys.argv)
    write(args.out, report(times, args.reps, command, other_load))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
