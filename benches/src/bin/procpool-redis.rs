//! `procpool-redis`: the Rust side of `bench/compare/redis.sh`, the pool over Redis Streams
//! measured on a real `redis-server`, one measurement per run (build with
//! `--features redis`).
//!
//! - `procpool-redis host URL QUEUE PROCESSES LEASE_MS NAME`: a host agent ([`procpool::Host`])
//!   serving `QUEUE`; prints `ready` once it takes work, serves until its standard input
//!   closes (then hands its calls back and exits) or it is killed. The driver starts it in a
//!   process group of its own.
//! - `procpool-redis sample apply URL QUEUE CALLS`: `CALLS` no-op `apply` round trips, one
//!   at a time after 200 untimed ones, on a pool over `QUEUE` (hosts started by the driver);
//!   prints the median, p90, p99 and mean of one.
//! - `procpool-redis sample map100k URL QUEUE`: `map` of 100,000 no-ops with automatic
//!   chunking (a pool planned for 2 workers), 5 times after one untimed; prints the median
//!   time of one map.
//! - `procpool-redis sample recover URL LEASE_MS`: on a queue of its own, host A (1 worker,
//!   its own process group) takes a call that holds; host B (1 worker) starts and is ready;
//!   after a random wait of up to one lease, A's whole group is SIGKILLed; prints the time
//!   from the kill to the call's result, which B's run gives, against the lease.
//! - `procpool-redis sample childkill URL LEASE_MS`: host A alone; the worker process running
//!   the call is SIGKILLed (the host lives); prints the time from the kill to the caller's
//!   `WorkerDied` error (no retries: not run again, as a local pool does).
//!
//! Every line of JSON has `seconds`, the number the driver takes the median of.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use procpool::{ErrorKind, Pool};
use procpool_benches::noop;

/// How long a sample waits at most for what should happen far sooner.
const BOUND: Duration = Duration::from_secs(60);

/// Marks its first run by writing `marker` (its pid in it) and then holds for `ms`; a run
/// that finds the marker (a run again, on another host) returns at once. The attempt number
/// comes back.
#[procpool::task]
pub fn hold_once(marker: String, ms: u64) -> u32 {
    let marker = PathBuf::from(marker);
    if marker.exists() {
        return 2;
    }
    let tmp = marker.with_extension("tmp");
    std::fs::write(&tmp, std::process::id().to_string()).expect("write the marker");
    std::fs::rename(&tmp, &marker).expect("publish the marker");
    std::thread::sleep(Duration::from_millis(ms));
    1
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["host", url, queue, processes, lease, name] => {
            host(url, queue, processes.parse().unwrap(), ms(lease), name)
        }
        ["sample", "apply", url, queue, calls] => apply(url, queue, calls.parse().unwrap()),
        ["sample", "map100k", url, queue] => map100k(url, queue),
        ["sample", "recover", url, lease] => kill(url, ms(lease), Victim::Host),
        ["sample", "childkill", url, lease] => kill(url, ms(lease), Victim::Worker),
        _ => {
            eprintln!(
                "usage: procpool-redis host URL QUEUE PROCESSES LEASE_MS NAME\n\
                 \x20      procpool-redis sample apply URL QUEUE CALLS | map100k URL QUEUE\n\
                 \x20      procpool-redis sample recover URL LEASE_MS | childkill URL LEASE_MS\n\
                 (run bench/compare/redis.sh for the whole comparison)"
            );
            ExitCode::from(2)
        }
    }
}

fn ms(text: &str) -> Duration {
    Duration::from_millis(text.parse().expect("milliseconds"))
}

fn host(url: &str, queue: &str, processes: usize, lease: Duration, name: &str) -> ExitCode {
    let host = procpool::Host::new(url, queue)
        .processes(processes)
        .lease(lease)
        .name(name)
        .start()
        .expect("the host starts");
    println!("ready");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    host.stop().expect("the host stops cleanly");
    ExitCode::SUCCESS
}

fn pool(url: &str, queue: &str, lease: Duration) -> Pool {
    Pool::builder()
        .redis(url)
        .queue(queue)
        .processes(2)
        .lease(lease)
        .build()
        .expect("the pool starts")
}

fn apply(url: &str, queue: &str, calls: usize) -> ExitCode {
    let pool = pool(url, queue, Duration::from_secs(30));
    for i in 0..200 {
        assert_eq!(pool.apply(noop, (i,)).expect("the no-op runs"), i);
    }
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls as u64 {
        let started = Instant::now();
        let x = pool.apply(noop, (i,)).expect("the no-op runs");
        times.push(started.elapsed().as_secs_f64());
        assert_eq!(x, i);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"seconds\": {:.9}, \"p90\": {:.9}, \"p99\": {:.9}, \"mean\": {mean:.9}, \"calls\": {calls}}}",
        at(0.5),
        at(0.9),
        at(0.99)
    );
    pool.close();
    pool.join().expect("the pool ends");
    ExitCode::SUCCESS
}

fn map100k(url: &str, queue: &str) -> ExitCode {
    const N: u64 = 100_000;
    let pool = pool(url, queue, Duration::from_secs(30));
    let mut times = Vec::new();
    for rep in 0..6 {
        let started = Instant::now();
        let out = pool.map(noop, 0..N).expect("the map runs");
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(out.len() as u64, N);
        assert_eq!(out.iter().sum::<u64>(), N * (N - 1) / 2);
        if rep > 0 {
            times.push(elapsed);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"seconds\": {median:.9}, \"tasks_per_s\": {:.0}, \"min\": {:.9}, \"max\": {:.9}}}",
        N as f64 / median,
        times[0],
        times[times.len() - 1]
    );
    pool.close();
    pool.join().expect("the pool ends");
    ExitCode::SUCCESS
}

/// A host agent process of this binary, in a process group of its own.
struct Agent {
    child: Child,
}

impl Agent {
    fn start(url: &str, queue: &str, lease: Duration, name: &str) -> Agent {
        let mut child = Command::new(std::env::current_exe().expect("the binary's path"))
            .args(["host", url, queue, "1"])
            .arg(lease.as_millis().to_string())
            .arg(name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("the host agent starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the host agent answers");
        assert_eq!(line.trim(), "ready", "host {name}");
        Agent { child }
    }

    /// SIGKILL to the agent's whole group (it and its workers).
    fn kill(&mut self) {
        // SAFETY: kill(2) of the process group of a child of ours; no memory is involved.
        let done = unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        assert_eq!(done, 0, "kill the host's group");
    }

    /// Closes its standard input: it hands back its calls and exits.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

enum Victim {
    Host,
    Worker,
}

/// A number from 0 to 1 that differs from run to run (the clock's nanoseconds, mixed).
fn fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn wait_for(path: &Path) -> u32 {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text.trim().parse().expect("a pid");
        }
        assert!(Instant::now() < deadline, "the call did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn kill(url: &str, lease: Duration, victim: Victim) -> ExitCode {
    let queue = format!("recover-{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("procpool-redis-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a folder for the marker");
    let marker = dir.join("started");
    let mut a = Agent::start(url, &queue, lease, "a");
    let pool = pool(url, &queue, lease);
    // Holds far past the bound: only a kill ends the first run.
    let call = pool
        .apply_async(hold_once, (marker.display().to_string(), 3_600_000))
        .expect("queued");
    let worker = wait_for(&marker);
    let (seconds, outcome, b) = match victim {
        Victim::Host => {
            // B serves before A dies, as a second machine would, for a time drawn from
            // 0 to one lease: a kill lands anywhere in B's cycle of looking for lost calls
            // and in A's cycle of renewals, not always just after B started.
            let b = Agent::start(url, &queue, lease, "b");
            std::thread::sleep(lease.mul_f64(fraction()));
            a.kill();
            let killed = Instant::now();
            let attempt = call.get_timeout(BOUND).expect("the call ends on host b");
            let seconds = killed.elapsed().as_secs_f64();
            assert_eq!(attempt, 2, "run again");
            (seconds, "run again on host b".to_owned(), Some(b))
        }
        Victim::Worker => {
            // SAFETY: kill(2) of a worker of a host agent of ours; no memory is involved.
            let done = unsafe { libc::kill(worker as i32, libc::SIGKILL) };
            assert_eq!(done, 0, "kill the worker");
            let killed = Instant::now();
            let error = call.get_timeout(BOUND).expect_err("the worker died");
            let seconds = killed.elapsed().as_secs_f64();
            assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
            (seconds, "WorkerDied error".to_owned(), None)
        }
    };
    println!(
        "{{\"seconds\": {seconds:.9}, \"lease\": {:.3}, \"outcome\": \"{outcome}\"}}",
        lease.as_secs_f64()
    );
    pool.close();
    pool.join().expect("the pool ends");
    match b {
        Some(b) => {
            b.stop();
            let _ = a.child.wait();
        }
        None => a.stop(),
    }
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}
