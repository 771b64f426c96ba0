//! Putting a map's batches in input order, decoding results of one size at the end.

use std::ops::Range;

use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, ErrorKind};
use crate::wire::PackedItems;

use super::*;

/// The most bytes of results that [`Assembly::keep`] holds undecoded. Results of one size
/// can be large (byte vectors of one length, say); a body decoded as it comes is freed at
/// once, so a map of large results decodes them as they come.
pub(super) const KEEP_MAX: usize = 16 << 20;

/// The results of a map put in input order, from batches decoded one at a time, as they
/// arrive or at the end.
pub(crate) struct Assembly<R> {
    pub(super) len: usize,
    pub(super) task: &'static str,
    /// The decoded results of each batch, while no call has failed.
    pub(super) parts: Vec<Part<R>>,
    /// Batches kept undecoded by [`Assembly::keep`]: results of one size each, which cost
    /// little to decode, and cost less decoded at the end straight into input order than
    /// decoded now and moved there later. Their bodies take `kept_bytes`, at most
    /// [`KEEP_MAX`].
    pub(super) kept: Vec<Batch>,
    pub(super) kept_bytes: usize,
    /// The failed call with the lowest index so far, and its error; a call cancelled only
    /// if no call failed otherwise (see [`reported_before`]).
    pub(super) first_error: Option<(usize, Error)>,
}

pub(super) struct Part<R> {
    pub(super) start: usize,
    pub(super) stride: usize,
    pub(super) values: Vec<R>,
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
                if first_error
                    .as_ref()
                    .is_none_or(|(at, first)| reported_before((index, &error), (*at, first)))
                {
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
pub(super) fn in_order<R: DeserializeOwned>(batches: &mut [Batch], len: usize) -> Option<Vec<R>> {
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
pub(super) enum Layout {
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
pub(super) fn layout(
    chunks: impl Iterator<Item = (usize, usize, usize)> + Clone,
    len: usize,
) -> Layout {
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
pub(super) fn spans(owner: &[usize]) -> Vec<Range<usize>> {
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
/// A loop over the chunks of each span, which is faster than a lookup of each item's chunk.
pub(super) fn strided<I: Iterator>(
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
pub(super) fn owners(
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

/// Whether the failure of call `a` is the map's error rather than that of call `b`: a call
/// that failed by itself comes before one that was cancelled (a map cancels its other calls
/// at its first failure, which is then the error that matters), and then the lower index.
fn reported_before((a, a_error): (usize, &Error), (b, b_error): (usize, &Error)) -> bool {
    let cancelled = |error: &Error| error.kind() == ErrorKind::Cancelled;
    (cancelled(a_error), a) < (cancelled(b_error), b)
}

/// Decodes one call's result.
pub(super) fn decode<R: DeserializeOwned>(
    item: Result<&[u8], Error>,
    task: &str,
) -> Result<R, Error> {
    codec::decode(item?).map_err(|e| {
        Error::new(ErrorKind::Codec, format!("cannot decode the result: {e}")).task(task)
    })
}
