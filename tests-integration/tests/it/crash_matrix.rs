//! The crash matrix: every way a task can fail or misbehave, each run on a pool of two
//! workers under `apply_async`, `map_async` and `imap` (through the supervisor) and under a
//! blocking `apply` and `map` (on workers the calling thread borrows). For each, the caller's
//! error is of the kind promised and names the task, the very worker that ran the call (its
//! slot and pid, as the call itself saw them: `apply_async` and `apply` run it in slot 1) and
//! exactly how the worker ended; a dead worker is replaced in its slot; nothing hangs; every
//! call is counted once, in its final state; no child is left.

use std::io::Write;
use std::time::Duration;

use procpool::{AsyncResult, Error, ErrorKind, Pool, WorkerExit};
use serde::{Deserialize, Serialize};
use tests_integration::{Arrival, Rendezvous, assert_no_children, meet, serial};

use crate::tasks::{Undecodable, Unencodable, hold, pid, wait_for};

/// What the faulty call does.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Fault {
    Panic,
    Abort,
    Segfault,
    /// Waits at the rendezvous at this path until the test kills its worker.
    KilledFromOutside(String),
    Exit0,
    Exit3,
    StackOverflow,
    /// Allocates past an address-space limit it sets on its own worker.
    OutOfMemory,
    CloseStdinAndStdout,
    Print10Mb,
    /// Arguments that do not decode in the worker.
    BadArgs(Undecodable),
    /// A result that does not encode in the worker.
    BadResult,
    /// Writes bytes that are not a frame onto the worker's socket.
    Garbage,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Value(u64),
    Bad(Unencodable),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Call {
    x: u64,
    fault: Option<Fault>,
    /// Where the faulty call writes which worker runs it, before it does anything else.
    report: String,
}

#[procpool::task]
fn faulty(call: Call) -> Reply {
    let Some(fault) = call.fault else {
        return Reply::Value(call.x);
    };
    // A map runs a call again after its chunk's worker died: the last run writes last.
    let slot = procpool::current_worker().map(|w| (w.index, w.pid));
    let (index, said) = slot.expect("a task runs in a worker");
    std::fs::write(
        &call.report,
        format!("{index} {} {said}", std::process::id()),
    )
    .expect("write which worker runs the call");
    match fault {
        Fault::Panic => panic!("call {} panics", call.x),
        Fault::Abort => std::process::abort(),
        // SAFETY: none; this write is meant to fault.
        Fault::Segfault => unsafe {
            std::ptr::null_mut::<u64>().write_volatile(1);
            unreachable!()
        },
        Fault::KilledFromOutside(path) => {
            let _ = meet(&path);
            loop {
                std::thread::park();
            }
        }
        Fault::Exit0 => std::process::exit(0),
        Fault::Exit3 => std::process::exit(3),
        Fault::StackOverflow => Reply::Value(recurse(u64::MAX)),
        Fault::OutOfMemory => {
            limit_address_space(256 << 20);
            let big: Vec<u8> = Vec::with_capacity(4 << 30);
            Reply::Value(std::hint::black_box(big).capacity() as u64)
        }
        Fault::CloseStdinAndStdout => {
            // SAFETY: closing descriptors 0 and 1 of this worker; nothing here holds them.
            unsafe {
                libc::close(0);
                libc::close(1);
            }
            Reply::Value(call.x)
        }
        Fault::Print10Mb => {
            let line = [b'x'; 1024];
            let mut stdout = std::io::stdout().lock();
            for _ in 0..10 * 1024 {
                let _ = stdout.write_all(&line);
            }
            let _ = stdout.flush();
            Reply::Value(call.x)
        }
        Fault::BadArgs(_) => unreachable!("the arguments never decode"),
        Fault::BadResult => Reply::Bad(Unencodable),
        Fault::Garbage => {
            // A length prefix far over the frame limit, then junk.
            let junk = [0xff_u8; 64];
            // SAFETY: writes from a live buffer to descriptor 3, the worker's socket.
            unsafe { libc::write(3, junk.as_ptr().cast(), junk.len()) };
            Reply::Value(call.x)
        }
    }
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 512]);
    if n == 0 {
        return 0;
    }
    recurse(std::hint::black_box(n - 1)) + frame[7]
}

/// Caps this process's address space `headroom` bytes above what it uses now.
fn limit_address_space(headroom: u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let limit = libc::rlimit {
        rlim_cur: vm_kb * 1024 + headroom,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct, which lives for the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
}

/// What the caller must see for the faulty call.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The call succeeds and its worker serves on.
    Ok,
    Panicked,
    Died(WorkerExit),
    /// A codec error whose message says this; the worker serves on.
    Codec(&'static str),
    /// The worker broke the protocol and was killed by the pool (SIGKILL).
    Protocol,
}

impl Expect {
    fn worker_dies(self) -> bool {
        matches!(self, Expect::Died(_) | Expect::Protocol)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `apply_async`, with slot 0 held by another call: the faulty call runs in slot 1.
    ApplyAsync,
    Map,
    Imap,
    /// `apply` with slot 0 held by another call: the calling thread borrows the idle worker
    /// of slot 1.
    Apply,
    /// `map` on an idle pool: the calling thread borrows both workers.
    BlockingMap,
}

impl Mode {
    /// Whether slot 0 is held while the faulty call runs, so that it runs in slot 1. Maps
    /// would queue their second jobs behind the held call, so they run on a free pool and
    /// the test learns from the call itself where it ran.
    fn holds_slot_0(self) -> bool {
        matches!(self, Mode::ApplyAsync | Mode::Apply)
    }

    /// How many calls the faulty one comes among.
    fn calls(self) -> u64 {
        match self {
            Mode::ApplyAsync | Mode::Apply => 1,
            Mode::Map | Mode::Imap | Mode::BlockingMap => CALLS,
        }
    }
}

const TASK: &str = "it::crash_matrix::faulty";
const BOUND: Duration = Duration::from_secs(60);
/// The index of the faulty call among the calls of a `map` or `imap`.
const FAULTY: u64 = 1;
const CALLS: u64 = 6;
const PROCESSES: usize = 2;

/// A worker as the faulty call saw itself: its slot (from `current_worker`) and its pid
/// (from the process itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ran {
    index: usize,
    pid: u32,
}

/// Where the faulty call last ran, from its report; `None` if it never ran.
fn ran(report: &str) -> Option<Ran> {
    let text = std::fs::read_to_string(report).ok()?;
    let fields: Vec<u64> = text
        .split(' ')
        .map(|f| f.parse().expect("a number"))
        .collect();
    let [index, pid, said] = fields[..] else {
        panic!("a bad report: {text:?}");
    };
    assert_eq!(
        said, pid,
        "current_worker() gives another pid than the process's own"
    );
    Some(Ran {
        index: index as usize,
        pid: pid as u32,
    })
}

/// A pool whose workers write their standard output to /dev/null: a case prints 10 MB.
fn quiet_pool() -> Pool {
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: dup and dup2 on descriptors this test owns (1 is put back below); no memory
    // is involved. The workers inherit descriptor 1 as it is while they start.
    let saved = unsafe { libc::dup(1) };
    assert!(saved >= 0);
    // SAFETY: as above.
    assert!(unsafe { libc::dup2(null.as_raw_fd(), 1) } >= 0);
    let pool = Pool::builder().processes(PROCESSES).build();
    // SAFETY: as above; `saved` is closed once put back.
    unsafe {
        libc::dup2(saved, 1);
        libc::close(saved);
    }
    pool.expect("the pool starts")
}

/// A `hold` call that keeps the worker of slot 0 busy.
struct Held {
    call: AsyncResult<u64>,
    arrival: Arrival,
    /// How many `hold` calls it took to get slot 0.
    calls: u64,
}

/// Holds the worker of slot 0 (whose pid is `pids[0]`) and leaves the worker of slot 1 idle.
fn hold_slot_0(pool: &Pool, rendezvous: &Rendezvous, pids: &[u32]) -> Held {
    let arrive = || {
        rendezvous
            .arrive_within(BOUND)
            .expect("a held call reaches its worker")
    };
    let first = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let arrival = arrive();
    let held = if arrival.pid == pids[0] {
        Held {
            call: first,
            arrival,
            calls: 1,
        }
    } else {
        // It went to slot 1: hold slot 0 with a second call (slot 0 is the only idle worker
        // now), then let the first go.
        assert_eq!(arrival.pid, pids[1]);
        let second = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
        let other = arrive();
        assert_eq!(other.pid, pids[0]);
        arrival.release(1);
        assert_eq!(first.get_timeout(BOUND).unwrap(), 1);
        Held {
            call: second,
            arrival: other,
            calls: 2,
        }
    };
    // Slot 1 is idle, so a call submitted now goes to it rather than behind the held one.
    wait_for("the worker of slot 1 is idle", || {
        procpool::test_hooks::idle_workers(pool) == 1
    });
    held
}

fn run_case(mode: Mode, fault: Fault, expect: Expect) {
    let _serial = serial();
    let pool = quiet_pool();
    let parent = std::process::id();
    wait_for("every worker has started", || {
        pool.worker_pids().len() == PROCESSES
    });
    let before = pool.worker_pids();
    let holding = Rendezvous::new();
    let held = mode
        .holds_slot_0()
        .then(|| hold_slot_0(&pool, &holding, &before));
    if mode == Mode::BlockingMap {
        wait_for("both workers are idle", || {
            procpool::test_hooks::idle_workers(&pool) == PROCESSES
        });
    }
    let rendezvous = Rendezvous::new();
    let report = format!("{}.ran", rendezvous.path());
    let _ = std::fs::remove_file(&report);
    let fault = match fault {
        Fault::KilledFromOutside(_) => Fault::KilledFromOutside(rendezvous.path()),
        other => other,
    };
    let killer = matches!(fault, Fault::KilledFromOutside(_));
    let calls: Vec<Call> = (0..CALLS)
        .map(|x| Call {
            x,
            fault: (x == FAULTY).then(|| fault.clone()),
            report: report.clone(),
        })
        .collect();
    // A `map` sends the faulty call in a chunk with others first; when that chunk's worker
    // dies, its calls run again one by one, and the faulty one arrives a second time.
    let arrivals = match (killer, mode) {
        (false, _) => 0,
        (true, Mode::Map | Mode::BlockingMap) => 2,
        (true, _) => 1,
    };
    let kill_when_it_arrives = || {
        for _ in 0..arrivals {
            let arrival = rendezvous.arrive();
            // SAFETY: kill has no memory effects; the pid is a worker the pool has not
            // reaped, since its task is still waiting at the rendezvous.
            assert_eq!(unsafe { libc::kill(arrival.pid as i32, libc::SIGKILL) }, 0);
        }
    };
    let outcome: Result<u64, Error> = match mode {
        Mode::ApplyAsync => {
            let pending = pool
                .apply_async(faulty, (calls[FAULTY as usize].clone(),))
                .unwrap();
            kill_when_it_arrives();
            pending.get_timeout(BOUND).map(value)
        }
        Mode::Map => {
            let pending = pool.map_async(faulty, calls).unwrap();
            kill_when_it_arrives();
            pending.get_timeout(BOUND).map(map_value)
        }
        Mode::Apply => std::thread::scope(|scope| {
            let call = calls[FAULTY as usize].clone();
            let caller = scope.spawn(|| pool.apply(faulty, (call,)));
            kill_when_it_arrives();
            caller.join().unwrap().map(value)
        }),
        Mode::BlockingMap => std::thread::scope(|scope| {
            let caller = scope.spawn(|| pool.map(faulty, calls));
            kill_when_it_arrives();
            caller.join().unwrap().map(map_value)
        }),
        Mode::Imap => {
            let results = pool.imap(faulty, calls).unwrap();
            kill_when_it_arrives();
            let results: Vec<Result<Reply, Error>> = results.collect();
            assert_eq!(results.len() as u64, CALLS);
            for (x, result) in (0..CALLS).zip(&results) {
                if x != FAULTY {
                    assert!(
                        matches!(result, Ok(Reply::Value(v)) if *v == x),
                        "{x}: {result:?}"
                    );
                }
            }
            results.into_iter().nth(FAULTY as usize).unwrap().map(value)
        }
    };
    let ran = ran(&report);
    let _ = std::fs::remove_file(&report);
    // A map ends at its first failure and cancels its calls not yet finished: the ordinary
    // calls beside the faulty one may end cancelled.
    let cancels = matches!(mode, Mode::Map | Mode::BlockingMap) && !matches!(expect, Expect::Ok);
    if held.is_some() && ran.is_some() {
        // The premise of the held modes: the call ran in slot 1, on the worker it began with.
        let slot_1 = Ran {
            index: 1,
            pid: before[1],
        };
        assert_eq!(ran, Some(slot_1), "the faulty call did not run in slot 1");
    }
    let worker = check(outcome, expect, parent);
    match (worker, ran) {
        (None, _) => {}
        // The exact worker that ran the call, as the call saw itself.
        (Some(worker), Some(ran)) => assert_eq!(worker, ran, "the error names another worker"),
        // The arguments did not decode: the call never ran, and the worker that got it
        // serves on; it is one of the pool's, in its own slot.
        (Some(worker), None) => {
            assert!(matches!(expect, Expect::Codec(_)), "{expect:?}");
            assert_eq!(before.get(worker.index), Some(&worker.pid), "{worker:?}");
            if held.is_some() {
                assert_eq!(worker.index, 1, "{worker:?}");
            }
        }
    }
    if held.is_some() {
        // Whatever happened in slot 1, the held worker is untouched.
        assert_eq!(pool.worker_pids().first(), Some(&before[0]));
    }
    let held_calls = held.as_ref().map_or(0, |held| held.calls);
    if let Some(held) = held {
        held.arrival.release(7);
        assert_eq!(held.call.get_timeout(BOUND).unwrap(), 7);
    }
    // A dead worker is replaced: the pool is back to its size, with a new worker in the dead
    // one's slot. Otherwise the same workers serve on.
    if expect.worker_dies() {
        let dead = worker.expect("a dead worker is named");
        wait_for("the dead worker is replaced", || {
            let pids = pool.worker_pids();
            pids.len() == PROCESSES && !pids.contains(&dead.pid)
        });
        let after = pool.worker_pids();
        assert_ne!(after[dead.index], dead.pid);
        if mode.holds_slot_0() {
            assert_eq!(after[0], before[0], "slot 0 was held all along");
        }
    } else if cancels {
        // A worker that ran a cancelled call was killed and replaced.
        wait_for("the pool is back to its size", || {
            pool.worker_pids().len() == PROCESSES
        });
    } else {
        assert_eq!(pool.worker_pids(), before, "the same workers serve on");
    }
    let served = pool.apply(pid, ()).unwrap();
    assert!(pool.worker_pids().contains(&served), "{served}");
    pool.close();
    pool.join().unwrap();
    // Every call ended once, in the state its outcome says.
    let stats = pool.stats();
    let submitted = held_calls + mode.calls() + 1;
    let (panicked, worker_died, other) = match expect {
        Expect::Ok => (0, 0, 0),
        Expect::Panicked => (1, 0, 0),
        Expect::Died(_) | Expect::Protocol => (0, 1, 0),
        Expect::Codec(_) => (0, 0, 1),
    };
    let failed = panicked + worker_died + other;
    if !cancels {
        assert_eq!(stats.cancelled, 0, "{stats:?}");
    }
    assert_eq!(
        (
            stats.submitted,
            stats.ok + stats.cancelled,
            stats.panicked,
            stats.worker_died,
            stats.other,
            stats.timed_out + stats.terminated,
            stats.in_flight,
        ),
        (
            submitted,
            submitted - failed,
            panicked,
            worker_died,
            other,
            0,
            0
        ),
        "{stats:?}"
    );
    if expect.worker_dies() {
        assert!(stats.worker_deaths >= 1, "{stats:?}");
    } else {
        assert_eq!(stats.worker_deaths, 0, "{stats:?}");
    }
    // Every death was replaced once; so was each worker a cancel killed, at most one a slot.
    let replaced = stats
        .worker_starts
        .checked_sub(PROCESSES as u64 + stats.worker_deaths)
        .unwrap_or_else(|| panic!("a death was not replaced: {stats:?}"));
    let killed_by_cancels = if cancels { PROCESSES as u64 } else { 0 };
    assert!(replaced <= killed_by_cancels, "{stats:?}");
    assert_no_children();
}

/// The faulty call's value from a map's replies, which must all be there and in order.
fn map_value(replies: Vec<Reply>) -> u64 {
    let values: Vec<u64> = replies.into_iter().map(value).collect();
    assert_eq!(values, (0..CALLS).collect::<Vec<_>>());
    values[FAULTY as usize]
}

fn value(reply: Reply) -> u64 {
    match reply {
        Reply::Value(v) => v,
        Reply::Bad(_) => panic!("an unencodable reply arrived"),
    }
}

/// Checks the outcome against `expect`; returns the worker the error names, if it failed.
fn check(outcome: Result<u64, Error>, expect: Expect, parent: u32) -> Option<Ran> {
    let error = match (outcome, expect) {
        (Ok(v), Expect::Ok) => {
            assert_eq!(v, FAULTY);
            return None;
        }
        (Ok(v), _) => panic!("expected {expect:?}, got Ok({v})"),
        (Err(error), Expect::Ok) => panic!("expected success, got {error}"),
        (Err(error), _) => error,
    };
    let message = error.to_string();
    assert_eq!(error.task_name(), Some(TASK), "{message}");
    assert!(message.contains(TASK), "{message}");
    let worker = error
        .worker_info()
        .unwrap_or_else(|| panic!("no worker: {message}"));
    assert_ne!(worker.pid, parent);
    assert!(worker.index < PROCESSES, "{message}");
    assert!(message.contains(&worker.to_string()), "{message}");
    match expect {
        Expect::Ok => unreachable!(),
        Expect::Panicked => {
            assert_eq!(error.kind(), ErrorKind::Panicked, "{message}");
            assert_eq!(error.panic_message(), Some("call 1 panics"));
            assert_eq!(error.worker_exit(), None, "{message}");
        }
        Expect::Died(exit) => {
            assert_eq!(error.kind(), ErrorKind::WorkerDied, "{message}");
            assert_eq!(error.worker_exit(), Some(exit), "{message}");
            assert!(message.contains(&exit.to_string()), "{message}");
            assert!(!error.killed_by_pool(), "{message}");
        }
        Expect::Codec(says) => {
            assert_eq!(error.kind(), ErrorKind::Codec, "{message}");
            assert!(message.contains(says), "{message}");
            assert_eq!(error.worker_exit(), None, "{message}");
        }
        Expect::Protocol => {
            assert_eq!(error.kind(), ErrorKind::WorkerDied, "{message}");
            assert!(message.contains("broke the protocol"), "{message}");
            let killed = WorkerExit::Signal(libc::SIGKILL);
            assert_eq!(error.worker_exit(), Some(killed), "{message}");
            assert!(error.killed_by_pool(), "{message}");
        }
    }
    Some(Ran {
        index: worker.index,
        pid: worker.pid,
    })
}

/// One module per case, with one test per way of submitting it.
macro_rules! matrix {
    ($($case:ident: $fault:expr => $expect:expr;)*) => {$(
        mod $case {
            use super::*;

            #[test]
            fn apply_async() {
                run_case(Mode::ApplyAsync, $fault, $expect);
            }

            #[test]
            fn map() {
                run_case(Mode::Map, $fault, $expect);
            }

            #[test]
            fn imap() {
                run_case(Mode::Imap, $fault, $expect);
            }

            #[test]
            fn apply() {
                run_case(Mode::Apply, $fault, $expect);
            }

            #[test]
            fn blocking_map() {
                run_case(Mode::BlockingMap, $fault, $expect);
            }
        }
    )*};
}

matrix! {
    panic: Fault::Panic => Expect::Panicked;
    abort: Fault::Abort => Expect::Died(WorkerExit::Signal(libc::SIGABRT));
    segfault: Fault::Segfault => Expect::Died(WorkerExit::Signal(libc::SIGSEGV));
    sigkill_from_outside: Fault::KilledFromOutside(String::new())
        => Expect::Died(WorkerExit::Signal(libc::SIGKILL));
    exit_0: Fault::Exit0 => Expect::Died(WorkerExit::Code(0));
    exit_3: Fault::Exit3 => Expect::Died(WorkerExit::Code(3));
    stack_overflow: Fault::StackOverflow => Expect::Died(WorkerExit::Signal(libc::SIGSEGV));
    out_of_memory: Fault::OutOfMemory => Expect::Died(WorkerExit::Signal(libc::SIGABRT));
    close_stdin_and_stdout: Fault::CloseStdinAndStdout => Expect::Ok;
    print_10_mb: Fault::Print10Mb => Expect::Ok;
    bad_args: Fault::BadArgs(Undecodable) => Expect::Codec("refuses to be decoded");
    bad_result: Fault::BadResult => Expect::Codec("refuses to be encoded");
    garbage_on_the_socket: Fault::Garbage => Expect::Protocol;
}
