//! The subcommands.

use anyhow::Result;

mod factorial;
mod reposts;
mod seed;
mod serve;
mod worker;

use std::sync::OnceLock;

/// What to run.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run both of the tutorial's experiments and print its tables beside the tutorial's
    /// figures (the repost crawl against an embedded local API server).
    Seed(seed::Args),
    /// Compute the factorials of 1..=N through a pool (the tutorial's first experiment).
    Factorial(factorial::Args),
    /// Crawl a post's repost timeline, 10 pages of 200 at most, through a pool (the
    /// tutorial's second experiment).
    Reposts(reposts::Args),
    /// Serve the repost-timeline API on 127.0.0.1, with a seeded data set.
    ServeApi(serve::Args),
    /// Serve a queue on Redis: run the calls that `--redis` pools of this program send to
    /// it (from this or any machine) on local worker processes, until SIGINT or SIGTERM.
    Worker(worker::Args),
}

/// Where the pools of the experiments run: on this machine's workers, or through the queue
/// of a Redis server, on `procpool worker` hosts (`--redis`, `--queue`).
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: String,
    pub queue: String,
}

static REMOTE: OnceLock<Remote> = OnceLock::new();

/// Sends every pool of this run through `remote`'s queue.
pub fn use_redis(remote: Remote) {
    let _ = REMOTE.set(remote);
}

/// The queue this run's pools use, if `--redis` was given.
pub fn remote() -> Option<&'static Remote> {
    REMOTE.get()
}

/// What every command shows besides its results.
#[derive(Debug, Clone, Copy)]
pub struct Show {
    /// Progress bars (drawn only on a terminal, and never with `--json`).
    pub progress: bool,
}

/// Runs a subcommand.
pub fn run(command: Command, show: Show) -> Result<()> {
    match command {
        Command::Seed(args) => seed::run(args, show),
        Command::Factorial(args) => factorial::run(args, show),
        Command::Reposts(args) => reposts::run(args, show),
        Command::ServeApi(args) => serve::run(args),
        Command::Worker(args) => worker::run(args),
    }
}

/// Arguments that clap accepts but that do not go together; the command exits 2, as for any
/// usage error.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A signal stopped the command; it exits with 128 plus the signal's number.
#[derive(Debug)]
pub struct Interrupted {
    /// The signal's number.
    pub signal: i32,
}

impl Interrupted {
    /// The exit status: 130 for SIGINT, 143 for SIGTERM.
    pub fn exit_code(&self) -> u8 {
        u8::try_from(128 + self.signal).unwrap_or(u8::MAX)
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.signal {
            signal_hook::consts::SIGINT => "SIGINT",
            signal_hook::consts::SIGTERM => "SIGTERM",
            _ => "a signal",
        };
        write!(f, "interrupted by {name} (signal {})", self.signal)
    }
}

impl std::error::Error for Interrupted {}

/// The exit status in a line, for `-h` (`--help` gives it with the `--json` schema).
pub const EXIT_HELP: &str =
    "Exit status: 0 success; 1 runtime error; 2 usage error; 130 or 143 after SIGINT or SIGTERM.";

/// The `--json` schema, for `procpool --help`.
pub const JSON_HELP: &str = "\
With --json, each command prints one JSON object on standard output (for `reposts --out -`,
on standard error). Every object has \"command\"; every duration is a number of seconds in a
field named \"seconds\" or ending in \"_seconds\"; a value that does not apply is null.

  factorial: {command, n, method, processes, cold, runs, median_seconds, digits_of_last}
  reposts:   {command, mid, api_base, embedded_server, method, plan, processes,
              total_number, last_page, first_page, pages_written, reposts_written,
              resumed_reposts, complete, stopped_by, error, seconds, out,
              hosts (with --redis: the pages each host fetched, {host: [page, …]})}
  seed:      {command, machine, runs, latency_seconds,
              factorial: [{method, processes, cold_seconds, warm_seconds, tutorial_seconds}],
              reposts:   [{method, processes, plan, seconds, tutorial_seconds, hosts}]}

Exit status: 0 success; 1 runtime error; 2 usage error; 130 (SIGINT) or 143 (SIGTERM) when
a signal stopped a crawl. A closed output pipe ends the program quietly with 0.";

/// A pool of `processes` workers (the CPU count when `None`) whose tasks print pids if asked
/// and log as this process does.
fn pool(processes: Option<usize>, show_pids: bool) -> Result<procpool::Pool> {
    let mut builder = match remote() {
        // The hosts' workers have no initializer: they print no pids.
        Some(remote) => procpool::Pool::builder()
            .redis(&remote.url)
            .queue(&remote.queue),
        None => procpool::Pool::builder()
            .initializer(crate::tasks::init_worker, (show_pids, crate::log::filter())),
    };
    if let Some(n) = processes {
        builder = builder.processes(n);
        if remote().is_none() {
            // As Python's `Pool` does, a pool larger than the machine takes calls before all
            // its workers are up: it waits for one worker a CPU, and starts the rest while
            // the first calls run (a crawl's pages wait on the network, not on CPUs).
            builder = builder.wait_for_workers(n.min(procpool::cpu_count()).max(1));
        }
    }
    let pool = builder.build()?;
    if let Some(remote) = remote() {
        tracing::info!("calls go to queue {:?} on Redis", remote.queue);
        return Ok(pool);
    }
    let pids = pool.worker_pids();
    let rest = if pids.len() < pool.processes() {
        " (the rest start while it runs)"
    } else {
        ""
    };
    tracing::info!(
        "started a pool of {} workers: pids {pids:?}{rest}",
        pool.processes()
    );
    Ok(pool)
}

/// Closes `pool`, waits for its workers and logs what became of them.
fn finish(pool: &procpool::Pool) -> Result<()> {
    pool.close();
    pool.join()?;
    log_end(pool);
    Ok(())
}

/// Logs a pool's worker starts and deaths once it has ended.
fn log_end(pool: &procpool::Pool) {
    let stats = pool.stats();
    if stats.worker_deaths > 0 {
        tracing::warn!(
            "{} of the pool's workers died; {} were started in all",
            stats.worker_deaths,
            stats.worker_starts
        );
    } else {
        tracing::info!(
            "the pool's {} workers ended ({} calls)",
            stats.worker_starts,
            stats.submitted
        );
    }
}
