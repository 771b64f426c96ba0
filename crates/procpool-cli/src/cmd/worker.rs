//! `procpool worker`: a host agent for the experiments' tasks.

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Arguments of `procpool worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Worker processes that run calls at once (the CPU count by default).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=16384))]
    processes: Option<u64>,
    /// How long this host may be silent before other hosts take its calls; every host of a
    /// queue should use the same.
    #[arg(long, default_value_t = 30_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(30..))]
    lease_ms: u64,
    /// This host's name in results and errors (the machine's name and this pid by default).
    #[arg(long)]
    name: Option<String>,
}

/// Serves the queue given with `--redis` and `--queue` until SIGINT or SIGTERM, then hands
/// back the calls it holds and exits.
pub fn run(args: Args) -> Result<()> {
    let Some(remote) = super::remote() else {
        bail!(super::UsageError(
            "`procpool worker` needs --redis URL (or PROCPOOL_REDIS)".into()
        ));
    };
    let mut host =
        procpool::Host::new(&remote.url, &remote.queue).lease(Duration::from_millis(args.lease_ms));
    if let Some(n) = args.processes {
        host = host.processes(n as usize);
    }
    if let Some(name) = &args.name {
        host = host.name(name);
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("cannot watch for SIGINT and SIGTERM")?;
    let host = host.start().context("cannot start the host")?;
    tracing::info!("serving queue {:?}", remote.queue);
    eprintln!(
        "procpool worker: serving queue {:?}; SIGINT or SIGTERM stops it",
        remote.queue
    );
    let signal = signals.forever().next();
    tracing::info!("stopping on signal {signal:?}: handing back the calls in flight");
    host.stop().context("the host stopped with an error")?;
    Ok(())
}
