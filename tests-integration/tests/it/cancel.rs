//! Cancelling calls: a queued one is removed, a running one's worker is killed and replaced,
//! a map cancels every call not yet finished, a map's first failure cancels the others, and
//! a dropped future cancels its calls.

use procpool::{Error, ErrorKind, MapOptions, Pool};
use tests_integration::{Rendezvous, finish, meet, pool, serial};

use crate::tasks::{hold, square, wait_for};

/// The byte that makes [`hold_or_fail`] panic.
const FAIL: u8 = 1;
/// The byte that makes [`hold_or_fail`] abort its worker.
const CRASH: u8 = 2;

/// Waits at the rendezvous at `path` until the test releases it: with [`FAIL`] it panics,
/// with [`CRASH`] it aborts its worker, with any other byte it returns that byte.
#[procpool::task]
fn hold_or_fail(path: String) -> u64 {
    match meet(&path) {
        Some(FAIL) => panic!("told to fail"),
        Some(CRASH) => std::process::abort(),
        byte => u64::from(byte.unwrap_or(0)),
    }
}

#[test]
fn a_queued_call_is_removed_and_a_running_one_has_its_worker_replaced() {
    let _serial = serial();
    let pool = pool(1);
    let rendezvous = Rendezvous::new();
    let running = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let arrival = rendezvous.arrive();
    let queued = pool.apply_async(square, (3,)).unwrap();
    let behind = pool.apply_async(square, (4,)).unwrap();
    queued.cancel();
    let error = queued.get().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Cancelled, "{error}");
    // The running call: its worker is killed (it never answers the rendezvous) and replaced.
    let pid = arrival.pid;
    running.cancel();
    let error = running.get().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Cancelled, "{error}");
    drop(arrival);
    assert_eq!(behind.get().unwrap(), 16, "the call behind them ran");
    wait_for("the worker is replaced", || {
        let pids = pool.worker_pids();
        pids.len() == 1 && pids[0] != pid
    });
    let stats = pool.stats();
    assert_eq!(stats.cancelled, 2);
    assert_eq!(stats.ok, 1);
    assert_eq!(stats.worker_deaths, 0, "a cancel is not a death");
    assert_eq!(stats.in_flight, 0);
    // A result already in stays.
    let done = pool.apply_async(square, (5,)).unwrap();
    assert_eq!(done.get().unwrap(), 25);
    done.cancel();
    assert_eq!(done.get().unwrap(), 25);
    finish(pool);
}

#[test]
fn a_map_cancels_every_call_not_yet_finished() {
    let _serial = serial();
    let pool = pool(2);
    let rendezvous = Rendezvous::new();
    let paths: Vec<String> = (0..6).map(|_| rendezvous.path()).collect();
    let map = pool
        .map_async_with(hold, paths, procpool::MapOptions::new().chunksize(1))
        .unwrap();
    let arrivals = [rendezvous.arrive(), rendezvous.arrive()];
    map.cancel();
    let error = map.get().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Cancelled, "{error}");
    drop(arrivals);
    assert_eq!(pool.stats().cancelled, 6);
    assert_eq!(
        pool.map(square, 1..=3).unwrap(),
        [1, 4, 9],
        "the pool carries on"
    );
    finish(pool);
}

#[test]
fn an_imap_cancelled_yields_what_came_then_cancelled_calls_then_ends() {
    let _serial = serial();
    let pool = pool(1);
    let rendezvous = Rendezvous::new();
    let paths: Vec<String> = (0..100).map(|_| rendezvous.path()).collect();
    let mut results = pool.imap(hold, paths).unwrap();
    let first = rendezvous.arrive();
    first.release(7);
    assert_eq!(results.next().unwrap().unwrap(), 7);
    let _second = rendezvous.arrive();
    results.cancel();
    let rest: Vec<_> = results.collect();
    assert!(!rest.is_empty() && rest.len() < 99, "{} left", rest.len());
    assert!(
        rest.iter()
            .all(|r| r.as_ref().unwrap_err().kind() == ErrorKind::Cancelled)
    );
    let stats = pool.stats();
    assert_eq!(
        stats.submitted,
        1 + rest.len() as u64,
        "nothing more was submitted"
    );
    assert_eq!(stats.in_flight, 0);
    finish(pool);
}

#[test]
fn a_future_dropped_by_select_cancels_its_call() {
    let _serial = serial();
    let pool = pool(1);
    let rendezvous = Rendezvous::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let held = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let arrival = rendezvous.arrive();
    // Behind it, a call that cannot end before it is cancelled either: it waits at a
    // rendezvous nobody arrives at until the test is over.
    let stuck = Rendezvous::new();
    let quick = pool.apply_async(hold, (stuck.path(),)).unwrap();
    let pid = arrival.pid;
    let won = runtime.block_on(async {
        tokio::select! {
            biased;
            _ = held => "held",
            quick = quick => { assert!(quick.is_err(), "queued behind the held call"); "quick" }
            () = std::future::ready(()) => "ready",
        }
    });
    assert_eq!(won, "ready");
    // Both dropped futures cancelled their calls: the running one's worker is replaced. (The
    // held call is released only then: released sooner, it could end by itself first.)
    wait_for("the worker is replaced", || {
        let pids = pool.worker_pids();
        pids.len() == 1 && pids[0] != pid
    });
    wait_for("both calls are counted", || pool.stats().cancelled == 2);
    drop(arrival);
    assert_eq!(pool.apply(square, (6,)).unwrap(), 36);
    finish(pool);
}

/// A map of six calls, one a chunk, on two workers, each call held at a rendezvous that
/// only the test releases: the first to arrive is released with `byte` and fails; the
/// others are never released, so they cannot end unless the pool ends them. `run` runs
/// the map on another thread. The map must end with the failure (of `kind`) and every other
/// call cancelled, the worker that held one replaced; then the pool runs a map as usual.
fn a_failure_ends_the_map(
    byte: u8,
    kind: ErrorKind,
    run: impl FnOnce(&Pool, Vec<String>) -> Result<Vec<u64>, Error> + Send,
) {
    let _serial = serial();
    let pool = pool(2);
    // Both workers idle, so that a blocking map borrows them.
    wait_for("both workers are idle", || {
        procpool::test_hooks::idle_workers(&pool) == 2
    });
    let rendezvous = Rendezvous::new();
    let paths: Vec<String> = (0..6).map(|_| rendezvous.path()).collect();
    let (outcome, held) = std::thread::scope(|scope| {
        let map = scope.spawn(|| run(&pool, paths));
        let first = rendezvous.arrive();
        let second = rendezvous.arrive();
        assert_ne!(first.pid, second.pid, "one call on each worker");
        first.release(byte);
        // `second` stays unreleased, and its connection open, until the map has ended.
        let outcome = map.join().unwrap();
        (outcome, second)
    });
    let error = outcome.unwrap_err();
    assert_eq!(error.kind(), kind, "{error}");
    if kind == ErrorKind::Panicked {
        assert_eq!(error.panic_message(), Some("told to fail"));
    }
    let stats = pool.stats();
    assert_eq!(stats.cancelled, 5, "{stats:?}");
    assert_eq!(stats.ok, 0, "{stats:?}");
    assert_eq!(stats.in_flight, 0, "{stats:?}");
    let deaths = u64::from(kind == ErrorKind::WorkerDied);
    assert_eq!(
        stats.worker_deaths, deaths,
        "a cancel is not a death: {stats:?}"
    );
    wait_for("the worker that held a call is replaced", || {
        let pids = pool.worker_pids();
        pids.len() == 2 && !pids.contains(&held.pid)
    });
    drop(held);
    assert_eq!(
        pool.map(square, 1..=3).unwrap(),
        [1, 4, 9],
        "the pool carries on"
    );
    finish(pool);
}

fn one_a_chunk() -> MapOptions {
    MapOptions::new().chunksize(1)
}

#[test]
fn a_blocking_map_ends_at_its_first_failure_and_cancels_the_rest() {
    a_failure_ends_the_map(FAIL, ErrorKind::Panicked, |pool, paths| {
        pool.map_with(hold_or_fail, paths, one_a_chunk())
    });
}

/// The crash is settled by the supervisor while the map's thread holds the other worker.
#[test]
fn a_blocking_map_ends_at_a_worker_death_and_cancels_the_rest() {
    a_failure_ends_the_map(CRASH, ErrorKind::WorkerDied, |pool, paths| {
        pool.map_with(hold_or_fail, paths, one_a_chunk())
    });
}

#[test]
fn map_async_ends_at_its_first_failure_and_cancels_the_rest() {
    a_failure_ends_the_map(FAIL, ErrorKind::Panicked, |pool, paths| {
        pool.map_async_with(hold_or_fail, paths, one_a_chunk())?
            .get()
    });
}

#[test]
fn an_awaited_map_ends_at_its_first_failure_and_cancels_the_rest() {
    a_failure_ends_the_map(FAIL, ErrorKind::Panicked, |pool, paths| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            pool.map_async_with(hold_or_fail, paths, one_a_chunk())?
                .await
        })
    });
}

#[test]
fn starmap_async_ends_at_a_worker_death_and_cancels_the_rest() {
    a_failure_ends_the_map(CRASH, ErrorKind::WorkerDied, |pool, paths| {
        let args: Vec<(String,)> = paths.into_iter().map(|path| (path,)).collect();
        pool.starmap_async_with(hold_or_fail, args, one_a_chunk())?
            .get()
    });
}

/// A chunk cancelled while it waits behind another call on its worker ends then, though the
/// worker still runs it when its turn comes. A worker that dies running it ends nothing
/// more: the chunk is not split into single calls to run again, and its calls are counted
/// once, as cancelled.
#[test]
fn a_cancelled_chunk_that_kills_its_worker_ends_once() {
    let _serial = serial();
    let pool = pool(1);
    // The only worker idle, so that a blocking call borrows it.
    wait_for("the worker is idle", || {
        procpool::test_hooks::idle_workers(&pool) == 1
    });
    let rendezvous = Rendezvous::new();
    let pid = std::thread::scope(|scope| {
        // While a blocking call holds the worker, the next two calls queue; given back, the
        // worker takes both at once: the chunk of two waits behind the single call.
        let borrowed = scope.spawn(|| pool.apply(hold_or_fail, (rendezvous.path(),)));
        let holder = rendezvous.arrive();
        let ahead = pool
            .apply_async(hold_or_fail, (rendezvous.path(),))
            .unwrap();
        let paths = vec![rendezvous.path(), rendezvous.path()];
        let chunk = pool
            .map_async_with(hold_or_fail, paths, MapOptions::new().chunksize(2))
            .unwrap();
        holder.release(3);
        assert_eq!(borrowed.join().unwrap().unwrap(), 3);
        // The call ahead runs: the worker holds the chunk behind it.
        let running = rendezvous.arrive();
        chunk.cancel();
        let error = chunk.get().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Cancelled, "{error}");
        running.release(4);
        assert_eq!(ahead.get().unwrap(), 4);
        // The chunk runs all the same, and its first call kills the worker.
        let crashing = rendezvous.arrive();
        let pid = crashing.pid;
        crashing.release(CRASH);
        pid
    });
    wait_for("the worker is replaced", || {
        let pids = pool.worker_pids();
        pids.len() == 1 && pids[0] != pid
    });
    let stats = pool.stats();
    assert_eq!(stats.submitted, 4, "{stats:?}");
    assert_eq!(stats.ok, 2, "{stats:?}");
    assert_eq!(stats.cancelled, 2, "counted once: {stats:?}");
    assert_eq!(stats.worker_died, 0, "{stats:?}");
    assert_eq!(stats.worker_deaths, 1, "{stats:?}");
    assert_eq!(stats.in_flight, 0, "{stats:?}");
    assert_eq!(
        pool.map(square, 1..=3).unwrap(),
        [1, 4, 9],
        "the pool carries on"
    );
    finish(pool);
}

#[test]
fn a_call_cancelled_after_close_ends_cancelled() {
    let _serial = serial();
    let pool = pool(2);
    let rendezvous = Rendezvous::new();
    let running = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let arrival = rendezvous.arrive();
    pool.close();
    running.cancel();
    // The call is held until released: only the cancel can end it. The bound is generous,
    // never a pace.
    let outcome = running.get_timeout(std::time::Duration::from_secs(30));
    drop(arrival);
    let error = outcome.expect_err("a cancelled call ends");
    assert_eq!(error.kind(), ErrorKind::Cancelled, "{error}");
    finish(pool);
}
