//! The supervisor: one thread per pool that owns the workers. It hands queued jobs to
//! workers, collects their results, notices deaths, reaps, fails or re-queues what a dead
//! worker held, starts replacements, and recycles workers after `max_tasks_per_child` jobs.
//!
//! Callers put jobs on the shared queue and wake the supervisor through a socket; the
//! supervisor does their I/O, non-blocking, from one `poll` loop. When the queue is empty it
//! also lends its idle workers out (`State::idle`): a blocking call then borrows one, talks
//! to it from its own thread and gives it back (see `direct`), which saves two thread
//! wake-ups a call. Whatever goes wrong with a borrowed worker comes back here to be settled.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{BuildError, Error, ErrorKind, WorkerExit, WorkerInfo};
use crate::registry;
use crate::result::{Batch, Collector};
use crate::shared::{Attached, Fds};
use crate::spin::Spinner;
use crate::start::{self, Process, StartMethod};
use crate::stats::Counters;
use crate::sys::{self, PollFd};
use crate::wire::{self, FrameReader, FromWorker, MAX_FDS, Results, RunFrame, ToWorker};

/// How many jobs a worker may hold at once: one running, one waiting behind it, so that the
/// round trip between them is hidden. Near the end of the jobs, a worker whose last job was
/// long holds one (see [`Worker::depth`]).
pub(crate) const DEPTH: usize = 2;

/// A job at least this long makes its worker hold one job at a time near the end of the
/// jobs, until a shorter one: the round trip a second job would hide (tens to a few hundred
/// microseconds) is then at most a few hundredths of the job.
///
/// The parent measures it, from when the job became the one its worker runs to when it
/// read the results, so the measure includes the parent's own wake-up, which on a busy
/// machine can take a time slice: a short job taken for a long one then costs a round trip,
/// and only near the end of the jobs.
pub const LONG_JOB: Duration = Duration::from_millis(10);

/// How many replacement workers in a row may die before their handshake before the pool
/// stops starting them.
const MAX_START_FAILURES: u32 = 3;

/// How long `terminate` lets workers exit after asking them to (SIGTERM) before it kills
/// them (SIGKILL).
const GRACE: Duration = Duration::from_millis(200);

/// How long a worker told to shut down (by `close`, or after `max_tasks_per_child`) may take
/// to exit before it is killed: exiting flushes its stdout, which a slow reader can hold up,
/// but a stopped or stuck worker must not make `join` wait forever.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// One RUN frame: one or more calls of one task, whose outcomes go to `sink`: call `i` at
/// index `start + i * stride`.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) task: &'static str,
    pub(crate) frame: Vec<u8>,
    /// The descriptors that go with the frame.
    pub(crate) fds: Fds,
    pub(crate) sink: Arc<Collector>,
    pub(crate) start: usize,
    /// 1 for a run of neighbouring items; `map`'s automatic chunks interleave.
    pub(crate) stride: usize,
    pub(crate) count: usize,
    /// How long each call may run before its worker is killed; `None` takes the pool's
    /// `task_timeout`.
    pub(crate) timeout: Option<Duration>,
    /// How many times this job's worker has died under it so far.
    pub(crate) retried: u32,
    /// The pool's counters, which count each call's final state.
    pub(crate) counters: Arc<Counters>,
}

impl Job {
    /// Ends every call of the job with `error`.
    pub(crate) fn fail(mut self, error: &Error) {
        self.release();
        self.counters.ended(Some(error.kind()), self.count);
        self.sink
            .deliver(Batch::failed(self.calls(), error.clone()));
    }

    /// Frees the frame and closes its descriptors, once the job is done: before its results
    /// are delivered, so that a caller who has them finds the descriptors of its
    /// `SharedBytes` arguments closed.
    fn release(&mut self) {
        self.frame = Vec::new();
        self.fds = Fds::default();
    }

    /// Where the job's calls are in its submission: the first index, the stride, the count.
    fn calls(&self) -> (usize, usize, usize) {
        (self.start, self.stride, self.count)
    }
}

/// The lifecycle of a pool, as callers and the supervisor both see it.
#[derive(Clone, Debug)]
pub(crate) enum Phase {
    Running,
    Closed,
    Terminating,
    /// Workers cannot be replaced any more; the error says why.
    Broken(Error),
}

/// What callers and the supervisor share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    wake_tx: UnixStream,
    wake_pending: AtomicBool,
    next_job: AtomicU64,
    pub(crate) counters: Arc<Counters>,
    /// The pool's `task_timeout` and `max_tasks_per_child`, which borrowers apply too.
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) max_tasks_per_child: Option<u64>,
    /// The CPUs this process may run on, when the pool was built: see [`Shared::cpus`].
    cpus: OnceLock<usize>,
    /// Whether callers' watches for results have been paying off (see `direct`).
    pub(crate) spinner: Mutex<Spinner>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) phase: Phase,
    pub(crate) queue: VecDeque<Job>,
    /// The pid of the worker in each slot, where one runs.
    pub(crate) pids: Vec<Option<u32>>,
    /// Ready workers holding no job that callers may borrow; only while the pool runs and
    /// the queue is empty.
    pub(crate) idle: Vec<Worker>,
    /// How many workers callers hold now.
    pub(crate) lent: usize,
    /// How many blocking calls run on borrowed workers now: until they end, they may still
    /// queue jobs (those a failed worker left), so a closed pool waits for them.
    pub(crate) borrowers: usize,
    /// The pids of workers a caller holds whose exit the supervisor has seen: given back,
    /// they go to the supervisor, never to `idle`.
    pub(crate) exited: Vec<u32>,
    /// Workers given back by callers for the supervisor to take again.
    pub(crate) returned: Vec<Returned>,
}

/// A worker a borrower gives back to the supervisor, with why, if something went wrong.
/// The job it was given, if unfinished, is still in its `in_flight`.
#[derive(Debug)]
pub(crate) struct Returned {
    pub(crate) worker: Worker,
    pub(crate) cause: Option<Cause>,
}

impl State {
    /// The workers callers gave back, no longer marked as seen exiting while held (the
    /// supervisor keeps that mark in `Away` until it has settled them).
    fn take_returned(&mut self) -> Vec<Returned> {
        let returned = std::mem::take(&mut self.returned);
        self.exited
            .retain(|pid| !returned.iter().any(|r| r.worker.info.pid == *pid));
        returned
    }
}

impl Shared {
    /// The CPUs this process may run on ([`cpu_count`](sys::cpu_count)), read once.
    ///
    /// Under cgroups that takes several file reads (0.10 to 0.15 ms measured on the 2-core
    /// VM), a twentieth of a pool's start-up: `launch` reads it on the building thread while
    /// the supervisor thread starts the first worker, instead of before.
    pub(crate) fn cpus(&self) -> usize {
        *self.cpus.get_or_init(sys::cpu_count)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn next_job_id(&self) -> u64 {
        self.next_job.fetch_add(1, Ordering::Relaxed)
    }

    /// Gives a borrowed worker back: to the idle workers when it can serve another call at
    /// once, else to the supervisor (which is woken), with `cause` if it failed.
    pub(crate) fn give_back(&self, worker: Worker, cause: Option<Cause>) {
        let mut state = self.lock();
        state.lent -= 1;
        let exited = state.exited.contains(&worker.info.pid);
        let cause = cause.or(exited.then_some(Cause::Gone));
        let idle = cause.is_none()
            && !worker.spent(self.max_tasks_per_child)
            && state.queue.is_empty()
            && matches!(state.phase, Phase::Running);
        if idle {
            state.idle.push(worker);
            return;
        }
        state.returned.push(Returned { worker, cause });
        drop(state);
        self.wake();
    }

    /// Queues jobs that were already accepted (and counted): they run even on a closed pool,
    /// and end as the pool does if it was terminated or broke meanwhile.
    pub(crate) fn requeue(&self, jobs: impl IntoIterator<Item = Job>) {
        let mut state = self.lock();
        let phase = state.phase.clone();
        if let Phase::Running | Phase::Closed = phase {
            state.queue.extend(jobs);
            drop(state);
            self.wake();
            return;
        }
        drop(state);
        for job in jobs {
            let error = match &phase {
                Phase::Broken(error) => error.clone(),
                _ => Error::terminated(job.task),
            };
            job.fail(&error);
        }
    }

    /// Queues jobs, or refuses them all if the pool no longer takes work.
    pub(crate) fn submit(&self, jobs: impl IntoIterator<Item = Job>) -> Result<(), Error> {
        let mut state = self.lock();
        match &state.phase {
            Phase::Running => {}
            Phase::Broken(error) => return Err(error.clone()),
            Phase::Closed | Phase::Terminating => return Err(Error::closed()),
        }
        let before = state.queue.len();
        state.queue.extend(jobs);
        let calls = state.queue.range(before..).map(|job| job.count).sum();
        self.counters.submitted(calls);
        drop(state);
        self.wake();
        Ok(())
    }

    pub(crate) fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            // A full socket means a wake-up is already pending.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }

    /// Moves the pool to `phase` and returns the queued jobs when that drops them.
    pub(crate) fn set_phase(&self, phase: Phase) -> Vec<Job> {
        let mut state = self.lock();
        let drained = match phase {
            Phase::Terminating => state.queue.drain(..).collect(),
            _ => Vec::new(),
        };
        state.phase = phase;
        drop(state);
        self.wake();
        drained
    }
}

/// What the supervisor needs to start workers.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) method: StartMethod,
    /// The initializer's registered name and encoded arguments.
    pub(crate) initializer: Option<(&'static str, Vec<u8>)>,
    pub(crate) max_tasks_per_child: Option<u64>,
    /// How long one call may run before its worker is killed, unless the job says otherwise.
    pub(crate) task_timeout: Option<Duration>,
    /// How many times a job of one call whose worker died is run again.
    pub(crate) retries: u32,
}

/// Starts the supervisor thread; `ready` hears once whether every first worker started.
pub(crate) fn launch(
    config: Config,
    ready: Sender<Result<(), BuildError>>,
) -> io::Result<(Arc<Shared>, std::thread::JoinHandle<()>)> {
    let (wake_tx, wake_rx) = UnixStream::pair()?;
    wake_tx.set_nonblocking(true)?;
    wake_rx.set_nonblocking(true)?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            phase: Phase::Running,
            queue: VecDeque::new(),
            pids: vec![None; config.processes],
            idle: Vec::new(),
            lent: 0,
            borrowers: 0,
            exited: Vec::new(),
            returned: Vec::new(),
        }),
        wake_tx,
        wake_pending: AtomicBool::new(false),
        next_job: AtomicU64::new(0),
        counters: Arc::default(),
        task_timeout: config.task_timeout,
        max_tasks_per_child: config.max_tasks_per_child,
        cpus: OnceLock::new(),
        spinner: Mutex::default(),
    });
    let supervisor = Supervisor {
        slots: (0..config.processes).map(|_| None).collect(),
        away: vec![None; config.processes],
        retiring: Vec::new(),
        config,
        shared: Arc::clone(&shared),
        wake_rx,
        startup: Some(ready),
        start_failures: 0,
        fingerprint: registry::registry_fingerprint(),
        pids_changed: true,
        finished: false,
    };
    let handle = std::thread::Builder::new()
        .name("procpool-supervisor".into())
        .spawn(move || supervisor.run())?;
    // Read while the supervisor starts the first worker, which needs it only after.
    shared.cpus();
    Ok((shared, handle))
}

#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) info: WorkerInfo,
    pub(crate) process: Process,
    pub(crate) socket: UnixStream,
    pub(crate) reader: FrameReader,
    /// Descriptors that came over the socket, not yet claimed by the frames they came with.
    received: VecDeque<OwnedFd>,
    /// Control frames (SETUP, SHUTDOWN) to write before any job, and how much of the first
    /// is written.
    control: VecDeque<Vec<u8>>,
    control_written: usize,
    /// Jobs sent or being sent, oldest first; `in_flight[unsent..]` are not fully written.
    pub(crate) in_flight: VecDeque<Job>,
    /// When the first job of `in_flight` started, as far as the parent can tell: when it was
    /// handed to an idle worker, or when the job ahead of it completed.
    pub(crate) front_since: Option<Instant>,
    /// How long the last job that completed took, from when it became the front job; `None`
    /// before the first.
    last_took: Option<Duration>,
    pub(crate) unsent: usize,
    job_written: usize,
    /// How many of the descriptors of `in_flight[unsent]` have been sent.
    fds_sent: usize,
    ready: bool,
    /// Jobs given to this worker so far, against `max_tasks_per_child`.
    pub(crate) assigned: u64,
    /// For a worker told to shut down: when it is killed if it has not exited by then.
    exit_by: Option<Instant>,
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
    /// nothing either, so workers keep one queued (as a review pointed out, holding it back
    /// all through a map only adds round trips, and to a pool of one worker nothing but).
    /// (Measured: factorials 1..=3000 on 2 workers of the shared 2-core VM, 20 runs each: one
    /// worker stood idle at the end for a median of 4.8 % of the map with a second job
    /// always, 4.4 % with one job at a time after long ones, the map taking a median of
    /// 367.8 and 361.3 ms; in another 20 runs each, 2.0 % holding back all through the map
    /// and 3.3 % only near the end, the map taking 532.9 and 531.9 ms.)
    pub(crate) fn depth(&self, jobs_left: usize, workers: usize) -> usize {
        let near_end = jobs_left < workers * (DEPTH - 1);
        if near_end && self.last_took.is_some_and(|took| took >= LONG_JOB) {
            1
        } else {
            DEPTH
        }
    }

    /// Whether the worker has been given all the jobs `max_tasks_per_child` allows.
    pub(crate) fn spent(&self, max_tasks_per_child: Option<u64>) -> bool {
        max_tasks_per_child.is_some_and(|max| self.assigned >= max)
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
    fn broken(&self, error: io::Error) -> io::Error {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        error
    }

    /// Reads what the socket has, handing each complete frame to `on_frame`; as
    /// [`FrameReader::read_from`].
    pub(crate) fn read_frames(&mut self, on_frame: impl FnMut(Vec<u8>)) -> io::Result<bool> {
        let socket = &self.socket;
        let received = &mut self.received;
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
                sys::recv(socket, buf, received)
            },
            on_frame,
        )
    }

    pub(crate) fn wants_write(&self) -> bool {
        !self.control.is_empty() || self.unsent < self.in_flight.len()
    }

    /// Writes what the socket takes now. An error means the worker is gone; the caller
    /// finds out through the socket's end of stream.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        loop {
            // Up to 8 frames in one writev, gathered on the stack: this runs for every job.
            let mut slices = [IoSlice::new(&[]); 8];
            let mut count = 0;
            let mut offered = 0;
            let mut written = self.control_written;
            for frame in self.control.iter().take(slices.len()) {
                slices[count] = IoSlice::new(&frame[written..]);
                offered += frame.len() - written;
                count += 1;
                written = 0;
            }
            // Descriptors ride on the first byte of a message: a frame with descriptors left
            // to send starts a message of its own, and a frame with more than one message
            // carries gets a byte per message until its last.
            let mut fds: &[Attached] = &[];
            if self.control.is_empty() {
                let mut written = self.job_written;
                let mut fds_sent = self.fds_sent;
                for job in self.in_flight.iter().skip(self.unsent).take(slices.len()) {
                    let fds_left = &job.fds.as_slice()[fds_sent..];
                    let frame = &job.frame[written..];
                    if !fds_left.is_empty() {
                        if count > 0 {
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
                if let Some(frame) = self.control.front() {
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

struct Supervisor {
    config: Config,
    shared: Arc<Shared>,
    wake_rx: UnixStream,
    slots: Vec<Option<Worker>>,
    /// For each slot whose worker is lent out (idle in `State::idle` or held by a caller).
    away: Vec<Option<Away>>,
    /// Workers told to shut down, waited for until they exit.
    retiring: Vec<Worker>,
    /// Present until every first worker is ready (or one failed).
    startup: Option<Sender<Result<(), BuildError>>>,
    start_failures: u32,
    fingerprint: u64,
    /// Whether a slot's worker changed since the pids were last published to callers.
    pids_changed: bool,
    /// Set once `shut_down` has run; a supervisor dropped without it (a panic) cleans up in
    /// `Drop`, so that no caller waits forever on a result.
    finished: bool,
}

/// A worker out of its slot, lent to callers: what the supervisor keeps of it to watch it.
#[derive(Clone, Copy, Debug)]
struct Away {
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

/// Why a worker is taken out of its slot.
#[derive(Debug)]
pub(crate) enum Cause {
    /// Its socket reached its end: it exited or was killed.
    Gone,
    /// It sent a frame the protocol does not allow.
    Protocol(String),
    /// Its job ran past the deadline, with this timeout per call.
    TimedOut(Duration),
    /// The thread that borrowed it panicked while it held jobs: the worker is fine, but what
    /// is left on its socket is unknown, and nobody waits for its jobs.
    Abandoned,
}

impl Supervisor {
    fn run(mut self) {
        // One after another, on this thread: a worker's PR_SET_PDEATHSIG fires when the
        // thread that started it ends, not its process, so workers cannot be started side
        // by side from threads that end sooner than the pool. (Tried: started from scoped
        // threads, workers were killed before their handshake.)
        for index in 0..self.config.processes {
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
                fds.push(PollFd::new(worker.socket.as_raw_fd(), worker.wants_write()));
                owners.push(Owner::Retiring(at));
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
            let timeout = self
                .next_deadline()
                .map(|deadline| deadline.saturating_duration_since(Instant::now()));
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
                        if Self::service_retiring(&mut self.retiring[at], fd) {
                            gone_retiring.push(at);
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
        }
        self.shut_down();
    }

    /// Takes in what callers asked for and hands out queued jobs. Returns false when the
    /// supervisor's work is done.
    fn turn(&mut self) -> bool {
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
            Phase::Closed if state.queue.is_empty() => {
                drop(state);
                return self.wind_down(borrowers);
            }
            Phase::Running | Phase::Closed => {}
        }
        if self.startup.is_some() {
            return true;
        }
        // Work queued since `take_back_lent` finds the idle workers here.
        for worker in std::mem::take(&mut state.idle) {
            self.take_back(worker);
        }
        self.dispatch(&mut state);
        self.lend_idle(&mut state);
        self.publish_pids(&mut state);
        drop(state);
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

    /// The nearest deadline: of a running job, or of a retiring worker's exit.
    fn next_deadline(&self) -> Option<Instant> {
        let jobs = self
            .slots
            .iter()
            .flatten()
            .filter_map(|w| w.deadline(self.config.task_timeout))
            .map(|(deadline, _)| deadline);
        let exits = self.retiring.iter().filter_map(|w| w.exit_by);
        jobs.chain(exits).min()
    }

    /// Kills the retiring workers that did not exit in time; their end of stream follows, and
    /// they are reaped where retiring workers are polled.
    fn expire_retiring(&mut self, now: Instant) {
        for worker in &mut self.retiring {
            if worker.exit_by.is_some_and(|by| by <= now) {
                worker.exit_by = None;
                // Through its handle: never a recycled pid.
                let _ = worker.process.kill();
            }
        }
    }

    /// Kills the workers whose job ran past its deadline; their jobs end as timed out.
    fn expire(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            let Some(worker) = &mut self.slots[index] else {
                continue;
            };
            let Some((deadline, timeout)) = worker.deadline(self.config.task_timeout) else {
                continue;
            };
            if deadline <= now {
                // Through its handle: never a recycled pid.
                let _ = worker.process.kill();
                self.on_death(index, Cause::TimedOut(timeout));
            }
        }
    }

    /// Gives queued jobs to ready workers: idle ones first, then a second job to each that
    /// may hold one ([`Worker::depth`]).
    fn dispatch(&mut self, state: &mut State) {
        let now = Instant::now();
        let workers = self.slots.iter().flatten().count();
        for depth in 0..DEPTH {
            for worker in self.slots.iter_mut().flatten() {
                if state.queue.is_empty() {
                    return;
                }
                let max = self.config.max_tasks_per_child;
                if worker.ready
                    && worker.in_flight.len() == depth
                    && depth < worker.depth(state.queue.len(), workers)
                    && !worker.spent(max)
                {
                    let job = state.queue.pop_front().expect("the queue is not empty");
                    if worker.in_flight.is_empty() {
                        worker.front_since = Some(now);
                    }
                    worker.in_flight.push_back(job);
                    worker.assigned += 1;
                }
            }
        }
    }

    /// Lends out the ready workers that hold no job, while nothing is queued: callers may
    /// borrow them from `State::idle` until the next turn takes them back.
    ///
    /// Only a worker with an exit descriptor is lent, so that its death while it waits idle
    /// is seen here at once, not by the next caller to borrow it.
    fn lend_idle(&mut self, state: &mut State) {
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
    fn take_back(&mut self, worker: Worker) {
        let index = worker.info.index;
        debug_assert!(self.slots[index].is_none(), "slot {index} is taken");
        self.away[index] = None;
        self.slots[index] = Some(worker);
    }

    /// Takes back what callers gave back, settling failures as for any worker; and the idle
    /// workers too, unless they may stay lent (the pool runs and nothing is queued).
    fn take_back_lent(&mut self) {
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
                None => self.retire_if_spent(index),
            }
        }
    }

    /// A lent-out worker has exited. An idle one is taken back and its death settled; one a
    /// caller holds is marked, so that its caller gives it back to the supervisor rather than
    /// to `idle`, and is not polled until then.
    fn service_away_exit(&mut self, index: usize, pid: u32) {
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
    fn recall_lent(&mut self) {
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
    fn drain_wake(&mut self) {
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
    fn publish_pids(&mut self, state: &mut State) {
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

    /// With no new work coming: once no worker holds a job (and no blocking call runs on
    /// borrowed workers), tell them all to exit; returns false once every worker has exited
    /// and been reaped.
    fn wind_down(&mut self, borrowers: usize) -> bool {
        if borrowers > 0 || self.slots.iter().flatten().any(|w| !w.in_flight.is_empty()) {
            return true;
        }
        for slot in &mut self.slots {
            if let Some(mut worker) = slot.take() {
                self.pids_changed = true;
                worker.control.push_back(wire::shutdown_frame());
                worker.exit_by = Some(Instant::now() + EXIT_GRACE);
                let _ = worker.flush();
                self.retiring.push(worker);
            }
        }
        !self.retiring.is_empty()
    }

    fn service_slot(&mut self, index: usize, fd: &PollFd) {
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
    fn service_exit(&mut self, index: usize, pid: u32) {
        if self.slots[index].as_ref().map(|w| w.info.pid) != Some(pid) {
            return;
        }
        self.service_slot(index, &PollFd::readable_now());
        if self.slots[index].as_ref().map(|w| w.info.pid) == Some(pid) {
            self.on_death(index, Cause::Gone);
        }
    }

    /// Handles a frame from the worker in slot `index`; `Err` means the worker must go.
    fn on_frame(&mut self, index: usize, frame: Vec<u8>) -> Result<(), Cause> {
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
                self.start_failures = 0;
                if self.slots.iter().flatten().all(|w| w.ready)
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
            FromWorker::Results(results) => {
                worker.complete_front(results, frame)?;
                self.retire_if_spent(index);
                Ok(())
            }
        }
    }

    /// Retires the worker in slot `index` once it has run its `max_tasks_per_child` jobs and
    /// holds none.
    fn retire_if_spent(&mut self, index: usize) {
        let worker = self.slots[index].as_ref().expect("a worker is in the slot");
        if worker.spent(self.config.max_tasks_per_child) && worker.in_flight.is_empty() {
            self.retire(index);
        }
    }

    /// Sends the worker in slot `index` its SHUTDOWN and starts its replacement.
    fn retire(&mut self, index: usize) {
        let mut worker = self.slots[index].take().expect("a worker is in the slot");
        self.pids_changed = true;
        worker.control.push_back(wire::shutdown_frame());
        worker.exit_by = Some(Instant::now() + EXIT_GRACE);
        let _ = worker.flush();
        self.retiring.push(worker);
        self.replace(index);
    }

    /// Handles a message from a retiring worker; true once it has gone.
    fn service_retiring(worker: &mut Worker, fd: &PollFd) -> bool {
        if fd.writable() && worker.flush().is_err() {
            return true;
        }
        if !fd.readable() {
            return false;
        }
        // A retiring worker holds no jobs and has nothing left to say but its end of stream.
        !matches!(worker.read_frames(|_| ()), Ok(true))
    }

    /// The worker in slot `index` was held by a call whose thread panicked: end it (what is
    /// left on its socket is unknown), end what it held (nobody waits for it) and start a
    /// replacement. The worker did not die, and is not counted as a death.
    fn abandon(&mut self, index: usize) {
        let worker = self.slots[index].take().expect("a worker is in the slot");
        self.pids_changed = true;
        let (_, held) = worker.in_flight_and_reap();
        for job in held {
            let error = Error::abandoned(job.task);
            job.fail(&error);
        }
        self.replace(index);
    }

    /// The worker in slot `index` is gone or misbehaved: reap it, settle what it held, and
    /// start a replacement.
    fn on_death(&mut self, index: usize, cause: Cause) {
        self.shared.counters.worker_died();
        let worker = self.slots[index].take().expect("a worker is in the slot");
        self.pids_changed = true;
        let info = worker.info;
        let was_ready = worker.ready;
        let (exit, mut held) = worker.in_flight_and_reap();
        let mut requeue = VecDeque::new();
        if let Some(mut first) = held.pop_front() {
            let died = matches!(cause, Cause::Gone | Cause::Protocol(_));
            if first.count == 1 && died && first.retried < self.config.retries {
                first.retried += 1;
                requeue.push_back(first);
            } else if first.count == 1 {
                let error = match &cause {
                    Cause::Gone => Error::died(first.task, info, exit),
                    Cause::Protocol(message) => Error::protocol(first.task, info, exit, message),
                    Cause::TimedOut(timeout) => Error::timed_out(first.task, info, *timeout),
                    Cause::Abandoned => Error::abandoned(first.task),
                };
                let error = error.with_retries(first.retried);
                first.fail(&error);
            } else {
                // Which call of the chunk killed the worker (or ran too long) is unknown: run
                // each of its calls on its own, so that only the one that kills a worker (or
                // runs past its own timeout) again fails.
                match split(&first, &self.shared) {
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
        {
            let mut state = self.shared.lock();
            for job in requeue.into_iter().rev() {
                state.queue.push_front(job);
            }
        }
        if self.startup.is_some() {
            let message = match cause {
                Cause::Protocol(message) => format!("{info}: {message}"),
                Cause::Gone | Cause::TimedOut(_) | Cause::Abandoned => {
                    format!("{info} {exit} before it was ready")
                }
            };
            self.fail_startup(BuildError::handshake(message));
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

    /// Starts a worker in slot `index` unless the pool is winding down.
    fn replace(&mut self, index: usize) {
        let running = matches!(self.shared.lock().phase, Phase::Running | Phase::Closed);
        if !running {
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

    fn start(&mut self, index: usize) -> io::Result<()> {
        let start::Started { process, socket } = start::start(self.config.method)?;
        self.shared.counters.worker_started();
        let info = WorkerInfo {
            index,
            pid: process.pid(),
        };
        let initializer = self
            .config
            .initializer
            .as_ref()
            .map(|(name, args)| (*name, args.as_slice()));
        // Waiting workers may spin while each has a CPU of its own: then a spin takes time
        // from nobody else's work.
        let spin = self.config.processes <= self.shared.cpus();
        let mut worker = Worker {
            info,
            process,
            socket,
            reader: FrameReader::default(),
            received: VecDeque::new(),
            control: VecDeque::from([wire::setup_frame(index as u32, spin, initializer)]),
            control_written: 0,
            in_flight: VecDeque::new(),
            front_since: None,
            last_took: None,
            unsent: 0,
            job_written: 0,
            fds_sent: 0,
            ready: false,
            assigned: 0,
            exit_by: None,
        };
        let _ = worker.flush();
        self.slots[index] = Some(worker);
        self.pids_changed = true;
        Ok(())
    }

    fn fail_startup(&mut self, error: BuildError) {
        if let Some(ready) = self.startup.take() {
            let _ = ready.send(Err(error));
        }
        self.shared.set_phase(Phase::Terminating);
    }

    /// Stops and reaps every worker left; whatever they held ends as terminated.
    ///
    /// Workers are asked to stop (SIGTERM) and given [`GRACE`] to exit; those still running
    /// then are killed (SIGKILL).
    fn shut_down(&mut self) {
        self.recall_lent();
        let dropped: Vec<Job> = self.shared.lock().queue.drain(..).collect();
        for job in dropped {
            let error = Error::terminated(job.task);
            job.fail(&error);
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
        self.finished = true;
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
        let mut done = self.in_flight.pop_front().expect("checked above");
        done.release();
        self.unsent -= 1;
        let now = Instant::now();
        self.last_took = self.front_since.map(|since| now - since);
        self.front_since = (!self.in_flight.is_empty()).then_some(now);
        let counters = &done.counters;
        counters.ended(None, count - panicked - failed);
        counters.ended(Some(ErrorKind::Panicked), panicked);
        // The other failures a worker reports (codec, unregistered) all count as `other`.
        counters.ended(Some(ErrorKind::Codec), failed);
        let batch = Batch::results(done.calls(), frame, fds, done.task, self.info);
        done.sink.deliver(batch);
        Ok(())
    }

    /// Ends the worker for good: kills it if it still runs, waits for it, and returns how it
    /// ended and the jobs it held.
    fn in_flight_and_reap(mut self) -> (WorkerExit, VecDeque<Job>) {
        let jobs = std::mem::take(&mut self.in_flight);
        (reap(self), jobs)
    }
}

/// Kills (if needed) and waits for a worker.
fn reap(worker: Worker) -> WorkerExit {
    worker.process.reap()
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

/// Splits a job of several calls into one job per call. Each sends again only the
/// descriptors of the chunk that its own argument names ([`Fds::item`]).
fn split(job: &Job, shared: &Shared) -> Option<Vec<Job>> {
    // The frame is the parent's own, built under the frame limit, so it decodes and each
    // call fits a frame of its own; `None` is for the impossible case, so that it fails the
    // job instead of the supervisor.
    let Ok(ToWorker::Run { name, items, .. }) = ToWorker::decode(&job.frame[4..]) else {
        return None;
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let id = shared.next_job_id();
            let fds = job.fds.item(i);
            let mut frame = RunFrame::split_from(id, name, &fds);
            frame
                .push(|buf| -> Result<(), ()> {
                    buf.extend_from_slice(item);
                    Ok(())
                })
                .ok()?;
            Some(Job {
                id,
                task: job.task,
                frame: frame.finish().ok()?.0,
                fds,
                sink: Arc::clone(&job.sink),
                start: job.start + i * job.stride,
                stride: 1,
                count: 1,
                timeout: job.timeout,
                retried: job.retried,
                counters: Arc::clone(&job.counters),
            })
        })
        .collect()
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
