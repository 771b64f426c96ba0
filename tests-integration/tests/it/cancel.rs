//! Cancelling calls: a queued one is removed, a running one's worker is killed and replaced,
//! a map cancels every call not yet finished, and a dropped future cancels its calls.

use procpool::ErrorKind;
use tests_integration::{Rendezvous, finish, pool, serial};

use crate::tasks::{hold, square, wait_for};

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
