//! `procpool reposts`: the tutorial's second experiment, a paginated crawl of a post's
//! repost timeline.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use procpool::Pool;
use procpool_cli::api::{DEFAULT_TOKEN, Server, ServerConfig, dataset::TUTORIAL_POST};
use procpool_cli::crawl::{self, CrawlError, MAX_PAGES, Page, PageRequest, Repost};

use crate::method::{Method, run_all};
use crate::table::human;
use crate::tasks::{self, get_repost_timeline};

/// Options of `procpool reposts`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The post whose reposts to fetch.
    #[arg(long, default_value_t = TUTORIAL_POST)]
    mid: u64,
    /// The API's base URL; without one, an embedded server on 127.0.0.1 is started.
    #[arg(long)]
    api_base: Option<String>,
    /// The OAuth2 access token.
    #[arg(long, default_value = DEFAULT_TOKEN)]
    token: String,
    /// Worker processes (default: the CPU count).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    processes: Option<u64>,
    /// Which of Pool's methods fetches the pages.
    #[arg(long, value_enum, default_value_t = Method::ApplyAsync)]
    method: Method,
    /// Write the reposts here, one JSON object a line, in page order, each once.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The embedded server's latency per page, in milliseconds.
    #[arg(long, default_value_t = 800)]
    latency_ms: u64,
    /// How long one request may take, in milliseconds.
    #[arg(long, default_value_t = crawl::DEFAULT_TIMEOUT_MS)]
    timeout_ms: u64,
    /// How many times a transient failure is retried, with backoff.
    #[arg(long, default_value_t = crawl::DEFAULT_RETRIES)]
    retries: u32,
    /// Print the pid of the process that fetches each page.
    #[arg(long)]
    show_pids: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// What a crawl fetched.
#[derive(Debug)]
pub struct Crawl {
    /// The reposts, newest first, each once.
    pub reposts: Vec<Repost>,
    /// How many pages there were to fetch.
    pub pages: u32,
    /// The post's `total_number`.
    pub total_number: u64,
}

/// Crawls the pages of `template`'s post with `method`.
///
/// The sequential methods (serial, `apply`) fetch page 1 first, learn `total_number` from
/// it, then fetch the pages it says exist. The others ask for all ten pages at once and keep
/// those the total says exist, so that ten workers finish in about one page's latency.
pub fn crawl(pool: Option<&Pool>, method: Method, template: &PageRequest) -> Result<Crawl> {
    let pages = match method {
        Method::Serial => sequential(template, |request| Ok(crawl::fetch_page(&request)))?,
        Method::Apply => {
            let pool = pool.context("apply needs a pool")?;
            sequential(template, |request| {
                Ok(pool.apply(get_repost_timeline, (request,))?)
            })?
        }
        _ => {
            let requests: Vec<PageRequest> =
                (1..=MAX_PAGES).map(|p| template.with_page(p)).collect();
            let key = |r: &Result<Page, CrawlError>| match r {
                Ok(page) => page.page as usize,
                Err(error) => error.page() as usize,
            };
            let mut results =
                run_all(pool, method, get_repost_timeline, requests, Some(1), key)?.into_iter();
            let first = results.next().context("no page came back")??;
            let wanted = crawl::page_count(first.total_number) as usize;
            let mut pages = vec![first];
            for result in results.take(wanted.saturating_sub(1)) {
                pages.push(result?);
            }
            pages
        }
    };
    let total_number = pages.first().map_or(0, |p| p.total_number);
    let count = crawl::page_count(total_number);
    Ok(Crawl {
        reposts: crawl::merge_pages(pages),
        pages: count,
        total_number,
    })
}

/// Page 1, then the pages its total says exist, one at a time through `fetch`.
fn sequential(
    template: &PageRequest,
    fetch: impl Fn(PageRequest) -> Result<Result<Page, CrawlError>>,
) -> Result<Vec<Page>> {
    let first = fetch(template.with_page(1))??;
    let count = crawl::page_count(first.total_number);
    let mut pages = vec![first];
    for page in 2..=count {
        pages.push(fetch(template.with_page(page))??);
    }
    Ok(pages)
}

/// The embedded server, started when no `--api-base` is given.
pub fn embedded_server(latency: Duration) -> Result<Server> {
    Server::start(ServerConfig {
        latency,
        ..ServerConfig::default()
    })
    .context("cannot start the embedded API server")
}

pub fn run(args: Args) -> Result<()> {
    tasks::set_show_pids(args.show_pids);
    let server = match &args.api_base {
        Some(_) => None,
        None => Some(embedded_server(Duration::from_millis(args.latency_ms))?),
    };
    let api_base = match (&args.api_base, &server) {
        (Some(base), _) => base.clone(),
        (None, Some(server)) => server.base_url(),
        (None, None) => unreachable!("a server is started when no base is given"),
    };
    let mut template = PageRequest::new(api_base.clone(), args.mid, args.token.clone());
    template.timeout_ms = args.timeout_ms;
    template.retries = args.retries;
    let pool = match args.method {
        Method::Serial => None,
        _ => Some(super::pool(
            args.processes.map(|p| p as usize),
            args.show_pids,
        )?),
    };
    let start = Instant::now();
    let crawl = crawl(pool.as_ref(), args.method, &template).with_context(|| {
        format!(
            "cannot crawl the reposts of post {} from {api_base}",
            args.mid
        )
    })?;
    let elapsed = start.elapsed();
    if let Some(path) = &args.out {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::new(file);
        crawl::write_json_lines(&crawl.reposts, &mut out)
            .and_then(|()| out.flush())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let processes = pool.as_ref().map_or(0, Pool::processes);
    if let Some(pool) = pool {
        pool.close();
        pool.join()?;
    }
    if args.json {
        let value = serde_json::json!({
            "experiment": "reposts",
            "mid": args.mid,
            "api_base": api_base,
            "embedded_server": server.is_some(),
            "method": args.method,
            "processes": processes,
            "total_number": crawl.total_number,
            "pages": crawl.pages,
            "reposts": crawl.reposts.len(),
            "seconds": elapsed.as_secs_f64(),
            "out": args.out,
        });
        println!("{value}");
    } else {
        let pool = if processes == 0 {
            "no pool".to_string()
        } else {
            format!("a pool of {processes}")
        };
        println!(
            "fetched {} reposts of post {} ({} pages; total_number {}) in {} with {} on {pool}{}",
            crawl.reposts.len(),
            args.mid,
            crawl.pages,
            crawl.total_number,
            human(elapsed),
            args.method,
            args.out
                .as_ref()
                .map_or(String::new(), |p| format!("; wrote {}", p.display())),
        );
        if server.is_some() {
            println!(
                "(from the embedded API server at {api_base}, {} ms a page)",
                args.latency_ms
            );
        }
    }
    drop(server);
    Ok(())
}
