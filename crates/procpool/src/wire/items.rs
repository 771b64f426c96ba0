//! Writing the items of RUN and RESULTS frames in the packed or the sized layout.

use super::*;
use crate::error::TaskFailure;

/// The layouts of the items of a RUN or RESULTS body (see `README.md`).
pub(super) const LAYOUT_SIZED: u8 = 0;
pub(super) const LAYOUT_PACKED: u8 = 1;

/// Writes the items of a RUN or RESULTS body: packed back to back, with their common size
/// once, while every item takes the same number of bytes (a map over numbers or fixed-size
/// records: nothing to write, read or check per item); each with its own length (and, in
/// RESULTS, its status) from the first item of another size or the first failure on.
pub(super) struct ItemWriter {
    /// Where the layout byte is; the items follow it, after the size when packed.
    pub(super) layout_at: usize,
    /// Whether each item of the sized layout starts with a status byte (RESULTS).
    pub(super) tagged: bool,
    pub(super) count: usize,
    pub(super) packing: Packing,
    /// Where the last item pushed starts, and where it ends: any bytes after `end` are of an
    /// item whose writing was cut short by a panic.
    pub(super) last_at: usize,
    pub(super) end: usize,
}

/// Where [`ItemWriter::extend_packed`] stopped.
pub(super) enum Stop<T, E> {
    /// The items ran out.
    Done,
    /// The layout is not packed: this item is next, not yet encoded.
    NotPacked(T),
    /// This item failed or took another size: it was written from this position, and this
    /// is how its encoding went.
    Unusual(T, usize, Result<(), E>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Packing {
    /// Packed so far, and no item yet to set the size.
    Empty,
    /// Packed: every item so far took this many bytes.
    Packed(usize),
    Sized,
}

impl ItemWriter {
    pub(super) fn start(frame: &mut FrameWriter, tagged: bool) -> ItemWriter {
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
    pub(super) fn push<E>(
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
    /// inlined: it is part of `push`, in the worker's loop over a job's calls, where a call
    /// here would cost that loop about a third of its time.
    #[inline(always)]
    pub(super) fn settle_packed<E>(
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
    pub(super) fn extend_packed<T, E>(
        &mut self,
        frame: &mut FrameWriter,
        items: &mut impl Iterator<Item = T>,
        write: &mut impl FnMut(&T, &mut Vec<u8>) -> Result<(), E>,
        limit: usize,
    ) -> Stop<T, E> {
        let Packing::Packed(size) = self.packing else {
            return match items.next() {
                Some(item) => Stop::NotPacked(item),
                None => Stop::Done,
            };
        };
        // Each item adds its size and, in the sized layout the limit applies to, a length
        // (and a status): the loop takes at most one item past the limit, which the frame's
        // `finish` then refuses, so that a huge chunk is refused before it is built.
        let per_item = size + 4 + usize::from(self.tagged);
        let room = limit.saturating_sub(self.sized_len(frame)) / per_item.max(1);
        let buf = &mut frame.buf;
        let (mut end, mut count) = (self.end, self.count);
        buf.truncate(end);
        let mut stop = Stop::Done;
        for item in items.by_ref().take(room.saturating_add(1)) {
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
    pub(super) fn pop(&mut self, frame: &mut FrameWriter) {
        frame.buf.truncate(self.last_at);
        self.end = self.last_at;
        self.count -= 1;
    }

    /// Switches to the sized layout, rewriting the items packed so far.
    #[cold]
    pub(super) fn unpack(&mut self, frame: &mut FrameWriter) {
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
    pub(super) fn push_failure(&mut self, frame: &mut FrameWriter, failure: &TaskFailure) {
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
    pub(super) fn sized_len(&self, frame: &FrameWriter) -> usize {
        // Less the frame's header.
        let len = frame.position() - HEADER;
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
    pub(super) fn finish(&self, frame: &mut FrameWriter) {
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
pub(super) fn note_fd_end(ends: &mut Vec<u32>, item: usize, before: usize, end: usize) {
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
