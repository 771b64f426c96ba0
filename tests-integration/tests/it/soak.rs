//! A randomized soak: ordinary and hostile tasks mixed, through every way of submitting,
//! from several threads at once, on one pool, for a bounded time. Every call must end once,
//! in the final state its task calls for; no call may outlive its bound; the pool's counters
//! must add up; and once the pool is gone, no child, descriptor or shared memory is left.
//!
//! Everything random comes from one seed, printed first and in every failure: replay with
//! `PROCPOOL_SOAK_SEED=<seed> cargo nextest run -p tests-integration soak`. (The calls each
//! thread makes follow from the seed; how threads interleave, and so how many rounds fit
//! in the time, does not.) `PROCPOOL_SOAK_SECS` sets how long calls are submitted, 8 s by
//! default; for runs over about 100 s use `cargo test -p tests-integration --test it soak`,
//! since nextest ends a test after 120 s.
//!
//! One task stops its own worker (SIGSTOP). The pool ends such a worker only when it
//! closes, 5 s after, and a call queued behind it on that worker waits as long; so it comes
//! once, at the end, just before `close`, and adds 5 s to the run.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use procpool::{
    ApplyOptions, AsyncResult, Error, ErrorKind, MapOptions, Pool, SharedBytes, WorkerExit,
};
use serde::{Deserialize, Serialize};
use tests_integration::{children, serial};

use crate::tasks::{Undecodable, Unencodable};

/// How long any one call, round or `join` may take before the soak fails.
const BOUND: Duration = Duration::from_secs(60);
/// How long calls are submitted, unless `PROCPOOL_SOAK_SECS` says otherwise.
const DEFAULT_SECS: f64 = 8.0;

// ---------------------------------------------------------------------------------------
// The tasks
// ---------------------------------------------------------------------------------------

/// What one call does. The first five are ordinary: they return [`answer`] of the call.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Act {
    /// Returns at once.
    Value,
    /// Computes for this many milliseconds first.
    Slow {
        ms: u64,
    },
    /// Forks a child that exits at once; waits for it, or leaves it unreaped.
    Fork {
        reap: bool,
    },
    /// Opens this many descriptors and leaves them open in the worker (within a cap).
    Flood {
        fds: u32,
    },
    /// Returns its shared bytes too.
    Echo,
    /// Panics with "call {x} panics".
    Panic,
    /// Panics with a payload whose drop panics: the worker aborts.
    PanicBomb,
    Abort,
    Segfault,
    /// `process::exit` with this code.
    Exit(i32),
    /// Writes these bytes on the worker's socket, then returns as usual.
    Scribble(Vec<u8>),
    /// Closes every descriptor above 2 (its socket among them), then exits with the code,
    /// or, with none, blocks for good.
    CloseSocket {
        exit: Option<i32>,
    },
    /// Never returns; only ever sent with a timeout.
    Stall,
    /// Arguments that encode but do not decode in the worker.
    BadArgs(Undecodable),
    /// A result that does not encode.
    BadResult,
    /// Stops its own worker (SIGSTOP); only sent once, at the end.
    Stop,
}

/// One call: `x` is unique in the run, so a result that comes back to the wrong call shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Call {
    x: u64,
    /// Decoded before `act`, so that arguments that fail to decode hold mapped bytes.
    bytes: Option<SharedBytes>,
    act: Act,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Value(u64),
    Echo(u64, SharedBytes),
    Bad(Unencodable),
}

/// A panic payload whose drop panics too, which aborts the worker.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("the payload's drop panics too");
    }
}

/// The task of `map`, `imap`, `apply` and the rest.
#[procpool::task]
fn act(call: Call) -> Reply {
    perform(call)
}

/// The same, with the call's fields as three arguments, for `starmap`.
#[procpool::task]
fn act3(x: u64, bytes: Option<SharedBytes>, act: Act) -> Reply {
    perform(Call { x, bytes, act })
}

fn perform(call: Call) -> Reply {
    let Call { x, bytes, act } = call;
    let bytes = bytes.unwrap_or_default();
    let value = answer(x, &bytes);
    match act {
        Act::Value => Reply::Value(value),
        Act::Slow { ms } => {
            let started = Instant::now();
            let mut h = x;
            while started.elapsed() < Duration::from_millis(ms) {
                h = std::hint::black_box(mix(h));
            }
            Reply::Value(value)
        }
        Act::Fork { reap } => {
            fork_a_child(reap);
            Reply::Value(value)
        }
        Act::Flood { fds } => {
            flood(fds);
            Reply::Value(value)
        }
        Act::Echo => Reply::Echo(value, bytes),
        Act::Panic => panic!("call {x} panics"),
        Act::PanicBomb => std::panic::panic_any(Bomb),
        Act::Abort => std::process::abort(),
        // SAFETY: none; this write is meant to fault.
        Act::Segfault => unsafe {
            std::ptr::null_mut::<u64>().write_volatile(1);
            unreachable!()
        },
        Act::Exit(code) => std::process::exit(code),
        Act::Scribble(junk) => {
            write_on_socket(&junk);
            Reply::Value(value)
        }
        Act::CloseSocket { exit } => close_socket_then(exit),
        Act::Stall => loop {
            std::thread::park();
        },
        Act::BadArgs(_) => unreachable!("these arguments never decode"),
        Act::BadResult => Reply::Bad(Unencodable),
        Act::Stop => {
            // SAFETY: raise has no memory effects.
            unsafe { libc::raise(libc::SIGSTOP) };
            Reply::Value(value)
        }
    }
}

/// What an ordinary call returns: its `x` and bytes, mixed.
fn answer(x: u64, bytes: &[u8]) -> u64 {
    let mut h = mix(x);
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Forks a child that exits at once. Children that earlier calls left unreaped on this
/// worker are reaped first, so that a long run does not pile up zombies.
fn fork_a_child(reap: bool) {
    // SAFETY: waitpid writes nothing (no status asked for); the worker's only children are
    // the ones this task forked.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    // SAFETY: the child only calls _exit, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: ends the child at once, running nothing of the worker's.
        unsafe { libc::_exit(0) };
    }
    if reap {
        // SAFETY: waits for the child just forked, asking for no status.
        let reaped = unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        assert_eq!(reaped, pid, "the forked child is reaped");
    }
}

/// Opens up to `fds` descriptors on `/dev/null` and leaves them open. A worker keeps at
/// most a quarter of its limit (and 4,096) open this way, so that it still has room to
/// receive shared bytes: the flood is meant to push its descriptors high, not to run out.
fn flood(fds: u32) {
    static LEFT_OPEN: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: `limit` is plain data; getrlimit writes only into it.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0, "getrlimit failed");
    let cap = (limit.rlim_cur / 4).min(4096) as usize;
    for _ in 0..fds {
        if LEFT_OPEN.load(Ordering::Relaxed) >= cap {
            break;
        }
        // SAFETY: opens a file by a NUL-terminated path; the descriptor is left open.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            break;
        }
        LEFT_OPEN.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes `junk` on every socket the worker has open: its one socket to the parent.
fn write_on_socket(junk: &[u8]) {
    for fd in 3..64 {
        // SAFETY: `stat` is plain data; fstat writes only into it.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on any number is safe; a closed one fails.
        if unsafe { libc::fstat(fd, &mut stat) } == 0
            && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK
        {
            // SAFETY: writes from a live buffer of the length given.
            let n = unsafe { libc::write(fd, junk.as_ptr().cast(), junk.len()) };
            assert_eq!(n, junk.len() as isize, "the write went through");
        }
    }
}

fn close_socket_then(exit: Option<i32>) -> Reply {
    for fd in 3..1024 {
        // SAFETY: closing descriptors this process may or may not have open; nothing in the
        // task uses them afterwards.
        unsafe { libc::close(fd) };
    }
    if let Some(code) = exit {
        std::process::exit(code);
    }
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut byte = 0u8;
    // SAFETY: reads one byte into `byte`; the write end stays open here, so none comes.
    unsafe { libc::read(fds[0], (&raw mut byte).cast(), 1) };
    unreachable!("nothing was written to the pipe")
}

// ---------------------------------------------------------------------------------------
// What each call must end as
// ---------------------------------------------------------------------------------------

/// The final states of [`procpool::Stats`] (`terminated` is never expected here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ok,
    Panicked,
    WorkerDied,
    TimedOut,
    /// A codec error, which `Stats` counts as `other`.
    Other,
}

impl Act {
    fn state(&self) -> State {
        match self {
            Act::Value | Act::Slow { .. } | Act::Fork { .. } | Act::Flood { .. } | Act::Echo => {
                State::Ok
            }
            Act::Panic => State::Panicked,
            Act::PanicBomb
            | Act::Abort
            | Act::Segfault
            | Act::Exit(_)
            | Act::Scribble(_)
            | Act::CloseSocket { .. }
            | Act::Stop => State::WorkerDied,
            Act::Stall => State::TimedOut,
            Act::BadArgs(_) | Act::BadResult => State::Other,
        }
    }
}

/// The settings of one run, and the text every failure message starts with.
#[derive(Debug)]
struct Soak {
    seed: u64,
    retries: u32,
}

impl Soak {
    fn replay(&self) -> String {
        format!(
            "seed {} (rerun with PROCPOOL_SOAK_SEED={})",
            self.seed, self.seed
        )
    }

    /// Whether `outcome` is the one the call's task calls for, and if not, why not.
    /// `timeout` is the per-call timeout the call was sent with.
    fn judge(
        &self,
        call: &Call,
        timeout: Option<Duration>,
        outcome: &Result<Reply, Error>,
    ) -> Result<(), String> {
        let bytes = call.bytes.clone().unwrap_or_default();
        let value = answer(call.x, &bytes);
        let error = match outcome {
            Ok(reply) => {
                return match (&call.act, reply) {
                    (Act::Echo, Reply::Echo(v, back)) if *v == value && back[..] == bytes[..] => {
                        Ok(())
                    }
                    (Act::Echo, _) => Err(format!("wrong reply {reply:?}")),
                    (act, Reply::Value(v)) if act.state() == State::Ok && *v == value => Ok(()),
                    (act, _) if act.state() == State::Ok => {
                        Err(format!("wrong reply {reply:?}, expected Value({value})"))
                    }
                    _ => Err(format!("it succeeded: {reply:?}")),
                };
            }
            Err(error) => error,
        };
        let wrong = |why: &str| Err(format!("{why}: {error:?} ({error})"));
        if !error
            .task_name()
            .is_some_and(|name| name.starts_with("it::soak::act"))
        {
            return wrong("the error does not name the task");
        }
        let message = error.to_string();
        let died = error.kind() == ErrorKind::WorkerDied;
        let exit = error.worker_exit();
        let killed = error.killed_by_pool();
        // A call whose worker died was run again `retries` times, each death like the last;
        // a chunk's split into single calls is not a retry.
        let retried = error.retried() == self.retries;
        let fits = match &call.act {
            Act::Value | Act::Slow { .. } | Act::Fork { .. } | Act::Flood { .. } | Act::Echo => {
                false
            }
            Act::Panic => error.panic_message() == Some(format!("call {} panics", call.x).as_str()),
            Act::PanicBomb | Act::Abort => {
                died && retried && exit == Some(WorkerExit::Signal(libc::SIGABRT))
            }
            Act::Segfault => died && retried && exit == Some(WorkerExit::Signal(libc::SIGSEGV)),
            Act::Exit(code) => died && retried && exit == Some(WorkerExit::Code(*code)),
            Act::Scribble(_) => died && retried && killed && message.contains("broke the protocol"),
            // A worker whose socket ended is given 100 ms to exit, then killed; so is one whose
            // socket fails when the pool writes the next job to it. On a loaded machine the
            // worker may be slow to exit, so either its own exit or the pool's kill is right.
            Act::CloseSocket { exit: Some(code) } => {
                died && retried
                    && ((exit == Some(WorkerExit::Code(*code)) && !killed)
                        || (exit == Some(WorkerExit::Signal(libc::SIGKILL)) && killed))
            }
            Act::CloseSocket { exit: None } => {
                died && retried && killed && exit == Some(WorkerExit::Signal(libc::SIGKILL))
            }
            Act::Stall => error.kind() == ErrorKind::TimedOut && error.timeout() == timeout,
            Act::BadArgs(_) => {
                error.kind() == ErrorKind::Codec && message.contains("refuses to be decoded")
            }
            Act::BadResult => {
                error.kind() == ErrorKind::Codec && message.contains("refuses to be encoded")
            }
            // Stopped, the worker is killed when the pool closes; that is no death to retry.
            Act::Stop => {
                died && error.retried() == 0 && killed && message.contains("stopped by a signal")
            }
        };
        if fits {
            Ok(())
        } else {
            wrong("the wrong error")
        }
    }

    /// Panics, saying the seed, the round and the call, unless `outcome` is the right one.
    fn check(
        &self,
        round: &str,
        call: &Call,
        timeout: Option<Duration>,
        outcome: &Result<Reply, Error>,
    ) {
        if let Err(why) = self.judge(call, timeout, outcome) {
            panic!(
                "{}: {round}: call {} ({:?}, {} shared bytes): {why}",
                self.replay(),
                call.x,
                call.act,
                call.bytes.as_ref().map_or(0, |b| b.len()),
            );
        }
    }
}

/// The final states a thread's calls must have reached, as `Stats` counts them, and what
/// the calls and rounds were, for the summary at the end.
#[derive(Debug, Default)]
struct Tally {
    calls: u64,
    ok: u64,
    panicked: u64,
    worker_died: u64,
    timed_out: u64,
    other: u64,
    /// The fewest worker deaths these calls cause.
    deaths: u64,
    /// What the calls of maps with a failing call count for above: each may end cancelled
    /// instead, and cause no death then (the map's first failure cancels the rest).
    cancellable: Option<Box<Tally>>,
    /// Calls by what they did.
    acts: BTreeMap<String, u64>,
    /// Rounds by way of submitting, and whether they had a timeout.
    rounds: BTreeMap<String, u64>,
    /// The round that took longest, and how long.
    slowest: Option<(Duration, String)>,
}

impl Tally {
    fn count(&mut self, act: &Act, retries: u32) {
        self.calls += 1;
        let name = format!("{act:?}");
        let name = name.split([' ', '(']).next().unwrap_or_default();
        *self.acts.entry(name.to_owned()).or_default() += 1;
        match act.state() {
            State::Ok => self.ok += 1,
            State::Panicked => self.panicked += 1,
            State::WorkerDied => {
                self.worker_died += 1;
                // A stopped worker is not retried; any other death is, `retries` times.
                let runs = if matches!(act, Act::Stop) {
                    1
                } else {
                    1 + retries
                };
                self.deaths += u64::from(runs);
            }
            State::TimedOut => {
                self.timed_out += 1;
                self.deaths += 1;
            }
            State::Other => self.other += 1,
        }
    }

    /// Counts a call of a map that may end cancelled instead of as `act` says.
    fn count_cancellable(&mut self, act: &Act, retries: u32) {
        self.count(act, retries);
        self.cancellable.get_or_insert_default().count(act, retries);
    }

    fn add(&mut self, other: Tally) {
        if let Some(cancellable) = other.cancellable {
            self.cancellable.get_or_insert_default().add(*cancellable);
        }
        if let Some((took, _)) = &other.slowest
            && self.slowest.as_ref().is_none_or(|(most, _)| took > most)
        {
            self.slowest = other.slowest;
        }
        for (name, n) in other.acts {
            *self.acts.entry(name).or_default() += n;
        }
        for (name, n) in other.rounds {
            *self.rounds.entry(name).or_default() += n;
        }
        self.calls += other.calls;
        self.ok += other.ok;
        self.panicked += other.panicked;
        self.worker_died += other.worker_died;
        self.timed_out += other.timed_out;
        self.other += other.other;
        self.deaths += other.deaths;
    }
}

// ---------------------------------------------------------------------------------------
// Rounds: a batch of calls, one way of submitting them
// ---------------------------------------------------------------------------------------

/// splitmix64: a small seeded generator. Each submitting thread has a stream of its own.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in `lo..=hi`.
    fn within(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Way {
    Apply,
    ApplyAsync,
    Map,
    MapAsync,
    Starmap,
    StarmapAsync,
    Imap,
    ImapUnordered,
}

const WAYS: [Way; 8] = [
    Way::Apply,
    Way::ApplyAsync,
    Way::Map,
    Way::MapAsync,
    Way::Starmap,
    Way::StarmapAsync,
    Way::Imap,
    Way::ImapUnordered,
];

struct Round {
    way: Way,
    /// `None`: the automatic chunk size (or no options at all, when `timeout` is none too).
    chunksize: Option<usize>,
    /// A per-call timeout, through `ApplyOptions` or `MapOptions`.
    timeout: Option<Duration>,
    calls: Vec<Call>,
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} of {} calls, chunksize {:?}, timeout {:?}",
            self.way,
            self.calls.len(),
            self.chunksize,
            self.timeout
        )
    }
}

impl Round {
    /// A random round; `next_x` numbers its calls.
    fn random(rng: &mut Rng, next_x: &mut u64) -> Round {
        let way = WAYS[rng.below(WAYS.len() as u64) as usize];
        // A third of the rounds have a timeout, of 1 or 2 s: far above what an ordinary
        // call takes (a few milliseconds at most), even on a loaded machine. A third of
        // those hold a call that never returns, and ends by its timeout (of 1 s).
        let mut timeout = rng
            .chance(33)
            .then(|| Duration::from_secs(rng.within(1, 2)));
        let stall = timeout.is_some() && rng.chance(33);
        if stall {
            timeout = Some(Duration::from_secs(1));
        }
        let big = rng.chance(12);
        let mut count = match way {
            Way::Apply => 1,
            Way::ApplyAsync => rng.within(1, 6),
            _ if big => rng.within(30, 120),
            _ => rng.within(0, 16),
        } as usize;
        // A chunk holding a call that stalls runs for its timeout times its calls, then
        // its calls run again one by one: small chunks and few calls keep that short (at
        // most 4 s, for an automatic chunk of 3 calls on one worker).
        let mut chunksize = match rng.below(3) {
            0 => None,
            1 => Some(1),
            _ => Some(rng.within(2, 8) as usize),
        };
        if stall {
            count = count.clamp(1, 6);
            chunksize = chunksize.map(|c| c.min(2));
        }
        // How hostile the round is: the share of calls that fail, crash or misbehave. A
        // dying worker costs a restart (more with retries), so big rounds stay mild.
        let hostile = if big {
            [0, 2, 5][rng.below(3) as usize]
        } else {
            [0, 5, 20, 50][rng.below(4) as usize]
        };
        let mut calls: Vec<Call> = (0..count)
            .map(|_| {
                *next_x += 1;
                let act = if rng.chance(hostile) {
                    hostile_act(rng)
                } else {
                    ordinary_act(rng)
                };
                // A quarter of the calls carry shared bytes (an echo always does); some of
                // them none at all, which need no descriptor.
                let bytes = (matches!(act, Act::Echo) || rng.chance(25)).then(|| {
                    let len = if rng.chance(20) {
                        0
                    } else {
                        rng.within(1, 16 << 10) as usize
                    };
                    SharedBytes::copy_from_slice(&rng.bytes(len)).expect("shared memory")
                });
                Call {
                    x: *next_x,
                    bytes,
                    act,
                }
            })
            .collect();
        if stall {
            let at = rng.below(calls.len() as u64) as usize;
            calls[at].act = Act::Stall;
        }
        Round {
            way,
            chunksize,
            timeout,
            calls,
        }
    }

    fn apply_options(&self) -> ApplyOptions {
        let options = ApplyOptions::new();
        match self.timeout {
            Some(timeout) => options.timeout(timeout),
            None => options,
        }
    }

    /// `None` half the time there is nothing to set, to call the methods without options.
    fn map_options(&self) -> Option<MapOptions> {
        let mut options = MapOptions::new();
        if let Some(chunksize) = self.chunksize {
            options = options.chunksize(chunksize);
        }
        if let Some(timeout) = self.timeout {
            options = options.timeout(timeout);
        }
        let plain = self.chunksize.is_none() && self.timeout.is_none();
        (!plain || self.calls.len().is_multiple_of(2)).then_some(options)
    }

    fn items(&self) -> Vec<Call> {
        self.calls.clone()
    }

    fn triples(&self) -> Vec<(u64, Option<SharedBytes>, Act)> {
        self.calls
            .iter()
            .map(|c| (c.x, c.bytes.clone(), c.act.clone()))
            .collect()
    }

    /// Submits the round on `pool`, waits for every call, and checks each outcome.
    fn run(&self, pool: &Pool, soak: &Soak) {
        let name = self.to_string();
        let refused = |error: Error| -> ! {
            panic!("{}: {name}: refused at submission: {error}", soak.replay())
        };
        let one = |call: &Call, outcome: Result<Reply, Error>| {
            soak.check(&name, call, self.timeout, &outcome);
        };
        match self.way {
            Way::Apply => {
                let call = &self.calls[0];
                let outcome = if self.timeout.is_some() || call.x.is_multiple_of(2) {
                    pool.apply_with(act, (call.clone(),), self.apply_options())
                } else {
                    pool.apply(act, (call.clone(),))
                };
                one(call, outcome);
            }
            Way::ApplyAsync => {
                let pending: Vec<AsyncResult<Reply>> = self
                    .calls
                    .iter()
                    .map(|call| {
                        let submitted = if self.timeout.is_some() || call.x.is_multiple_of(2) {
                            pool.apply_async_with(act, (call.clone(),), self.apply_options())
                        } else {
                            pool.apply_async(act, (call.clone(),))
                        };
                        submitted.unwrap_or_else(|e| refused(e))
                    })
                    .collect();
                for (call, handle) in self.calls.iter().zip(pending) {
                    one(call, bounded(handle.get_timeout(BOUND), soak, &name));
                }
            }
            Way::Map => {
                let outcome = match self.map_options() {
                    Some(options) => pool.map_with(act, self.items(), options),
                    None => pool.map(act, self.items()),
                };
                self.judge_all(soak, &name, outcome);
            }
            Way::MapAsync => {
                let handle = match self.map_options() {
                    Some(options) => pool.map_async_with(act, self.items(), options),
                    None => pool.map_async(act, self.items()),
                }
                .unwrap_or_else(|e| refused(e));
                self.judge_all(soak, &name, bounded(handle.get_timeout(BOUND), soak, &name));
            }
            Way::Starmap => {
                let outcome = match self.map_options() {
                    Some(options) => pool.starmap_with(act3, self.triples(), options),
                    None => pool.starmap(act3, self.triples()),
                };
                self.judge_all(soak, &name, outcome);
            }
            Way::StarmapAsync => {
                let handle = match self.map_options() {
                    Some(options) => pool.starmap_async_with(act3, self.triples(), options),
                    None => pool.starmap_async(act3, self.triples()),
                }
                .unwrap_or_else(|e| refused(e));
                self.judge_all(soak, &name, bounded(handle.get_timeout(BOUND), soak, &name));
            }
            Way::Imap => {
                let results = match self.map_options() {
                    Some(options) => pool.imap_with(act, self.items(), options),
                    None => pool.imap(act, self.items()),
                }
                .unwrap_or_else(|e| refused(e));
                let results: Vec<Result<Reply, Error>> = results.collect();
                assert_eq!(
                    results.len(),
                    self.calls.len(),
                    "{}: {name}: one result per call",
                    soak.replay()
                );
                for (call, outcome) in self.calls.iter().zip(results) {
                    one(call, outcome);
                }
            }
            Way::ImapUnordered => {
                let results = match self.map_options() {
                    Some(options) => pool.imap_unordered_with(act, self.items(), options),
                    None => pool.imap_unordered(act, self.items()),
                }
                .unwrap_or_else(|e| refused(e));
                let results: Vec<Result<Reply, Error>> = results.collect();
                self.judge_unordered(soak, &name, &results);
            }
        }
    }

    /// The outcome of a whole `map` or `starmap`: every reply, in order, if every call
    /// should succeed; otherwise the error of a call that should fail. Which one depends on
    /// timing: the first failure cancels the calls not yet finished, failing ones among
    /// them. (The calls beside it are not seen here, but each is counted in `Stats`, which
    /// the end of the run checks, in its own final state or as cancelled.)
    fn judge_all(&self, soak: &Soak, name: &str, outcome: Result<Vec<Reply>, Error>) {
        let first_failing = self.calls.iter().position(|c| c.act.state() != State::Ok);
        match (first_failing, outcome) {
            (None, Ok(replies)) => {
                assert_eq!(
                    replies.len(),
                    self.calls.len(),
                    "{}: {name}: one reply per call",
                    soak.replay()
                );
                for (call, reply) in self.calls.iter().zip(replies) {
                    soak.check(name, call, self.timeout, &Ok(reply));
                }
            }
            (Some(_), Err(error)) => {
                let outcome = Err(error);
                let failing: Vec<&Call> = self
                    .calls
                    .iter()
                    .filter(|c| c.act.state() != State::Ok)
                    .collect();
                assert!(
                    failing
                        .iter()
                        .any(|call| soak.judge(call, self.timeout, &outcome).is_ok()),
                    "{}: {name}: {outcome:?} is right for no call that should fail: {:?}",
                    soak.replay(),
                    failing.iter().map(|c| (c.x, &c.act)).collect::<Vec<_>>()
                );
            }
            (None, Err(error)) => panic!(
                "{}: {name}: every call should have succeeded, but: {error:?} ({error})",
                soak.replay()
            ),
            (Some(at), Ok(_)) => panic!(
                "{}: {name}: call {} ({:?}) should have failed the map, which succeeded",
                soak.replay(),
                self.calls[at].x,
                self.calls[at].act
            ),
        }
    }

    /// The results of `imap_unordered`, which come in any order and say nothing of which
    /// call each belongs to: they must pair off with the calls, each result with a call it
    /// is right for. Ordinary calls pair by value and panics by message; deaths of one kind
    /// are interchangeable. The pairing is found by augmenting paths (Kuhn's algorithm).
    fn judge_unordered(&self, soak: &Soak, name: &str, results: &[Result<Reply, Error>]) {
        assert_eq!(
            results.len(),
            self.calls.len(),
            "{}: {name}: one result per call, got {results:?}",
            soak.replay()
        );
        let fits: Vec<Vec<bool>> = results
            .iter()
            .map(|outcome| {
                self.calls
                    .iter()
                    .map(|call| soak.judge(call, self.timeout, outcome).is_ok())
                    .collect()
            })
            .collect();
        // `owner[c]`: the result paired with call `c`.
        let mut owner: Vec<Option<usize>> = vec![None; self.calls.len()];
        for (result, outcome) in results.iter().enumerate() {
            let mut seen = vec![false; self.calls.len()];
            assert!(
                pair(result, &fits, &mut owner, &mut seen),
                "{}: {name}: result {outcome:?} is right for no call left; calls: {:?}",
                soak.replay(),
                self.calls.iter().map(|c| (c.x, &c.act)).collect::<Vec<_>>()
            );
        }
    }
}

/// Pairs `result` with a call it fits, moving earlier pairings along where that frees one.
fn pair(result: usize, fits: &[Vec<bool>], owner: &mut [Option<usize>], seen: &mut [bool]) -> bool {
    for call in 0..owner.len() {
        if fits[result][call] && !seen[call] {
            seen[call] = true;
            let free = match owner[call] {
                None => true,
                Some(other) => pair(other, fits, owner, seen),
            };
            if free {
                owner[call] = Some(result);
                return true;
            }
        }
    }
    false
}

/// `outcome`, unless it is a wait that ran out of its bound.
fn bounded<T>(outcome: Result<T, Error>, soak: &Soak, name: &str) -> Result<T, Error> {
    if let Err(error) = &outcome {
        assert_ne!(
            error.kind(),
            ErrorKind::WaitTimeout,
            "{}: {name}: a call outlived its bound of {BOUND:?}",
            soak.replay()
        );
    }
    outcome
}

fn ordinary_act(rng: &mut Rng) -> Act {
    match rng.below(100) {
        0..50 => Act::Value,
        50..65 => Act::Slow {
            ms: rng.within(1, 5),
        },
        65..75 => Act::Fork {
            reap: rng.chance(50),
        },
        75..85 => Act::Flood {
            fds: rng.within(16, 600) as u32,
        },
        _ => Act::Echo,
    }
}

fn hostile_act(rng: &mut Rng) -> Act {
    match rng.below(11) {
        0 => Act::Panic,
        1 => Act::PanicBomb,
        2 => Act::Abort,
        3 => Act::Segfault,
        4 => Act::Exit(if rng.chance(50) { 0 } else { 3 }),
        // Random bytes, or text, as a task that prints to the wrong descriptor would.
        5 => {
            let len = rng.within(1, 64) as usize;
            Act::Scribble(rng.bytes(len))
        }
        6 => Act::Scribble(b"Hi, world\n".to_vec()),
        7 => Act::CloseSocket {
            exit: Some(rng.within(0, 4) as i32),
        },
        8 => Act::CloseSocket { exit: None },
        9 => Act::BadArgs(Undecodable),
        _ => Act::BadResult,
    }
}

/// What a submitting thread is doing, and since when; `None` between rounds.
type Busy = Mutex<Option<(String, Instant)>>;

/// One submitting thread: random rounds until `until`, each checked as it ends. `busy`
/// says what the thread is doing and since when, for the watchdog.
fn submit_rounds(pool: &Pool, soak: &Soak, thread: u64, until: Instant, busy: &Busy) -> Tally {
    let mut rng = Rng(mix(
        soak.seed ^ (thread + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)
    ));
    // Calls of thread `t` are numbered from `t << 48`: unique in the run.
    let mut next_x = thread << 48;
    let mut tally = Tally::default();
    let mut rounds = 0;
    while Instant::now() < until {
        let round = Round::random(&mut rng, &mut next_x);
        rounds += 1;
        let what = format!("thread {thread}, round {rounds}: {round}");
        let began = Instant::now();
        *busy.lock().unwrap() = Some((what.clone(), began));
        round.run(pool, soak);
        *busy.lock().unwrap() = None;
        let took = began.elapsed();
        if tally.slowest.as_ref().is_none_or(|(most, _)| took > *most) {
            tally.slowest = Some((took, what));
        }
        let way = match round.timeout {
            Some(_) => format!("{:?} with a timeout", round.way),
            None => format!("{:?}", round.way),
        };
        *tally.rounds.entry(way).or_default() += 1;
        let map = matches!(
            round.way,
            Way::Map | Way::MapAsync | Way::Starmap | Way::StarmapAsync
        );
        let failing = round.calls.iter().any(|c| c.act.state() != State::Ok);
        for call in &round.calls {
            if map && failing {
                tally.count_cancellable(&call.act, soak.retries);
            } else {
                tally.count(&call.act, soak.retries);
            }
        }
    }
    tally
}

// ---------------------------------------------------------------------------------------
// What the process holds: descriptors, shared memory
// ---------------------------------------------------------------------------------------

/// This process's open descriptors and what each refers to.
fn open_fds() -> BTreeMap<String, String> {
    // The listing's own descriptor, open while it is read, is left out.
    let listing = format!("/proc/{}/fd", std::process::id());
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|entry| {
            let target = std::fs::read_link(entry.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            (entry.file_name().to_string_lossy().into_owned(), target)
        })
        .filter(|(_, target)| *target != listing)
        .collect()
}

/// This process's children and their states (`R`, `S`, `T` for stopped, `Z`...), from
/// `/proc`: what a failure to join says.
fn children_and_states() -> Vec<(u32, String)> {
    children()
        .into_iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rfind(')')
                .and_then(|at| stat[at + 1..].split_whitespace().next())
                .unwrap_or("?")
                .to_owned();
            (pid, state)
        })
        .collect()
}

/// The mappings of this process that are shared memory files (`memfd:`).
fn memfd_mappings() -> Vec<String> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.contains("memfd:"))
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------
// The soak
// ---------------------------------------------------------------------------------------

fn seed_from_env_or_clock() -> u64 {
    match std::env::var("PROCPOOL_SOAK_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("PROCPOOL_SOAK_SEED={text:?} is not a u64"))
        }
        Err(_) => {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap();
            mix(now.as_nanos() as u64 ^ u64::from(std::process::id()))
        }
    }
}

fn duration_from_env() -> Duration {
    let secs = match std::env::var("PROCPOOL_SOAK_SECS") {
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("PROCPOOL_SOAK_SECS={text:?} is not a number")),
        Err(_) => DEFAULT_SECS,
    };
    Duration::from_secs_f64(secs)
}

#[test]
fn hostile_tasks_soak_every_call_ends_once_and_nothing_is_left() {
    let _serial = serial();
    let seed = seed_from_env_or_clock();
    let length = duration_from_env();
    let mut rng = Rng(seed);
    let processes = rng.within(1, 4) as usize;
    let threads = rng.within(2, 4);
    let soak = Arc::new(Soak {
        seed,
        retries: rng.within(0, 2) as u32,
    });
    let max_tasks_per_child = match rng.below(10) {
        0..5 => None,
        5 => Some(1),
        _ => Some(rng.within(2, 50) as usize),
    };
    eprintln!(
        "soak: {} for {length:?}: {processes} workers, {threads} submitting threads, \
         retries {}, max_tasks_per_child {max_tasks_per_child:?}",
        soak.replay(),
        soak.retries
    );

    // One pool first, with shared bytes both ways, so that whatever a process creates once
    // is there before counting.
    {
        let pool = Pool::builder().processes(1).build().unwrap();
        let bytes = SharedBytes::copy_from_slice(&[1, 2, 3]).unwrap();
        let call = Call {
            x: 0,
            bytes: Some(bytes),
            act: Act::Echo,
        };
        soak.check("warm-up", &call, None, &pool.apply(act, (call.clone(),)));
    }
    let fds_before = open_fds();
    let maps_before = memfd_mappings();
    assert!(children().is_empty(), "{}: children before", soak.replay());

    // Backtraces off: making one counts against the timeouts of the calls that panic.
    let mut builder = Pool::builder()
        .processes(processes)
        .retries(soak.retries)
        .backtraces(false);
    if let Some(n) = max_tasks_per_child {
        builder = builder.max_tasks_per_child(n);
    }
    let pool = Arc::new(builder.build().unwrap());
    let started = Instant::now();
    let until = started + length;

    // The submitting threads. Each says what it is doing in `busy`; this thread watches
    // that no round outlives the bound (a blocking `map` or `imap` has no wait of its own
    // to bound), and fails at once, naming the round, if one does.
    let busy: Arc<Vec<Busy>> = Arc::new((0..threads).map(|_| Mutex::new(None)).collect());
    let (done, finished) = mpsc::channel::<()>();
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (pool, soak, busy, done) = (
                Arc::clone(&pool),
                Arc::clone(&soak),
                Arc::clone(&busy),
                done.clone(),
            );
            std::thread::spawn(move || {
                let tally = submit_rounds(&pool, &soak, thread, until, &busy[thread as usize]);
                let _ = done.send(());
                tally
            })
        })
        .collect();
    drop(done);
    loop {
        // Every thread sends once when it is done, and drops its sender either way.
        match finished.recv_timeout(Duration::from_millis(500)) {
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        for slot in busy.iter() {
            if let Some((what, since)) = &*slot.lock().unwrap() {
                assert!(
                    since.elapsed() < BOUND,
                    "{}: {what}: still running after {BOUND:?}",
                    soak.replay()
                );
            }
        }
    }
    let mut tally = Tally::default();
    for (thread, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(its) => tally.add(its),
            Err(_) => panic!(
                "{}: submitting thread {thread} failed; its message is above",
                soak.replay()
            ),
        }
    }
    let submitting = started.elapsed();

    // The end: a call that stops its worker, ordinary ones after it (some may wait behind
    // it on that worker), then close and join. The pool ends the stopped worker 5 s into
    // the close; the calls behind it run on its replacement.
    let stop = Call {
        x: u64::MAX,
        bytes: None,
        act: Act::Stop,
    };
    let stopped = pool.apply_async(act, (stop.clone(),)).unwrap();
    let behind: Vec<(Call, AsyncResult<Reply>)> = (1..=3)
        .map(|i| {
            let call = Call {
                x: u64::MAX - i,
                bytes: None,
                act: Act::Value,
            };
            let handle = pool.apply_async(act, (call.clone(),)).unwrap();
            (call, handle)
        })
        .collect();
    pool.close();
    let closed = Instant::now();
    let (joined_tx, joined) = mpsc::channel();
    let joiner = {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || joined_tx.send(pool.join()))
    };
    let join = joined.recv_timeout(BOUND).unwrap_or_else(|_| {
        panic!(
            "{}: join still waits after {BOUND:?}: the stopped call ready: {}, the calls \
                 behind it ready: {:?}; pool {:?}; children (pid, state): {:?}",
            soak.replay(),
            stopped.ready(),
            behind.iter().map(|(_, h)| h.ready()).collect::<Vec<_>>(),
            pool.stats(),
            children_and_states(),
        )
    });
    join.unwrap_or_else(|e| panic!("{}: join failed: {e}", soak.replay()));
    joiner.join().unwrap().unwrap();
    let joining = closed.elapsed();
    soak.check(
        "the stop at the end",
        &stop,
        None,
        &bounded(stopped.get_timeout(BOUND), &soak, "stop"),
    );
    tally.count(&stop.act, soak.retries);
    for (call, handle) in &behind {
        let outcome = bounded(handle.get_timeout(BOUND), &soak, "behind the stop");
        soak.check("behind the stop", call, None, &outcome);
        tally.count(&call.act, soak.retries);
    }

    // The counters: every call in exactly one final state, the one its task called for.
    let stats = pool.stats();
    let context = format!("{}: pool {stats:?}, expected {tally:?}", soak.replay());
    eprintln!(
        "soak: {} calls in {submitting:?}, then {joining:?} to close and join; {stats:?}\n\
         soak: calls by act {:?}\nsoak: rounds by way {:?}\nsoak: the slowest round {:?}",
        tally.calls, tally.acts, tally.rounds, tally.slowest
    );
    // `in_flight` is what `submitted` leaves over every final state the pool counts, the
    // ones named here and any other; with the states named here equal to the calls'
    // expected ones, which sum to `submitted`, any other must be zero.
    assert_eq!(stats.in_flight, 0, "{context}");
    assert_eq!(
        stats.submitted,
        stats.ok
            + stats.panicked
            + stats.worker_died
            + stats.timed_out
            + stats.terminated
            + stats.cancelled
            + stats.other,
        "{context}"
    );
    assert_eq!(stats.submitted, tally.calls, "{context}");
    // Each final state: as the calls call for, but for those a failing map cancelled.
    let maybe = tally.cancellable.take().unwrap_or_default();
    let within = |what: &str, counted: u64, expected: u64, cancellable: u64| {
        assert!(
            (expected - cancellable..=expected).contains(&counted),
            "{what}: {counted}, expected {expected} less at most {cancellable} cancelled: {context}"
        );
    };
    within("ok", stats.ok, tally.ok, maybe.ok);
    within("panicked", stats.panicked, tally.panicked, maybe.panicked);
    within(
        "worker_died",
        stats.worker_died,
        tally.worker_died,
        maybe.worker_died,
    );
    within(
        "timed_out",
        stats.timed_out,
        tally.timed_out,
        maybe.timed_out,
    );
    within("other", stats.other, tally.other, maybe.other);
    assert!(stats.cancelled <= maybe.calls, "cancelled: {context}");
    assert_eq!(stats.terminated, 0, "terminated: {context}");
    assert!(
        stats.worker_deaths >= tally.deaths - maybe.deaths,
        "deaths: {context}"
    );
    assert!(stats.worker_starts >= processes as u64, "{context}");
    if max_tasks_per_child.is_none() {
        // Without retirements, a worker starts only in place of one that died or that a
        // cancel killed (one running a cancelled call: at most one a cancelled call).
        assert!(
            stats.worker_starts <= processes as u64 + stats.worker_deaths + stats.cancelled,
            "starts: {context}"
        );
    }

    // Nothing left: no child, no descriptor, no shared memory, once the pool and every
    // result are dropped.
    drop((stopped, behind));
    drop(pool);
    let left = children();
    assert!(
        left.is_empty(),
        "{}: child processes left behind: {left:?}",
        soak.replay()
    );
    let fds_after = open_fds();
    let leaked: Vec<_> = fds_after
        .iter()
        .filter(|&(fd, target)| fds_before.get(fd) != Some(target))
        .collect();
    assert!(
        leaked.is_empty(),
        "{}: descriptors left open: {leaked:?}",
        soak.replay()
    );
    assert_eq!(
        fds_after.len(),
        fds_before.len(),
        "{}: descriptors before {fds_before:?}, after {fds_after:?}",
        soak.replay()
    );
    let memfds: Vec<_> = fds_after
        .values()
        .filter(|target| target.contains("memfd:"))
        .collect();
    assert!(
        memfds.is_empty(),
        "{}: shared memory still open: {memfds:?}",
        soak.replay()
    );
    assert_eq!(
        memfd_mappings(),
        maps_before,
        "{}: shared memory still mapped",
        soak.replay()
    );
}
