//! The crash matrix: every way a task can fail or misbehave, each run under `apply_async`,
//! `map_async` and `imap` (through the supervisor) and under a blocking `apply` and `map`
//! (on a worker the calling thread borrows). For each, the caller's error names the task,
//! the worker and how the worker ended; nothing hangs; the pool serves on; no child is left.

use std::io::Write;
use std::time::Duration;

use procpool::{Error, ErrorKind, Pool, WorkerExit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tests_integration::{Rendezvous, assert_no_children, meet, serial};

use crate::tasks::{Unencodable, pid};

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

/// Encodes fine; refuses to decode.
#[derive(Debug, Clone)]
struct Undecodable;

impl Serialize for Undecodable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(0)
    }
}

impl<'de> Deserialize<'de> for Undecodable {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("this value refuses to be decoded"))
    }
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
}

#[procpool::task]
fn faulty(call: Call) -> Reply {
    let Some(fault) = call.fault else {
        return Reply::Value(call.x);
    };
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
    /// The worker broke the protocol and was killed.
    Protocol,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    ApplyAsync,
    Map,
    Imap,
    /// `apply` on an idle pool: the calling thread borrows the worker.
    Apply,
    /// `map` on an idle pool: the calling thread borrows the worker.
    BlockingMap,
}

const TASK: &str = "it::crash_matrix::faulty";
const BOUND: Duration = Duration::from_secs(60);
/// The index of the faulty call among the calls of a `map` or `imap`.
const FAULTY: u64 = 1;
const CALLS: u64 = 6;

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
    let pool = Pool::builder().processes(1).build();
    // SAFETY: as above; `saved` is closed once put back.
    unsafe {
        libc::dup2(saved, 1);
        libc::close(saved);
    }
    pool.expect("the pool starts")
}

fn run_case(mode: Mode, fault: Fault, expect: Expect) {
    let _serial = serial();
    let pool = quiet_pool();
    let parent = std::process::id();
    let before = pool.apply(pid, ()).unwrap();
    let rendezvous = Rendezvous::new();
    let fault = match fault {
        Fault::KilledFromOutside(_) => Fault::KilledFromOutside(rendezvous.path()),
        other => other,
    };
    let killer = matches!(fault, Fault::KilledFromOutside(_));
    let calls: Vec<Call> = (0..CALLS)
        .map(|x| Call {
            x,
            fault: (x == FAULTY).then(|| fault.clone()),
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
    check(outcome, expect, parent);
    // The pool serves on; where the worker survived, it is the same one.
    let after = pool.apply(pid, ()).unwrap();
    match expect {
        Expect::Ok | Expect::Panicked | Expect::Codec(_) => assert_eq!(after, before),
        Expect::Died(_) | Expect::Protocol => assert_ne!(after, before),
    }
    pool.close();
    pool.join().unwrap();
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

fn check(outcome: Result<u64, Error>, expect: Expect, parent: u32) {
    let error = match (outcome, expect) {
        (Ok(v), Expect::Ok) => {
            assert_eq!(v, FAULTY);
            return;
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
    assert!(
        message.contains(&format!("pid {}", worker.pid)),
        "{message}"
    );
    match expect {
        Expect::Ok => unreachable!(),
        Expect::Panicked => {
            assert!(error.is_panic(), "{message}");
            assert_eq!(error.panic_message(), Some("call 1 panics"));
        }
        Expect::Died(exit) => {
            assert_eq!(error.kind(), ErrorKind::WorkerDied, "{message}");
            assert_eq!(error.worker_exit(), Some(exit), "{message}");
            assert!(message.contains(&exit.to_string()), "{message}");
        }
        Expect::Codec(says) => {
            assert_eq!(error.kind(), ErrorKind::Codec, "{message}");
            assert!(message.contains(says), "{message}");
        }
        Expect::Protocol => {
            assert_eq!(error.kind(), ErrorKind::WorkerDied, "{message}");
            assert!(message.contains("broke the protocol"), "{message}");
            assert!(error.worker_exit().is_some(), "{message}");
        }
    }
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
