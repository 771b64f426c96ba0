//! Counters of what a pool did: [`Stats`], the snapshot callers see, and the atomic
//! `Counters` the pool and its supervisor keep.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::ErrorKind;
use crate::event::Emitter;

/// What a pool has done so far, from [`Pool::stats`](crate::Pool::stats).
///
/// Counts are of calls: a `map` of 100 items counts 100. Every submitted call ends in exactly
/// one final state, so once nothing is in flight, `submitted` is the sum of the final states
/// (`ok + panicked + worker_died + timed_out + out_of_memory + terminated + cancelled + other`).
/// A call refused at
/// submission (its pool closed, its arguments did not encode) is not counted at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls accepted by the pool.
    pub submitted: u64,
    /// Calls that returned a value (a task's own `Err` value included).
    pub ok: u64,
    /// Calls that panicked ([`ErrorKind::Panicked`]).
    pub panicked: u64,
    /// Calls whose worker died under them ([`ErrorKind::WorkerDied`]), after any retries.
    pub worker_died: u64,
    /// Calls that ran past their timeout ([`ErrorKind::TimedOut`]).
    pub timed_out: u64,
    /// Calls whose worker went over its memory limit ([`ErrorKind::OutOfMemory`]).
    pub out_of_memory: u64,
    /// Calls ended by [`terminate`](crate::Pool::terminate) or a drop of the pool
    /// ([`ErrorKind::Terminated`]).
    pub terminated: u64,
    /// Calls cancelled before their result was delivered ([`ErrorKind::Cancelled`]).
    pub cancelled: u64,
    /// Calls that failed otherwise: arguments or a result that did not (de)code, a task the
    /// worker did not know, a pool that broke before they ran.
    pub other: u64,
    /// Calls submitted and not yet in a final state.
    pub in_flight: u64,
    /// Worker processes started, replacements included.
    pub worker_starts: u64,
    /// Callbacks ([`AsyncResult::on_ready`](crate::AsyncResult::on_ready) and the like) that
    /// panicked; the callbacks after them ran as usual.
    pub callback_panics: u64,
    /// Workers that ended without being told to: crashed, exited, killed from outside, killed
    /// for a timeout or a protocol error, went over their memory limit, or died before they
    /// were ready. Workers that the pool retires (`max_tasks_per_child`,
    /// `max_memory_per_child`, `close`, `terminate`) are not counted.
    pub worker_deaths: u64,
    /// Workers retired because their resident memory after a job was over
    /// [`Builder::max_memory_per_child`](crate::Builder::max_memory_per_child): recycled,
    /// not dead.
    pub memory_recycles: u64,
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    submitted: AtomicU64,
    ok: AtomicU64,
    panicked: AtomicU64,
    worker_died: AtomicU64,
    timed_out: AtomicU64,
    out_of_memory: AtomicU64,
    terminated: AtomicU64,
    cancelled: AtomicU64,
    other: AtomicU64,
    worker_starts: AtomicU64,
    worker_deaths: AtomicU64,
    memory_recycles: AtomicU64,
    callback_panics: AtomicU64,
    /// The pool's events, which go where its counts are taken.
    pub(crate) events: Emitter,
}

impl Counters {
    pub(crate) fn submitted(&self, calls: usize) {
        self.submitted.fetch_add(calls as u64, Ordering::SeqCst);
    }

    /// Counts the final state of `calls` calls that succeeded (`None`) or failed with an
    /// error of `kind`.
    pub(crate) fn ended(&self, kind: Option<ErrorKind>, calls: usize) {
        if calls == 0 {
            return;
        }
        let counter = match kind {
            None => &self.ok,
            Some(ErrorKind::Panicked) => &self.panicked,
            Some(ErrorKind::WorkerDied) => &self.worker_died,
            Some(ErrorKind::TimedOut) => &self.timed_out,
            Some(ErrorKind::OutOfMemory) => &self.out_of_memory,
            Some(ErrorKind::Terminated) => &self.terminated,
            Some(ErrorKind::Cancelled) => &self.cancelled,
            Some(_) => &self.other,
        };
        counter.fetch_add(calls as u64, Ordering::SeqCst);
    }

    pub(crate) fn worker_started(&self) {
        self.worker_starts.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn callback_panicked(&self) {
        self.callback_panics.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn worker_died(&self) {
        self.worker_deaths.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn memory_recycled(&self) {
        self.memory_recycles.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        // Final states first: a call is submitted before it completes, so `submitted`, read
        // after them, is never behind them.
        let ok = load(&self.ok);
        let panicked = load(&self.panicked);
        let worker_died = load(&self.worker_died);
        let timed_out = load(&self.timed_out);
        let out_of_memory = load(&self.out_of_memory);
        let terminated = load(&self.terminated);
        let cancelled = load(&self.cancelled);
        let other = load(&self.other);
        let submitted = load(&self.submitted);
        let done = ok
            + panicked
            + worker_died
            + timed_out
            + out_of_memory
            + terminated
            + cancelled
            + other;
        Stats {
            submitted,
            ok,
            panicked,
            worker_died,
            timed_out,
            out_of_memory,
            terminated,
            cancelled,
            other,
            in_flight: submitted.saturating_sub(done),
            worker_starts: load(&self.worker_starts),
            worker_deaths: load(&self.worker_deaths),
            memory_recycles: load(&self.memory_recycles),
            callback_panics: load(&self.callback_panics),
        }
    }
}
