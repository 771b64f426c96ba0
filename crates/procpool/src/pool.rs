//! The public pool: [`Pool`], its [`Builder`], and the methods of `multiprocessing.Pool`.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};
pub use crate::options::{ApplyOptions, MapOptions};
use crate::options::{checked_chunksize, checked_timeout};

use crate::backend::Backend;
use crate::error::{BuildError, Error, ErrorKind};
use crate::job::Job;
use crate::memory::Memory;
use crate::registry::{self, Task, TaskEntry};
use crate::result::{Assembly, AsyncResult, Batch, Collector, Fed, Feed, Imap, MapResult};
use crate::shared::Fds;
use crate::start::StartMethod;
use crate::stats::Stats;
use crate::supervisor::{Config, DEPTH};
use crate::sys;
use crate::trace::{AsyncSpan, CallSpan};
use crate::wire::{MAX_FDS, MAX_FRAME, Oversized, RunFrame};
use crate::worker;

/// The most worker processes a pool may have.
pub(crate) const MAX_PROCESSES: usize = 1 << 14;

/// Configures and starts a [`Pool`].
///
/// # Examples
///
/// ```no_run
/// #[procpool::task]
/// fn setup(greeting: String) {
///     eprintln!("{greeting} from worker {:?}", procpool::current_worker());
/// }
///
/// let pool = procpool::Pool::builder()
///     .processes(4)
///     .initializer(setup, ("hello".to_string(),))
///     .max_tasks_per_child(100)
///     .build()?;
/// # Ok::<(), procpool::BuildError>(())
/// ```
#[derive(Debug)]
pub struct Builder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    initializer: Option<Result<(&'static str, Vec<u8>), String>>,
    max_tasks_per_child: Option<usize>,
    task_timeout: Option<Duration>,
    retries: u32,
    backtraces: Option<bool>,
    memory_limit: Option<u64>,
    max_memory_per_child: Option<u64>,
    wait_for_workers: Option<usize>,
    /// The Redis server and queue of a pool whose tasks run on host agents.
    #[cfg(feature = "redis")]
    redis: Option<crate::remote::Url>,
    #[cfg(feature = "redis")]
    queue: Option<String>,
    #[cfg(feature = "redis")]
    lease: Option<Duration>,
}

impl Builder {
    /// How many worker processes to run; the default is [`cpu_count()`](crate::cpu_count).
    /// [`build`](Builder::build) refuses zero and more than 16,384.
    pub fn processes(mut self, processes: usize) -> Builder {
        self.processes = Some(processes);
        self
    }

    /// How to start workers; the default is [`StartMethod::from_env`]: the method that the
    /// variable `PROCPOOL_START_METHOD` names, else [`StartMethod::Forkserver`].
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// A registered task that every worker runs once with `args` before its first task,
    /// replacement workers included; its result is discarded.
    ///
    /// If it panics (or its worker dies) in a first worker, `build` fails with the error; if
    /// it fails in a replacement later, the pool stops taking work and says why, instead of
    /// starting workers forever.
    pub fn initializer<F, Args>(mut self, f: F, args: Args) -> Builder
    where
        F: Task<Args>,
        Args: Serialize,
    {
        let _ = f;
        self.initializer = Some(registry::lookup::<F>().map_err(|e| e.to_string()).and_then(
            |entry| {
                codec::encode(&args)
                    .map(|args| (entry.name, args))
                    .map_err(|e| format!("cannot encode the initializer's arguments: {e}"))
            },
        ));
        self
    }

    /// How many workers [`build`](Builder::build) waits to be ready (started, through their
    /// handshake and their initializer) before it returns; the others start while the pool
    /// runs calls, and each takes calls from the moment it is ready. By default, every one:
    /// then [`Pool::worker_pids`] lists them all as soon as `build` returns.
    ///
    /// With fewer, a large pool takes its first calls sooner, as Python's `Pool` does (its
    /// constructor starts processes and does not wait for them). While workers are still
    /// starting, each call waits for a worker of its own rather than queue behind another;
    /// once the pool is [closed](Pool::close), workers not started yet are started only for
    /// the calls still queued. `build` still fails if the initializer fails in one of the
    /// workers it waits for; if it fails in a worker started later, the pool stops taking
    /// work and says why, as for a replacement. `build` refuses zero and more than
    /// [`processes`](Builder::processes).
    ///
    /// ```
    /// # #[procpool::task] fn double(x: u64) -> u64 { 2 * x }
    /// let pool = procpool::Pool::builder().processes(8).wait_for_workers(1).build()?;
    /// assert!(!pool.worker_pids().is_empty());
    /// assert_eq!(pool.apply(double, (21,))?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_for_workers(mut self, n: usize) -> Builder {
        self.wait_for_workers = Some(n);
        self
    }

    /// Replaces each worker after it has run `n` jobs (a chunk of a map counts as one job, as
    /// in Python), to bound what a leaky task can hoard. No task is lost or held up: the
    /// replacement starts as the old worker finishes. Zero is refused by `build`.
    pub fn max_tasks_per_child(mut self, n: usize) -> Builder {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// Replaces each worker whose resident memory, read after a job, is over `bytes`, as
    /// `max_tasks_per_child` does after a number of jobs (Celery's
    /// `worker_max_memory_per_child`): to bound what a leaky or fragmenting task can hoard.
    /// The job itself succeeds; its worker takes no more jobs, exits once it holds none,
    /// and a replacement starts. It counts in [`Stats::memory_recycles`](crate::Stats) and
    /// as an [`Event::WorkerRecycled`](crate::Event::WorkerRecycled), not as a death.
    ///
    /// What is read: the resident set of the worker process (the second field of
    /// `/proc/<pid>/statm`, shared pages such as the program's code included), once each
    /// time a job's results arrive, by the thread that reads them; nothing is read when the
    /// option is not set. A worker holding a second job may have started it by then, and its
    /// memory counts too. Memory freed back to the allocator but kept by it counts; memory
    /// returned to the system does not.
    ///
    /// Zero and more than 2^48 bytes are refused by `build`, as is this option on a pool
    /// over Redis.
    pub fn max_memory_per_child(mut self, bytes: u64) -> Builder {
        self.max_memory_per_child = Some(bytes);
        self
    }

    /// Limits the memory of each worker to `bytes`: a task whose allocation would take its
    /// worker over the limit fails with [`ErrorKind::OutOfMemory`], whose
    /// [`Error::memory_limit`](crate::Error::memory_limit) is `bytes`, instead of taking the
    /// machine's memory; the worker ends and a replacement starts, and the pool goes on.
    /// The call is not run again ([`retries`](Builder::retries) do not apply); in a chunk of
    /// several calls, the others run again one by one, as after a death.
    ///
    /// # How it is enforced
    ///
    /// Each worker sets its own `RLIMIT_DATA` (soft and hard, so that tasks cannot raise
    /// it) when it starts, before the initializer, which the limit covers too. It bounds
    /// the worker's heap and private writable mappings as they are *allocated*, touched or
    /// not (so with `vec![0; n]`, memory the kernel has not yet handed out counts); shared
    /// mappings ([`SharedBytes`](crate::SharedBytes)), the program's code and the main
    /// thread's stack are not counted, the stacks of threads a task starts are. The
    /// standard library
    /// aborts on a failed allocation; the worker catches that abort (`SIGABRT` while
    /// `errno` is `ENOMEM`) and exits with code 86, which the pool reads as the limit.
    ///
    /// # Caveats
    ///
    /// - Only that resource limit exists; a cgroup v2 memory limit (`memory.max`, which
    ///   counts resident pages and the page cache and ends the worker by SIGKILL) is not
    ///   implemented: the machines this was built on did not delegate the memory
    ///   controller.
    /// - An allocation that a task handles itself (`Vec::try_reserve`, a C library that
    ///   checks `malloc`) fails without ending the worker, and is the task's own outcome.
    /// - Another abort (a `panic = "abort"` build, a C library's `abort`) while `errno`
    ///   happens to hold `ENOMEM`, or a task that exits with code 86 itself, is taken for
    ///   the limit too; any other abort is a [`ErrorKind::WorkerDied`] by `SIGABRT`.
    /// - A worker that goes over the limit while starting (its initializer) fails `build`,
    ///   or counts as a worker that died before it was ready.
    ///
    /// Less than 16 MiB (a worker needs a few for itself) and more than 2^48 bytes are
    /// refused by `build`, as is this option on a pool over Redis.
    pub fn memory_limit(mut self, bytes: u64) -> Builder {
        self.memory_limit = Some(bytes);
        self
    }

    /// Kills a task's worker when the task runs longer than `timeout`; the task ends with
    /// [`ErrorKind::TimedOut`], which names the task, the worker and the timeout, and a
    /// replacement worker starts. Other tasks are not affected: one queued behind it on the
    /// same worker goes back to the queue. Per-call options
    /// ([`ApplyOptions::timeout`], [`MapOptions::timeout`]) take precedence. By default
    /// tasks may run for ever. A zero timeout is refused by `build`.
    ///
    /// The clock starts when the worker starts the task, as the parent sees it: when the task
    /// is handed to an idle worker, or when the task ahead of it on that worker completes.
    /// A chunk of several calls of a `map` may run for `timeout` times the number of its
    /// calls; if it runs longer, its calls are run again one by one, each with `timeout`,
    /// so that only a call that alone runs past the timeout ends as timed out (calls with
    /// side effects that must not repeat should use a chunk size of 1).
    ///
    /// The initializer has no timeout. Waiting with
    /// [`AsyncResult::get_timeout`](crate::AsyncResult::get_timeout) is different: it only
    /// stops waiting.
    pub fn task_timeout(mut self, timeout: Duration) -> Builder {
        self.task_timeout = Some(timeout);
        self
    }

    /// Runs a task again, up to `n` times, when its worker dies under it (an abort, a
    /// segfault, a kill from outside, `process::exit`, a protocol error), before giving up
    /// with [`ErrorKind::WorkerDied`] for its last death, whose message says how many times it
    /// was retried. The default is 0: no retries.
    ///
    /// A task that panics, returns an error, or runs past its timeout is not run again: those
    /// are the task's own outcomes. A retried task may have run partly before its worker
    /// died: retries suit tasks that can safely run more than once. In a chunk of several
    /// calls of a `map`, a death first splits the chunk into single calls (which is not
    /// counted as a retry); retries then apply to each call on its own.
    pub fn retries(mut self, n: u32) -> Builder {
        self.retries = n;
        self
    }

    /// Whether a task's panic carries the worker's backtrace
    /// ([`Error::panic_backtrace`](crate::Error::panic_backtrace)). By default, when the
    /// program asks for backtraces as the standard library reads it: `RUST_LIB_BACKTRACE`,
    /// else `RUST_BACKTRACE`, set and not `0`.
    ///
    /// A backtrace is made in the worker when the task panics, and the time it takes counts
    /// against the call's timeout: the first of a worker's can take hundreds of
    /// milliseconds in a debug build, while it reads the program's debug information.
    pub fn backtraces(mut self, capture: bool) -> Builder {
        self.backtraces = Some(capture);
        self
    }

    /// Runs the pool's tasks on [`Host`](crate::Host) agents that serve a queue on the Redis
    /// server at `url` (`redis://[user:password@]host:port/db`, `rediss://` for TLS with the
    /// `redis-tls` feature), on any number of machines, instead of on local workers. The
    /// queue is named by [`queue`](Builder::queue) (`default` otherwise).
    ///
    /// The pool keeps the same methods and promises: every call ends once, a crash on a host
    /// ends its call as [`ErrorKind::WorkerDied`] with the host named, a host that is lost
    /// hands its calls to another after its lease. [`processes`](Builder::processes) is how
    /// many workers `map` plans its chunks for. A [`SharedBytes`](crate::SharedBytes) cannot
    /// cross machines and is refused at submission. The initializer, `max_tasks_per_child`
    /// and the start method belong to the hosts and are refused here. See
    /// `docs/distributed.md` for what is guaranteed.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, url: impl Into<String>) -> Builder {
        self.redis = Some(crate::remote::Url(url.into()));
        self
    }

    /// The queue that a pool over Redis ([`redis`](Builder::redis)) sends its calls to.
    #[cfg(feature = "redis")]
    pub fn queue(mut self, name: impl Into<String>) -> Builder {
        self.queue = Some(name.into());
        self
    }

    /// How long the keys of a pool over Redis outlive it if it dies (30 s by default): its
    /// queued calls are dropped by hosts once the lease has passed. The pool renews them
    /// every third of it.
    #[cfg(feature = "redis")]
    pub fn lease(mut self, lease: Duration) -> Builder {
        self.lease = Some(lease);
        self
    }

    /// Starts the workers (one after another, without waiting for each to be ready) and
    /// returns once every one is ready.
    ///
    /// # Errors
    ///
    /// A setting out of range (zero processes, zero tasks per child, a zero timeout, an
    /// unregistered initializer), a worker that cannot be started, a worker whose handshake fails, or an
    /// initializer that fails.
    pub fn build(self) -> Result<Pool, BuildError> {
        let processes = self.processes.unwrap_or_else(sys::cpu_count);
        if processes == 0 {
            return Err(BuildError::invalid(
                "a pool needs at least 1 process, got 0".into(),
            ));
        }
        if processes > MAX_PROCESSES {
            return Err(BuildError::invalid(format!(
                "a pool has at most {MAX_PROCESSES} processes, got {processes}"
            )));
        }
        let wait_for_workers = self.wait_for_workers.unwrap_or(processes);
        if wait_for_workers == 0 || wait_for_workers > processes {
            return Err(BuildError::invalid(format!(
                "wait_for_workers must be from 1 to the pool's {processes} processes, got {wait_for_workers}"
            )));
        }
        let max_tasks_per_child = match self.max_tasks_per_child {
            Some(0) => {
                return Err(BuildError::invalid(
                    "max_tasks_per_child must be at least 1, got 0".into(),
                ));
            }
            Some(n) => Some(n as u64),
            None => None,
        };
        if self.task_timeout == Some(Duration::ZERO) {
            return Err(BuildError::invalid(
                "task_timeout must be more than zero, got 0s".into(),
            ));
        }
        let initializer = self.initializer.transpose().map_err(BuildError::invalid)?;
        let memory = Memory::checked(self.memory_limit, self.max_memory_per_child)?;
        #[cfg(feature = "redis")]
        if let Some(url) = self.redis {
            if initializer.is_some()
                || max_tasks_per_child.is_some()
                || memory != Memory::default()
                || self.method.is_some()
                || self.wait_for_workers.is_some()
            {
                return Err(BuildError::invalid(
                    "the initializer, max_tasks_per_child, the memory options, the start method and wait_for_workers belong to the hosts of a pool over Redis".into(),
                ));
            }
            let lease = self.lease.unwrap_or(crate::remote::DEFAULT_LEASE);
            if lease < Duration::from_millis(30) {
                return Err(BuildError::invalid(format!(
                    "a lease is at least 30ms, got {lease:?}"
                )));
            }
            let backend = Backend::start_remote(crate::remote::RemoteConfig {
                url: url.0,
                queue: self.queue.unwrap_or_else(|| "default".into()),
                lease,
                retries: self.retries,
                task_timeout: self.task_timeout,
            })?;
            return Ok(Pool {
                backend,
                processes,
                generation: sys::fork_generation(),
            });
        }
        worker::keep_entry();
        let method = match self.method {
            Some(method) => method,
            None => StartMethod::from_env().map_err(BuildError::invalid)?,
        };
        let config = Config {
            processes,
            wait_for_workers,
            method,
            initializer,
            max_tasks_per_child,
            task_timeout: self.task_timeout,
            retries: self.retries,
            backtraces: self.backtraces.unwrap_or_else(backtraces_asked_for),
            memory,
            watch: crate::watch::WINDOW,
            cancel_look: None,
        };
        let generation = sys::fork_generation();
        let backend = Backend::start(config)?;
        Ok(Pool {
            backend,
            processes,
            generation,
        })
    }
}

/// Whether the program asks for backtraces, as the standard library reads it for its own.
pub(crate) fn backtraces_asked_for() -> bool {
    let asked = |name| std::env::var_os(name).map(|value| value != "0");
    asked("RUST_LIB_BACKTRACE")
        .or_else(|| asked("RUST_BACKTRACE"))
        .unwrap_or(false)
}

fn lookup<F: 'static>() -> Result<&'static TaskEntry, Error> {
    registry::lookup::<F>().map_err(|e| Error::new(ErrorKind::Unregistered, e.to_string()))
}

/// The finished RUN frame and its descriptors, or a clear error when the arguments are over
/// the frame's limits.
fn sealed(frame: RunFrame, task: &str) -> Result<(Vec<u8>, Fds), Error> {
    frame.finish().map_err(|oversized| {
        let message = match oversized {
            Oversized::Bytes(len) => format!(
                "the arguments take at least {len} bytes, over the frame limit of {MAX_FRAME} (send the data in a SharedBytes, or use a smaller chunk size)"
            ),
            Oversized::Fds(fds) => format!(
                "the arguments hold {fds} SharedBytes, over the limit of {MAX_FDS} a job (use a smaller chunk size)"
            ),
        };
        Error::new(ErrorKind::Codec, message).task(task)
    })
}

fn encode_error(task: &str, error: CodecError) -> Error {
    Error::new(
        ErrorKind::Codec,
        format!("cannot encode the arguments: {error}"),
    )
    .task(task)
}

/// A pool of worker processes.
///
/// Tasks are functions marked `#[procpool::task]`; the pool sends their registered names and
/// encoded arguments to its workers and their encoded results back. See the [crate
/// docs](crate) for a tour.
///
/// A `Pool` is `Send` and `Sync`: share it between threads by reference or in an `Arc`.
///
/// # Dropping
///
/// Dropping a pool [terminates](Pool::terminate) it: workers are killed and reaped, and every
/// unfinished result ends with [`ErrorKind::Terminated`]. To let queued work finish, call
/// [`close`](Pool::close) and [`join`](Pool::join) first.
#[derive(Debug)]
pub struct Pool {
    backend: Backend,
    processes: usize,
    /// [`sys::fork_generation`] when the pool was built: a pool whose process has forked
    /// since is a copy in the child, and refuses to be used.
    generation: u64,
}

impl Pool {
    /// `Ok` in the process that built the pool; an error in a child it forked since, where
    /// the pool's supervisor and workers are not its own.
    fn check_process(&self) -> Result<(), Error> {
        if sys::fork_generation() == self.generation {
            Ok(())
        } else {
            Err(Error::other_process("pool"))
        }
    }

    fn in_other_process(&self) -> bool {
        self.check_process().is_err()
    }

    /// Starts a pool of [`cpu_count()`](crate::cpu_count) workers.
    ///
    /// # Errors
    ///
    /// As for [`Builder::build`].
    pub fn new() -> Result<Pool, BuildError> {
        Pool::builder().build()
    }

    /// A [`Builder`] with every default.
    pub fn builder() -> Builder {
        Builder {
            processes: None,
            method: None,
            initializer: None,
            max_tasks_per_child: None,
            task_timeout: None,
            retries: 0,
            backtraces: None,
            memory_limit: None,
            max_memory_per_child: None,
            wait_for_workers: None,
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            queue: None,
            #[cfg(feature = "redis")]
            lease: None,
        }
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// Counts of what the pool has done so far: calls submitted, their final states, calls
    /// in flight, worker starts and deaths. See [`Stats`].
    pub fn stats(&self) -> Stats {
        if self.in_other_process() {
            return Stats::default();
        }
        self.backend.stats()
    }

    /// Subscribes to the pool's [`Event`](crate::Event)s from now on: jobs queued, started
    /// and finished, and workers started, ready, recycled and exited, in the order they
    /// happened. A pool with no subscriber makes no events. In a forked child the
    /// subscription gets nothing.
    pub fn subscribe(&self) -> crate::Events {
        if self.in_other_process() {
            return crate::event::Emitter::default().subscribe();
        }
        self.backend.subscribe()
    }

    /// What each worker slot did so far, as mpire's insights show it: calls run, time busy
    /// and idle, start-up time and peak memory, summed over every worker that ran in the
    /// slot (a replaced worker still counts). Its `Display` is a table with totals and
    /// means. See [`Insights`](crate::Insights) and [`WorkerInsight`](crate::WorkerInsight)
    /// for what each figure measures.
    ///
    /// Recording costs a few atomic adds a job, on the thread that already handles it; this
    /// call reads `/proc/<pid>/status` once per worker running now, for its peak memory.
    /// In a forked child, the insights are empty.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[procpool::task]
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = procpool::Pool::builder().processes(2).build()?;
    /// pool.map(square, 1..=1000)?;
    /// let insights = pool.insights();
    /// assert_eq!(insights.calls(), 1000);
    /// println!("{insights}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insights(&self) -> crate::Insights {
        if self.in_other_process() {
            return crate::Insights {
                workers: Vec::new(),
            };
        }
        self.backend.insights()
    }

    /// The process ids of the workers running now, by slot. A slot whose worker is being
    /// replaced is left out.
    pub fn worker_pids(&self) -> Vec<u32> {
        if self.in_other_process() {
            return Vec::new();
        }
        self.backend.worker_pids()
    }

    /// How many idle workers a blocking call could borrow now; see `test_hooks`.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn idle_workers(&self) -> usize {
        self.backend.idle_workers()
    }

    /// Runs `f(args)` in a worker and waits for its result.
    ///
    /// `args` is a tuple of the arguments: `(x,)` for one, `()` for none.
    ///
    /// When a worker is idle and nothing is queued, the calling thread borrows it and talks
    /// to it directly, so that the call costs about one round trip between two processes;
    /// otherwise the call is queued. `map` and `starmap` do the same when every worker is
    /// idle. Either way, failures, timeouts and the pool's settings apply alike. While it
    /// waits for a borrowed worker, the calling thread watches for the reply for up to
    /// 200 µs before it sleeps, if the machine has at least as many CPUs as the workers it
    /// drives (yielding the CPU to anything else that wants it), and so do idle workers for
    /// their next job: calls that follow each other then cost no wake-up. Where watching
    /// does not pay, it backs off (see the crate docs' caveats).
    ///
    /// # Errors
    ///
    /// Those of [`apply_async`](Pool::apply_async) and of [`AsyncResult::get`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[procpool::task]
    /// fn add(a: u64, b: u64) -> u64 {
    ///     a + b
    /// }
    ///
    /// let pool = procpool::Pool::new()?;
    /// assert_eq!(pool.apply(add, (2, 3))?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply<F, Args>(&self, f: F, args: Args) -> Result<F::Output, Error>
    where
        F: Task<Args>,
        Args: Serialize,
    {
        self.apply_with(f, args, ApplyOptions::new())
    }

    /// Submits `f(args)` and returns a handle to its result at once.
    ///
    /// # Errors
    ///
    /// At submission: `f` is not registered ([`ErrorKind::Unregistered`]), the arguments do
    /// not encode ([`ErrorKind::Codec`]), or the pool was closed, terminated
    /// ([`ErrorKind::Closed`]) or broken ([`ErrorKind::PoolBroken`]).
    pub fn apply_async<F, Args>(&self, f: F, args: Args) -> Result<AsyncResult<F::Output>, Error>
    where
        F: Task<Args>,
        Args: Serialize,
    {
        self.apply_async_with(f, args, ApplyOptions::new())
    }

    /// [`apply`](Pool::apply) with options, such as a timeout.
    ///
    /// # Errors
    ///
    /// As for `apply`, and [`ErrorKind::InvalidInput`] for a zero timeout.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use procpool::ApplyOptions;
    ///
    /// #[procpool::task]
    /// fn slow(seconds: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_secs(seconds));
    ///     seconds
    /// }
    ///
    /// let pool = procpool::Pool::new()?;
    /// let options = ApplyOptions::new().timeout(Duration::from_secs(1));
    /// let error = pool.apply_with(slow, (60,), options).unwrap_err();
    /// assert_eq!(error.kind(), procpool::ErrorKind::TimedOut);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_with<F, Args>(
        &self,
        f: F,
        args: Args,
        options: ApplyOptions,
    ) -> Result<F::Output, Error>
    where
        F: Task<Args>,
        Args: Serialize,
    {
        let _ = f;
        let (job, collector, name) = self.apply_job::<F, Args>(args, options)?;
        let span = CallSpan::enter("apply", name);
        // A blocking call runs on an idle worker from this thread when there is one.
        let outcome = self
            .backend
            .run_blocking(VecDeque::from([job]), 1, &mut || false)
            .and_then(|()| AsyncResult::<F::Output>::new(collector, name).get());
        span.record(outcome.as_ref().err());
        outcome
    }

    /// [`apply_async`](Pool::apply_async) with options, such as a timeout.
    ///
    /// # Errors
    ///
    /// As for `apply_async`, and [`ErrorKind::InvalidInput`] for a zero timeout.
    pub fn apply_async_with<F, Args>(
        &self,
        f: F,
        args: Args,
        options: ApplyOptions,
    ) -> Result<AsyncResult<F::Output>, Error>
    where
        F: Task<Args>,
        Args: Serialize,
    {
        let _ = f;
        let (job, collector, name) = self.apply_job::<F, Args>(args, options)?;
        self.backend.submit([job])?;
        self.backend.link(&collector);
        collector.trace(AsyncSpan::open("apply_async", name, Some(1)), Some(1));
        Ok(AsyncResult::new(collector, name))
    }

    /// The job of one call of `F`, and where its result lands.
    fn apply_job<F, Args>(
        &self,
        args: Args,
        options: ApplyOptions,
    ) -> Result<(Job, Arc<Collector>, &'static str), Error>
    where
        F: Task<Args>,
        Args: Serialize,
    {
        self.check_process()?;
        let entry = lookup::<F>()?;
        let timeout = checked_timeout(options.timeout)?;
        let collector = Collector::new();
        let encode = |id| {
            let mut frame = RunFrame::new(id, entry.name);
            frame
                .push(|buf| codec::encode_into(buf, &args))
                .map_err(|e| encode_error(entry.name, e))?;
            sealed(frame, entry.name)
        };
        let job = self
            .backend
            .job(entry.name, encode, &collector, (0, 1, 1), timeout)?;
        Ok((job, collector, entry.name))
    }

    /// Runs `f` on every item in workers and returns the results in input order.
    ///
    /// The input is collected first, then cut into chunks automatically (see
    /// [`MapOptions::chunksize`]). An empty input gives an empty result.
    ///
    /// The map ends at its first failed call, as Python's does: every call of the map not
    /// finished yet is cancelled (queued ones are removed, running ones have their workers
    /// killed and replaced, as [`MapResult::cancel`] does), and the map returns that
    /// failure once they have ended, without waiting for them to run. A task's own `Err`
    /// is a result, not a failure. To get every call's outcome, failures included, use
    /// [`imap`](Pool::imap) or [`apply_async`](Pool::apply_async).
    ///
    /// # Errors
    ///
    /// Those of [`map_async`](Pool::map_async), and the failure of a call: of the first in
    /// input order among those that had failed when the map ended. With one failing call,
    /// that one; with several, which of them had failed before the first failure cancelled
    /// the others depends on timing, so the error may be that of a later call than the
    /// first that would fail. The calls cancelled because of it are counted in
    /// [`Stats::cancelled`](crate::Stats::cancelled). (A result that does not decode is
    /// found only when the results are put in order, after every call ended.)
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[procpool::task]
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = procpool::Pool::new()?;
    /// assert_eq!(pool.map(square, 1..=4)?, [1, 4, 9, 16]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map<F, A, I>(&self, f: F, items: I) -> Result<Vec<F::Output>, Error>
    where
        F: Task<(A,)>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        self.map_with(f, items, MapOptions::new())
    }

    /// [`map`](Pool::map) with options, such as a chunk size.
    ///
    /// # Errors
    ///
    /// As for `map`, and [`ErrorKind::InvalidInput`] for a chunk size of 0 or a zero
    /// timeout.
    pub fn map_with<F, A, I>(
        &self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<Vec<F::Output>, Error>
    where
        F: Task<(A,)>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        let jobs = self.map_jobs::<F, (A,), A>(items, options, |item, buf| {
            codec::encode_into(buf, &(item,))
        })?;
        self.map_blocking(jobs)
    }

    /// Submits `f` on every item and returns a handle to the results at once.
    ///
    /// The map ends at its first failed call, cancelling the others, as
    /// [`map`](Pool::map) does: [`MapResult::get`] then returns that failure.
    ///
    /// # Errors
    ///
    /// At submission, as for [`apply_async`](Pool::apply_async); an item whose arguments do
    /// not encode fails the whole call before anything is submitted.
    pub fn map_async<F, A, I>(&self, f: F, items: I) -> Result<MapResult<F::Output>, Error>
    where
        F: Task<(A,)>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        self.map_async_with(f, items, MapOptions::new())
    }

    /// [`map_async`](Pool::map_async) with options.
    ///
    /// # Errors
    ///
    /// As for `map_async`, and [`ErrorKind::InvalidInput`] for a chunk size of 0 or a zero
    /// timeout.
    pub fn map_async_with<F, A, I>(
        &self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<MapResult<F::Output>, Error>
    where
        F: Task<(A,)>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        self.submit_all::<F, (A,), A>("map_async", items, options, |item, buf| {
            codec::encode_into(buf, &(item,))
        })
    }

    /// Runs `f` on every tuple of arguments in workers: `f(a, b)` for each `(a, b)`. Like
    /// [`map`](Pool::map), it ends at its first failed call and cancels the others.
    ///
    /// # Errors
    ///
    /// As for [`map`](Pool::map).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[procpool::task]
    /// fn add(a: u64, b: u64) -> u64 {
    ///     a + b
    /// }
    ///
    /// let pool = procpool::Pool::new()?;
    /// assert_eq!(pool.starmap(add, [(1, 2), (3, 4)])?, [3, 7]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn starmap<F, Args, I>(&self, f: F, items: I) -> Result<Vec<F::Output>, Error>
    where
        F: Task<Args>,
        Args: Serialize,
        I: IntoIterator<Item = Args>,
    {
        self.starmap_with(f, items, MapOptions::new())
    }

    /// [`starmap`](Pool::starmap) with options.
    ///
    /// # Errors
    ///
    /// As for `starmap`, and [`ErrorKind::InvalidInput`] for a chunk size of 0 or a zero
    /// timeout.
    pub fn starmap_with<F, Args, I>(
        &self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<Vec<F::Output>, Error>
    where
        F: Task<Args>,
        Args: Serialize,
        I: IntoIterator<Item = Args>,
    {
        let _ = f;
        let jobs = self
            .map_jobs::<F, Args, Args>(items, options, |args, buf| codec::encode_into(buf, args))?;
        self.map_blocking(jobs)
    }

    /// Submits [`starmap`](Pool::starmap)'s calls and returns a handle to the results at once.
    ///
    /// # Errors
    ///
    /// As for [`map_async`](Pool::map_async).
    pub fn starmap_async<F, Args, I>(&self, f: F, items: I) -> Result<MapResult<F::Output>, Error>
    where
        F: Task<Args>,
        Args: Serialize,
        I: IntoIterator<Item = Args>,
    {
        self.starmap_async_with(f, items, MapOptions::new())
    }

    /// [`starmap_async`](Pool::starmap_async) with options.
    ///
    /// # Errors
    ///
    /// As for `starmap_async`, and [`ErrorKind::InvalidInput`] for a chunk size of 0 or a zero
    /// timeout.
    pub fn starmap_async_with<F, Args, I>(
        &self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<MapResult<F::Output>, Error>
    where
        F: Task<Args>,
        Args: Serialize,
        I: IntoIterator<Item = Args>,
    {
        let _ = f;
        self.submit_all::<F, Args, Args>("starmap_async", items, options, |args, buf| {
            codec::encode_into(buf, args)
        })
    }

    /// A lazy iterator of `f`'s results on every item, in input order.
    ///
    /// The input is pulled only as results are consumed, with a bounded number of calls in
    /// flight (twice the workers, in chunks), so an endless input works in bounded memory.
    /// Calls are sent one at a time unless [`imap_with`](Pool::imap_with) sets a chunk size.
    ///
    /// # Errors
    ///
    /// At submission, `f` is not registered or the pool does not take work. Each item is the
    /// result of one call; an item whose arguments do not encode yields its own error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[procpool::task]
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = procpool::Pool::new()?;
    /// let firsts: Vec<u64> = pool.imap(square, 1..)?.take(3).collect::<Result<_, _>>()?;
    /// assert_eq!(firsts, [1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap<'a, F, A, I>(&self, f: F, items: I) -> Result<Imap<'a, F::Output>, Error>
    where
        F: Task<(A,)>,
        A: Serialize + 'a,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.imap_with(f, items, MapOptions::new())
    }

    /// [`imap`](Pool::imap) with options.
    ///
    /// # Errors
    ///
    /// As for `imap`, and [`ErrorKind::InvalidInput`] for a chunk size of 0 or a zero
    /// timeout.
    pub fn imap_with<'a, F, A, I>(
        &self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<Imap<'a, F::Output>, Error>
    where
        F: Task<(A,)>,
        A: Serialize + 'a,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        let _ = f;
        self.stream::<F, (A,), _>(items.into_iter(), options, true, |item, buf| {
            codec::encode_into(buf, &(item,))
        })
    }

    /// Like [`imap`](Pool::imap), but yields each result as soon as it arrives, in any order.
    ///
    /// # Errors
    ///
    /// As for `imap`.
    pub fn imap_unordered<'a, F, A, I>(&self, f: F, items: I) -> Result<Imap<'a, F::Output>, Error>
    where
        F: Task<(A,)>,
        A: Serialize + 'a,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.imap_unordered_with(f, items, MapOptions::new())
    }

    /// [`imap_unordered`](Pool::imap_unordered) with options.
    ///
    /// # Errors
    ///
    /// As for `imap_unordered`, and [`ErrorKind::InvalidInput`] for a chunk size of 0 or a zero
    /// timeout.
    pub fn imap_unordered_with<'a, F, A, I>(
        &self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<Imap<'a, F::Output>, Error>
    where
        F: Task<(A,)>,
        A: Serialize + 'a,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        let _ = f;
        self.stream::<F, (A,), _>(items.into_iter(), options, false, |item, buf| {
            codec::encode_into(buf, &(item,))
        })
    }

    fn submit_all<F, Args, T>(
        &self,
        method: &'static str,
        items: impl IntoIterator<Item = T>,
        options: MapOptions,
        encode: impl Fn(&T, &mut Vec<u8>) -> Result<(), CodecError>,
    ) -> Result<MapResult<F::Output>, Error>
    where
        F: Task<Args>,
    {
        let jobs = self.map_jobs::<F, Args, T>(items, options, encode)?;
        // Linked before its jobs can run: a failure of one then finds the pool to cancel
        // the others.
        self.backend.link(&jobs.collector);
        let span = AsyncSpan::open(method, jobs.task, Some(jobs.len));
        jobs.collector.trace(span, Some(jobs.len));
        self.backend.submit(jobs.jobs)?;
        Ok(MapResult::new(jobs.collector, jobs.len, jobs.task))
    }

    /// Runs a map's jobs and returns its results: from this thread on borrowed workers when
    /// they are all idle (taking in the results that are in while the workers run), else
    /// through the supervisor. Results are decoded as they come in, but for results of one
    /// size, which [`Assembly::keep`] decodes at the end.
    fn map_blocking<R: DeserializeOwned>(&self, jobs: MapJobs) -> Result<Vec<R>, Error> {
        let MapJobs {
            jobs,
            collector,
            len,
            task,
        } = jobs;
        let span = CallSpan::enter("map", task);
        // Linked, so that the map's first failure reaches the pool to cancel the rest.
        self.backend.link(&collector);
        let jobs = VecDeque::from(jobs);
        let mut assembly = Assembly::new(len, task);
        // Takes in one batch of results that is in, if there is one.
        let mut decode_one = || match collector.take_batch() {
            Some(batch) => {
                assembly.keep(batch);
                true
            }
            None => false,
        };
        if let Err(error) = self
            .backend
            .run_blocking(jobs, self.processes, &mut decode_one)
        {
            span.record(Some(&error));
            return Err(error);
        }
        collector.wait_filled(len, None);
        while decode_one() {}
        let outcome = assembly.finish();
        span.record(outcome.as_ref().err());
        outcome
    }

    /// The jobs of a map over `items`, all encoded: an item that does not encode fails the
    /// map before anything runs.
    fn map_jobs<F, Args, T>(
        &self,
        items: impl IntoIterator<Item = T>,
        options: MapOptions,
        encode: impl Fn(&T, &mut Vec<u8>) -> Result<(), CodecError>,
    ) -> Result<MapJobs, Error>
    where
        F: Task<Args>,
    {
        self.check_process()?;
        let entry = lookup::<F>()?;
        let chunksize = checked_chunksize(options)?;
        let timeout = checked_timeout(options.timeout)?;
        let items: Vec<T> = items.into_iter().collect();
        let len = items.len();
        let chunks: Vec<(usize, usize, usize)> = match chunksize {
            Some(size) => (0..len)
                .step_by(size)
                .map(|start| (start, 1, size.min(len - start)))
                .collect(),
            None => auto_chunks(len, self.processes),
        };
        let collector = Collector::for_map();
        let mut jobs = Vec::with_capacity(chunks.len());
        for (start, stride, count) in chunks {
            let encode_chunk = |id| {
                let mut frame = RunFrame::new(id, entry.name);
                let mut chunk = items[start..].iter().step_by(stride).take(count);
                if let Some(first) = chunk.next() {
                    frame
                        .push(|buf| encode(first, buf))
                        .map_err(|e| encode_error(entry.name, e))?;
                    // Items mostly encode to about the size of the first: room for them all
                    // at once saves the copies of a growing buffer.
                    frame.reserve_like_last(count - 1);
                }
                frame
                    .extend(chunk, |item, buf| encode(item, buf))
                    .map_err(|e| encode_error(entry.name, e))?;
                sealed(frame, entry.name)
            };
            let calls = (start, stride, count);
            jobs.push(
                self.backend
                    .job(entry.name, encode_chunk, &collector, calls, timeout)?,
            );
        }
        Ok(MapJobs {
            jobs,
            collector,
            len,
            task: entry.name,
        })
    }

    fn stream<'a, F, Args, I>(
        &self,
        items: I,
        options: MapOptions,
        ordered: bool,
        encode: impl Fn(&I::Item, &mut Vec<u8>) -> Result<(), CodecError> + 'a,
    ) -> Result<Imap<'a, F::Output>, Error>
    where
        F: Task<Args>,
        I: Iterator + 'a,
    {
        self.check_process()?;
        let entry = lookup::<F>()?;
        let chunksize = checked_chunksize(options)?.unwrap_or(1);
        let timeout = checked_timeout(options.timeout)?;
        self.backend.check_open()?;
        let window = chunksize.saturating_mul(2 * self.processes.max(1));
        let feed = Stream {
            backend: self.backend.clone(),
            entry,
            items,
            chunksize,
            timeout,
            encode,
        };
        let method = if ordered { "imap" } else { "imap_unordered" };
        let span = AsyncSpan::open(method, entry.name, None);
        let imap = Imap::new(Box::new(feed), ordered, window, entry.name, span);
        self.backend.link(imap.collector());
        Ok(imap)
    }

    /// Stops the pool from taking new work; queued work still runs. Then
    /// [`join`](Pool::join) waits for it.
    ///
    /// As in Python's pool, a worker with nothing left to run exits at once, while the
    /// others finish their calls; and of the workers a pool had not started yet (see
    /// [`Builder::wait_for_workers`]), only those the queued calls need are started.
    ///
    /// An [`Imap`] that is still pulling its input can submit no more after `close`: its
    /// next call not yet submitted ends with [`ErrorKind::Closed`], and the iterator ends.
    pub fn close(&self) {
        if self.in_other_process() {
            return;
        }
        self.backend.close();
    }

    /// Waits until every worker has exited and been reaped, after [`close`](Pool::close) (once
    /// queued work is done) or [`terminate`](Pool::terminate). A worker that has not exited 5
    /// seconds after it was told to (stopped, or stuck flushing its output) is killed, so that
    /// `join` never waits forever on one.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::StillRunning`] if the pool was neither closed nor terminated: it would
    /// wait forever.
    pub fn join(&self) -> Result<(), Error> {
        self.check_process()?;
        self.backend.join()
    }

    /// [`join`](Pool::join), giving up after `timeout`: `Ok(true)` once every worker has
    /// exited and been reaped, `Ok(false)` if the timeout passed first (the pool goes on
    /// winding down; call again to wait more).
    ///
    /// # Errors
    ///
    /// As for `join`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.check_process()?;
        self.backend.join_timeout(timeout)
    }

    /// Stops the workers now and ends every unfinished result with
    /// [`ErrorKind::Terminated`]. Workers are asked to stop (SIGTERM) and given 200 ms to
    /// exit; those still running then are killed (SIGKILL). Returns once every worker is
    /// reaped. Dropping the pool does the same.
    ///
    /// A blocking call in another thread that runs on borrowed workers (see
    /// [`apply`](Pool::apply)) sees them end and gives them back between two of its steps;
    /// one of its steps is decoding one result, so a slow `Deserialize` delays this return.
    pub fn terminate(&self) {
        if self.in_other_process() {
            return;
        }
        self.backend.terminate();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The chunks `map` cuts `len` items into when no chunk size is given, in the order they
/// go out: each its first index, stride and count.
///
/// How many:
/// - At least two per worker, [`DEPTH`] of them: each worker gets both in its first write
///   (but for a worker whose last job was long, near the end of the jobs: see
///   `Worker::depth` in the supervisor), so a short map costs one round
///   trip per worker.
/// - Up to eight per worker when there are enough items: the chunks beyond the first two per
///   worker go to whichever worker is free, so a worker that the machine slows down (a busy
///   CPU, a noisy neighbour) hands work to the others; and each result frame is taken in
///   while the workers run the rest.
/// - No more chunks than `len / MIN_CHUNK`, beyond the two per worker: on average a chunk of
///   fewer items costs the pool more per item in round trips than it gains.
/// - As many for each worker, but for an input of fewer items than two per worker (then one
///   item each). Never an empty chunk.
///
/// Which items: the chunks go out in rounds, one chunk for each worker a round. From four
/// rounds on (1,024 items per worker), all rounds but the last three take the same number of
/// items, and the last three take half as many, then a quarter as many, twice; of three
/// rounds, the last two take half as many as the first; two rounds take the same. So a
/// worker that runs slower than the others (its CPU shared with another process, or slower
/// on the host) ends on a small chunk, not a large one, while the others finish theirs; and
/// the first, larger chunks cost few round trips.
/// (This is the "factoring" of loop scheduling, for its last rounds only: halving from the
/// first round would make the first chunks of a large map a quarter of it each, and putting
/// their results in order slower.) Every chunk interleaves, so it samples the whole input
/// and weighs in proportion to its count even when the work grows along the input.
/// `docs/perf/journal.md` has the measurements.
///
/// Precisely, with `w` workers and `r` rounds, of which `t` halve (2, or fewer when `r` is
/// less than 4) and `q = r - t` do not: worker `j`'s chunk of round `k < q` (from 1) takes
/// every `q * w`-th item from `j + (k - 1) * w`. What is left, every `q * w`-th item from
/// `c = j + (q - 1) * w`, is halved `t` times: the chunk of round `q + i` (`i < t`) starts at
/// `c + (2^i - 1) * q * w` with a stride of `2^(i+1) * q * w`, and the last round's chunk
/// starts at `c + (2^t - 1) * q * w` with a stride of `2^t * q * w`. So all strides divide
/// the last one, and the chunks split the residues modulo it between them.
pub(crate) fn auto_chunks(len: usize, workers: usize) -> Vec<(usize, usize, usize)> {
    /// Items below which, on average, one more chunk is not worth its round trip.
    const MIN_CHUNK: usize = 256;
    /// Rounds at the end whose chunks halve.
    const HALVINGS: usize = 2;
    let w = workers.max(1);
    let rounds = (len / MIN_CHUNK / w).clamp(DEPTH, 8);
    if rounds * w > len {
        return (0..len).map(|j| (j, len, 1)).collect();
    }
    let halvings = HALVINGS.min(rounds - DEPTH);
    let q = rounds - halvings;
    let mut chunks = Vec::with_capacity(rounds * w);
    let mut push = |start: usize, stride: usize| {
        chunks.push((start, stride, (len - start).div_ceil(stride)));
    };
    for k in 1..q {
        for j in 0..w {
            push(j + (k - 1) * w, q * w);
        }
    }
    for i in 0..=halvings {
        let (first, stride) = ((1 << i) - 1, 1 << (i + 1).min(halvings));
        for j in 0..w {
            push(j + (q - 1) * w + first * q * w, stride * q * w);
        }
    }
    chunks
}

/// The jobs of one map, and where their results land.
struct MapJobs {
    jobs: Vec<Job>,
    collector: Arc<Collector>,
    len: usize,
    task: &'static str,
}

/// Feeds an [`Imap`] from an iterator, one chunk a call.
struct Stream<I, E> {
    backend: Backend,
    entry: &'static TaskEntry,
    items: I,
    chunksize: usize,
    timeout: Option<Duration>,
    encode: E,
}

impl<I, E> Feed for Stream<I, E>
where
    I: Iterator,
    E: Fn(&I::Item, &mut Vec<u8>) -> Result<(), CodecError>,
{
    fn feed(&mut self, start: usize, collector: &Arc<Collector>) -> Fed {
        let name = self.entry.name;
        let mut frame = RunFrame::new(0, name);
        let mut failed = None;
        let mut exhausted = false;
        while frame.len() < self.chunksize && !frame.over_limit() {
            // A panic in the caller's iterator becomes the failure of the call it would have
            // made, after the calls before it: they run, and their results come first. The
            // iterator is not asked again.
            let next = catch_unwind(AssertUnwindSafe(|| self.items.next()));
            let item = match next {
                Ok(Some(item)) => item,
                Ok(None) => {
                    exhausted = true;
                    break;
                }
                Err(payload) => {
                    let index = start + frame.len();
                    failed = Some(Error::input_panicked(name, index, payload.as_ref()));
                    exhausted = true;
                    break;
                }
            };
            if let Err(e) = frame.push(|buf| (self.encode)(&item, buf)) {
                failed = Some(encode_error(name, e));
                break;
            }
        }
        let count = frame.len();
        if count > 0 {
            let calls = (start, 1, count);
            let seal = |id| {
                frame.set_job(id);
                sealed(frame, name)
            };
            let job = match self.backend.job(name, seal, collector, calls, self.timeout) {
                Ok(job) => job,
                Err(error) => {
                    let error = error.ending_the_iterator();
                    collector.deliver(Batch::failed(calls, error));
                    return Fed::Exhausted(count + deliver_last(collector, start + count, failed));
                }
            };
            if let Err(error) = self.backend.submit([job]) {
                let error = error.ending_the_iterator();
                collector.deliver(Batch::failed((start, 1, count), error));
                return Fed::Exhausted(count + deliver_last(collector, start + count, failed));
            }
        }
        let taken = count + deliver_last(collector, start + count, failed);
        if exhausted {
            Fed::Exhausted(taken)
        } else {
            Fed::Took(taken)
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.items.size_hint()
    }
}

/// Delivers `failed`, the failure of the call at `index` (an item that did not encode, or a
/// panic in the input), if there is one; returns how many calls that took from the input.
fn deliver_last(collector: &Collector, index: usize, failed: Option<Error>) -> usize {
    match failed {
        Some(error) => {
            collector.deliver(Batch::failed((index, 1, 1), error));
            1
        }
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::auto_chunks;

    #[test]
    fn auto_chunks_are_two_to_eight_per_worker_and_never_empty() {
        let count = |len, workers| auto_chunks(len, workers).len();
        assert_eq!(count(0, 2), 0);
        assert_eq!(count(1, 2), 1);
        assert_eq!(count(3, 2), 3);
        assert_eq!(count(100, 2), 4);
        assert_eq!(count(1000, 2), 4);
        assert_eq!(count(3000, 2), 10);
        assert_eq!(count(3000, 3), 9);
        assert_eq!(count(100_000, 2), 16);
        assert_eq!(count(100_000, 16), 128);
        assert_eq!(count(100, 0), 2);
        for workers in 1..=17 {
            for len in (0..40_000).step_by(97) {
                let chunks = count(len, workers);
                assert!(chunks <= len && (len == 0 || chunks > 0), "{len} {workers}");
                if chunks < len {
                    // As many for each worker, two to eight.
                    assert_eq!(chunks % workers, 0, "{len} {workers}");
                    assert!((2..=8).contains(&(chunks / workers)), "{len} {workers}");
                }
            }
        }
    }

    #[test]
    fn auto_chunks_take_every_item_once_and_end_in_halving_rounds() {
        assert_eq!(
            auto_chunks(3000, 2),
            [
                (0, 6, 500),
                (1, 6, 500),
                (2, 6, 500),
                (3, 6, 500),
                (4, 12, 250),
                (5, 12, 250),
                (10, 24, 125),
                (11, 24, 125),
                (22, 24, 125),
                (23, 24, 125),
            ]
        );
        // Eight rounds: five of one size, then a half and two quarters of it.
        let eight = auto_chunks(100_000, 2);
        let strides: Vec<usize> = eight.iter().map(|chunk| chunk.1).collect();
        assert_eq!(
            strides,
            [
                12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 24, 24, 48, 48, 48, 48
            ]
        );
        // Three rounds: the last two halve the column the first leaves.
        assert_eq!(auto_chunks(800, 1), [(0, 2, 400), (1, 4, 200), (3, 4, 200)]);
        assert_eq!(
            auto_chunks(5, 2),
            [(0, 4, 2), (1, 4, 1), (2, 4, 1), (3, 4, 1)]
        );
        assert_eq!(auto_chunks(3, 2), [(0, 3, 1), (1, 3, 1), (2, 3, 1)]);
        for workers in 1..=17 {
            for len in (0..40_000).step_by(97) {
                let chunks = auto_chunks(len, workers);
                let mut taken = vec![0u8; len];
                for &(start, stride, count) in &chunks {
                    assert!(count > 0, "{len} {workers}: {chunks:?}");
                    for i in (start..len).step_by(stride) {
                        taken[i] += 1;
                    }
                    assert_eq!((len - start).div_ceil(stride), count, "{len} {workers}");
                }
                assert!(taken.iter().all(|&n| n == 1), "{len} {workers}: {chunks:?}");
                // No chunk more than twice the size of one that goes out after it, nor
                // smaller than one that goes after it, beyond one item.
                for pair in chunks.windows(2) {
                    let (before, after) = (pair[0].2, pair[1].2);
                    assert!(before + 1 >= after && before <= 2 * after + 1, "{chunks:?}");
                }
            }
        }
    }
}
