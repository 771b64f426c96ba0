//! The supervisor: one thread per pool that owns the workers. It hands queued jobs to
//! workers, collects their results, notices deaths, reaps, fails or re-queues what a dead
//! worker held, starts replacements, and recycles workers after `max_tasks_per_child` jobs.
//!
//! Callers put jobs on the shared queue and wake the supervisor through a socket; the
//! supervisor does their I/O, non-blocking, from one `poll` loop. When the queue is empty it
//! also lends its idle workers out (`State::idle`): a blocking call then borrows one, talks
//! to it from its own thread and gives it back (see `borrow`), which saves two thread
//! wake-ups a call. Whatever goes wrong with a borrowed worker comes back here to be settled.
//!
//! `README.md` beside this file describes the worker states and the lending protocol.

mod borrow;
mod conn;
mod drive;
mod hub;
mod settle;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{BuildError, Error, ErrorKind};
use crate::event::Events;
use crate::insight::{Insights, Recorder};
use crate::job::Job;
use crate::memory::Memory;
use crate::registry;
use crate::result::{Callbacks, Link};
use crate::start::{StartMethod, Starter};
use crate::stats::Stats;
use crate::sys;

use drive::Supervisor;
use hub::State;
pub(crate) use hub::{Hub, Phase};

/// How many jobs a worker may hold at once: one running, one waiting behind it, so that the
/// round trip between them is hidden. Near the end of the jobs, a worker whose last job was
/// long holds one (see [`Worker::depth`](conn::Worker::depth)).
pub(crate) const DEPTH: usize = 2;

/// A job at least this long makes its worker hold one job at a time near the end of the
/// jobs, until a shorter one: the round trip a second job would hide (tens to a few hundred
/// microseconds) is then at most a few hundredths of the job.
///
/// The parent measures it, from when the job became the one its worker runs to when it
/// read the results, so the measure includes the parent's own wake-up, which on a busy
/// machine can take a time slice: a short job taken for a long one then costs a round trip,
/// and only near the end of the jobs.
pub(crate) const LONG_JOB: Duration = Duration::from_millis(10);

/// How often a closing pool looks whether a worker that holds a job has been stopped (by
/// SIGSTOP, say), which `join` must not wait on forever.
const STOPPED_CHECK: Duration = Duration::from_millis(100);

/// How long a worker whose socket ended may take to exit by itself before the pool kills
/// it: its own exit status then says why it ended.
const EXIT_WAIT: Duration = Duration::from_millis(100);

/// How many replacement workers in a row may die before their handshake before the pool
/// stops starting them.
const MAX_START_FAILURES: u32 = 3;

/// How long `terminate` lets workers exit after asking them to (SIGTERM) before it kills
/// them (SIGKILL).
const GRACE: Duration = Duration::from_millis(200);

/// How long a worker told to shut down (by `close`, or after `max_tasks_per_child`) may take
/// to exit before it is killed: exiting flushes its stdout, which a slow reader can hold up,
/// but a stopped or stuck worker must not make `join` wait forever.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// What the supervisor needs to start workers.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) processes: usize,
    /// How many workers are started and ready before the pool is: the rest start after,
    /// one a turn of the supervisor's loop.
    pub(crate) wait_for_workers: usize,
    pub(crate) method: StartMethod,
    /// The initializer's registered name and encoded arguments.
    pub(crate) initializer: Option<(&'static str, Vec<u8>)>,
    pub(crate) max_tasks_per_child: Option<u64>,
    /// How long one call may run before its worker is killed, unless the job says otherwise.
    pub(crate) task_timeout: Option<Duration>,
    /// How many times a job of one call whose worker died is run again.
    pub(crate) retries: u32,
    /// Whether workers capture a backtrace of each panic.
    pub(crate) backtraces: bool,
    /// The workers' memory limit and the resident memory over which they are recycled.
    pub(crate) memory: Memory,
    /// How long a worker waiting for work watches its socket before it sleeps, when it has
    /// a CPU of its own ([`crate::watch::WINDOW`] for a local pool).
    pub(crate) watch: Duration,
    /// For a pool whose calls other threads may cancel while a caller waits on borrowed
    /// workers (a host's): how often such a caller looks. `None` elsewhere: a local
    /// blocking call is cancelled only by its own thread.
    pub(crate) cancel_look: Option<Duration>,
}

/// Starts the supervisor thread; `ready` hears once whether every first worker started.
pub(crate) fn launch(
    config: Config,
    ready: Sender<Result<(), BuildError>>,
) -> io::Result<(Arc<Hub>, std::thread::JoinHandle<()>)> {
    let (wake_tx, wake_rx) = UnixStream::pair()?;
    let (closed_tx, closed_rx) = UnixStream::pair()?;
    closed_tx.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    wake_rx.set_nonblocking(true)?;
    let shared = Arc::new(Hub {
        state: Mutex::new(State {
            phase: Phase::Running,
            queue: VecDeque::new(),
            pids: vec![None; config.processes],
            idle: Vec::new(),
            lent: 0,
            borrowers: 0,
            exited: Vec::new(),
            returned: Vec::new(),
        }),
        wake_tx,
        wake_pending: AtomicBool::new(false),
        next_job: AtomicU64::new(0),
        counters: Arc::default(),
        recorder: Arc::new(Recorder::new(config.processes)),
        closing: AtomicBool::new(false),
        closed_rx,
        closed_tx,
        cancels: AtomicBool::new(false),
        finished: Mutex::new(false),
        finished_changed: std::sync::Condvar::new(),
        task_timeout: config.task_timeout,
        cancel_look: config.cancel_look,
        max_tasks_per_child: config.max_tasks_per_child,
        cpus: OnceLock::new(),
        watcher: Mutex::default(),
    });
    let supervisor = Supervisor {
        slots: (0..config.processes).map(|_| None).collect(),
        away: vec![None; config.processes],
        vacant: vec![false; config.processes],
        retiring: Vec::new(),
        unstarted: config.wait_for_workers..config.processes,
        starter: Starter::new(config.method),
        config,
        shared: Arc::clone(&shared),
        wake_rx,
        startup: Some(ready),
        start_failures: 0,
        fingerprint: registry::registry_fingerprint(),
        verified_server: None,
        pids_changed: true,
        finished: false,
    };
    let handle = std::thread::Builder::new()
        .name("procpool-supervisor".into())
        .spawn(move || supervisor.run())?;
    // Read while the supervisor starts the first worker, which needs it only after.
    shared.cpus();
    Ok((shared, handle))
}

/// The local backend: a supervisor thread and its workers, as a pool sees them.
#[derive(Clone)]
pub(crate) struct Local {
    hub: Arc<Hub>,
    /// Handed to every result handle, so that its cancel reaches the supervisor.
    canceller: Arc<dyn Fn() + Send + Sync>,
    /// The pool's callback thread, shared by every handle.
    callbacks: Arc<Callbacks>,
    /// The supervisor thread, until it is joined.
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

impl Local {
    /// Starts the supervisor and returns once every first worker is ready.
    pub(crate) fn start(config: Config) -> Result<Local, BuildError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (hub, handle) = launch(config, ready_tx).map_err(BuildError::spawn)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {
                // A weak reference: a result handle kept after its pool is gone holds
                // nothing of it.
                let weak = Arc::downgrade(&hub);
                let canceller = Arc::new(move || {
                    if let Some(hub) = weak.upgrade() {
                        hub.note_cancel();
                    }
                });
                let callbacks = Arc::new(Callbacks::new(Arc::clone(&hub.counters)));
                Ok(Local {
                    hub,
                    canceller,
                    callbacks,
                    thread: Arc::new(Mutex::new(Some(handle))),
                })
            }
            Ok(Err(error)) => {
                let _ = handle.join();
                Err(error)
            }
            Err(_) => {
                let _ = handle.join();
                Err(BuildError::spawn(io::Error::other(
                    "the supervisor stopped during start-up",
                )))
            }
        }
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    /// What ties a result handle to this pool: its cancels and its callbacks.
    pub(crate) fn link(&self) -> Link {
        Link {
            cancel: Arc::clone(&self.canceller),
            callbacks: Arc::clone(&self.callbacks),
        }
    }

    /// Runs `jobs` from this thread on `workers` borrowed workers if that many are idle, else
    /// queues them; see [`borrow::run`].
    pub(crate) fn run_blocking(
        &self,
        mut jobs: VecDeque<Job>,
        workers: usize,
        while_waiting: &mut dyn FnMut() -> bool,
    ) -> Result<(), Error> {
        if borrow::run(&self.hub, &mut jobs, workers, while_waiting) {
            return Ok(());
        }
        self.hub.submit(jobs)
    }

    pub(crate) fn stats(&self) -> Stats {
        self.hub.counters.snapshot()
    }

    pub(crate) fn subscribe(&self) -> Events {
        self.hub.counters.events.subscribe()
    }

    /// What each worker slot did so far, with the peak memory of the workers running now
    /// read first.
    pub(crate) fn insights(&self) -> Insights {
        let pids = self.hub.lock().pids.clone();
        // A pid read here may belong to a worker that has just exited; its status then has
        // no memory left to read, and nothing is recorded.
        for (slot, pid) in pids.iter().enumerate() {
            if let Some(bytes) = pid.and_then(sys::peak_resident) {
                self.hub.recorder.peak(slot, bytes);
            }
        }
        self.hub.recorder.snapshot(&pids)
    }

    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        self.hub.lock().pids.iter().flatten().copied().collect()
    }

    #[cfg(feature = "test-hooks")]
    pub(crate) fn idle_workers(&self) -> usize {
        self.hub.lock().idle.len()
    }

    /// Whether the pool takes work now, and if not, the error a submission gets.
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        match &self.hub.lock().phase {
            Phase::Running => Ok(()),
            Phase::Broken(error) => Err(error.clone()),
            Phase::Closed | Phase::Terminating => Err(Error::closed()),
        }
    }

    pub(crate) fn close(&self) {
        let mut state = self.hub.lock();
        if let Phase::Running = state.phase {
            state.phase = Phase::Closed;
            self.hub.closing.store(true, Ordering::SeqCst);
            let _ = (&self.hub.closed_tx).write(&[1]);
        }
        drop(state);
        self.hub.wake();
    }

    pub(crate) fn join(&self) -> Result<(), Error> {
        if let Phase::Running = self.hub.lock().phase {
            return Err(Error::new(
                ErrorKind::StillRunning,
                "join called on a running pool: call close or terminate first",
            ));
        }
        // The lock is held while joining, so that a second `join` or a `terminate` from
        // another thread waits for the workers to be reaped too, rather than returning early.
        let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = thread.take() {
            // The supervisor settles every job before it returns, even when it panics.
            let _ = handle.join();
        }
        Ok(())
    }

    /// [`Local::join`], giving up after `timeout`: true once joined.
    pub(crate) fn join_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        if let Phase::Running = self.hub.lock().phase {
            return Err(Error::new(
                ErrorKind::StillRunning,
                "join called on a running pool: call close or terminate first",
            ));
        }
        if !self.hub.wait_finished(timeout) {
            return Ok(false);
        }
        // The supervisor has finished its work: joining its thread takes no time.
        self.join().map(|()| true)
    }

    pub(crate) fn terminate(&self) {
        for job in self.hub.set_phase(Phase::Terminating) {
            let error = Error::terminated(job.task);
            job.fail(&error);
        }
        let _ = self.join();
    }
}
