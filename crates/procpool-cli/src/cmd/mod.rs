//! The subcommands.

use anyhow::Result;

mod factorial;
mod reposts;
mod seed;
mod serve;

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
}

/// Runs a subcommand.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Seed(args) => seed::run(args),
        Command::Factorial(args) => factorial::run(args),
        Command::Reposts(args) => reposts::run(args),
        Command::ServeApi(args) => serve::run(args),
    }
}

/// A pool of `processes` workers (the CPU count when `None`) whose tasks print pids if asked.
fn pool(processes: Option<usize>, show_pids: bool) -> Result<procpool::Pool> {
    let mut builder = procpool::Pool::builder().initializer(crate::tasks::show_pids, (show_pids,));
    if let Some(n) = processes {
        builder = builder.processes(n);
    }
    Ok(builder.build()?)
}
