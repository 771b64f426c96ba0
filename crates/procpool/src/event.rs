//! The pool's events, for programs that subscribe ([`Pool::subscribe`](crate::Pool::subscribe)):
//! jobs queued, started and finished, and workers started, ready, recycled and exited. With
//! nobody subscribed, emitting one costs one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::error::{ErrorKind, WorkerExit, WorkerInfo};

/// Something that happened in a pool. A job is one call, or a chunk of several calls of a
/// map; each goes `Queued`, then `Started` on a worker, then `Finished`, or straight from
/// `Queued` to `Finished` if it ended before it ran (cancelled, terminated). A job whose
/// worker died and that runs again (retries) is `Started` again; a chunk whose worker died
/// ends without `Finished`, and its calls are `Queued` again as jobs of one call each.
/// A forked worker's first job may be sent with its handshake: then it is `Started` before
/// the worker's `WorkerReady`, and `Started` again on another worker if that one ended its
/// stream before it was ready (the job had not run).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A job was accepted: `calls` calls of `task`.
    Queued {
        /// The job's id, unique in its pool.
        job: u64,
        /// The task's registered name.
        task: &'static str,
        /// How many calls the job holds.
        calls: usize,
    },
    /// A job started running in `worker`.
    Started {
        /// The job's id.
        job: u64,
        /// The worker that runs it.
        worker: WorkerInfo,
    },
    /// A job ended: `failed` of its `calls` calls with an error (`kind`, the first's), the
    /// others with a value.
    Finished {
        /// The job's id.
        job: u64,
        /// How many calls the job held.
        calls: usize,
        /// How many of them failed.
        failed: usize,
        /// The kind of the failure, where the job failed as a whole.
        kind: Option<ErrorKind>,
        /// The worker that ran it, where one sent its results.
        worker: Option<WorkerInfo>,
        /// How long it ran in its worker, as far as the pool can tell.
        in_worker: Option<Duration>,
    },
    /// A worker process was started.
    WorkerStarted(WorkerInfo),
    /// A worker finished its handshake (and initializer) and takes jobs.
    WorkerReady(WorkerInfo),
    /// A worker was told to exit: after its `max_tasks_per_child` jobs, with its resident
    /// memory over `max_memory_per_child` after a job, or at `close`.
    WorkerRecycled(WorkerInfo),
    /// A worker ended without being told to (or was killed by the pool: a timeout, a protocol
    /// error, a cancel), and was reaped.
    WorkerExited {
        /// The worker.
        worker: WorkerInfo,
        /// How it ended.
        exit: WorkerExit,
        /// Whether the pool killed it (a timeout, a protocol error, a cancel...).
        killed_by_pool: bool,
    },
}

/// The events of a pool, from [`Pool::subscribe`](crate::Pool::subscribe): an iterator that
/// waits for the next one and ends once the pool has shut down (joined, terminated or
/// dropped). Events that come while nobody takes them are kept, in order.
#[derive(Debug)]
pub struct Events {
    receiver: Receiver<Event>,
}

impl Events {
    /// The next event if one has come; `None` when none is waiting (or the pool is gone).
    pub fn try_next(&self) -> Option<Event> {
        self.receiver.try_recv().ok()
    }

    /// The next event, waiting at most `timeout` for it.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Event> {
        self.receiver.recv_timeout(timeout).ok()
    }
}

impl Iterator for Events {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.receiver.recv().ok()
    }
}

/// Where a pool's events go: its subscribers, if any.
#[derive(Debug, Default)]
pub(crate) struct Emitter {
    /// Whether anyone subscribed: read before an event is even made.
    active: AtomicBool,
    subscribers: Mutex<Vec<Sender<Event>>>,
}

impl Emitter {
    pub(crate) fn subscribe(&self) -> Events {
        let (sender, receiver) = std::sync::mpsc::channel();
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.push(sender);
        self.active.store(true, Ordering::SeqCst);
        Events { receiver }
    }

    /// Sends the event `make` makes to every subscriber; makes nothing when there is none.
    #[inline]
    pub(crate) fn emit(&self, make: impl FnOnce() -> Event) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        self.emit_slow(make());
    }

    /// Ends every subscription: the pool has finished, and nothing more will happen.
    pub(crate) fn close(&self) {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.active.store(false, Ordering::SeqCst);
    }

    #[cold]
    fn emit_slow(&self, event: Event) {
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|sender| sender.send(event.clone()).is_ok());
        if subscribers.is_empty() {
            self.active.store(false, Ordering::SeqCst);
        }
    }
}
