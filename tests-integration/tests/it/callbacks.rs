//! Callbacks on results: run off the caller's thread, once each, in completion order, with
//! failures as well as values; a callback that panics is counted and the next one runs.

use std::sync::mpsc;
use std::time::Duration;

use procpool::ErrorKind;
use tests_integration::{finish, pool, serial};

use crate::tasks::square;

#[procpool::task]
fn fail_on_three(x: u64) -> u64 {
    assert!(x != 3, "three");
    x
}

const BOUND: Duration = Duration::from_secs(60);

#[test]
fn callbacks_run_once_each_off_the_callers_thread_in_completion_order() {
    let _serial = serial();
    // One worker: calls complete in the order they were submitted.
    let pool = pool(1);
    let (tx, rx) = mpsc::channel();
    let caller = std::thread::current().id();
    for x in 1..=5u64 {
        let tx = tx.clone();
        pool.apply_async(fail_on_three, (x,))
            .unwrap()
            .on_ready(move |result| {
                let off_caller = std::thread::current().id() != caller;
                tx.send((x, result.map_err(|e| e.kind()), off_caller))
                    .unwrap();
            });
    }
    let seen: Vec<_> = (0..5).map(|_| rx.recv_timeout(BOUND).unwrap()).collect();
    let expected: Vec<_> = (1..=5u64)
        .map(|x| {
            (
                x,
                if x == 3 {
                    Err(ErrorKind::Panicked)
                } else {
                    Ok(x)
                },
                true,
            )
        })
        .collect();
    assert_eq!(seen, expected);
    // A result already in runs its callback at once, on the callback thread too.
    let done = pool.apply_async(square, (6,)).unwrap();
    assert_eq!(done.get().unwrap(), 36);
    let tx2 = tx.clone();
    done.on_ready(move |result| tx2.send((6, result.map_err(|e| e.kind()), true)).unwrap());
    assert_eq!(rx.recv_timeout(BOUND).unwrap(), (6, Ok(36), true));
    // A map's callback gets every result, in input order.
    let map = pool.map_async(square, 1..=4u64).unwrap();
    let (map_tx, map_rx) = mpsc::channel();
    map.on_ready(move |result| map_tx.send(result.unwrap()).unwrap());
    assert_eq!(map_rx.recv_timeout(BOUND).unwrap(), [1, 4, 9, 16]);
    drop(tx);
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "each ran once"
    );
    assert_eq!(pool.stats().callback_panics, 0);
    finish(pool);
}

#[test]
fn a_callback_that_panics_is_counted_and_the_next_runs() {
    let _serial = serial();
    let pool = pool(1);
    pool.apply_async(square, (2,))
        .unwrap()
        .on_ready(|_| panic!("a callback that panics"));
    let (tx, rx) = mpsc::channel();
    pool.apply_async(square, (3,))
        .unwrap()
        .on_ready(move |result| tx.send(result.unwrap()).unwrap());
    assert_eq!(rx.recv_timeout(BOUND).unwrap(), 9);
    assert_eq!(pool.stats().callback_panics, 1);
    assert_eq!(pool.apply(square, (4,)).unwrap(), 16, "the pool carries on");
    finish(pool);
}
