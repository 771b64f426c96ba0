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
            .field(
                "ready",
                &(self.collector.check_process("result").is_ok() && self.collector.filled() == 1),
            )
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
        if self.collector.check_process("result").is_ok() {
            self.collector.wait_filled(1, None);
        }
    }

    /// Waits until the result is there or `timeout` passes; returns whether it is there.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.collector.check_process("result").is_ok()
            && self
                .collector
                .wait_filled(1, Instant::now().checked_add(timeout))
    }

    /// Whether the result is there.
    pub fn ready(&self) -> bool {
        self.collector.check_process("result").is_ok() && self.collector.filled() == 1
    }

    /// Whether the task succeeded: `None` while it runs.
    pub fn successful(&self) -> Option<bool> {
        self.ready().then(|| self.collector.all_ok())
    }
}

/// The pending results of [`Pool::map_async`](crate::Pool::map_async) and
/// [`Pool::starmap_async`](crate::Pool::starmap_async), in input order.
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

    /// Waits for every call and returns the results in input order.
    ///
    /// # Errors
    ///
    /// The failure of the first call, in input order, that failed.
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
        if self.collector.check_process("result").is_ok() {
            self.collector.wait_filled(self.len, None);
        }
    }

    /// Waits until every result is there or `timeout` passes; returns whether they are.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.collector.check_process("result").is_ok()
            && self
                .collector
                .wait_filled(self.len, Instant::now().checked_add(timeout))
    }

    /// Whether every result is there.
    pub fn ready(&self) -> bool {
        self.collector.check_process("result").is_ok() && self.collector.filled() == self.len
    }

    /// Whether every call succeeded: `None` while some still run.
    pub fn successful(&self) -> Option<bool> {
        self.ready().then(|| self.collector.all_ok())
    }
}

/// An [`AsyncResult`] or a [`MapResult`] being awaited: ready once every result is in, and
/// then the same as their `get`. Dropping it, as dropping the handle, cancels nothing.
#[must_use = "futures do nothing unless awaited"]
pub struct Awaited<H> {
    handle: H,
}

impl<H> fmt::Debug for Awaited<H>
where
    H: fmt::Debug,
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
        Awaited { handle: self }
    }
}

impl<R: DeserializeOwned> Future for Awaited<AsyncResult<R>> {
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let handle = &self.handle;
        if let Err(error) = handle.collector.check_process("result") {
            return Poll::Ready(Err(error));
        }
        match handle.collector.poll_filled(1, cx) {
            Poll::Ready(()) => Poll::Ready(handle.get()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<R: DeserializeOwned> IntoFuture for MapResult<R> {
    type Output = Result<Vec<R>, Error>;
    type IntoFuture = Awaited<MapResult<R>>;

    /// Awaits every result without blocking the thread.
    fn into_future(self) -> Awaited<MapResult<R>> {
        Awaited { handle: self }
    }
}

impl<R: DeserializeOwned> Future for Awaited<MapResult<R>> {
    type Output = Result<Vec<R>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let handle = &self.handle;
        if let Err(error) = handle.collector.check_process("result") {
            return Poll::Ready(Err(error));
        }
        match handle.collector.poll_filled(handle.len, cx) {
            Poll::Ready(()) => Poll::Ready(handle.get()),
            Poll::Pending => Poll::Pending,
        }
    }
}
