//! A host agent: serves a pool's queue over Redis with a local pool of this machine's
//! worker processes. See [`Host`]. Here the public side and the reader of new jobs; the
//! agent that runs them, renews their leases and takes over lost ones is in `agent.rs`.

mod agent;

use agent::Agent;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use redis::Value;

use crate::backend::Backend;
use crate::error::{Error, ErrorKind};
use crate::remote::{self, GROUP, Keys, Reply, connect};
use crate::start::StartMethod;
use crate::supervisor::Config;

/// A host agent: runs the calls of pools built with [`Builder::redis`](crate::Builder::redis)
/// on this machine, in a local pool of worker processes of this same program.
///
/// Start one on each machine that should take work, in the program whose tasks the pools
/// call (the registry must be the same: a host of another build never sees the calls). A
/// call that crashes its worker ends as [`ErrorKind::WorkerDied`] with the host named
/// ([`Error::host`]); the host goes on. A host that dies or stops answering loses its calls
/// to other hosts once its lease has passed without a renewal.
///
/// ```no_run
/// # fn main() -> Result<(), procpool::Error> {
/// let host = procpool::Host::new("redis://127.0.0.1:6379/", "crawl")
///     .processes(8)
///     .start()?;
/// // … until the program should stop taking work:
/// host.stop()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Host {
    url: remote::Url,
    queue: String,
    processes: Option<usize>,
    lease: Duration,
    name: Option<String>,
}

impl Host {
    /// A host for queue `queue` on the Redis server at `url` (`redis://[user:password@]host:port/db`,
    /// or `rediss://` for TLS with the `redis-tls` feature).
    pub fn new(url: impl Into<String>, queue: impl Into<String>) -> Host {
        Host {
            url: remote::Url(url.into()),
            queue: queue.into(),
            processes: None,
            lease: remote::DEFAULT_LEASE,
            name: None,
        }
    }

    /// How many worker processes run calls at once; [`cpu_count()`](crate::cpu_count) by
    /// default.
    pub fn processes(mut self, processes: usize) -> Host {
        self.processes = Some(processes);
        self
    }

    /// How long the host may be silent before other hosts take its calls (30 s by default).
    /// It renews its calls every third of it. Use the same lease on every host of a queue.
    pub fn lease(mut self, lease: Duration) -> Host {
        self.lease = lease;
        self
    }

    /// The host's name in errors and results; the machine's host name and the agent's pid by
    /// default.
    pub fn name(mut self, name: impl Into<String>) -> Host {
        self.name = Some(name.into());
        self
    }

    /// Starts the local pool and the agent's threads, and returns once it takes work.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a bad queue name or lease, [`ErrorKind::PoolBroken`]
    /// when Redis cannot be reached or the local pool cannot start.
    pub fn start(self) -> Result<HostHandle, Error> {
        if self.lease < Duration::from_millis(30) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("a lease is at least 30ms, got {:?}", self.lease),
            ));
        }
        let method = StartMethod::from_env()
            .map_err(|message| Error::new(ErrorKind::InvalidInput, message))?;
        let keys = Keys::new(&self.queue)?;
        let name = self.name.clone().unwrap_or_else(default_name);
        let processes = self.processes.unwrap_or_else(crate::cpu_count);
        let mut conn = connect(&self.url.0, "cannot connect")?;
        remote::create_group(&mut conn, &keys.tasks)?;
        // The workers' `current_host`; a second host in one program keeps the first's.
        let _ = crate::worker::HOST_NAME.set(name.clone());
        let backend = Backend::start(Config {
            processes,
            wait_for_workers: processes,
            method,
            initializer: None,
            max_tasks_per_child: None,
            task_timeout: None,
            retries: 0,
            backtraces: crate::pool::backtraces_asked_for(),
            memory: crate::memory::Memory::default(),
            watch: WORKER_WATCH,
            cancel_look: Some(CANCEL_LOOK),
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::PoolBroken,
                format!("cannot start the local pool: {e}"),
            )
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel();
        let busy = Arc::new(AtomicUsize::new(0));
        let backend = Arc::new(backend);
        let agent = Arc::new(Mutex::new(Agent::new(
            conn,
            self.url.clone(),
            (keys.clone(), name.clone(), self.lease),
            Arc::clone(&backend),
            Arc::clone(&busy),
            Arc::clone(&stop),
            tx,
        )));
        // One runner a worker: each reads a job and runs it on a worker it borrows, so a
        // call wakes no thread of the host's but the runner's and the worker.
        let mut runners = Vec::with_capacity(processes);
        for _ in 0..processes {
            let runner = Runner {
                conn: connect(&self.url.0, "cannot connect")?,
                url: self.url.clone(),
                keys: keys.clone(),
                name: name.clone(),
                room: 2 * processes,
                busy: Arc::clone(&busy),
                stop: Arc::clone(&stop),
                agent: Arc::clone(&agent),
                backend: Arc::clone(&backend),
            };
            runners.push(spawn("procpool-host-run", move || runner.run())?);
        }
        let thread = spawn("procpool-host", move || Agent::run(&agent, rx))?;
        Ok(HostHandle {
            stop,
            threads: Mutex::new(runners),
            agent: Mutex::new(Some(thread)),
        })
    }

    /// [`start`](Host::start)s the host and serves for as long as the program runs: a
    /// server that is gone or cannot answer is waited for, and tried again at most every
    /// second.
    ///
    /// # Errors
    ///
    /// As for `start`.
    pub fn run(self) -> Result<(), Error> {
        self.start()?.wait()
    }
}

/// A running [`Host`]. Dropping it stops the host.
#[derive(Debug)]
pub struct HostHandle {
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<Result<(), Error>>>>,
    agent: Mutex<Option<JoinHandle<Result<(), Error>>>>,
}

impl HostHandle {
    /// Stops taking work, hands the calls it runs back to the queue (other hosts take them
    /// at once, and the hand-back does not count as a delivery), leaves the queue's group,
    /// ends its local workers and returns.
    ///
    /// # Errors
    ///
    /// A failure of the agent's own (it panicked).
    pub fn stop(self) -> Result<(), Error> {
        self.stop.store(true, Ordering::SeqCst);
        self.wait()
    }

    /// Waits until the host has stopped, after [`stop`](HostHandle::stop). A host does not
    /// stop by itself: it waits out a server that is gone or cannot answer.
    ///
    /// # Errors
    ///
    /// A failure of the agent's own (it panicked).
    pub fn wait(&self) -> Result<(), Error> {
        let agent = self.agent.lock().unwrap_or_else(|e| e.into_inner()).take();
        let outcome = match agent {
            Some(agent) => agent.join().unwrap_or_else(|_| {
                Err(Error::new(ErrorKind::PoolBroken, "the host agent panicked"))
            }),
            None => Ok(()),
        };
        self.stop.store(true, Ordering::SeqCst);
        for thread in self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = thread.join();
        }
        outcome
    }
}

impl Drop for HostHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wait();
    }
}

fn spawn(
    name: &str,
    run: impl FnOnce() -> Result<(), Error> + Send + 'static,
) -> Result<JoinHandle<Result<(), Error>>, Error> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(run)
        .map_err(|e| Error::new(ErrorKind::PoolBroken, format!("cannot start a thread: {e}")))
}

/// How long a host's idle worker watches for its next job before it sleeps: calls over
/// Redis come a few Redis round trips apart, more than a local pool's 200 µs, and a worker
/// woken from sleep costs a call about 100 µs on a VM whose idle CPUs halt (an `apply`
/// round trip over loopback went from 321 to 205 µs, `docs/perf/journal.md` § 13). A watch
/// that does not pay off makes the next waits sleep at once, as locally.
const WORKER_WATCH: Duration = Duration::from_millis(1);

/// How often a runner waiting on a borrowed worker looks whether the agent cancelled its
/// call (the host no longer owns it): the agent learns that at a renewal, every third of a
/// lease, so this adds little to it.
const CANCEL_LOOK: Duration = Duration::from_millis(50);

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}:{}", std::process::id())
}

/// Reads jobs for the host while it has room for them, one at a time, and runs each on a
/// worker it borrows from the local pool (through the local queue when none is idle).
struct Runner {
    conn: redis::Connection,
    url: remote::Url,
    keys: Keys,
    name: String,
    /// How many jobs the host holds at most: its workers', and one more each in the queue.
    room: usize,
    busy: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Jobs are taken (and completed) under the lock the agent's thread shares, which
    /// keeps renewals and reaping, and run outside it.
    agent: Arc<Mutex<Agent>>,
    backend: Arc<Backend>,
}

impl Runner {
    fn run(mut self) -> Result<(), Error> {
        let mut failures = 0;
        while !self.stop.load(Ordering::SeqCst) {
            let free = self.room.saturating_sub(self.busy.load(Ordering::SeqCst));
            if free == 0 {
                std::thread::park_timeout(Duration::from_millis(5));
                continue;
            }
            let read = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.name)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(100)
                .arg("STREAMS")
                .arg(&self.keys.tasks)
                .arg(">")
                .query::<Value>(&mut self.conn);
            match read {
                Ok(reply) => {
                    failures = 0;
                    let entries = remote::entries(Reply::Read(reply));
                    if entries.is_empty() {
                        continue;
                    }
                    self.busy.fetch_add(entries.len(), Ordering::SeqCst);
                    let jobs = {
                        let mut agent = self.agent.lock().unwrap_or_else(|e| e.into_inner());
                        if self.stop.load(Ordering::SeqCst) {
                            // Read as the host stops: back to the queue with the rest.
                            agent.hand_back(entries.into_iter().map(|e| e.id).collect());
                            return Ok(());
                        }
                        agent.take(entries)
                    };
                    for (local, job) in jobs {
                        // A panic here would leave the job held, and renewed, for ever: it
                        // ends the call instead.
                        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            self.backend
                                .run_blocking(VecDeque::from([job]), 1, &mut || false)
                        }))
                        .unwrap_or_else(|_| {
                            Err(Error::new(
                                ErrorKind::PoolBroken,
                                "the host's runner panicked running the call",
                            ))
                        });
                        let mut agent = self.agent.lock().unwrap_or_else(|e| e.into_inner());
                        // A result that cannot be written now stays pending, and is taken
                        // again once its lease has passed.
                        let _ = agent.finish_run(local, ran);
                    }
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The server lost the queue (restarted without persistence): set it up
                    // again and go on.
                    let _ = remote::create_group(&mut self.conn, &self.keys.tasks);
                }
                Err(e) => {
                    // The server is gone or cannot answer now: a host waits for it for as
                    // long as it runs, trying again at most every second.
                    failures += 1;
                    std::thread::sleep(Duration::from_millis(50 * failures.min(20)));
                    // A connection that broke or timed out in the middle of a reply is not
                    // used again.
                    if (e.is_io_error() || e.is_connection_dropped() || e.is_timeout())
                        && let Ok(conn) = connect(&self.url.0, "lost the connection")
                    {
                        self.conn = conn;
                    }
                }
            }
        }
        Ok(())
    }
}
