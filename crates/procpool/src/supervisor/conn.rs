//! One worker's connection, as both drivers use it: the supervisor's poll loop and a
//! blocking call that borrowed the worker. Jobs are assigned, written, read back and
//! expired here, the same way for both.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{DEPTH, EXIT_GRACE, LONG_JOB, STOPPED_CHECK};
use crate::error::WorkerInfo;
use crate::insight::Recorder;
use crate::job::Job;
use crate::result::Batch;
use crate::shared::Attached;
use crate::start::{Process, Reaped};
use crate::sys;
use crate::wire::{self, Descriptors, FrameReader, FromWorker, MAX_FDS, Results};

/// A write to a worker that failed for good.
#[derive(Debug)]
pub(crate) struct WriteFailure {
    /// The worker had closed its end: it is exiting, or a task closed the socket.
    pub(crate) peer_gone: bool,
    pub(crate) message: String,
}

/// Why a worker is taken out of its slot.
#[derive(Debug)]
pub(crate) enum Cause {
    /// Its socket reached its end: it exited or was killed.
    Gone,
    /// It sent a frame the protocol does not allow.
    Protocol(String),
    /// The pool could not write to it and shut its socket down.
    WriteFailed(WriteFailure),
    /// It stayed stopped this long while the pool closed, and was killed.
    Stopped(Duration),
    /// Its job ran past the deadline, with this timeout per call.
    TimedOut(Duration),
    /// The thread that borrowed it panicked while it held jobs: the worker is fine, but what
    /// is left on its socket is unknown, and nobody waits for its jobs.
    Abandoned,
}

#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) info: WorkerInfo,
    pub(crate) process: Process,
    pub(crate) socket: UnixStream,
    pub(crate) reader: FrameReader,
    /// Descriptors that came over the socket, not yet claimed by the frames they came with.
    pub(super) received: VecDeque<OwnedFd>,
    /// The descriptors' handshake (see [`Descriptors`]): whether this end reads the socket
    /// with `recvmsg` (the worker offered descriptors), whether the worker does (it may be
    /// sent some), and the nonce of this end's OFFER once it has offered some.
    pub(super) reads_fds: bool,
    pub(super) sends_fds: bool,
    pub(super) offered_fds: Option<u64>,
    /// Control frames (SETUP, SHUTDOWN, the descriptors' handshake) to write before the next
    /// job's frame, and how much of the first is written.
    pub(super) control: VecDeque<Vec<u8>>,
    pub(super) control_written: usize,
    /// Jobs sent or being sent, oldest first; `in_flight[unsent..]` are not fully written.
    pub(crate) in_flight: VecDeque<Job>,
    /// When the first job of `in_flight` started, as far as the parent can tell: when it was
    /// handed to an idle worker, or when the job ahead of it completed.
    pub(crate) front_since: Option<Instant>,
    /// How long the last job that completed took, from when it became the front job; `None`
    /// before the first.
    pub(super) last_took: Option<Duration>,
    pub(crate) unsent: usize,
    pub(super) job_written: usize,
    /// How many of the descriptors of `in_flight[unsent]` have been sent.
    pub(super) fds_sent: usize,
    pub(super) ready: bool,
    /// The forkserver that forked it, if one did (see `start::Started::server`).
    pub(super) server: Option<u64>,
    /// Jobs given to this worker so far, against `max_tasks_per_child`.
    pub(crate) assigned: u64,
    /// `max_memory_per_child`: the resident memory, in bytes, over which the worker is
    /// retired; its resident memory is read after each job only when this is set.
    pub(super) max_resident: Option<u64>,
    /// Its resident memory after a job was over `max_resident`: it takes no more jobs and
    /// is retired once it holds none.
    pub(super) over_memory: bool,
    /// Why a write to the worker failed for good, once one has: the pool then shut the
    /// socket down itself, and the end of stream that follows is not the worker's doing.
    pub(super) write_failed: Option<WriteFailure>,
    /// For a retiring worker: its socket has reached its end, and only its exit is watched.
    pub(super) socket_ended: bool,
    /// When [`Worker::stopped_too_long`] last looked.
    pub(super) stop_checked: Option<Instant>,
    /// Since when the worker has been seen stopped (by a signal) while the pool closes.
    pub(super) stopped_since: Option<Instant>,
    /// For a worker told to shut down: when it is killed if it has not exited by then.
    pub(super) exit_by: Option<Instant>,
    /// When the worker was spawned, for its start-up time.
    pub(super) spawned: Instant,
    /// The pool's insights, which this worker's slot adds to.
    pub(super) recorder: Arc<Recorder>,
}

impl Worker {
    /// How many jobs this worker may hold now, with `jobs_left` jobs waiting for the
    /// `workers` that share them: [`DEPTH`], or one after a job of at least [`LONG_JOB`]
    /// when fewer jobs wait than those workers could take as second jobs.
    ///
    /// A second job hides a round trip, but it is a job promised to this worker: at the end
    /// of a map, a worker that is slower than the others (its CPU shared with another
    /// process, or slower on the host) still has it to run while the others stand idle.
    /// Jobs that long gain nothing from a second; before the end, the second job costs
    /// nothing either, so workers keep one queued (holding it back all through a map only
    /// adds round trips, and to a pool of one worker nothing but). `docs/perf/journal.md`
    /// has the measurements.
    pub(crate) fn depth(&self, jobs_left: usize, workers: usize) -> usize {
        let near_end = jobs_left < workers * (DEPTH - 1);
        if near_end && self.last_took.is_some_and(|took| took >= LONG_JOB) {
            1
        } else {
            DEPTH
        }
    }

    /// While the pool closes: whether this worker, holding a job, has stayed stopped by a
    /// signal (SIGSTOP; `/proc` state `T`) for [`EXIT_GRACE`], so that it is to be killed.
    /// `join` waits for its jobs, which would never end. It looks at most every
    /// [`STOPPED_CHECK`]; a worker seen running again starts over.
    pub(crate) fn stopped_too_long(&mut self, now: Instant) -> bool {
        if self.in_flight.is_empty() {
            self.stopped_since = None;
            return false;
        }
        if self
            .stop_checked
            .is_some_and(|at| now.duration_since(at) < STOPPED_CHECK)
        {
            return false;
        }
        self.stop_checked = Some(now);
        if !sys::is_stopped(self.info.pid) {
            self.stopped_since = None;
            return false;
        }
        let since = *self.stopped_since.get_or_insert(now);
        now.duration_since(since) >= EXIT_GRACE
    }

    /// When [`Worker::stopped_too_long`] should look next, while the pool closes.
    pub(crate) fn next_stop_check(&self, now: Instant) -> Option<Instant> {
        if self.in_flight.is_empty() {
            return None;
        }
        Some(self.stop_checked.map_or(now, |at| at + STOPPED_CHECK))
    }

    /// Gives the worker `job`, to be written when its socket takes it; `now` starts the job's
    /// clock if it is the only one.
    pub(crate) fn assign(&mut self, job: Job, now: Instant) {
        if self.in_flight.is_empty() {
            self.front_since = Some(now);
            // A job sent with the SETUP starts once the worker is ready (see `on_frame`).
            if self.ready {
                self.recorder.busy_from(self.info.index, now);
            }
            job.started(self.info);
        }
        self.in_flight.push_back(job);
        self.assigned += 1;
    }

    /// Whether the worker has been given all the jobs `max_tasks_per_child` allows, or its
    /// memory went over `max_memory_per_child`.
    pub(crate) fn spent(&self, max_tasks_per_child: Option<u64>) -> bool {
        self.over_memory || max_tasks_per_child.is_some_and(|max| self.assigned >= max)
    }

    /// With `max_memory_per_child` set: reads the worker's resident memory after a job
    /// (one read of `/proc/<pid>/statm`) and marks it for retirement if it is over. The
    /// worker may have started its next job already, whose memory then counts too.
    fn check_memory(&mut self) {
        if let Some(max) = self.max_resident
            && !self.over_memory
            && sys::resident(self.info.pid).is_some_and(|bytes| bytes > max)
        {
            self.over_memory = true;
        }
    }

    /// When the job this worker runs now must be done by, and the timeout of one of its
    /// calls. A chunk of several calls gets the timeout once per call.
    pub(crate) fn deadline(&self, default: Option<Duration>) -> Option<(Instant, Duration)> {
        let job = self.in_flight.front()?;
        let timeout = job.timeout.or(default)?;
        let calls = u32::try_from(job.count).unwrap_or(u32::MAX);
        let deadline = self
            .front_since?
            .checked_add(timeout.saturating_mul(calls))?;
        Some((deadline, timeout))
    }

    /// Ends the conversation after a write that failed for good: callers ignore a failed
    /// write and wait for the end of stream that a gone worker gives; a write that failed
    /// while the worker lives (too many descriptors in flight: `ETOOMANYREFS`) would give
    /// none, and the socket would poll writable forever. Shut down, it reads as ended, the
    /// worker exits, and its jobs are settled as for a worker that died. (`ETOOMANYREFS`
    /// passes once the worker has taken the descriptors in flight; waiting for that, rather
    /// than replacing the worker and failing the job it runs, is not done.)
    pub(super) fn broken(&mut self, error: io::Error) -> io::Error {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        self.write_failed = Some(WriteFailure {
            peer_gone: matches!(
                error.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            message: error.to_string(),
        });
        error
    }

    /// Reads what the socket has, handing each complete frame to `on_frame`; as
    /// [`FrameReader::read_from`].
    pub(crate) fn read_frames(&mut self, on_frame: impl FnMut(Vec<u8>)) -> io::Result<bool> {
        let socket = &self.socket;
        let received = &mut self.received;
        let reads_fds = self.reads_fds;
        self.reader.read_from(
            |buf| {
                // Descriptors that no frame claims: a worker that sends them cannot make the
                // parent run out.
                if received.len() > MAX_FDS + sys::FDS_PER_MESSAGE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "descriptors that no frame claims",
                    ));
                }
                sys::recv(socket, buf, reads_fds.then_some(&mut *received))
            },
            on_frame,
        )
    }

    /// Takes a frame of the descriptors' handshake (see [`Descriptors`]).
    ///
    /// An OFFER makes this end read with `recvmsg` from the next read on (the worker sends
    /// nothing with descriptors until it has the answer) and queues the answer, TAKING. A
    /// second OFFER is let be: a worker offers only until it reads a TAKING, and this end
    /// sends one, which is on its way, so the first was a task's forgery and its answer
    /// serves the worker.
    ///
    /// A TAKING lets the jobs with descriptors go if it names this end's OFFER and every job
    /// written before that OFFER has its results: the worker answers the OFFER in its turn,
    /// after those. One that comes sooner, or names another nonce, is a task's forgery and a
    /// protocol error, which the task's own call pays, its job being the one that runs.
    pub(crate) fn on_descriptors(&mut self, message: Descriptors) -> Result<(), Cause> {
        match message {
            Descriptors::Offer(nonce) if !self.reads_fds => {
                self.reads_fds = true;
                self.control
                    .push_back(wire::descriptors_frame(Descriptors::Taking(nonce), true));
                Ok(())
            }
            Descriptors::Offer(_) => Ok(()),
            Descriptors::Taking(nonce)
                if self.waits_for_taking()
                    && self.unsent == 0
                    && self.offered_fds == Some(nonce) =>
            {
                self.sends_fds = true;
                Ok(())
            }
            Descriptors::Taking(_) => Err(out_of_turn(message)),
        }
    }

    /// Whether this end has offered the worker descriptors and waits for its answer.
    fn waits_for_taking(&self) -> bool {
        self.offered_fds.is_some() && !self.sends_fds
    }

    /// Whether [`Worker::flush`] has something to write: a frame, or the OFFER of
    /// descriptors a job waits for. A job that waits for the answer writes nothing.
    pub(crate) fn wants_write(&self) -> bool {
        !self.control.is_empty()
            || (self.unsent < self.in_flight.len()
                && !(self.waits_for_taking() && self.holds_fds()))
    }

    /// Whether the next job to write has descriptors that wait for the worker's TAKING.
    fn holds_fds(&self) -> bool {
        !self.sends_fds
            && self
                .in_flight
                .get(self.unsent)
                .is_some_and(|job| !job.fds.as_slice().is_empty())
    }

    /// Writes what the socket takes now. An error means the worker is gone; the caller
    /// finds out through the socket's end of stream.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        loop {
            if self.job_written == 0 && self.holds_fds() && self.offered_fds.is_none() {
                let nonce = sys::random_u64();
                self.offered_fds = Some(nonce);
                self.control
                    .push_back(wire::descriptors_frame(Descriptors::Offer(nonce), true));
            }
            // Up to 8 frames in one writev, gathered on the stack: this runs for every job.
            let mut slices = [IoSlice::new(&[]); 8];
            let mut count = 0;
            let mut offered = 0;
            let mut written = self.control_written;
            // A control frame goes between jobs' frames, never into one.
            let control = if self.job_written == 0 {
                self.control.len()
            } else {
                0
            };
            for frame in self.control.iter().take(control.min(slices.len())) {
                slices[count] = IoSlice::new(&frame[written..]);
                offered += frame.len() - written;
                count += 1;
                written = 0;
            }
            // Descriptors ride on the first byte of a message: a frame with descriptors left
            // to send starts a message of its own, and a frame with more than one message
            // carries gets a byte per message until its last.
            let mut fds: &[Attached] = &[];
            if control == 0 {
                let mut written = self.job_written;
                let mut fds_sent = self.fds_sent;
                for job in self.in_flight.iter().skip(self.unsent).take(slices.len()) {
                    let fds_left = &job.fds.as_slice()[fds_sent..];
                    let frame = &job.frame[written..];
                    if !fds_left.is_empty() {
                        if count > 0 || !self.sends_fds {
                            break;
                        }
                        let Some((bytes, group)) = sys::next_message(frame, fds_left) else {
                            return Err(self.broken(io::Error::other(
                                "more descriptors than bytes to carry them",
                            )));
                        };
                        fds = group;
                        slices[0] = IoSlice::new(bytes);
                        offered = bytes.len();
                        count = 1;
                        break;
                    }
                    slices[count] = IoSlice::new(frame);
                    offered += frame.len();
                    count += 1;
                    written = 0;
                    fds_sent = 0;
                }
            }
            if count == 0 {
                return Ok(());
            }
            let mut n = match sys::send(&self.socket, &slices[..count], fds) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.broken(e)),
            };
            if n > 0 {
                self.fds_sent += fds.len();
            }
            // A short write means the socket is full: account for it and let POLLOUT say
            // when to go on, instead of a write that only says `EAGAIN`.
            let full = n < offered;
            while n > 0 {
                if let Some(frame) = self.control.front().filter(|_| control > 0) {
                    let left = frame.len() - self.control_written;
                    if n >= left {
                        n -= left;
                        self.control.pop_front();
                        self.control_written = 0;
                    } else {
                        self.control_written += n;
                        n = 0;
                    }
                } else {
                    let left = self.in_flight[self.unsent].frame.len() - self.job_written;
                    if n >= left {
                        n -= left;
                        self.unsent += 1;
                        self.job_written = 0;
                        self.fds_sent = 0;
                    } else {
                        self.job_written += n;
                        n = 0;
                    }
                }
            }
            if full {
                return Ok(());
            }
        }
    }
}

impl Worker {
    /// Settles the oldest job this worker holds with the `results` it sent, whose items are
    /// in the body `frame`. `Err` if they are not that job's results.
    pub(crate) fn complete_front(&mut self, results: Results, frame: Vec<u8>) -> Result<(), Cause> {
        let Results {
            job,
            count,
            fds,
            panicked,
            failed,
        } = results;
        let Some(front) = self.in_flight.front() else {
            return Err(Cause::Protocol(format!(
                "results for job {job}, which it does not hold"
            )));
        };
        if front.id != job || front.count != count || self.unsent == 0 {
            return Err(Cause::Protocol(format!(
                "results for job {job} with {count} items, expected job {} with {}",
                front.id, front.count
            )));
        }
        let came = self.received.len();
        let Some(fds) = sys::claim(&mut self.received, fds) else {
            return Err(Cause::Protocol(format!(
                "results for job {job} named {fds} descriptors, {came} came"
            )));
        };
        let done = self.in_flight.pop_front().expect("checked above");
        self.unsent -= 1;
        let now = Instant::now();
        self.last_took = self.front_since.map(|since| now - since);
        self.front_since = (!self.in_flight.is_empty()).then_some(now);
        self.recorder.completed(
            self.info.index,
            done.count,
            self.last_took.unwrap_or_default(),
            self.front_since,
        );
        if let Some(next) = self.in_flight.front() {
            next.started(self.info);
        }
        let batch = Batch::results(done.calls(), frame, fds, done.task, self.info);
        done.finish(panicked, failed, batch, self.info, self.last_took);
        if self.max_resident.is_some() {
            self.check_memory();
        }
        Ok(())
    }

    /// Ends the worker for good: lets it exit by itself within `grace`, kills it if it still
    /// runs, waits for it, and returns how it ended and the jobs it held. It leaves its slot
    /// (see [`Worker::leave_slot`]).
    pub(super) fn in_flight_and_reap(mut self, grace: Duration) -> (Reaped, VecDeque<Job>) {
        self.leave_slot();
        let jobs = std::mem::take(&mut self.in_flight);
        (self.process.reap_within(grace), jobs)
    }

    /// Kills the worker (SIGKILL) through its handle, after its peak memory is read for the
    /// pool's insights: once it is killed, there is none left to read.
    pub(crate) fn kill(&mut self) {
        self.read_peak();
        self.process.kill();
    }

    /// Reads the worker's peak resident memory into its slot's insights, if it still runs.
    pub(super) fn read_peak(&self) {
        if let Some(bytes) = sys::peak_resident(self.info.pid) {
            self.recorder.peak(self.info.index, bytes);
        }
    }

    /// The worker leaves its slot for good (it died, or the pool shuts down): its peak
    /// memory, ready time and unfinished call's time go to the slot's insights.
    pub(super) fn leave_slot(&self) {
        self.read_peak();
        self.retire_from_slot();
    }

    /// The worker leaves its slot to be told to stop: as [`Worker::leave_slot`], but its
    /// peak memory comes in its BYE frame, read by [`Worker::read_bye`].
    pub(super) fn retire_from_slot(&self) {
        self.recorder.left(self.info.index, Instant::now());
    }

    /// Reads what a worker told to stop still sends: its BYE frame, whose peak memory goes
    /// to the slot's insights. False once its stream has ended (or failed).
    pub(super) fn read_bye(&mut self) -> bool {
        let recorder = Arc::clone(&self.recorder);
        let index = self.info.index;
        let more = self.read_frames(|frame| {
            if let Ok(FromWorker::Bye { peak: Some(bytes) }) = FromWorker::decode(&frame) {
                recorder.peak(index, bytes);
            }
        });
        matches!(more, Ok(true))
    }
}

fn out_of_turn(message: Descriptors) -> Cause {
    Cause::Protocol(format!("a descriptors frame out of turn ({message:?})"))
}

/// Kills (if needed) and reaps a worker whose end says nothing the pool needs.
pub(super) fn reap(worker: Worker) {
    worker.process.release();
}
