//! `procpool reposts`: the tutorial's second experiment, a paginated crawl of a post's
//! repost timeline, written out page by page as the pages come.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use procpool_cli::api::{DEFAULT_TOKEN, Server, ServerConfig, dataset::TUTORIAL_POST};
use procpool_cli::crawl::{self, PageRequest, Repost};

use super::{Interrupted, Show, UsageError};
use crate::method::Method;
use crate::pages::{self, Job, Outcome, Plan, Stop};
use crate::table::human;
use crate::tasks;

/// Options of `procpool reposts`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = super::JSON_HELP)]
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
    /// Write the reposts here as they come, one JSON object a line, in page order, each
    /// once; `-` is standard output. The file is opened before the first request, and a crawl
    /// that stops early keeps every complete page already written.
    #[arg(long, value_name = "FILE")]
    out: Option<String>,
    /// Keep the reposts already in --out and fetch only the pages after them (the file must
    /// come from a crawl of the same post with the same page size).
    #[arg(long, requires = "out")]
    resume: bool,
    /// Ask for all ten pages at once, before the total is known, as the tutorial does. By
    /// default page 1 comes first and then only the pages its total calls for.
    #[arg(long)]
    all_at_once: bool,
    /// The embedded server's latency per page, in milliseconds.
    #[arg(long, default_value_t = 800)]
    latency_ms: u64,
    /// How long one request may take, from connecting to the end of the body: seconds, or a
    /// number with `ms` or `s` (`500ms`, `2.5s`). A request past it fails the crawl; 0 is no
    /// limit.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// How many times a transient failure (a broken connection, a 5xx status, the rate limit
    /// 10023) is retried, with backoff from 50 ms doubling to 1.6 s.
    #[arg(long, default_value_t = crawl::DEFAULT_RETRIES)]
    retries: u32,
    /// Print the pid of the process that fetches each page.
    #[arg(long)]
    show_pids: bool,
    /// Print the result as JSON (see `procpool help reposts` for the schema).
    #[arg(long)]
    json: bool,
}

/// A duration on the command line: `10`, `2.5s`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("expected seconds or a number with ms or s, got `{text}`"))?;
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("expected a duration of zero or more, got `{text}`"))
}

/// The embedded server, started when no `--api-base` is given.
pub fn embedded_server(latency: Duration) -> Result<Server> {
    Server::start(ServerConfig {
        latency,
        ..ServerConfig::default()
    })
    .context("cannot start the embedded API server")
}

/// Where the reposts go.
enum Destination {
    /// Nowhere (no --out).
    Nowhere,
    /// Standard output (`--out -`).
    Stdout,
    /// A file, with what it held before when resuming.
    File { path: String, file: File },
}

impl Destination {
    fn name(&self) -> Option<&str> {
        match self {
            Destination::Nowhere => None,
            Destination::Stdout => Some("standard output"),
            Destination::File { path, .. } => Some(path),
        }
    }
}

/// What a file to resume already holds.
#[derive(Debug, Default)]
struct Resumed {
    ids: HashSet<u64>,
    lines: u64,
}

/// Opens `--out` before any request, so that an unwritable path fails at once. With
/// `resume`, reads what the file holds and drops a last line cut short.
fn open_out(args: &Args) -> Result<(Destination, Resumed)> {
    let Some(path) = &args.out else {
        return Ok((Destination::Nowhere, Resumed::default()));
    };
    if path == "-" {
        if args.resume {
            return Err(UsageError(
                "--resume needs a file for --out, not standard output".to_owned(),
            )
            .into());
        }
        return Ok((Destination::Stdout, Resumed::default()));
    }
    if !args.resume {
        let file = File::create(path).with_context(|| format!("cannot create --out {path}"))?;
        return Ok((
            Destination::File {
                path: path.clone(),
                file,
            },
            Resumed::default(),
        ));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open --out {path} to resume"))?;
    let resumed = read_resumable(&mut file, path, args.mid)?;
    Ok((
        Destination::File {
            path: path.clone(),
            file,
        },
        resumed,
    ))
}

/// Reads the complete lines of a file to resume (each a repost of `mid`), cuts off a last
/// line without its newline and leaves the file positioned at its end.
fn read_resumable(file: &mut File, path: &str, mid: u64) -> Result<Resumed> {
    let mut resumed = Resumed::default();
    let mut complete_bytes = 0u64;
    let mut reader = BufReader::new(&mut *file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("cannot read --out {path} to resume"))?;
        if n == 0 || !line.ends_with('\n') {
            if n > 0 {
                tracing::info!("dropping the last line of {path}: it was cut short");
            }
            break;
        }
        let number = resumed.lines + 1;
        let repost: Repost = serde_json::from_str(&line)
            .with_context(|| format!("cannot resume from {path}: line {number} is not a repost"))?;
        if let Some(original) = &repost.retweeted_status
            && original.id != mid
        {
            bail!(
                "cannot resume from {path}: line {number} is a repost of post {}, not of post {mid}",
                original.id
            );
        }
        resumed.ids.insert(repost.id);
        resumed.lines += 1;
        complete_bytes += n as u64;
    }
    drop(reader);
    file.set_len(complete_bytes)
        .and_then(|()| file.seek(SeekFrom::End(0)).map(drop))
        .with_context(|| format!("cannot cut {path} to its complete lines"))?;
    Ok(resumed)
}

pub fn run(args: Args, show: Show) -> Result<()> {
    tasks::set_show_pids(args.show_pids);
    // --out first: nothing is asked of any server if the results could not be kept.
    let (destination, resumed) = open_out(&args)?;
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
    template.timeout_ms = u64::try_from(args.timeout.as_millis()).unwrap_or(u64::MAX);
    template.retries = args.retries;
    let count = u64::from(template.count.clamp(1, crawl::PAGE_SIZE));
    let first_page = u32::try_from(resumed.lines / count + 1).unwrap_or(u32::MAX);
    if args.resume {
        tracing::info!(
            "resuming: {} reposts already in the file, starting at page {first_page}",
            resumed.lines
        );
    }
    let pool = match args.method {
        Method::Serial => None,
        _ => Some(Arc::new(super::pool(
            args.processes.map(|p| p as usize),
            args.show_pids,
        )?)),
    };
    let processes = pool.as_ref().map_or(0, |pool| pool.processes());
    let plan = if args.all_at_once {
        Plan::AllAtOnce
    } else {
        Plan::TotalFirst
    };
    let to_stdout = matches!(destination, Destination::Stdout);
    let bar = crate::progress::bar(
        u64::from(crawl::MAX_PAGES),
        "pages",
        &format!("post {}", args.mid),
        show.progress && !args.json,
    );
    let mut writer: Box<dyn Write> = match &destination {
        Destination::Nowhere => Box::new(io::sink()),
        Destination::Stdout => Box::new(BufWriter::new(io::stdout())),
        Destination::File { file, .. } => Box::new(BufWriter::new(file.try_clone()?)),
    };
    let start = Instant::now();
    let job = Job {
        pool: pool.clone(),
        method: args.method,
        plan,
        template: &template,
        first_page,
        seen: resumed.ids,
        catch_signals: true,
    };
    let mut outcome = pages::crawl(
        job,
        |page, last| {
            bar.set_length(u64::from(last));
            if page == 0 {
                bar.set_position(u64::from(first_page - 1));
                bar.reset_eta();
            } else {
                bar.set_position(u64::from(page));
            }
        },
        |reposts| {
            crawl::write_json_lines(reposts, &mut writer)?;
            writer.flush()
        },
    );
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    drop(writer);
    if let Some(pool) = &pool {
        if outcome.stop.is_none() {
            super::finish(pool)?;
        } else {
            super::log_end(pool);
        }
    }
    let stop = outcome.stop.take();
    let report = Report {
        args: &args,
        api_base: &api_base,
        embedded: server.is_some(),
        plan,
        processes,
        first_page,
        resumed_reposts: resumed.lines,
        destination: &destination,
        outcome: &outcome,
        stop: stop.as_ref(),
        elapsed,
    };
    // With the reposts on standard output, the summary goes to standard error.
    let summary = if to_stdout {
        report.print(&mut io::stderr().lock())
    } else {
        report.print(&mut io::stdout().lock())
    };
    let context = report.stopped_context();
    drop(server);
    match stop {
        None => summary,
        Some(Stop::Write(error)) => Err(anyhow::Error::new(error)
            .context(format!(
                "cannot write to {}",
                destination.name().unwrap_or("the output")
            ))
            .context(context)),
        Some(stop) => Err(stop.into_error().context(context)),
    }
}

/// What to say about a crawl.
struct Report<'a> {
    args: &'a Args,
    api_base: &'a str,
    embedded: bool,
    plan: Plan,
    processes: usize,
    first_page: u32,
    resumed_reposts: u64,
    destination: &'a Destination,
    outcome: &'a Outcome,
    stop: Option<&'a Stop>,
    elapsed: Duration,
}

impl Report<'_> {
    fn stopped_by(&self) -> Option<&'static str> {
        self.stop.map(|stop| match stop {
            Stop::Signal(signal_hook::consts::SIGINT) => "SIGINT",
            Stop::Signal(signal_hook::consts::SIGTERM) => "SIGTERM",
            Stop::Signal(_) => "signal",
            Stop::Page(_) | Stop::Pool(_) | Stop::Lost(_) => "error",
            Stop::Write(_) => "write_error",
        })
    }

    fn error_text(&self) -> Option<String> {
        self.stop.map(|stop| match stop {
            Stop::Page(error) => error.to_string(),
            Stop::Pool(error) => error.to_string(),
            Stop::Write(error) => format!("cannot write the reposts: {error}"),
            Stop::Signal(signal) => Interrupted { signal: *signal }.to_string(),
            Stop::Lost(page) => format!("page {page} never came back from the pool"),
        })
    }

    /// The summary: JSON with --json, else a sentence. Written even when the crawl stopped,
    /// so that what was kept is known.
    fn print(&self, out: &mut impl Write) -> Result<()> {
        let outcome = self.outcome;
        if self.args.json {
            let value = serde_json::json!({
                "command": "reposts",
                "mid": self.args.mid,
                "api_base": self.api_base,
                "embedded_server": self.embedded,
                "method": self.args.method,
                "plan": self.plan,
                "processes": self.processes,
                "total_number": outcome.total_number,
                "last_page": (outcome.last_page > 0).then_some(outcome.last_page),
                "first_page": self.first_page,
                "pages_written": outcome.pages_written,
                "reposts_written": outcome.reposts_written,
                "resumed_reposts": self.resumed_reposts,
                "complete": self.stop.is_none(),
                "stopped_by": self.stopped_by(),
                "error": self.error_text(),
                "seconds": self.elapsed.as_secs_f64(),
                "out": self.args.out,
                "hosts": (!outcome.hosts.is_empty()).then_some(&outcome.hosts),
            });
            writeln!(out, "{value}")?;
            return Ok(());
        }
        if self.stop.is_some() {
            // The error, with what was kept, is the whole message.
            return Ok(());
        }
        let pool = if self.processes == 0 {
            "no pool".to_string()
        } else {
            format!("a pool of {}", self.processes)
        };
        let resumed = if self.args.resume {
            format!(
                " after the {} already in the file (from page {})",
                self.resumed_reposts, self.first_page
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "fetched {} reposts of post {}{resumed} ({} pages; total_number {}) in {} with {} on {pool}{}",
            outcome.reposts_written,
            self.args.mid,
            outcome.pages_written,
            outcome.total_number.unwrap_or(0),
            human(self.elapsed),
            self.args.method,
            self.destination
                .name()
                .map_or(String::new(), |name| format!("; wrote {name}")),
        )?;
        if self.embedded {
            writeln!(
                out,
                "(from the embedded API server at {}, {} ms a page)",
                self.api_base, self.args.latency_ms
            )?;
        }
        for (host, pages) in &outcome.hosts {
            writeln!(out, "host {host} fetched {}", pages_text(pages))?;
        }
        Ok(())
    }

    /// What to say before the cause of a crawl that stopped: the post, and what was kept.
    fn stopped_context(&self) -> String {
        let outcome = self.outcome;
        let kept = match self.destination.name() {
            None => String::new(),
            Some(name) if outcome.pages_written == 0 => format!(" (nothing written to {name})"),
            Some(name) => {
                let last = match outcome.last_page {
                    0 => String::new(),
                    last => format!(" of {last}"),
                };
                let pages = format!(
                    "pages {}-{}{last}",
                    self.first_page,
                    self.first_page + outcome.pages_written - 1
                );
                let hint = if matches!(self.destination, Destination::File { .. }) {
                    "; --resume fetches the rest"
                } else {
                    ""
                };
                format!(
                    " (wrote {} reposts, {pages}, to {name}{hint})",
                    outcome.reposts_written
                )
            }
        };
        format!(
            "crawl of post {} from {} stopped{kept}",
            self.args.mid, self.api_base
        )
    }
}

/// "page 3" or "pages 1, 4, 7".
pub(super) fn pages_text(pages: &[u32]) -> String {
    let list: Vec<String> = pages.iter().map(u32::to_string).collect();
    match list.len() {
        1 => format!("page {}", list[0]),
        _ => format!("pages {}", list.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_seconds_or_with_a_unit() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2_500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("`soon`"));
    }
}
