//! `procpool factorial`: the tutorial's first experiment.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use num_bigint::BigUint;
use procpool::Pool;

use super::Show;
use crate::method::{Method, run_all};
use crate::table::{human, median};
use crate::tasks::{self, get_factorial};

/// The largest `--n`.
const MAX_N: u64 = 10_000;

/// Options of `procpool factorial`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = super::JSON_HELP)]
pub struct Args {
    /// Compute the factorials of 1..=N (at most 10,000). Each task computes its factorial from
    /// scratch, as the tutorial's does, so the work grows with the cube of N: N = 10,000 is
    /// about 14 s a run on two cores, and all the results together take about 70 MB.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=MAX_N))]
    n: u64,
    /// Worker processes (default: the CPU count).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    processes: Option<u64>,
    /// Which of Pool's methods runs the calls.
    #[arg(long, value_enum, default_value_t = Method::ApplyAsync)]
    method: Method,
    /// Calls per chunk for the map family (default: automatic).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    chunksize: Option<u64>,
    /// Timed runs; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Start a new pool inside each timed run, as the tutorial did.
    #[arg(long)]
    cold: bool,
    /// Print the pid of the process that computes each factorial.
    #[arg(long)]
    show_pids: bool,
    /// Print the result as JSON (see `procpool help factorial` for the schema).
    #[arg(long)]
    json: bool,
}

/// Computes the factorials of 1..=n with `method`; with `pool` = `None` and a method other
/// than serial, a new pool of `processes` is started and closed inside (the cold case).
pub fn factorials(
    pool: Option<&Pool>,
    processes: Option<usize>,
    method: Method,
    n: u64,
    chunksize: Option<usize>,
    show_pids: bool,
    done: &mut dyn FnMut(u64),
) -> Result<Vec<BigUint>> {
    let inputs: Vec<u64> = (1..=n).collect();
    // imap_unordered's results are put back in input order by size: n! has more bits than
    // (n-1)! for every n >= 1.
    let key = |f: &BigUint| f.bits() as usize;
    if method == Method::Serial || pool.is_some() {
        return run_all(pool, method, get_factorial, inputs, chunksize, key, done);
    }
    let pool = super::pool(processes, show_pids)?;
    let out = run_all(
        Some(&pool),
        method,
        get_factorial,
        inputs,
        chunksize,
        key,
        done,
    )?;
    super::finish(&pool)?;
    Ok(out)
}

/// The factorials of 1..=n, each from the one before: what the pool's results are checked
/// against, in a small fraction of the time the tasks take.
fn expected_factorials(n: u64) -> Vec<BigUint> {
    let mut product = BigUint::from(1u32);
    (1..=n)
        .map(|k| {
            product *= k;
            product.clone()
        })
        .collect()
}

/// Times `runs` runs of `work` and returns the median.
pub fn time_median(runs: u64, mut work: impl FnMut() -> Result<()>) -> Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        work()?;
        samples.push(start.elapsed());
    }
    Ok(median(samples))
}

pub fn run(args: Args, show: Show) -> Result<()> {
    tasks::set_show_pids(args.show_pids);
    let processes = args.processes.map(|p| p as usize);
    let chunksize = args.chunksize.map(|c| c as usize);
    let expected = expected_factorials(args.n);
    let bar = crate::progress::bar(
        args.n * args.runs,
        "items",
        &format!("factorials of 1..={}", args.n),
        show.progress && !args.json && !args.show_pids,
    );
    let warm = if args.cold || args.method == Method::Serial {
        None
    } else {
        Some(super::pool(processes, args.show_pids)?)
    };
    let mut checked = false;
    let elapsed = time_median(args.runs, || {
        let out = factorials(
            warm.as_ref(),
            processes,
            args.method,
            args.n,
            chunksize,
            args.show_pids,
            &mut |n| bar.inc(n),
        )?;
        if !checked {
            ensure!(
                out == expected,
                "the pool's factorials differ from the serial ones"
            );
            checked = true;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let pool_size = match (&warm, args.method) {
        (_, Method::Serial) => 0,
        (Some(pool), _) => pool.processes(),
        (None, _) => processes.unwrap_or_else(procpool::cpu_count),
    };
    if args.json {
        let value = serde_json::json!({
            "command": "factorial",
            "n": args.n,
            "method": args.method,
            "processes": pool_size,
            "cold": args.cold,
            "runs": args.runs,
            "median_seconds": elapsed.as_secs_f64(),
            "digits_of_last": expected.last().map_or(0, |f| f.to_string().len()),
        });
        writeln!(io::stdout(), "{value}")?;
    } else {
        let pool = if args.method == Method::Serial {
            "no pool".to_string()
        } else {
            format!(
                "a {} pool of {pool_size}",
                if args.cold { "new" } else { "warm" }
            )
        };
        writeln!(
            io::stdout(),
            "factorials of 1..={} with {} on {pool}: {} (median of {} runs); {}! has {} digits",
            args.n,
            args.method,
            human(elapsed),
            args.runs,
            args.n,
            expected.last().map_or(0, |f| f.to_string().len())
        )?;
    }
    if let Some(pool) = warm {
        super::finish(&pool)?;
    }
    Ok(())
}
