//! The [`Imap`] iterator: results in order or as they arrive, with a bounded number of
//! calls in flight.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::trace::AsyncSpan;

use super::*;

/// What feeds an [`Imap`]: submits the next chunk of calls, starting at the index it is given,
/// and says how many it took from the input.
pub(crate) trait Feed {
    fn feed(&mut self, start: usize, collector: &Arc<Collector>) -> Fed;

    /// How many calls the input has left to give, as the input's own `size_hint` says.
    fn size_hint(&self) -> (usize, Option<usize>);
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
    pub(super) feed: Box<dyn Feed + 'a>,
    pub(super) collector: Arc<Collector>,
    pub(super) ordered: bool,
    /// Calls submitted so far (indices `0..submitted`).
    pub(super) submitted: usize,
    /// Calls handed to the caller so far.
    pub(super) yielded: usize,
    /// How many calls may be submitted and not yet handed to the caller.
    pub(super) window: usize,
    pub(super) exhausted: bool,
    pub(super) task: &'static str,
    pub(super) result: PhantomData<fn() -> R>,
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
    /// The iterator over what `feed` submits; `span`, with the `tracing` feature, follows
    /// its calls until the last result is in.
    pub(crate) fn new(
        feed: Box<dyn Feed + 'a>,
        ordered: bool,
        window: usize,
        task: &'static str,
        span: Option<AsyncSpan>,
    ) -> Imap<'a, R> {
        let collector = Collector::new();
        // Before the first call is submitted, so that the span sees every result.
        collector.trace(span, None);
        let mut imap = Imap {
            feed,
            collector,
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

    /// The results with a progress bar on standard error, its length the number of calls
    /// whenever the input's length is known (from [`Iterator::size_hint`]), a spinner with a
    /// count otherwise; with the `indicatif` feature. A map with a bar is one line:
    ///
    /// ```no_run
    /// # #[procpool::task]
    /// # fn square(x: u64) -> u64 { x * x }
    /// # let pool = procpool::Pool::new()?;
    /// let squares: Vec<u64> = pool.imap(square, 1..=1000)?.progress().collect::<Result<_, _>>()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "indicatif")]
    pub fn progress(self) -> indicatif::ProgressBarIter<Self> {
        let bar = match self.size_hint() {
            (low, Some(high)) if low == high => indicatif::ProgressBar::new(high as u64),
            _ => indicatif::ProgressBar::new_spinner(),
        };
        indicatif::ProgressIterator::progress_with(self, bar)
    }

    pub(crate) fn collector(&self) -> &Collector {
        &self.collector
    }

    /// Cancels the calls in flight and submits no more: a queued call is removed, a running
    /// one has its worker killed and replaced. The iterator then yields what was delivered
    /// before the cancel, then [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled) for each
    /// call in flight, then ends. In a forked child it does nothing.
    pub fn cancel(&mut self) {
        if self.collector.check_process("iterator").is_err() {
            return;
        }
        self.exhausted = true;
        self.collector.cancel();
        self.collector.span_ends_at(self.submitted);
    }

    /// What comes before taking the next result: `None` at the end, an error in a forked
    /// child (once, then the end), else the input topped up.
    fn before_take(&mut self) -> Option<Result<(), Error>> {
        if let Err(error) = self.collector.check_process("iterator") {
            if self.exhausted && self.yielded == self.submitted {
                return None;
            }
            self.exhausted = true;
            self.yielded = self.submitted;
            return Some(Err(error));
        }
        self.top_up();
        if self.yielded == self.submitted {
            return None;
        }
        Some(Ok(()))
    }

    pub(super) fn top_up(&mut self) {
        while !self.exhausted && self.submitted - self.yielded < self.window {
            match self.feed.feed(self.submitted, &self.collector) {
                Fed::Took(n) => self.submitted += n,
                Fed::Exhausted(n) => {
                    self.submitted += n;
                    self.exhausted = true;
                    self.collector.span_ends_at(self.submitted);
                }
            }
        }
    }
}

impl<R: DeserializeOwned> Iterator for Imap<'_, R> {
    type Item = Result<R, Error>;

    fn next(&mut self) -> Option<Result<R, Error>> {
        let task = self.task;
        match self.before_take()? {
            Err(error) => Some(Err(error)),
            Ok(()) => {
                let decoded = if self.ordered {
                    self.collector.take(self.yielded, |item| decode(item, task))
                } else {
                    self.collector.take_arrived(|item| decode(item, task))
                };
                self.yielded += 1;
                Some(decoded)
            }
        }
    }

    /// Exact when the input's length is known: the calls in flight and those still to come.
    fn size_hint(&self) -> (usize, Option<usize>) {
        let in_flight = self.submitted - self.yielded;
        if self.exhausted {
            return (in_flight, Some(in_flight));
        }
        let (low, high) = self.feed.size_hint();
        (
            in_flight.saturating_add(low),
            high.and_then(|high| high.checked_add(in_flight)),
        )
    }
}

/// Dropping the iterator cancels nothing: the calls in flight run on, and the call's span
/// (with the `tracing` feature) ends with the last of them.
impl<R> Drop for Imap<'_, R> {
    fn drop(&mut self) {
        self.collector.span_ends_at(self.submitted);
    }
}

/// The results as a [`futures_core::Stream`], for async code: a task that polls it is woken
/// when the next result arrives, with no async runtime in procpool. Pulling the input and
/// submitting its calls happen in `poll_next`, on the polling task's thread, as they happen
/// in `next`.
impl<R: DeserializeOwned> futures_core::Stream for Imap<'_, R> {
    type Item = Result<R, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let task = this.task;
        match this.before_take() {
            None => return Poll::Ready(None),
            Some(Err(error)) => return Poll::Ready(Some(Err(error))),
            Some(Ok(())) => {}
        }
        let polled = if this.ordered {
            this.collector
                .poll_take(this.yielded, cx, |item| decode(item, task))
        } else {
            this.collector
                .poll_take_arrived(cx, |item| decode(item, task))
        };
        match polled {
            Poll::Ready(decoded) => {
                this.yielded += 1;
                Poll::Ready(Some(decoded))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        Iterator::size_hint(self)
    }
}
