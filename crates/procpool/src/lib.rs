//! A pool of worker **processes** with the vocabulary of Python's `multiprocessing.Pool`.
//!
//! Rust threads already run in parallel; processes add **isolation**. A task may panic,
//! abort, segfault or call a library that is not thread-safe, and the caller still gets a
//! typed [`Error`] while the pool and every other task carry on. Every submitted task ends in
//! exactly one final state, no call hangs, and no worker is left behind.
//!
//! # A first pool
//!
//! ```no_run
//! use procpool::Pool;
//!
//! #[procpool::task]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let pool = Pool::new()?; // cpu_count() workers
//!     assert_eq!(pool.apply(square, (7,))?, 49);
//!     assert_eq!(pool.map(square, 1..=4)?, [1, 4, 9, 16]);
//!     let pending = pool.apply_async(square, (9,))?;
//!     assert_eq!(pending.get()?, 81);
//!     pool.close();
//!     pool.join()?;
//!     Ok(())
//! }
//! ```
//!
//! The methods are those of `multiprocessing.Pool`: [`apply`](Pool::apply),
//! [`apply_async`](Pool::apply_async) (an [`AsyncResult`]), [`map`](Pool::map),
//! [`map_async`](Pool::map_async) (a [`MapResult`]), [`imap`](Pool::imap),
//! [`imap_unordered`](Pool::imap_unordered), [`starmap`](Pool::starmap),
//! [`starmap_async`](Pool::starmap_async), [`close`](Pool::close), [`join`](Pool::join) and
//! [`terminate`](Pool::terminate); the `*_with` variants take [`MapOptions`] (a chunk size,
//! a timeout) or [`ApplyOptions`] (a timeout). [`Pool::builder`] sets the number of
//! processes, an initializer, `max_tasks_per_child`, a task timeout and retries, and each
//! worker's memory: a limit past which a task fails with [`ErrorKind::OutOfMemory`]
//! ([`Builder::memory_limit`]) and a resident size past which a worker is recycled
//! ([`Builder::max_memory_per_child`]).
//!
//! # Registering tasks
//!
//! A task is a plain `fn` marked [`#[procpool::task]`](macro@task), with zero to six
//! arguments of serde types and a serde result. It stays callable as a normal function. The
//! attribute registers it under its path (`my_crate::module::square`) in a table built at
//! link time; that name, not a code address, is what a worker receives. Arguments go as a
//! tuple: `pool.apply(add, (1, 2))`, `pool.starmap(add, [(1, 2), (3, 4)])`. A function that
//! is not registered, a closure for instance, is refused when submitted with an
//! [`ErrorKind::Unregistered`] error that names it. So is a task whose registered name
//! another task has too (two nested functions of one name in one module): a worker could not
//! tell them apart. A task that returns `Result<T, E>` gives the caller that `Result` inside
//! procpool's own.
//!
//! Arguments and results travel encoded with `bincode`.
//!
//! # Async, cancel
//!
//! [`AsyncResult`] and [`MapResult`] can be awaited ([`std::future::IntoFuture`]),
//! and [`Imap`] is a [`futures_core::Stream`]: a delivery wakes the task that awaits it, under
//! any executor; procpool has no async runtime of its own. `examples/async.rs` awaits a crawl
//! with `tokio::join!` and `tokio::select!`.
//!
//! [`AsyncResult::cancel`], [`MapResult::cancel`] and [`Imap::cancel`] end the calls whose
//! results are not in yet with [`ErrorKind::Cancelled`]: a queued call is removed, a running
//! one has its worker killed and replaced. Dropping an awaited future before it is ready
//! cancels its calls ([`Awaited`]); dropping a handle itself does not.
//!
//! # Bulk bytes
//!
//! Arguments and results are copied through the worker's socket, which costs about as much
//! as the bytes: tens of milliseconds for 64 MiB. A [`SharedBytes`] (an immutable byte
//! buffer in sealed shared memory) travels as a file descriptor instead: the worker maps
//! the same memory, so a task gets 64 MiB, or hands them back, in tens of microseconds. It
//! can be an argument, a result or part of either (a field, an element of a `Vec`), in
//! every method of the pool.
//!
//! # Start methods
//!
//! Two [`StartMethod`]s, both starting from the program's own binary, never from a copy of
//! the running pool's process:
//!
//! - [`StartMethod::Forkserver`], the default: the pool first starts one server process by
//!   spawn (below), a process with one thread that has run nothing but the program's
//!   start-up, and has it fork each worker. A fork of that small process takes a fraction of
//!   an exec, so a pool of 100, a replacement after a death and `max_tasks_per_child(1)` are
//!   cheap. The server hands over a pidfd of each worker (so Linux 5.3 or later; without
//!   pidfds the pool spawns instead), reaps the workers when the pool asks how they ended,
//!   and is replaced if it dies; it names itself `pp-forkserver` in `ps`.
//! - [`StartMethod::Spawn`]: the pool re-executes the current binary (`/proc/self/exe`) for
//!   each worker, with the worker's socket inherited and a marker in its environment.
//!   Every worker is then a fresh exec, with an address-space layout of its own.
//!
//! Either way the worker (or the server) is entered before `main`, by a hook in the
//! binary's initialisation section, so none of the program's own code runs in a worker,
//! except its tasks and other before-`main` hooks. Pools therefore work from `main`, from
//! `examples/` and from `cargo test` and `cargo nextest` test binaries, with no set-up.
//! Workers' start-ups and handshakes overlap; each worker (and the server) is killed when
//! the pool's supervisor thread ends, and ends by itself when its parent dies
//! (`PR_SET_PDEATHSIG` and end of stream). `PROCPOOL_START_METHOD=spawn` (or `forkserver`)
//! sets the default for a program that does not choose ([`StartMethod::from_env`]).
//!
//! # Failures, panics and restarts
//!
//! - A task that panics gives [`ErrorKind::Panicked`] with the panic's message and location
//!   ([`Error::panic_message`], [`Error::panic_location`]); the worker carries on.
//! - A worker that dies while running a task (abort, segfault, a stack overflow, a kill from
//!   outside, `process::exit`) gives that task [`ErrorKind::WorkerDied`] with the worker's
//!   index, pid and exit code or signal ([`Error::worker_exit`]), and a replacement starts.
//!   Every other task completes. If the dying worker held a chunk of several calls of a
//!   `map`, the calls of that chunk without a result are run again one by one, so that only
//!   the call that kills a worker again fails: a task with side effects that must not repeat
//!   should use a chunk size of 1. With [`Builder::retries`], a call whose worker died is
//!   run again, a bounded number of times, before it fails.
//! - A task that runs past its timeout ([`Builder::task_timeout`], or per call with
//!   [`ApplyOptions::timeout`] and [`MapOptions::timeout`]) has its worker killed; it ends
//!   with [`ErrorKind::TimedOut`], naming the task, the worker and the timeout, and a
//!   replacement starts. Other tasks are not affected.
//! - A result that does not encode, or arguments that do not decode, fail that task alone
//!   with [`ErrorKind::Codec`].
//! - An initializer that fails makes [`Builder::build`] fail; in a replacement worker later,
//!   it breaks the pool ([`ErrorKind::PoolBroken`]) instead of restarting forever. So do
//!   three replacement workers in a row that die before they are ready.
//!
//! [`Pool::stats`] counts calls submitted, their final states, calls in flight, and worker
//! starts and deaths. The file `docs/failures.md` of the repository lists each failure and
//! what the caller sees.
//!
//! # Shutdown and drop
//!
//! [`close`](Pool::close) stops new work; queued work finishes; [`join`](Pool::join) then
//! waits for every worker to exit and be reaped. [`terminate`](Pool::terminate) stops the
//! workers now: it asks them to stop (SIGTERM), gives them 200 ms to exit, then kills those
//! left (SIGKILL); every unfinished result ends with [`ErrorKind::Terminated`]. Dropping a
//! pool terminates it.
//!
//! ## Signals, forks and the socket
//!
//! - Workers run in a process group of their own, so the signals a terminal sends to the
//!   foreground job (Ctrl-C's SIGINT, Ctrl-\\'s SIGQUIT, Ctrl-Z's SIGTSTP) reach the program
//!   and not its running tasks. The program decides: if it exits, its workers are killed
//!   with it (they die with their parent); if it handles the signal, its tasks go on.
//!   Workers ignore SIGTTOU and SIGTTIN, which would otherwise stop a task that uses the
//!   terminal from the background: its writes go through, its reads fail (EIO).
//! - A pool belongs to the process that built it. In a child made by `fork` afterwards,
//!   every method of the pool and of its result handles returns
//!   [`ErrorKind::OtherProcess`] at once and touches nothing of the parent's; dropping the
//!   copy kills nothing. Build a new pool in the child.
//! - Bytes that a task writes on its worker's socket (a descriptor it does not own) are
//!   refused as soon as eight have come: the worker is killed, and its call ends with
//!   [`ErrorKind::WorkerDied`] saying the worker broke the protocol.
//!
//! ## Caveats
//!
//! - Dropping a pool does not wait for queued work: close and join first to keep it.
//! - [`AsyncResult::get_timeout`] and the other waits with a timeout only stop waiting; the
//!   task goes on in its worker. To stop a task that runs too long, give it a timeout.
//!   Dropping a result handle does not cancel its task either.
//! - A worker runs before `main`: the standard library's own set-up has not run, so a stack
//!   overflow in a task ends the worker with `SIGSEGV` instead of a message.
//! - Other before-`main` hooks of the program (from crates such as `ctor`) run in every
//!   worker too.
//! - A frame holds at most 1 GiB: arguments over it are refused at submission, and a result
//!   over it fails its task ([`ErrorKind::Codec`]). Send bulk data as [`SharedBytes`]; a job
//!   (one call, or a chunk of a map) carries at most 65,536 of them each way.
//! - A worker's death is noticed by the end of stream on its socket and, on Linux 5.3 and
//!   later, by a pidfd, so a child that a task forks (a daemonising library) and that keeps
//!   the socket open does not hide it. On older kernels such a task ends only by its timeout.
//!   The forked child itself is not the pool's to end.
//! - Start-up has no timeout: an initializer that never returns blocks
//!   [`Builder::build`], or the replacement worker it runs in.
//! - When a pool has no more workers than CPUs, an idle worker watches for its next job for
//!   up to 200 µs before it sleeps, and so does a blocking call for its results (when its
//!   workers take every CPU, only for the last results of the call): up to 200 µs of CPU
//!   per worker after a pool's last job. A wait whose watch found nothing, or lost the CPU
//!   to another process, makes the next ones sleep at once, for longer each time (up to
//!   1,024 waits).
//!
//! # Features
//!
//! - `tracing`: a span for each call (its task, its outcome and, where known, the worker
//!   that ran it) and events for workers started, ready, recycled and dead, for the
//!   program's `tracing` subscriber. A blocking call's span is entered while it waits; an
//!   `apply_async`, `map_async` or `imap` call's span runs from its submission until its last
//!   result is in, never entered. The library never prints.
//! - `indicatif`: [`Imap::progress`](crate::Imap), a progress bar on an `imap`, its length
//!   known whenever the input's is.
//! - `test-hooks`: hooks for procpool's own tests; not a public API.
//!
//! # Platforms
//!
//! Linux only, for now.
//!
//! # Testing code that uses a pool
//!
//! Tasks can be declared in an integration test file and pools started in its tests, under
//! `cargo test` or `cargo nextest`: the workers are the test binary itself.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod backend;
mod codec;
mod error;
mod event;
#[cfg(feature = "redis")]
mod host;
mod insight;
mod job;
mod memory;
mod options;
mod pool;
mod registry;
#[cfg(feature = "redis")]
mod remote;
mod result;
mod shared;
mod start;
mod stats;
mod supervisor;
mod sys;
mod trace;
mod watch;
mod wire;
mod worker;

pub use error::{BuildError, BuildErrorKind, Error, ErrorKind, WorkerExit, WorkerInfo};
pub use event::{Event, Events};
#[cfg(feature = "redis")]
pub use host::{Host, HostHandle};
pub use insight::{Insights, WorkerInsight};
pub use pool::{ApplyOptions, Builder, MapOptions, Pool};
pub use procpool_macros::task;
pub use registry::Task;
pub use result::{AsyncResult, Awaited, Cancel, Imap, MapResult};
pub use shared::SharedBytes;
pub use start::StartMethod;
pub use stats::Stats;
pub use sys::cpu_count;
#[cfg(feature = "redis")]
pub use worker::current_host;
pub use worker::current_worker;

/// The wire decoders, for the fuzz targets in `fuzz/`; not a public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::wire::fuzz_wire as wire;
}

/// Hooks for procpool's own tests, behind the `test-hooks` feature: not a public API, and
/// they may change in any release.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod test_hooks {
    /// How many idle workers a blocking call could borrow now: tests that must know the
    /// borrowing path is taken wait for it.
    pub fn idle_workers(pool: &crate::Pool) -> usize {
        pool.idle_workers()
    }

    /// How long a job must run for the pool to count it as long.
    pub const LONG_JOB: std::time::Duration = crate::supervisor::LONG_JOB;

    /// The exit code of a worker that died before it was ready because
    /// [`die_before_ready_file`] asked it to.
    pub const DIED_BEFORE_READY: i32 = 97;

    /// A file whose presence makes the next worker of the pool in process `pool` that reads
    /// its SETUP exit before it is ready; that worker removes it, so only one exits.
    pub fn die_before_ready_file(pool: u32) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("procpool-die-before-ready-{pool}"))
    }

    /// In a worker that has read its SETUP: exits if [`die_before_ready_file`] says so.
    pub(crate) fn before_ready() {
        if let Some(&pool) = crate::worker::POOL.get()
            && std::fs::remove_file(die_before_ready_file(pool)).is_ok()
        {
            std::process::exit(DIED_BEFORE_READY);
        }
    }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::error::TaskFailure;
    pub use crate::registry::{Calls, TASKS, TaskEntry, invoke, type_name_of};
    pub use linkme;
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
