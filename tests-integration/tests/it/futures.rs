//! Results awaited as futures, under tokio's two runtimes and the `futures` executor: a
//! delivery wakes the task that awaits it, which then takes the same result `get` would.

use std::future::{Future, IntoFuture};
use std::task::Poll;

use procpool::ErrorKind;
use tests_integration::{Rendezvous, finish, pool, serial};

use crate::tasks::{hold, square};

#[procpool::task]
fn fail_on(x: u64) -> u64 {
    assert!(x != 3, "three");
    x
}

/// Awaits an `apply_async` that is held in its worker until the test releases it, so the
/// future is surely pending first, then a map, then a failing map.
async fn await_results(pool: &procpool::Pool) {
    let rendezvous = Rendezvous::new();
    let held = pool
        .apply_async(hold, (rendezvous.path(),))
        .expect("submitted");
    let arrival = rendezvous.arrive();
    let map = pool.map_async(square, 1..=10u64).expect("submitted");
    let mut held = std::pin::pin!(held.into_future());
    let pending = std::future::poll_fn(|cx| Poll::Ready(held.as_mut().poll(cx).is_pending()));
    assert!(pending.await, "the held call cannot have ended yet");
    arrival.release(7);
    assert_eq!(held.await.expect("the held call ends"), 7);
    let squares: Vec<u64> = (1..=10).map(|x| x * x).collect();
    assert_eq!(map.await.expect("the map ends"), squares);
    let failed = pool.map_async(fail_on, 1..=5u64).expect("submitted");
    let error = failed.await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Panicked);
    let empty = pool
        .map_async(square, Vec::<u64>::new())
        .expect("submitted");
    assert!(empty.await.expect("nothing to wait for").is_empty());
}

#[test]
fn results_are_awaited_on_a_current_thread_tokio_runtime() {
    let _serial = serial();
    let pool = pool(2);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(await_results(&pool));
    finish(pool);
}

#[test]
fn results_are_awaited_on_a_multi_thread_tokio_runtime() {
    let _serial = serial();
    let pool = pool(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime");
    runtime.block_on(await_results(&pool));
    finish(pool);
}

#[test]
fn results_are_awaited_with_the_futures_executor() {
    let _serial = serial();
    let pool = pool(2);
    futures_executor::block_on(await_results(&pool));
    finish(pool);
}
