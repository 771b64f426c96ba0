//! `procpool`: the Pool tutorial's two experiments on procpool, and the local repost API
//! server they crawl. Run `procpool seed` for both tables; `procpool help` for the rest.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

mod cmd;
mod method;
mod table;
mod tasks;

use cmd::Command;

/// The tutorial's process-pool experiments, on procpool.
#[derive(Debug, Parser)]
#[command(name = "procpool", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    match cmd::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = std::io::stdout().flush();
            eprintln!("procpool: {error:#}");
            ExitCode::from(2)
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
