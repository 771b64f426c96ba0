//! Blocking calls on an idle pool run on workers the calling thread borrows (`apply`, `map`,
//! `starmap`): what the supervisor does for its own workers must hold for borrowed ones too.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use procpool::{ApplyOptions, ErrorKind, MapOptions, Pool};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tests_integration::{Rendezvous, assert_no_children, finish, pool, serial};

use crate::tasks::{hold, pid, square};

const BOUND: Duration = Duration::from_secs(30);

/// Waits, up to [`BOUND`], until `ready` holds; the state it waits for comes from another
/// process, so it is polled.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

#[test]
fn terminate_from_another_thread_ends_a_blocking_apply() {
    let _serial = serial();
    let pool = pool(1);
    let rendezvous = Rendezvous::new();
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| pool.apply(hold, (rendezvous.path(),)));
        let arrival = rendezvous.arrive();
        let started = Instant::now();
        pool.terminate();
        let error = caller.join().unwrap().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Terminated, "{error:?}");
        assert!(started.elapsed() < BOUND);
        drop(arrival);
    });
    assert_no_children();
}

#[test]
fn join_waits_for_a_blocking_map_that_holds_every_worker() {
    let _serial = serial();
    let pool = pool(2);
    let rendezvous = Rendezvous::new();
    let paths = vec![rendezvous.path(), rendezvous.path()];
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| pool.map(hold, paths));
        let first = rendezvous.arrive();
        let second = rendezvous.arrive();
        assert_ne!(first.pid, second.pid, "one call on each worker");
        pool.close();
        // New work is refused while the borrowed workers finish theirs.
        let refused = pool.apply(square, (2,)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Closed);
        first.release(3);
        second.release(4);
        let mut got = caller.join().unwrap().unwrap();
        got.sort_unstable();
        assert_eq!(got, vec![3, 4]);
        pool.join().unwrap();
    });
    assert_no_children();
}

#[test]
fn an_idle_worker_killed_from_outside_is_replaced() {
    let _serial = serial();
    let pool = pool(1);
    let before = pool.apply(pid, ()).unwrap();
    // SAFETY: kill has no memory effects; the pid is the pool's idle worker, not reaped yet.
    assert_eq!(unsafe { libc::kill(before as i32, libc::SIGKILL) }, 0);
    // Nobody calls: the pool must notice the death of a worker that waits for work.
    wait_for("the killed worker is replaced", || {
        let pids = pool.worker_pids();
        pids.len() == 1 && pids[0] != before
    });
    let after = pool.apply(pid, ()).unwrap();
    assert_ne!(after, before);
    assert_eq!(pool.stats().worker_deaths, 1);
    finish(pool);
}

#[test]
fn max_tasks_per_child_counts_blocking_calls() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(1)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..7).map(|_| pool.apply(pid, ()).unwrap()).collect();
    assert!(pids[..3].iter().all(|&p| p == pids[0]), "{pids:?}");
    assert!(pids[3..6].iter().all(|&p| p == pids[3]), "{pids:?}");
    assert!(pids[0] != pids[3] && pids[3] != pids[6], "{pids:?}");
    // A blocking map's chunks count too, on a worker that has run one call: two more calls
    // on it, then three on each fresh one.
    let ran = pool
        .starmap_with(pid, vec![(); 20], MapOptions::new().chunksize(1))
        .unwrap();
    assert_eq!(&ran[..2], &[pids[6], pids[6]], "{ran:?}");
    let groups: Vec<u32> = ran[2..]
        .chunks(3)
        .map(|group| {
            assert!(group.iter().all(|&p| p == group[0]), "{ran:?}");
            group[0]
        })
        .collect();
    let distinct: HashSet<u32> = groups.iter().copied().chain([pids[6]]).collect();
    assert_eq!(distinct.len(), 7, "{ran:?}");
    finish(pool);
}

#[test]
fn a_blocking_apply_past_its_timeout_kills_its_worker_and_the_pool_goes_on() {
    let _serial = serial();
    let pool = pool(1);
    let before = pool.apply(pid, ()).unwrap();
    let rendezvous = Rendezvous::new();
    let options = ApplyOptions::new().timeout(Duration::from_millis(200));
    let error = pool
        .apply_with(hold, (rendezvous.path(),), options)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error:?}");
    assert_eq!(error.worker_info().unwrap().pid, before);
    let after = pool.apply(pid, ()).unwrap();
    assert_ne!(after, before);
    assert_eq!(pool.apply(square, (9,)).unwrap(), 81);
    finish(pool);
}

#[test]
fn blocking_calls_from_many_threads_share_the_workers() {
    let _serial = serial();
    let pool = pool(2);
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..8u64)
            .map(|t| {
                let pool = &pool;
                scope.spawn(move || {
                    for i in 0..200 {
                        let x = t * 1000 + i;
                        // Half the threads queue through the supervisor while the others
                        // borrow workers, so that lending, taking back and dispatching mix.
                        let got = if t % 2 == 0 {
                            pool.apply(square, (x,)).unwrap()
                        } else {
                            pool.apply_async(square, (x,)).unwrap().get().unwrap()
                        };
                        assert_eq!(got, x * x);
                        if i % 50 == 0 {
                            let squares = pool.map(square, 0..100).unwrap();
                            assert_eq!(squares[99], 9801);
                            let streamed: Vec<u64> = pool
                                .imap(square, 0..10)
                                .unwrap()
                                .map(Result::unwrap)
                                .collect();
                            assert_eq!(streamed[9], 81);
                        }
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
    });
    let stats = pool.stats();
    assert_eq!(stats.ok, 8 * 200 + 8 * 4 * (100 + 10));
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.worker_deaths, 0);
    finish(pool);
}

/// Waits until `pool` lends all its `workers`: a blocking call made then borrows them.
fn wait_until_lent(pool: &Pool, workers: usize) {
    wait_for("the idle workers are lent", || {
        procpool::test_hooks::idle_workers(pool) == workers
    });
}

/// An argument whose encoding fails when asked to.
#[derive(Debug, Clone, Copy, Deserialize)]
struct Picky {
    refuse: bool,
    value: u64,
}

impl Serialize for Picky {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.refuse {
            return Err(serde::ser::Error::custom(
                "this value refuses to be encoded",
            ));
        }
        (self.refuse, self.value).serialize(s)
    }
}

#[procpool::task]
fn picky(item: Picky) -> u64 {
    item.value
}

#[procpool::task]
fn picky_pair(item: Picky, more: u64) -> u64 {
    item.value + more
}

#[test]
fn a_blocking_map_with_a_later_argument_that_does_not_encode_runs_nothing() {
    let _serial = serial();
    let pool = pool(2);
    let good = |value| Picky {
        refuse: false,
        value,
    };
    let bad = Picky {
        refuse: true,
        value: 0,
    };
    wait_until_lent(&pool, 2);
    let error = pool
        .map(picky, vec![good(1), good(2), bad, good(4)])
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Codec, "{error:?}");
    let options = MapOptions::new().chunksize(1);
    let error = pool
        .map_with(picky, vec![good(1), bad], options)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Codec, "{error:?}");
    let error = pool
        .starmap(picky_pair, vec![(good(1), 1), (bad, 2)])
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Codec, "{error:?}");
    assert_eq!(pool.stats().submitted, 0, "{:?}", pool.stats());
    assert_eq!(pool.map(picky, vec![good(5)]).unwrap(), vec![5]);
    finish(pool);
}

#[test]
fn close_during_a_blocking_map_whose_worker_is_spent_still_runs_the_rest() {
    let _serial = serial();
    let pool = Pool::builder()
        .processes(1)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let rendezvous = Rendezvous::new();
    let paths = vec![rendezvous.path(); 3];
    wait_until_lent(&pool, 1);
    std::thread::scope(|scope| {
        // The borrowed worker may run one job: the call gives it back and queues the other
        // two, which replacements run after `close`.
        let caller = scope.spawn(|| pool.map_with(hold, paths, MapOptions::new().chunksize(1)));
        let first = rendezvous.arrive();
        pool.close();
        first.release(1);
        rendezvous.arrive().release(2);
        rendezvous.arrive().release(3);
        assert_eq!(caller.join().unwrap().unwrap(), vec![1, 2, 3]);
    });
    pool.join().unwrap();
    assert_no_children();
}

/// A result that panics when the caller decodes it, if it says so. The one that breaks is
/// longer than the others, so a chunk that holds both is decoded as it arrives: results of
/// one size are decoded only once every call is in.
#[derive(Debug, Serialize)]
struct Fragile(bool, String);

impl<'de> Deserialize<'de> for Fragile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (breaks, pad) = <(bool, String)>::deserialize(d)?;
        assert!(!breaks, "this result breaks when decoded");
        Ok(Fragile(breaks, pad))
    }
}

/// Meets the test at `path` unless it is empty.
#[procpool::task]
fn fragile(breaks: bool, path: String) -> Fragile {
    if !path.is_empty() {
        let _ = tests_integration::meet(&path);
    }
    let pad = if breaks { "longer" } else { "" };
    Fragile(breaks, pad.to_owned())
}

#[test]
fn a_caller_that_panics_while_it_holds_workers_kills_no_worker_count() {
    let _serial = serial();
    let pool = pool(1);
    let rendezvous = Rendezvous::new();
    let path = rendezvous.path();
    // One worker, two jobs of two calls in flight: a result of the first breaks when
    // decoded, which happens while the caller holds the worker running the second (its
    // first call waiting at the rendezvous).
    let items = vec![
        (true, String::new()),
        (false, String::new()),
        (false, path.clone()),
        (false, path),
    ];
    wait_until_lent(&pool, 1);
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.starmap_with(fragile, items, MapOptions::new().chunksize(2))
            }))
        });
        let second = rendezvous.arrive();
        assert!(caller.join().unwrap().is_err(), "the caller panicked");
        drop(second);
    });
    // The worker that held the abandoned calls is ended and replaced by the supervisor, but
    // it did not die.
    wait_for("the abandoned calls are settled", || {
        pool.stats().in_flight == 0
    });
    let stats = pool.stats();
    assert_eq!(stats.worker_deaths, 0, "{stats:?}");
    assert_eq!(
        (stats.ok, stats.terminated, stats.in_flight),
        (2, 2, 0),
        "{stats:?}"
    );
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    finish(pool);
}

/// As the supervisor does (see `basic`), a blocking call gives a worker whose last job was
/// long one job at a time: its last job goes to the first worker to finish, not behind a
/// job that may still run for long.
#[test]
fn after_long_jobs_a_blocking_map_gives_its_last_job_to_the_first_free_worker() {
    let _serial = serial();
    let pool = pool(2);
    let (a, b, c) = (Rendezvous::new(), Rendezvous::new(), Rendezvous::new());
    run_long_jobs(&pool, &a);
    std::thread::scope(|scope| {
        let paths = [a.path(), b.path(), c.path()];
        let caller = scope.spawn(|| pool.map_with(hold, paths, MapOptions::new().chunksize(1)));
        let (on_a, on_b) = (a.arrive(), b.arrive());
        let finished_first = on_b.pid;
        on_b.release(2);
        // Two jobs to a worker would have put the third behind the first, held at `a`.
        let on_c = c.arrive_within(BOUND);
        on_a.release(1);
        let on_c = on_c.unwrap_or_else(|| c.arrive());
        let ran_on = on_c.pid;
        on_c.release(3);
        assert_eq!(caller.join().unwrap().unwrap(), [1, 2, 3]);
        assert_eq!(
            ran_on, finished_first,
            "the third job waited behind the first"
        );
    });
    finish(pool);
    assert_no_children();
}

/// Runs one long job on each of the two workers of `pool`, held at `rendezvous` for five times
/// the time after which the pool counts a job as long, so that near the end of later jobs
/// each worker holds one at a time. (The sleep makes the jobs long; it synchronises nothing.)
pub(crate) fn run_long_jobs(pool: &Pool, rendezvous: &Rendezvous) {
    std::thread::scope(|scope| {
        let paths = [rendezvous.path(), rendezvous.path()];
        let caller = scope.spawn(|| pool.map(hold, paths));
        let (first, second) = (rendezvous.arrive(), rendezvous.arrive());
        assert_ne!(first.pid, second.pid, "one on each worker");
        std::thread::sleep(5 * procpool::test_hooks::LONG_JOB);
        first.release(1);
        second.release(1);
        assert_eq!(caller.join().unwrap().unwrap(), [1, 1]);
    });
}
