//! The sink that results are delivered to: it wakes the threads that wait on it and the
//! futures that await it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::error::Error;
use crate::trace::AsyncSpan;

use super::*;

/// Code to run on the pool's callback thread.
pub(crate) type Callback = Box<dyn FnOnce() + Send>;

/// What ties a collector to its pool.
pub(crate) struct Link {
    /// Tells the pool of a cancel, so that it looks for the calls to end.
    pub(crate) cancel: Arc<dyn Fn() + Send + Sync>,
    /// Where the pool runs callbacks.
    pub(crate) callbacks: Arc<Callbacks>,
}

/// A pool's callback thread, started with its first callback: it runs them one at a time,
/// in the order their results completed, off every caller's thread and off the
/// supervisor's. A callback that panics is counted ([`Stats::callback_panics`]) and the
/// next one runs. The thread ends once the pool and every handle linked to it are gone.
///
/// [`Stats::callback_panics`]: crate::Stats::callback_panics
pub(crate) struct Callbacks {
    sender: OnceLock<std::sync::mpsc::Sender<Callback>>,
    counters: Arc<crate::stats::Counters>,
}

impl Callbacks {
    pub(crate) fn new(counters: Arc<crate::stats::Counters>) -> Callbacks {
        Callbacks {
            sender: OnceLock::new(),
            counters,
        }
    }

    fn send(&self, callback: Callback) {
        let sender = self.sender.get_or_init(|| {
            let (sender, receiver) = std::sync::mpsc::channel::<Callback>();
            let counters = Arc::clone(&self.counters);
            let started = std::thread::Builder::new()
                .name("procpool-callbacks".into())
                .spawn(move || {
                    for callback in receiver {
                        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback));
                        if ran.is_err() {
                            counters.callback_panicked();
                        }
                    }
                });
            // Without a thread the channel has no reader; `send` below then runs callbacks
            // where they complete.
            drop(started);
            sender
        });
        if let Err(std::sync::mpsc::SendError(callback)) = sender.send(callback)
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback)).is_err()
        {
            self.counters.callback_panicked();
        }
    }
}

/// Where the results of one submission land, one batch per job, in any order.
pub(crate) struct Collector {
    pub(super) state: Mutex<Batches>,
    pub(super) changed: Condvar,
    /// Set by a cancel: deliveries from then on end their calls as cancelled.
    cancelled: AtomicBool,
    /// A map's collector: the first call that fails cancels the others (see
    /// [`Collector::call_failed`]).
    ends_at_first_failure: bool,
    /// The pool's side of this collector: how a cancel reaches it, and where callbacks run.
    link: OnceLock<Link>,
    /// The process's fork generation when the collector was made: in a child forked since,
    /// nothing will ever deliver to it (and its lock may have been held at the fork).
    generation: u64,
}

pub(super) struct Batches {
    /// In the order they arrived; an [`Imap`] drops each once it has taken all of its calls.
    pub(super) batches: VecDeque<Batch>,
    /// Calls delivered so far.
    pub(super) filled: usize,
    /// Threads waiting on `changed`: a delivery wakes them only if there are some, since a
    /// blocking call that ran its jobs itself finds its results there without waiting.
    pub(super) waiters: usize,
    /// Tasks awaiting a delivery: each delivery wakes them all, once.
    pub(super) wakers: Vec<Waker>,
    /// A callback to run once this many calls are in.
    pub(super) callback: Option<(usize, Callback)>,
    /// With the `tracing` feature: the span of an asynchronous call, closed once `span_ends`
    /// calls are in (`usize::MAX` until that is known).
    pub(super) span: Option<AsyncSpan>,
    pub(super) span_ends: usize,
}

impl Default for Batches {
    fn default() -> Batches {
        Batches {
            batches: VecDeque::new(),
            filled: 0,
            waiters: 0,
            wakers: Vec::new(),
            callback: None,
            span: None,
            span_ends: usize::MAX,
        }
    }
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Collector {
    pub(crate) fn new() -> Arc<Collector> {
        Collector::with(false)
    }

    /// The collector of a map, whose result is all of its calls' or one error: once a call
    /// has failed, the others' results are wanted by nobody, so the first failure cancels
    /// them, as Python's `map_async` ends at its first failed chunk.
    pub(crate) fn for_map() -> Arc<Collector> {
        Collector::with(true)
    }

    fn with(ends_at_first_failure: bool) -> Arc<Collector> {
        Arc::new(Collector {
            state: Mutex::new(Batches::default()),
            changed: Condvar::new(),
            generation: crate::sys::fork_generation(),
            cancelled: AtomicBool::new(false),
            ends_at_first_failure,
            link: OnceLock::new(),
        })
    }

    /// Links the collector to its pool: cancels and callbacks go there.
    pub(crate) fn link(&self, link: Link) {
        let _ = self.link.set(link);
    }

    /// Runs `callback` on the pool's callback thread once `count` calls are in (at once if
    /// they are), after the callbacks of the submissions that completed before. One callback
    /// a collector; a second replaces the first if the first has not run.
    pub(crate) fn when_filled(&self, count: usize, callback: Callback) {
        if !self.ours() {
            return;
        }
        let mut state = self.lock();
        if state.filled >= count {
            drop(state);
            self.run_callback(callback);
        } else {
            state.callback = Some((count, callback));
        }
    }

    fn run_callback(&self, callback: Callback) {
        match self.link.get() {
            Some(link) => link.callbacks.send(callback),
            // Not linked to a pool (a collector of the caller's own): run it here.
            None => callback(),
        }
    }

    /// Cancels every call of this submission not yet delivered; the pool removes those
    /// queued and kills the workers running them.
    pub(crate) fn cancel(&self) {
        if !self.ours() {
            return;
        }
        if !self.cancelled.swap(true, Ordering::SeqCst)
            && let Some(link) = self.link.get()
        {
            (link.cancel)();
        }
    }

    /// Told by a job, before it delivers, that one of its calls failed: a map's collector
    /// then cancels every call of the map not yet finished.
    pub(crate) fn call_failed(&self) {
        if self.ends_at_first_failure {
            self.cancel();
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// An error if this is a copy in a child forked since the collector was made.
    pub(super) fn check_process(&self, what: &str) -> Result<(), Error> {
        if self.ours() {
            Ok(())
        } else {
            Err(Error::other_process(what))
        }
    }

    /// Whether this is the process the collector was made in: in a child forked since,
    /// nothing will ever be delivered, and its lock may have been held at the fork, so the
    /// waits return at once and nothing takes the lock.
    fn ours(&self) -> bool {
        crate::sys::fork_generation() == self.generation
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Batches> {
        // Nothing panics while holding this lock, but a poisoned one still holds valid data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows this submission's calls with `span` (if there is one), which closes once
    /// `calls` are in; `None` until [`Collector::span_ends_at`] says how many.
    pub(crate) fn trace(&self, span: Option<AsyncSpan>, calls: Option<usize>) {
        let Some(mut span) = span else {
            return;
        };
        let mut state = self.lock();
        // Results may be in already.
        for batch in &state.batches {
            observe(&mut span, batch, calls);
        }
        state.span = Some(span);
        state.span_ends = calls.unwrap_or(usize::MAX);
        let closed = close_span(&mut state);
        drop(state);
        if let Some(span) = closed {
            span.close();
        }
    }

    /// Closes the span (if any) once `calls` calls are in: an [`Imap`] knows how many
    /// calls it made once its input ends, it is cancelled or it is dropped.
    pub(crate) fn span_ends_at(&self, calls: usize) {
        if !self.ours() {
            return;
        }
        let mut state = self.lock();
        if state.span.is_none() {
            return;
        }
        state.span_ends = calls;
        let closed = close_span(&mut state);
        drop(state);
        if let Some(span) = closed {
            span.close();
        }
    }

    /// Records the outcomes of one job's calls.
    pub(crate) fn deliver(&self, batch: Batch) {
        let mut state = self.lock();
        if state.span.is_some() {
            let single = (state.span_ends == 1).then_some(1);
            if let Some(span) = &mut state.span {
                observe(span, &batch, single);
            }
            if state.filled + batch.count >= state.span_ends {
                // The last results: the span closes before they are counted, so that whoever
                // sees the call ended finds its span closed. The subscriber's code runs
                // outside the lock; no delivery can end the call meanwhile, as this one's
                // calls are not counted yet.
                let span = state.span.take();
                drop(state);
                if let Some(span) = span {
                    span.close();
                }
                state = self.lock();
            }
        }
        state.filled += batch.count;
        state.batches.push_back(batch);
        let waiters = state.waiters;
        let wakers = std::mem::take(&mut state.wakers);
        let callback = match state.callback.take() {
            Some((count, callback)) if state.filled >= count => Some(callback),
            waiting => {
                state.callback = waiting;
                None
            }
        };
        drop(state);
        if let Some(callback) = callback {
            self.run_callback(callback);
        }
        if waiters > 0 {
            self.changed.notify_all();
        }
        for waker in wakers {
            // A waker is the awaiting program's code, run here on the thread that delivers
            // (the supervisor's, often): one that panics must not take the pool down.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
        }
    }

    /// Ready once `count` calls have been delivered; until then the task of `cx` is woken
    /// by the next delivery.
    pub(crate) fn poll_filled(&self, count: usize, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_until(cx, |s| (s.filled >= count).then_some(()))
    }

    pub(super) fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        mut done: impl FnMut(&mut Batches) -> Option<T>,
    ) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(value) = done(&mut state) {
                return Some(value);
            }
            let left = match deadline {
                None => None,
                Some(deadline) => Some(deadline.checked_duration_since(Instant::now())?),
            };
            state.waiters += 1;
            state = match left {
                None => self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(left) => {
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            state.waiters -= 1;
        }
    }

    /// Whether `count` calls have been delivered; never in a forked child.
    pub(super) fn is_filled(&self, count: usize) -> bool {
        self.ours() && self.lock().filled >= count
    }

    /// Takes the earliest-arrived batch, if one is in.
    pub(crate) fn take_batch(&self) -> Option<Batch> {
        self.lock().batches.pop_front()
    }

    /// Waits until `count` results have arrived; false if the deadline passed first.
    pub(crate) fn wait_filled(&self, count: usize, deadline: Option<Instant>) -> bool {
        if !self.ours() {
            return false;
        }
        self.wait_until(deadline, |s| (s.filled >= count).then_some(()))
            .is_some()
    }

    /// Hands every delivered call's index and result to `visit`, batch by batch.
    pub(super) fn visit_all(&self, mut visit: impl FnMut(usize, Result<&[u8], Error>)) {
        self.visit_batches(|batch| batch.visit(&mut visit));
    }

    /// Hands every delivered batch to `visit`.
    pub(super) fn visit_batches(&self, visit: impl FnMut(&Batch)) {
        self.lock().batches.iter().for_each(visit);
    }

    pub(super) fn all_ok(&self) -> bool {
        self.lock().batches.iter().all(Batch::all_ok)
    }

    /// Takes the call at `index`, waiting for it; calls are taken in index order, and their
    /// batches are of neighbouring calls.
    pub(super) fn take<T>(
        &self,
        index: usize,
        decode: impl FnOnce(Result<&[u8], Error>) -> T,
    ) -> T {
        let mut decode = Some(decode);
        self.wait_until(None, |s| take_at(s, index, &mut decode))
            .expect("no deadline")
    }

    /// Takes the earliest-arrived call not yet taken, waiting for one.
    pub(super) fn take_arrived<T>(&self, decode: impl FnOnce(Result<&[u8], Error>) -> T) -> T {
        let mut decode = Some(decode);
        self.wait_until(None, |s| take_first(s, &mut decode))
            .expect("no deadline")
    }

    /// [`Collector::take`] for a task: ready with the call at `index` once it is in; until
    /// then, the next delivery wakes the task of `cx`.
    pub(super) fn poll_take<T>(
        &self,
        index: usize,
        cx: &mut Context<'_>,
        decode: impl FnOnce(Result<&[u8], Error>) -> T,
    ) -> Poll<T> {
        let mut decode = Some(decode);
        self.poll_until(cx, |s| take_at(s, index, &mut decode))
    }

    /// [`Collector::take_arrived`] for a task.
    pub(super) fn poll_take_arrived<T>(
        &self,
        cx: &mut Context<'_>,
        decode: impl FnOnce(Result<&[u8], Error>) -> T,
    ) -> Poll<T> {
        let mut decode = Some(decode);
        self.poll_until(cx, |s| take_first(s, &mut decode))
    }

    /// Ready with what `done` finds; else the task of `cx` is woken by the next delivery.
    /// The waker is registered under the lock that deliveries take, so none is missed.
    fn poll_until<T>(
        &self,
        cx: &mut Context<'_>,
        done: impl FnOnce(&mut Batches) -> Option<T>,
    ) -> Poll<T> {
        let mut state = self.lock();
        if let Some(value) = done(&mut state) {
            return Poll::Ready(value);
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Records in `span` what `batch` says: its first failure, and for a call of one (`calls`
/// is `Some(1)`), the worker that ran it.
fn observe(span: &mut AsyncSpan, batch: &Batch, calls: Option<usize>) {
    if !span.has_failed()
        && let Some(error) = batch.first_error()
    {
        span.failed(&error);
    }
    if calls == Some(1)
        && let Some(worker) = batch.worker()
    {
        span.worker(worker);
    }
}

/// Takes the span out of `state` if every call it follows is in.
fn close_span(state: &mut Batches) -> Option<AsyncSpan> {
    if state.filled >= state.span_ends {
        state.span.take()
    } else {
        None
    }
}

/// Takes the call at `index` if its batch is in.
fn take_at<T>(
    s: &mut Batches,
    index: usize,
    decode: &mut Option<impl FnOnce(Result<&[u8], Error>) -> T>,
) -> Option<T> {
    let at = s
        .batches
        .iter()
        .position(|b| b.start <= index && index < b.start + b.count)?;
    let batch = &mut s.batches[at];
    debug_assert_eq!(batch.index(batch.taken), index, "taken out of order");
    let (_, value) = batch.take_next(decode.take().expect("taken once"));
    if batch.exhausted() {
        s.batches.remove(at);
    }
    Some(value)
}

/// Takes the earliest-arrived call not yet taken, if there is one.
fn take_first<T>(
    s: &mut Batches,
    decode: &mut Option<impl FnOnce(Result<&[u8], Error>) -> T>,
) -> Option<T> {
    let batch = s.batches.front_mut()?;
    let (_, value) = batch.take_next(decode.take().expect("taken once"));
    if batch.exhausted() {
        s.batches.pop_front();
    }
    Some(value)
}
