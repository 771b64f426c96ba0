//! `procpool-compare`: the Rust side of `bench/compare`, one measurement per run.
//!
//! `procpool-compare sample IMPL WORKLOAD [--workers N]` runs one sample of one workload
//! with one implementation in this fresh process and prints one line of JSON:
//! `{"seconds": S}` (the time of one operation, the mean over the sample's inner
//! repetitions), plus what was measured. The driver, `bench/compare/pools.py`, calls it
//! (and its Python twin) in turns, so that drift of the machine hits every implementation
//! alike, and takes medians.
//!
//! `--workers N` sets the workers of the pool, or the threads of rayon's pool, to `N`
//! instead of 2 (the line of JSON then names it; without it, it names no worker count);
//! the implementations with neither refuse it, and so do the workloads that set their own
//! pool size (`pool100`, `respawn`). `bench/compare/scaling.sh` uses it.
//!
//! Implementations: `procpool` (a pool of 2 started by the default method, the
//! forkserver, unless `PROCPOOL_START_METHOD` says otherwise; its 64 MiB round trip is of a
//! `SharedBytes`, mapped on each side, never copied), `procpool-spawn` (the same pool
//! started by `StartMethod::Spawn`, each worker a fresh exec of this binary),
//! `procpool-2chunks` (the same pool, the map cut into one chunk per worker: what the
//! per-chunk costs leave), `procpool-copied` (the 64 MiB as a `ByteBuf`, copied through the
//! socket both ways), `procpool-read` (the 64 MiB as a `SharedBytes` that the task reads
//! whole and the caller reads whole again when it comes back: what touching mapped pages
//! costs), `rayon` (a thread pool of 2: the in-process floor), `pipe` (the IPC floor: two
//! processes exchanging one byte over a pair of pipes, each end asleep in a blocking read
//! until the byte comes, or streaming the 64 MiB payload through a socket pair and back,
//! with buffers reused), `pipe-watch` (the IPC floor that waits as the pool does: the same
//! one-byte exchange over a socket pair, as the pool reaches its workers, each end looking
//! without blocking, yielding the CPU between looks, for the pool's watch window before it
//! sleeps in a read), `serial` (the loop in this process), `memcpy` (a copy of the payload
//! into a buffer already touched, in this process).
//!
//! Workloads: `startup` (a pool of 2 ready and its first result back), `pool100` (a pool of
//! 100 ready and a first `map` of 100 no-ops back), `respawn` (a worker's death to its
//! replacement's first result back, pool of 1; see [`respawn`]), `apply`, `map100k`,
//! `maxtasks1` (a map of no-ops in chunks of one with `max_tasks_per_child(1)`, so that each
//! call runs in a worker started for it; the time per call), `fact100`, `fact3000`,
//! `bytes64m`. Not every pair makes sense; `procpool-compare list` prints those that do.
//!
//! `procpool-compare pipe-echo` is the other end of both blocking IPC floors: it echoes what
//! it reads on standard input to standard output until end of file. `pipe-echo --watch` is
//! the other end of `pipe-watch`: it echoes what comes on the socket it is given as both,
//! waiting as the pool does.

use std::fs::File;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use procpool::{MapOptions, StartMethod};
use procpool_benches::{
    checksum, echo, echo_shared, exit_worker, factorial, factorials_serial, map_one_by_one, noop,
    one_job_per_worker, payload, pool, pool_started_by, read_shared, shared_payload,
    start_and_first_map, start_and_first_result,
};
use rayon::prelude::*;

/// Workers or threads in every pool unless `--workers` says otherwise, as the targets ask.
const DEFAULT_WORKERS: usize = 2;
/// The implementations that have workers or threads to count, and so take `--workers`.
const WITH_WORKERS: &[&str] = &[
    "procpool",
    "procpool-spawn",
    "procpool-2chunks",
    "procpool-copied",
    "procpool-read",
    "rayon",
];
/// The workloads whose pool size is part of what they measure, and so refuse `--workers`.
const OWN_POOL_SIZE: &[&str] = &["pool100", "respawn"];
/// The workers of `pool100`, and the no-ops its first map sends them.
const LARGE_POOL: usize = 100;
/// The calls of one `maxtasks1` map, each in a worker of its own.
const ONE_JOB_CALLS: u64 = 1_000;
/// How long the pool watches a socket before it sleeps on it (`watch::WINDOW` in the
/// library), and so how long each end of `pipe-watch` does.
const WATCH_WINDOW: Duration = Duration::from_micros(200);
/// The deaths `respawn` averages over, after two untimed ones.
const RESPAWN_DEATHS: u32 = 20;
/// The code a worker ends with in `respawn`.
const EXIT_CODE: i32 = 3;
/// The 64 MiB payload.
const BIG: usize = 64 << 20;
/// The pairs of implementation and workload that are measured.
const PAIRS: &[(&str, &str)] = &[
    ("procpool", "startup"),
    ("procpool-spawn", "startup"),
    ("rayon", "startup"),
    ("procpool", "pool100"),
    ("procpool-spawn", "pool100"),
    ("procpool", "respawn"),
    ("procpool-spawn", "respawn"),
    ("procpool", "apply"),
    ("rayon", "apply"),
    ("pipe", "apply"),
    ("pipe-watch", "apply"),
    ("procpool", "maxtasks1"),
    ("procpool-spawn", "maxtasks1"),
    ("procpool", "map100k"),
    ("procpool-2chunks", "map100k"),
    ("rayon", "map100k"),
    ("procpool", "fact100"),
    ("procpool-2chunks", "fact100"),
    ("rayon", "fact100"),
    ("serial", "fact100"),
    ("procpool", "fact3000"),
    ("rayon", "fact3000"),
    ("serial", "fact3000"),
    ("procpool", "bytes64m"),
    ("procpool-copied", "bytes64m"),
    ("procpool-read", "bytes64m"),
    ("pipe", "bytes64m"),
    ("memcpy", "bytes64m"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["list"] => {
            for (implementation, workload) in PAIRS {
                println!("{implementation} {workload}");
            }
            ExitCode::SUCCESS
        }
        ["pipe-echo"] => pipe_echo(),
        ["pipe-echo", "--watch"] => watched_echo(),
        ["sample", implementation, workload] => run_sample(implementation, workload, None),
        ["sample", implementation, workload, "--workers", count] => match count.parse::<usize>() {
            Ok(workers) if workers > 0 => run_sample(implementation, workload, Some(workers)),
            _ => {
                eprintln!("procpool-compare: --workers takes a count of 1 or more: {count}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!(
                "usage: procpool-compare list | sample IMPL WORKLOAD [--workers N] \
                 | pipe-echo [--watch]\n\
                 (run bench/compare/run.sh for the whole comparison, \
                 bench/compare/scaling.sh for the scaling run)"
            );
            ExitCode::from(2)
        }
    }
}

/// Runs one sample and prints its line of JSON. `workers` is what `--workers` gave, if it
/// was given: the line then names it; without it the pool has `DEFAULT_WORKERS`.
fn run_sample(implementation: &str, workload: &str, workers: Option<usize>) -> ExitCode {
    if !PAIRS.contains(&(implementation, workload)) {
        eprintln!("procpool-compare: no such measurement: {implementation} {workload}");
        return ExitCode::from(2);
    }
    if workers.is_some() && !WITH_WORKERS.contains(&implementation) {
        eprintln!("procpool-compare: {implementation} has no workers to count: drop --workers");
        return ExitCode::from(2);
    }
    if workers.is_some() && OWN_POOL_SIZE.contains(&workload) {
        eprintln!("procpool-compare: {workload} sets its own pool size: drop --workers");
        return ExitCode::from(2);
    }
    let seconds = sample(implementation, workload, workers.unwrap_or(DEFAULT_WORKERS));
    let named = workers.map_or(String::new(), |n| format!("\"workers\": {n}, "));
    println!(
        "{{\"impl\": \"{implementation}\", \"workload\": \"{workload}\", {named}\"seconds\": {:.9}}}",
        seconds.as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// Times `op` over `reps` repetitions after `warm` untimed ones; the mean time of one.
fn per_op(warm: u32, reps: u32, mut op: impl FnMut()) -> Duration {
    for _ in 0..warm {
        op();
    }
    let started = Instant::now();
    for _ in 0..reps {
        op();
    }
    started.elapsed() / reps
}

/// One sample of `workload` by `implementation`, with `workers` workers or threads where it
/// has any.
fn sample(implementation: &str, workload: &str, workers: usize) -> Duration {
    match (implementation, workload) {
        ("procpool" | "procpool-spawn", "startup") => {
            let method = start_method(implementation);
            let started = Instant::now();
            let pool = start_and_first_result(workers, method);
            let elapsed = started.elapsed();
            drop(pool);
            elapsed
        }
        ("procpool" | "procpool-spawn", "pool100") => {
            let method = start_method(implementation);
            let started = Instant::now();
            let pool = start_and_first_map(LARGE_POOL, method);
            let elapsed = started.elapsed();
            drop(pool);
            elapsed
        }
        ("procpool" | "procpool-spawn", "respawn") => {
            respawn(start_method(implementation), 2, RESPAWN_DEATHS)
        }
        ("rayon", "startup") => {
            let started = Instant::now();
            let threads = rayon_pool(workers);
            assert_eq!(threads.install(|| noop(black_box(1))), 1);
            started.elapsed()
        }
        ("procpool", "apply") => {
            let pool = pool(workers);
            per_op(1_000, 10_000, || {
                black_box(pool.apply(noop, (black_box(1),)).expect("the no-op runs"));
            })
        }
        ("rayon", "apply") => {
            let threads = rayon_pool(workers);
            per_op(1_000, 10_000, || {
                black_box(threads.install(|| noop(black_box(1))));
            })
        }
        ("pipe", "apply") => pipe_ping_pong(1_000, 10_000),
        ("pipe-watch", "apply") => watched_ping_pong(1_000, 10_000),
        ("procpool" | "procpool-spawn", "maxtasks1") => {
            let pool = one_job_per_worker(workers, start_method(implementation));
            let starts = pool.stats().worker_starts;
            let one_map = per_op(0, 1, || map_one_by_one(&pool, ONE_JOB_CALLS));
            let replaced = pool.stats().worker_starts - starts;
            assert!(
                replaced + workers as u64 >= ONE_JOB_CALLS,
                "{replaced} workers started for {ONE_JOB_CALLS} calls: each call had a worker of its own"
            );
            one_map / ONE_JOB_CALLS as u32
        }
        ("procpool", "map100k") => {
            let pool = pool(workers);
            per_op(1, 5, || {
                let out = pool.map(noop, 0..100_000u64).expect("the map runs");
                assert_eq!(out.len(), 100_000);
            })
        }
        ("procpool-2chunks", "map100k") => {
            let pool = pool(workers);
            let options = MapOptions::new().chunksize(100_000usize.div_ceil(workers));
            per_op(1, 5, || {
                let out = pool
                    .map_with(noop, 0..100_000u64, options)
                    .expect("the map runs");
                assert_eq!(out.len(), 100_000);
            })
        }
        ("rayon", "map100k") => {
            let threads = rayon_pool(workers);
            per_op(1, 5, || {
                let out: Vec<u64> =
                    threads.install(|| (0..100_000u64).into_par_iter().map(noop).collect());
                assert_eq!(out.len(), 100_000);
            })
        }
        ("procpool", "fact100") => {
            let pool = pool(workers);
            per_op(20, 200, || {
                let out = pool.map(factorial, 1..=100u64).expect("the map runs");
                assert_eq!(out.len(), 100);
            })
        }
        ("procpool-2chunks", "fact100") => {
            let pool = pool(workers);
            let options = MapOptions::new().chunksize(100usize.div_ceil(workers));
            per_op(20, 200, || {
                let out = pool
                    .map_with(factorial, 1..=100u64, options)
                    .expect("the map runs");
                assert_eq!(out.len(), 100);
            })
        }
        ("rayon", "fact100") => {
            let threads = rayon_pool(workers);
            per_op(20, 200, || {
                black_box(rayon_factorials(&threads, 100));
            })
        }
        ("serial", "fact100") => per_op(20, 200, || {
            black_box(factorials_serial(black_box(100)));
        }),
        ("procpool", "fact3000") => {
            let pool = pool(workers);
            per_op(0, 1, || {
                let out = pool.map(factorial, 1..=3000u64).expect("the map runs");
                assert_eq!(out.len(), 3000);
            })
        }
        ("rayon", "fact3000") => {
            let threads = rayon_pool(workers);
            per_op(0, 1, || {
                black_box(rayon_factorials(&threads, 3000));
            })
        }
        ("serial", "fact3000") => per_op(0, 1, || {
            black_box(factorials_serial(black_box(3000)));
        }),
        ("procpool", "bytes64m") => {
            let pool = pool(workers);
            let bytes = shared_payload(BIG);
            let mut held = bytes.clone();
            per_op(1, 5, || {
                held = pool.apply(echo_shared, (held.clone(),)).expect("echo runs");
                assert_eq!(held.len(), BIG);
            })
        }
        ("procpool-read", "bytes64m") => {
            let pool = pool(workers);
            let expected = checksum(&shared_payload(BIG));
            let mut held = shared_payload(BIG);
            per_op(1, 5, || {
                let (back, sum) = pool
                    .apply(read_shared, (held.clone(),))
                    .expect("the task runs");
                assert_eq!(sum, expected, "the task read every byte");
                assert_eq!(checksum(&back), expected, "and so did the caller");
                held = back;
            })
        }
        ("procpool-copied", "bytes64m") => {
            let pool = pool(workers);
            // Each round trip sends the buffer that came back from the last one: no copy
            // of the caller's own is timed, only what the pool does with it.
            let mut bytes = Some(payload(BIG));
            per_op(1, 5, || {
                let sent = bytes.take().expect("the last round trip gave it back");
                let back = pool.apply(echo, (sent,)).expect("echo runs");
                assert_eq!(back.len(), BIG);
                bytes = Some(back);
            })
        }
        ("pipe", "bytes64m") => socket_stream(1, 5),
        ("memcpy", "bytes64m") => {
            let bytes = payload(BIG);
            let mut copy = vec![0u8; BIG];
            per_op(2, 10, || {
                copy.copy_from_slice(black_box(&bytes));
                black_box(&mut copy);
            })
        }
        _ => unreachable!("checked against PAIRS"),
    }
}

/// The start method of a procpool implementation: spawn for `procpool-spawn`, else the
/// default a pool is built with.
fn start_method(implementation: &str) -> StartMethod {
    match implementation {
        "procpool-spawn" => StartMethod::Spawn,
        _ => StartMethod::from_env().expect("PROCPOOL_START_METHOD names a start method"),
    }
}

/// How soon a worker that died is replaced: the mean over `reps` deaths, after `warm`
/// untimed ones, in a pool of 1 started by `method`.
///
/// Each death is a task that calls `exit` ([`exit_worker`]). The supervisor reads the end of
/// the worker's socket, reaps it, fails the call with `WorkerDied` (which wakes the caller)
/// and then starts the replacement. The clock starts when that failed `apply` returns and
/// stops when an `apply` of the no-op, issued at once, comes back: the pool's only worker is
/// the replacement, so the time holds its start (a fork from the server, or an exec), its
/// handshake and one round trip. Left out: the time from the exit to the supervisor failing
/// the call (the kernel closing the socket, the read, the reap), which comes before the
/// death is noticed, and the caller's wake-up, during which the replacement is already being
/// made. So it measures the replacement ready after the death was noticed, plus one round
/// trip of a no-op, less a wake-up.
fn respawn(method: StartMethod, warm: u32, reps: u32) -> Duration {
    let pool = pool_started_by(1, method);
    let mut timed = Duration::ZERO;
    for rep in 0..warm + reps {
        let error = pool
            .apply(exit_worker, (EXIT_CODE,))
            .expect_err("the worker exits");
        assert!(error.is_worker_died(), "the worker died: {error}");
        let noticed = Instant::now();
        let x = pool
            .apply(noop, (black_box(1),))
            .expect("the replacement runs the no-op");
        let took = noticed.elapsed();
        assert_eq!(x, 1);
        if rep >= warm {
            timed += took;
        }
    }
    let deaths = pool.stats().worker_deaths;
    assert_eq!(deaths, u64::from(warm + reps), "every exit was a death");
    timed / reps
}

fn rayon_pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("the thread pool starts")
}

fn rayon_factorials(threads: &rayon::ThreadPool, n: u64) -> Vec<num_bigint::BigUint> {
    threads.install(|| (1..=n).into_par_iter().map(factorial).collect())
}

/// The IPC floor: this process writes one byte to a child (this binary again, as
/// `pipe-echo`) and waits for it to come back, `reps` times after `warm` untimed ones.
fn pipe_ping_pong(warm: u32, reps: u32) -> Duration {
    let exe = std::env::current_exe().expect("the binary's path is known");
    let mut child = Command::new(exe)
        .arg("pipe-echo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the echo child starts");
    let mut to_child = child.stdin.take().expect("stdin is piped");
    let mut from_child = child.stdout.take().expect("stdout is piped");
    let mut byte = [0u8; 1];
    let elapsed = per_op(warm, reps, || {
        to_child.write_all(&[7]).expect("the child reads");
        from_child.read_exact(&mut byte).expect("the child answers");
    });
    drop(to_child);
    child.wait().expect("the echo child ends");
    elapsed
}

/// The IPC floor that waits as the pool does: this process sends one byte to a child (this
/// binary again, as `pipe-echo --watch`) over a socket pair and waits for it to come back
/// with [`watch_read`], as the child waits for it, `reps` times after `warm` untimed ones.
fn watched_ping_pong(warm: u32, reps: u32) -> Duration {
    let (ours, theirs) = UnixStream::pair().expect("a socket pair");
    let exe = std::env::current_exe().expect("the binary's path is known");
    let theirs = OwnedFd::from(theirs);
    let mut child = Command::new(exe)
        .args(["pipe-echo", "--watch"])
        .stdin(Stdio::from(
            theirs.try_clone().expect("the socket is duplicated"),
        ))
        .stdout(Stdio::from(theirs))
        .spawn()
        .expect("the echo child starts");
    ours.set_nonblocking(true)
        .expect("the socket is made non-blocking");
    let mut byte = [0u8; 1];
    let elapsed = per_op(warm, reps, || {
        // One byte fits in any socket buffer: the write does not find it full.
        (&ours).write_all(&[7]).expect("the child reads");
        let n = watch_read(&ours, &mut byte).expect("the child answers");
        assert_eq!(n, 1);
    });
    ours.shutdown(Shutdown::Both)
        .expect("the socket shuts down");
    child.wait().expect("the echo child ends");
    elapsed
}

/// Reads from `stream`, which is non-blocking, as the pool waits on a socket (the
/// library's `watch`): it looks without blocking, yielding the CPU between looks
/// (`sched_yield`), until something comes or [`WATCH_WINDOW`] has passed, then sleeps in a
/// blocking read. The pool looks with `poll` rather than `read`, and after a watch that
/// found nothing it sleeps at once for the next few waits; in a ping-pong whose ends have a
/// CPU each, every watch finds the byte, so neither changes what is measured.
fn watch_read(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    let started = Instant::now();
    loop {
        match (&*stream).read(buf) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            read => return read,
        }
        if started.elapsed() > WATCH_WINDOW {
            break;
        }
        std::thread::yield_now();
    }
    stream.set_nonblocking(false)?;
    let read = (&*stream).read(buf);
    stream.set_nonblocking(true)?;
    read
}

/// The bulk IPC floor: the 64 MiB payload streamed to a child (this binary again, as
/// `pipe-echo`) over a socket pair, as procpool's workers are reached, and read back as it
/// echoes, into a buffer reused from one round trip to the next. A thread writes while this
/// one reads, so neither side waits for the other's whole buffer.
fn socket_stream(warm: u32, reps: u32) -> Duration {
    let (ours, theirs) = UnixStream::pair().expect("a socket pair");
    let exe = std::env::current_exe().expect("the binary's path is known");
    let theirs = OwnedFd::from(theirs);
    let mut child = Command::new(exe)
        .arg("pipe-echo")
        .stdin(Stdio::from(
            theirs.try_clone().expect("the socket is duplicated"),
        ))
        .stdout(Stdio::from(theirs))
        .spawn()
        .expect("the echo child starts");
    let bytes = payload(BIG);
    let mut back = vec![0u8; BIG];
    let elapsed = per_op(warm, reps, || {
        std::thread::scope(|scope| {
            let sent = &bytes;
            let mut writer = &ours;
            scope.spawn(move || writer.write_all(sent).expect("the child reads"));
            (&ours).read_exact(&mut back).expect("the child answers");
        });
    });
    assert_eq!(&back[..], &bytes[..]);
    ours.shutdown(Shutdown::Both)
        .expect("the socket shuts down");
    child.wait().expect("the echo child ends");
    elapsed
}

/// Echoes standard input to standard output, each read written back at once, through
/// plain files on the two descriptors: no buffering, no line scanning.
fn pipe_echo() -> ExitCode {
    let (Ok(input), Ok(output)) = (
        std::io::stdin().as_fd().try_clone_to_owned(),
        std::io::stdout().as_fd().try_clone_to_owned(),
    ) else {
        return ExitCode::FAILURE;
    };
    let (mut input, mut output) = (File::from(input), File::from(output));
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => return ExitCode::SUCCESS,
            Ok(n) => n,
        };
        if output.write_all(&buf[..n]).is_err() {
            return ExitCode::FAILURE;
        }
    }
}

/// The other end of `pipe-watch`: echoes what comes on the socket it is given as standard
/// input (and output), each wait a [`watch_read`], until end of stream.
fn watched_echo() -> ExitCode {
    let Ok(socket) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return ExitCode::FAILURE;
    };
    let socket = UnixStream::from(socket);
    if socket.set_nonblocking(true).is_err() {
        return ExitCode::FAILURE;
    }
    let mut buf = [0u8; 64];
    loop {
        let n = match watch_read(&socket, &mut buf) {
            Ok(0) | Err(_) => return ExitCode::SUCCESS,
            Ok(n) => n,
        };
        if (&socket).write_all(&buf[..n]).is_err() {
            return ExitCode::FAILURE;
        }
    }
}
