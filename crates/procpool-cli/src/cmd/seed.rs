//! `procpool seed`: both of the tutorial's experiments, printed as its tables with its own
//! Python figures beside procpool's.

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use indicatif::ProgressBar;
use num_bigint::BigUint;
use procpool::Pool;
use procpool_cli::api::{DEFAULT_TOKEN, dataset::TUTORIAL_POST};
use procpool_cli::crawl::PageRequest;
use serde_json::json;

use super::Show;
use super::factorial::{factorials, time_median};
use super::reposts::embedded_server;
use crate::method::Method;
use crate::pages::{self, Job, Outcome, Plan};
use crate::table::{Table, human};
use crate::tasks::{self, get_factorial};

/// Options of `procpool seed`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = super::JSON_HELP)]
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
    /// Print the results as JSON instead of tables (see `procpool help seed` for the
    /// schema).
    #[arg(long)]
    json: bool,
}

/// The tutorial's page latency: one page of 200 took 828 ms.
const TUTORIAL_PAGE: Duration = Duration::from_millis(828);

/// The tutorial's time for one call of `factorial(100)`, in seconds.
const TUTORIAL_ONE_CALL: f64 = 29.1e-6;

/// A row of the factorial table: method, pool size (`None`: the default), the tutorial's time
/// in seconds.
const FACTORIAL_ROWS: &[(Method, Option<usize>, Option<f64>)] = &[
    (Method::Serial, None, Some(594e-6)),
    (Method::ApplyAsync, None, Some(0.156)),
    (Method::ApplyAsync, Some(50), Some(0.165)),
    (Method::ApplyAsync, Some(1), Some(0.152)),
    (Method::MapAsync, None, Some(0.144)),
    (Method::Apply, None, Some(0.130)),
    (Method::Map, None, Some(0.166)),
    (Method::Imap, None, None),
    (Method::ImapUnordered, None, None),
];

/// A row of the repost table: method, pool size, which pages are asked for when, the
/// tutorial's time in seconds. The sequential methods learn the total from page 1 first; the
/// parallel ones ask for all ten pages at once, as the tutorial's did, and one row shows
/// page 1 first for comparison.
const REPOST_ROWS: &[(Method, Option<usize>, Plan, Option<f64>)] = &[
    (Method::Serial, None, Plan::TotalFirst, Some(10.2)),
    (Method::ApplyAsync, None, Plan::AllAtOnce, Some(7.64)),
    (Method::ApplyAsync, Some(10), Plan::AllAtOnce, Some(7.64)),
    (Method::ApplyAsync, Some(1), Plan::AllAtOnce, Some(10.3)),
    (Method::ApplyAsync, Some(100), Plan::AllAtOnce, Some(8.24)),
    (Method::Apply, None, Plan::TotalFirst, Some(9.04)),
    (Method::Apply, Some(10), Plan::TotalFirst, Some(9.87)),
    (Method::Apply, Some(1), Plan::TotalFirst, Some(9.71)),
    (Method::MapAsync, Some(10), Plan::AllAtOnce, None),
    (Method::ImapUnordered, Some(10), Plan::AllAtOnce, None),
    (Method::ApplyAsync, Some(10), Plan::TotalFirst, None),
];

/// How a plan reads in the table.
fn plan_label(plan: Plan) -> &'static str {
    match plan {
        Plan::TotalFirst => "page 1, then the rest",
        Plan::AllAtOnce => "all 10 at once",
    }
}

/// Crawls the tutorial's post with `method`, keeping nothing but the counts.
fn crawl_all(
    pool: Option<&Arc<Pool>>,
    method: Method,
    plan: Plan,
    template: &PageRequest,
) -> Result<Outcome> {
    let job = Job {
        pool: pool.cloned(),
        method,
        plan,
        template,
        first_page: 1,
        seen: HashSet::new(),
        catch_signals: false,
    };
    let mut outcome = pages::crawl(job, |_, _| {}, |_| Ok(()));
    match outcome.stop.take() {
        Some(stop) => Err(stop.into_error()),
        None => Ok(outcome),
    }
}

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

/// A bar over the rows of a table.
fn progress(rows: usize, message: &str, args: &Args, show: Show) -> ProgressBar {
    crate::progress::bar(rows as u64, "rows", message, show.progress && !args.json)
}

pub fn run(args: Args, show: Show) -> Result<()> {
    let latency = Duration::from_millis(args.latency_ms);
    let mut out = io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "procpool seed: the multiprocessing.Pool tutorial's two experiments, on procpool"
        )?;
        writeln!(out, "machine: {}", machine())?;
        writeln!(out)?;
        out.flush()?;
    }
    if args.show_pids {
        show_pids(&mut out, latency)?;
    }
    let factorial_rows = factorial_table(&mut out, &args, show)?;
    let repost_rows = repost_table(&mut out, &args, show, latency)?;
    if args.json {
        let value = json!({ "command": "seed", "machine": machine(), "runs": args.runs,
            "latency_seconds": latency.as_secs_f64(),
            "factorial": factorial_rows, "reposts": repost_rows });
        writeln!(out, "{value}")?;
    }
    out.flush()?;
    Ok(())
}

/// The tutorial's pid printouts: f_list_para_apply_async(10, pid=1) and the parallel crawl.
fn show_pids(out: &mut impl Write, latency: Duration) -> Result<()> {
    writeln!(
        out,
        "factorials of 1..=10 through apply_async, each printing its worker's pid:"
    )?;
    out.flush()?;
    let pool = super::pool(None, true)?;
    factorials(
        Some(&pool),
        None,
        Method::ApplyAsync,
        10,
        None,
        true,
        &mut |_| {},
    )?;
    super::finish(&pool)?;
    writeln!(out)?;
    writeln!(
        out,
        "the repost crawl through apply_async on the default pool, all 10 pages at once:"
    )?;
    out.flush()?;
    let server = embedded_server(latency)?;
    let pool = Arc::new(super::pool(None, true)?);
    crawl_all(
        Some(&pool),
        Method::ApplyAsync,
        Plan::AllAtOnce,
        &PageRequest::new(server.base_url(), TUTORIAL_POST, DEFAULT_TOKEN),
    )?;
    super::finish(&pool)?;
    writeln!(out)?;
    Ok(())
}

fn factorial_table(
    out: &mut impl Write,
    args: &Args,
    show: Show,
) -> Result<Vec<serde_json::Value>> {
    tasks::set_show_pids(false);
    let expected: Vec<BigUint> = (1..=100).map(get_factorial).collect();
    let bar = progress(FACTORIAL_ROWS.len() + 1, "factorials", args, show);

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
        human(Duration::from_secs_f64(TUTORIAL_ONE_CALL)),
    ]);
    let mut rows = vec![
        json!({ "method": "one_call", "processes": 0, "cold_seconds": null,
        "warm_seconds": one_call.as_secs_f64(), "tutorial_seconds": TUTORIAL_ONE_CALL }),
    ];
    let mut warm_pools: Vec<(Option<usize>, Pool)> = Vec::new();
    for &(method, size, tutorial) in FACTORIAL_ROWS {
        let (cold, warm) = if method == Method::Serial {
            let serial = time_median(args.runs.max(5), || {
                check(
                    factorials(None, None, method, 100, None, false, &mut |_| {})?,
                    &expected,
                )
            })?;
            (None, serial)
        } else {
            let cold = time_median(args.runs, || {
                check(
                    factorials(None, size, method, 100, None, false, &mut |_| {})?,
                    &expected,
                )
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
            factorials(Some(pool), size, method, 100, None, false, &mut |_| {})?;
            let warm = time_median(args.runs, || {
                check(
                    factorials(Some(pool), size, method, 100, None, false, &mut |_| {})?,
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
            tutorial.map_or("-".into(), |s| human(Duration::from_secs_f64(s))),
        ]);
        rows.push(json!({ "method": method, "processes": size.unwrap_or(if method == Method::Serial { 0 } else { procpool::cpu_count() }),
            "cold_seconds": cold.map(|c| c.as_secs_f64()), "warm_seconds": warm.as_secs_f64(), "tutorial_seconds": tutorial }));
        bar.inc(1);
    }
    for (_, pool) in warm_pools {
        super::finish(&pool)?;
    }
    bar.finish_and_clear();
    if !args.json {
        writeln!(
            out,
            "Factorials of 1..=100 as big integers (median of {} runs; the tutorial started a new pool in every call)",
            args.runs
        )?;
        writeln!(out)?;
        write!(out, "{}", table.render())?;
        writeln!(out)?;
        out.flush()?;
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

fn repost_table(
    out: &mut impl Write,
    args: &Args,
    show: Show,
    latency: Duration,
) -> Result<Vec<serde_json::Value>> {
    let server = embedded_server(latency)?;
    let template = PageRequest::new(server.base_url(), TUTORIAL_POST, DEFAULT_TOKEN);
    let bar = progress(REPOST_ROWS.len() + 1, "reposts", args, show);
    let in_pages = |d: Duration| format!("{:.2}", d.as_secs_f64() / latency.as_secs_f64());
    let tutorial_pages = |s: f64| format!("{:.2}", s / TUTORIAL_PAGE.as_secs_f64());

    let one_page = time_median(args.runs, || {
        procpool_cli::crawl::fetch_page(&template)?;
        Ok(())
    })?;
    bar.inc(1);
    // Through --redis, which host fetched which page, in the last run of each row.
    let by_host = super::remote().is_some();
    let mut headers = vec![
        "method",
        "pool",
        "asks for",
        "time",
        "in pages",
        "tutorial (Python)",
        "in pages",
    ];
    if by_host {
        headers.push("pages by host (last run)");
    }
    let mut table = Table::new(&headers);
    let mut first = vec![
        "one page".into(),
        "-".into(),
        "page 1".into(),
        human(one_page),
        in_pages(one_page),
        "828 ms".into(),
        "1.00".into(),
    ];
    if by_host {
        first.push("(this process)".into());
    }
    table.row(first);
    let mut rows = vec![json!({ "method": "one_page", "processes": 0, "plan": null,
            "seconds": one_page.as_secs_f64(), "tutorial_seconds": TUTORIAL_PAGE.as_secs_f64() })];
    let mut reposts = 0;
    for &(method, size, plan, tutorial) in REPOST_ROWS {
        let mut hosts = std::collections::BTreeMap::new();
        let time = time_median(args.runs, || {
            // As in the tutorial, the pool is started inside the timed call.
            let pool = match method {
                Method::Serial => None,
                _ => Some(Arc::new(super::pool(size, false)?)),
            };
            let crawl = crawl_all(pool.as_ref(), method, plan, &template)?;
            ensure!(
                crawl.reposts_written == 2000 && crawl.pages_written == 10,
                "expected 2,000 reposts in 10 pages, got {} in {}",
                crawl.reposts_written,
                crawl.pages_written
            );
            reposts = crawl.reposts_written;
            hosts = crawl.hosts;
            if let Some(pool) = pool {
                super::finish(&pool)?;
            }
            Ok(())
        })?;
        let mut row = vec![
            method.to_string(),
            pool_label(method, size),
            plan_label(plan).into(),
            human(time),
            in_pages(time),
            tutorial.map_or("-".into(), |s| human(Duration::from_secs_f64(s))),
            tutorial.map_or("-".into(), tutorial_pages),
        ];
        if by_host {
            let text: Vec<String> = hosts
                .iter()
                .map(|(host, pages)| {
                    let pages: Vec<String> = pages.iter().map(u32::to_string).collect();
                    format!("{host}: {}", pages.join(" "))
                })
                .collect();
            row.push(if text.is_empty() {
                "(this process)".into()
            } else {
                text.join("; ")
            });
        }
        table.row(row);
        rows.push(json!({ "method": method, "processes": size.unwrap_or(if method == Method::Serial { 0 } else { procpool::cpu_count() }),
            "plan": plan, "seconds": time.as_secs_f64(), "tutorial_seconds": tutorial,
            "hosts": (!hosts.is_empty()).then_some(&hosts) }));
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !args.json {
        writeln!(
            out,
            "Reposts of post {TUTORIAL_POST}: {reposts} in 10 pages of 200 over HTTP from the embedded API server \
             (median of {} runs, {} ms a page; \"in pages\" = time / one page's latency)",
            args.runs,
            latency.as_millis()
        )?;
        writeln!(out)?;
        write!(out, "{}", table.render())?;
        writeln!(out)?;
        writeln!(
            out,
            "\"all 10 at once\" is the tutorial's way: every page is asked for before page 1 tells the total, \
             so a post with fewer reposts still costs 10 requests. `procpool reposts` asks for page 1 first \
             and then only the pages the total calls for (--all-at-once for the tutorial's way). \
             A pool larger than the machine is ready once it has one worker a CPU and starts the rest \
             while the pages come; the asynchronous rows close it once every page is asked for, as the \
             tutorial does, and a closed pool starts only the workers its queued pages need."
        )?;
    }
    Ok(rows)
}
