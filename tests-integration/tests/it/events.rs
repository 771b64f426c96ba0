//! The pool's events: every job is queued, then started, then finished, in that order, with
//! failures included; workers' starts, readiness and exits are told; the counts agree with
//! `Stats`.

use std::collections::HashMap;

use procpool::{ErrorKind, Event, MapOptions};
use tests_integration::{Rendezvous, finish, pool, serial};

use crate::tasks::{hold, square};

#[procpool::task]
fn crash_on(x: u64, code: i32) -> u64 {
    if x == 0 {
        std::process::exit(code);
    }
    assert!(x != 1, "one");
    x
}

#[test]
fn every_job_is_queued_started_and_finished_in_order() {
    let _serial = serial();
    let pool = pool(2);
    let events = pool.subscribe();
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    assert_eq!(
        pool.apply(crash_on, (1, 0)).unwrap_err().kind(),
        ErrorKind::Panicked
    );
    assert_eq!(
        pool.apply(crash_on, (0, 7)).unwrap_err().kind(),
        ErrorKind::WorkerDied
    );
    // A chunk whose worker dies: its calls are queued again one by one.
    let chunked = MapOptions::new().chunksize(4);
    let error = pool
        .starmap_with(
            crash_on,
            (0..8u64).map(|x| (x + u64::from(x != 0) * 10, 5)),
            chunked,
        )
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied);
    // A cancelled call that never ran: queued behind a call held on each worker, once both
    // workers (one a replacement) are ready.
    crate::tasks::wait_for("both workers are ready and idle", || {
        procpool::test_hooks::idle_workers(&pool) == 2
    });
    let rendezvous = Rendezvous::new();
    let held = [
        pool.apply_async(hold, (rendezvous.path(),)).unwrap(),
        pool.apply_async(hold, (rendezvous.path(),)).unwrap(),
    ];
    let arrivals = [rendezvous.arrive(), rendezvous.arrive()];
    let queued = pool.apply_async(square, (5,)).unwrap();
    queued.cancel();
    assert_eq!(queued.get().unwrap_err().kind(), ErrorKind::Cancelled);
    for arrival in arrivals {
        arrival.release(1);
    }
    for handle in held {
        assert_eq!(handle.get().unwrap(), 1);
    }
    let stats = pool.stats();
    finish(pool);
    let mut jobs: HashMap<u64, Vec<&'static str>> = HashMap::new();
    let (mut calls_finished, mut started, mut exited) = (0, 0, 0);
    for event in events {
        match event {
            Event::Queued { job, .. } => jobs.entry(job).or_default().push("queued"),
            Event::Started { job, .. } => jobs.entry(job).or_default().push("started"),
            Event::Finished { job, calls, .. } => {
                calls_finished += calls;
                jobs.entry(job).or_default().push("finished");
            }
            Event::WorkerStarted(_) => started += 1,
            // A worker killed for a cancel (the failing map cancels its other chunk, if that
            // one still runs) exits without counting as a death.
            Event::WorkerExited {
                killed_by_pool: false,
                ..
            } => exited += 1,
            _ => {}
        }
    }
    for (job, seen) in &jobs {
        assert_eq!(seen.first(), Some(&"queued"), "job {job}: {seen:?}");
        let finished = seen.iter().filter(|e| **e == "finished").count();
        // A chunk split after its worker died ends without its own `finished`.
        assert!(finished <= 1, "job {job}: {seen:?}");
        if finished == 1 {
            assert_eq!(seen.last(), Some(&"finished"), "job {job}: {seen:?}");
        }
        assert!(
            seen[1..].iter().all(|e| *e != "queued"),
            "job {job}: {seen:?}"
        );
    }
    assert_eq!(
        calls_finished as u64, stats.submitted,
        "every call finished once"
    );
    // The first two workers started before the subscription.
    assert_eq!(started, stats.worker_starts - 2);
    assert_eq!(exited, stats.worker_deaths);
}

#[test]
fn a_pool_with_no_subscriber_makes_no_events_and_a_dropped_one_is_forgotten() {
    let _serial = serial();
    let pool = pool(1);
    let events = pool.subscribe();
    assert_eq!(pool.apply(square, (2,)).unwrap(), 4);
    assert!(events.try_next().is_some());
    drop(events);
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9, "the pool carries on");
    finish(pool);
}
