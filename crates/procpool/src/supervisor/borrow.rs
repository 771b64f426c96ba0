//! Borrowed workers: a blocking call borrows idle workers from the supervisor and talks to them
//! from the calling thread.
//!
//! Through the supervisor a call wakes four threads in turn (caller → supervisor → worker →
//! supervisor → caller); directly it wakes two (caller → worker → caller), as a bare pipe
//! round trip does. Only the plain path runs here: the jobs are written and their results read
//! and delivered. Anything else (an end of stream, a frame out of turn, a deadline passed, an
//! exit) gives the worker back with its job and the cause, and the supervisor settles it as
//! it does for the workers it drives itself: an error, a retry, a replacement.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::conn::{Cause, Worker};
use super::hub::{Hub, Phase};
use super::{DEPTH, EXIT_GRACE};
use crate::job::Job;
use crate::sys::{self, PollFd};
use crate::watch;
use crate::wire::FromWorker;

/// Runs `jobs` from this thread on borrowed workers, as the supervisor would: up to
/// [`DEPTH`] jobs at a time on each (one near the end of the jobs, after a long job: see
/// [`Worker::depth`]), the next one written as soon as a worker has room.
/// Borrows `workers` idle workers (fewer when there are fewer jobs), and only if that many
/// are idle and nothing is queued; otherwise returns false at once, with `jobs` untouched,
/// to go through the queue.
///
/// Returns once every job has been delivered or handed to the supervisor: a worker that
/// fails goes back with what it held, and then so does every other worker and the jobs left
/// go to the queue (see [`hand_over`]); so they do once the calls are cancelled, as a map
/// cancels its own at its first failure. Before it would block, the thread calls
/// `while_waiting`, which does some useful work (decoding the results already in) and says
/// whether it did; a `terminate` meanwhile waits for that step to end.
pub(crate) fn run(
    shared: &Hub,
    jobs: &mut VecDeque<Job>,
    workers: usize,
    while_waiting: &mut dyn FnMut() -> bool,
) -> bool {
    let wanted = workers.min(jobs.len());
    let workers = {
        let mut state = shared.lock();
        let lendable = wanted > 0
            && matches!(state.phase, Phase::Running)
            && state.queue.is_empty()
            && state.idle.len() >= wanted;
        if !lendable {
            return false;
        }
        let at = state.idle.len() - wanted;
        state.lent += wanted;
        state.borrowers += 1;
        state.idle.split_off(at)
    };
    for job in jobs.iter_mut() {
        job.accept();
    }
    // Declared before the workers, so dropped after them: a closed pool winds down only once
    // this call can queue nothing more.
    let _borrowing = Borrowing(shared);
    let mut held: Vec<Borrowed> = workers
        .into_iter()
        .map(|worker| Borrowed {
            shared,
            worker: Some(worker),
            failed: false,
            early: Vec::new(),
            early_more: None,
        })
        .collect();
    let mut fds = Vec::with_capacity(2 * held.len());
    let mut slept_out = false;
    loop {
        if held.iter().any(|b| b.failed) || cancelled(jobs, &held) {
            hand_over(shared, jobs, &mut held);
            return true;
        }
        // One job to each worker first, then a second to each that may hold one, as the
        // supervisor does.
        let workers = held.len();
        for depth in 1..=DEPTH {
            for borrowed in &mut held {
                borrowed.feed(jobs, depth, workers);
            }
        }
        for borrowed in &mut held {
            borrowed.give_back_if_done();
        }
        held.retain(|borrowed| borrowed.worker.is_some());
        if held.is_empty() {
            // Every borrowed worker went back done: with no jobs left, or having run all it
            // may (`max_tasks_per_child`), and then the jobs left go through the queue.
            if !jobs.is_empty() {
                shared.requeue(jobs.drain(..));
            }
            return true;
        }
        fds.clear();
        // In a host's pool, calls may be cancelled by another thread (the agent cancels the
        // calls it no longer owns), which does not wake this one: it looks again this often.
        let mut deadline: Option<Instant> = shared.cancel_look.map(|look| Instant::now() + look);
        let closing = shared.closing.load(Ordering::SeqCst);
        for worker in held.iter().filter_map(|b| b.worker.as_ref()) {
            let exit_fd = worker
                .process
                .exit_fd()
                .expect("only workers with one are lent");
            fds.push(PollFd::new(worker.socket.as_raw_fd(), worker.wants_write()));
            fds.push(PollFd::new(exit_fd, false));
            if let Some((at, _)) = worker.deadline(shared.task_timeout) {
                deadline = Some(deadline.map_or(at, |d| d.min(at)));
            }
            // While the pool closes, a worker held here may be stopped: look again soon.
            if closing && let Some(at) = worker.next_stop_check(Instant::now()) {
                deadline = Some(deadline.map_or(at, |d| d.min(at)));
            }
        }
        // Watching for results (see `watch`) holds a CPU. With more workers than CPUs, that
        // is always a CPU a worker waits for; with as many, while jobs are still to be fed:
        // then this thread sleeps, and only watches for the last results.
        let cpus = shared.cpus();
        let may_watch = held.len() < cpus || (held.len() == cpus && jobs.is_empty());
        // A sleep that ended at a deadline with nothing to read is not followed by a
        // watch, which would find nothing and make the pool's next watches sleep.
        let may_watch = may_watch && !slept_out;
        slept_out = false;
        let polled = if while_waiting() {
            sys::poll(&mut fds, Some(Duration::ZERO))
        } else if watch(shared, &mut fds, &mut held, may_watch) {
            // The watch read what came (see `Borrowed::early`), or its last poll found a
            // descriptor ready and left what it found in `fds`.
            Ok(1)
        } else {
            // A sleep until `close` must end at `close` (which then has this thread look for
            // stopped workers): the descriptor that becomes readable then goes after the
            // workers' pairs, which the loop below takes two by two. A watch ends by itself.
            if !closing {
                fds.push(PollFd::new(shared.closed_rx.as_raw_fd(), false));
            }
            let slept = sys::poll(
                &mut fds,
                deadline.map(|at| at.saturating_duration_since(Instant::now())),
            );
            slept_out = matches!(slept, Ok(0));
            slept
        };
        if let Err(error) = polled {
            for borrowed in &mut held {
                borrowed.give_back(Some(Cause::Protocol(format!("cannot poll: {error}"))));
            }
            continue;
        }
        let now = Instant::now();
        let drained = jobs.is_empty();
        for (borrowed, polled) in held.iter_mut().zip(fds.chunks_exact(2)) {
            borrowed.service(&polled[0], &polled[1], drained);
            borrowed.expire(now);
        }
    }
}

/// Whether the calls of this run were cancelled. Its jobs are one call's, or one map's, and
/// share one collector: the first job held anywhere says it for all.
fn cancelled(jobs: &VecDeque<Job>, held: &[Borrowed]) -> bool {
    jobs.front()
        .or_else(|| {
            held.iter()
                .filter_map(|b| b.worker.as_ref())
                .find_map(|w| w.in_flight.front())
        })
        .is_some_and(Job::is_cancelled)
}

/// Gives every held worker back, with the jobs it holds, and queues the jobs left: from now
/// on the supervisor runs them. Once a worker has failed, the supervisor settles its jobs,
/// and a failure it delivers may cancel the others (a map's first failure does), which it
/// could not end on workers that this thread holds while it waits on them; once the calls
/// are cancelled, its cancel pass ends them (see `Supervisor::cancel_in`).
fn hand_over(shared: &Hub, jobs: &mut VecDeque<Job>, held: &mut Vec<Borrowed>) {
    for borrowed in held.iter_mut() {
        borrowed.give_back(None);
    }
    held.clear();
    if !jobs.is_empty() {
        shared.requeue(jobs.drain(..));
    }
}

/// Watches the held workers (see [`crate::watch`]) if `may_watch` and the pool's watches
/// have been paying off; returns whether one has something to say. One worker with nothing
/// to write (an `apply`'s) is looked at by reading its socket, which keeps what came in
/// [`Borrowed::early`]: a poll and then a read would cost two system calls a look.
/// Otherwise `fds` are polled (one system call a look for every worker), and what the last
/// poll found is left in them.
fn watch(shared: &Hub, fds: &mut [PollFd], held: &mut [Borrowed], may_watch: bool) -> bool {
    let watcher = || {
        shared
            .watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    };
    if !may_watch || !watcher().should_watch() {
        return false;
    }
    let watched = match held {
        [one] if one.worker.as_ref().is_some_and(|w| !w.wants_write()) => {
            watch::watch_by(watch::WINDOW, || one.look())
        }
        _ => watch::watch(fds, watch::WINDOW),
    };
    watcher().record(watched.paid_off);
    watched.ready
}

/// One blocking call running on borrowed workers, counted in `State::borrowers` until it
/// ends, even in a panic.
struct Borrowing<'a>(&'a Hub);

impl Drop for Borrowing<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.borrowers -= 1;
        let winding_down = !matches!(state.phase, Phase::Running);
        drop(state);
        if winding_down {
            self.0.wake();
        }
    }
}

/// A worker this thread holds; given back to the pool when dropped, even in a panic.
struct Borrowed<'a> {
    shared: &'a Hub,
    worker: Option<Worker>,
    /// Whether it went back because it failed.
    failed: bool,
    /// Frames a look of the watch read, and what the read said (see
    /// [`Worker::read_frames`]), for [`service`](Borrowed::service).
    early: Vec<Vec<u8>>,
    early_more: Option<std::io::Result<bool>>,
}

impl Borrowed<'_> {
    /// Gives the worker jobs from `jobs` until it holds `depth` (or fewer near the end of
    /// the jobs that `workers` share: see [`Worker::depth`]), within its
    /// `max_tasks_per_child`, and writes each at once.
    fn feed(&mut self, jobs: &mut VecDeque<Job>, depth: usize, workers: usize) {
        let Some(worker) = &mut self.worker else {
            return;
        };
        let max = self.shared.max_tasks_per_child;
        while worker.in_flight.len() < depth.min(worker.depth(jobs.len(), workers))
            && !worker.spent(max)
        {
            let Some(job) = jobs.pop_front() else {
                return;
            };
            worker.assign(job, Instant::now());
            // An error means the worker is gone; its end of stream tells.
            let _ = worker.flush();
        }
    }

    /// Gives the worker back if it holds nothing after `feed`: no jobs are left, or it has run
    /// all it may.
    fn give_back_if_done(&mut self) {
        if self.worker.as_ref().is_some_and(|w| w.in_flight.is_empty()) {
            self.give_back(None);
        }
    }

    /// Writes what the socket takes, reads what arrived, and gives the worker back if
    /// something went wrong, or once it is done and `drained` (no jobs are left to feed it).
    fn service(&mut self, socket: &PollFd, exit: &PollFd, drained: bool) {
        let Some(worker) = &mut self.worker else {
            return;
        };
        if socket.writable() {
            // An error means the worker is gone; its end of stream tells.
            let _ = worker.flush();
        }
        let early_more = self.early_more.take();
        if !(socket.readable() || exit.readable() || early_more.is_some()) {
            return;
        }
        let mut frames = std::mem::take(&mut self.early);
        let more = match early_more {
            // What a look of the watch read, the socket not polled since.
            Some(more) if !socket.readable() => more,
            _ => worker.read_frames(|frame| frames.push(frame)),
        };
        for frame in frames {
            let outcome = match FromWorker::decode(&frame) {
                Ok(FromWorker::Results(results)) => worker.complete_front(results, frame),
                Ok(FromWorker::Descriptors(message)) => worker.on_descriptors(message),
                Ok(FromWorker::Bye { .. }) => {
                    Err(Cause::Protocol("a BYE frame before SHUTDOWN".into()))
                }
                Ok(_) => Err(Cause::Protocol("a handshake frame after READY".into())),
                Err(e) => Err(Cause::Protocol(e.to_string())),
            };
            if let Err(cause) = outcome {
                return self.give_back(Some(cause));
            }
        }
        let cause = match more {
            // Exited, though something else (a child the task forked) keeps the socket open:
            // what it wrote before is taken above, the rest is the supervisor's to settle.
            Ok(true) if exit.readable() => Some(Cause::Gone),
            Ok(true) if worker.in_flight.is_empty() && drained => None,
            Ok(true) => return,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Some(Cause::Protocol(e.to_string()))
            }
            Ok(false) | Err(_) => Some(Cause::Gone),
        };
        self.give_back(cause);
    }

    /// One look of a watch: reads what the worker's socket has now, without waiting; true if
    /// that was a frame, the end of the stream or an error, kept for `service`.
    fn look(&mut self) -> bool {
        let Some(worker) = &mut self.worker else {
            return false;
        };
        let early = &mut self.early;
        let more = worker.read_frames(|frame| early.push(frame));
        if early.is_empty() && matches!(more, Ok(true)) {
            return false;
        }
        self.early_more = Some(more);
        true
    }

    /// Kills the worker if its job ran past its deadline, and gives it back.
    fn expire(&mut self, now: Instant) {
        let Some(worker) = &mut self.worker else {
            return;
        };
        if self.shared.closing.load(Ordering::Relaxed) && worker.stopped_too_long(now) {
            worker.kill();
            return self.give_back(Some(Cause::Stopped(EXIT_GRACE)));
        }
        let Some((deadline, timeout)) = worker.deadline(self.shared.task_timeout) else {
            return;
        };
        if deadline <= now {
            // Through its pidfd: never another process.
            worker.kill();
            self.give_back(Some(Cause::TimedOut(timeout)));
        }
    }

    fn give_back(&mut self, cause: Option<Cause>) {
        self.failed |= cause.is_some();
        if let Some(worker) = self.worker.take() {
            self.shared.give_back(worker, cause);
        }
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        // Only a panic gets here holding a worker. One with no job is as good as idle; one
        // with jobs has results on the way that nobody will read.
        let Some(worker) = &mut self.worker else {
            return;
        };
        if worker.in_flight.is_empty() {
            self.give_back(None);
        } else {
            // Through its pidfd: never another process.
            worker.kill();
            self.give_back(Some(Cause::Abandoned));
        }
    }
}
