//! Bounded, opt-in retries of tasks whose worker died, and a pool that stops starting
//! workers that keep dying at start-up, saying why.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use procpool::{Error, ErrorKind, MapOptions, Pool, WorkerExit};
use tests_integration::{assert_no_children, finish, serial};

use crate::tasks::square;

const BOUND: Duration = Duration::from_secs(60);

/// A file path unique to this test process and `name`, removed first.
fn scratch(name: &str) -> String {
    let path: PathBuf =
        std::env::temp_dir().join(format!("procpool-retries-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.to_string_lossy().into_owned()
}

/// Counts one more run in the file at `path` and returns the count.
fn count_run(path: &str) -> u64 {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(b"x").unwrap();
    file.metadata().unwrap().len()
}

fn runs(path: &str) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Aborts its worker on its first `n` runs, then returns how many runs it took.
#[procpool::task]
fn abort_first(path: String, n: u64) -> u64 {
    let run = count_run(&path);
    if run <= n {
        std::process::abort();
    }
    run
}

#[procpool::task]
fn panic_counted(path: String) -> u64 {
    count_run(&path);
    panic!("no retry for a panic");
}

#[procpool::task]
fn stall_counted(path: String) -> u64 {
    count_run(&path);
    loop {
        std::thread::park();
    }
}

#[test]
fn a_task_whose_worker_died_runs_again() {
    let _serial = serial();
    let pool = Pool::builder().processes(2).retries(2).build().unwrap();
    let path = scratch("apply");
    let pending = pool.apply_async(abort_first, (path.clone(), 2)).unwrap();
    assert_eq!(pending.get_timeout(BOUND).unwrap(), 3);
    for options in [MapOptions::new(), MapOptions::new().chunksize(3)] {
        let paths: Vec<(String, u64)> = (0..6).map(|i| (scratch(&format!("map-{i}")), 1)).collect();
        let results = pool
            .starmap_async_with(abort_first, paths.clone(), options)
            .unwrap()
            .get_timeout(BOUND)
            .unwrap();
        assert_eq!(results, vec![2; 6], "{options:?}");
        for (path, _) in &paths {
            let _ = std::fs::remove_file(path);
        }
    }
    let _ = std::fs::remove_file(&path);
    finish(pool);
}

#[test]
fn a_task_that_keeps_killing_workers_is_given_up() {
    let _serial = serial();
    let pool = Pool::builder().processes(1).retries(1).build().unwrap();
    let path = scratch("give-up");
    let error = pool
        .apply_async(abort_first, (path.clone(), 5))
        .unwrap()
        .get_timeout(BOUND)
        .unwrap_err();
    assert!(error.is_worker_died(), "{error}");
    assert_eq!(error.worker_exit(), Some(WorkerExit::Signal(libc::SIGABRT)));
    assert_eq!(error.retried(), 1);
    assert!(error.to_string().ends_with(", after 1 retry"), "{error}");
    assert_eq!(runs(&path), 2, "one run and one retry");
    assert_eq!(pool.apply(square, (5,)).unwrap(), 25);
    let _ = std::fs::remove_file(&path);
    finish(pool);
}

#[test]
fn panics_and_timeouts_are_not_retried() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(1)
        .retries(3)
        .task_timeout(Duration::from_millis(200))
        // A backtrace would count against the tight timeout of a task that panics.
        .backtraces(false)
        .build()
        .unwrap();
    let path = scratch("panic");
    let error = pool.apply(panic_counted, (path.clone(),)).unwrap_err();
    assert!(error.is_panic(), "{error}");
    assert_eq!(runs(&path), 1);
    let stalled = scratch("stall");
    let error = pool
        .apply_async(stall_counted, (stalled.clone(),))
        .unwrap()
        .get_timeout(BOUND)
        .unwrap_err();
    assert!(error.is_timed_out(), "{error}");
    assert_eq!(runs(&stalled), 1);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&stalled);
    finish(pool);
}

/// How an initializer fails in replacement workers.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum InitFault {
    Exit,
    Panic,
}

/// Succeeds in the first worker (which creates the file at `path`) and fails in every
/// worker after it.
#[procpool::task]
fn init_once(path: String, fault: InitFault) {
    if std::fs::File::create_new(&path).is_ok() {
        return;
    }
    match fault {
        InitFault::Exit => std::process::exit(3),
        InitFault::Panic => panic!("replacements may not start"),
    }
}

#[procpool::task]
fn abort() -> u64 {
    std::process::abort()
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    ApplyAsync,
    Map,
    Imap,
}

/// The first worker starts; once it dies, its replacements fail in their initializer and
/// the pool says it is broken, whichever way work is submitted.
fn initializer_fails_in_replacements(fault: InitFault, mode: Mode) {
    let _serial = serial();
    let marker = scratch(&format!("init-{fault:?}-{mode:?}"));
    let pool = Pool::builder()
        .processes(1)
        .initializer(init_once, (marker.clone(), fault))
        .build()
        .unwrap();
    let error = pool.apply(abort, ()).unwrap_err();
    assert!(error.is_worker_died(), "{error}");
    let outcome: Result<u64, Error> = match mode {
        Mode::ApplyAsync => pool
            .apply_async(square, (3,))
            .and_then(|p| p.get_timeout(BOUND)),
        Mode::Map => pool
            .map_async(square, 0..10)
            .and_then(|m| m.get_timeout(BOUND))
            .map(|v| v[3]),
        Mode::Imap => pool
            .imap(square, 0..10)
            .and_then(|mut results| results.next().expect("one result")),
    };
    let error = outcome.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PoolBroken, "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with("the pool cannot start workers any more"),
        "{message}"
    );
    match fault {
        InitFault::Exit => assert!(
            message.contains("3 in a row died before they were ready")
                && message.contains("exited with code 3"),
            "{message}"
        ),
        InitFault::Panic => assert!(
            message.contains("the initializer failed")
                && message.contains("replacements may not start"),
            "{message}"
        ),
    }
    // Later submissions say the same at once.
    let again = pool.apply(square, (2,)).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::PoolBroken);
    let error = pool.imap(square, 0..1).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PoolBroken);
    let _ = std::fs::remove_file(&marker);
    finish(pool);
}

macro_rules! initializer_cases {
    ($($name:ident: $fault:expr, $mode:expr;)*) => {$(
        #[test]
        fn $name() {
            initializer_fails_in_replacements($fault, $mode);
        }
    )*};
}

initializer_cases! {
    initializer_exits_in_replacements_apply_async: InitFault::Exit, Mode::ApplyAsync;
    initializer_exits_in_replacements_map: InitFault::Exit, Mode::Map;
    initializer_exits_in_replacements_imap: InitFault::Exit, Mode::Imap;
    initializer_panics_in_replacements_apply_async: InitFault::Panic, Mode::ApplyAsync;
    initializer_panics_in_replacements_map: InitFault::Panic, Mode::Map;
    initializer_panics_in_replacements_imap: InitFault::Panic, Mode::Imap;
}

#[procpool::task]
fn exit_in_init(code: i32) {
    std::process::exit(code);
}

#[test]
fn an_initializer_that_exits_fails_build() {
    let _serial = serial();
    let error = Pool::builder()
        .processes(2)
        .initializer(exit_in_init, (4,))
        .build()
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("worker handshake failed: worker ")
            && message.contains("exited with code 4 before it was ready"),
        "{message}"
    );
    assert_eq!(error.kind(), procpool::BuildErrorKind::WorkerDied);
    assert_eq!(error.worker_exit(), Some(procpool::WorkerExit::Code(4)));
    assert!(
        error
            .worker_info()
            .is_some_and(|w| w.pid != std::process::id())
    );
    assert_no_children();
}
