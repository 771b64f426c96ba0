//! Where a pool's jobs run. Today on this machine's worker processes, driven by a
//! supervisor thread; each method matches once and hands off, so that another backend (a
//! queue shared by many machines) is one more variant, and `Pool` knows none of their parts.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{BuildError, Error};
use crate::event::Events;
use crate::insight::Insights;
use crate::job::Job;
use crate::result::Collector;
use crate::shared::Fds;
use crate::stats::Stats;
use crate::supervisor::{self, Config};

#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Local(supervisor::Local),
    /// A queue on Redis, served by host agents on any number of machines.
    #[cfg(feature = "redis")]
    Remote(crate::remote::Remote),
}

impl Backend {
    pub(crate) fn start(config: Config) -> Result<Backend, BuildError> {
        supervisor::Local::start(config).map(Backend::Local)
    }

    #[cfg(feature = "redis")]
    pub(crate) fn start_remote(config: crate::remote::RemoteConfig) -> Result<Backend, BuildError> {
        crate::remote::Remote::start(config)
            .map(Backend::Remote)
            .map_err(|error| BuildError::connect(&error))
    }

    /// A job of the calls `calls` of `task`, with a fresh id; `encode` writes its frame for
    /// that id.
    pub(crate) fn job<E>(
        &self,
        task: &'static str,
        encode: impl FnOnce(u64) -> Result<(Vec<u8>, Fds), E>,
        sink: &Arc<Collector>,
        calls: (usize, usize, usize),
        timeout: Option<Duration>,
    ) -> Result<Job, E> {
        let (id, counters) = match self {
            Backend::Local(local) => {
                let hub = local.hub();
                (hub.next_job_id(), Arc::clone(&hub.counters))
            }
            #[cfg(feature = "redis")]
            Backend::Remote(remote) => (remote.next_job_id(), Arc::clone(remote.counters())),
        };
        let sealed = encode(id)?;
        Ok(Job::new(
            id,
            task,
            sealed,
            Arc::clone(sink),
            calls,
            timeout,
            counters,
        ))
    }

    /// Links `sink` to this backend: its cancels reach it, and its callbacks run there.
    pub(crate) fn link(&self, sink: &Collector) {
        match self {
            Backend::Local(local) => sink.link(local.link()),
            #[cfg(feature = "redis")]
            Backend::Remote(remote) => sink.link(remote.link()),
        }
    }

    /// Queues jobs, or refuses them all if the pool no longer takes work.
    pub(crate) fn submit(&self, jobs: impl IntoIterator<Item = Job>) -> Result<(), Error> {
        match self {
            Backend::Local(local) => local.hub().submit(jobs),
            #[cfg(feature = "redis")]
            Backend::Remote(remote) => remote.submit(jobs),
        }
    }

    /// Runs `jobs` for a caller that waits for them: from the calling thread where the
    /// backend can, through the queue otherwise. `while_waiting` does useful work between
    /// waits and says whether it did.
    pub(crate) fn run_blocking(
        &self,
        jobs: VecDeque<Job>,
        workers: usize,
        while_waiting: &mut dyn FnMut() -> bool,
    ) -> Result<(), Error> {
        match self {
            Backend::Local(local) => local.run_blocking(jobs, workers, while_waiting),
            #[cfg(feature = "redis")]
            Backend::Remote(remote) => {
                let _ = (workers, while_waiting);
                remote.submit(jobs)
            }
        }
    }

    pub(crate) fn check_open(&self) -> Result<(), Error> {
        match self {
            Backend::Local(local) => local.check_open(),
            #[cfg(feature = "redis")]
            Backend::Remote(remote) => remote.check_open(),
        }
    }

    pub(crate) fn subscribe(&self) -> Events {
        match self {
            Backend::Local(local) => local.subscribe(),
            #[cfg(feature = "redis")]
            Backend::Remote(remote) => remote.subscribe(),
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        match self {
            Backend::Local(local) => local.stats(),
            #[cfg(feature = "redis")]
            Backend::Remote(remote) => remote.stats(),
        }
    }

    pub(crate) fn insights(&self) -> Insights {
        match self {
            Backend::Local(local) => local.insights(),
            // The workers are the hosts'; a pool over Redis does not see them.
            #[cfg(feature = "redis")]
            Backend::Remote(_) => Insights {
                workers: Vec::new(),
            },
        }
    }

    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        match self {
            Backend::Local(local) => local.worker_pids(),
            #[cfg(feature = "redis")]
            Backend::Remote(_) => Vec::new(),
        }
    }

    #[cfg(feature = "test-hooks")]
    pub(crate) fn idle_workers(&self) -> usize {
        match self {
            Backend::Local(local) => local.idle_workers(),
            #[cfg(feature = "redis")]
            Backend::Remote(_) => 0,
        }
    }

    pub(crate) fn close(&self) {
        match self {
            Backend::Local(local) => local.close(),
            #[cfg(feature = "redis")]
            Backend::Remote(remote) => remote.close(),
        }
    }

    pub(crate) fn join(&self) -> Result<(), Error> {
        match self {
            Backend::Local(local) => local.join(),
            #[cfg(feature = "redis")]
            Backend::Remote(remote) => remote.join(),
        }
    }

    pub(crate) fn join_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        match self {
            Backend::Local(local) => local.join_timeout(timeout),
            #[cfg(feature = "redis")]
            Backend::Remote(remote) => remote.join_timeout(timeout),
        }
    }

    pub(crate) fn terminate(&self) {
        match self {
            Backend::Local(local) => local.terminate(),
            #[cfg(feature = "redis")]
            Backend::Remote(remote) => remote.terminate(),
        }
    }
}
