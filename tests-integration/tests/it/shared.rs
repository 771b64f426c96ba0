//! `SharedBytes`: bytes in shared memory that go to a worker and back without being copied,
//! with their descriptors passed over the worker's socket.

use procpool::{ErrorKind, MapOptions, Pool, SharedBytes};
use tests_integration::{
    Rendezvous, finish, pool, recycling_forkserver_pool, recycling_pool, serial,
};

use crate::tasks::{hold, square};

/// Bytes that differ from one offset to the next, so that a wrong offset shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Closes and joins `pool`, then checks that this process has `fds` descriptors open again,
/// as before the pool started: joined, the supervisor thread has dropped whatever it held
/// (a result it delivered can outlive the caller's handle by a moment in its hands).
fn finish_with(pool: procpool::Pool, fds: usize) {
    finish(pool);
    assert_eq!(open_fds(), fds, "every descriptor is closed again");
}

#[procpool::task]
fn echo(bytes: SharedBytes) -> SharedBytes {
    bytes
}

#[procpool::task]
fn checksum(bytes: SharedBytes) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

/// Shared bytes made in the worker: `pattern(len, seed)`.
#[procpool::task]
fn made(len: usize, seed: u8) -> SharedBytes {
    let bytes = pattern(len, seed);
    SharedBytes::copy_from_slice(&bytes).unwrap()
}

/// The first byte, after aborting the worker if it is 13.
#[procpool::task]
fn first_or_abort(bytes: SharedBytes) -> u8 {
    if bytes[0] == 13 {
        std::process::abort();
    }
    bytes[0]
}

#[procpool::task]
fn both(a: SharedBytes, b: SharedBytes) -> (SharedBytes, u64, SharedBytes) {
    (b, a.len() as u64, a)
}

#[test]
fn shared_bytes_go_to_a_task_and_back_unchanged() {
    let _serial = serial();
    let fds = open_fds();
    let pool = pool(2);
    let data = pattern(3 << 20, 7);
    let bytes = SharedBytes::copy_from_slice(&data).unwrap();
    let back = pool.apply(echo, (bytes.clone(),)).unwrap();
    assert_eq!(&back[..], &data[..]);
    let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(pool.apply(checksum, (bytes.clone(),)).unwrap(), sum);
    // Through the supervisor's queue too, and several in one frame each way.
    let pending = pool.apply_async(both, (bytes.clone(), back)).unwrap();
    let (b, len, a) = pending.get().unwrap();
    assert_eq!(
        (&a[..], len, &b[..]),
        (&data[..], data.len() as u64, &data[..])
    );
    // A result can be taken more than once.
    assert_eq!(pending.get().unwrap().1, len);
    drop((a, b, bytes, pending));
    finish_with(pool, fds);
}

#[test]
fn a_task_returns_shared_bytes_it_made() {
    let _serial = serial();
    let pool = pool(2);
    for (len, seed) in [(1, 3), (4096, 5), (5 << 20, 9)] {
        let bytes = pool.apply(made, (len, seed)).unwrap();
        assert_eq!(&bytes[..], &pattern(len, seed)[..]);
    }
    finish(pool);
}

#[test]
fn no_bytes_take_no_descriptor() {
    let _serial = serial();
    let pool = pool(1);
    let empty = SharedBytes::copy_from_slice(&[]).unwrap();
    assert!(pool.apply(echo, (empty,)).unwrap().is_empty());
    assert!(pool.apply(made, (0, 1)).unwrap().is_empty());
    finish(pool);
}

/// The bytes given, or, for none, `pattern(len, seed)` made in the worker.
#[procpool::task]
fn given_or_made(bytes: Option<SharedBytes>, len: usize, seed: u8) -> SharedBytes {
    bytes.unwrap_or_else(|| SharedBytes::copy_from_slice(&pattern(len, seed)).unwrap())
}

/// The descriptors' handshake, where a worker holds more than the frame that starts it.
/// A worker whose results are the first with descriptors offers them and waits for the
/// parent's answer, keeping the job queued behind to run after; the parent offers the
/// descriptors of a job's arguments and holds that job until the worker answers; when both
/// offer at once, the parent answers at once and the worker in its turn, after the results
/// it was holding. Each map is one worker's two jobs at a time, sent together before any
/// result comes, so these orders are the ones that run.
#[test]
fn descriptors_wait_for_a_handshake_that_each_side_starts_once() {
    let _serial = serial();
    let fds = open_fds();
    let one_by_one = || MapOptions::new().chunksize(1);
    // Results with descriptors, a job queued behind each: the worker keeps it while it waits.
    let pool = pool(1);
    let made_here: Vec<SharedBytes> = pool
        .starmap_with(
            given_or_made,
            (0..6).map(|i| (None, 1000 + i, i as u8)),
            one_by_one(),
        )
        .unwrap();
    for (i, bytes) in made_here.iter().enumerate() {
        assert_eq!(&bytes[..], &pattern(1000 + i, i as u8)[..]);
    }
    assert_eq!(pool.stats().worker_deaths, 0);
    finish(pool);
    // A first job whose results have descriptors, then one whose arguments have some: the
    // parent offers while the worker waits for the answer to its own offer.
    let pool = tests_integration::pool(1);
    let sent = SharedBytes::copy_from_slice(&pattern(3000, 9)).unwrap();
    let calls = vec![(None, 2000, 4), (Some(sent.clone()), 0, 0), (None, 10, 1)];
    let back: Vec<SharedBytes> = pool
        .starmap_with(given_or_made, calls, one_by_one())
        .unwrap();
    assert_eq!(&back[0][..], &pattern(2000, 4)[..]);
    assert_eq!(back[1], sent);
    assert_eq!(&back[2][..], &pattern(10, 1)[..]);
    assert_eq!(pool.stats().worker_deaths, 0);
    drop((made_here, back, sent));
    finish_with(pool, fds);
}

/// Every worker of a recycling pool shakes hands anew, in each direction, through both
/// drivers: a blocking map on borrowed workers and calls from three threads through the
/// supervisor; with the forkserver's workers taking their first job with their SETUP.
#[test]
fn recycled_workers_shake_hands_each_time() {
    let _serial = serial();
    let pools: [fn() -> Pool; 3] = [
        || recycling_forkserver_pool(2),
        || recycling_pool(1, 2),
        || recycling_pool(2, 3),
    ];
    let fds = open_fds();
    for make in pools {
        let pool = make();
        let sent = SharedBytes::copy_from_slice(&pattern(777, 3)).unwrap();
        // Results with descriptors, arguments with descriptors, neither, in turn.
        let call = |i: usize| match i % 3 {
            0 => (None, 100 + i, i as u8),
            1 => (Some(sent.clone()), 0, 0),
            _ => (None, 0, 0),
        };
        let check = |i: usize, back: &SharedBytes| match i % 3 {
            0 => assert_eq!(&back[..], &pattern(100 + i, i as u8)[..]),
            1 => assert_eq!(*back, sent),
            _ => assert!(back.is_empty()),
        };
        let back = pool
            .starmap_with(
                given_or_made,
                (0..60).map(call),
                MapOptions::new().chunksize(1),
            )
            .unwrap();
        for (i, back) in back.iter().enumerate() {
            check(i, back);
        }
        std::thread::scope(|scope| {
            for thread in 0..3 {
                let (pool, call, check) = (&pool, &call, &check);
                scope.spawn(move || {
                    for i in (thread..60).step_by(3) {
                        let back = pool.apply_async(given_or_made, call(i)).unwrap();
                        check(i, &back.get().unwrap());
                    }
                });
            }
        });
        assert_eq!(pool.stats().worker_deaths, 0);
        drop((back, sent));
        finish_with(pool, fds);
    }
}

/// A job with descriptors held behind a running job, for its worker's TAKING, goes to the
/// next worker when that worker dies; so does the job behind it.
#[test]
fn a_job_held_for_its_workers_answer_outlives_that_worker() {
    let _serial = serial();
    let pool = pool(1);
    let sent = SharedBytes::copy_from_slice(&pattern(500, 1)).unwrap();
    let rendezvous = Rendezvous::new();
    let first = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let arrival = rendezvous.arrive();
    let second = pool.apply_async(echo, (sent.clone(),)).unwrap();
    let third = pool.apply_async(square, (7,)).unwrap();
    // SAFETY: kill sends a signal to the worker that runs `first`, which the rendezvous
    // holds alive.
    assert_eq!(unsafe { libc::kill(arrival.pid as i32, libc::SIGKILL) }, 0);
    drop(arrival);
    assert_eq!(first.get().unwrap_err().kind(), ErrorKind::WorkerDied);
    assert_eq!(second.get().unwrap(), sent);
    assert_eq!(third.get().unwrap(), 49);
    assert_eq!(pool.stats().worker_deaths, 1);
    drop(sent);
    finish(pool);
}

#[test]
fn maps_carry_more_descriptors_than_one_message_holds() {
    let _serial = serial();
    let fds = open_fds();
    let pool = pool(2);
    // 1,000 items in automatic chunks of hundreds: each frame's descriptors take several
    // messages, both ways.
    let items: Vec<SharedBytes> = (0..1000)
        .map(|i| SharedBytes::copy_from_slice(&pattern(100 + i, i as u8)).unwrap())
        .collect();
    let back = pool.map(echo, items.clone()).unwrap();
    assert_eq!(back, items);
    // Chunks of 600 and 400: more than one message holds (253), both ways.
    let big_chunks = pool
        .map_with(echo, items.clone(), MapOptions::new().chunksize(600))
        .unwrap();
    assert_eq!(big_chunks, items);
    let sums = pool
        .map_with(checksum, items.clone(), MapOptions::new().chunksize(1))
        .unwrap();
    let expected: Vec<u64> = items
        .iter()
        .map(|b| b.iter().map(|&x| u64::from(x)).sum())
        .collect();
    assert_eq!(sums, expected);
    let streamed: Vec<SharedBytes> = pool
        .imap(echo, items.clone())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(streamed, items);
    drop((back, big_chunks, streamed, items));
    finish_with(pool, fds);
}

#[test]
fn a_worker_that_dies_holding_shared_bytes_fails_that_call_alone() {
    let _serial = serial();
    let pool = pool(2);
    // One chunk of 6 calls: the worker dies at the fourth, and the chunk is run again one
    // call at a time, each with the chunk's descriptors.
    let items: Vec<SharedBytes> = [1u8, 2, 3, 13, 5, 6]
        .iter()
        .map(|&b| SharedBytes::copy_from_slice(&[b, 0, 0]).unwrap())
        .collect();
    let outcomes: Vec<_> = pool
        .imap_with(first_or_abort, items, MapOptions::new().chunksize(6))
        .unwrap()
        .collect();
    for (i, outcome) in outcomes.iter().enumerate() {
        match i {
            3 => assert_eq!(
                outcome.as_ref().unwrap_err().kind(),
                ErrorKind::WorkerDied,
                "{outcome:?}"
            ),
            _ => assert_eq!(*outcome.as_ref().unwrap(), [1, 2, 3, 13, 5, 6][i]),
        }
    }
    let bytes = SharedBytes::copy_from_slice(&[42]).unwrap();
    assert_eq!(
        pool.apply(first_or_abort, (bytes,)).unwrap(),
        42,
        "the pool carries on"
    );
    finish(pool);
}

#[test]
fn a_chunk_of_hundreds_of_shared_bytes_split_after_a_death_sends_each_call_its_own() {
    let _serial = serial();
    let pool = pool(2);
    // One chunk of 600 calls, each with its own bytes; the worker dies at call 300. Run
    // again one by one, each call gets its own descriptor and bytes, not the chunk's 600.
    let items: Vec<SharedBytes> = (0..600)
        .map(|i| {
            let first = if i == 300 { 13 } else { 1 + (i % 7) as u8 };
            SharedBytes::copy_from_slice(&[first, i as u8]).unwrap()
        })
        .collect();
    let outcomes: Vec<_> = pool
        .imap_with(first_or_abort, items, MapOptions::new().chunksize(600))
        .unwrap()
        .collect();
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 300 {
            assert_eq!(outcome.as_ref().unwrap_err().kind(), ErrorKind::WorkerDied);
        } else {
            assert_eq!(*outcome.as_ref().unwrap(), 1 + (i % 7) as u8, "call {i}");
        }
    }
    finish(pool);
}

#[procpool::task]
fn first_then_panic(bytes: SharedBytes) -> SharedBytes {
    if bytes[0] == 13 {
        panic!("thirteen");
    }
    bytes
}

#[test]
fn a_task_that_panics_holding_shared_bytes_fails_alone_and_leaks_nothing() {
    let _serial = serial();
    let fds = open_fds();
    let pool = pool(1);
    let items: Vec<SharedBytes> = [1u8, 13, 3]
        .iter()
        .map(|&b| SharedBytes::copy_from_slice(&[b; 64]).unwrap())
        .collect();
    let outcomes: Vec<_> = pool
        .imap_with(first_then_panic, items, MapOptions::new().chunksize(3))
        .unwrap()
        .collect();
    assert_eq!(outcomes[0].as_ref().unwrap()[0], 1);
    let error = outcomes[1].as_ref().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Panicked, "{error}");
    assert_eq!(outcomes[2].as_ref().unwrap()[0], 3);
    drop(outcomes);
    finish_with(pool, fds);
}

#[procpool::task]
fn keep(_bytes: SharedBytes) {}

#[test]
fn shared_bytes_are_refused_as_an_initializer_argument() {
    let _serial = serial();
    let bytes = SharedBytes::copy_from_slice(b"setup").unwrap();
    let error = procpool::Pool::builder()
        .processes(1)
        .initializer(keep, (bytes,))
        .build()
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("encodes only as a task's arguments or result"),
        "{error}"
    );
    tests_integration::assert_no_children();
}

/// Sends shared bytes through the pool from its `drop`, which runs while a panic unwinds.
struct SendsWhenDropped<'a> {
    pool: &'a procpool::Pool,
    sent: &'a std::cell::Cell<Option<Vec<u8>>>,
}

impl Drop for SendsWhenDropped<'_> {
    fn drop(&mut self) {
        let items: Vec<SharedBytes> = [1u8, 2]
            .iter()
            .map(|&b| SharedBytes::copy_from_slice(&[b]).unwrap())
            .collect();
        let firsts = self.pool.map(first_or_abort, items).ok();
        self.sent.set(firsts);
    }
}

#[test]
fn shared_bytes_sent_while_a_panic_unwinds_arrive() {
    let _serial = serial();
    let pool = pool(1);
    let sent = std::cell::Cell::new(None);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _sender = SendsWhenDropped {
            pool: &pool,
            sent: &sent,
        };
        panic!("unwinding");
    }));
    assert!(unwound.is_err());
    assert_eq!(sent.take(), Some(vec![1, 2]));
    finish(pool);
}
