//! Handles to results: [`AsyncResult`], [`MapResult`], and the [`Imap`] iterator, over one
//! shared `Collector` that the supervisor fills as results arrive.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind};

/// An encoded result: a range of a frame body that several results share.
#[derive(Debug)]
pub(crate) struct Payload {
    pub(crate) frame: Arc<Vec<u8>>,
    pub(crate) range: Range<usize>,
}

/// The final state of one call.
pub(crate) type Outcome = Result<Payload, Error>;

fn decode<R: DeserializeOwned>(outcome: &Outcome, task: &str) -> Result<R, Error> {
    match outcome {
        Ok(payload) => bincode::deserialize(&payload.frame[payload.range.clone()]).map_err(|e| {
            Error::new(ErrorKind::Codec, format!("cannot decode the result: {e}")).task(task)
        }),
        Err(error) => Err(error.clone()),
    }
}

#[derive(Debug)]
enum Slot {
    Pending,
    Ready(Outcome),
    Taken,
}

/// Where the results of one submission land, by index, in any order.
#[derive(Debug)]
pub(crate) struct Collector {
    state: Mutex<Slots>,
    changed: Condvar,
}

#[derive(Debug)]
struct Slots {
    /// The index of `slots[0]`; slots before it have been taken.
    base: usize,
    slots: VecDeque<Slot>,
    /// Indices in the order their results arrived, when an unordered reader wants them.
    arrivals: Option<VecDeque<usize>>,
    filled: usize,
}

impl Collector {
    pub(crate) fn new(len: usize, track_arrivals: bool) -> Arc<Collector> {
        let slots = Slots {
            base: 0,
            slots: (0..len).map(|_| Slot::Pending).collect(),
            arrivals: track_arrivals.then(VecDeque::new),
            filled: 0,
        };
        Arc::new(Collector {
            state: Mutex::new(slots),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Nothing panics while holding this lock, but a poisoned one still holds valid data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcomes of the calls at `start`, `start + stride`, `start + 2 * stride`…
    pub(crate) fn deliver(
        &self,
        start: usize,
        stride: usize,
        outcomes: impl IntoIterator<Item = Outcome>,
    ) {
        let mut state = self.lock();
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let index = start + i * stride;
            let at = index - state.base;
            if state.slots.len() <= at {
                state.slots.resize_with(at + 1, || Slot::Pending);
            }
            debug_assert!(
                matches!(state.slots[at], Slot::Pending),
                "a result arrived twice"
            );
            state.slots[at] = Slot::Ready(outcome);
            state.filled += 1;
            if let Some(arrivals) = &mut state.arrivals {
                arrivals.push_back(index);
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        mut done: impl FnMut(&mut Slots) -> Option<T>,
    ) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(value) = done(&mut state) {
                return Some(value);
            }
            state = match deadline {
                None => self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    fn filled(&self) -> usize {
        self.lock().filled
    }

    /// Waits until `count` results have arrived; false if the deadline passed first.
    fn wait_filled(&self, count: usize, deadline: Option<Instant>) -> bool {
        self.wait_until(deadline, |s| (s.filled >= count).then_some(()))
            .is_some()
    }

    fn with_all<T>(&self, read: impl FnOnce(&mut dyn Iterator<Item = &Outcome>) -> T) -> T {
        let state = self.lock();
        let mut outcomes = state.slots.iter().map(|slot| match slot {
            Slot::Ready(outcome) => outcome,
            _ => unreachable!("read before every result arrived"),
        });
        read(&mut outcomes)
    }

    /// Takes the outcome at `index`, waiting for it.
    fn take(&self, index: usize) -> Outcome {
        self.wait_until(None, |s| {
            let at = index - s.base;
            match s.slots.get(at) {
                Some(Slot::Ready(_)) => Some(s.take_at(at)),
                _ => None,
            }
        })
        .expect("no deadline")
    }

    /// Takes the earliest-arrived outcome not yet taken, waiting for one.
    fn take_arrived(&self) -> (usize, Outcome) {
        self.wait_until(None, |s| {
            let index = s
                .arrivals
                .as_mut()
                .expect("arrivals are tracked")
                .pop_front()?;
            let at = index - s.base;
            Some((index, s.take_at(at)))
        })
        .expect("no deadline")
    }
}

impl Slots {
    fn take_at(&mut self, at: usize) -> Outcome {
        let Slot::Ready(outcome) = std::mem::replace(&mut self.slots[at], Slot::Taken) else {
            unreachable!("only ready slots are taken")
        };
        while let Some(Slot::Taken) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        outcome
    }
}

/// The pending result of [`Pool::apply_async`](crate::Pool::apply_async).
///
/// Waiting with a timeout only stops waiting: the task goes on, and a later
/// [`get`](AsyncResult::get) still returns its result. Dropping the handle does not cancel
/// the task either; its result is discarded when it arrives.
pub struct AsyncResult<R> {
    collector: Arc<Collector>,
    task: &'static str,
    result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("task", &self.task)
            .field("ready", &(self.collector.filled() == 1))
            .finish()
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    pub(crate) fn new(collector: Arc<Collector>, task: &'static str) -> AsyncResult<R> {
        AsyncResult {
            collector,
            task,
            result: PhantomData,
        }
    }

    /// Waits for the task and returns its result. It can be called again: each call decodes
    /// the result anew.
    ///
    /// # Errors
    ///
    /// The task's failure: it panicked, its worker died, the pool was terminated, or its
    /// result could not be decoded.
    pub fn get(&self) -> Result<R, Error> {
        self.wait();
        self.collector
            .with_all(|outcomes| decode(outcomes.next().expect("one result"), self.task))
    }

    /// Like [`get`](AsyncResult::get), but gives up waiting after `timeout`.
    ///
    /// # Errors
    ///
    /// Those of `get`, and [`ErrorKind::WaitTimeout`] when the timeout passed first; then the
    /// task goes on.
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, Error> {
        if !self.wait_timeout(timeout) {
            return Err(Error::wait_timeout(self.task, timeout));
        }
        self.get()
    }

    /// Waits until the result is there.
    pub fn wait(&self) {
        self.collector.wait_filled(1, None);
    }

    /// Waits until the result is there or `timeout` passes; returns whether it is there.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.collector
            .wait_filled(1, Instant::now().checked_add(timeout))
    }

    /// Whether the result is there.
    pub fn ready(&self) -> bool {
        self.collector.filled() == 1
    }

    /// Whether the task succeeded: `None` while it runs.
    pub fn successful(&self) -> Option<bool> {
        self.ready().then(|| {
            self.collector
                .with_all(|outcomes| Iterator::all(&mut { outcomes }, |o: &Outcome| o.is_ok()))
        })
    }
}

/// The pending results of [`Pool::map_async`](crate::Pool::map_async) and
/// [`Pool::starmap_async`](crate::Pool::starmap_async), in input order.
///
/// Waiting with a timeout only stops waiting; dropping the handle cancels nothing.
pub struct MapResult<R> {
    collector: Arc<Collector>,
    len: usize,
    task: &'static str,
    result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for MapResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapResult")
            .field("task", &self.task)
            .field("len", &self.len)
            .finish()
    }
}

impl<R: DeserializeOwned> MapResult<R> {
    pub(crate) fn new(collector: Arc<Collector>, len: usize, task: &'static str) -> MapResult<R> {
        MapResult {
            collector,
            len,
            task,
            result: PhantomData,
        }
    }

    /// Waits for every call and returns the results in input order.
    ///
    /// # Errors
    ///
    /// The failure of the first call, in input order, that failed.
    pub fn get(&self) -> Result<Vec<R>, Error> {
        self.wait();
        self.collector
            .with_all(|outcomes| outcomes.map(|o| decode(o, self.task)).collect())
    }

    /// Like [`get`](MapResult::get), but gives up waiting after `timeout`.
    ///
    /// # Errors
    ///
    /// Those of `get`, and [`ErrorKind::WaitTimeout`] when the timeout passed first.
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>, Error> {
        if !self.wait_timeout(timeout) {
            return Err(Error::wait_timeout(self.task, timeout));
        }
        self.get()
    }

    /// Waits until every result is there.
    pub fn wait(&self) {
        self.collector.wait_filled(self.len, None);
    }

    /// Waits until every result is there or `timeout` passes; returns whether they are.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.collector
            .wait_filled(self.len, Instant::now().checked_add(timeout))
    }

    /// Whether every result is there.
    pub fn ready(&self) -> bool {
        self.collector.filled() == self.len
    }

    /// Whether every call succeeded: `None` while some still run.
    pub fn successful(&self) -> Option<bool> {
        self.ready().then(|| {
            self.collector
                .with_all(|outcomes| Iterator::all(&mut { outcomes }, |o: &Outcome| o.is_ok()))
        })
    }
}

/// What feeds an [`Imap`]: submits the next chunk of calls, starting at the index it is given,
/// and says how many it took from the input.
pub(crate) trait Feed {
    fn feed(&mut self, start: usize, collector: &Arc<Collector>) -> Fed;
}

/// What one [`Feed::feed`] did.
pub(crate) enum Fed {
    /// This many calls were submitted (or, for those that failed before submission, had their
    /// error delivered), and the input may have more.
    Took(usize),
    /// The input is exhausted after this many.
    Exhausted(usize),
}

/// The lazy iterator of [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered).
///
/// It pulls from the input only as results are consumed, keeping a bounded number of calls in
/// flight, so an endless input works in bounded memory. Each item is one call's result.
pub struct Imap<'a, R> {
    feed: Box<dyn Feed + 'a>,
    collector: Arc<Collector>,
    ordered: bool,
    /// Calls submitted so far (indices `0..submitted`).
    submitted: usize,
    /// Calls handed to the caller so far.
    yielded: usize,
    /// How many calls may be submitted and not yet handed to the caller.
    window: usize,
    exhausted: bool,
    task: &'static str,
    result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Imap<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imap")
            .field("task", &self.task)
            .field("ordered", &self.ordered)
            .field("submitted", &self.submitted)
            .field("yielded", &self.yielded)
            .finish()
    }
}

impl<'a, R: DeserializeOwned> Imap<'a, R> {
    pub(crate) fn new(
        feed: Box<dyn Feed + 'a>,
        ordered: bool,
        window: usize,
        task: &'static str,
    ) -> Imap<'a, R> {
        let mut imap = Imap {
            feed,
            collector: Collector::new(0, !ordered),
            ordered,
            submitted: 0,
            yielded: 0,
            window,
            exhausted: false,
            task,
            result: PhantomData,
        };
        imap.top_up();
        imap
    }

    fn top_up(&mut self) {
        while !self.exhausted && self.submitted - self.yielded < self.window {
            match self.feed.feed(self.submitted, &self.collector) {
                Fed::Took(n) => self.submitted += n,
                Fed::Exhausted(n) => {
                    self.submitted += n;
                    self.exhausted = true;
                }
            }
        }
    }
}

impl<R: DeserializeOwned> Iterator for Imap<'_, R> {
    type Item = Result<R, Error>;

    fn next(&mut self) -> Option<Result<R, Error>> {
        self.top_up();
        if self.yielded == self.submitted {
            return None;
        }
        let outcome = if self.ordered {
            self.collector.take(self.yielded)
        } else {
            self.collector.take_arrived().1
        };
        self.yielded += 1;
        Some(decode(&outcome, self.task))
    }
}
