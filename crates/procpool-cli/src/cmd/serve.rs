//! `procpool serve-api`: the repost-timeline API on 127.0.0.1, until interrupted.

use std::time::Duration;

use std::io::Write;

use anyhow::{Context, Result};
use procpool_cli::api::{DEFAULT_TOKEN, Server, ServerConfig, dataset};

/// Options of `procpool serve-api`.
#[derive(Debug, clap::Args)]
#[command(after_help = super::EXIT_HELP)]
pub struct Args {
    /// The port on 127.0.0.1; 0 picks a free one and prints it.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How long each page waits before it is sent, in milliseconds (the tutorial saw about
    /// 800 a page); errors are answered at once.
    #[arg(long, default_value_t = 800)]
    latency_ms: u64,
    /// Tokens the server accepts, besides the tutorial's.
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// The most requests each token may make; later ones get error 10023.
    #[arg(long)]
    rate_limit: Option<u32>,
    /// The most connections served at once; one more is answered 503 (error 10009).
    #[arg(long, default_value_t = procpool_cli::api::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    max_connections: usize,
}

pub fn run(args: Args) -> Result<()> {
    let mut tokens = vec![DEFAULT_TOKEN.to_string()];
    tokens.extend(args.tokens);
    let config = ServerConfig {
        port: args.port,
        latency: Duration::from_millis(args.latency_ms),
        tokens,
        rate_limit: args.rate_limit,
        max_connections: args.max_connections,
        ..ServerConfig::default()
    };
    let server = Server::start(config).context("cannot start the API server")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "serving the repost timeline API at {}",
        server.base_url()
    )?;
    writeln!(out, "token: {DEFAULT_TOKEN}")?;
    for (id, total) in dataset::POSTS {
        writeln!(out, "post {id}: {total} reposts")?;
    }
    writeln!(
        out,
        "try: curl '{}/2/statuses/repost_timeline.json?id={}&count=200&page=1&access_token={DEFAULT_TOKEN}'",
        server.base_url(),
        dataset::TUTORIAL_POST
    )?;
    out.flush()?;
    drop(out);
    loop {
        std::thread::park();
    }
}
