//! close, join, terminate and drop: nothing hangs, nothing is left behind.

use procpool::{ErrorKind, Pool};
use tests_integration::{Rendezvous, assert_no_children, recycling_pool, serial, workers_of};

use crate::tasks::{hold, square};

#[test]
fn close_lets_queued_work_finish_then_join_reaps() {
    let _serial = serial();
    let pool = Pool::builder().processes(2).build().unwrap();
    let pending: Vec<_> = (0..200)
        .map(|x| pool.apply_async(square, (x,)).unwrap())
        .collect();
    let mapped = pool.map_async(square, 0..1000).unwrap();
    pool.close();
    let error = pool.apply(square, (1,)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed);
    assert_eq!(
        error.to_string(),
        "the pool is closed: it accepts no new tasks"
    );
    pool.join().unwrap();
    assert_no_children();
    for (x, p) in (0..200u64).zip(&pending) {
        assert_eq!(p.get().unwrap(), x * x);
    }
    assert_eq!(mapped.get().unwrap()[999], 999 * 999);
    assert!(pool.worker_pids().is_empty());
    pool.join().expect("a second join returns at once");
}

#[test]
fn after_close_idle_workers_exit_while_a_busy_one_finishes() {
    let _serial = serial();
    let pool = Pool::builder().processes(3).build().unwrap();
    let rendezvous = Rendezvous::new();
    let held = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let busy = rendezvous.arrive();
    pool.close();
    // The two idle workers have nothing left to run: they go now, as in Python's pool,
    // not when the busy one is done.
    crate::tasks::wait_for("only the busy worker is left", || {
        workers_of(std::process::id()) == [busy.pid]
    });
    drop(busy);
    assert_eq!(held.get().unwrap(), 0, "released by the hang-up");
    pool.join().unwrap();
    assert_no_children();
}

#[test]
fn join_on_a_running_pool_is_an_error() {
    let _serial = serial();
    let pool = Pool::builder().processes(1).build().unwrap();
    let error = pool.join().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StillRunning);
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    pool.close();
    pool.join().unwrap();
    assert_no_children();
}

#[test]
fn terminate_ends_every_unfinished_result() {
    let _serial = serial();
    let pool = Pool::builder().processes(2).build().unwrap();
    let rendezvous = Rendezvous::new();
    let running: Vec<_> = (0..2)
        .map(|_| pool.apply_async(hold, (rendezvous.path(),)).unwrap())
        .collect();
    let arrivals = [rendezvous.arrive(), rendezvous.arrive()];
    let queued: Vec<_> = (0..100)
        .map(|x| pool.apply_async(square, (x,)).unwrap())
        .collect();
    let mapped = pool.map_async(square, 0..10_000).unwrap();
    pool.terminate();
    assert_no_children();
    for result in &running {
        assert_eq!(result.get().unwrap_err().kind(), ErrorKind::Terminated);
    }
    for result in &queued {
        assert_eq!(result.get().unwrap_err().kind(), ErrorKind::Terminated);
    }
    assert_eq!(mapped.get().unwrap_err().kind(), ErrorKind::Terminated);
    assert_eq!(
        pool.apply(square, (1,)).unwrap_err().kind(),
        ErrorKind::Closed
    );
    pool.join().expect("join after terminate");
    drop(arrivals);
}

#[test]
fn drop_terminates_and_reaps() {
    let _serial = serial();
    let rendezvous = Rendezvous::new();
    let pool = Pool::builder().processes(2).build().unwrap();
    let held = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let arrival = rendezvous.arrive();
    let mut stream = pool.imap(square, 0..).unwrap();
    assert_eq!(stream.next().unwrap().unwrap(), 0);
    drop(pool);
    assert_no_children();
    assert_eq!(held.get().unwrap_err().kind(), ErrorKind::Terminated);
    // An imap that outlives its pool ends instead of hanging.
    let rest: Vec<_> = stream.by_ref().take(100).collect();
    assert!(rest.len() < 100, "the stream ends");
    // Calls that finished before the drop keep their results; the others were terminated,
    // and the first call the stream could not submit any more ends it.
    for result in &rest {
        if let Err(error) = result {
            assert!(
                matches!(error.kind(), ErrorKind::Terminated | ErrorKind::Closed),
                "{error}"
            );
        }
    }
    assert_eq!(
        rest.last().unwrap().as_ref().unwrap_err().kind(),
        ErrorKind::Closed
    );
    drop(arrival);
}

#[test]
fn workers_exit_when_their_socket_closes_after_close() {
    let _serial = serial();
    for _ in 0..20 {
        let pool = Pool::builder().processes(2).build().unwrap();
        assert_eq!(pool.apply(square, (2,)).unwrap(), 4);
        pool.close();
        pool.join().unwrap();
        assert_no_children();
    }
}

/// Whether the process `pid` has exited: gone from `/proc`, or a zombie waiting to be reaped
/// by whoever inherited it.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

#[test]
fn workers_exit_within_a_second_of_a_kill_9_of_their_parent() {
    let _serial = serial();
    let rendezvous = Rendezvous::new();
    let mut parent = std::process::Command::new(env!("CARGO_BIN_EXE_orphan_parent"))
        .arg(rendezvous.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(parent.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let workers: Vec<u32> = line
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect();
    assert_eq!(workers.len(), 3, "{line:?}");
    // Every worker is busy in a task (and not reading its socket) when the parent dies.
    // (The arrivals stay open, so the tasks keep waiting.)
    let arrivals: Vec<_> = (0..3).map(|_| rendezvous.arrive()).collect();
    let mut busy: Vec<u32> = arrivals.iter().map(|a| a.pid).collect();
    busy.sort_unstable();
    let mut sorted = workers.clone();
    sorted.sort_unstable();
    assert_eq!(busy, sorted);
    parent.kill().unwrap(); // SIGKILL
    parent.wait().unwrap();
    let killed = std::time::Instant::now();
    // Observing exits takes polling; nothing here waits for the workers to do anything.
    while !workers.iter().all(|&pid| exited(pid)) {
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(1),
            "workers still running a second after their parent was killed: {:?}",
            workers
                .iter()
                .filter(|&&pid| !exited(pid))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(arrivals);
    assert_no_children();
}

#[test]
fn join_does_not_wait_forever_for_a_stopped_worker() {
    let _serial = serial();
    let pool = Pool::builder().processes(2).build().unwrap();
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    let stopped = pool.worker_pids()[0];
    // SAFETY: kill has no memory effects; the worker is alive and unreaped (the pool runs).
    assert_eq!(unsafe { libc::kill(stopped as i32, libc::SIGSTOP) }, 0);
    // The stopped worker never reads its SHUTDOWN: after a grace period (5 s) it is killed.
    // 30 s is a generous bound that a much longer grace would break.
    let started = std::time::Instant::now();
    pool.close();
    pool.join().unwrap();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(30),
        "join took {took:?}"
    );
    assert_no_children();
}

#[test]
fn join_with_a_timeout_says_whether_the_pool_is_done() {
    let _serial = serial();
    let pool = Pool::builder().processes(1).build().unwrap();
    let error = pool
        .join_timeout(std::time::Duration::from_millis(1))
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StillRunning);
    let rendezvous = Rendezvous::new();
    let held = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let arrival = rendezvous.arrive();
    pool.close();
    // The call holds its worker: the pool cannot be done.
    assert!(
        !pool
            .join_timeout(std::time::Duration::from_millis(50))
            .unwrap()
    );
    arrival.release(3);
    assert!(
        pool.join_timeout(std::time::Duration::from_secs(60))
            .unwrap()
    );
    assert_eq!(held.get().unwrap(), 3);
    assert!(
        pool.join_timeout(std::time::Duration::ZERO).unwrap(),
        "joined stays joined"
    );
    assert_no_children();
}

/// Where the worker's exit handler writes its marker.
static EXIT_MARKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

extern "C" fn write_exit_marker() {
    // A slow, clean exit: the pool must let it finish rather than kill it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    if let Some(path) = EXIT_MARKER.get() {
        let _ = std::fs::write(path, std::process::id().to_string());
    }
}

/// Makes this worker write its pid to `path` as it exits, 300 ms into its exit.
#[procpool::task]
fn mark_my_exit(path: String) -> u32 {
    let _ = EXIT_MARKER.set(path);
    // SAFETY: atexit registers a function that takes no arguments and returns nothing.
    assert_eq!(unsafe { libc::atexit(write_exit_marker) }, 0);
    std::process::id()
}

#[test]
fn workers_told_to_exit_are_given_time_to_exit_cleanly() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("procpool-exit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One worker recycled after its one job, one exiting at close.
    let pool = Pool::builder()
        .processes(1)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let recycled = dir.join("recycled").display().to_string();
    let closed = dir.join("closed").display().to_string();
    let first = pool.apply(mark_my_exit, (recycled.clone(),)).unwrap();
    let second = pool.apply(mark_my_exit, (closed.clone(),)).unwrap();
    assert_ne!(first, second, "the first worker was recycled");
    pool.close();
    pool.join().unwrap();
    assert_eq!(
        std::fs::read_to_string(&recycled).unwrap(),
        first.to_string()
    );
    assert_eq!(
        std::fs::read_to_string(&closed).unwrap(),
        second.to_string()
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_no_children();
}

/// After `close`, a worker recycled after its job is replaced only while calls are still
/// queued: a pool that recycles after every job starts one worker for each call, and none
/// that would only be told to stop. Under both start methods.
#[test]
fn after_close_a_recycled_worker_is_replaced_only_for_queued_calls() {
    let _serial = serial();
    let pool = recycling_pool(1, 1);
    let calls: Vec<_> = (0..5u64)
        .map(|x| pool.apply_async(square, (x,)).unwrap())
        .collect();
    pool.close();
    for (x, call) in (0u64..).zip(calls) {
        assert_eq!(call.get().unwrap(), x * x);
    }
    pool.join().unwrap();
    let stats = pool.stats();
    assert_eq!((stats.worker_starts, stats.worker_deaths), (5, 0));
    assert_no_children();
}

/// Meets the test at `path` if `x` is 0; returns `x`.
#[procpool::task]
fn hold_if_first(path: String, x: u64) -> u64 {
    if x == 0 {
        tests_integration::meet(&path);
    }
    x
}

/// A blocking map whose worker recycles after one job, on a pool closed while the map runs:
/// the borrowed worker goes back spent and the rest of the map goes through the queue. The
/// supervisor may take the worker back before those calls are queued, and then leaves its
/// slot empty, the pool being closed with nothing queued; it fills the slot once they are.
/// The map ends either way.
#[test]
fn a_closed_pool_starts_a_worker_again_for_calls_a_blocking_map_hands_back() {
    let _serial = serial();
    for _ in 0..5 {
        let pool = recycling_pool(1, 1);
        let rendezvous = Rendezvous::new();
        let path = rendezvous.path();
        std::thread::scope(|scope| {
            let pool = &pool;
            let map = scope.spawn(move || {
                let calls = (0..4u64).map(|x| (path.clone(), x));
                pool.starmap_with(
                    hold_if_first,
                    calls,
                    procpool::MapOptions::new().chunksize(1),
                )
            });
            let arrival = rendezvous.arrive();
            pool.close();
            arrival.release(1);
            assert_eq!(map.join().unwrap().unwrap(), [0, 1, 2, 3]);
        });
        pool.join().unwrap();
        assert_eq!(pool.stats().worker_deaths, 0);
        assert_no_children();
    }
}

/// Meets the test at `path`; then, the first time it runs (no file at `path.died` yet),
/// exits its worker.
#[procpool::task]
fn meet_then_die_once(path: String) -> u64 {
    tests_integration::meet(&path);
    if std::fs::File::create_new(format!("{path}.died")).is_ok() {
        std::process::exit(3);
    }
    7
}

/// A closed pool whose idle worker has exited, and whose busy worker then dies with a call
/// to run again, starts one worker for that call: in the dead worker's slot, not also in
/// the one the idle worker left.
#[test]
fn a_retry_after_close_starts_one_worker() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(2)
        .retries(1)
        // A job with a timeout waits for its worker's READY (no first job with the SETUP),
        // under the forkserver as under spawn: the retry stays queued while its worker starts.
        .task_timeout(std::time::Duration::from_secs(600))
        .build()
        .unwrap();
    let rendezvous = Rendezvous::new();
    let call = pool
        .apply_async(meet_then_die_once, (rendezvous.path(),))
        .unwrap();
    let busy = rendezvous.arrive();
    pool.close();
    crate::tasks::wait_for("the idle worker to exit", || {
        workers_of(std::process::id()) == [busy.pid]
    });
    busy.release(1);
    rendezvous.arrive().release(1);
    assert_eq!(call.get().unwrap(), 7);
    pool.join().unwrap();
    let _ = std::fs::remove_file(format!("{}.died", rendezvous.path()));
    let stats = pool.stats();
    assert_eq!((stats.worker_starts, stats.worker_deaths), (3, 1));
    assert_no_children();
}
