//! Memory-aware workers: `memory_limit` fails a task that allocates past it with
//! `OutOfMemory` and the pool goes on; `max_memory_per_child` recycles a worker whose
//! resident memory after a job is over it. Tasks allocate tens of MiB, not more.

use procpool::{ErrorKind, Event, MapOptions, Pool, WorkerExit};
use tests_integration::{finish, serial};

use crate::tasks::{pid, square};

const MIB: u64 = 1 << 20;

/// Allocates `mib` MiB one MiB at a time, touching every page, and returns a sum of them.
#[procpool::task]
fn touch(mib: u64) -> u64 {
    let mut blocks = Vec::new();
    for at in 0..mib {
        blocks.push(vec![at as u8 | 1; MIB as usize]);
    }
    blocks.iter().map(|block| u64::from(block[4096] & 1)).sum()
}

/// Allocates and touches `mib` MiB that stay allocated after the call (a leak), and returns
/// the worker's pid.
#[procpool::task]
fn leak(mib: u64) -> u32 {
    let block = vec![1u8; (mib * MIB) as usize];
    std::hint::black_box(&block);
    std::mem::forget(block);
    std::process::id()
}

#[procpool::task]
fn abort_now() {
    std::process::abort();
}

#[test]
fn a_task_over_the_memory_limit_fails_out_of_memory_and_the_pool_goes_on() {
    let _serial = serial();
    let limit = 32 * MIB;
    let pool = Pool::builder()
        .processes(1)
        .memory_limit(limit)
        .build()
        .unwrap();
    let before = pool.apply(pid, ()).unwrap();
    let error = pool.apply(touch, (64,)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::OutOfMemory, "{error:?}");
    assert!(error.is_out_of_memory());
    assert_eq!(error.memory_limit(), Some(limit));
    assert_eq!(error.worker_info().unwrap().pid, before);
    let text = error.to_string();
    assert!(
        text.contains("memory limit of 33554432 bytes") && text.contains("`"),
        "{text}"
    );
    // The next call runs, on a replacement.
    let after = pool.apply(pid, ()).unwrap();
    assert_ne!(after, before);
    assert_eq!(pool.apply(square, (7,)).unwrap(), 49);
    let stats = pool.stats();
    assert_eq!(stats.out_of_memory, 1, "{stats:?}");
    assert_eq!(stats.worker_died, 0, "{stats:?}");
    assert_eq!(stats.worker_deaths, 1, "{stats:?}");
    finish(pool);
}

#[test]
fn a_task_under_the_memory_limit_is_unaffected() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(2)
        .memory_limit(64 * MIB)
        .build()
        .unwrap();
    let before = pool.apply(pid, ()).unwrap();
    assert_eq!(pool.apply(touch, (8,)).unwrap(), 8);
    // Through the queue too, with calls in chunks.
    let sums = pool
        .map_with(touch, vec![4; 8], MapOptions::new().chunksize(2))
        .unwrap();
    assert_eq!(sums, vec![4; 8]);
    assert!(pool.worker_pids().contains(&before));
    assert_eq!(pool.stats().worker_deaths, 0);
    finish(pool);
}

#[test]
fn one_call_of_a_chunk_over_the_limit_fails_and_the_others_run() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(1)
        .memory_limit(32 * MIB)
        .build()
        .unwrap();
    let handle = pool
        .map_async_with(touch, vec![2, 2, 64, 2], MapOptions::new().chunksize(4))
        .unwrap();
    let error = handle.get().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::OutOfMemory, "{error:?}");
    assert_eq!(error.memory_limit(), Some(32 * MIB));
    let stats = pool.stats();
    assert_eq!(stats.out_of_memory, 1, "{stats:?}");
    assert_eq!(pool.apply(touch, (2,)).unwrap(), 2);
    finish(pool);
}

#[test]
fn an_abort_under_a_memory_limit_is_still_a_death_by_sigabrt() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(1)
        .memory_limit(32 * MIB)
        .build()
        .unwrap();
    let error = pool.apply(abort_now, ()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error:?}");
    assert_eq!(error.worker_exit(), Some(WorkerExit::Signal(libc::SIGABRT)));
    assert_eq!(error.memory_limit(), None);
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    finish(pool);
}

#[test]
fn a_worker_over_max_memory_per_child_after_a_job_is_recycled() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(1)
        .max_memory_per_child(48 * MIB)
        .build()
        .unwrap();
    let events = pool.subscribe();
    // A small call leaves the worker under the bound: it stays.
    let first = pool.apply(pid, ()).unwrap();
    assert_eq!(pool.apply(pid, ()).unwrap(), first);
    // The leaking call itself succeeds; its worker is then replaced.
    let leaked_in = pool.apply(leak, (64,)).unwrap();
    assert_eq!(leaked_in, first);
    let after = pool.apply(pid, ()).unwrap();
    assert_ne!(after, first);
    assert_eq!(pool.apply(pid, ()).unwrap(), after);
    let stats = pool.stats();
    assert_eq!(stats.memory_recycles, 1, "{stats:?}");
    assert_eq!(stats.worker_deaths, 0, "{stats:?}");
    assert_eq!(stats.ok, 5, "{stats:?}");
    finish(pool);
    let recycled: Vec<u32> = std::iter::from_fn(|| events.try_next())
        .filter_map(|event| match event {
            Event::WorkerRecycled(worker) => Some(worker.pid),
            _ => None,
        })
        .collect();
    // The leaky worker, then its replacement at close.
    assert_eq!(recycled, vec![first, after]);
}

#[test]
fn a_worker_over_max_memory_per_child_in_a_queued_map_is_recycled() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(1)
        .max_memory_per_child(48 * MIB)
        .build()
        .unwrap();
    // Through the supervisor: every call a job of its own, each leaking 64 MiB, so that
    // every worker serves one call or two (one it held behind the first) before it goes.
    let pids = pool
        .map_async_with(leak, vec![64; 4], MapOptions::new().chunksize(1))
        .unwrap()
        .get()
        .unwrap();
    let distinct: std::collections::HashSet<u32> = pids.iter().copied().collect();
    assert!(distinct.len() >= 2, "{pids:?}");
    // A later worker's recycle may still be under way when the results are in; the first
    // one's is done, as another pid ran calls after it.
    let stats = pool.stats();
    assert!(stats.memory_recycles >= 1, "{stats:?}");
    assert_eq!(stats.worker_deaths, 0, "{stats:?}");
    finish(pool);
}

#[test]
fn bad_memory_options_are_refused_at_build() {
    let _serial = serial();
    for (builder, name) in [
        (Pool::builder().memory_limit(0), "memory_limit"),
        (Pool::builder().memory_limit(MIB), "memory_limit"),
        (Pool::builder().memory_limit(1 << 60), "memory_limit"),
        (
            Pool::builder().max_memory_per_child(0),
            "max_memory_per_child",
        ),
        (
            Pool::builder().max_memory_per_child(u64::MAX),
            "max_memory_per_child",
        ),
    ] {
        let error = builder.processes(1).build().unwrap_err();
        assert!(error.to_string().contains(name), "{error}");
    }
    tests_integration::assert_no_children();
}
