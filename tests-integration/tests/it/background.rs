//! `Builder::wait_for_workers`: a pool that is ready before all its first workers are, and
//! starts the rest while it runs calls.

use std::time::Duration;

use procpool::{BuildErrorKind, ErrorKind, Pool};
use tests_integration::{Rendezvous, assert_no_children, finish, meet, serial};

use crate::tasks::{hold, square, wait_for};

#[procpool::task]
fn refuse(fail: bool) {
    assert!(!fail, "the initializer refuses");
}

/// How long a test waits for a task to arrive: an upper bound, never a pace.
const ARRIVAL: Duration = Duration::from_secs(30);

/// A pool of `processes` that is ready once one worker is.
fn ready_with_one(processes: usize) -> Pool {
    Pool::builder()
        .processes(processes)
        .wait_for_workers(1)
        .build()
        .unwrap()
}

#[test]
fn the_rest_of_the_workers_start_while_the_pool_runs() {
    let _serial = serial();
    let pool = ready_with_one(6);
    assert!(!pool.worker_pids().is_empty());
    assert_eq!(pool.apply(square, (7,)).unwrap(), 49);
    wait_for("all six workers have started", || {
        pool.worker_pids().len() == 6
    });
    assert_eq!(
        pool.map(square, 0..60u64).unwrap(),
        (0..60u64).map(|x| x * x).collect::<Vec<_>>()
    );
    assert_eq!(pool.stats().worker_starts, 6);
    finish(pool);
}

/// An initializer that holds every worker but the first at `path` until released.
#[procpool::task]
fn gate(path: String) {
    if procpool::current_worker().is_some_and(|w| w.index != 0) {
        meet(&path);
    }
}

#[test]
fn a_call_waits_for_a_starting_worker_rather_than_behind_another_call() {
    let _serial = serial();
    let gates = Rendezvous::new();
    let pool = Pool::builder()
        .processes(2)
        .wait_for_workers(1)
        .initializer(gate, (gates.path(),))
        .build()
        .unwrap();
    // Worker 0 is ready; worker 1 is held in its initializer.
    let calls = Rendezvous::new();
    let first = pool.apply_async(hold, (calls.path(),)).unwrap();
    let second = pool.apply_async(hold, (calls.path(),)).unwrap();
    let running = calls.arrive_within(ARRIVAL).expect("the first call runs");
    // The second call must not be queued on worker 0 behind the first, which waits to be
    // released: once worker 1 is ready, it runs there.
    let gate = gates
        .arrive_within(ARRIVAL)
        .expect("worker 1 is in its initializer");
    drop(gate);
    let also_running = calls
        .arrive_within(ARRIVAL)
        .expect("the second call runs on worker 1 while the first still runs");
    assert_ne!(running.pid, also_running.pid);
    drop((running, also_running));
    assert_eq!(first.get().unwrap(), 0, "released by the hang-up");
    assert_eq!(second.get().unwrap(), 0, "released by the hang-up");
    finish(pool);
}

#[test]
fn calls_queued_at_close_still_get_the_workers_not_started_yet() {
    let _serial = serial();
    let pool = ready_with_one(16);
    // Sixteen calls that each wait to be released, and a close at once, as Python's
    // tutorial does: the workers not started yet are still started for them.
    let rendezvous = Rendezvous::new();
    let held: Vec<_> = (0..16)
        .map(|_| pool.apply_async(hold, (rendezvous.path(),)).unwrap())
        .collect();
    pool.close();
    let arrivals: Vec<_> = (0..16)
        .map(|n| {
            rendezvous
                .arrive_within(ARRIVAL)
                .unwrap_or_else(|| panic!("call {n} of 16 never started"))
        })
        .collect();
    drop(arrivals);
    for call in held {
        assert_eq!(call.get().unwrap(), 0, "released by the hang-up");
    }
    pool.join().unwrap();
    assert_eq!(pool.stats().worker_starts, 16);
    drop(pool);
    assert_no_children();
}

#[test]
fn a_pool_closed_before_its_workers_started_leaves_nothing() {
    let _serial = serial();
    let pool = ready_with_one(32);
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    pool.close();
    pool.join().unwrap();
    assert!(pool.stats().worker_starts <= 32);
    drop(pool);
    assert_no_children();
}

#[test]
fn an_initializer_that_fails_in_the_first_worker_still_fails_build() {
    let _serial = serial();
    let error = Pool::builder()
        .processes(4)
        .wait_for_workers(1)
        .initializer(refuse, (true,))
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), BuildErrorKind::Initializer, "{error}");
    assert_no_children();
    // One that passes: every worker runs it, the late ones too.
    let pool = Pool::builder()
        .processes(4)
        .wait_for_workers(2)
        .initializer(refuse, (false,))
        .build()
        .unwrap();
    assert_eq!(
        pool.map(square, 0..8u64).unwrap(),
        (0..8u64).map(|x| x * x).collect::<Vec<_>>()
    );
    finish(pool);
}

#[test]
fn waiting_for_no_worker_or_more_than_the_pool_has_is_refused() {
    let _serial = serial();
    for n in [0, 5] {
        let error = Pool::builder()
            .processes(4)
            .wait_for_workers(n)
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), BuildErrorKind::InvalidInput, "{error}");
        assert!(error.to_string().contains("wait_for_workers"), "{error}");
    }
    assert_no_children();
    // A pool built with the default waits for every worker.
    let pool = Pool::builder().processes(3).build().unwrap();
    assert_eq!(pool.worker_pids().len(), 3);
    finish(pool);
}

/// How long a test waits for a late worker that must not have started yet: long enough for
/// one to arrive if it had been started, far from any bound a passing run depends on.
const NOT_YET: Duration = Duration::from_secs(3);

/// Worker 0 waits at `first` before it is ready; every later worker waits at `late` and then
/// refuses.
#[procpool::task]
fn first_slow_late_refuses(first: String, late: String) {
    let index = procpool::current_worker().map(|w| w.index).unwrap();
    if index == 0 {
        meet(&first);
    } else {
        meet(&late);
        panic!("late worker {index} refuses");
    }
}

#[test]
fn an_initializer_failing_in_a_late_worker_breaks_the_pool_not_build() {
    let _serial = serial();
    let first = Rendezvous::new();
    let late = Rendezvous::new();
    let (first_path, late_path) = (first.path(), late.path());
    let build = std::thread::spawn(move || {
        Pool::builder()
            .processes(2)
            .wait_for_workers(1)
            .initializer(first_slow_late_refuses, (first_path, late_path))
            .build()
    });
    // Worker 0, the one build waits for, is held in its initializer; worker 1 must not start
    // before build returns.
    let worker0 = first.arrive();
    assert!(
        late.arrive_within(NOT_YET).is_none(),
        "worker 1 started while build waited"
    );
    drop(worker0);
    let pool = build.join().unwrap().expect("build returns");
    drop(
        late.arrive_within(ARRIVAL)
            .expect("worker 1 starts after build"),
    );
    // As documented: the pool stops taking work and says why.
    wait_for("the pool is broken", || {
        pool.apply(square, (3,))
            .is_err_and(|e| e.kind() == ErrorKind::PoolBroken)
    });
    finish(pool);
}

/// Every worker waits at `path` in its initializer.
#[procpool::task]
fn hold_all(path: String) {
    meet(&path);
}

#[test]
fn the_workers_not_waited_for_start_only_once_build_has_returned() {
    let _serial = serial();
    let gate = Rendezvous::new();
    let path = gate.path();
    let build = std::thread::spawn(move || {
        Pool::builder()
            .processes(8)
            .wait_for_workers(1)
            .initializer(hold_all, (path,))
            .build()
    });
    let first = gate.arrive();
    // No worker is ready, so build has not returned: the 7 others are not started yet.
    let early = gate.arrive_within(NOT_YET).map(|a| a.pid);
    assert!(!build.is_finished());
    assert!(
        early.is_none(),
        "worker {early:?} started before build returned"
    );
    drop(first);
    let pool = build.join().unwrap().unwrap();
    // The others start now, each held at the gate until released.
    for _ in 1..8 {
        drop(gate.arrive_within(ARRIVAL).expect("a late worker starts"));
    }
    wait_for("all eight workers are up", || pool.worker_pids().len() == 8);
    finish(pool);
}
