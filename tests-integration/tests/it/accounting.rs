//! Accounting: the pool's counters, and a randomized fault-injection run that checks that
//! every submitted call reached exactly one final state, the right one, and that the counters
//! agree.

use std::time::Duration;

use procpool::{Error, ErrorKind, MapOptions, Pool, Stats, WorkerExit};
use tests_integration::{assert_no_children, serial};

use crate::tasks::{Undecodable, Unencodable, wait_for};

/// What one call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Act {
    Value,
    UserError,
    Panic,
    Abort,
    Exit,
    Stall,
}

#[procpool::task]
fn act(call: (u64, Act)) -> Result<u64, String> {
    let (x, what) = call;
    match what {
        Act::Value => Ok(x),
        Act::UserError => Err(format!("{x} is not wanted")),
        Act::Panic => panic!("call {x} panics"),
        Act::Abort => std::process::abort(),
        Act::Exit => std::process::exit(3),
        Act::Stall => loop {
            std::thread::park();
        },
    }
}

/// xorshift64*: a small seeded generator, enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn act(&mut self) -> Act {
        match self.below(100) {
            0..70 => Act::Value,
            70..78 => Act::UserError,
            78..86 => Act::Panic,
            86..91 => Act::Abort,
            91..95 => Act::Exit,
            _ => Act::Stall,
        }
    }
}

/// The final states the caller saw, counted as `Stats` counts them, plus calls refused at
/// submission (not counted by the pool).
#[derive(Debug, Default)]
struct Seen {
    stats: Stats,
    refused: u64,
}

impl Seen {
    fn record(&mut self, what: Act, outcome: &Result<Result<u64, String>, Error>) {
        let kind = outcome.as_ref().err().map(Error::kind);
        if kind == Some(ErrorKind::Closed) {
            self.refused += 1;
            return;
        }
        self.stats.submitted += 1;
        // The one final state a call may reach, unless the pool was terminated first.
        let expected = match what {
            Act::Value | Act::UserError => None,
            Act::Panic => Some(ErrorKind::Panicked),
            Act::Abort | Act::Exit => Some(ErrorKind::WorkerDied),
            Act::Stall => Some(ErrorKind::TimedOut),
        };
        assert!(
            kind == expected || kind == Some(ErrorKind::Terminated),
            "{what:?} ended as {outcome:?}"
        );
        match kind {
            None => {
                assert_eq!(outcome.as_ref().unwrap().is_ok(), what == Act::Value);
                self.stats.ok += 1;
            }
            Some(ErrorKind::Panicked) => self.stats.panicked += 1,
            Some(ErrorKind::WorkerDied) => self.stats.worker_died += 1,
            Some(ErrorKind::TimedOut) => self.stats.timed_out += 1,
            Some(ErrorKind::Terminated) => self.stats.terminated += 1,
            Some(_) => self.stats.other += 1,
        }
    }
}

fn run_seed(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let processes = 1 + rng.below(3) as usize;
    let pool = Pool::builder()
        .processes(processes)
        .task_timeout(Duration::from_millis(200))
        // A backtrace would count against the tight timeout of a task that panics.
        .backtraces(false)
        .retries(rng.below(2) as u32)
        .build()
        .unwrap();
    let batches = 12;
    // Terminate after this many batches; with `batches`, close and join instead.
    let stop_at = rng.below(batches + 1);
    let mut seen = Seen::default();
    let mut pending = Vec::new();
    let mut streams = Vec::new();
    let mut x = 0;
    for batch in 0..batches {
        if batch == stop_at {
            pool.terminate();
        }
        if rng.below(2) == 0 {
            let what = rng.act();
            x += 1;
            match pool.apply_async(act, ((x, what),)) {
                Ok(handle) => pending.push((what, handle)),
                Err(error) => seen.record(what, &Err(error)),
            }
        } else {
            let calls: Vec<(u64, Act)> = (0..2 + rng.below(7))
                .map(|_| {
                    x += 1;
                    (x, rng.act())
                })
                .collect();
            let options = MapOptions::new().chunksize(1 + rng.below(3) as usize);
            match pool.imap_with(act, calls.clone(), options) {
                Ok(results) => {
                    // Some streams are read at once, the others after the pool stops.
                    let mut results = calls.iter().map(|c| c.1).zip(results);
                    if rng.below(2) == 0 {
                        for (what, outcome) in results.by_ref() {
                            seen.record(what, &outcome);
                        }
                    }
                    streams.push(results.collect::<Vec<_>>());
                }
                Err(error) => {
                    for (_, what) in calls {
                        seen.record(what, &Err(error.clone()));
                    }
                }
            }
        }
    }
    if stop_at == batches {
        pool.close();
        pool.join().unwrap();
    }
    for (what, handle) in pending {
        let outcome = handle.get_timeout(Duration::from_secs(60));
        seen.record(what, &outcome);
    }
    for stream in streams {
        for (what, outcome) in stream {
            seen.record(what, &outcome);
        }
    }
    let stats = pool.stats();
    let context = format!("seed {seed}: pool {stats:?}, seen {seen:?}");
    assert_eq!(stats.in_flight, 0, "{context}");
    let finals = stats.ok
        + stats.panicked
        + stats.worker_died
        + stats.timed_out
        + stats.terminated
        + stats.other;
    assert_eq!(stats.submitted, finals, "{context}");
    let mut expected = seen.stats;
    expected.worker_starts = stats.worker_starts;
    expected.worker_deaths = stats.worker_deaths;
    assert_eq!(stats, expected, "{context}");
    assert!(
        stats.worker_deaths >= stats.worker_died + stats.timed_out,
        "{context}"
    );
    assert!(
        stats.worker_starts >= processes as u64
            && stats.worker_starts <= processes as u64 + stats.worker_deaths,
        "{context}"
    );
    drop(pool);
    assert_no_children();
}

#[test]
fn randomized_faults_every_call_ends_once_and_the_counters_agree() {
    let _serial = serial();
    for seed in 1..=8 {
        run_seed(seed);
    }
}

#[test]
fn counters_of_a_quiet_pool() {
    let _serial = serial();
    let pool = Pool::builder().processes(2).build().unwrap();
    assert_eq!(pool.stats().worker_starts, 2);
    let results: Vec<_> = pool
        .imap(
            act,
            (0..10).map(|x| (x, if x == 3 { Act::Panic } else { Act::Value })),
        )
        .unwrap()
        .collect();
    assert_eq!(results.len(), 10);
    let stats = pool.stats();
    assert_eq!(
        (stats.submitted, stats.ok, stats.panicked, stats.in_flight),
        (10, 9, 1, 0)
    );
    assert_eq!((stats.worker_starts, stats.worker_deaths), (2, 0));
    let before = pool.worker_pids();
    let error = pool.apply(act, ((1, Act::Abort),)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
    assert_eq!(error.worker_exit(), Some(WorkerExit::Signal(libc::SIGABRT)));
    let dead = error.worker_info().expect("the worker is named");
    assert_eq!(before.get(dead.index), Some(&dead.pid), "{error}");
    let stats = pool.stats();
    assert_eq!((stats.worker_died, stats.worker_deaths), (1, 1));
    wait_for("the dead worker is replaced", || {
        let pids = pool.worker_pids();
        pids.len() == 2 && !pids.contains(&dead.pid)
    });
    assert_eq!(pool.stats().worker_starts, 3);
    pool.close();
    pool.join().unwrap();
    assert_eq!(pool.stats().worker_starts, 3);
    assert_no_children();
}

/// An argument that decodes in the worker or not, for a result that encodes there or not.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Trouble {
    None(u64),
    BadArgs(Undecodable),
    BadResult,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Out {
    Value(u64),
    Bad(Unencodable),
}

#[procpool::task]
fn codec_trouble(trouble: Trouble) -> Out {
    match trouble {
        Trouble::None(x) => Out::Value(x),
        Trouble::BadArgs(_) => unreachable!("the arguments never decode"),
        Trouble::BadResult => Out::Bad(Unencodable),
    }
}

/// Calls `0..n`: of each five, one whose arguments do not decode and one whose result does
/// not encode.
fn troubles(n: u64) -> Vec<Trouble> {
    (0..n)
        .map(|x| match x % 5 {
            1 => Trouble::BadArgs(Undecodable),
            3 => Trouble::BadResult,
            _ => Trouble::None(x),
        })
        .collect()
}

/// (submitted, ok, other, every other final state, in flight)
fn codec_counts(pool: &Pool) -> (u64, u64, u64, u64, u64) {
    let s = pool.stats();
    let rest = s.panicked + s.worker_died + s.timed_out + s.terminated;
    (s.submitted, s.ok, s.other, rest, s.in_flight)
}

#[track_caller]
fn assert_codec(error: &Error, trouble: &Trouble) {
    assert_eq!(error.kind(), ErrorKind::Codec, "{trouble:?}: {error}");
    let says = match trouble {
        Trouble::BadArgs(_) => "refuses to be decoded",
        Trouble::BadResult => "refuses to be encoded",
        Trouble::None(_) => panic!("a good call failed: {error}"),
    };
    assert!(error.to_string().contains(says), "{error}");
}

#[test]
fn codec_failures_in_the_worker_count_as_other() {
    let _serial = serial();
    let pool = Pool::builder().processes(2).build().unwrap();
    // Blocking calls (on a borrowed worker).
    for trouble in troubles(5) {
        match pool.apply(codec_trouble, (trouble.clone(),)) {
            Ok(Out::Value(x)) => assert!(matches!(trouble, Trouble::None(y) if x == y)),
            Ok(Out::Bad(_)) => panic!("an unencodable result arrived"),
            Err(error) => assert_codec(&error, &trouble),
        }
    }
    assert_eq!(codec_counts(&pool), (5, 3, 2, 0, 0));
    // Calls through the supervisor.
    let pending: Vec<_> = troubles(5)
        .into_iter()
        .map(|t| (t.clone(), pool.apply_async(codec_trouble, (t,)).unwrap()))
        .collect();
    for (trouble, handle) in pending {
        match handle.get() {
            Ok(_) => assert!(matches!(trouble, Trouble::None(_)), "{trouble:?}"),
            Err(error) => assert_codec(&error, &trouble),
        }
    }
    assert_eq!(codec_counts(&pool), (10, 6, 4, 0, 0));
    // Maps: the first failed call fails the map and cancels the calls not yet finished;
    // every call is counted once, as what it came to or as cancelled.
    let error = pool.map(codec_trouble, troubles(10)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Codec, "{error}");
    let error = pool
        .map_async(codec_trouble, troubles(10))
        .unwrap()
        .get()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Codec, "{error}");
    let stats = pool.stats();
    let (submitted, ok, other, rest, in_flight) = codec_counts(&pool);
    assert_eq!((submitted, rest, in_flight), (30, 0, 0), "{stats:?}");
    assert_eq!(ok + other + stats.cancelled, 30, "{stats:?}");
    assert!(other >= 4 + 2, "each map had a failure: {stats:?}");
    let cancelled = stats.cancelled;
    let calls = troubles(20);
    for (trouble, outcome) in calls
        .iter()
        .zip(pool.imap(codec_trouble, calls.clone()).unwrap())
    {
        match outcome {
            Ok(_) => assert!(matches!(trouble, Trouble::None(_)), "{trouble:?}"),
            Err(error) => assert_codec(&error, trouble),
        }
    }
    assert_eq!(
        codec_counts(&pool),
        (50, ok + 12, other + 8, 0, 0),
        "{:?}",
        pool.stats()
    );
    pool.close();
    pool.join().unwrap();
    let stats = pool.stats();
    assert_eq!(stats.worker_deaths, 0, "{stats:?}");
    // Replacements only for workers killed running a cancelled call.
    assert!(
        (2..=2 + cancelled).contains(&stats.worker_starts),
        "{stats:?}"
    );
    assert_no_children();
}
