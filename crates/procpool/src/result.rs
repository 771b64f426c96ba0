//! Handles to results: [`AsyncResult`], [`MapResult`], and the [`Imap`] iterator, over one
//! shared `Collector` that results are delivered to as they arrive, one batch per job.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, ErrorKind, WorkerInfo};
use crate::shared;
use crate::wire::{PackedItems, ResultItems, ResultsAt};

/// The outcomes of some calls of one submission, as one job delivered them: call `i` of the
/// batch is the submission's call `start + i * stride`.
#[derive(Debug)]
pub(crate) struct Batch {
    start: usize,
    stride: usize,
    count: usize,
    outcomes: Outcomes,
    /// For [`Imap`], which takes calls one by one and in order: how many have been taken,
    /// and where the next one's result starts in the body (`None` before the first).
    taken: usize,
    next: Option<ResultsAt>,
}

#[derive(Debug)]
enum Outcomes {
    /// The body of a RESULTS frame that `worker` sent, checked when it arrived; its results
    /// are decoded only when they are asked for.
    Results {
        body: Vec<u8>,
        /// The descriptors that came with the frame, which `SharedBytes` results name; each
        /// decoding maps a duplicate, so a result can be decoded more than once.
        fds: Vec<OwnedFd>,
        task: &'static str,
        worker: WorkerInfo,
    },
    /// Every call ended with this error.
    Failed(Error),
}

impl Batch {
    /// The calls whose results `body` holds; it must have passed `FromWorker::decode` as a
    /// RESULTS frame of `count` items.
    pub(crate) fn results(
        (start, stride, count): (usize, usize, usize),
        body: Vec<u8>,
        fds: Vec<OwnedFd>,
        task: &'static str,
        worker: WorkerInfo,
    ) -> Batch {
        Batch::new(
            (start, stride, count),
            Outcomes::Results {
                body,
                fds,
                task,
                worker,
            },
        )
    }

    /// Calls that all ended with `error`.
    pub(crate) fn failed((start, stride, count): (usize, usize, usize), error: Error) -> Batch {
        Batch::new((start, stride, count), Outcomes::Failed(error))
    }

    fn new((start, stride, count): (usize, usize, usize), outcomes: Outcomes) -> Batch {
        Batch {
            start,
            stride,
            count,
            outcomes,
            taken: 0,
            next: None,
        }
    }

    fn index(&self, i: usize) -> usize {
        self.start + i * self.stride
    }

    /// Hands each call's index and encoded result (or error) to `visit`, in order.
    fn visit(&self, mut visit: impl FnMut(usize, Result<&[u8], Error>)) {
        match &self.outcomes {
            Outcomes::Results {
                body,
                fds,
                task,
                worker,
            } => shared::decoding(fds, 0, || {
                for (i, item) in ResultItems::new(body).enumerate() {
                    let item = item.map_err(|failure| Error::from_failure(failure, task, *worker));
                    visit(self.index(i), item);
                }
            }),
            Outcomes::Failed(error) => {
                for i in 0..self.count {
                    visit(self.index(i), Err(error.clone()));
                }
            }
        }
    }

    /// Every call's result decoded, in order, if every call succeeded and decodes: the
    /// common case, in one tight loop; `None` otherwise, for [`Batch::visit`] to say which
    /// failed and how.
    fn decode_all<R: DeserializeOwned>(&self) -> Option<Vec<R>> {
        let Outcomes::Results { body, fds, .. } = &self.outcomes else {
            return None;
        };
        shared::decoding(fds, 0, || decode_items(ResultItems::new(body)))
    }

    /// The results as plain bytes, if every call succeeded, every result takes the same
    /// size and none holds a descriptor (see [`ResultItems::packed`]).
    fn packed(&self) -> Option<PackedItems<'_>> {
        match &self.outcomes {
            Outcomes::Results { body, fds, .. } if fds.is_empty() => {
                ResultItems::new(body).packed()
            }
            _ => None,
        }
    }

    /// How many bytes the batch holds: its frame's body, if it has one.
    fn body_len(&self) -> usize {
        match &self.outcomes {
            Outcomes::Results { body, .. } => body.len(),
            Outcomes::Failed(_) => 0,
        }
    }

    /// Whether every call succeeded.
    fn all_ok(&self) -> bool {
        match &self.outcomes {
            Outcomes::Results { body, .. } => ResultItems::new(body).all(|item| item.is_ok()),
            Outcomes::Failed(_) => self.count == 0,
        }
    }

    /// Takes the next call not yet taken: its index, and its result decoded by `decode`.
    fn take_next<T>(&mut self, decode: impl FnOnce(Result<&[u8], Error>) -> T) -> (usize, T) {
        let index = self.index(self.taken);
        self.taken += 1;
        match &self.outcomes {
            Outcomes::Results {
                body,
                fds,
                task,
                worker,
            } => {
                let mut items = match self.next {
                    Some(at) => ResultItems::at(body, at),
                    None => ResultItems::new(body),
                };
                let item = items.next().expect("the batch has a call left");
                self.next = Some(items.position());
                let item = item.map_err(|failure| Error::from_failure(failure, task, *worker));
                (index, shared::decoding(fds, 0, || decode(item)))
            }
            Outcomes::Failed(error) => (index, decode(Err(error.clone()))),
        }
    }

    fn exhausted(&self) -> bool {
        self.taken == self.count
    }
}

/// Every item of `items` decoded, if every call succeeded and decodes.
fn decode_items<R: DeserializeOwned>(items: ResultItems<'_>) -> Option<Vec<R>> {
    let mut values = Vec::with_capacity(items.len());
    match items.packed() {
        Some(packed) => {
            for bytes in packed {
                values.push(codec::decode(bytes).ok()?);
            }
        }
        None => {
            for item in items {
                values.push(codec::decode(item.ok()?).ok()?);
            }
        }
    }
    Some(values)
}

/// The most bytes of results that [`Assembly::keep`] holds undecoded. Results of one size
/// can be large (byte vectors of one length, say); a body decoded as it comes is freed at
/// once, so a map of large results decodes them as they come, as before.
const KEEP_MAX: usize = 16 << 20;

/// The results of a map put in input order, from batches decoded one at a time, as they
/// arrive or at the end.
pub(crate) struct Assembly<R> {
    len: usize,
    task: &'static str,
    /// The decoded results of each batch, while no call has failed.
    parts: Vec<Part<R>>,
    /// Batches kept undecoded by [`Assembly::keep`]: results of one size each, which cost
    /// little to decode, and cost less decoded at the end straight into input order than
    /// decoded now and moved there later. Their bodies take `kept_bytes`, at most
    /// [`KEEP_MAX`].
    kept: Vec<Batch>,
    kept_bytes: usize,
    /// The failed call with the lowest index so far, and its error.
    first_error: Option<(usize, Error)>,
}

struct Part<R> {
    start: usize,
    stride: usize,
    values: Vec<R>,
}

impl<R: DeserializeOwned> Assembly<R> {
    pub(crate) fn new(len: usize, task: &'static str) -> Assembly<R> {
        Assembly {
            len,
            task,
            parts: Vec::new(),
            kept: Vec::new(),
            kept_bytes: 0,
            first_error: None,
        }
    }

    /// Takes one batch, as [`Assembly::add`] does; one of packed results is kept to be
    /// decoded by `finish`, while the kept bodies stay within [`KEEP_MAX`].
    pub(crate) fn keep(&mut self, batch: Batch) {
        let bytes = batch.body_len();
        if self.first_error.is_none()
            && self.kept_bytes + bytes <= KEEP_MAX
            && batch.packed().is_some()
        {
            self.kept_bytes += bytes;
            self.kept.push(batch);
        } else {
            self.add(&batch);
        }
    }

    /// Decodes the results of one batch.
    pub(crate) fn add(&mut self, batch: &Batch) {
        if self.first_error.is_none()
            && let Some(values) = batch.decode_all()
        {
            self.parts.push(Part {
                start: batch.start,
                stride: batch.stride,
                values,
            });
            return;
        }
        let task = self.task;
        let first_error = &mut self.first_error;
        let mut values = Vec::with_capacity(batch.count);
        batch.visit(|index, item| match decode(item, task) {
            Ok(value) => values.push(value),
            Err(error) => {
                if first_error.as_ref().is_none_or(|(at, _)| index < *at) {
                    *first_error = Some((index, error));
                }
            }
        });
        if self.first_error.is_some() {
            self.parts.clear();
            return;
        }
        self.parts.push(Part {
            start: batch.start,
            stride: batch.stride,
            values,
        });
    }

    /// Every call's result in input order, or the error of the first call that failed;
    /// once every batch has been added.
    pub(crate) fn finish(mut self) -> Result<Vec<R>, Error> {
        if self.first_error.is_none()
            && self.parts.is_empty()
            && let Some(out) = in_order(&mut self.kept, self.len)
        {
            return Ok(out);
        }
        for batch in std::mem::take(&mut self.kept) {
            self.add(&batch);
        }
        if let Some((_, error)) = self.first_error {
            return Err(error);
        }
        let len = self.len;
        let parts = &mut self.parts;
        parts.sort_unstable_by_key(|part| part.start);
        let mut out = Vec::with_capacity(len);
        match layout(
            parts.iter().map(|p| (p.start, p.stride, p.values.len())),
            len,
        ) {
            Layout::Tiled => {
                for part in parts.drain(..) {
                    out.extend(part.values);
                }
                return Ok(out);
            }
            Layout::Strided { spans } => {
                let mut runs: Vec<_> = parts
                    .drain(..)
                    .map(|part| part.values.into_iter())
                    .collect();
                strided(&spans, len, &mut runs, |value| {
                    out.push(value);
                    Some(())
                })
                .expect("`layout` counted the results");
                return Ok(out);
            }
            Layout::Other => {}
        }
        // Each result to its index.
        let mut placed: Vec<Option<R>> = Vec::with_capacity(len);
        placed.resize_with(len, || None);
        for part in parts.drain(..) {
            for (i, value) in part.values.into_iter().enumerate() {
                placed[part.start + i * part.stride] = Some(value);
            }
        }
        Ok(placed
            .into_iter()
            .map(|value| value.expect("every call has a result"))
            .collect())
    }
}

/// Every result of `batches` (all packed) decoded in input order, when together they are
/// the whole input in chunks of neighbouring items or in the interleaved chunks of an
/// automatic chunk size; `None` for any other layout, or a result that does not decode.
fn in_order<R: DeserializeOwned>(batches: &mut [Batch], len: usize) -> Option<Vec<R>> {
    batches.sort_unstable_by_key(|batch| batch.start);
    let mut runs: Vec<PackedItems<'_>> = batches.iter().filter_map(Batch::packed).collect();
    if runs.len() != batches.len() {
        return None;
    }
    let mut out = Vec::with_capacity(len);
    match layout(batches.iter().map(|b| (b.start, b.stride, b.count)), len) {
        Layout::Tiled => {
            for run in runs {
                for bytes in run {
                    out.push(codec::decode(bytes).ok()?);
                }
            }
        }
        Layout::Strided { spans } => {
            strided(&spans, len, &mut runs, |bytes| {
                out.push(codec::decode(bytes).ok()?);
                Some(())
            })?;
        }
        Layout::Other => return None,
    }
    Some(out)
}

/// How the chunks of a map, sorted by their first index, cover its `len` items.
enum Layout {
    /// Neighbouring runs, one after another (chunks of a given size).
    Tiled,
    /// Interleaved chunks, as an automatic chunk size cuts them (see `pool::auto_chunks`):
    /// each holds every `stride`-th item from a `start` below its stride, and every stride
    /// divides the largest, the period. Each period of items, in input order, is one item
    /// from each chunk of `spans[0]` in turn, then one from each of `spans[1]`, and so on
    /// (see [`strided`]).
    Strided { spans: Vec<Range<usize>> },
    /// Anything else (chunks split after a worker died).
    Other,
}

/// The layout of `chunks`, each its first index, stride and count, sorted by first index.
fn layout(chunks: impl Iterator<Item = (usize, usize, usize)> + Clone, len: usize) -> Layout {
    let mut next = 0;
    let tiled = chunks.clone().all(|(start, stride, count)| {
        let fits = start == next && (stride == 1 || count <= 1);
        next += count;
        fits
    });
    if tiled && next == len {
        return Layout::Tiled;
    }
    match owners(chunks, len) {
        Some(owner) => Layout::Strided {
            spans: spans(&owner),
        },
        None => Layout::Other,
    }
}

/// `owner` cut where it does not go on to the next chunk: for equal interleaved chunks,
/// one span of them all.
fn spans(owner: &[usize]) -> Vec<Range<usize>> {
    let mut spans: Vec<Range<usize>> = Vec::new();
    for &chunk in owner {
        match spans.last_mut() {
            Some(span) if span.end == chunk => span.end += 1,
            _ => spans.push(chunk..chunk + 1),
        }
    }
    spans
}

/// Takes `len` items in input order from `runs`, the chunks of a [`Layout::Strided`] with
/// `spans`, and gives each to `put`; stops with `None` when a run ends early or `put`
/// returns `None`.
///
/// A loop over the chunks of each span, not a lookup of each item's chunk: the lookup took
/// a quarter longer to put 100,000 results in order.
fn strided<I: Iterator>(
    spans: &[Range<usize>],
    len: usize,
    runs: &mut [I],
    mut put: impl FnMut(I::Item) -> Option<()>,
) -> Option<()> {
    if spans.is_empty() {
        return (len == 0).then_some(());
    }
    let mut left = len;
    while left > 0 {
        for span in spans {
            let n = span.len().min(left);
            for run in &mut runs[span.start..span.start + n] {
                put(run.next()?)?;
            }
            left -= n;
            if left == 0 {
                break;
            }
        }
    }
    Some(())
}

/// For a [`Layout::Strided`], which chunk holds each item below the period; `None` if the
/// chunks are not strided that way or do not hold each item exactly once.
fn owners(
    chunks: impl Iterator<Item = (usize, usize, usize)> + Clone,
    len: usize,
) -> Option<Vec<usize>> {
    let period = chunks.clone().map(|(_, stride, _)| stride).max()?;
    let mut owner = vec![usize::MAX; period.min(len)];
    for (chunk, (start, stride, count)) in chunks.enumerate() {
        let fits = stride > 0
            && period % stride == 0
            && start < stride
            && start < len
            && count == (len - start).div_ceil(stride);
        if !fits {
            return None;
        }
        for slot in owner.iter_mut().skip(start).step_by(stride) {
            if *slot != usize::MAX {
                return None;
            }
            *slot = chunk;
        }
    }
    owner
        .iter()
        .all(|&chunk| chunk != usize::MAX)
        .then_some(owner)
}

/// Decodes one call's result.
fn decode<R: DeserializeOwned>(item: Result<&[u8], Error>, task: &str) -> Result<R, Error> {
    codec::decode(item?).map_err(|e| {
        Error::new(ErrorKind::Codec, format!("cannot decode the result: {e}")).task(task)
    })
}

/// Where the results of one submission land, one batch per job, in any order.
#[derive(Debug)]
pub(crate) struct Collector {
    state: Mutex<Batches>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Batches {
    /// In the order they arrived; an [`Imap`] drops each once it has taken all of its calls.
    batches: VecDeque<Batch>,
    /// Calls delivered so far.
    filled: usize,
    /// Threads waiting on `changed`: a delivery wakes them only if there are some, since a
    /// blocking call that ran its jobs itself finds its results there without waiting.
    waiters: usize,
}

impl Collector {
    pub(crate) fn new() -> Arc<Collector> {
        Arc::new(Collector {
            state: Mutex::new(Batches::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Batches> {
        // Nothing panics while holding this lock, but a poisoned one still holds valid data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcomes of one job's calls.
    pub(crate) fn deliver(&self, batch: Batch) {
        let mut state = self.lock();
        state.filled += batch.count;
        state.batches.push_back(batch);
        let waiters = state.waiters;
        drop(state);
        if waiters > 0 {
            self.changed.notify_all();
        }
    }

    fn wait_until<T>(
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

    fn filled(&self) -> usize {
        self.lock().filled
    }

    /// Takes the earliest-arrived batch, if one is in.
    pub(crate) fn take_batch(&self) -> Option<Batch> {
        self.lock().batches.pop_front()
    }

    /// Waits until `count` results have arrived; false if the deadline passed first.
    pub(crate) fn wait_filled(&self, count: usize, deadline: Option<Instant>) -> bool {
        self.wait_until(deadline, |s| (s.filled >= count).then_some(()))
            .is_some()
    }

    /// Hands every delivered call's index and result to `visit`, batch by batch.
    fn visit_all(&self, mut visit: impl FnMut(usize, Result<&[u8], Error>)) {
        self.visit_batches(|batch| batch.visit(&mut visit));
    }

    /// Hands every delivered batch to `visit`.
    fn visit_batches(&self, visit: impl FnMut(&Batch)) {
        self.lock().batches.iter().for_each(visit);
    }

    fn all_ok(&self) -> bool {
        self.lock().batches.iter().all(Batch::all_ok)
    }

    /// Takes the call at `index`, waiting for it; calls are taken in index order, and their
    /// batches are of neighbouring calls.
    fn take<T>(&self, index: usize, decode: impl FnOnce(Result<&[u8], Error>) -> T) -> T {
        let mut decode = Some(decode);
        self.wait_until(None, |s| {
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
        })
        .expect("no deadline")
    }

    /// Takes the earliest-arrived call not yet taken, waiting for one.
    fn take_arrived<T>(&self, decode: impl FnOnce(Result<&[u8], Error>) -> T) -> T {
        let mut decode = Some(decode);
        self.wait_until(None, |s| {
            let batch = s.batches.front_mut()?;
            let (_, value) = batch.take_next(decode.take().expect("taken once"));
            if batch.exhausted() {
                s.batches.pop_front();
            }
            Some(value)
        })
        .expect("no deadline")
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
        let mut result = None;
        self.collector
            .visit_all(|_, item| result = Some(decode(item, self.task)));
        result.expect("one result")
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
        self.ready().then(|| self.collector.all_ok())
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
        let mut assembly = Assembly::new(self.len, self.task);
        self.collector.visit_batches(|batch| assembly.add(batch));
        assembly.finish()
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
        self.ready().then(|| self.collector.all_ok())
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
            collector: Collector::new(),
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
        let task = self.task;
        let decoded = if self.ordered {
            self.collector.take(self.yielded, |item| decode(item, task))
        } else {
            self.collector.take_arrived(|item| decode(item, task))
        };
        self.yielded += 1;
        Some(decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ResultsFrame;

    /// A batch of the calls `start, start + stride, …` that returned `values`.
    fn batch<T: serde::Serialize>(start: usize, stride: usize, values: &[T]) -> Batch {
        let mut frame = ResultsFrame::new(0, values.len() as u32);
        for value in values {
            frame.push(|buf, _| {
                codec::encode_into(buf, value).unwrap();
                Ok(())
            });
        }
        let body = frame.finish().0[4..].to_vec();
        let worker = WorkerInfo { index: 0, pid: 1 };
        Batch::results((start, stride, values.len()), body, Vec::new(), "t", worker)
    }

    /// The batches that `batches` makes, assembled both ways: lent to [`Assembly::add`], as
    /// `MapResult::get` does, and given to [`Assembly::keep`], as `map` does. Both must
    /// agree.
    fn assemble_as<R>(len: usize, batches: impl Fn() -> Vec<Batch>) -> Result<Vec<R>, Error>
    where
        R: DeserializeOwned + PartialEq + fmt::Debug,
    {
        let mut lent = Assembly::<R>::new(len, "t");
        for batch in batches() {
            lent.add(&batch);
        }
        let mut given = Assembly::<R>::new(len, "t");
        for batch in batches() {
            given.keep(batch);
        }
        let (lent, given) = (lent.finish(), given.finish());
        match (&lent, &given) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("the two ways disagree: {lent:?} and {given:?}"),
        }
        given
    }

    fn assemble(len: usize, batches: impl Fn() -> Vec<Batch>) -> Result<Vec<u64>, Error> {
        assemble_as(len, batches)
    }

    #[test]
    fn interleaved_chunks_come_back_in_input_order() {
        let batches = || {
            vec![
                batch(2, 3, &[2u64, 5, 8]),
                batch(0, 3, &[0u64, 3, 6, 9]),
                batch(1, 3, &[1u64, 4, 7]),
            ]
        };
        assert_eq!(assemble(10, batches).unwrap(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn automatic_chunks_come_back_in_input_order_by_the_straight_path() {
        for workers in 1..=5 {
            for len in (0..3000).step_by(37).chain([2048, 4096, 40_000]) {
                let chunks = crate::pool::auto_chunks(len, workers);
                let batches = || {
                    // Results in the order the chunks go out, last first.
                    let mut batches: Vec<Batch> = chunks
                        .iter()
                        .rev()
                        .map(|&(start, stride, count)| {
                            let values: Vec<u64> =
                                (start..len).step_by(stride).map(|i| i as u64).collect();
                            assert_eq!(values.len(), count);
                            batch(start, stride, &values)
                        })
                        .collect();
                    let third = batches.len() / 3;
                    batches.rotate_left(third);
                    batches
                };
                let expected: Vec<u64> = (0..len as u64).collect();
                assert_eq!(
                    in_order::<u64>(&mut batches(), len).as_ref(),
                    Some(&expected)
                );
                assert_eq!(assemble(len, batches).unwrap(), expected);
            }
        }
    }

    #[test]
    fn strided_chunks_must_hold_each_item_once() {
        let owners = |chunks: &[(usize, usize, usize)], len| owners(chunks.iter().copied(), len);
        assert_eq!(
            owners(
                &[
                    (0, 4, 3),
                    (1, 4, 3),
                    (2, 8, 1),
                    (3, 8, 1),
                    (6, 8, 1),
                    (7, 8, 1)
                ],
                10
            ),
            Some(vec![0, 1, 2, 3, 0, 1, 4, 5])
        );
        // Residue 3 of 4 in no chunk; residue 2 of 4 in two.
        assert_eq!(owners(&[(0, 2, 5), (1, 4, 3)], 10), None);
        assert_eq!(owners(&[(0, 2, 5), (1, 2, 5), (2, 4, 2)], 10), None);
        // A count that does not fit, a start past the stride, a stride that does not divide.
        assert_eq!(owners(&[(0, 2, 4), (1, 2, 5)], 10), None);
        assert_eq!(owners(&[(0, 1, 1), (1, 2, 5)], 10), None);
        assert_eq!(owners(&[(0, 2, 5), (1, 3, 3)], 10), None);
        // Fewer items than the period: only the items there are need an owner.
        assert_eq!(owners(&[(0, 8, 1), (1, 8, 1)], 2), Some(vec![0, 1]));
    }

    #[test]
    fn chunks_of_a_given_size_come_back_in_input_order() {
        let batches = || {
            vec![
                batch(8, 1, &[8u64, 9]),
                batch(0, 1, &[0u64, 1, 2, 3]),
                batch(4, 1, &[4u64, 5, 6, 7]),
            ]
        };
        assert_eq!(assemble(10, batches).unwrap(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_chunk_split_into_single_calls_comes_back_in_input_order() {
        let batches = || {
            vec![
                batch(3, 1, &[3u64]),
                batch(0, 2, &[0u64, 2, 4]),
                batch(1, 1, &[1u64]),
            ]
        };
        assert_eq!(assemble(5, batches).unwrap(), (0..5).collect::<Vec<_>>());
    }

    #[test]
    fn the_failure_first_in_input_order_is_the_error() {
        let batches = || {
            vec![
                batch(0, 1, &[0u64, 1]),
                Batch::failed((5, 1, 1), Error::new(ErrorKind::Panicked, "later")),
                Batch::failed((2, 1, 3), Error::new(ErrorKind::Panicked, "first")),
                batch(6, 1, &[6u64]),
            ]
        };
        let error = assemble(7, batches).unwrap_err();
        assert!(error.to_string().contains("first"), "{error}");
    }

    #[test]
    fn packed_batches_are_decoded_straight_into_input_order() {
        let interleaved = || vec![batch(1, 2, &[1u64, 3]), batch(0, 2, &[0u64, 2, 4])];
        assert_eq!(
            in_order::<u64>(&mut interleaved(), 5),
            Some(vec![0, 1, 2, 3, 4])
        );
        let tiled = || vec![batch(3, 1, &[3u64, 4]), batch(0, 1, &[0u64, 1, 2])];
        assert_eq!(in_order::<u64>(&mut tiled(), 5), Some(vec![0, 1, 2, 3, 4]));
        // A chunk split into single calls after its worker died: placed by index instead.
        let split = || {
            vec![
                batch(0, 2, &[0u64, 2, 4]),
                batch(1, 1, &[1u64]),
                batch(3, 1, &[3u64]),
            ]
        };
        assert_eq!(in_order::<u64>(&mut split(), 5), None);
        assert_eq!(assemble(5, split).unwrap(), (0..5).collect::<Vec<_>>());
        let mut assembly = Assembly::<u64>::new(5, "t");
        for batch in interleaved() {
            assembly.keep(batch);
        }
        assert_eq!((assembly.kept.len(), assembly.parts.len()), (2, 0));
    }

    #[test]
    fn large_results_of_one_size_are_decoded_as_they_come() {
        // Two results of 9 MiB: the first is kept, the second would take the kept bytes
        // past `KEEP_MAX` and is decoded at once.
        let big = |x: &str| x.repeat(9 << 20);
        let mut assembly = Assembly::<String>::new(2, "t");
        assembly.keep(batch(0, 1, &[big("a")]));
        assembly.keep(batch(1, 1, &[big("b")]));
        assert_eq!((assembly.kept.len(), assembly.parts.len()), (1, 1));
        assert!(assembly.finish().unwrap() == [big("a"), big("b")]);
    }

    #[test]
    fn results_that_carry_descriptors_are_never_kept() {
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let worker = WorkerInfo { index: 0, pid: 1 };
        let plain = batch(0, 1, &[7u64]);
        let Outcomes::Results { body, .. } = &plain.outcomes else {
            unreachable!("a batch of results");
        };
        let with_fd = Batch::results((0, 1, 1), body.clone(), vec![fd], "t", worker);
        assert!(plain.packed().is_some());
        assert!(with_fd.packed().is_none());
    }

    #[test]
    fn packed_and_sized_batches_come_back_in_input_order() {
        // Results of one size in the first two chunks, of several in the third.
        let batches = || {
            vec![
                batch(2, 3, &["c", "ff", "iii"]),
                batch(0, 3, &["a", "d", "g"]),
                batch(1, 3, &["b", "e", "h"]),
            ]
        };
        let out: Vec<String> = assemble_as(9, batches).unwrap();
        assert_eq!(out, ["a", "b", "c", "d", "e", "ff", "g", "h", "iii"]);
    }

    #[test]
    fn a_packed_result_that_does_not_decode_is_the_error() {
        // Every result is one byte; 2 is no `bool`.
        let batches = || vec![batch(1, 2, &[1u8, 0]), batch(0, 2, &[0u8, 2])];
        let error = assemble_as::<bool>(4, batches).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Codec);
        assert!(
            error.to_string().contains("cannot decode the result"),
            "{error}"
        );
    }
}
