//! RESULTS frames: the outcomes a worker sends back.

use super::*;
use crate::error::TaskFailure;
use crate::shared::Attached;

/// A `RESULTS` frame, built by a worker.
pub(crate) struct ResultsFrame {
    pub(super) frame: FrameWriter,
    pub(super) items: ItemWriter,
    /// The descriptors of the `SharedBytes` in the results, which travel with the frame.
    /// Only a result encoded whole adds its own ([`shared::encode_item`](crate::shared::encode_item)).
    pub(super) fds: Vec<Attached>,
    /// How many calls the job has, and the room for outcomes that any frame of it has: its
    /// limit, less an [`OVER_LIMIT`] record for each call.
    pub(super) calls: usize,
    pub(super) least_room: usize,
    /// [`MAX_FRAME`], but in tests.
    pub(super) limit: usize,
}

/// Where the count of descriptors is in a RESULTS frame: after the length prefix, the tag,
/// the job and the count of calls.
pub(super) const RESULTS_FDS_AT: usize = HEADER + 1 + 8 + 4;

/// The failure that stands in for an outcome whose record would take a RESULTS frame over
/// its limit. Each call not yet written keeps room for one in the frame, so that the calls
/// that fail last still fit.
pub(super) const OVER_LIMIT: &str = "the outcome is over the frame limit";
/// What [`OVER_LIMIT`]'s record takes: the status, the failure's kind, the message.
pub(super) const OVER_LIMIT_LEN: usize = 1 + 1 + 4 + OVER_LIMIT.len();

impl ResultsFrame {
    /// A RESULTS frame written into `buf`, whose room is reused: a worker keeps one buffer
    /// for all its results, so that a large one does not land in fresh pages each time.
    pub(crate) fn reusing(buf: Vec<u8>, job: u64, count: u32) -> ResultsFrame {
        ResultsFrame::limited(buf, job, count, MAX_FRAME)
    }

    pub(super) fn limited(buf: Vec<u8>, job: u64, count: u32, limit: usize) -> ResultsFrame {
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
    /// with [`shared::encode_item`](crate::shared::encode_item) and the descriptor list it gets.
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
                    let total = self.items.sized_len(&self.frame);
                    self.items.pop(&mut self.frame);
                    self.fds.truncate(fds_before);
                    return Err(TaskFailure::ResultEncode(format!(
                        "the result takes {size} bytes, which makes its job's frame {total} bytes, over the frame limit of {} (send it as a SharedBytes, or use a smaller chunk size)",
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
    pub(super) fn push_failure(&mut self, failure: &TaskFailure) {
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
    pub(super) fn over_room(&self) -> bool {
        let len = self.items.sized_len(&self.frame);
        len > self.least_room && len > self.room()
    }

    /// How long the frame may be with the outcomes pushed so far: its limit, less room for
    /// an [`OVER_LIMIT`] record for each call still to come. A frame within it stays within
    /// its limit whatever those calls do. (Only a job of more calls than the limit has room
    /// for such records, some 26 million under 1 GiB, could still go over: its frame would
    /// be refused, and its calls run again one by one.)
    #[cold]
    pub(super) fn room(&self) -> usize {
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
