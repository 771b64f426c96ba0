//! Nothing is left behind: many pools created and dropped return the process to its starting
//! descriptors and children, and terminate does not take long however much is queued.

use std::time::{Duration, Instant};

use procpool::{ErrorKind, Pool};
use tests_integration::{Rendezvous, assert_no_children, serial};

use crate::tasks::{hold, square};

fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    fds
}

/// How many pools: each starts and reaps one worker process, a few milliseconds each.
const POOLS: usize = 1000;

#[test]
fn a_thousand_pools_leave_no_descriptor_and_no_child() {
    let _serial = serial();
    // One pool first, so that anything created once per process (the registry index, the
    // standard library's own descriptors) is there before counting.
    drop(Pool::builder().processes(1).build().unwrap());
    let fds = open_fds();
    assert_no_children();
    let started = Instant::now();
    for i in 0..POOLS as u64 {
        let pool = Pool::builder().processes(1).build().unwrap();
        assert_eq!(pool.apply(square, (i,)).unwrap(), i * i);
        if i % 2 == 0 {
            drop(pool);
        } else {
            pool.close();
            pool.join().unwrap();
        }
    }
    let took = started.elapsed();
    eprintln!("{POOLS} pools of one worker in {took:?}");
    assert_eq!(open_fds(), fds, "descriptors before and after");
    assert_no_children();
}

#[test]
fn terminate_with_ten_thousand_queued_tasks_is_prompt() {
    let _serial = serial();
    let pool = Pool::builder().processes(2).build().unwrap();
    let rendezvous = Rendezvous::new();
    let running: Vec<_> = (0..2)
        .map(|_| pool.apply_async(hold, (rendezvous.path(),)).unwrap())
        .collect();
    let arrivals = [rendezvous.arrive(), rendezvous.arrive()];
    let queued: Vec<_> = (0..10_000)
        .map(|x| pool.apply_async(square, (x,)).unwrap())
        .collect();
    let started = Instant::now();
    pool.terminate();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "terminate took {took:?}");
    assert_no_children();
    for result in running.iter().chain(&queued) {
        assert_eq!(result.get().unwrap_err().kind(), ErrorKind::Terminated);
    }
    drop(arrivals);
}
