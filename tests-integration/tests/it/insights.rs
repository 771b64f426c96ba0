//! `Pool::insights`: per worker slot, calls run, time busy and idle, start-up time and peak
//! memory, summed over the workers that ran in the slot, replaced ones included.

use std::time::Duration;

use procpool::{ErrorKind, Pool};
use tests_integration::{Rendezvous, assert_no_children, finish, meet, pool, serial};

use crate::tasks::square;

/// Sleeps for `ms` milliseconds: its work is to take that long.
#[procpool::task]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Holds `mib` MiB, every page written, until the test releases it at `path`.
#[procpool::task]
fn hoard(mib: usize, path: String) -> usize {
    let held = vec![1u8; mib << 20];
    meet(&path);
    std::hint::black_box(&held).len()
}

/// Writes `mib` MiB, then frees them.
#[procpool::task]
fn touch(mib: usize) -> usize {
    let touched = vec![1u8; mib << 20];
    std::hint::black_box(&touched).iter().step_by(4096).count()
}

#[procpool::task]
fn abort_here() -> u32 {
    std::process::abort()
}

#[test]
fn calls_run_add_up_to_the_calls_made_on_every_path() {
    let _serial = serial();
    let pool = pool(2);
    // A map and single calls on borrowed workers, then calls through the supervisor.
    assert_eq!(pool.map(square, 0..200).unwrap().len(), 200);
    for x in 0..10 {
        assert_eq!(pool.apply(square, (x,)).unwrap(), x * x);
    }
    let handles: Vec<_> = (0..10)
        .map(|x| pool.apply_async(square, (x,)).unwrap())
        .collect();
    for handle in handles {
        handle.get().unwrap();
    }
    let insights = pool.insights();
    assert_eq!(insights.calls(), 220, "{insights}");
    assert_eq!(insights.workers.len(), 2);
    let pids = pool.worker_pids();
    for (slot, worker) in insights.workers.iter().enumerate() {
        assert_eq!(worker.slot, slot);
        assert_eq!(worker.workers, 1, "{insights}");
        assert!(worker.startup > Duration::ZERO, "{insights}");
        assert!(
            worker.pid.is_some_and(|pid| pids.contains(&pid)),
            "{insights}"
        );
        assert!(
            worker.peak_memory.is_some_and(|bytes| bytes > 0),
            "{insights}"
        );
        assert!((0.0..=1.0).contains(&worker.utilization()), "{insights}");
    }
    let table = insights.to_string();
    assert_eq!(table.lines().count(), 2 + 3, "{table}");
    assert!(
        table.lines().nth(3).unwrap().starts_with("total"),
        "{table}"
    );
    // Once the pool has shut down, the figures stay as they were.
    pool.close();
    pool.join().unwrap();
    let after = pool.insights();
    assert_eq!(after.calls(), 220);
    assert!(after.workers.iter().all(|w| w.pid.is_none()), "{after}");
    assert_eq!(pool.insights(), after);
    drop(pool);
    assert_no_children();
}

#[test]
fn busy_time_covers_the_calls_that_sleep() {
    let _serial = serial();
    let pool = pool(2);
    // One on a borrowed worker, two through the supervisor side by side.
    assert_eq!(pool.apply(nap, (150,)).unwrap(), 150);
    let naps: Vec<_> = (0..2)
        .map(|_| pool.apply_async(nap, (150,)).unwrap())
        .collect();
    for nap in naps {
        nap.get().unwrap();
    }
    let insights = pool.insights();
    assert_eq!(insights.calls(), 3, "{insights}");
    assert!(insights.busy() >= Duration::from_millis(450), "{insights}");
    for worker in &insights.workers {
        assert!(worker.busy >= Duration::from_millis(150), "{insights}");
    }
    finish(pool);
}

#[test]
fn a_recycled_workers_peak_memory_stays_in_its_slot() {
    let _serial = serial();
    let pool = procpool::Pool::builder()
        .processes(1)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    // The worker that wrote 64 MiB is recycled after its call, and says its peak as it goes.
    assert_eq!(pool.apply(touch, (64,)).unwrap(), 64 * 256);
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    pool.close();
    pool.join().unwrap();
    let insights = pool.insights();
    let slot = &insights.workers[0];
    assert!(slot.workers >= 2, "{insights}");
    assert!(
        slot.peak_memory.is_some_and(|bytes| bytes >= 60 << 20),
        "{insights}"
    );
    drop(pool);
    assert_no_children();
}

#[test]
fn peak_memory_grows_after_a_call_that_writes_64_mib() {
    let _serial = serial();
    let pool = pool(1);
    assert_eq!(pool.apply(square, (2,)).unwrap(), 4);
    let before = pool.insights().peak_memory().expect("read from the worker");
    assert_eq!(pool.apply(touch, (64,)).unwrap(), 64 * 256);
    // The memory is freed: the high-water mark stays.
    let after = pool.insights().peak_memory().expect("read from the worker");
    assert!(
        after >= before + (60 << 20),
        "peak {after} bytes after, {before} before"
    );
    finish(pool);
}

#[test]
fn a_replaced_worker_still_counts() {
    let _serial = serial();
    let pool = pool(1);
    let first = pool.worker_pids()[0];
    assert_eq!(pool.map(square, 0..10).unwrap().len(), 10);
    let error = pool.apply(abort_here, ()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    let insights = pool.insights();
    let slot = &insights.workers[0];
    // The call that killed its worker did not run to its end: it is not counted.
    assert_eq!(slot.calls, 11, "{insights}");
    assert_eq!(slot.workers, 2, "{insights}");
    assert!(slot.pid.is_some_and(|pid| pid != first), "{insights}");
    assert!(slot.startup > Duration::ZERO, "{insights}");
    finish(pool);
}

#[test]
fn a_worker_killed_for_a_cancel_leaves_its_peak_and_its_busy_time() {
    let _serial = serial();
    let pool = pool(1);
    let rendezvous = Rendezvous::new();
    let held = pool.apply_async(hoard, (64, rendezvous.path())).unwrap();
    let arrival = rendezvous.arrive();
    // A call still running counts as busy up to now.
    let running = pool.insights();
    assert_eq!(running.calls(), 0, "{running}");
    assert!(running.busy() > Duration::ZERO, "{running}");
    held.cancel();
    assert_eq!(held.get().unwrap_err().kind(), ErrorKind::Cancelled);
    drop(arrival);
    // A call after the cancel runs on the replacement.
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    let insights = pool.insights();
    let slot = &insights.workers[0];
    assert!(
        slot.peak_memory.is_some_and(|bytes| bytes >= 64 << 20),
        "{insights}"
    );
    assert!(slot.busy >= running.busy(), "{insights}");
    assert_eq!(slot.workers, 2, "{insights}");
    assert_eq!(slot.calls, 1, "{insights}");
    finish(pool);
}

#[test]
fn recycled_workers_still_count() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(1)
        .max_tasks_per_child(2)
        .build()
        .unwrap();
    for x in 0..5 {
        assert_eq!(pool.apply(square, (x,)).unwrap(), x * x);
    }
    let insights = pool.insights();
    assert_eq!(insights.calls(), 5, "{insights}");
    assert!(insights.worker_starts() >= 3, "{insights}");
    finish(pool);
}
