//! [`AsyncResult`] and [`MapResult`]: handles to results still to come.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::Error;

use super::*;

/// The pending result of [`Pool::apply_async`](crate::Pool::apply_async).
///
/// Waiting with a timeout only stops waiting: the task goes on, and a later
/// [`get`](AsyncResult::get) still returns its result. Dropping the handle does not cancel
/// the task either; its result is discarded when it arrives.
pub struct AsyncResult<R> {
    pub(super) collector: Arc<Collector>,
    pub(super) task: &'static str,
    pub(super) result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("task", &self.task)
            .field("ready", &self.collector.is_filled(1))
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
        self.collector.check_process("result")?;
        self.wait();
        let mut result = None;
        self.collector
            .visit_all(|_, item| result = Some(decode(item, self.task)));
        result.expect("one result")
    }

    /// Like [`get`](AsyncResult::get), but gives up waiting after `timeout`.
    ///
    /// # Errors
    ///
    /// Those of `get`, and [`ErrorKind::WaitTimeout`](crate::ErrorKind::WaitTimeout) when the timeout passed first; then the
    /// task goes on.
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, Error> {
        self.collector.check_process("result")?;
        if !self.wait_timeout(timeout) {
            return Err(Error::wait_timeout(self.task, timeout));
        }
        self.get()
    }

    /// Waits until the result is there. In a child forked since the pool was built, returns
    /// at once: the result will never come there.
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
        self.collector.is_filled(1)
    }

    /// Cancels the call if its result is not in yet: queued, it is removed; running, its
    /// worker is killed and replaced. Its result is then
    /// [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled). A result already in stays. In a forked child it does
    /// nothing.
    pub fn cancel(&self) {
        self.collector.cancel();
    }

    /// Whether the task succeeded: `None` while it runs.
    pub fn successful(&self) -> Option<bool> {
        self.ready().then(|| self.collector.all_ok())
    }
}

impl<R: DeserializeOwned + 'static> AsyncResult<R> {
    /// Runs `callback` with the result once it is in (at once if it is), on the pool's
    /// callback thread: never on the caller's thread, one callback at a time, in the order
    /// the results came. It is Python's `callback` and `error_callback` in one: it gets
    /// `Ok` or the call's error. A callback that panics is counted in
    /// [`Stats::callback_panics`](crate::Stats::callback_panics) and the next one runs.
    /// A handle takes one callback; a second replaces the first if that has not run. In a
    /// forked child it does nothing.
    pub fn on_ready(&self, callback: impl FnOnce(Result<R, Error>) + Send + 'static) {
        let handle = AsyncResult::<R>::new(Arc::clone(&self.collector), self.task);
        self.collector
            .when_filled(1, Box::new(move || callback(handle.get())));
    }
}

/// The pending results of [`Pool::map_async`](crate::Pool::map_async) and
/// [`Pool::starmap_async`](crate::Pool::starmap_async), in input order.
///
/// The first call that fails ends the map: every call not finished yet is cancelled, as
/// [`cancel`](MapResult::cancel) does, and once they have ended the map is ready with that
/// failure (see [`Pool::map`](crate::Pool::map) for which failure, when several calls fail).
///
/// Waiting with a timeout only stops waiting; dropping the handle cancels nothing.
pub struct MapResult<R> {
    pub(super) collector: Arc<Collector>,
    pub(super) len: usize,
    pub(super) task: &'static str,
    pub(super) result: PhantomData<fn() -> R>,
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

    /// Waits for every call and returns the results in input order; after a failure, only
    /// until the calls it cancelled have ended.
    ///
    /// # Errors
    ///
    /// The failure of the first call, in input order, among those that had failed when the
    /// map ended (cancelled calls come after any other failure: see
    /// [`Pool::map`](crate::Pool::map)).
    pub fn get(&self) -> Result<Vec<R>, Error> {
        self.collector.check_process("result")?;
        self.wait();
        let mut assembly = Assembly::new(self.len, self.task);
        self.collector.visit_batches(|batch| assembly.add(batch));
        assembly.finish()
    }

    /// Like [`get`](MapResult::get), but gives up waiting after `timeout`.
    ///
    /// # Errors
    ///
    /// Those of `get`, and [`ErrorKind::WaitTimeout`](crate::ErrorKind::WaitTimeout) when the timeout passed first.
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>, Error> {
        self.collector.check_process("result")?;
        if !self.wait_timeout(timeout) {
            return Err(Error::wait_timeout(self.task, timeout));
        }
        self.get()
    }

    /// Waits until every result is there. In a child forked since the pool was built,
    /// returns at once: the results will never come there.
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
        self.collector.is_filled(self.len)
    }

    /// Cancels every call whose result is not in yet: queued ones are removed, running ones
    /// have their workers killed and replaced, and they end as
    /// [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled); `get` then fails with the
    /// first failure in input order, a call that failed by itself before a cancelled one.
    /// In a forked child it does nothing.
    pub fn cancel(&self) {
        self.collector.cancel();
    }

    /// Whether every call succeeded: `None` while some still run.
    pub fn successful(&self) -> Option<bool> {
        self.ready().then(|| self.collector.all_ok())
    }
}

impl<R: DeserializeOwned + 'static> MapResult<R> {
    /// Runs `callback` with the results once every call is in, as
    /// [`AsyncResult::on_ready`] does.
    pub fn on_ready(&self, callback: impl FnOnce(Result<Vec<R>, Error>) + Send + 'static) {
        let handle = MapResult::<R>::new(Arc::clone(&self.collector), self.len, self.task);
        self.collector
            .when_filled(self.len, Box::new(move || callback(handle.get())));
    }
}

/// An [`AsyncResult`] or a [`MapResult`] being awaited: ready once every result is in, and
/// then the same as their `get`.
///
/// Dropping it before it is ready (as `tokio::select!` drops the branches that lose)
/// cancels its calls, as [`AsyncResult::cancel`] does: an abandoned future leaves no task
/// running. (Dropping an `AsyncResult` or a `MapResult` itself cancels nothing: a handle
/// may be dropped on purpose, with its result wanted by nobody.)
#[must_use = "futures do nothing unless awaited"]
pub struct Awaited<H: Cancel> {
    handle: H,
    done: bool,
}

/// What an [`Awaited`] cancels when it is dropped before it is ready.
pub trait Cancel {
    /// Cancels the calls whose results are not in yet.
    fn cancel(&self);
}

impl<R: DeserializeOwned> Cancel for AsyncResult<R> {
    fn cancel(&self) {
        AsyncResult::cancel(self);
    }
}

impl<R: DeserializeOwned> Cancel for MapResult<R> {
    fn cancel(&self) {
        MapResult::cancel(self);
    }
}

impl<H: Cancel> Drop for Awaited<H> {
    fn drop(&mut self) {
        if !self.done {
            self.handle.cancel();
        }
    }
}

impl<H> fmt::Debug for Awaited<H>
where
    H: fmt::Debug + Cancel,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Awaited")
            .field("handle", &self.handle)
            .finish()
    }
}

impl<R: DeserializeOwned> IntoFuture for AsyncResult<R> {
    type Output = Result<R, Error>;
    type IntoFuture = Awaited<AsyncResult<R>>;

    /// Awaits the result without blocking the thread: a task that awaits it is woken when
    /// the result arrives.
    fn into_future(self) -> Awaited<AsyncResult<R>> {
        Awaited {
            handle: self,
            done: false,
        }
    }
}

impl<R: DeserializeOwned> Future for Awaited<AsyncResult<R>> {
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let handle = &this.handle;
        if let Err(error) = handle.collector.check_process("result") {
            this.done = true;
            return Poll::Ready(Err(error));
        }
        match handle.collector.poll_filled(1, cx) {
            Poll::Ready(()) => {
                this.done = true;
                Poll::Ready(this.handle.get())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<R: DeserializeOwned> IntoFuture for MapResult<R> {
    type Output = Result<Vec<R>, Error>;
    type IntoFuture = Awaited<MapResult<R>>;

    /// Awaits every result without blocking the thread.
    fn into_future(self) -> Awaited<MapResult<R>> {
        Awaited {
            handle: self,
            done: false,
        }
    }
}

impl<R: DeserializeOwned> Future for Awaited<MapResult<R>> {
    type Output = Result<Vec<R>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let handle = &this.handle;
        if let Err(error) = handle.collector.check_process("result") {
            this.done = true;
            return Poll::Ready(Err(error));
        }
        match handle.collector.poll_filled(handle.len, cx) {
            Poll::Ready(()) => {
                this.done = true;
                Poll::Ready(this.handle.get())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
