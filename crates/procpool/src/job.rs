//! A job: one RUN frame of one or more calls of one task, and where their outcomes go. Every
//! job ends exactly once, by [`Job::fail`] or [`Job::finish`]; one dropped without either
//! fails its calls, so that no caller waits for it forever.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, WorkerInfo};
use crate::event::Event;
use crate::result::{Batch, Collector};
use crate::shared::Fds;
use crate::stats::Counters;
use crate::wire::{RunFrame, ToWorker};

/// One RUN frame: one or more calls of one task, whose outcomes go to `sink`: call `i` at
/// index `start + i * stride`.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) task: &'static str,
    pub(crate) frame: Vec<u8>,
    /// The descriptors that go with the frame.
    pub(crate) fds: Fds,
    sink: Arc<Collector>,
    start: usize,
    /// 1 for a run of neighbouring items; `map`'s automatic chunks interleave.
    stride: usize,
    pub(crate) count: usize,
    /// How long each call may run before its worker is killed; `None` takes the pool's
    /// `task_timeout`.
    pub(crate) timeout: Option<Duration>,
    /// How many times this job's worker has died under it so far.
    pub(crate) retried: u32,
    /// The pool's counters, which count each call's final state.
    counters: Arc<Counters>,
    /// Whether the pool took the job (and counted its calls as submitted): from then on it
    /// must end exactly once.
    accepted: bool,
    /// Whether it has ended.
    ended: bool,
}

impl Job {
    /// A job of the calls `(start, stride, count)` of a submission, with its finished frame
    /// and descriptors.
    pub(crate) fn new(
        id: u64,
        task: &'static str,
        (frame, fds): (Vec<u8>, Fds),
        sink: Arc<Collector>,
        (start, stride, count): (usize, usize, usize),
        timeout: Option<Duration>,
        counters: Arc<Counters>,
    ) -> Job {
        Job {
            id,
            task,
            frame,
            fds,
            sink,
            start,
            stride,
            count,
            timeout,
            retried: 0,
            counters,
            accepted: false,
            ended: false,
        }
    }

    /// Counts the job's calls as submitted: the pool has taken it, and it will end.
    pub(crate) fn accept(&mut self) {
        debug_assert!(!self.accepted, "job {} accepted twice", self.id);
        self.counters.submitted(self.count);
        self.accepted = true;
        self.queued();
    }

    /// Tells subscribers the job is queued.
    fn queued(&self) {
        self.counters.events.emit(|| Event::Queued {
            job: self.id,
            task: self.task,
            calls: self.count,
        });
    }

    /// Tells subscribers the job started running in `worker`.
    pub(crate) fn started(&self, worker: WorkerInfo) {
        if self.ended {
            // Cancelled while it waited behind another job: it has finished already.
            return;
        }
        self.counters.events.emit(|| Event::Started {
            job: self.id,
            worker,
        });
    }

    /// Tells subscribers the job ended.
    fn finished(
        &self,
        failed: usize,
        kind: Option<ErrorKind>,
        worker: Option<WorkerInfo>,
        in_worker: Option<Duration>,
    ) {
        self.counters.events.emit(|| Event::Finished {
            job: self.id,
            calls: self.count,
            failed,
            kind,
            worker,
            in_worker,
        });
    }

    /// Ends every call of the job with `error`; nothing if it has ended already (cancelled
    /// while its worker still held it).
    pub(crate) fn fail(mut self, error: &Error) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.release();
        self.counters.ended(Some(error.kind()), self.count);
        self.finished(self.count, Some(error.kind()), error.worker_info(), None);
        if error.kind() != ErrorKind::Cancelled {
            self.sink.call_failed();
        }
        self.sink
            .deliver(Batch::failed(self.calls(), error.clone()));
    }

    /// Ends the job with the results its worker sent: `batch`, made from [`Job::calls`], in
    /// which `panicked` calls panicked and `failed` failed otherwise; `worker` ran it, for
    /// `in_worker`.
    pub(crate) fn finish(
        mut self,
        panicked: usize,
        failed: usize,
        batch: Batch,
        worker: WorkerInfo,
        in_worker: Option<Duration>,
    ) {
        if self.ended {
            // Cancelled while its worker held it, and ended then.
            return;
        }
        if self.sink.is_cancelled() {
            // Cancelled while it ran: the caller asked for no result.
            let error = Error::cancelled(self.task);
            return self.fail(&error);
        }
        self.ended = true;
        self.release();
        let counters = &self.counters;
        counters.ended(None, self.count - panicked - failed);
        counters.ended(Some(ErrorKind::Panicked), panicked);
        // The other failures a worker reports (codec, unregistered) all count as `other`.
        counters.ended(Some(ErrorKind::Codec), failed);
        self.finished(panicked + failed, None, Some(worker), in_worker);
        if panicked + failed > 0 {
            self.sink.call_failed();
        }
        self.sink.deliver(batch);
    }

    /// Frees the frame and closes its descriptors, once the job is done: before its results
    /// are delivered, so that a caller who has them finds the descriptors of its
    /// `SharedBytes` arguments closed.
    fn release(&mut self) {
        self.frame = Vec::new();
        self.fds = Fds::default();
    }

    /// Ends the job's calls as cancelled now, while its worker still holds it (written to
    /// the worker, waiting behind the job it runs): its results, when they come, are
    /// dropped.
    pub(crate) fn end_cancelled(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        let error = Error::cancelled(self.task);
        self.counters.ended(Some(error.kind()), self.count);
        self.finished(self.count, Some(error.kind()), None, None);
        self.sink.deliver(Batch::failed(self.calls(), error));
    }

    /// Whether the job has ended. One cancelled while it waited behind another on its
    /// worker ends then ([`Job::end_cancelled`]), and its worker still holds it and runs it.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended
    }

    /// Whether the calls of this job were cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.sink.is_cancelled()
    }

    /// Where the job's calls are in its submission: the first index, the stride, the count.
    pub(crate) fn calls(&self) -> (usize, usize, usize) {
        (self.start, self.stride, self.count)
    }

    /// Splits a job of several calls into one job per call, ids from `next_id`, which take
    /// its place: it then ends without an outcome of its own. Each sends again only the
    /// descriptors of the chunk that its own argument names ([`Fds::item`]). `None`, and the
    /// job unchanged, if it cannot be split. A job that has ended already splits into none:
    /// its calls have their outcomes, and jobs run in their place would end them again.
    pub(crate) fn split(&mut self, next_id: impl Fn() -> u64) -> Option<Vec<Job>> {
        if self.ended {
            return Some(Vec::new());
        }
        let mut singles = self.singles(next_id)?;
        for single in &mut singles {
            single.accepted = self.accepted;
            single.queued();
        }
        self.ended = true;
        Some(singles)
    }

    fn singles(&self, next_id: impl Fn() -> u64) -> Option<Vec<Job>> {
        // The frame is the parent's own, built under the frame limit, so it decodes and each
        // call fits a frame of its own; `None` is for the impossible case, so that it fails
        // the job instead of the supervisor.
        let Ok(ToWorker::Run { name, items, .. }) =
            ToWorker::decode(&self.frame[crate::wire::HEADER..])
        else {
            return None;
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let id = next_id();
                let fds = self.fds.item(i);
                let mut frame = RunFrame::split_from(id, name, &fds);
                frame
                    .push(|buf| -> Result<(), ()> {
                        buf.extend_from_slice(item);
                        Ok(())
                    })
                    .ok()?;
                let mut single = Job::new(
                    id,
                    self.task,
                    (frame.finish().ok()?.0, fds),
                    Arc::clone(&self.sink),
                    (self.start + i * self.stride, 1, 1),
                    self.timeout,
                    Arc::clone(&self.counters),
                );
                single.retried = self.retried;
                Some(single)
            })
            .collect()
    }
}

impl Drop for Job {
    /// The backstop of "every call ends exactly once": a job the pool took and then dropped
    /// without an outcome fails, instead of leaving its caller waiting forever. The one path
    /// that drops such jobs on purpose is a blocking call whose thread panics (in a result's
    /// `Deserialize`) before it ran them all.
    fn drop(&mut self) {
        if self.accepted && !self.ended {
            self.ended = true;
            let error = Error::new(
                ErrorKind::Terminated,
                "the call was dropped before it ended: the thread that made it panicked, or the pool lost it",
            )
            .task(self.task);
            self.counters.ended(Some(error.kind()), self.count);
            self.sink.deliver(Batch::failed(self.calls(), error));
        }
    }
}
