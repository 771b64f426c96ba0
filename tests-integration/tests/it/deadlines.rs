//! Deadlines that kill: a task that runs past its timeout has its worker killed and replaced,
//! it ends as timed out, and nothing else is disturbed.

use std::time::{Duration, Instant};

use procpool::{ApplyOptions, ErrorKind, MapOptions, Pool};
use tests_integration::{Rendezvous, assert_no_children, finish, meet, serial};

use crate::tasks::{pid, square};

/// Never returns: parks for ever.
fn stall() -> ! {
    loop {
        std::thread::park();
    }
}

#[procpool::task]
fn stall_at(x: u64, at: u64) -> u64 {
    if x == at {
        stall();
    }
    x
}

/// Arrives at the rendezvous, then stalls: the test knows the task has started.
#[procpool::task]
fn arrive_and_stall(path: String) -> u64 {
    let _ = meet(&path);
    stall()
}

/// Ignores SIGTERM, then stalls: only SIGKILL ends it.
#[procpool::task]
fn deaf_stall(path: String) -> u64 {
    // SAFETY: setting a disposition to "ignore" installs no handler code.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    let _ = meet(&path);
    stall()
}

const BOUND: Duration = Duration::from_secs(30);

#[test]
fn a_task_past_its_timeout_is_killed_and_the_job_behind_it_runs() {
    let _serial = serial();
    let pool = Pool::builder().processes(1).build().unwrap();
    let before = pool.apply(pid, ()).unwrap();
    let rendezvous = Rendezvous::new();
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let stalled = pool
        .apply_async_with(
            arrive_and_stall,
            (rendezvous.path(),),
            ApplyOptions::new().timeout(timeout),
        )
        .unwrap();
    // Queued behind the stalled task on the only worker.
    let behind = pool.apply_async(square, (12,)).unwrap();
    let arrival = rendezvous.arrive();
    assert_eq!(arrival.pid, before);
    let error = stalled.get_timeout(BOUND).unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error:?}");
    assert!(error.is_timed_out());
    assert_eq!(error.timeout(), Some(timeout));
    assert_eq!(
        error.worker_info().map(|w| (w.index, w.pid)),
        Some((0, before))
    );
    assert_eq!(
        error.to_string(),
        format!(
            "task `it::deadlines::arrive_and_stall` timed out after 300ms: worker 0 (pid {before}) was killed"
        )
    );
    assert!(elapsed >= timeout, "killed after {elapsed:?}");
    assert_eq!(behind.get_timeout(BOUND).unwrap(), 144);
    let after = pool.apply(pid, ()).unwrap();
    assert_ne!(after, before, "a replacement serves");
    drop(arrival);
    finish(pool);
}

#[test]
fn the_pool_timeout_applies_per_call_in_maps() {
    let _serial = serial();
    let timeout = Duration::from_millis(200);
    let pool = Pool::builder()
        .processes(2)
        .task_timeout(timeout)
        .build()
        .unwrap();
    for options in [
        MapOptions::new(),
        MapOptions::new().chunksize(1),
        MapOptions::new().chunksize(4),
    ] {
        let pairs: Vec<(u64, u64)> = (0..20).map(|x| (x, 7)).collect();
        let error = pool
            .starmap_async_with(stall_at, pairs.clone(), options)
            .unwrap()
            .get_timeout(BOUND)
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::TimedOut, "{options:?}: {error}");
        assert_eq!(error.timeout(), Some(timeout));
        assert_eq!(error.task_name(), Some("it::deadlines::stall_at"));

        let error = pool
            .map_with(square, 0..100, options)
            .map(|v| v[99])
            .unwrap();
        assert_eq!(error, 99 * 99, "{options:?}: the pool serves on");

        let results: Vec<_> = pool
            .imap_with(square_or_stall, 0..20u64, options)
            .unwrap()
            .collect();
        for (x, result) in (0..20u64).zip(&results) {
            match result {
                Ok(value) => assert_eq!(*value, x * x),
                Err(error) => {
                    assert!(x == 7 && error.is_timed_out(), "{options:?} {x}: {error}")
                }
            }
        }
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    }
    finish(pool);
}

#[procpool::task]
fn square_or_stall(x: u64) -> u64 {
    if x == 7 {
        stall();
    }
    x * x
}

#[test]
fn a_per_call_timeout_overrides_the_pool_timeout() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(1)
        .task_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let timeout = Duration::from_millis(150);
    let error = pool
        .apply_async_with(stall_at, (1, 1), ApplyOptions::new().timeout(timeout))
        .unwrap()
        .get_timeout(BOUND)
        .unwrap_err();
    assert_eq!(error.timeout(), Some(timeout), "{error}");
    let results: Vec<_> = pool
        .imap_with(square_or_stall, 5..9, MapOptions::new().timeout(timeout))
        .unwrap()
        .collect();
    assert!(results[2].as_ref().unwrap_err().is_timed_out());
    assert_eq!(*results[3].as_ref().unwrap(), 64);
    finish(pool);
}

#[test]
fn tasks_within_their_timeout_keep_their_worker() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(2)
        .task_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let pids = pool.worker_pids();
    for _ in 0..5 {
        assert_eq!(pool.map(square, 0..1000).unwrap()[999], 999 * 999);
    }
    assert_eq!(pool.worker_pids(), pids);
    finish(pool);
}

#[test]
fn zero_timeouts_are_refused() {
    let _serial = serial();
    let error = Pool::builder()
        .processes(1)
        .task_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "task_timeout must be more than zero, got 0s"
    );
    let pool = Pool::builder().processes(1).build().unwrap();
    let error = pool
        .apply_with(square, (1,), ApplyOptions::new().timeout(Duration::ZERO))
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    let error = pool
        .map_with(square, 0..3, MapOptions::new().timeout(Duration::ZERO))
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    let error = pool
        .imap_with(square, 0..3, MapOptions::new().timeout(Duration::ZERO))
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    finish(pool);
}

#[test]
fn terminate_kills_a_worker_that_ignores_sigterm() {
    let _serial = serial();
    let pool = Pool::builder().processes(2).build().unwrap();
    let rendezvous = Rendezvous::new();
    let deaf = pool.apply_async(deaf_stall, (rendezvous.path(),)).unwrap();
    let arrival = rendezvous.arrive();
    let started = Instant::now();
    pool.terminate();
    let took = started.elapsed();
    assert_no_children();
    assert_eq!(deaf.get().unwrap_err().kind(), ErrorKind::Terminated);
    // The grace period (200 ms) and no more than a generous bound.
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(arrival);
}
