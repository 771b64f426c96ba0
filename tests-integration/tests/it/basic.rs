//! Results, order and the methods of `multiprocessing.Pool`.

use std::cell::Cell;
use std::collections::HashSet;

use num_bigint::BigUint;
use procpool::{ErrorKind, MapOptions, Pool};
use tests_integration::{Rendezvous, assert_no_children, finish, meet, pool, serial};

use crate::tasks::{add, square};

#[procpool::task]
fn six(a: u8, b: u16, c: u32, d: u64, e: i8, f: String) -> String {
    format!("{a}{b}{c}{d}{e}{f}")
}

#[procpool::task]
fn answer() -> u32 {
    42
}

#[procpool::task]
fn factorial(n: u64) -> BigUint {
    (1..=n).map(BigUint::from).product()
}

#[procpool::task]
fn checked_half(x: i64) -> Result<i64, String> {
    if x % 2 == 0 {
        Ok(x / 2)
    } else {
        Err(format!("{x} is odd"))
    }
}

/// The worker's (index, pid) as the task sees it.
#[procpool::task]
fn whoami() -> (usize, u32) {
    let worker = procpool::current_worker().expect("tasks run in a worker");
    assert_eq!(worker.pid, std::process::id());
    (worker.index, worker.pid)
}

#[procpool::task]
fn wait_at(path: String, x: u64) -> u64 {
    let byte = meet(&path).expect("released");
    x + u64::from(byte)
}

#[test]
fn apply_and_apply_async() {
    let _serial = serial();
    let pool = pool(2);
    assert_eq!(pool.apply(square, (7,)).unwrap(), 49);
    assert_eq!(pool.apply(add, (2, 3)).unwrap(), 5);
    assert_eq!(pool.apply(answer, ()).unwrap(), 42);
    assert_eq!(
        pool.apply(six, (1, 2, 3, 4, -5, "x".to_string())).unwrap(),
        "1234-5x"
    );
    assert_eq!(pool.apply(factorial, (25,)).unwrap(), factorial(25));
    assert_eq!(pool.apply(checked_half, (4,)).unwrap(), Ok(2));
    assert_eq!(
        pool.apply(checked_half, (3,)).unwrap(),
        Err("3 is odd".to_string())
    );

    let pending = pool.apply_async(square, (9,)).unwrap();
    pending.wait();
    assert!(pending.ready());
    assert_eq!(pending.successful(), Some(true));
    assert_eq!(pending.get().unwrap(), 81);
    assert_eq!(pending.get().unwrap(), 81, "get can be called again");
    finish(pool);
}

#[test]
fn get_timeout_only_stops_waiting() {
    let _serial = serial();
    let pool = pool(1);
    let rendezvous = Rendezvous::new();
    let pending = pool.apply_async(wait_at, (rendezvous.path(), 10)).unwrap();
    let arrival = rendezvous.arrive();
    assert!(pool.worker_pids().contains(&arrival.pid));
    assert!(!pending.ready());
    assert_eq!(pending.successful(), None);
    let error = pending
        .get_timeout(std::time::Duration::from_millis(20))
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WaitTimeout);
    assert!(!pending.wait_timeout(std::time::Duration::from_millis(1)));
    arrival.release(5);
    assert_eq!(
        pending
            .get_timeout(std::time::Duration::from_secs(60))
            .unwrap(),
        15
    );
    finish(pool);
}

#[test]
fn map_imap_starmap_keep_order_for_every_chunk_size() {
    let _serial = serial();
    let pool = pool(2);
    let expected: Vec<u64> = (1..=100).map(|x| x * x).collect();
    let sums: Vec<u64> = (1..=100).map(|x| x + 1).collect();
    let mut options = vec![("auto", MapOptions::new())];
    for size in [1, 2, 4] {
        options.push(("fixed", MapOptions::new().chunksize(size)));
    }
    for (name, opts) in options {
        assert_eq!(
            pool.map_with(square, 1..=100, opts).unwrap(),
            expected,
            "map {name} {opts:?}"
        );
        let async_result = pool.map_async_with(square, 1..=100, opts).unwrap();
        assert_eq!(
            async_result.get().unwrap(),
            expected,
            "map_async {name} {opts:?}"
        );
        assert_eq!(async_result.successful(), Some(true));
        let imapped: Vec<u64> = pool
            .imap_with(square, 1..=100, opts)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(imapped, expected, "imap {name} {opts:?}");
        let pairs: Vec<(u64, u64)> = (1..=100).map(|x| (x, 1)).collect();
        assert_eq!(
            pool.starmap_with(add, pairs.clone(), opts).unwrap(),
            sums,
            "starmap {name} {opts:?}"
        );
        assert_eq!(
            pool.starmap_async_with(add, pairs, opts)
                .unwrap()
                .get()
                .unwrap(),
            sums
        );
        let mut unordered: Vec<u64> = pool
            .imap_unordered_with(square, 1..=100, opts)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        unordered.sort_unstable();
        assert_eq!(
            unordered, expected,
            "imap_unordered {name} {opts:?} yields each result once"
        );
    }
    assert_eq!(pool.map(square, 1..=100).unwrap(), expected);
    assert_eq!(pool.starmap(add, [(1, 2), (3, 4)]).unwrap(), [3, 7]);
    finish(pool);
}

#[test]
fn empty_input_gives_empty_results() {
    let _serial = serial();
    let pool = pool(2);
    assert!(pool.map(square, Vec::<u64>::new()).unwrap().is_empty());
    assert!(
        pool.map_async(square, Vec::<u64>::new())
            .unwrap()
            .get()
            .unwrap()
            .is_empty()
    );
    assert!(
        pool.starmap(add, Vec::<(u64, u64)>::new())
            .unwrap()
            .is_empty()
    );
    assert_eq!(pool.imap(square, Vec::<u64>::new()).unwrap().count(), 0);
    assert_eq!(
        pool.imap_unordered(square, Vec::<u64>::new())
            .unwrap()
            .count(),
        0
    );
    finish(pool);
}

#[test]
fn imap_pulls_lazily_with_bounded_work_in_flight() {
    let _serial = serial();
    let pool = pool(2);
    let pulled = Cell::new(0u64);
    let endless = (1u64..).inspect(|_| pulled.set(pulled.get() + 1));
    let mut results = pool.imap(square, endless).unwrap();
    for x in 1..=1000u64 {
        assert_eq!(results.next().unwrap().unwrap(), x * x);
        // One call per chunk, twice the workers in flight: never more than a few ahead.
        assert!(
            pulled.get() <= x + 4,
            "pulled {} after {x} results",
            pulled.get()
        );
    }
    drop(results);
    finish(pool);
}

#[test]
fn pools_of_one_and_of_a_hundred() {
    let _serial = serial();
    for processes in [1, 100] {
        let pool = pool(processes);
        assert_eq!(pool.processes(), processes);
        assert_eq!(pool.worker_pids().len(), processes);
        let results = pool
            .map_with(factorial, 1..=100, MapOptions::new().chunksize(1))
            .unwrap();
        assert_eq!(results[99], factorial(100));
        finish(pool);
    }
}

#[test]
fn apply_from_eight_threads_at_once() {
    let _serial = serial();
    let pool = pool(2);
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let pool = &pool;
            scope.spawn(move || {
                for i in 0..50 {
                    assert_eq!(pool.apply(add, (t, i)).unwrap(), t + i);
                }
            });
        }
    });
    finish(pool);
}

#[test]
fn workers_know_who_they_are() {
    let _serial = serial();
    assert!(procpool::current_worker().is_none());
    let pool = pool(3);
    let pids: HashSet<u32> = pool.worker_pids().into_iter().collect();
    assert_eq!(pids.len(), 3);
    assert!(!pids.contains(&std::process::id()));
    for (index, pid) in pool.starmap(whoami, vec![(); 30]).unwrap() {
        assert!(index < 3);
        assert!(pids.contains(&pid), "{pid} is not one of {pids:?}");
    }
    finish(pool);
}

#[test]
fn unregistered_functions_are_refused_by_name() {
    let _serial = serial();
    let pool = pool(1);
    fn not_a_task(x: u64) -> u64 {
        x
    }
    let error = pool.apply(not_a_task, (1,)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unregistered);
    assert!(error.to_string().contains("not_a_task"), "{error}");
    let error = pool.map(|x: u64| x, [1]).unwrap_err();
    assert!(error.to_string().contains("closure"), "{error}");
    assert!(
        error
            .to_string()
            .contains("move its body into a function marked #[procpool::task]"),
        "{error}"
    );
    let pointer: fn(u64) -> u64 = square;
    let error = pool.apply(pointer, (2,)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unregistered);
    assert!(
        error.to_string().contains("pass the function itself"),
        "{error}"
    );
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9, "the pool carries on");
    finish(pool);
}

#[test]
fn bad_settings_are_refused() {
    let _serial = serial();
    let error = Pool::builder().processes(0).build().unwrap_err();
    assert_eq!(error.to_string(), "a pool needs at least 1 process, got 0");
    assert_eq!(error.kind(), procpool::BuildErrorKind::InvalidInput);
    let error = Pool::builder()
        .processes(1)
        .max_tasks_per_child(0)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("max_tasks_per_child"), "{error}");
    let pool = pool(1);
    let error = pool
        .map_with(square, 1..=3, MapOptions::new().chunksize(0))
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert_eq!(error.to_string(), "chunksize must be at least 1, got 0");
    finish(pool);
}

#[test]
fn cpu_count_respects_affinity() {
    let _serial = serial();
    let all = procpool::cpu_count();
    assert!(all >= 1);
    // Pin this thread to its first allowed CPU: the count follows the affinity mask.
    std::thread::spawn(|| {
        // SAFETY: cpu_set_t is plain data; the calls only read and write the set given.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
                0
            );
            let first = (0..libc::CPU_SETSIZE as usize)
                .find(|&cpu| libc::CPU_ISSET(cpu, &set))
                .unwrap();
            libc::CPU_ZERO(&mut set);
            libc::CPU_SET(first, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
                0
            );
        }
        assert_eq!(procpool::cpu_count(), 1);
    })
    .join()
    .unwrap();
    assert_no_children();
}

#[test]
fn the_default_pool_has_cpu_count_workers() {
    let _serial = serial();
    let pool = Pool::new().unwrap();
    assert_eq!(pool.processes(), procpool::cpu_count());
    assert_eq!(pool.apply(square, (4,)).unwrap(), 16);
    finish(pool);
}

#[test]
fn pool_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Pool>();
    assert_send_sync::<procpool::AsyncResult<u64>>();
    assert_send_sync::<procpool::MapResult<u64>>();
    assert_send_sync::<procpool::Error>();
}

mod twins {
    //! Two nested tasks of one name in one module would share a registered name.

    /// The task itself (its fn item type), so that it can be submitted from outside.
    pub fn first() -> impl Fn() -> u8 + Copy + Send + Sync + 'static {
        #[procpool::task]
        fn twin() -> u8 {
            1
        }
        twin
    }

    pub fn second() -> impl Fn() -> u8 + Copy + Send + Sync + 'static {
        #[procpool::task]
        fn twin() -> u8 {
            2
        }
        twin
    }
}

#[procpool::task]
fn text_len(text: String) -> usize {
    text.len()
}

#[test]
fn tasks_that_share_a_name_are_refused() {
    let _serial = serial();
    let pool = pool(1);
    #[procpool::task]
    fn not_shared() -> u8 {
        3
    }
    assert_eq!(pool.apply(not_shared, ()).unwrap(), 3);
    for twin in [
        pool.apply(twins::first(), ()),
        pool.apply(twins::second(), ()),
    ] {
        let error = twin.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unregistered);
        assert!(
            error
                .to_string()
                .contains("share the name `it::basic::twins::twin`"),
            "{error}"
        );
    }
    assert_eq!(
        (twins::first()(), twins::second()()),
        (1, 2),
        "both stay plain functions"
    );
    finish(pool);
}

#[test]
fn imap_after_close_is_refused_at_once() {
    let _serial = serial();
    let pool = pool(1);
    pool.close();
    let error = pool.imap(square, 1..=3).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed);
    let error = pool.imap_unordered(square, 1..=3).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed);
    pool.join().unwrap();
    assert_no_children();
}

#[test]
fn arguments_over_the_frame_limit_are_refused_at_submission() {
    let _serial = serial();
    let pool = pool(1);
    let big = "x".repeat((1 << 30) + 1);
    let error = pool.apply(text_len, (big,)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Codec);
    assert!(
        error.to_string().contains("over the frame limit"),
        "{error}"
    );
    assert_eq!(
        pool.apply(text_len, ("abc".to_string(),)).unwrap(),
        3,
        "the pool carries on"
    );
    finish(pool);
}

/// A worker whose last job was long holds one job at a time: a job queued behind long ones
/// goes to the first worker to finish, not behind a job that may still run for long.
#[test]
fn after_long_jobs_a_queued_job_waits_for_the_first_free_worker() {
    let _serial = serial();
    let pool = pool(2);
    let rendezvous = Rendezvous::new();
    crate::borrowed::run_long_jobs(&pool, &rendezvous);
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    let held: Vec<_> = (0..2)
        .map(|_| {
            pool.apply_async(crate::tasks::hold, (rendezvous.path(),))
                .unwrap()
        })
        .collect();
    let mut arrivals = vec![rendezvous.arrive(), rendezvous.arrive()];
    arrivals.sort_by_key(|arrival| pids.iter().position(|&pid| pid == arrival.pid));
    let [in_slot_0, in_slot_1]: [_; 2] = arrivals.try_into().unwrap();
    // With two jobs to a worker, this one would go behind the job in slot 0, the first
    // worker with room for a second.
    let queued = pool.apply_async(crate::tasks::pid, ()).unwrap();
    in_slot_1.release(2);
    let bound = std::time::Duration::from_secs(30);
    assert_eq!(queued.get_timeout(bound).unwrap(), pids[1]);
    in_slot_0.release(3);
    let got: Vec<u64> = held.iter().map(|pending| pending.get().unwrap()).collect();
    assert_eq!(got.iter().sum::<u64>(), 5);
    finish(pool);
    assert_no_children();
}
