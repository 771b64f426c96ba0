//! What callers and the supervisor share: the queue, the lifecycle phase, the idle workers
//! callers may borrow and those they give back.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::conn::{Cause, Worker};
use crate::error::Error;
use crate::insight::Recorder;
use crate::job::Job;
use crate::stats::Counters;
use crate::sys;
use crate::watch::Watcher;

/// The lifecycle of a pool, as callers and the supervisor both see it.
#[derive(Clone, Debug)]
pub(crate) enum Phase {
    Running,
    Closed,
    Terminating,
    /// Workers cannot be replaced any more; the error says why.
    Broken(Error),
}

/// What callers and the supervisor share.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(super) state: Mutex<State>,
    pub(super) wake_tx: UnixStream,
    pub(super) wake_pending: AtomicBool,
    pub(super) next_job: AtomicU64,
    pub(crate) counters: Arc<Counters>,
    /// What each worker slot did, for `Pool::insights`.
    pub(crate) recorder: Arc<Recorder>,
    /// Set once the supervisor has finished: `join` with a timeout waits for it.
    pub(crate) finished: Mutex<bool>,
    pub(crate) finished_changed: Condvar,
    /// Set by a cancel: the supervisor then looks for cancelled calls to end.
    pub(crate) cancels: AtomicBool,
    /// Set by `close`: borrowers then look whether a worker they hold has been stopped.
    pub(crate) closing: AtomicBool,
    /// Becomes readable, for good, when `close` sets `closing`: a borrower asleep in `poll`
    /// before that wakes to start looking. (It is never read.)
    pub(crate) closed_rx: UnixStream,
    pub(crate) closed_tx: UnixStream,
    /// The pool's `task_timeout` and `max_tasks_per_child`, which borrowers apply too.
    pub(crate) task_timeout: Option<Duration>,
    /// How often a thread waiting on borrowed workers looks whether its calls were cancelled
    /// by another thread (`Config::cancel_look`).
    pub(crate) cancel_look: Option<Duration>,
    pub(crate) max_tasks_per_child: Option<u64>,
    /// The CPUs this process may run on, when the pool was built: see [`Hub::cpus`].
    pub(super) cpus: OnceLock<usize>,
    /// Whether callers' watches for results have been paying off (see `borrow`).
    pub(crate) watcher: Mutex<Watcher>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) phase: Phase,
    pub(crate) queue: VecDeque<Job>,
    /// The pid of the worker in each slot, where one runs.
    pub(crate) pids: Vec<Option<u32>>,
    /// Ready workers holding no job that callers may borrow; only while the pool runs and
    /// the queue is empty.
    pub(crate) idle: Vec<Worker>,
    /// How many workers callers hold now.
    pub(crate) lent: usize,
    /// How many blocking calls run on borrowed workers now: until they end, they may still
    /// queue jobs (those a failed worker left), so a closed pool waits for them.
    pub(crate) borrowers: usize,
    /// The pids of workers a caller holds whose exit the supervisor has seen: given back,
    /// they go to the supervisor, never to `idle`.
    pub(crate) exited: Vec<u32>,
    /// Workers given back by callers for the supervisor to take again.
    pub(crate) returned: Vec<Returned>,
}

/// A worker a borrower gives back to the supervisor, with why, if something went wrong.
/// The job it was given, if unfinished, is still in its `in_flight`.
#[derive(Debug)]
pub(crate) struct Returned {
    pub(crate) worker: Worker,
    pub(crate) cause: Option<Cause>,
}

impl State {
    /// The workers callers gave back, no longer marked as seen exiting while held (the
    /// supervisor keeps that mark in `Away` until it has settled them).
    pub(super) fn take_returned(&mut self) -> Vec<Returned> {
        let returned = std::mem::take(&mut self.returned);
        self.exited
            .retain(|pid| !returned.iter().any(|r| r.worker.info.pid == *pid));
        returned
    }
}

impl Hub {
    /// The CPUs this process may run on ([`cpu_count`](sys::cpu_count)), read once.
    ///
    /// Under cgroups that takes several file reads, about a twentieth of a pool's start-up,
    /// so `launch` reads it on the building thread while the supervisor thread starts the
    /// first worker.
    pub(crate) fn cpus(&self) -> usize {
        *self.cpus.get_or_init(sys::cpu_count)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn next_job_id(&self) -> u64 {
        self.next_job.fetch_add(1, Ordering::Relaxed)
    }

    /// Gives a borrowed worker back: to the idle workers when it can serve another call at
    /// once, else to the supervisor (which is woken), with `cause` if it failed. A sound
    /// worker may come back with jobs in flight: the supervisor then reads their results.
    pub(crate) fn give_back(&self, worker: Worker, cause: Option<Cause>) {
        let mut state = self.lock();
        state.lent -= 1;
        let exited = state.exited.contains(&worker.info.pid);
        let cause = cause.or(exited.then_some(Cause::Gone));
        let idle = cause.is_none()
            && worker.in_flight.is_empty()
            && !worker.spent(self.max_tasks_per_child)
            && state.queue.is_empty()
            && matches!(state.phase, Phase::Running);
        if idle {
            state.idle.push(worker);
            return;
        }
        state.returned.push(Returned { worker, cause });
        drop(state);
        self.wake();
    }

    /// Queues jobs that were already accepted (and counted): they run even on a closed pool,
    /// and end as the pool does if it was terminated or broke meanwhile. Those cancelled end
    /// as cancelled instead.
    pub(crate) fn requeue(&self, jobs: impl IntoIterator<Item = Job>) {
        let mut state = self.lock();
        let phase = state.phase.clone();
        if let Phase::Running | Phase::Closed = phase {
            // Under the lock the supervisor's cancel pass takes to drain the queue: a job
            // cancelled before this is ended here, one cancelled after is found by the pass.
            let (cancelled, kept): (Vec<Job>, Vec<Job>) =
                jobs.into_iter().partition(Job::is_cancelled);
            state.queue.extend(kept);
            drop(state);
            self.wake();
            for job in cancelled {
                let error = Error::cancelled(job.task);
                job.fail(&error);
            }
            return;
        }
        drop(state);
        for job in jobs {
            let error = match &phase {
                Phase::Broken(error) => error.clone(),
                _ => Error::terminated(job.task),
            };
            job.fail(&error);
        }
    }

    /// Queues jobs, or refuses them all if the pool no longer takes work.
    pub(crate) fn submit(&self, jobs: impl IntoIterator<Item = Job>) -> Result<(), Error> {
        let mut state = self.lock();
        match &state.phase {
            Phase::Running => {}
            Phase::Broken(error) => return Err(error.clone()),
            Phase::Closed | Phase::Terminating => return Err(Error::closed()),
        }
        for mut job in jobs {
            job.accept();
            state.queue.push_back(job);
        }
        drop(state);
        self.wake();
        Ok(())
    }

    /// Records that the supervisor has settled every job and reaped every worker.
    pub(crate) fn mark_finished(&self) {
        self.counters.events.close();
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.finished_changed.notify_all();
    }

    /// Waits until the supervisor has finished, or `timeout` has passed; says which.
    pub(crate) fn wait_finished(&self, timeout: Duration) -> bool {
        let finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        let (finished, _) = self
            .finished_changed
            .wait_timeout_while(finished, timeout, |finished| !*finished)
            .unwrap_or_else(|e| e.into_inner());
        *finished
    }

    /// Notes that calls were cancelled, for the supervisor to end them.
    pub(crate) fn note_cancel(&self) {
        self.cancels.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub(crate) fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            // A full socket means a wake-up is already pending.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }

    /// Moves the pool to `phase` and returns the queued jobs when that drops them.
    pub(crate) fn set_phase(&self, phase: Phase) -> Vec<Job> {
        let mut state = self.lock();
        let drained = match phase {
            Phase::Terminating => state.queue.drain(..).collect(),
            _ => Vec::new(),
        };
        state.phase = phase;
        drop(state);
        self.wake();
        drained
    }
}
