//! Diagnostics on standard error through `tracing`: `-v` for requests, retries and the
//! pool's workers, `-vv` for every attempt; `RUST_LOG` (as `tracing-subscriber` reads it)
//! overrides both.
//!
//! Pool workers log too: the pool's initializer gives each worker the same filter.

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// The filter in force, for the pool's workers.
static FILTER: OnceLock<String> = OnceLock::new();

/// The filter directives for `verbose` uses of `-v` (`quiet`: errors only), unless
/// `RUST_LOG` is set.
fn directives(verbose: u8, quiet: bool) -> String {
    if let Ok(value) = std::env::var(EnvFilter::DEFAULT_ENV)
        && !value.trim().is_empty()
    {
        return value;
    }
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    // Dependencies (the HTTP client, TLS) stay at warnings unless asked for by RUST_LOG.
    format!("warn,procpool={level},procpool_cli={level}")
}

/// Starts logging to standard error in this process.
pub fn init(verbose: u8, quiet: bool) {
    let directives = directives(verbose, quiet);
    install(&directives);
    let _ = FILTER.set(directives);
}

/// Starts logging in a pool worker with the parent's filter, tagging each line with the
/// worker's pid.
pub fn init_worker(directives: &str) {
    install(directives);
    tracing::debug!(pid = std::process::id(), "worker logging started");
}

/// The filter to hand to a pool's workers.
pub fn filter() -> String {
    FILTER.get().cloned().unwrap_or_default()
}

fn install(directives: &str) {
    let filter = EnvFilter::try_new(directives).unwrap_or_else(|error| {
        eprintln!("procpool: ignoring the log filter `{directives}`: {error}");
        EnvFilter::new("warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
