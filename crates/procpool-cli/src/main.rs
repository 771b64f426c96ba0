//! `procpool`: the Pool tutorial's two experiments on procpool, and the local repost API
//! server they crawl. Run `procpool seed` for both tables; `procpool help` for the rest.
//!
//! Exit status: 0 on success (and when a reader of the output goes away, as in
//! `procpool seed | head -1`); 1 on a runtime error; 2 on a usage error; 128 plus the signal's
//! number when SIGINT (130) or SIGTERM (143) stopped a crawl.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

mod cmd;
mod log;
mod method;
mod pages;
mod progress;
mod table;
mod tasks;

use cmd::{Command, Interrupted, UsageError};

/// The tutorial's process-pool experiments, on procpool.
#[derive(Debug, Parser)]
#[command(name = "procpool", version, about, long_about = None)]
#[command(after_help = cmd::EXIT_HELP, after_long_help = cmd::JSON_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log more on standard error: -v requests, retries and workers; -vv every attempt.
    /// RUST_LOG, when set, decides instead.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Print no progress bars and only errors on standard error.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Run the pools' calls on `procpool worker` hosts that serve a queue on this Redis
    /// server (`redis://[user:password@]host:port/db`, or `rediss://` for TLS) instead of on
    /// local workers. Also PROCPOOL_REDIS.
    #[arg(long, global = true, env = "PROCPOOL_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// The queue on Redis (with --redis, and for `worker`).
    #[arg(long, global = true, default_value = "procpool", value_name = "NAME")]
    queue: String,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Usage errors exit 2, help and version 0; clap prints either.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    log::init(cli.verbose, cli.quiet);
    if let Some(url) = cli.redis {
        cmd::use_redis(cmd::Remote {
            url,
            queue: cli.queue,
        });
    }
    let show = cmd::Show {
        progress: !cli.quiet,
    };
    match cmd::run(cli.command, show) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) if error.is::<UsageError>() => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            let _ = std::io::stdout().flush();
            eprintln!("procpool: {error:#}");
            match error.downcast_ref::<Interrupted>() {
                Some(interrupted) => ExitCode::from(interrupted.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// A reader that went away (`procpool seed | head`) is not a failure.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
