//! Tasks that panic, crash or kill their worker: the caller gets a typed error, the pool
//! carries on, and no child is left.

use std::collections::HashSet;

use procpool::{ErrorKind, MapOptions, Pool, WorkerExit};
use tests_integration::{Rendezvous, assert_no_children, finish, pool, serial};

use crate::tasks::{Unencodable, hold, pid, square, wait_for};

#[procpool::task]
fn panics(x: u64) -> u64 {
    if x == 7 {
        panic!("seven is right out");
    }
    x
}

/// How a task ends its worker.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
enum Crash {
    Abort,
    Segfault,
    Exit0,
    Exit3,
}

#[procpool::task]
fn crash(how: Crash) -> u64 {
    match how {
        Crash::Abort => std::process::abort(),
        // SAFETY: none; this write is meant to fault.
        Crash::Segfault => unsafe {
            std::ptr::null_mut::<u64>().write_volatile(1);
            unreachable!()
        },
        Crash::Exit0 => std::process::exit(0),
        Crash::Exit3 => std::process::exit(3),
    }
}

#[procpool::task]
fn crash_one(x: u64) -> u64 {
    if x == 500 {
        std::process::abort();
    }
    x
}

#[procpool::task]
fn unencodable() -> Unencodable {
    Unencodable
}

#[procpool::task]
fn failing_init(fail: bool) {
    if fail {
        panic!("the initializer refuses");
    }
}

static INITIALIZED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

#[procpool::task]
fn init_marker(tag: u32) {
    INITIALIZED
        .set(tag)
        .expect("the initializer runs once per worker");
}

#[procpool::task]
fn read_marker() -> Option<u32> {
    INITIALIZED.get().copied()
}

#[test]
fn a_panic_is_an_error_and_the_worker_carries_on() {
    let _serial = serial();
    let pool = pool(1);
    let before = pool.apply(pid, ()).unwrap();
    let error = pool.apply(panics, (7,)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Panicked, "{error:?}");
    assert_eq!(error.panic_message(), Some("seven is right out"));
    let location = error.panic_location().expect("a location");
    assert!(location.contains("failures.rs"), "{location}");
    assert_eq!(error.worker_info().map(|w| w.pid), Some(before));
    assert!(error.to_string().contains("panicked at"), "{error}");
    assert!(error.to_string().contains("failures::panics"), "{error}");
    assert_eq!(
        pool.apply(pid, ()).unwrap(),
        before,
        "the same worker serves on"
    );
    assert_eq!(pool.apply(panics, (6,)).unwrap(), 6);
    finish(pool);
}

#[test]
fn panics_in_a_map_fail_that_call_alone() {
    let _serial = serial();
    let pool = pool(2);
    let error = pool.map(panics, 1..=20).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Panicked, "{error}");
    assert_eq!(error.panic_message(), Some("seven is right out"));
    let results: Vec<_> = pool.imap(panics, 1..=20).unwrap().collect();
    for (x, result) in (1..=20).zip(&results) {
        match result {
            Ok(value) => assert_eq!(*value, x),
            Err(error) => {
                assert_eq!(x, 7, "{error}");
                assert_eq!(error.kind(), ErrorKind::Panicked, "{error}");
            }
        }
    }
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    finish(pool);
}

#[test]
fn a_dying_worker_fails_its_task_and_is_replaced() {
    let _serial = serial();
    let pool = pool(1);
    let cases = [
        (Crash::Abort, WorkerExit::Signal(libc::SIGABRT)),
        (Crash::Segfault, WorkerExit::Signal(libc::SIGSEGV)),
        (Crash::Exit0, WorkerExit::Code(0)),
        (Crash::Exit3, WorkerExit::Code(3)),
    ];
    for (how, exit) in cases {
        let before = pool.apply(pid, ()).unwrap();
        let error = pool.apply(crash, (how,)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::WorkerDied, "{how:?}: {error:?}");
        assert_eq!(error.worker_exit(), Some(exit), "{how:?}");
        let worker = error.worker_info().expect("the worker is named");
        assert_eq!((worker.index, worker.pid), (0, before));
        let message = error.to_string();
        assert!(
            message.contains(&format!("pid {before}")) && message.contains("failures::crash"),
            "{message}"
        );
        wait_for("the dead worker is replaced", || {
            pool.worker_pids().first().is_some_and(|&p| p != before)
        });
        let after = pool.apply(pid, ()).unwrap();
        assert_ne!(after, before, "{how:?}: a replacement serves");
        assert_eq!(pool.worker_pids(), [after]);
    }
    finish(pool);
}

#[test]
fn a_worker_killed_from_outside() {
    let _serial = serial();
    let pool = pool(2);
    wait_for("both workers have started", || {
        pool.worker_pids().len() == 2
    });
    let before = pool.worker_pids();
    let rendezvous = Rendezvous::new();
    let held = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let arrival = rendezvous.arrive();
    // SAFETY: kill has no memory effects; the pid is a worker the pool has not reaped, since
    // its task is still running.
    assert_eq!(unsafe { libc::kill(arrival.pid as i32, libc::SIGKILL) }, 0);
    let error = held.get().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error:?}");
    assert_eq!(error.worker_exit(), Some(WorkerExit::Signal(libc::SIGKILL)));
    let dead = error.worker_info().unwrap();
    assert_eq!(dead.pid, arrival.pid);
    assert_eq!(
        before.get(dead.index),
        Some(&dead.pid),
        "the slot it was in"
    );
    drop(arrival);
    assert_eq!(pool.map(square, 1..=10).unwrap()[9], 100);
    wait_for("the dead worker is replaced", || {
        let pids = pool.worker_pids();
        pids.len() == 2 && !pids.contains(&dead.pid)
    });
    let after = pool.worker_pids();
    assert_eq!(after[1 - dead.index], before[1 - dead.index], "{after:?}");
    finish(pool);
}

#[test]
fn one_crash_in_a_map_of_a_thousand() {
    let _serial = serial();
    let pool = pool(2);
    for options in [
        MapOptions::new(),
        MapOptions::new().chunksize(1),
        MapOptions::new().chunksize(50),
    ] {
        let mut ok = 0;
        let mut died = Vec::new();
        for (x, outcome) in
            (0..1000u64).zip(pool.imap_with(crash_one, 0..1000u64, options).unwrap())
        {
            match outcome {
                Ok(value) => {
                    assert_eq!(value, x);
                    ok += 1;
                }
                Err(error) => {
                    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{x}: {error}");
                    assert_eq!(error.worker_exit(), Some(WorkerExit::Signal(libc::SIGABRT)));
                    died.push(x);
                }
            }
        }
        assert_eq!((ok, died), (999, vec![500]), "{options:?}");
        let error = pool.map_with(crash_one, 0..1000u64, options).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::WorkerDied, "{options:?}: {error}");
        assert_eq!(error.worker_exit(), Some(WorkerExit::Signal(libc::SIGABRT)));
        assert_eq!(error.task_name(), Some("it::failures::crash_one"));
    }
    finish(pool);
}

#[test]
fn a_result_that_cannot_be_encoded_fails_alone() {
    let _serial = serial();
    let pool = pool(1);
    let before = pool.apply(pid, ()).unwrap();
    let error = pool.apply(unencodable, ()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Codec);
    assert!(
        error.to_string().contains("refuses to be encoded"),
        "{error}"
    );
    assert_eq!(pool.apply(pid, ()).unwrap(), before);
    finish(pool);
}

#[test]
fn max_tasks_per_child_one_over_fifty_tasks() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let pending: Vec<_> = (0..50)
        .map(|_| pool.apply_async(pid, ()).unwrap())
        .collect();
    let pids: Vec<u32> = pending.iter().map(|p| p.get().unwrap()).collect();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 50, "each task ran in a fresh worker");
    let squares = pool
        .map_with(square, 1..=20, MapOptions::new().chunksize(1))
        .unwrap();
    assert_eq!(squares[19], 400);
    finish(pool);
}

#[test]
fn the_initializer_runs_in_every_worker_replacements_included() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(2)
        .initializer(init_marker, (7,))
        .max_tasks_per_child(2)
        .build()
        .unwrap();
    let seen = pool
        .starmap_with(read_marker, vec![(); 20], MapOptions::new().chunksize(1))
        .unwrap();
    assert!(seen.iter().all(|&m| m == Some(7)), "{seen:?}");
    finish(pool);
}

#[test]
fn a_failing_initializer_fails_build() {
    let _serial = serial();
    let error = Pool::builder()
        .processes(2)
        .initializer(failing_init, (true,))
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), procpool::BuildErrorKind::Initializer);
    let cause = error
        .initializer_error()
        .expect("the initializer is blamed");
    assert_eq!(cause.kind(), ErrorKind::Panicked, "{cause}");
    assert_eq!(cause.panic_message(), Some("the initializer refuses"));
    assert!(
        error.to_string().contains("the initializer refuses"),
        "{error}"
    );
    assert_no_children();
    let pool = Pool::builder()
        .processes(1)
        .initializer(failing_init, (false,))
        .build()
        .unwrap();
    assert_eq!(pool.apply(square, (2,)).unwrap(), 4);
    finish(pool);
}

#[procpool::task]
fn takes_unencodable(_value: Unencodable) -> u64 {
    0
}

#[test]
fn arguments_that_do_not_encode_are_refused_at_submission() {
    let _serial = serial();
    let pool = pool(1);
    let error = pool.apply(takes_unencodable, (Unencodable,)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Codec);
    assert_eq!(error.task_name(), Some("it::failures::takes_unencodable"));
    assert!(
        error.to_string().contains("cannot encode the arguments"),
        "{error}"
    );
    let error = pool
        .map(takes_unencodable, [Unencodable, Unencodable])
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Codec);
    assert_eq!(pool.stats().submitted, 0, "nothing was submitted");
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    finish(pool);
}

/// Forks a child that keeps the worker's socket open and waits forever, writes its pid to
/// `path`, then aborts the worker.
#[procpool::task]
fn fork_then_abort(path: String) -> u64 {
    // SAFETY: the forked child calls only async-signal-safe functions (pause).
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
    std::fs::write(&path, child.to_string()).expect("write the child's pid");
    std::process::abort();
}

#[test]
fn a_worker_dies_while_a_child_it_forked_holds_its_socket() {
    let _serial = serial();
    let pool = pool(1);
    let path = std::env::temp_dir().join(format!("procpool-forked-{}", std::process::id()));
    let outcome = pool.apply(fork_then_abort, (path.to_string_lossy().into_owned(),));
    // The orphan first, so that a failing assertion below leaves no process behind.
    let orphan: i32 = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let _ = std::fs::remove_file(&path);
    // SAFETY: kill has no memory effects; the orphan waits in pause() until killed, so its
    // pid is still its own.
    assert_eq!(unsafe { libc::kill(orphan, libc::SIGKILL) }, 0);
    let error = outcome.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
    assert_eq!(error.worker_exit(), Some(WorkerExit::Signal(libc::SIGABRT)));
    assert_eq!(
        pool.apply(square, (4,)).unwrap(),
        16,
        "a replacement serves"
    );
    finish(pool);
}

#[test]
fn a_panic_carries_the_workers_backtrace_when_the_program_asks_for_one() {
    let _serial = serial();
    let run_with = |backtrace: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_panic_backtrace"));
        command.args(args);
        command
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
        if let Some(value) = backtrace {
            command.env("RUST_BACKTRACE", value);
        }
        let output = command.output().expect("the program runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let run = |backtrace: Option<&str>| run_with(backtrace, &[]);
    let with = run(Some("1"));
    assert!(with.contains("kind: Panicked\n"), "{with}");
    assert!(with.contains("has backtrace: true\n"), "{with}");
    assert!(with.contains("backtrace in the worker:"), "{with}");
    assert!(with.contains("deep_panic"), "the worker's frames: {with}");
    let without = run(None);
    assert!(without.contains("has backtrace: false\n"), "{without}");
    assert!(!without.contains("backtrace in the worker:"), "{without}");
    let turned_off = run_with(Some("1"), &["off"]);
    assert!(
        turned_off.contains("has backtrace: false\n"),
        "{turned_off}"
    );
    assert_no_children();
}

/// Sleeps `ms`; `_pad` makes its RUN frame larger than a worker's 64 KiB read buffer, so the
/// worker reads no byte past it.
#[procpool::task]
fn padded_sleep(_pad: Vec<u8>, ms: u64) -> u8 {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    0
}

/// As `padded_sleep`, then leaves the worker no room for a new descriptor.
#[procpool::task]
fn padded_then_no_descriptors(_pad: Vec<u8>, ms: u64) -> u8 {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct, which lives for the call; lowering a limit is
    // always allowed.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    0
}

#[procpool::task]
fn first_byte(bytes: procpool::SharedBytes) -> u8 {
    bytes[0]
}

/// A job whose descriptors a worker cannot take (it has no room left for one) arrives while
/// the worker watches for it: the read that took its bytes failed, and the call must end
/// with the worker's death, not wait for a frame whose bytes are gone.
#[test]
fn a_job_whose_descriptors_are_lost_while_its_worker_watches_ends_with_an_error() {
    let _serial = serial();
    let pool = pool(1);
    let pad = vec![7u8; 256 * 1024];
    let bytes = procpool::SharedBytes::copy_from_slice(&[42u8; 16]).unwrap();
    let first = pool.apply_async(padded_sleep, (pad.clone(), 30)).unwrap();
    let second = pool
        .apply_async(padded_then_no_descriptors, (pad, 30))
        .unwrap();
    let third = pool.apply_async(first_byte, (bytes,)).unwrap();
    assert_eq!(first.get().unwrap(), 0);
    assert_eq!(second.get().unwrap(), 0);
    let error = third
        .get_timeout(std::time::Duration::from_secs(60))
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
    finish(pool);
}
