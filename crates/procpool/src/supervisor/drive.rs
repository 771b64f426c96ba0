//! The supervisor's poll loop: it hands queued jobs to workers, lends idle ones to callers,
//! and reads what every worker it holds says.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::Instant;

use super::conn::reap;
use super::conn::{Cause, Worker};
use super::hub::{Hub, Phase, Returned, State};
use super::{Config, DEPTH, GRACE};
use crate::error::{BuildError, Error, ErrorKind};
use crate::job::Job;
use crate::start::Starter;
use crate::sys::{self, PollFd};
use crate::wire::FromWorker;

pub(super) struct Supervisor {
    pub(super) config: Config,
    pub(super) starter: Starter,
    pub(super) shared: Arc<Hub>,
    pub(super) wake_rx: UnixStream,
    pub(super) slots: Vec<Option<Worker>>,
    /// For each slot whose worker is lent out (idle in `State::idle` or held by a caller).
    pub(super) away: Vec<Option<Away>>,
    /// Workers told to shut down, waited for until they exit.
    pub(super) retiring: Vec<Worker>,
    /// The slots whose first worker is started after the pool is ready
    /// (`Builder::wait_for_workers`): one a turn of the loop, while the pool runs.
    pub(super) unstarted: std::ops::Range<usize>,
    /// The slots whose worker died or was retired while the pool was closed with nothing
    /// queued, and so was not replaced (see [`Supervisor::replace`]): filled again if calls
    /// are queued later. (A slot emptied by `wind_down` stays empty.)
    pub(super) vacant: Vec<bool>,
    /// Present until every first worker is ready (or one failed).
    pub(super) startup: Option<Sender<Result<(), BuildError>>>,
    pub(super) start_failures: u32,
    pub(super) fingerprint: u64,
    /// The last forkserver one of whose workers was ready (with the task registry of this
    /// process): its later workers are copies of that one.
    pub(super) verified_server: Option<u64>,
    /// Whether a slot's worker changed since the pids were last published to callers.
    pub(super) pids_changed: bool,
    /// Set once `shut_down` has run; a supervisor dropped without it (a panic) cleans up in
    /// `Drop`, so that no caller waits forever on a result.
    pub(super) finished: bool,
}

/// A worker out of its slot, lent to callers: what the supervisor keeps of it to watch it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Away {
    pid: u32,
    /// Its exit descriptor, which stays open while it is away: only the supervisor closes a
    /// worker's descriptors, once it is back.
    exit_fd: RawFd,
    /// Its exit was seen while a caller held it: that caller gives it back, so it is not
    /// polled again meanwhile.
    exited: bool,
}

/// What a worker's socket said during one turn of the loop.
enum Event {
    Frame(Vec<u8>),
    Gone,
    /// Bytes that are not a frame, such as a length over the limit.
    Garbled(String),
}

impl Supervisor {
    pub(super) fn run(mut self) {
        // One after another, on this thread: a worker's PR_SET_PDEATHSIG fires when the
        // thread that started it ends, not its process, so workers cannot be started side
        // by side from threads that end sooner than the pool.
        self.starter.expect(self.config.processes);
        for index in 0..self.config.wait_for_workers {
            if let Err(error) = self.start(index) {
                self.fail_startup(BuildError::spawn(error));
                break;
            }
        }
        let mut fds = Vec::new();
        let mut owners = Vec::new();
        loop {
            if !self.turn() {
                break;
            }
            self.start_next_first();
            fds.clear();
            owners.clear();
            fds.push(PollFd::new(self.wake_rx.as_raw_fd(), false));
            for (index, worker) in self.slots.iter().enumerate() {
                if let Some(worker) = worker {
                    fds.push(PollFd::new(worker.socket.as_raw_fd(), worker.wants_write()));
                    owners.push(Owner::Slot(index));
                    // A task may fork a child that keeps the socket open, and then the end of
                    // stream would never come: the process's own exit tells.
                    if let Some(exit_fd) = worker.process.exit_fd() {
                        fds.push(PollFd::new(exit_fd, false));
                        owners.push(Owner::SlotExit(index, worker.info.pid));
                    }
                }
            }
            for (at, worker) in self.retiring.iter().enumerate() {
                // Once its socket has ended, a retiring worker is watched through its exit
                // alone (a socket at its end would poll readable for good).
                if !worker.socket_ended {
                    fds.push(PollFd::new(worker.socket.as_raw_fd(), worker.wants_write()));
                    owners.push(Owner::Retiring(at));
                }
                if let Some(exit_fd) = worker.process.exit_fd() {
                    fds.push(PollFd::new(exit_fd, false));
                    owners.push(Owner::RetiringExit(at));
                }
            }
            for (index, away) in self.away.iter().enumerate() {
                if let Some(away) = away
                    && !away.exited
                {
                    fds.push(PollFd::new(away.exit_fd, false));
                    owners.push(Owner::AwayExit(index, away.pid));
                }
            }
            let timeout = if self.unstarted.is_empty() || self.startup.is_some() {
                self.next_deadline()
                    .map(|deadline| deadline.saturating_duration_since(Instant::now()))
            } else {
                // More first workers to start: look at the sockets and go on.
                Some(std::time::Duration::ZERO)
            };
            if let Err(error) = sys::poll(&mut fds, timeout) {
                // poll fails only on bad arguments or a lack of kernel memory; neither gets
                // better by spinning, so stop as if terminated.
                let error = Error::new(
                    ErrorKind::PoolBroken,
                    format!("the supervisor cannot poll: {error}"),
                );
                self.shared.set_phase(Phase::Broken(error));
                break;
            }
            if fds[0].readable() {
                self.drain_wake();
            }
            // Retiring workers are handled last and from the back, so that removing one does
            // not shift the positions of the others still to be handled.
            let mut gone_retiring = Vec::new();
            for (fd, owner) in fds[1..].iter().zip(&owners) {
                if !(fd.readable() || fd.writable()) {
                    continue;
                }
                match *owner {
                    Owner::Slot(index) => self.service_slot(index, fd),
                    Owner::SlotExit(index, pid) => self.service_exit(index, pid),
                    Owner::Retiring(at) => {
                        let worker = &mut self.retiring[at];
                        if Self::service_retiring(worker, fd) {
                            // Its socket ended as it began to exit: it may still run its exit
                            // handlers, so it is reaped when it has exited (or at `exit_by`),
                            // where its exit can be watched; killed now only where it cannot.
                            if worker.process.exit_fd().is_some() {
                                worker.socket_ended = true;
                            } else {
                                gone_retiring.push(at);
                            }
                        }
                    }
                    Owner::RetiringExit(at) => gone_retiring.push(at),
                    Owner::AwayExit(index, pid) => self.service_away_exit(index, pid),
                }
            }
            gone_retiring.sort_unstable();
            gone_retiring.dedup();
            for at in gone_retiring.into_iter().rev() {
                let worker = self.retiring.swap_remove(at);
                reap(worker);
            }
            let now = Instant::now();
            self.expire(now);
            self.expire_retiring(now);
            if self.shared.closing.load(Ordering::SeqCst) {
                self.expire_stopped(now);
            }
        }
        self.shut_down();
    }

    /// Takes in what callers asked for and hands out queued jobs. Returns false when the
    /// supervisor's work is done.
    pub(super) fn turn(&mut self) -> bool {
        self.take_back_lent();
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        // A worker a caller holds belongs to a blocking call still running.
        let borrowers = state.borrowers;
        match state.phase.clone() {
            Phase::Terminating => return false,
            Phase::Broken(error) => {
                let dropped: Vec<Job> = state.queue.drain(..).collect();
                drop(state);
                for job in dropped {
                    job.fail(&error);
                }
                return self.wind_down(borrowers);
            }
            Phase::Running | Phase::Closed => {}
        }
        if self.startup.is_some() {
            return true;
        }
        // Before a closed pool winds down: a call cancelled while it runs after `close` ends
        // as cancelled, its worker killed, as before `close`.
        if self.shared.cancels.swap(false, Ordering::SeqCst) {
            let (cancelled, kept): (VecDeque<Job>, VecDeque<Job>) =
                state.queue.drain(..).partition(Job::is_cancelled);
            state.queue = kept;
            drop(state);
            for job in cancelled {
                let error = Error::cancelled(job.task);
                job.fail(&error);
            }
            self.cancel_running();
            state = shared.lock();
        }
        if matches!(state.phase, Phase::Closed) && state.queue.is_empty() {
            drop(state);
            return self.wind_down(borrowers);
        }
        // Work queued since `take_back_lent` finds the idle workers here.
        for worker in std::mem::take(&mut state.idle) {
            self.take_back(worker);
        }
        self.dispatch(&mut state);
        self.lend_idle(&mut state);
        self.publish_pids(&mut state);
        // Calls that no worker took: the most workers worth starting for them.
        let queued = state.queue.len();
        drop(state);
        if queued > 0 {
            self.refill_vacant(queued);
        }
        for index in 0..self.slots.len() {
            if let Some(worker) = &mut self.slots[index]
                && worker.wants_write()
                && worker.flush().is_err()
            {
                // The end of stream that follows tells the rest.
            }
        }
        true
    }

    /// Starts the next first worker that the pool did not wait for, while it runs or has
    /// queued jobs to run; once it is closed with nothing queued (or terminated, or
    /// broken), those not started yet never are.
    fn start_next_first(&mut self) {
        // Only once `build` has returned: until then, a worker's failure fails `build`, and
        // the workers it waits for have the CPUs to themselves.
        if self.unstarted.is_empty() || self.startup.is_some() {
            return;
        }
        if !self.wants_workers() {
            self.unstarted = 0..0;
            return;
        }
        if let Some(index) = self.unstarted.next() {
            self.replace(index);
        }
    }

    /// Whether the pool wants workers started: while it runs, and once it is closed, only
    /// while calls are queued (it winds down once none are).
    pub(super) fn wants_workers(&self) -> bool {
        let state = self.shared.lock();
        match state.phase {
            Phase::Running => true,
            Phase::Closed => !state.queue.is_empty(),
            Phase::Terminating | Phase::Broken(_) => false,
        }
    }

    /// Starts a worker, up to `wanted`, in each [`vacant`](Supervisor::vacant) slot, now
    /// that calls are queued again: jobs a blocking call hands back after its worker came
    /// back spent, or a retry.
    fn refill_vacant(&mut self, wanted: usize) {
        let mut started = 0;
        for index in 0..self.slots.len() {
            if started == wanted {
                break;
            }
            if self.vacant[index] && self.slots[index].is_none() && self.away[index].is_none() {
                self.replace(index);
                started += usize::from(self.slots[index].is_some());
            }
        }
    }

    /// The nearest deadline: of a running job, or of a retiring worker's exit.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let jobs = self
            .slots
            .iter()
            .flatten()
            .filter_map(|w| w.deadline(self.config.task_timeout))
            .map(|(deadline, _)| deadline);
        let exits = self.retiring.iter().filter_map(|w| w.exit_by);
        // While the pool closes, a busy worker may be stopped: look again soon.
        let now = Instant::now();
        let closing = self.shared.closing.load(Ordering::SeqCst);
        let stopped = self
            .slots
            .iter()
            .flatten()
            .filter(|_| closing)
            .filter_map(|w| w.next_stop_check(now));
        jobs.chain(exits).chain(stopped).min()
    }

    /// Gives queued jobs to ready workers: idle ones first, then a second job to each that
    /// may hold one ([`Worker::depth`]); then, while workers are starting, a first job to
    /// each starting worker that may take one with its SETUP.
    pub(super) fn dispatch(&mut self, state: &mut State) {
        let now = Instant::now();
        let workers = self.slots.iter().flatten().count();
        // While workers are starting, a job waits for one of them rather than behind
        // another job: a second job may wait a whole job for a worker that will be ready
        // in a millisecond.
        let starting = !self.unstarted.is_empty() || self.slots.iter().flatten().any(|w| !w.ready);
        let depths = if starting { 1 } else { DEPTH };
        let max = self.config.max_tasks_per_child;
        for depth in 0..depths {
            for worker in self.slots.iter_mut().flatten() {
                if state.queue.is_empty() {
                    return;
                }
                if worker.ready
                    && worker.in_flight.len() == depth
                    && depth < worker.depth(state.queue.len(), workers)
                    && !worker.spent(max)
                {
                    let job = state.queue.pop_front().expect("the queue is not empty");
                    worker.assign(job, now);
                }
            }
        }
        // A worker forked by a server one of whose workers was ready (so with this
        // program's task registry) runs no code of the pool's between its SETUP and its
        // READY when no initializer is set: its first job may go out behind the SETUP,
        // which saves a round trip on the way to it (each replacement's, with
        // `max_tasks_per_child`). It reads the job only after writing READY, so should it end
        // its own stream before a READY came, the job had not run (`on_death`). The job must
        // not be able to end the worker before its READY (descriptors it carries could), nor
        // count its start against a timeout.
        let early = starting
            && self.verified_server.is_some()
            && self.config.initializer.is_none()
            && self.config.task_timeout.is_none();
        if !early {
            return;
        }
        for worker in self.slots.iter_mut().flatten() {
            let Some(job) = state.queue.front() else {
                return;
            };
            if !worker.ready
                && worker.server == self.verified_server
                && worker.assigned == 0
                && job.timeout.is_none()
                && job.fds.as_slice().is_empty()
            {
                let job = state.queue.pop_front().expect("the queue is not empty");
                worker.assign(job, now);
            }
        }
    }

    /// Lends out the ready workers that hold no job, while nothing is queued: callers may
    /// borrow them from `State::idle` until the next turn takes them back.
    ///
    /// Only a worker with an exit descriptor is lent, so that its death while it waits idle
    /// is seen here at once, not by the next caller to borrow it.
    pub(super) fn lend_idle(&mut self, state: &mut State) {
        if !state.queue.is_empty() || !matches!(state.phase, Phase::Running) {
            return;
        }
        let max = self.config.max_tasks_per_child;
        for index in 0..self.slots.len() {
            let lendable = self.slots[index].as_ref().is_some_and(|w| {
                w.ready
                    && w.in_flight.is_empty()
                    && !w.wants_write()
                    && !w.spent(max)
                    && w.process.exit_fd().is_some()
            });
            if !lendable {
                continue;
            }
            let worker = self.slots[index].take().expect("checked above");
            let exit_fd = worker.process.exit_fd().expect("checked above");
            self.away[index] = Some(Away {
                pid: worker.info.pid,
                exit_fd,
                exited: false,
            });
            state.idle.push(worker);
        }
    }

    /// Puts a lent worker back in its slot.
    pub(super) fn take_back(&mut self, worker: Worker) {
        let index = worker.info.index;
        debug_assert!(self.slots[index].is_none(), "slot {index} is taken");
        self.away[index] = None;
        self.slots[index] = Some(worker);
    }

    /// Takes back what callers gave back, settling failures as for any worker; and the idle
    /// workers too, unless they may stay lent (the pool runs and nothing is queued).
    pub(super) fn take_back_lent(&mut self) {
        let (idle, returned) = {
            let mut state = self.shared.lock();
            let keep = state.queue.is_empty() && matches!(state.phase, Phase::Running);
            let idle = if keep {
                Vec::new()
            } else {
                std::mem::take(&mut state.idle)
            };
            (idle, state.take_returned())
        };
        for worker in idle {
            self.take_back(worker);
        }
        for Returned { worker, cause } in returned {
            let index = worker.info.index;
            // Its exit may have been seen after it was given back as sound.
            let exited = self.away[index].is_some_and(|away| away.exited);
            let cause = cause.or(exited.then_some(Cause::Gone));
            self.take_back(worker);
            match cause {
                Some(Cause::Abandoned) => self.abandon(index),
                Some(cause) => self.on_death(index, cause),
                // Given back with jobs cancelled before this turn's cancel pass could see
                // them: ended here. One cancelled later, the next pass finds in its slot.
                None if self.cancel_in(index) => {}
                None => self.retire_if_spent(index),
            }
        }
    }

    /// A lent-out worker has exited. An idle one is taken back and its death settled; one a
    /// caller holds is marked, so that its caller gives it back to the supervisor rather than
    /// to `idle`, and is not polled until then.
    pub(super) fn service_away_exit(&mut self, index: usize, pid: u32) {
        let idle = {
            let mut state = self.shared.lock();
            let at = state.idle.iter().position(|w| w.info.pid == pid);
            let idle = at.map(|at| state.idle.swap_remove(at));
            if idle.is_none() {
                state.exited.push(pid);
            }
            idle
        };
        match idle {
            Some(worker) => {
                self.take_back(worker);
                self.service_exit(index, pid);
            }
            None => {
                if let Some(away) = &mut self.away[index]
                    && away.pid == pid
                {
                    away.exited = true;
                }
            }
        }
    }

    /// Gets every lent worker back before the pool stops: idle ones at once; callers' are
    /// asked to stop (SIGTERM), killed after [`GRACE`], and given back by their callers, who
    /// see them exit. What they held ends as terminated in `shut_down`.
    pub(super) fn recall_lent(&mut self) {
        let deadline = Instant::now() + GRACE;
        let mut signalled = None;
        loop {
            let (idle, returned, lent) = {
                let mut state = self.shared.lock();
                let idle = std::mem::take(&mut state.idle);
                (idle, state.take_returned(), state.lent)
            };
            for worker in idle {
                self.take_back(worker);
            }
            for Returned { worker, .. } in returned {
                self.take_back(worker);
            }
            if lent == 0 {
                return;
            }
            let now = Instant::now();
            let force = now >= deadline;
            if signalled != Some(force) {
                let signal = if force { sys::SIGKILL } else { sys::SIGTERM };
                for away in self.away.iter().flatten() {
                    // Through its pidfd, which the worker a caller holds keeps open.
                    let _ = sys::pidfd_signal_raw(away.exit_fd, signal);
                }
                signalled = Some(force);
            }
            let wait = (!force).then(|| deadline - now);
            let mut fds = [PollFd::new(self.wake_rx.as_raw_fd(), false)];
            if sys::poll(&mut fds, wait).is_err() {
                return;
            }
            if fds[0].readable() {
                self.drain_wake();
            }
        }
    }

    /// Empties the wake socket, then clears the flag that callers check before writing to it.
    pub(super) fn drain_wake(&mut self) {
        // Drain first, then clear the flag, then (at the top of the loop) read the queue: a
        // caller that queued work before the flag was cleared is seen by that read, and one
        // that queues after it writes a fresh byte. Clearing first would let the drain swallow
        // the byte of a wake whose flag is still set, and the next caller would then skip its
        // write and wait forever. Callers write at most one byte per clearing of the flag, so
        // one read of 64 drains it.
        let mut sink = [0; 64];
        let _ = (&self.wake_rx).read(&mut sink);
        self.shared.wake_pending.store(false, Ordering::SeqCst);
    }

    /// Tells callers (`Pool::worker_pids`) which worker is in each slot, when that changed.
    pub(super) fn publish_pids(&mut self, state: &mut State) {
        if !self.pids_changed {
            return;
        }
        for ((pid, slot), away) in state.pids.iter_mut().zip(&self.slots).zip(&self.away) {
            *pid = slot
                .as_ref()
                .map(|w| w.info.pid)
                .or(away.map(|away| away.pid));
        }
        self.pids_changed = false;
    }

    pub(super) fn service_slot(&mut self, index: usize, fd: &PollFd) {
        let Some(worker) = &mut self.slots[index] else {
            return;
        };
        if fd.writable() && worker.flush().is_err() {
            // Reading below meets the end of stream.
        }
        if !fd.readable() {
            return;
        }
        let pid = worker.info.pid;
        let mut events = Vec::new();
        let more = worker.read_frames(|frame| events.push(Event::Frame(frame)));
        match more {
            Ok(true) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                events.push(Event::Garbled(e.to_string()));
            }
            Ok(false) | Err(_) => events.push(Event::Gone),
        }
        for event in events {
            // A results frame can retire the worker (max_tasks_per_child) and put a
            // replacement in the slot: what else was read belongs to the old worker, whose
            // end of stream is seen again where retiring workers are polled.
            if self.slots[index].as_ref().map(|w| w.info.pid) != Some(pid) {
                return;
            }
            let outcome = match event {
                Event::Frame(frame) => self.on_frame(index, frame),
                Event::Gone => Err(Cause::Gone),
                Event::Garbled(message) => Err(Cause::Protocol(message)),
            };
            if let Err(cause) = outcome {
                self.on_death(index, cause);
                return;
            }
        }
    }

    /// The process of the worker `pid` in slot `index` has exited. Its socket usually says so
    /// too, and then the worker is already handled; if something else holds the socket open
    /// (a child the task forked), take what it wrote before it died, then settle its death.
    pub(super) fn service_exit(&mut self, index: usize, pid: u32) {
        if self.slots[index].as_ref().map(|w| w.info.pid) != Some(pid) {
            return;
        }
        self.service_slot(index, &PollFd::readable_now());
        if self.slots[index].as_ref().map(|w| w.info.pid) == Some(pid) {
            self.on_death(index, Cause::Gone);
        }
    }

    /// Handles a frame from the worker in slot `index`; `Err` means the worker must go.
    pub(super) fn on_frame(&mut self, index: usize, frame: Vec<u8>) -> Result<(), Cause> {
        let worker = self.slots[index].as_mut().expect("a worker is in the slot");
        let message = FromWorker::decode(&frame).map_err(|e| Cause::Protocol(e.to_string()))?;
        match message {
            FromWorker::Ready { pid, fingerprint } => {
                if worker.ready {
                    return Err(Cause::Protocol("a second READY frame".into()));
                }
                if fingerprint != self.fingerprint || pid != worker.info.pid {
                    return Err(Cause::Protocol(format!(
                        "task registry {fingerprint:#x} from pid {pid}, expected {:#x} from pid {} (was the binary rebuilt?)",
                        self.fingerprint, worker.info.pid
                    )));
                }
                worker.ready = true;
                if worker.server.is_some() {
                    self.verified_server = worker.server;
                }
                let now = Instant::now();
                worker.recorder.ready(index, worker.spawned, now);
                if !worker.in_flight.is_empty() {
                    // Its first job came with its SETUP: it runs from now on.
                    worker.front_since = Some(now);
                    worker.recorder.busy_from(index, now);
                }
                crate::trace::debug!(worker = index, pid, "worker ready");
                let ready = worker.info;
                self.shared
                    .counters
                    .events
                    .emit(|| crate::Event::WorkerReady(ready));
                self.start_failures = 0;
                let ready_now = self.slots.iter().flatten().filter(|w| w.ready).count();
                if ready_now >= self.config.wait_for_workers
                    && let Some(ready) = self.startup.take()
                {
                    // `worker_pids` must show every worker as soon as `build` returns, and
                    // the first blocking call can borrow them at once.
                    let shared = Arc::clone(&self.shared);
                    let mut state = shared.lock();
                    self.publish_pids(&mut state);
                    self.lend_idle(&mut state);
                    drop(state);
                    let _ = ready.send(Ok(()));
                }
                Ok(())
            }
            FromWorker::InitFailed(_) if worker.ready => {
                Err(Cause::Protocol("an INIT_FAILED frame after READY".into()))
            }
            FromWorker::InitFailed(failure) => {
                let name = self
                    .config
                    .initializer
                    .as_ref()
                    .map_or("?", |(name, _)| name);
                let error = Error::from_failure(failure, name, worker.info);
                if self.startup.is_some() {
                    self.fail_startup(BuildError::initializer(error));
                } else {
                    let error = Error::new(
                        ErrorKind::PoolBroken,
                        format!(
                            "the pool cannot start workers any more: the initializer failed: {error}"
                        ),
                    );
                    self.shared.set_phase(Phase::Broken(error));
                }
                Err(Cause::Gone)
            }
            // A worker sent its first job with its SETUP runs it only after its READY.
            FromWorker::Results(_) if !worker.ready => {
                Err(Cause::Protocol("a RESULTS frame before READY".into()))
            }
            FromWorker::Results(results) => {
                worker.complete_front(results, frame)?;
                self.retire_if_spent(index);
                Ok(())
            }
            FromWorker::Bye { .. } => Err(Cause::Protocol("a BYE frame before SHUTDOWN".into())),
            FromWorker::Descriptors(_) if !worker.ready => {
                Err(Cause::Protocol("a descriptors frame before READY".into()))
            }
            FromWorker::Descriptors(message) => worker.on_descriptors(message),
        }
    }
}

#[derive(Clone, Copy)]
enum Owner {
    Slot(usize),
    /// The exit descriptor of the worker in a slot, with its pid.
    SlotExit(usize, u32),
    Retiring(usize),
    RetiringExit(usize),
    /// The exit descriptor of a lent-out worker, with its slot and pid.
    AwayExit(usize, u32),
}
