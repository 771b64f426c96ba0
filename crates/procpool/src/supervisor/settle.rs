//! How the supervisor settles what happens to workers: deadlines, deaths, retirement,
//! replacements and the pool's shutdown. Every job a worker held ends here, once.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{Cause, Worker, reap};
use super::drive::Supervisor;
use super::hub::Phase;
use super::{EXIT_GRACE, EXIT_WAIT, GRACE, MAX_START_FAILURES};
use crate::error::{BuildError, Error, ErrorKind, WorkerExit, WorkerInfo};
use crate::event::Event;
use crate::job::Job;
use crate::memory::EXIT_OUT_OF_MEMORY;
use crate::start;
use crate::sys::{self, PollFd};
use crate::trace;
use crate::wire::{self, FrameReader};

impl Supervisor {
    /// Kills the retiring workers that did not exit in time; their end of stream follows, and
    /// they are reaped where retiring workers are polled.
    pub(super) fn expire_retiring(&mut self, now: Instant) {
        for worker in &mut self.retiring {
            if worker.exit_by.is_some_and(|by| by <= now) {
                worker.exit_by = None;
                // Through its handle: never a recycled pid.
                worker.process.kill();
            }
        }
    }

    /// Kills the busy workers that have stayed stopped (SIGSTOP) for [`EXIT_GRACE`] while
    /// the pool closes (see [`Worker::stopped_too_long`]). Their jobs fail as a dead
    /// worker's, saying why.
    pub(super) fn expire_stopped(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            let Some(worker) = &mut self.slots[index] else {
                continue;
            };
            if worker.stopped_too_long(now) {
                worker.kill();
                self.on_death(index, Cause::Stopped(EXIT_GRACE));
            }
        }
    }

    /// Kills the workers whose job ran past its deadline; their jobs end as timed out.
    pub(super) fn expire(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            let Some(worker) = &mut self.slots[index] else {
                continue;
            };
            let Some((deadline, timeout)) = worker.deadline(self.config.task_timeout) else {
                continue;
            };
            if deadline <= now {
                // Through its handle: never a recycled pid.
                worker.kill();
                self.on_death(index, Cause::TimedOut(timeout));
            }
        }
    }

    /// With no new work coming (the pool is closed and nothing is queued) and no blocking
    /// call running on borrowed workers: tells each worker that holds no job to exit, at
    /// once, as Python's pool does, and each of the others once its jobs are done. (A job
    /// whose worker dies may still run again, on the replacement that death starts.)
    /// Returns false once every worker has exited and been reaped.
    pub(super) fn wind_down(&mut self, borrowers: usize) -> bool {
        if borrowers > 0 {
            return true;
        }
        let mut busy = false;
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|w| !w.in_flight.is_empty()) {
                busy = true;
                continue;
            }
            if let Some(mut worker) = slot.take() {
                self.pids_changed = true;
                let info = worker.info;
                self.shared
                    .counters
                    .events
                    .emit(|| Event::WorkerRecycled(info));
                worker.retire_from_slot();
                worker.control.push_back(wire::shutdown_frame());
                worker.exit_by = Some(Instant::now() + EXIT_GRACE);
                let _ = worker.flush();
                self.retiring.push(worker);
            }
        }
        busy || !self.retiring.is_empty()
    }

    /// Retires the worker in slot `index` once it has run its `max_tasks_per_child` jobs and
    /// holds none.
    pub(super) fn retire_if_spent(&mut self, index: usize) {
        let worker = self.slots[index].as_ref().expect("a worker is in the slot");
        if worker.spent(self.config.max_tasks_per_child) && worker.in_flight.is_empty() {
            self.retire(index);
        }
    }

    /// Sends the worker in slot `index` its SHUTDOWN and starts its replacement.
    pub(super) fn retire(&mut self, index: usize) {
        let mut worker = self.slots[index].take().expect("a worker is in the slot");
        trace::debug!(
            worker = index,
            pid = worker.info.pid,
            over_memory = worker.over_memory,
            "worker recycled"
        );
        if worker.over_memory {
            self.shared.counters.memory_recycled();
        }
        self.shared
            .counters
            .events
            .emit(|| Event::WorkerRecycled(worker.info));
        self.pids_changed = true;
        worker.retire_from_slot();
        worker.control.push_back(wire::shutdown_frame());
        worker.exit_by = Some(Instant::now() + EXIT_GRACE);
        let _ = worker.flush();
        self.retiring.push(worker);
        self.replace(index);
    }

    /// Handles a message from a retiring worker; true once it has gone.
    pub(super) fn service_retiring(worker: &mut Worker, fd: &PollFd) -> bool {
        if fd.writable() && worker.flush().is_err() {
            return true;
        }
        if !fd.readable() {
            return false;
        }
        // A retiring worker holds no jobs and has nothing left to say but its BYE and its
        // end of stream.
        !worker.read_bye()
    }

    /// Ends the cancelled jobs the workers in the slots hold. A worker running one is killed
    /// (what it does is not wanted) and replaced, the job fails as cancelled, and the jobs
    /// behind it go back to the queue. A cancelled job waiting behind another on its worker
    /// ends now; it still runs when its turn comes (it was written to the worker, or is
    /// held for the worker's TAKING and written then), and its results are dropped. Not
    /// counted as a death.
    pub(super) fn cancel_running(&mut self) {
        for index in 0..self.slots.len() {
            self.cancel_in(index);
        }
    }

    /// Ends the cancelled jobs the worker in slot `index` holds, as
    /// [`cancel_running`](Supervisor::cancel_running) does; returns whether that ended the
    /// worker (its running job was cancelled).
    pub(super) fn cancel_in(&mut self, index: usize) -> bool {
        let Some(worker) = &mut self.slots[index] else {
            return false;
        };
        for job in worker.in_flight.iter_mut().skip(1) {
            if job.is_cancelled() {
                job.end_cancelled();
            }
        }
        if !worker.in_flight.front().is_some_and(Job::is_cancelled) {
            return false;
        }
        let worker = self.slots[index].take().expect("a worker is in the slot");
        self.pids_changed = true;
        let info = worker.info;
        let (reaped, mut held) = worker.in_flight_and_reap(Duration::ZERO);
        self.shared.counters.events.emit(|| Event::WorkerExited {
            worker: info,
            exit: reaped.exit,
            killed_by_pool: true,
        });
        if let Some(front) = held.pop_front() {
            let error = Error::cancelled(front.task);
            front.fail(&error);
        }
        self.requeue_front(held);
        self.replace(index);
        true
    }

    /// Puts jobs a worker held back at the front of the queue, in their order; those
    /// cancelled meanwhile end as cancelled instead of starting.
    fn requeue_front(&mut self, jobs: VecDeque<Job>) {
        let (cancelled, jobs): (VecDeque<Job>, VecDeque<Job>) =
            jobs.into_iter().partition(Job::is_cancelled);
        let mut state = self.shared.lock();
        for job in jobs.into_iter().rev() {
            state.queue.push_front(job);
        }
        drop(state);
        for job in cancelled {
            let error = Error::cancelled(job.task);
            job.fail(&error);
        }
    }

    /// The worker in slot `index` was held by a call whose thread panicked: end it (what is
    /// left on its socket is unknown), end what it held (nobody waits for it) and start a
    /// replacement. The worker did not die, and is not counted as a death.
    pub(super) fn abandon(&mut self, index: usize) {
        let worker = self.slots[index].take().expect("a worker is in the slot");
        self.pids_changed = true;
        let info = worker.info;
        let (reaped, held) = worker.in_flight_and_reap(Duration::ZERO);
        self.shared.counters.events.emit(|| Event::WorkerExited {
            worker: info,
            exit: reaped.exit,
            killed_by_pool: true,
        });
        for job in held {
            let error = Error::abandoned(job.task);
            job.fail(&error);
        }
        self.replace(index);
    }

    /// The worker in slot `index` is gone or misbehaved: reap it, settle what it held, and
    /// start a replacement.
    pub(super) fn on_death(&mut self, index: usize, cause: Cause) {
        self.shared.counters.worker_died();
        let mut worker = self.slots[index].take().expect("a worker is in the slot");
        // An end of stream the pool caused itself, by shutting the socket down after a
        // write that failed for good, is said as such.
        let cause = match (cause, worker.write_failed.take()) {
            (Cause::Gone, Some(error)) => Cause::WriteFailed(error),
            (cause, _) => cause,
        };
        self.pids_changed = true;
        let info = worker.info;
        let was_ready = worker.ready;
        // A worker whose socket ended is usually exiting: its own status says more than the
        // kill that would end it now. The wait holds up the supervisor thread, up to
        // EXIT_WAIT, only for a worker whose socket ended while it goes on running (a task
        // that closed its socket), which this waits out once, then kills.
        // A write that failed because the worker had closed its socket (EPIPE, ECONNRESET)
        // says the same.
        let grace = match &cause {
            Cause::Gone => EXIT_WAIT,
            Cause::WriteFailed(error) if error.peer_gone => EXIT_WAIT,
            Cause::Protocol(_)
            | Cause::WriteFailed(_)
            | Cause::TimedOut(_)
            | Cause::Stopped(_)
            | Cause::Abandoned => Duration::ZERO,
        };
        let (reaped, mut held) = worker.in_flight_and_reap(grace);
        let exit = reaped.exit;
        trace::info!(
            worker = info.index,
            pid = info.pid,
            exit = %exit,
            killed_by_pool = reaped.killed,
            cause = ?cause,
            "worker died"
        );
        self.shared.counters.events.emit(|| Event::WorkerExited {
            worker: info,
            exit,
            killed_by_pool: reaped.killed,
        });
        let mut requeue = VecDeque::new();
        // A worker of a pool with a memory limit that exited by itself with the code its
        // allocation failure gives (see `crate::memory`) went over the limit.
        let over_limit = self.config.memory.limit.filter(|_| {
            !reaped.killed
                && exit == WorkerExit::Code(EXIT_OUT_OF_MEMORY)
                && matches!(cause, Cause::Gone | Cause::WriteFailed(_))
        });
        // A job sent behind the SETUP (see `Supervisor::dispatch`) of a worker that ended its
        // stream itself before its READY came never ran: the worker reads the job only once
        // it has written its READY, and the pool reads what came before the end. Any other
        // end (a frame lost to a failed read, a write of the job that failed) may have
        // followed a READY, or come of the job: it is settled as any other.
        let never_ran = !was_ready
            && match &cause {
                Cause::Gone => true,
                Cause::WriteFailed(error) => error.peer_gone,
                _ => false,
            };
        if never_ran {
            requeue.extend(held.drain(..).filter(|job| !job.has_ended()));
        } else if let Some(mut first) = held.pop_front() {
            let died = matches!(
                cause,
                Cause::Gone | Cause::Protocol(_) | Cause::WriteFailed(_)
            );
            if first.has_ended() {
                // Cancelled while it waited behind another job, and ended then as cancelled
                // (`cancel_in`); the worker ran it all the same. Its calls are not run again.
            } else if let (1, Some(limit)) = (first.count, over_limit) {
                // Not run again: a call that needs more than the limit would fail again.
                let error =
                    Error::out_of_memory(first.task, info, exit, limit).with_retries(first.retried);
                first.fail(&error);
            } else if first.count == 1 && died && first.retried < self.config.retries {
                first.retried += 1;
                requeue.push_back(first);
            } else if first.count == 1 {
                let error = match &cause {
                    Cause::Gone if reaped.killed => Error::died(first.task, info, exit)
                        .killed_by_the_pool(&format!(
                            "its socket closed and it had not exited {EXIT_WAIT:?} later"
                        )),
                    Cause::Gone => Error::died(first.task, info, exit),
                    Cause::Protocol(message) => Error::protocol(first.task, info, exit, message),
                    Cause::TimedOut(timeout) => Error::timed_out(first.task, info, *timeout),
                    Cause::WriteFailed(error) if reaped.killed => Error::died(first.task, info, exit)
                        .killed_by_the_pool(&format!(
                            "it could not be written to ({})",
                            error.message
                        )),
                    Cause::WriteFailed(_) => Error::died(first.task, info, exit),
                    Cause::Stopped(waited) => Error::died(first.task, info, exit)
                        .killed_by_the_pool(&format!(
                            "it was stopped by a signal while the pool closed, and had not continued {waited:?} later"
                        )),
                    Cause::Abandoned => Error::abandoned(first.task),
                };
                let error = error.with_retries(first.retried);
                first.fail(&error);
            } else {
                // Which call of the chunk killed the worker (or ran too long) is unknown: run
                // each of its calls on its own, so that only the one that kills a worker (or
                // runs past its own timeout) again fails.
                match first.split(|| self.shared.next_job_id()) {
                    Some(singles) => requeue.extend(singles),
                    None => {
                        let error = Error::died(first.task, info, exit);
                        first.fail(&error);
                    }
                }
            }
        }
        // The jobs behind the first had not started: they go back to the front of the queue.
        requeue.extend(held);
        self.requeue_front(requeue);
        if self.startup.is_some() {
            let error = match cause {
                Cause::Protocol(message) => BuildError::handshake(info, &message),
                Cause::Gone
                | Cause::WriteFailed(_)
                | Cause::TimedOut(_)
                | Cause::Stopped(_)
                | Cause::Abandoned => BuildError::died(info, exit),
            };
            self.fail_startup(error);
            return;
        }
        if !was_ready {
            self.start_failures += 1;
            if self.start_failures >= MAX_START_FAILURES {
                let error = Error::new(
                    ErrorKind::PoolBroken,
                    format!(
                        "the pool cannot start workers any more: {} in a row died before they were ready, the last: {info} {exit}",
                        self.start_failures
                    ),
                );
                self.shared.set_phase(Phase::Broken(error));
                return;
            }
        }
        self.replace(index);
    }

    /// Starts a worker in slot `index` if the pool wants one (see
    /// [`wants_workers`](Supervisor::wants_workers)): a closed pool with nothing queued
    /// leaves the slot [`vacant`](Supervisor::vacant), to be filled if calls are queued
    /// again.
    pub(super) fn replace(&mut self, index: usize) {
        self.vacant[index] = !self.wants_workers();
        if self.vacant[index] {
            return;
        }
        if let Err(error) = self.start(index) {
            let error = Error::new(
                ErrorKind::PoolBroken,
                format!("cannot start a replacement worker: {error}"),
            );
            self.shared.set_phase(Phase::Broken(error));
        }
    }

    pub(super) fn start(&mut self, index: usize) -> io::Result<()> {
        let spawned = Instant::now();
        let start::Started {
            process,
            socket,
            server,
        } = self.starter.start()?;
        self.shared.counters.worker_started();
        self.shared.recorder.started(index);
        trace::debug!(worker = index, pid = process.pid(), "worker started");
        let started = WorkerInfo {
            index,
            pid: process.pid(),
        };
        self.shared
            .counters
            .events
            .emit(|| Event::WorkerStarted(started));
        let info = WorkerInfo {
            index,
            pid: process.pid(),
        };
        let initializer = self
            .config
            .initializer
            .as_ref()
            .map(|(name, args)| (*name, args.as_slice()));
        // Waiting workers may watch while each has a CPU of its own: then a watch takes time
        // from nobody else's work.
        let watch = if self.config.processes <= self.shared.cpus() {
            self.config.watch
        } else {
            Duration::ZERO
        };
        let mut worker = Worker {
            info,
            process,
            socket,
            reader: FrameReader::default(),
            received: VecDeque::new(),
            reads_fds: false,
            sends_fds: false,
            offered_fds: None,
            control: VecDeque::from([wire::setup_frame(
                index as u32,
                watch,
                self.config.backtraces,
                self.config.memory.limit,
                self.config.max_tasks_per_child,
                initializer,
            )]),
            control_written: 0,
            in_flight: VecDeque::new(),
            front_since: None,
            last_took: None,
            unsent: 0,
            job_written: 0,
            fds_sent: 0,
            ready: false,
            server,
            assigned: 0,
            max_resident: self.config.memory.max_per_child,
            over_memory: false,
            exit_by: None,
            stopped_since: None,
            stop_checked: None,
            socket_ended: false,
            write_failed: None,
            spawned,
            recorder: Arc::clone(&self.shared.recorder),
        };
        let _ = worker.flush();
        self.slots[index] = Some(worker);
        self.pids_changed = true;
        Ok(())
    }

    pub(super) fn fail_startup(&mut self, error: BuildError) {
        if let Some(ready) = self.startup.take() {
            let _ = ready.send(Err(error));
        }
        self.shared.set_phase(Phase::Terminating);
    }

    /// Stops and reaps every worker left; whatever they held ends as terminated.
    ///
    /// Workers are asked to stop (SIGTERM) and given [`GRACE`] to exit; those still running
    /// then are killed (SIGKILL).
    pub(super) fn shut_down(&mut self) {
        self.recall_lent();
        let dropped: Vec<Job> = self.shared.lock().queue.drain(..).collect();
        for job in dropped {
            let error = Error::terminated(job.task);
            job.fail(&error);
        }
        for worker in self.slots.iter().flatten() {
            worker.leave_slot();
        }
        let mut workers: Vec<Worker> = self
            .slots
            .iter_mut()
            .filter_map(Option::take)
            .chain(self.retiring.drain(..))
            .collect();
        for worker in &mut workers {
            for job in std::mem::take(&mut worker.in_flight) {
                let error = Error::terminated(job.task);
                job.fail(&error);
            }
        }
        stop_within(&mut workers, GRACE);
        for worker in workers {
            reap(worker);
        }
        for pid in self.shared.lock().pids.iter_mut() {
            *pid = None;
        }
        // The forkserver, if any, goes before the pool says it has finished: it reaps the
        // workers it was asked to reap, then exits (up to a second when it is stuck), so a
        // `join_timeout` that sees the pool finished does not wait for it past its timeout.
        self.starter.stop();
        self.finished = true;
        self.shared.mark_finished();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Only a panic in the supervisor gets here: break the pool, so that submissions are
        // refused, and settle every job and worker.
        let error = Error::new(
            ErrorKind::PoolBroken,
            "the pool's supervisor thread panicked",
        );
        self.shared.set_phase(Phase::Broken(error));
        self.shut_down();
    }
}

/// Asks every worker to stop (SIGTERM) and waits until they have all exited or `grace` has
/// passed; the caller kills and reaps what is left.
fn stop_within(workers: &mut [Worker], grace: Duration) {
    let deadline = Instant::now() + grace;
    let mut waiting = Vec::new();
    for (at, worker) in workers.iter_mut().enumerate() {
        if worker.process.signal(sys::SIGTERM) {
            waiting.push((at, worker.process.exit_fd()));
        }
    }
    let mut fds = Vec::new();
    loop {
        waiting.retain(|(at, _)| workers[*at].process.try_exit().is_none());
        let left = deadline.saturating_duration_since(Instant::now());
        if waiting.is_empty() || left.is_zero() {
            return;
        }
        fds.clear();
        fds.extend(
            waiting
                .iter()
                .filter_map(|(_, fd)| fd.map(|fd| PollFd::new(fd, false))),
        );
        // Without an exit descriptor for every worker (a kernel before 5.3), look again soon.
        let wait = if fds.len() == waiting.len() {
            left
        } else {
            left.min(Duration::from_millis(1))
        };
        if sys::poll(&mut fds, Some(wait)).is_err() {
            return;
        }
    }
}
