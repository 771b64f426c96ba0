//! RUN frames: the jobs a parent sends.

use super::*;
use crate::shared::{self, Attached, Fds};

/// A `RUN` frame: one job of one or more calls of the same task.
pub(crate) struct RunFrame {
    pub(super) frame: FrameWriter,
    /// Where the count of calls is, followed by the count of descriptors.
    pub(super) count_at: usize,
    pub(super) items: ItemWriter,
    /// The descriptors of the `SharedBytes` in the arguments, which travel with the frame,
    /// and, once an argument has some, where each item's end (see [`Fds`]).
    pub(super) fds: Vec<Attached>,
    pub(super) fd_ends: Vec<u32>,
    /// For a call split out of a chunk: the descriptors of the chunk that it sends again
    /// (not in `fds`), and the index of the first of them in the chunk, which its
    /// argument's indices count from.
    pub(super) inherited_fds: usize,
    pub(super) fd_base: usize,
    /// [`MAX_FRAME`], but in tests.
    pub(super) limit: usize,
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
        // The id follows the header and the tag.
        self.frame.buf[HEADER + 1..HEADER + 9].copy_from_slice(&job.to_le_bytes());
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
    pub(super) fn with_limit(job: u64, name: &str, limit: usize) -> RunFrame {
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
    pub(super) fn note_fds_of_last(&mut self, before: usize) {
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
            if self.over_limit() {
                return Ok(());
            }
            match self
                .items
                .extend_packed(&mut self.frame, &mut items, &mut encode, self.limit)
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

    /// Whether the frame is already over its limit: [`RunFrame::finish`] will refuse it, so
    /// nothing more need be pushed.
    #[inline]
    pub(crate) fn over_limit(&self) -> bool {
        self.items.sized_len(&self.frame) > self.limit
    }

    /// Makes room for `more` items the size of the last one pushed.
    pub(crate) fn reserve_like_last(&mut self, more: usize) {
        let last = match self.items.packing {
            Packing::Packed(size) => size,
            // A length (and the item) per item; the items' sizes are not kept.
            Packing::Empty | Packing::Sized => 4,
        };
        // Never beyond the limit, which a frame that size would break anyway.
        self.frame
            .buf
            .reserve(last.saturating_mul(more).min(self.limit));
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

/// What a RUN frame that came from another process through a queue holds, once checked
/// whole: the task's name and the number of calls.
#[cfg(feature = "redis")]
pub(crate) struct Adopted {
    pub(crate) name: String,
    pub(crate) count: usize,
}

/// Checks a whole RUN frame that came from elsewhere (a queue shared by machines) and gives
/// it the job id `job`: it must be one frame, within the limits, with no descriptors, which
/// cannot cross machines.
#[cfg(feature = "redis")]
pub(crate) fn adopt(frame: &mut [u8], job: u64) -> Result<Adopted, WireError> {
    if frame.len() < HEADER {
        return Err(WireError::Truncated);
    }
    let len = parse_header(&frame[..HEADER])?;
    if len != frame.len() - HEADER {
        return Err(WireError::Truncated);
    }
    let adopted = match ToWorker::decode(&frame[HEADER..])? {
        ToWorker::Run {
            name, fds, items, ..
        } => {
            if fds != 0 {
                return Err(WireError::TooManyFds(fds));
            }
            Adopted {
                name: name.to_owned(),
                count: items.0.left,
            }
        }
        _ => return Err(WireError::UnknownTag(frame[HEADER])),
    };
    frame[HEADER + 1..HEADER + 9].copy_from_slice(&job.to_le_bytes());
    Ok(adopted)
}
