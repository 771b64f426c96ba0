//! `procpool seed`: both of the tutorial's experiments, printed as its tables with its own
//! Python figures beside procpool's.

use std::time::Duration;

use anyhow::{Result, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use num_bigint::BigUint;
use procpool::Pool;
use procpool_cli::api::{DEFAULT_TOKEN, dataset::TUTORIAL_POST};
use procpool_cli::crawl::PageRequest;
use serde_json::json;

use super::factorial::{factorials, time_median};
use super::reposts::{crawl, embedded_server};
use crate::method::Method;
use crate::table::{Table, human};
use crate::tasks::{self, get_factorial};

/// Options of `procpool seed`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed runs of each row; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// The embedded API server's latency per page, in milliseconds. The tutorial saw about
    /// 828; the default is scaled down so that the whole demo takes well under a minute.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    latency_ms: u64,
    /// Before the tables, show which worker pid ran each task, as the tutorial does.
    #[arg(long)]
    show_pids: bool,
    /// Print the results as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// The tutorial's page latency: one page of 200 took 828 ms.
const TUTORIAL_PAGE: Duration = Duration::from_millis(828);

/// A row of the factorial table: method, pool size (`None`: the default), the tutorial's time.
const FACTORIAL_ROWS: &[(Method, Option<usize>, Option<&str>)] = &[
    (Method::Serial, None, Some("594 µs")),
    (Method::ApplyAsync, None, Some("156 ms")),
    (Method::ApplyAsync, Some(50), Some("165 ms")),
    (Method::ApplyAsync, Some(1), Some("152 ms")),
    (Method::MapAsync, None, Some("144 ms")),
    (Method::Apply, None, Some("130 ms")),
    (Method::Map, None, Some("166 ms")),
    (Method::Imap, None, None),
    (Method::ImapUnordered, None, None),
];

/// A row of the repost table: method, pool size, the tutorial's time in seconds.
const REPOST_ROWS: &[(Method, Option<usize>, Option<f64>)] = &[
    (Method::Serial, None, Some(10.2)),
    (Method::ApplyAsync, None, Some(7.64)),
    (Method::ApplyAsync, Some(10), Some(7.64)),
    (Method::ApplyAsync, Some(1), Some(10.3)),
    (Method::ApplyAsync, Some(100), Some(8.24)),
    (Method::Apply, None, Some(9.04)),
    (Method::Apply, Some(10), Some(9.87)),
    (Method::Apply, Some(1), Some(9.71)),
    (Method::MapAsync, Some(10), None),
    (Method::ImapUnordered, Some(10), None),
];

fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{model}, {} CPUs available", procpool::cpu_count())
}

fn pool_label(method: Method, size: Option<usize>) -> String {
    match (method, size) {
        (Method::Serial, _) => "-".into(),
        (_, Some(n)) => n.to_string(),
        (_, None) => format!("default ({})", procpool::cpu_count()),
    }
}

fn progress(len: usize, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    // Drawn only when stderr is a terminal.
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    bar
}

pub fn run(args: Args) -> Result<()> {
    let latency = Duration::from_millis(args.latency_ms);
    if !args.json {
        println!("procpool seed: the multiprocessing.Pool tutorial's two experiments, on procpool");
        println!("machine: {}", machine());
        println!();
    }
    if args.show_pids {
        show_pids(latency)?;
    }
    let factorial_rows = factorial_table(&args)?;
    let repost_rows = repost_table(&args, latency)?;
    if args.json {
        let value = json!({ "machine": machine(), "runs": args.runs, "latency_ms": args.latency_ms,
            "factorial": factorial_rows, "reposts": repost_rows });
        println!("{value}");
    }
    Ok(())
}

/// The tutorial's pid printouts: f_list_para_apply_async(10, pid=1) and the parallel crawl.
fn show_pids(latency: Duration) -> Result<()> {
    println!("factorials of 1..=10 through apply_async, each printing its worker's pid:");
    let pool = super::pool(None, true)?;
    factorials(Some(&pool), None, Method::ApplyAsync, 10, None, true)?;
    pool.close();
    pool.join()?;
    println!();
    println!("the repost crawl through apply_async on the default pool:");
    let server = embedded_server(latency)?;
    let pool = super::pool(None, true)?;
    crawl(
        Some(&pool),
        Method::ApplyAsync,
        &PageRequest::new(server.base_url(), TUTORIAL_POST, DEFAULT_TOKEN),
    )?;
    pool.close();
    pool.join()?;
    println!();
    Ok(())
}

fn factorial_table(args: &Args) -> Result<Vec<serde_json::Value>> {
    tasks::set_show_pids(false);
    let expected: Vec<BigUint> = (1..=100).map(get_factorial).collect();
    let bar = progress(FACTORIAL_ROWS.len() + 1, args.json);
    bar.set_message("factorials");

    // timeit get_factorial(100): many calls per sample, the median sample divided.
    let calls = 1000;
    let one_call = time_median(args.runs.max(5), || {
        for _ in 0..calls {
            std::hint::black_box(get_factorial(std::hint::black_box(100)));
        }
        Ok(())
    })? / calls;
    bar.inc(1);

    let mut table = Table::new(&[
        "method",
        "pool",
        "new pool per call",
        "warm pool",
        "tutorial (Python)",
    ]);
    table.row(vec![
        "one call of factorial(100)".into(),
        "-".into(),
        human(one_call),
        "".into(),
        "29.1 µs".into(),
    ]);
    let mut rows = vec![
        json!({ "method": "one_call", "seconds": one_call.as_secs_f64(), "tutorial": "29.1 µs" }),
    ];
    let mut warm_pools: Vec<(Option<usize>, Pool)> = Vec::new();
    for &(method, size, tutorial) in FACTORIAL_ROWS {
        let (cold, warm) = if method == Method::Serial {
            let serial = time_median(args.runs.max(5), || {
                check(factorials(None, None, method, 100, None, false)?, &expected)
            })?;
            (None, serial)
        } else {
            let cold = time_median(args.runs, || {
                check(factorials(None, size, method, 100, None, false)?, &expected)
            })?;
            if !warm_pools.iter().any(|(s, _)| *s == size) {
                warm_pools.push((size, super::pool(size, false)?));
            }
            let pool = &warm_pools
                .iter()
                .find(|(s, _)| *s == size)
                .expect("just added")
                .1;
            // One untimed run first, so that the workers have run the task once.
            factorials(Some(pool), size, method, 100, None, false)?;
            let warm = time_median(args.runs, || {
                check(
                    factorials(Some(pool), size, method, 100, None, false)?,
                    &expected,
                )
            })?;
            (Some(cold), warm)
        };
        table.row(vec![
            method.to_string(),
            pool_label(method, size),
            cold.map_or("-".into(), human),
            human(warm),
            tutorial.unwrap_or("-").into(),
        ]);
        rows.push(json!({ "method": method, "processes": size.unwrap_or(if method == Method::Serial { 0 } else { procpool::cpu_count() }),
            "cold_seconds": cold.map(|c| c.as_secs_f64()), "warm_seconds": warm.as_secs_f64(), "tutorial": tutorial }));
        bar.inc(1);
    }
    for (_, pool) in warm_pools {
        pool.close();
        pool.join()?;
    }
    bar.finish_and_clear();
    if !args.json {
        println!(
            "Factorials of 1..=100 as big integers (median of {} runs; the tutorial started a new pool in every call)",
            args.runs
        );
        println!();
        print!("{}", table.render());
        println!();
    }
    Ok(rows)
}

fn check(got: Vec<BigUint>, expected: &[BigUint]) -> Result<()> {
    ensure!(
        got == expected,
        "the factorials differ from the serial ones"
    );
    Ok(())
}

fn repost_table(args: &Args, latency: Duration) -> Result<Vec<serde_json::Value>> {
    let server = embedded_server(latency)?;
    let template = PageRequest::new(server.base_url(), TUTORIAL_POST, DEFAULT_TOKEN);
    let bar = progress(REPOST_ROWS.len() + 1, args.json);
    bar.set_message("reposts");
    let in_pages = |d: Duration| format!("{:.2}", d.as_secs_f64() / latency.as_secs_f64());
    let tutorial_pages = |s: f64| format!("{:.2}", s / TUTORIAL_PAGE.as_secs_f64());

    let one_page = time_median(args.runs, || {
        procpool_cli::crawl::fetch_page(&template)?;
        Ok(())
    })?;
    bar.inc(1);
    let mut table = Table::new(&[
        "method",
        "pool",
        "time",
        "in pages",
        "tutorial (Python)",
        "in pages",
    ]);
    table.row(vec![
        "one page".into(),
        "-".into(),
        human(one_page),
        in_pages(one_page),
        "828 ms".into(),
        "1.00".into(),
    ]);
    let mut rows = vec![
        json!({ "method": "one_page", "seconds": one_page.as_secs_f64(), "tutorial_seconds": 0.828 }),
    ];
    let mut reposts = 0;
    for &(method, size, tutorial) in REPOST_ROWS {
        let time = time_median(args.runs, || {
            // As in the tutorial, the pool is started inside the timed call.
            let pool = match method {
                Method::Serial => None,
                _ => Some(super::pool(size, false)?),
            };
            let crawl = crawl(pool.as_ref(), method, &template)?;
            ensure!(
                crawl.reposts.len() == 2000 && crawl.pages == 10,
                "expected 2,000 reposts in 10 pages, got {} in {}",
                crawl.reposts.len(),
                crawl.pages
            );
            reposts = crawl.reposts.len();
            if let Some(pool) = pool {
                pool.close();
                pool.join()?;
            }
            Ok(())
        })?;
        table.row(vec![
            method.to_string(),
            pool_label(method, size),
            human(time),
            in_pages(time),
            tutorial.map_or("-".into(), |s| human(Duration::from_secs_f64(s))),
            tutorial.map_or("-".into(), tutorial_pages),
        ]);
        rows.push(json!({ "method": method, "processes": size.unwrap_or(if method == Method::Serial { 0 } else { procpool::cpu_count() }),
            "seconds": time.as_secs_f64(), "tutorial_seconds": tutorial }));
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !args.json {
        println!(
            "Reposts of post {TUTORIAL_POST}: {reposts} in 10 pages of 200 over HTTP from the embedded API server \
             (median of {} runs, {} ms a page; \"in pages\" = time / one page's latency)",
            args.runs,
            latency.as_millis()
        );
        println!();
        print!("{}", table.render());
        println!();
        println!(
            "Parallel methods ask for all 10 pages at once; serial and apply fetch page 1 first to learn the total."
        );
    }
    Ok(rows)
}
