#!/usr/bin/env python3
"""procpool's pool over Redis Streams beside Celery on the same redis-server, in one run.

Two roles:

* ``redis_compare.py sample IMPL WORKLOAD URL [...]`` runs one Celery sample in this fresh
  process (Celery and its Redis client must be importable: ``bench/compare/redis.sh`` makes
  a virtual environment with ``pip install "celery[redis]"``) and prints one line of JSON,
  as ``procpool-redis sample`` does for the Rust side.
* ``redis_compare.py run --bin PATH --reps N --out BENCHMARKS.md`` is the driver: it starts
  its own ``redis-server`` (a free loopback port, no persistence), one procpool host agent
  (2 workers, its own process group, database 0) and one Celery worker (``-c 2 --pool
  prefork``, database 1); then for each repetition, for each workload, one sample of each
  side in an order that rotates with the repetition, each in a fresh process. It writes the
  medians, the paired ratios and the targets into ``BENCHMARKS.md`` between the
  ``redis:begin`` and ``redis:end`` markers, and stops everything it started, by pid.

Workloads: ``apply`` (one no-op round trip, many after a warm-up: median and p99),
``map100k`` (100,000 no-ops: procpool's ``map`` with automatic chunking; Celery's
``noop.chunks(..., 100)`` as a group), ``kill`` (procpool: a whole host agent SIGKILLed under
a call while another serves, until the result of its run again; the worker process alone
SIGKILLed, until the ``WorkerDied`` error. Celery: the pool child SIGKILLed under a task,
with the defaults until the ``WorkerLostError``, and with ``acks_late`` +
``reject_on_worker_lost`` until the result of its run again).
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# The lease of the host agents in the kill samples; the target is this plus 100 ms.
LEASE_MS = 500
APPLY_CALLS_PROCPOOL = 5000
APPLY_CALLS_CELERY = 1000

LABELS = {
    "procpool": "procpool over Redis, 1 host agent of 2 workers",
    "celery": "Celery 2 prefork children, Redis broker and result backend",
    "procpool-host": "procpool: host agent SIGKILLed (whole group), another host serving: kill → result of the run again",
    "procpool-child": "procpool: the worker process SIGKILLed, host lives: kill → `WorkerDied` error",
    "celery-child": "Celery defaults: pool child SIGKILLed: kill → `WorkerLostError`",
    "celery-child-late": "Celery `acks_late` + `reject_on_worker_lost`: pool child SIGKILLed: kill → result of the run again",
}


# ---------------------------------------------------------------------------------------
# Celery samples (run in a fresh process each)


def celery_sample(workload, url, arg):
    os.environ["CELERY_BENCH_REDIS"] = url
    sys.path.insert(0, HERE)
    import celery_app  # noqa: E402  (needs the URL in the environment first)

    if workload == "apply":
        calls = int(arg)
        for i in range(50):
            assert celery_app.noop.delay(i).get(timeout=60) == i
        times = []
        for i in range(calls):
            started = time.perf_counter()
            x = celery_app.noop.delay(i).get(timeout=60)
            times.append(time.perf_counter() - started)
            assert x == i
        times.sort()
        at = lambda q: times[round((len(times) - 1) * q)]  # noqa: E731
        return {"seconds": at(0.5), "p90": at(0.9), "p99": at(0.99),
                "mean": sum(times) / len(times), "calls": calls}
    if workload == "map100k":
        n = int(arg)
        # Warm-up: one small map, so that connections and the result listener are up.
        celery_app.noop.chunks(zip(range(1000)), 100).group().apply_async().get(timeout=120)
        started = time.perf_counter()
        out = celery_app.noop.chunks(zip(range(n)), 100).group().apply_async().get(timeout=600)
        seconds = time.perf_counter() - started
        flat = [x for chunk in out for x in chunk]
        assert len(flat) == n and sum(flat) == n * (n - 1) // 2
        return {"seconds": seconds * 100_000 / n, "items": n, "tasks_per_s": n / seconds}
    if workload in ("child", "child-late"):
        task = celery_app.hold_once if workload == "child" else celery_app.hold_once_late
        with tempfile.TemporaryDirectory() as tmp:
            marker = os.path.join(tmp, "started")
            result = task.delay(marker, 3600)
            deadline = time.monotonic() + 60
            while True:
                try:
                    with open(marker) as f:
                        pid = int(f.read())
                    break
                except FileNotFoundError:
                    assert time.monotonic() < deadline, "the task did not start"
                    time.sleep(0.001)
            os.kill(pid, signal.SIGKILL)
            killed = time.perf_counter()
            try:
                outcome = f"result {result.get(timeout=120)}"
            except Exception as error:  # noqa: BLE001  (the error is what is measured)
                outcome = type(error).__name__
            seconds = time.perf_counter() - killed
        return {"seconds": seconds, "outcome": outcome}
    raise SystemExit(f"no such Celery workload: {workload}")


# ---------------------------------------------------------------------------------------
# The driver


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_cli_info(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"INFO server\r\n")
            data = b""
            while b"redis_version" not in data or not data.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        for line in data.decode(errors="replace").splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


class Started:
    """The processes this run started, each in a group of its own, stopped by pid."""

    def __init__(self):
        self.procs = []

    def add(self, proc):
        self.procs.append(proc)
        return proc

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    if proc.stdin:
                        proc.stdin.close()
                    os.killpg(proc.pid, signal.SIGTERM)
                except (OSError, ProcessLookupError):
                    pass
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def start_redis(started, tmp):
    port = free_port()
    proc = started.add(subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL, start_new_session=True))
    deadline = time.monotonic() + 30
    while not ping(port):
        assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not answer"
        time.sleep(0.02)
    return port


def start_host(started, binary, url):
    proc = started.add(subprocess.Popen(
        [binary, "host", url, "bench", "2", str(LEASE_MS), "main"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True))
    line = proc.stdout.readline().strip()
    assert line == "ready", f"the host agent said {line!r}"


def start_celery(started, python, url, tmp):
    env = dict(os.environ, CELERY_BENCH_REDIS=url)
    celery = os.path.join(os.path.dirname(python), "celery")
    log = open(os.path.join(tmp, "celery.log"), "w")
    started.add(subprocess.Popen(
        [celery, "-A", "celery_app", "worker", "-c", "2", "--pool", "prefork", "-O", "fair",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    # Ready once it answers a no-op.
    check = ("import sys; sys.path.insert(0, %r); import celery_app; "
             "assert celery_app.noop.delay(7).get(timeout=60) == 7") % HERE
    subprocess.run([python, "-c", check], env=env, check=True, timeout=90)


def run_sample(command):
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900).stdout
    return json.loads(out.strip().splitlines()[-1])


def plan(binary, python, url_pp, url_celery, map_items):
    me = os.path.abspath(__file__)
    celery = lambda workload, arg: [python, me, "sample", "celery", workload, url_celery, str(arg)]  # noqa: E731
    return {
        "apply": [
            ("procpool", [binary, "sample", "apply", url_pp, "bench", str(APPLY_CALLS_PROCPOOL)]),
            ("celery", celery("apply", APPLY_CALLS_CELERY)),
        ],
        "map100k": [
            ("procpool", [binary, "sample", "map100k", url_pp, "bench"]),
            ("celery", celery("map100k", map_items)),
        ],
        "kill": [
            ("procpool-host", [binary, "sample", "recover", url_pp, str(LEASE_MS)]),
            ("procpool-child", [binary, "sample", "childkill", url_pp, str(LEASE_MS)]),
            ("celery-child", celery("child", 0)),
            ("celery-child-late", celery("child-late", 0)),
        ],
    }


def drive(todo, reps, log):
    samples = {(w, impl): [] for w, group in todo.items() for impl, _ in group}
    for rep in range(reps):
        for workload, group in todo.items():
            shift = rep % len(group)
            for impl, command in group[shift:] + group[:shift]:
                sample = run_sample(command)
                samples[(workload, impl)].append(sample)
                print(f"rep {rep + 1}/{reps} {workload:8} {impl:18} {json.dumps(sample)}",
                      file=log, flush=True)
    return samples


def fmt(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def rate(per_second):
    return f"{per_second / 1e6:.2f} M/s" if per_second >= 1e6 else f"{per_second / 1e3:.1f} k/s"


def machine(versions):
    model, processors = "unknown", 0
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("processor"):
                processors += 1
    rows = {
        "CPU (`/proc/cpuinfo` model name)": model,
        "cores (`/proc/cpuinfo` processors; available to this run)":
            f"{processors}; {len(os.sched_getaffinity(0))}",
        "kernel": f"{platform.system()} {platform.release()}",
    }
    rows.update(versions)
    return rows


def report(samples, reps, command, versions, map_items, other_load):
    def values(workload, impl, key="seconds"):
        return [s[key] for s in samples[(workload, impl)]]

    def med(workload, impl, key="seconds"):
        return statistics.median(values(workload, impl, key))

    def paired(workload, a, b):
        """Median over repetitions of b's time / a's time (a's speed-up over b)."""
        return statistics.median(y / x for x, y in zip(values(workload, a), values(workload, b)))

    lease = LEASE_MS / 1000
    pp_apply, pp_p99 = med("apply", "procpool"), med("apply", "procpool", "p99")
    ce_apply, ce_p99 = med("apply", "celery"), med("apply", "celery", "p99")
    pp_map, ce_map = med("map100k", "procpool"), med("map100k", "celery")
    host_kill = values("kill", "procpool-host")
    lines = []
    out = lines.append
    out(f"Measured by `{command}` with {reps} interleaved repetitions; each repetition runs every")
    out("sample in a fresh process, in an order that rotates with the repetition, against one")
    out("`redis-server` of the run's own on a loopback TCP port (no persistence): procpool on")
    out("database 0, Celery on database 1. One procpool host agent (2 worker processes, its own")
    out("process group) and one Celery worker (`-c 2 --pool prefork -O fair --without-gossip")
    out("--without-mingle --without-heartbeat`) serve throughout; the kill samples start hosts of")
    out(f"their own (1 worker each, lease {LEASE_MS} ms). Cells are medians over the repetitions;")
    out("ratios are the median of the per-repetition ratios (paired). Caller, workers, agents and")
    out("redis-server all share the cores.")
    out(f"While it ran, other processes kept {other_load:.2f} of the cores busy on average.")
    out("")
    out("| | |")
    out("|---|---|")
    for key, value in machine(versions).items():
        out(f"| {key} | {value} |")
    out("")
    out("### Medians")
    out("")
    out("| measurement | procpool over Redis | Celery | Celery / procpool (paired) |")
    out("|---|---|---|---|")
    out(f"| no-op round trip, median of {APPLY_CALLS_PROCPOOL:,} (procpool) / "
        f"{APPLY_CALLS_CELERY:,} (Celery) calls | {fmt(pp_apply)} | {fmt(ce_apply)} | "
        f"{paired('apply', 'procpool', 'celery'):.1f}× |")
    out(f"| no-op round trip, p99 | {fmt(pp_p99)} | {fmt(ce_p99)} | |")
    scaled = "" if map_items == 100_000 else f" (Celery ran {map_items:,}, scaled to 100,000)"
    out(f"| 100,000 no-ops{scaled}: time | {fmt(pp_map)} | {fmt(ce_map)} | "
        f"{paired('map100k', 'procpool', 'celery'):.1f}× |")
    out(f"| 100,000 no-ops: tasks/s | {rate(100_000 / pp_map)} | {rate(100_000 / ce_map)} | |")
    out("")
    out("procpool's map is `pool.map(noop, 0..100_000)` with automatic chunking (a pool planned")
    out("for 2 workers: 16 chunks); Celery's is `noop.chunks(zip(range(n)), 100).group()`, its")
    out("documented way to batch small tasks (unbatched, Celery's `group` is far slower).")
    out("")
    out("### A worker lost under a call")
    out("")
    out("| fault | median | min | max | outcome |")
    out("|---|---|---|---|---|")
    for impl in ("procpool-host", "procpool-child", "celery-child", "celery-child-late"):
        v = values("kill", impl)
        outcomes = sorted({s["outcome"] for s in samples[("kill", impl)]})
        out(f"| {LABELS[impl]} | {fmt(statistics.median(v))} | {fmt(min(v))} | {fmt(max(v))} "
            f"| {', '.join(outcomes)} |")
    out("")
    out("The faults differ: a procpool host agent's SIGKILL takes its whole machine's share of the")
    out("queue away (another host takes the call once its lease has passed without renewal);")
    out("Celery was measured only for the loss of one pool child, where its parent process is")
    out("alive to notice. A whole Celery worker lost holds its unacknowledged tasks until")
    out("`visibility_timeout` (1 h by default); that was not measured here.")
    out("")
    out("### Targets (issue 18, item 7)")
    out("")
    out("| target | measured | met |")
    out("|---|---|---|")
    mark = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    out(f"| `apply` round trip ≤ 0.3 ms | median {fmt(pp_apply)} (p99 {fmt(pp_p99)}) "
        f"| {mark(pp_apply <= 0.3e-3)} |")
    out(f"| `map` of 100k no-ops ≥ 1 M tasks/s, automatic chunking | {rate(100_000 / pp_map)} "
        f"(slowest repetition {rate(100_000 / max(values('map100k', 'procpool')))}) "
        f"| {mark(100_000 / pp_map >= 1e6)} |")
    bound = lease + 0.1
    within = sum(1 for s in host_kill if s <= bound)
    out(f"| host SIGKILL: calls re-run within lease + 100 ms ({fmt(bound)}) | median "
        f"{fmt(statistics.median(host_kill))}, max {fmt(max(host_kill))}; {within} of "
        f"{len(host_kill)} within | {mark(within == len(host_kill))} |")
    return "\n".join(lines)


BEGIN = "<!-- redis:begin (written by bench/compare/redis_compare.py; edits here are lost) -->"
END = "<!-- redis:end -->"
HEADING = "## Over Redis, beside Celery"


def write(path, section):
    with open(path) as f:
        text = f.read()
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        new = f"{HEADING}\n\n{block}\n\n"
        at = text.find("## Targets")
        text = text[:at] + new + text[at:] if at >= 0 else text.rstrip() + "\n\n" + new
    with open(path, "w") as f:
        f.write(text)


def busy_seconds():
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")


def proc_tree_cpu(pids):
    """CPU seconds of the given processes and their live descendants (from /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the name: state ppid pgrp ...; utime stime at 11, 12; cutime cstime 13, 14.
        if int(parts[2]) in pids:
            total += sum(int(x) for x in parts[11:15]) / tick
    return total


def run(args):
    python = os.path.abspath(args.python or sys.executable)
    args.bin = os.path.abspath(args.bin)
    versions_py = subprocess.run(
        [python, "-c", "import celery, kombu, redis, billiard; print(celery.__version__, "
         "kombu.__version__, redis.__version__, billiard.__version__)"],
        check=True, capture_output=True, text=True).stdout.split()
    started = Started()
    tmp = tempfile.mkdtemp(prefix="procpool-redis-compare-")
    try:
        port = start_redis(started, tmp)
        url_pp, url_celery = f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"
        start_host(started, args.bin, url_pp)
        start_celery(started, python, url_celery, tmp)
        versions = {
            "redis-server": redis_cli_info(port),
            "rustc": subprocess.run(["rustc", "--version"], capture_output=True,
                                    text=True).stdout.strip() or "unknown",
            "Python": platform.python_version(),
            "Celery (kombu, redis-py, billiard)": "{} ({}, {}, {})".format(*versions_py),
        }
        groups = [p.pid for p in started.procs]
        busy_before, ours_before = busy_seconds(), proc_tree_cpu(groups)
        clock = time.monotonic()
        children = os.times()
        samples = drive(plan(args.bin, python, url_pp, url_celery, args.map_items),
                        args.reps, sys.stderr)
        after = os.times()
        ours = (proc_tree_cpu(groups) - ours_before
                + (after.children_user + after.children_system)
                - (children.children_user + children.children_system)
                + time.process_time())
        other = max(0.0, busy_seconds() - busy_before - ours) / (time.monotonic() - clock)
    finally:
        started.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    command = args.command or " ".join(sys.argv)
    write(args.out, report(samples, args.reps, command, versions, args.map_items, other))
    with open(args.raw, "w") as f:
        json.dump({f"{w} {i}": v for (w, i), v in samples.items()}, f, indent=1)
    print(f"wrote {args.out} and {args.raw}", file=sys.stderr)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "sample":
        _, _, impl, workload, url, arg = sys.argv
        assert impl == "celery", "the procpool samples are procpool-redis's"
        print(json.dumps(celery_sample(workload, url, arg)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bin", required=True, help="the procpool-redis binary")
    r.add_argument("--python", help="a Python with Celery (default: this one)")
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--map-items", type=int, default=100_000,
                   help="no-ops in Celery's map (scaled to 100,000 in the report)")
    r.add_argument("--out", default="BENCHMARKS.md")
    r.add_argument("--raw", default="target/redis-compare.json", help="every sample, as JSON")
    r.add_argument("--command", help="the command to name in the report")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
