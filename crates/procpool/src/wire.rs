//! The wire between a parent and its workers: length-prefixed frames over one socket per
//! worker, a handshake, and the serde codec. See `wire.md` beside this file for the layout.
//!
//! Nothing here knows about processes; decoding never panics and never allocates more than
//! the frame limit, whatever the input.

use std::fmt;
use std::io::{self, BufRead, Read};

use crate::error::TaskFailure;
use crate::shared::{self, Attached, Fds};

/// "PPL" and a 1: the first four bytes of both sides' handshake frames.
pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"PPL1");
/// Bumped on every change of the frame layout.
pub(crate) const VERSION: u16 = 3;
/// The largest frame body either side accepts.
pub(crate) const MAX_FRAME: usize = 1 << 30;
/// The most descriptors (of `SharedBytes`) one RUN or RESULTS frame may carry.
pub(crate) const MAX_FDS: usize = 1 << 16;

const TAG_SETUP: u8 = 1;
const TAG_RUN: u8 = 2;
const TAG_SHUTDOWN: u8 = 3;
const TAG_READY: u8 = 10;
const TAG_INIT_FAILED: u8 = 11;
const TAG_RESULTS: u8 = 12;

/// Why a frame could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WireError {
    TooLarge { len: usize },
    TooManyFds(usize),
    Truncated,
    UnknownTag(u8),
    UnknownLayout(u8),
    BadUtf8,
    Trailing(usize),
    Handshake { expected: String, found: String },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLarge { len } => {
                write!(f, "frame of {len} bytes exceeds the limit of {MAX_FRAME}")
            }
            WireError::TooManyFds(n) => {
                write!(
                    f,
                    "frame carries {n} descriptors, over the limit of {MAX_FDS}"
                )
            }
            WireError::Truncated => f.write_str("frame ends in the middle of a field"),
            WireError::UnknownTag(tag) => write!(f, "unknown frame tag {tag}"),
            WireError::UnknownLayout(layout) => write!(f, "unknown layout {layout} of items"),
            WireError::BadUtf8 => f.write_str("name is not valid UTF-8"),
            WireError::Trailing(n) => {
                write!(f, "{n} unexpected bytes after the frame's last field")
            }
            WireError::Handshake { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
        }
    }
}

impl From<WireError> for io::Error {
    fn from(error: WireError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error.to_string())
    }
}

/// Builds one frame: a length prefix, patched by `finish`, then the body.
pub(crate) struct FrameWriter {
    buf: Vec<u8>,
}

impl FrameWriter {
    pub(crate) fn new(tag: u8) -> FrameWriter {
        FrameWriter::reusing(Vec::with_capacity(64), tag)
    }

    /// A frame written into `buf`, whose contents are dropped and whose room is kept.
    pub(crate) fn reusing(mut buf: Vec<u8>, tag: u8) -> FrameWriter {
        buf.clear();
        buf.extend_from_slice(&[0; 4]);
        buf.push(tag);
        FrameWriter { buf }
    }

    #[inline]
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    #[inline]
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    #[inline]
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    #[inline]
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    #[inline]
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(len_u32(v.len()));
        self.buf.extend_from_slice(v);
        self
    }

    pub(crate) fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// Appends a length-prefixed field written by `write`; `write` may fail and leave nothing.
    pub(crate) fn field<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<&mut Self, E> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        if let Err(error) = write(&mut self.buf) {
            self.buf.truncate(at);
            return Err(error);
        }
        let len = len_u32(self.buf.len() - at - 4);
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(self)
    }

    fn failure(&mut self, failure: &TaskFailure) -> &mut Self {
        match failure {
            TaskFailure::Panic { message, location } => {
                self.u8(0).str(message);
                match location {
                    Some(location) => self.u8(1).str(location),
                    None => self.u8(0),
                }
            }
            TaskFailure::ArgsDecode(detail) => self.u8(1).str(detail),
            TaskFailure::ResultEncode(detail) => self.u8(2).str(detail),
            TaskFailure::Unregistered(name) => self.u8(3).str(name),
        }
    }

    /// The position where the next byte goes, for `patch_u32`.
    #[inline]
    pub(crate) fn position(&self) -> usize {
        self.buf.len()
    }

    #[inline]
    pub(crate) fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        let len = len_u32(self.buf.len() - 4);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf
    }
}

#[inline]
fn len_u32(len: usize) -> u32 {
    // A longer field is refused by the frame limit on the reading side; saturating keeps the
    // writer from wrapping into a shorter, wrong length.
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// The layouts of the items of a RUN or RESULTS body (see `wire.md`).
const LAYOUT_SIZED: u8 = 0;
const LAYOUT_PACKED: u8 = 1;

/// Writes the items of a RUN or RESULTS body: packed back to back, with their common size
/// once, while every item takes the same number of bytes (a map over numbers or fixed-size
/// records: nothing to write, read or check per item); each with its own length (and, in
/// RESULTS, its status) from the first item of another size or the first failure on.
struct ItemWriter {
    /// Where the layout byte is; the items follow it, after the size when packed.
    layout_at: usize,
    /// Whether each item of the sized layout starts with a status byte (RESULTS).
    tagged: bool,
    count: usize,
    packing: Packing,
    /// Where the last item pushed starts, and where it ends: any bytes after `end` are of an
    /// item whose writing was cut short by a panic.
    last_at: usize,
    end: usize,
}

/// Where [`ItemWriter::extend_packed`] stopped.
enum Stop<T, E> {
    /// The items ran out.
    Done,
    /// The layout is not packed: this item is next, not yet encoded.
    NotPacked(T),
    /// This item failed or took another size: it was written from this position, and this
    /// is how its encoding went.
    Unusual(T, usize, Result<(), E>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Packing {
    /// Packed so far, and no item yet to set the size.
    Empty,
    /// Packed: every item so far took this many bytes.
    Packed(usize),
    Sized,
}

impl ItemWriter {
    fn start(frame: &mut FrameWriter, tagged: bool) -> ItemWriter {
        let layout_at = frame.position();
        frame.u8(LAYOUT_PACKED).u32(0);
        ItemWriter {
            layout_at,
            tagged,
            count: 0,
            packing: Packing::Empty,
            last_at: frame.position(),
            end: frame.position(),
        }
    }

    /// Appends one item that `write` encodes; when it fails, nothing is left of it.
    #[inline]
    fn push<E>(
        &mut self,
        frame: &mut FrameWriter,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let at = frame.position();
        if self.packing == Packing::Sized {
            if self.tagged {
                frame.u8(0);
            }
            if let Err(error) = frame.field(write) {
                frame.buf.truncate(at);
                return Err(error);
            }
            self.last_at = at;
        } else {
            let outcome = write(&mut frame.buf);
            return self.settle_packed(frame, at, outcome);
        }
        self.count += 1;
        self.end = frame.position();
        Ok(())
    }

    /// Takes in an item written from `at` to the end of the frame while the layout is
    /// packed (or has no item yet); when writing it failed, nothing is left of it. Always
    /// inlined: it is part of `push`, whose code in a worker's loop over a job's calls
    /// measured a third slower with this as a call.
    #[inline(always)]
    fn settle_packed<E>(
        &mut self,
        frame: &mut FrameWriter,
        at: usize,
        outcome: Result<(), E>,
    ) -> Result<(), E> {
        if let Err(error) = outcome {
            frame.buf.truncate(at);
            return Err(error);
        }
        let size = frame.position() - at;
        self.last_at = at;
        match self.packing {
            Packing::Empty => self.packing = Packing::Packed(size),
            Packing::Packed(common) if common == size => {}
            _ => {
                // The first item of another size: the items so far get their lengths.
                let item = frame.buf.split_off(at);
                self.unpack(frame);
                self.last_at = frame.position();
                if self.tagged {
                    frame.u8(0);
                }
                frame.bytes(&item);
            }
        }
        self.count += 1;
        self.end = frame.position();
        Ok(())
    }

    /// Appends the items of `items` that `write` encodes to the packed size, in a loop that
    /// keeps its state in locals, while the layout is packed (a panic in `write` leaves the
    /// state behind: only for frames that a panic drops). Stops at the first item that
    /// failed or took another size, which it returns with where it starts and how its
    /// encoding went, its bytes still in the frame ([`Stop::Unusual`]), or, when the layout
    /// is not packed, at the next item, not yet encoded ([`Stop::NotPacked`]).
    #[inline]
    fn extend_packed<T, E>(
        &mut self,
        frame: &mut FrameWriter,
        items: &mut impl Iterator<Item = T>,
        write: &mut impl FnMut(&T, &mut Vec<u8>) -> Result<(), E>,
    ) -> Stop<T, E> {
        let Packing::Packed(size) = self.packing else {
            return match items.next() {
                Some(item) => Stop::NotPacked(item),
                None => Stop::Done,
            };
        };
        let buf = &mut frame.buf;
        let (mut end, mut count) = (self.end, self.count);
        buf.truncate(end);
        let mut stop = Stop::Done;
        for item in items.by_ref() {
            let outcome = write(&item, buf);
            if outcome.is_ok() && buf.len() - end == size {
                end += size;
                count += 1;
            } else {
                stop = Stop::Unusual(item, end, outcome);
                break;
            }
        }
        if count > self.count {
            self.last_at = end - size;
        }
        (self.end, self.count) = (end, count);
        stop
    }

    /// Takes the last item pushed out again.
    fn pop(&mut self, frame: &mut FrameWriter) {
        frame.buf.truncate(self.last_at);
        self.end = self.last_at;
        self.count -= 1;
    }

    /// Switches to the sized layout, rewriting the items packed so far.
    #[cold]
    fn unpack(&mut self, frame: &mut FrameWriter) {
        let size = match self.packing {
            Packing::Sized => return,
            Packing::Empty => 0,
            Packing::Packed(size) => size,
        };
        let packed = frame.buf.split_off(self.layout_at + 5);
        frame.buf.truncate(self.layout_at);
        frame.u8(LAYOUT_SIZED);
        frame
            .buf
            .reserve(packed.len() + self.count * (4 + usize::from(self.tagged)));
        for i in 0..self.count {
            if self.tagged {
                frame.u8(0);
            }
            frame.bytes(&packed[i * size..(i + 1) * size]);
        }
        self.packing = Packing::Sized;
    }

    /// Appends an item that failed (RESULTS only): from here on the layout is sized.
    fn push_failure(&mut self, frame: &mut FrameWriter, failure: &TaskFailure) {
        frame.buf.truncate(self.end);
        self.unpack(frame);
        self.last_at = frame.position();
        frame.u8(1).failure(failure);
        self.count += 1;
        self.end = frame.position();
    }

    /// The length the frame's body would have in the sized layout, which the frame limit
    /// applies to: a packed frame is never so large that a failure, or an item of another
    /// size, would take it over the limit when it unpacks, and its count fits a `u32`.
    fn sized_len(&self, frame: &FrameWriter) -> usize {
        // Less the frame's length prefix.
        let len = frame.position() - 4;
        match self.packing {
            Packing::Sized => len,
            // Less the common size, plus a length (and a status) per item.
            Packing::Empty | Packing::Packed(_) => {
                let per_item = 4 + usize::from(self.tagged);
                (len - 4).saturating_add(self.count.saturating_mul(per_item))
            }
        }
    }

    /// Writes the common size of packed items.
    fn finish(&self, frame: &mut FrameWriter) {
        if let Packing::Packed(size) = self.packing {
            frame.patch_u32(self.layout_at + 1, len_u32(size));
        }
    }
}

/// Records that item `item` of a frame ends its descriptors at `end`, the items since the
/// last one recorded having added none (they end at `before`). Only items with descriptors
/// come here, out of the loop of a map.
#[cold]
#[inline(never)]
fn note_fd_end(ends: &mut Vec<u32>, item: usize, before: usize, end: usize) {
    ends.resize(item, len_u32(before));
    ends.push(len_u32(end));
}

/// Why a RUN frame cannot be sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Oversized {
    /// Its body would take this many bytes, over [`MAX_FRAME`].
    Bytes(usize),
    /// Its arguments hold this many `SharedBytes`, over [`MAX_FDS`].
    Fds(usize),
}

/// A `RUN` frame: one job of one or more calls of the same task.
pub(crate) struct RunFrame {
    frame: FrameWriter,
    /// Where the count of calls is, followed by the count of descriptors.
    count_at: usize,
    items: ItemWriter,
    /// The descriptors of the `SharedBytes` in the arguments, which travel with the frame,
    /// and, once an argument has some, where each item's end (see [`Fds`]).
    fds: Vec<Attached>,
    fd_ends: Vec<u32>,
    /// For a call split out of a chunk: the descriptors of the chunk that it sends again
    /// (not in `fds`), and the index of the first of them in the chunk, which its
    /// argument's indices count from.
    inherited_fds: usize,
    fd_base: usize,
    /// [`MAX_FRAME`], but in tests.
    limit: usize,
}

impl RunFrame {
    pub(crate) fn new(job: u64, name: &str) -> RunFrame {
        let mut frame = FrameWriter::new(TAG_RUN);
        frame.u64(job).str(name);
        let count_at = frame.position();
        frame.u32(0).u32(0).u32(0);
        let items = ItemWriter::start(&mut frame, false);
        RunFrame {
            frame,
            count_at,
            items,
            fds: Vec::new(),
            fd_ends: Vec::new(),
            inherited_fds: 0,
            fd_base: 0,
            limit: MAX_FRAME,
        }
    }

    /// Sets the frame's job id, for a frame built before its id was drawn.
    pub(crate) fn set_job(&mut self, job: u64) {
        // The id follows the length prefix and the tag.
        self.frame.buf[5..13].copy_from_slice(&job.to_le_bytes());
    }

    /// A frame for a call taken out of a chunk's frame, which sends again the chunk's
    /// descriptors that its argument names, `fds` (see [`Fds::item`]).
    pub(crate) fn split_from(job: u64, name: &str, fds: &Fds) -> RunFrame {
        RunFrame {
            inherited_fds: fds.as_slice().len(),
            fd_base: fds.base(),
            ..RunFrame::new(job, name)
        }
    }

    /// A frame with a smaller limit than [`MAX_FRAME`], to test the limit without a GiB.
    #[cfg(test)]
    fn with_limit(job: u64, name: &str, limit: usize) -> RunFrame {
        RunFrame {
            limit,
            ..RunFrame::new(job, name)
        }
    }

    /// Appends one call's arguments, which `encode` writes; when it fails, nothing is left
    /// of them.
    #[inline]
    pub(crate) fn push<E>(
        &mut self,
        mut encode: impl FnMut(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let before = self.fds.len();
        let RunFrame {
            frame, items, fds, ..
        } = self;
        items.push(frame, |buf| shared::encode_item(fds, buf, &mut encode))?;
        self.note_fds_of_last(before);
        Ok(())
    }

    /// Records where the descriptors of the item just appended end, if it brought any to
    /// the `before` there were.
    #[inline]
    fn note_fds_of_last(&mut self, before: usize) {
        if self.fds.len() != before {
            note_fd_end(
                &mut self.fd_ends,
                self.items.count - 1,
                before,
                self.fds.len(),
            );
        }
    }

    /// Appends the arguments of each of `items`, as [`RunFrame::push`] would one by one, and
    /// stops at the first that fails. While they encode plainly to the packed size (a map
    /// over numbers), they take a loop that checks that size and nothing else per item; an
    /// item that stops it is settled from the bytes and the outcome it came with, so that
    /// each item is encoded as many times as `push` would encode it. A panic in `encode`
    /// leaves the frame to be dropped.
    pub(crate) fn extend<T, E>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        mut encode: impl FnMut(&T, &mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut items = items.into_iter();
        loop {
            match self
                .items
                .extend_packed(&mut self.frame, &mut items, &mut encode)
            {
                Stop::Done => return Ok(()),
                Stop::NotPacked(item) => self.push(|buf| encode(&item, buf))?,
                Stop::Unusual(item, at, outcome) => {
                    // What `shared::encode_item` does after a first run: the run again with
                    // the descriptor list in reach, if it failed for want of it.
                    let before = self.fds.len();
                    let outcome = outcome.or_else(|error| {
                        shared::encode_in_scope(
                            &mut self.fds,
                            &mut self.frame.buf,
                            at,
                            |buf| encode(&item, buf),
                            error,
                        )
                    });
                    self.items.settle_packed(&mut self.frame, at, outcome)?;
                    self.note_fds_of_last(before);
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.count
    }

    /// Makes room for `more` items the size of the last one pushed.
    pub(crate) fn reserve_like_last(&mut self, more: usize) {
        let last = match self.items.packing {
            Packing::Packed(size) => size,
            // A length (and the item) per item; the items' sizes are not kept.
            Packing::Empty | Packing::Sized => 4,
        };
        self.frame.buf.reserve(last.saturating_mul(more));
    }

    /// The finished frame and the descriptors that go with it, or why it is too large: a
    /// worker would refuse it, so it must not be sent. The byte limit applies to the length
    /// in the sized layout (see `ItemWriter::sized_len`), so a packed frame's count always
    /// fits its `u32`.
    pub(crate) fn finish(mut self) -> Result<(Vec<u8>, Fds), Oversized> {
        let len = self.items.sized_len(&self.frame);
        if len > self.limit {
            return Err(Oversized::Bytes(len));
        }
        let fds = self.fds.len() + self.inherited_fds;
        if fds > MAX_FDS {
            return Err(Oversized::Fds(fds));
        }
        self.frame
            .patch_u32(self.count_at, len_u32(self.items.count));
        self.frame.patch_u32(self.count_at + 4, len_u32(fds));
        self.frame
            .patch_u32(self.count_at + 8, len_u32(self.fd_base));
        self.items.finish(&mut self.frame);
        let mut ends = self.fd_ends;
        if !self.fds.is_empty() {
            ends.resize(self.items.count, len_u32(self.fds.len()));
        }
        Ok((self.frame.finish(), Fds::new(self.fds, ends)))
    }
}

/// A `RESULTS` frame, built by a worker.
pub(crate) struct ResultsFrame {
    frame: FrameWriter,
    items: ItemWriter,
    /// The descriptors of the `SharedBytes` in the results, which travel with the frame.
    /// Only a result encoded whole adds its own ([`shared::encode_item`]).
    fds: Vec<Attached>,
    /// How many calls the job has, and the room for outcomes that any frame of it has: its
    /// limit, less an [`OVER_LIMIT`] record for each call.
    calls: usize,
    least_room: usize,
    /// [`MAX_FRAME`], but in tests.
    limit: usize,
}

/// Where the count of descriptors is in a RESULTS frame: after the length prefix, the tag,
/// the job and the count of calls.
const RESULTS_FDS_AT: usize = 4 + 1 + 8 + 4;

/// The failure that stands in for an outcome whose record would take a RESULTS frame over
/// its limit. Each call not yet written keeps room for one in the frame, so that the calls
/// that fail last still fit.
const OVER_LIMIT: &str = "the outcome is over the frame limit";
/// What [`OVER_LIMIT`]'s record takes: the status, the failure's kind, the message.
const OVER_LIMIT_LEN: usize = 1 + 1 + 4 + OVER_LIMIT.len();

impl ResultsFrame {
    /// A RESULTS frame written into `buf`, whose room is reused: a worker keeps one buffer
    /// for all its results, so that a large one does not land in fresh pages each time.
    pub(crate) fn reusing(buf: Vec<u8>, job: u64, count: u32) -> ResultsFrame {
        ResultsFrame::limited(buf, job, count, MAX_FRAME)
    }

    fn limited(buf: Vec<u8>, job: u64, count: u32, limit: usize) -> ResultsFrame {
        let mut frame = FrameWriter::reusing(buf, TAG_RESULTS);
        frame.u64(job).u32(count).u32(0);
        let items = ItemWriter::start(&mut frame, true);
        let calls = count as usize;
        ResultsFrame {
            frame,
            items,
            fds: Vec::new(),
            calls,
            least_room: limit.saturating_sub(calls.saturating_mul(OVER_LIMIT_LEN)),
            limit,
        }
    }

    #[cfg(test)]
    pub(crate) fn new(job: u64, count: u32) -> ResultsFrame {
        ResultsFrame::reusing(Vec::new(), job, count)
    }

    /// A frame with another limit than [`MAX_FRAME`]: a smaller one, to test the limit
    /// without a GiB, or none, for a result that is never sent (an initializer's).
    pub(crate) fn with_limit(job: u64, count: u32, limit: usize) -> ResultsFrame {
        ResultsFrame::limited(Vec::new(), job, count, limit)
    }

    /// Appends one call's outcome; `run` writes the encoded result into the buffer it gets,
    /// with [`shared::encode_item`] and the descriptor list it gets.
    #[inline]
    pub(crate) fn push(
        &mut self,
        run: impl FnOnce(&mut Vec<u8>, &mut Vec<Attached>) -> Result<(), TaskFailure>,
    ) {
        let fds_before = self.fds.len();
        let fds = &mut self.fds;
        let outcome = self
            .items
            .push(&mut self.frame, |buf| run(buf, fds))
            .and_then(|()| {
                // A frame over the limit would be refused by the parent as a protocol
                // error: the result that pushed it over comes out again and fails alone.
                if self.over_room() {
                    let size = self.frame.position() - self.items.last_at;
                    self.items.pop(&mut self.frame);
                    self.fds.truncate(fds_before);
                    return Err(TaskFailure::ResultEncode(format!(
                        "the result takes {size} bytes, over the frame limit of {}",
                        self.limit
                    )));
                }
                if self.fds.len() > MAX_FDS {
                    self.items.pop(&mut self.frame);
                    self.fds.truncate(fds_before);
                    return Err(TaskFailure::ResultEncode(format!(
                        "the results of this job hold more than {MAX_FDS} SharedBytes (use a smaller chunk size)"
                    )));
                }
                Ok(())
            });
        if let Err(failure) = outcome {
            self.push_failure(&failure);
        }
    }

    /// Appends the outcome of a call that panicked while its result was being written:
    /// whatever it wrote goes.
    pub(crate) fn push_panicked(&mut self, failure: TaskFailure) {
        self.push_failure(&failure);
    }

    /// Appends a failure; one whose record would not fit (a panic message of a gigabyte,
    /// or any failure once the frame is near its limit) is replaced by [`OVER_LIMIT`], for
    /// which the frame always has room.
    fn push_failure(&mut self, failure: &TaskFailure) {
        self.items.push_failure(&mut self.frame, failure);
        if self.over_room() {
            self.items.pop(&mut self.frame);
            let short = TaskFailure::ResultEncode(OVER_LIMIT.to_owned());
            self.items.push_failure(&mut self.frame, &short);
        }
    }

    /// Whether the frame, with the outcome just pushed, is longer than [`Self::room`]
    /// allows. Checked after every call: against the least room there can be (the limit,
    /// less a record for every call), and only above that against the room left now, out
    /// of a map's tight loop.
    #[inline]
    fn over_room(&self) -> bool {
        let len = self.items.sized_len(&self.frame);
        len > self.least_room && len > self.room()
    }

    /// How long the frame may be with the outcomes pushed so far: its limit, less room for
    /// an [`OVER_LIMIT`] record for each call still to come. A frame within it stays within
    /// its limit whatever those calls do. (Only a job of more calls than the limit has room
    /// for such records, some 26 million under 1 GiB, could still go over: its frame would
    /// be refused, and its calls run again one by one.)
    #[cold]
    fn room(&self) -> usize {
        let to_come = self.calls.saturating_sub(self.items.count);
        self.limit
            .saturating_sub(to_come.saturating_mul(OVER_LIMIT_LEN))
    }

    /// The finished frame, and the descriptors that go with it.
    pub(crate) fn finish(mut self) -> (Vec<u8>, Vec<Attached>) {
        self.frame
            .patch_u32(RESULTS_FDS_AT, len_u32(self.fds.len()));
        self.items.finish(&mut self.frame);
        (self.frame.finish(), self.fds)
    }
}

/// The SETUP frame: the worker's index, whether it may spin while it waits for work (see
/// `spin`), and the initializer to run, if any.
pub(crate) fn setup_frame(index: u32, spin: bool, initializer: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut frame = FrameWriter::new(TAG_SETUP);
    frame.u32(MAGIC).u16(VERSION).u32(index).u8(u8::from(spin));
    match initializer {
        Some((name, args)) => frame.u8(1).str(name).bytes(args),
        None => frame.u8(0),
    };
    frame.finish()
}

pub(crate) fn shutdown_frame() -> Vec<u8> {
    FrameWriter::new(TAG_SHUTDOWN).finish()
}

pub(crate) fn ready_frame(pid: u32, fingerprint: u64) -> Vec<u8> {
    let mut frame = FrameWriter::new(TAG_READY);
    frame.u32(MAGIC).u16(VERSION).u32(pid).u64(fingerprint);
    frame.finish()
}

pub(crate) fn init_failed_frame(failure: &TaskFailure) -> Vec<u8> {
    let mut frame = FrameWriter::new(TAG_INIT_FAILED);
    frame.failure(failure);
    frame.finish()
}

/// A bounds-checked reader over one frame body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(WireError::Truncated)?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_le_bytes)
    }

    #[inline]
    fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_le_bytes)
    }

    #[inline]
    fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_le_bytes)
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// A count of descriptors, refused over [`MAX_FDS`].
    fn fds(&mut self) -> Result<usize, WireError> {
        let fds = self.u32()? as usize;
        if fds > MAX_FDS {
            return Err(WireError::TooManyFds(fds));
        }
        Ok(fds)
    }

    fn str(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError::BadUtf8)
    }

    /// Steps over `count` packed items of `items`' size.
    /// Steps over `count` packed items of `items`' size. The count is held to the frame
    /// limit as the writer holds it (see `ItemWriter::sized_len`): `per_item` bytes of length
    /// and status each, so that items of no bytes cannot come in billions.
    fn skip_packed(
        &mut self,
        count: usize,
        items: &ItemReader<'_>,
        per_item: usize,
    ) -> Result<(), WireError> {
        let sized = count.saturating_mul(per_item);
        if sized > MAX_FRAME {
            return Err(WireError::TooLarge { len: sized });
        }
        let size = items.packed.unwrap_or(0);
        let len = count.checked_mul(size).ok_or(WireError::Truncated)?;
        self.take(len).map(|_| ())
    }

    fn failure(&mut self) -> Result<TaskFailure, WireError> {
        Ok(match self.u8()? {
            0 => {
                let message = self.str()?.to_owned();
                let location = match self.u8()? {
                    0 => None,
                    _ => Some(self.str()?.to_owned()),
                };
                TaskFailure::Panic { message, location }
            }
            1 => TaskFailure::ArgsDecode(self.str()?.to_owned()),
            2 => TaskFailure::ResultEncode(self.str()?.to_owned()),
            3 => TaskFailure::Unregistered(self.str()?.to_owned()),
            tag => return Err(WireError::UnknownTag(tag)),
        })
    }

    fn handshake(&mut self) -> Result<(), WireError> {
        let magic = self.u32()?;
        if magic != MAGIC {
            return Err(WireError::Handshake {
                expected: format!("magic {MAGIC:#x}"),
                found: format!("{magic:#x}"),
            });
        }
        let version = self.u16()?;
        if version != VERSION {
            return Err(WireError::Handshake {
                expected: format!("protocol version {VERSION}"),
                found: version.to_string(),
            });
        }
        Ok(())
    }

    fn end(&self) -> Result<(), WireError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

/// A frame a worker receives.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ToWorker<'a> {
    Setup {
        index: u32,
        spin: bool,
        initializer: Option<(&'a str, &'a [u8])>,
    },
    Run {
        job: u64,
        name: &'a str,
        /// How many descriptors came with the frame, and the index its arguments give the
        /// first of them.
        fds: usize,
        fd_base: usize,
        items: RunItems<'a>,
    },
    Shutdown,
}

impl<'a> ToWorker<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<ToWorker<'a>, WireError> {
        let mut cursor = Cursor { buf: body, pos: 0 };
        let message = match cursor.u8()? {
            TAG_SETUP => {
                cursor.handshake()?;
                let index = cursor.u32()?;
                let spin = cursor.u8()? != 0;
                let initializer = match cursor.u8()? {
                    0 => None,
                    _ => Some((cursor.str()?, cursor.bytes()?)),
                };
                ToWorker::Setup {
                    index,
                    spin,
                    initializer,
                }
            }
            TAG_RUN => {
                let job = cursor.u64()?;
                let name = cursor.str()?;
                let count = cursor.u32()? as usize;
                let fds = cursor.fds()?;
                let fd_base = cursor.u32()? as usize;
                let items = ItemReader::new(&mut cursor, count)?;
                match items.packed {
                    Some(_) => cursor.skip_packed(count, &items, 4)?,
                    None => {
                        for _ in 0..count {
                            cursor.bytes()?;
                        }
                    }
                }
                ToWorker::Run {
                    job,
                    name,
                    fds,
                    fd_base,
                    items: RunItems(items),
                }
            }
            TAG_SHUTDOWN => ToWorker::Shutdown,
            tag => return Err(WireError::UnknownTag(tag)),
        };
        cursor.end()?;
        Ok(message)
    }
}

/// A frame the parent receives. A RESULTS frame is checked whole here, and its body is then
/// handed on as it is, to be read item by item by [`ResultItems`] where the results are
/// wanted: nothing is copied or allocated per result on the way.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FromWorker {
    Ready { pid: u32, fingerprint: u64 },
    InitFailed(TaskFailure),
    Results(Results),
}

/// What a RESULTS frame says of its job, once checked whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Results {
    pub(crate) job: u64,
    pub(crate) count: usize,
    /// How many descriptors came with the frame.
    pub(crate) fds: usize,
    /// How many of the calls panicked, and how many failed otherwise.
    pub(crate) panicked: usize,
    pub(crate) failed: usize,
}

impl FromWorker {
    pub(crate) fn decode(body: &[u8]) -> Result<FromWorker, WireError> {
        let mut cursor = Cursor { buf: body, pos: 0 };
        let message = match cursor.u8()? {
            TAG_READY => {
                cursor.handshake()?;
                FromWorker::Ready {
                    pid: cursor.u32()?,
                    fingerprint: cursor.u64()?,
                }
            }
            TAG_INIT_FAILED => FromWorker::InitFailed(cursor.failure()?),
            TAG_RESULTS => {
                let job = cursor.u64()?;
                let count = cursor.u32()? as usize;
                let fds = cursor.fds()?;
                let items = ItemReader::new(&mut cursor, count)?;
                let (mut panicked, mut failed) = (0, 0);
                match items.packed {
                    Some(_) => cursor.skip_packed(count, &items, 5)?,
                    None => {
                        for _ in 0..count {
                            match cursor.u8()? {
                                0 => {
                                    cursor.bytes()?;
                                }
                                1 => match cursor.failure()? {
                                    TaskFailure::Panic { .. } => panicked += 1,
                                    _ => failed += 1,
                                },
                                tag => return Err(WireError::UnknownTag(tag)),
                            }
                        }
                    }
                }
                FromWorker::Results(Results {
                    job,
                    count,
                    fds,
                    panicked,
                    failed,
                })
            }
            tag => return Err(WireError::UnknownTag(tag)),
        };
        cursor.end()?;
        Ok(message)
    }
}

/// Reads the items of a RUN or RESULTS body in order, from the layout byte on. The body was
/// checked whole when it arrived ([`ToWorker::decode`], [`FromWorker::decode`]), so reading
/// the items cannot fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ItemReader<'a> {
    cursor: Cursor<'a>,
    /// Items not yet read.
    left: usize,
    /// The common size of packed items; `None` for the sized layout.
    packed: Option<usize>,
}

impl<'a> ItemReader<'a> {
    /// Reads the layout of `count` items at `cursor`, which moves past it: to the first item.
    fn new(cursor: &mut Cursor<'a>, count: usize) -> Result<ItemReader<'a>, WireError> {
        let packed = match cursor.u8()? {
            LAYOUT_SIZED => None,
            LAYOUT_PACKED => Some(cursor.u32()? as usize),
            layout => return Err(WireError::UnknownLayout(layout)),
        };
        Ok(ItemReader {
            cursor: *cursor,
            left: count,
            packed,
        })
    }

    /// The next item's bytes when packed, else `None` (and nothing read).
    #[inline]
    fn next_packed(&mut self) -> Option<&'a [u8]> {
        let size = self.packed?;
        Some(self.cursor.take(size).expect(CHECKED))
    }
}

const CHECKED: &str = "a frame's items are checked whole when it arrives";

/// The arguments of the calls of a RUN frame, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunItems<'a>(ItemReader<'a>);

impl<'a> RunItems<'a> {
    /// The arguments of one call, outside any frame.
    pub(crate) fn one(args: &'a [u8]) -> RunItems<'a> {
        RunItems(ItemReader {
            cursor: Cursor { buf: args, pos: 0 },
            left: 1,
            packed: Some(args.len()),
        })
    }
}

impl<'a> Iterator for RunItems<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let items = &mut self.0;
        if items.left == 0 {
            return None;
        }
        items.left -= 1;
        Some(match items.next_packed() {
            Some(item) => item,
            None => items.cursor.bytes().expect(CHECKED),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.0.left, Some(self.0.left))
    }
}

impl ExactSizeIterator for RunItems<'_> {}

/// Where [`ResultItems`] stand in a RESULTS body, to go on from there later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResultsAt {
    pos: usize,
    left: usize,
}

/// Reads the outcomes of the calls of a RESULTS body that [`FromWorker::decode`] accepted,
/// in order.
pub(crate) struct ResultItems<'a>(ItemReader<'a>);

impl<'a> ResultItems<'a> {
    /// The outcomes of a RESULTS body, from the first.
    pub(crate) fn new(body: &'a [u8]) -> ResultItems<'a> {
        // Past the tag and the job, to the count, then past the count of descriptors.
        let mut cursor = Cursor { buf: body, pos: 9 };
        let count = cursor.u32().expect(CHECKED) as usize;
        cursor.u32().expect(CHECKED);
        ResultItems(ItemReader::new(&mut cursor, count).expect(CHECKED))
    }

    /// The outcomes of a RESULTS body, from where [`ResultItems::position`] said.
    pub(crate) fn at(body: &'a [u8], at: ResultsAt) -> ResultItems<'a> {
        let mut items = ResultItems::new(body);
        items.0.cursor.pos = at.pos;
        items.0.left = at.left;
        items
    }

    /// Where the next outcome starts.
    pub(crate) fn position(&self) -> ResultsAt {
        ResultsAt {
            pos: self.0.cursor.pos,
            left: self.0.left,
        }
    }
}

impl<'a> ResultItems<'a> {
    /// The results left, as plain bytes, if the body is packed (every call succeeded and
    /// every result takes the same size): a loop over them has nothing to check per item.
    pub(crate) fn packed(&self) -> Option<PackedItems<'a>> {
        let size = self.0.packed?;
        let cursor = self.0.cursor;
        Some(PackedItems {
            rest: &cursor.buf[cursor.pos..],
            size,
            left: self.0.left,
        })
    }
}

/// The items of a packed body, each `size` bytes; see [`ResultItems::packed`].
pub(crate) struct PackedItems<'a> {
    rest: &'a [u8],
    size: usize,
    left: usize,
}

impl<'a> Iterator for PackedItems<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The body was checked to hold `left` items of `size` bytes.
        let (item, rest) = self.rest.split_at(self.size);
        self.rest = rest;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for PackedItems<'_> {}

impl<'a> Iterator for ResultItems<'a> {
    /// One call's encoded result, or how it failed.
    type Item = Result<&'a [u8], TaskFailure>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let items = &mut self.0;
        if items.left == 0 {
            return None;
        }
        items.left -= 1;
        if let Some(item) = items.next_packed() {
            return Some(Ok(item));
        }
        let item = match items.cursor.u8() {
            Ok(0) => items.cursor.bytes().map(Ok),
            Ok(1) => items.cursor.failure().map(Err),
            Ok(tag) => Err(WireError::UnknownTag(tag)),
            Err(error) => Err(error),
        };
        Some(item.expect(CHECKED))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.0.left, Some(self.0.left))
    }
}

impl ExactSizeIterator for ResultItems<'_> {}

/// Reads one frame body from a blocking, buffered stream; `Ok(None)` on a clean end of
/// stream. What the buffer holds of the body is copied; the rest is read by `read_spare`,
/// which appends at most the count it is given to the vector, into its spare capacity (a
/// worker reads its socket so, without zeroing the buffer first), and returns how many
/// bytes it appended, 0 at the end of the stream.
///
/// The body's buffer grows with the bytes that arrive, not with the length the header
/// claims, so a short stream cannot make it allocate up to the frame limit.
pub(crate) fn read_frame<R: BufRead>(
    reader: &mut R,
    body: &mut Vec<u8>,
    mut read_spare: impl FnMut(&mut R, &mut Vec<u8>, usize) -> io::Result<usize>,
) -> io::Result<Option<()>> {
    let mut header = [0; 4];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge { len }.into());
    }
    body.clear();
    body.reserve(len.min(LARGE));
    let buffered = reader.fill_buf()?;
    let from_buffer = buffered.len().min(len);
    body.extend_from_slice(&buffered[..from_buffer]);
    reader.consume(from_buffer);
    while body.len() < len {
        if body.len() == body.capacity() {
            body.reserve(body.len().min(len - body.len()));
        }
        let room = (body.capacity() - body.len()).min(len - body.len());
        match read_spare(reader, body, room) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(()))
}

/// A `read_spare` for [`read_frame`] over any reader, through a small stack buffer: for
/// tests and the fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
fn read_spare_copying(reader: &mut impl Read, body: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let mut buf = [0; 4096];
    let max = max.min(buf.len());
    let n = reader.read(&mut buf[..max])?;
    body.extend_from_slice(&buf[..n]);
    Ok(n)
}

/// Splits frames out of a non-blocking byte stream, as bytes arrive.
///
/// Small frames are gathered in one buffer and copied out; a large frame gets a buffer of its
/// own, read into directly (and not zeroed first), so that a big result is not copied twice.
/// That buffer doubles as bytes arrive instead of taking the length the header claims at
/// once, so that a peer that sends a large length and little else cannot make the reader
/// allocate up to the limit.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    /// Bytes `start..end` are read and not yet split off; allocated on first use.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The large frame being read straight into its own buffer.
    large: Option<Large>,
}

/// Above this, a frame body gets its own buffer.
pub(crate) const LARGE: usize = 64 * 1024;

/// A large frame body being read: `body` has arrived, out of `len` bytes.
#[derive(Debug)]
struct Large {
    body: Vec<u8>,
    len: usize,
}

/// A read function as a reader, for [`Read::read_to_end`], which reads into a vector's spare
/// capacity without zeroing it first.
struct ReadFn<F>(F);

impl<F: FnMut(&mut [u8]) -> io::Result<usize>> Read for ReadFn<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (self.0)(buf)
    }
}

impl FrameReader {
    /// Reads what `read` has now and hands each complete frame body to `on_frame`. Returns
    /// `Ok(false)` at the end of the stream, `Ok(true)` when it would block or a read came
    /// back short (the stream is drained for now).
    pub(crate) fn read_from(
        &mut self,
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
        mut on_frame: impl FnMut(Vec<u8>),
    ) -> io::Result<bool> {
        if self.buf.is_empty() {
            self.buf = vec![0; 2 * LARGE];
        }
        loop {
            if let Some(large) = &mut self.large {
                let body = &mut large.body;
                let missing = large.len - body.len();
                if body.len() == body.capacity() {
                    body.reserve(body.len().max(LARGE).min(missing));
                }
                let room = (body.capacity() - body.len()).min(missing);
                let before = body.len();
                // Reads until the room is full or the stream would block; what it read is
                // kept either way.
                let outcome = (&mut ReadFn(&mut read)).take(room as u64).read_to_end(body);
                let got = body.len() - before;
                if body.len() == large.len {
                    let large = self.large.take().expect("a large frame is being read");
                    on_frame(large.body);
                }
                match outcome {
                    Ok(_) if got < room => return Ok(false),
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let target = &mut self.buf[self.end..];
            let offered = target.len();
            let got = match read(target) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.end += got;
            self.split(&mut on_frame)?;
            // A read that did not fill what it was offered found the stream drained: stop
            // here rather than pay for a read that only says `EAGAIN`. The descriptor is
            // polled level-triggered, so bytes that arrive meanwhile (or the end of the
            // stream) wake the next poll.
            if got < offered {
                return Ok(true);
            }
        }
    }

    fn split(&mut self, on_frame: &mut impl FnMut(Vec<u8>)) -> io::Result<()> {
        while self.end - self.start >= 4 {
            let at = self.start;
            let len =
                u32::from_le_bytes(self.buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            if len > MAX_FRAME {
                return Err(WireError::TooLarge { len }.into());
            }
            let available = self.end - at - 4;
            if available >= len {
                on_frame(self.buf[at + 4..at + 4 + len].to_vec());
                self.start = at + 4 + len;
            } else if len > LARGE {
                let mut body = Vec::with_capacity(available.max(LARGE).min(len));
                body.extend_from_slice(&self.buf[at + 4..self.end]);
                self.large = Some(Large { body, len });
                self.start = self.end;
                break;
            } else {
                break;
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(())
    }
}

/// A non-blocking reader over `left`, for tests and the fuzz target: each read takes what
/// fits, and once it is empty it would block.
#[cfg(any(test, feature = "fuzzing"))]
fn feed(mut left: &[u8]) -> impl FnMut(&mut [u8]) -> io::Result<usize> + '_ {
    move |out| {
        if left.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = left.len().min(out.len());
        out[..n].copy_from_slice(&left[..n]);
        left = &left[n..];
        Ok(n)
    }
}

/// One fuzz input: decodes it as a frame body both ways, then feeds it to a
/// [`FrameReader`] in pieces whose sizes the input's first byte picks, decoding every frame
/// that comes out. Panics if any frame exceeds the limit; decoders must not panic at all.
#[cfg(feature = "fuzzing")]
pub fn fuzz_wire(data: &[u8]) {
    let _ = ToWorker::decode(data);
    decode_all(data);
    let piece = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut reader = FrameReader::default();
    let mut rest = data;
    loop {
        let (now, later) = rest.split_at(piece.min(rest.len()));
        rest = later;
        let result = reader.read_from(feed(now), |frame| {
            assert!(frame.len() <= MAX_FRAME, "a frame over the limit");
            decode_all(&frame);
            let _ = ToWorker::decode(&frame);
        });
        if result.is_err() || rest.is_empty() {
            break;
        }
    }
    let mut body = Vec::new();
    let _ = read_frame(&mut &data[..], &mut body, read_spare_copying);
    assert!(body.len() <= MAX_FRAME, "a frame over the limit");
}

/// Decodes a body as a parent does, and reads the results of an accepted RESULTS body: what
/// the check lets through must read without a panic. (Up to a few thousand: packed results of
/// no bytes can number hundreds of millions in a short body, and a parent reads no more than
/// the job it sent holds.)
#[cfg(feature = "fuzzing")]
fn decode_all(body: &[u8]) {
    if let Ok(FromWorker::Results(Results { count, .. })) = FromWorker::decode(body) {
        let items = ResultItems::new(body);
        assert_eq!(items.len(), count);
        assert_eq!(items.take(4096).count(), count.min(4096));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &[u8]) -> &[u8] {
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        &frame[4..]
    }

    /// The job, task name, arguments and layout byte of a RUN frame.
    fn run_items(frame: &[u8]) -> (u64, &str, Vec<&[u8]>, u8) {
        let ToWorker::Run {
            job, name, items, ..
        } = ToWorker::decode(body(frame)).unwrap()
        else {
            panic!("not a RUN frame");
        };
        let layout = frame[4 + 1 + 8 + 4 + name.len() + 4 + 4 + 4];
        (job, name, items.collect(), layout)
    }

    /// The outcomes and layout byte of a RESULTS frame, which must decode as `results`.
    fn result_items(frame: &[u8], results: Results) -> (Vec<Result<&[u8], TaskFailure>>, u8) {
        let body = body(frame);
        assert_eq!(
            FromWorker::decode(body).unwrap(),
            FromWorker::Results(results)
        );
        (ResultItems::new(body).collect(), body[RESULTS_LAYOUT_AT])
    }

    /// Where the layout byte of a RESULTS body is: after the tag, the job, the count and the
    /// count of descriptors.
    const RESULTS_LAYOUT_AT: usize = 1 + 8 + 4 + 4;

    fn push_run(run: &mut RunFrame, item: &[u8]) {
        run.push(|buf| -> Result<(), ()> {
            buf.extend_from_slice(item);
            Ok(())
        })
        .unwrap();
    }

    fn ok(job: u64, count: usize) -> Results {
        Results {
            job,
            count,
            fds: 0,
            panicked: 0,
            failed: 0,
        }
    }

    #[test]
    fn run_frame_round_trips() {
        let mut run = RunFrame::new(7, "demo::add");
        push_run(&mut run, b"ab");
        assert!(
            run.push(|buf| {
                buf.push(1);
                Err(())
            })
            .is_err()
        );
        push_run(&mut run, b"");
        assert_eq!(run.len(), 2);
        let frame = run.finish().unwrap().0;
        assert_eq!(
            run_items(&frame),
            (7, "demo::add", vec![b"ab".as_slice(), b""], LAYOUT_SIZED)
        );
    }

    #[test]
    fn items_of_one_size_are_packed_without_lengths() {
        let mut run = RunFrame::new(1, "t");
        for item in [b"abc", b"def", b"ghi"] {
            push_run(&mut run, item);
        }
        let frame = run.finish().unwrap().0;
        let (_, _, items, layout) = run_items(&frame);
        assert_eq!(items, [b"abc", b"def", b"ghi"]);
        assert_eq!(layout, LAYOUT_PACKED);
        // The body: tag, job, name, count, descriptors, the first descriptor's index,
        // layout, size, then the items and nothing else.
        assert_eq!(frame.len(), 4 + 1 + 8 + (4 + 1) + 4 + 4 + 4 + 1 + 4 + 9);

        let mut results = ResultsFrame::new(2, 2);
        for item in [b"xy", b"zw"] {
            results.push(|buf, _| {
                buf.extend_from_slice(item);
                Ok(())
            });
        }
        let frame = results.finish().0;
        let (items, layout) = result_items(&frame, ok(2, 2));
        assert_eq!(items, [Ok(b"xy".as_slice()), Ok(b"zw".as_slice())]);
        assert_eq!(layout, LAYOUT_PACKED);
    }

    #[test]
    fn items_of_no_bytes_are_packed_and_counted() {
        let mut run = RunFrame::new(1, "t");
        for _ in 0..3 {
            push_run(&mut run, b"");
        }
        let frame = run.finish().unwrap().0;
        let (_, _, items, layout) = run_items(&frame);
        assert_eq!(items, [b"", b"", b""]);
        assert_eq!(layout, LAYOUT_PACKED);
        let frame = ResultsFrame::new(4, 0).finish().0;
        let (items, _) = result_items(&frame, ok(4, 0));
        assert!(items.is_empty());
    }

    #[test]
    fn an_item_of_another_size_unpacks_the_items_before_it() {
        let mut run = RunFrame::new(1, "t");
        for item in [b"ab".as_slice(), b"cd", b"efg", b"hi"] {
            push_run(&mut run, item);
        }
        let frame = run.finish().unwrap().0;
        let (_, _, items, layout) = run_items(&frame);
        assert_eq!(items, [b"ab".as_slice(), b"cd", b"efg", b"hi"]);
        assert_eq!(layout, LAYOUT_SIZED);

        let mut results = ResultsFrame::new(5, 3);
        for item in [b"".as_slice(), b"", b"x"] {
            results.push(|buf, _| {
                buf.extend_from_slice(item);
                Ok(())
            });
        }
        let frame = results.finish().0;
        let (items, layout) = result_items(&frame, ok(5, 3));
        assert_eq!(items, [Ok(b"".as_slice()), Ok(b""), Ok(b"x")]);
        assert_eq!(layout, LAYOUT_SIZED);
    }

    #[test]
    fn results_frame_round_trips() {
        let mut results = ResultsFrame::new(3, 3);
        results.push(|buf, _| {
            buf.extend_from_slice(b"xyz");
            Ok(())
        });
        let failure = TaskFailure::Panic {
            message: "boom".into(),
            location: Some("a.rs:1:1".into()),
        };
        results.push(|buf, _| {
            buf.push(9);
            Err(failure.clone())
        });
        // After a failure, results of the first one's size still read back.
        results.push(|buf, _| {
            buf.extend_from_slice(b"uvw");
            Ok(())
        });
        let results_of = Results {
            job: 3,
            count: 3,
            fds: 0,
            panicked: 1,
            failed: 0,
        };
        let frame = results.finish().0;
        let (items, layout) = result_items(&frame, results_of);
        assert_eq!(
            items,
            [Ok(b"xyz".as_slice()), Err(failure), Ok(b"uvw".as_slice())]
        );
        assert_eq!(layout, LAYOUT_SIZED);
    }

    #[test]
    fn a_result_over_the_frame_limit_fails_alone() {
        let limit = 300;
        let mut results = ResultsFrame::with_limit(1, 3, limit);
        for len in [2, limit, 2] {
            results.push(|buf, _| {
                buf.resize(buf.len() + len, 0);
                Ok(())
            });
        }
        let frame = results.finish().0;
        let results_of = Results {
            job: 1,
            count: 3,
            fds: 0,
            panicked: 0,
            failed: 1,
        };
        let (items, _) = result_items(&frame, results_of);
        assert_eq!(items[0], Ok([0, 0].as_slice()));
        assert!(
            matches!(&items[1], Err(TaskFailure::ResultEncode(m)) if m.contains("over the frame limit")),
            "{:?}",
            items[1]
        );
        assert_eq!(items[2], Ok([0, 0].as_slice()));
    }

    #[test]
    fn packed_results_are_held_to_the_limit_they_would_have_sized() {
        // An item of another size unpacks the frame, within the limit.
        let mut results = ResultsFrame::with_limit(1, 15, 600);
        for _ in 0..14 {
            results.push(|_, _| Ok(()));
        }
        results.push(|buf, _| {
            buf.extend_from_slice(b"ab");
            Ok(())
        });
        let frame = results.finish().0;
        assert!(body(&frame).len() <= 600);
        assert_eq!(ResultItems::new(body(&frame)).count(), 15);

        // Ten results of 40 bytes take 18 + 4 + 400 = 422 bytes packed, 18 + 10 * 45 = 468
        // sized. Under a limit of 450, result `k` (from 1) is kept while the frame sized,
        // with room for an `OVER_LIMIT` record (41 bytes) for each call after it, stays
        // within the limit: 18 + 45k + 41(10 - k) <= 450 holds up to k = 5. The others fail,
        // as they would have in the sized layout.
        let limit = 450;
        let mut results = ResultsFrame::with_limit(1, 10, limit);
        for _ in 0..10 {
            results.push(|buf, _| {
                buf.extend_from_slice(&[7; 40]);
                Ok(())
            });
        }
        let frame = results.finish().0;
        assert!(body(&frame).len() <= limit, "{} bytes", body(&frame).len());
        let items: Vec<_> = ResultItems::new(body(&frame)).collect();
        assert_eq!(items.len(), 10);
        assert!(
            items[..5]
                .iter()
                .all(|item| item == &Ok([7; 40].as_slice()))
        );
        for item in &items[5..] {
            assert!(
                matches!(item, Err(TaskFailure::ResultEncode(m)) if m.contains("over the frame limit")),
                "{item:?}"
            );
        }
    }

    #[test]
    fn calls_that_fail_once_the_frame_is_full_still_fit() {
        // Results fill the frame as far as they may; then every call fails with a long
        // message. Each failure takes the room kept for it, so the frame never goes over.
        let limit = 2000;
        let mut results = ResultsFrame::with_limit(1, 30, limit);
        for _ in 0..5 {
            results.push(|buf, _| {
                buf.extend_from_slice(&[1; 150]);
                Ok(())
            });
        }
        for _ in 0..25 {
            results.push_panicked(TaskFailure::Panic {
                message: "x".repeat(500),
                location: None,
            });
        }
        let frame = results.finish().0;
        assert!(body(&frame).len() <= limit, "{} bytes", body(&frame).len());
        let items: Vec<_> = ResultItems::new(body(&frame)).collect();
        assert_eq!(items.len(), 30);
        assert!(items[25..].iter().all(Result::is_err));
    }

    #[test]
    fn a_failure_too_large_for_the_frame_is_cut_short() {
        let mut results = ResultsFrame::with_limit(1, 2, 200);
        results.push(|_, _| Err(TaskFailure::ArgsDecode("x".repeat(500))));
        results.push(|_, _| Ok(()));
        let frame = results.finish().0;
        let body = body(&frame);
        assert!(body.len() <= 200, "{} bytes", body.len());
        let items: Vec<_> = ResultItems::new(body).collect();
        assert!(
            matches!(&items[0], Err(TaskFailure::ResultEncode(m)) if m.contains("over the frame limit")),
            "{:?}",
            items[0]
        );
        assert_eq!(items[1], Ok(b"".as_slice()));
    }

    #[test]
    fn a_packed_run_frame_is_held_to_the_limit_it_would_have_sized() {
        // Empty arguments take no bytes packed, 4 each sized: the limit counts those.
        let mut run = RunFrame::with_limit(1, "t", 100);
        for _ in 0..30 {
            push_run(&mut run, b"");
        }
        assert!(run.finish().is_err());
        let mut run = RunFrame::with_limit(1, "t", 100);
        for _ in 0..10 {
            push_run(&mut run, b"");
        }
        let frame = run.finish().unwrap().0;
        assert_eq!(run_items(&frame).2.len(), 10);
    }

    #[test]
    fn reading_results_goes_on_from_a_position() {
        for packed in [true, false] {
            let mut results = ResultsFrame::new(1, 3);
            for item in [b"a".as_slice(), b"b", if packed { b"c" } else { b"cc" }] {
                results.push(|buf, _| {
                    buf.extend_from_slice(item);
                    Ok(())
                });
            }
            let frame = results.finish().0;
            let body = body(&frame);
            let mut items = ResultItems::new(body);
            assert_eq!(items.next(), Some(Ok(b"a".as_slice())));
            let mut items = ResultItems::at(body, items.position());
            assert_eq!(items.len(), 2);
            assert_eq!(items.next(), Some(Ok(b"b".as_slice())));
            let mut items = ResultItems::at(body, items.position());
            let last: &[u8] = if packed { b"c" } else { b"cc" };
            assert_eq!(items.next(), Some(Ok(last)));
            assert_eq!(items.next(), None);
        }
    }

    #[test]
    fn packed_items_of_no_bytes_cannot_come_in_billions() {
        let mut body = vec![TAG_RESULTS];
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(LAYOUT_PACKED);
        body.extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            FromWorker::decode(&body),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn packed_items_must_fill_the_body_exactly() {
        let mut run = RunFrame::new(1, "t");
        push_run(&mut run, b"ab");
        push_run(&mut run, b"cd");
        let frame = run.finish().unwrap().0;
        let short = &frame[4..frame.len() - 1];
        assert_eq!(ToWorker::decode(short), Err(WireError::Truncated));
        let mut long = frame[4..].to_vec();
        long.push(0);
        assert_eq!(ToWorker::decode(&long), Err(WireError::Trailing(1)));
        let mut bad = frame[4..].to_vec();
        bad[1 + 8 + 5 + 4 + 4 + 4] = 7;
        assert_eq!(ToWorker::decode(&bad), Err(WireError::UnknownLayout(7)));
    }

    #[test]
    fn handshake_checks_magic_and_version() {
        let frame = ready_frame(42, 9);
        assert_eq!(
            FromWorker::decode(body(&frame)).unwrap(),
            FromWorker::Ready {
                pid: 42,
                fingerprint: 9
            }
        );
        let mut bad = frame.clone();
        bad[9] = 4; // the version's low byte
        let err = FromWorker::decode(body(&bad)).unwrap_err();
        assert_eq!(err.to_string(), "expected protocol version 3, found 4");
        let setup = setup_frame(1, true, Some(("init", b"args")));
        assert_eq!(
            ToWorker::decode(body(&setup)).unwrap(),
            ToWorker::Setup {
                index: 1,
                spin: true,
                initializer: Some(("init", b"args".as_slice()))
            }
        );
    }

    #[test]
    fn frame_reader_splits_small_and_large_frames() {
        let big = vec![7u8; LARGE * 3];
        let mut stream = Vec::new();
        for payload in [&b"one"[..], &big, b"two"] {
            stream.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            stream.extend_from_slice(payload);
        }
        // Feed it in awkward pieces, with a would-block between pieces.
        let mut reader = FrameReader::default();
        let mut frames = Vec::new();
        for piece in stream.chunks(1000) {
            let more = reader
                .read_from(feed(piece), |frame| frames.push(frame))
                .unwrap();
            assert!(more);
        }
        assert_eq!(frames, vec![b"one".to_vec(), big, b"two".to_vec()]);
        assert!(!reader.read_from(|_| Ok(0), |_| unreachable!()).unwrap());
    }

    #[test]
    fn oversized_frames_are_refused_before_allocating() {
        let header = (MAX_FRAME as u32 + 1).to_le_bytes();
        let mut reader = FrameReader::default();
        let err = reader
            .read_from(
                |out| {
                    out[..4].copy_from_slice(&header);
                    Ok(4)
                },
                |_| (),
            )
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut body = Vec::new();
        assert!(read_frame(&mut &header[..], &mut body, read_spare_copying).is_err());
        assert_eq!(body.capacity(), 0);
    }

    #[test]
    fn a_large_claimed_length_allocates_with_the_bytes_that_arrive() {
        let mut stream = (MAX_FRAME as u32).to_le_bytes().to_vec();
        stream.extend_from_slice(&[5; 1000]);
        let mut body = Vec::new();
        let err = read_frame(&mut stream.as_slice(), &mut body, read_spare_copying).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(body.capacity() <= 2 * LARGE, "{}", body.capacity());

        let mut reader = FrameReader::default();
        let more = reader
            .read_from(feed(&stream), |_| unreachable!("the frame is not complete"))
            .unwrap();
        assert!(more);
        let large = reader.large.as_ref().expect("a large frame is being read");
        assert_eq!((large.body.len(), large.len), (1000, MAX_FRAME));
        assert!(large.body.capacity() <= 2 * LARGE);
    }

    #[test]
    fn a_large_frame_arrives_whole_in_pieces_of_any_size() {
        let body: Vec<u8> = (0..3 * LARGE + 100).map(|i| (i % 251) as u8).collect();
        let mut stream = (body.len() as u32).to_le_bytes().to_vec();
        stream.extend_from_slice(&body);
        stream.extend_from_slice(&[1, 0, 0, 0, 7]);
        for piece in [1000, LARGE - 1, LARGE + 1, 150_000, stream.len()] {
            let mut reader = FrameReader::default();
            let mut frames = Vec::new();
            for chunk in stream.chunks(piece) {
                let more = reader.read_from(feed(chunk), |frame| frames.push(frame));
                assert!(more.unwrap());
            }
            assert_eq!(frames, vec![body.clone(), vec![7]], "pieces of {piece}");
        }
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// Items mostly of one size, some of another, some `SharedBytes` (which encode to
        /// the common size, 12 bytes, but only with the frame's descriptor list in reach), a
        /// few that fail after writing part of themselves: `extend` writes the frame that
        /// pushing them one by one writes, with the same descriptors for each item, encodes
        /// each item as many times, and stops at the same failure.
        #[test]
        fn extend_writes_what_pushing_one_by_one_writes(
            kinds in proptest::collection::vec(
                proptest::prop_oneof![
                    6 => proptest::strategy::Just((0u8, 12usize)),
                    1 => (0usize..14).prop_map(|len| (0u8, len)),
                    1 => proptest::strategy::Just((1u8, 0usize)),
                    1 => (0usize..14).prop_map(|len| (2u8, len)),
                ],
                0..64,
            ),
        ) {
            // 0: plain bytes; 1: a `SharedBytes`; 2: a failure after some bytes.
            let shared = crate::SharedBytes::copy_from_slice(b"shared").unwrap();
            let items: Vec<(usize, u8, usize)> =
                kinds.into_iter().enumerate().map(|(i, (kind, len))| (i, kind, len)).collect();
            let runs = std::cell::Cell::new(0);
            let encode = |&(i, kind, len): &(usize, u8, usize), buf: &mut Vec<u8>| {
                runs.set(runs.get() + 1);
                match kind {
                    0 => {
                        buf.extend(std::iter::repeat_n(i as u8, len));
                        Ok(())
                    }
                    1 => crate::codec::encode_into(buf, &shared).map_err(|_| i),
                    _ => {
                        buf.extend(std::iter::repeat_n(i as u8, len));
                        Err(i)
                    }
                }
            };
            let mut pushed = RunFrame::new(1, "t");
            let pushing = items.iter().try_for_each(|item| pushed.push(|buf| encode(item, buf)));
            let pushed_runs = runs.replace(0);
            let mut extended = RunFrame::new(1, "t");
            let extending = extended.extend(items.iter(), |item, buf| encode(item, buf));
            proptest::prop_assert_eq!(pushing, extending);
            proptest::prop_assert_eq!(pushed_runs, runs.get());
            let count = pushed.len();
            proptest::prop_assert_eq!(count, extended.len());
            let (Ok((pushed, pushed_fds)), Ok((extended, extended_fds))) =
                (pushed.finish(), extended.finish())
            else {
                panic!("a frame of a few bytes is within the limits");
            };
            proptest::prop_assert_eq!(pushed, extended);
            proptest::prop_assert_eq!(pushed_fds.as_slice().len(), extended_fds.as_slice().len());
            if !pushed_fds.as_slice().is_empty() {
                for i in 0..count {
                    let (a, b) = (pushed_fds.item(i), extended_fds.item(i));
                    proptest::prop_assert_eq!((a.base(), a.as_slice().len()), (b.base(), b.as_slice().len()));
                }
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = ToWorker::decode(&bytes);
            let _ = FromWorker::decode(&bytes);
            let mut reader = FrameReader::default();
            let mut fed = false;
            let _ = reader.read_from(|out| {
                if fed { return Ok(0); }
                fed = true;
                let n = bytes.len().min(out.len());
                out[..n].copy_from_slice(&bytes[..n]);
                Ok(n)
            }, |_| ());
        }

        #[test]
        fn handshakes_round_trip(
            pid in proptest::prelude::any::<u32>(),
            fingerprint in proptest::prelude::any::<u64>(),
            index in proptest::prelude::any::<u32>(),
            init in proptest::option::of((".{0,16}", proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32))),
        ) {
            let ready = ready_frame(pid, fingerprint);
            proptest::prop_assert_eq!(
                FromWorker::decode(&ready[4..]).unwrap(),
                FromWorker::Ready { pid, fingerprint }
            );
            let setup = setup_frame(index, index % 2 == 0, init.as_ref().map(|(n, a)| (n.as_str(), a.as_slice())));
            proptest::prop_assert_eq!(
                ToWorker::decode(&setup[4..]).unwrap(),
                ToWorker::Setup {
                    index,
                    spin: index % 2 == 0,
                    initializer: init.as_ref().map(|(n, a)| (n.as_str(), a.as_slice())),
                }
            );
        }

        /// Bodies that pass the tag and the magic and version checks, then go anywhere.
        #[test]
        fn handshake_bodies_with_any_tail_never_panic(
            tag in proptest::sample::select(vec![TAG_SETUP, TAG_READY, TAG_INIT_FAILED, TAG_RESULTS, TAG_RUN]),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
        ) {
            let mut body = vec![tag];
            body.extend_from_slice(&MAGIC.to_le_bytes());
            body.extend_from_slice(&VERSION.to_le_bytes());
            body.extend_from_slice(&tail);
            let _ = ToWorker::decode(&body);
            let _ = FromWorker::decode(&body);
        }

        /// A handshake frame with bytes overwritten: it decodes to something or is refused,
        /// and a changed magic or version is always refused.
        #[test]
        fn corrupted_handshakes_are_refused_never_panic(
            setup in proptest::prelude::any::<bool>(),
            edits in proptest::collection::vec((0usize..64, proptest::prelude::any::<u8>()), 1..4),
        ) {
            let frame = if setup { setup_frame(3, false, Some(("init", b"args"))) } else { ready_frame(42, 9) };
            let mut body = frame[4..].to_vec();
            for (at, byte) in edits {
                let at = at % body.len();
                body[at] = byte;
            }
            let handshake_intact = body[1..7] == frame[5..11];
            let decoded = if setup {
                ToWorker::decode(&body).map(|_| ())
            } else {
                FromWorker::decode(&body).map(|_| ())
            };
            if !handshake_intact && body[0] == frame[4] {
                proptest::prop_assert!(decoded.is_err());
            }
        }

        /// Lengths over the limit are refused before anything is allocated for them.
        #[test]
        fn oversized_lengths_are_refused(len in (MAX_FRAME as u32 + 1)..=u32::MAX) {
            let header = len.to_le_bytes();
            let mut body = Vec::new();
            proptest::prop_assert!(read_frame(&mut &header[..], &mut body, read_spare_copying).is_err());
            proptest::prop_assert_eq!(body.capacity(), 0);
            let mut reader = FrameReader::default();
            let mut fed = false;
            let result = reader.read_from(|out| {
                if fed { return Err(io::ErrorKind::WouldBlock.into()); }
                fed = true;
                out[..4].copy_from_slice(&header);
                Ok(4)
            }, |_| ());
            proptest::prop_assert!(result.is_err());
            proptest::prop_assert!(reader.large.is_none());
        }

        /// Any stream of well-formed frames, cut into any pieces, comes out whole and in order.
        #[test]
        fn frame_reader_reassembles_any_split(
            bodies in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..8),
            cuts in proptest::collection::vec(1usize..300, 1..16),
        ) {
            let mut stream = Vec::new();
            for body in &bodies {
                stream.extend_from_slice(&(body.len() as u32).to_le_bytes());
                stream.extend_from_slice(body);
            }
            let mut reader = FrameReader::default();
            let mut frames = Vec::new();
            let mut rest = stream.as_slice();
            let mut cuts = cuts.into_iter().cycle();
            while !rest.is_empty() {
                let piece = cuts.next().unwrap().min(rest.len());
                let (now, later) = rest.split_at(piece);
                rest = later;
                let more = reader.read_from(feed(now), |frame| frames.push(frame)).unwrap();
                proptest::prop_assert!(more);
            }
            proptest::prop_assert_eq!(frames, bodies);
        }

        /// Outcomes of a few sizes, so that runs of one size pack and a size or a failure
        /// that breaks the run unpacks them; `None` is a call that failed.
        #[test]
        fn results_survive_any_outcomes(outcomes in proptest::collection::vec(proptest::option::weighted(0.9, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3)), 0..16)) {
            let mut results = ResultsFrame::new(1, outcomes.len() as u32);
            let failure = TaskFailure::ArgsDecode("bad".into());
            for outcome in &outcomes {
                results.push(|buf, _| match outcome {
                    Some(bytes) => { buf.extend_from_slice(bytes); Ok(()) }
                    None => { buf.push(1); Err(failure.clone()) }
                });
            }
            let frame = results.finish().0;
            let body = &frame[4..];
            let failed = outcomes.iter().filter(|o| o.is_none()).count();
            let decoded = FromWorker::decode(body).unwrap();
            let expected = FromWorker::Results(Results { job: 1, count: outcomes.len(), fds: 0, panicked: 0, failed });
            proptest::prop_assert_eq!(decoded, expected);
            let got: Vec<Result<&[u8], TaskFailure>> = ResultItems::new(body).collect();
            let want: Vec<Result<&[u8], TaskFailure>> = outcomes
                .iter()
                .map(|o| o.as_deref().ok_or(failure.clone()))
                .collect();
            proptest::prop_assert_eq!(got, want);
        }

        /// Under any limit that has room for the header and an over-limit record per call,
        /// results and failures of any sizes, in any order, give a frame within the limit
        /// that holds every call. (A job has at least one call: a frame of none, never
        /// sent, still takes the 4 bytes of a packed size that the limit does not count.)
        #[test]
        fn results_frames_stay_within_their_limit(
            outcomes in proptest::collection::vec((proptest::prelude::any::<bool>(), 0usize..300), 1..24),
            spare in 0usize..2000,
        ) {
            let limit = 18 + outcomes.len() * OVER_LIMIT_LEN + spare;
            let mut results = ResultsFrame::with_limit(1, outcomes.len() as u32, limit);
            for &(ok, len) in &outcomes {
                if ok {
                    results.push(|buf, _| { buf.resize(buf.len() + len, 3); Ok(()) });
                } else {
                    results.push_panicked(TaskFailure::Panic { message: "p".repeat(len), location: None });
                }
            }
            let frame = results.finish().0;
            let body = &frame[4..];
            proptest::prop_assert!(body.len() <= limit, "{} bytes over a limit of {}", body.len(), limit);
            proptest::prop_assert!(FromWorker::decode(body).is_ok());
            proptest::prop_assert_eq!(ResultItems::new(body).count(), outcomes.len());
        }

        /// Arguments of a few sizes, some of which fail to encode and leave nothing.
        #[test]
        fn run_frames_survive_any_arguments(args in proptest::collection::vec(proptest::option::weighted(0.9, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3)), 0..16)) {
            let mut run = RunFrame::new(9, "t");
            for arg in &args {
                let pushed = run.push(|buf| match arg {
                    Some(bytes) => { buf.extend_from_slice(bytes); Ok(()) }
                    None => { buf.push(1); Err(()) }
                });
                proptest::prop_assert_eq!(pushed.is_ok(), arg.is_some());
            }
            let frame = run.finish().unwrap().0;
            let ToWorker::Run { items, .. } = ToWorker::decode(&frame[4..]).unwrap() else {
                panic!("not a RUN frame");
            };
            let got: Vec<&[u8]> = items.collect();
            let want: Vec<&[u8]> = args.iter().flatten().map(Vec::as_slice).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
