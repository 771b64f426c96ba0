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

/// Every result of `imap` as a stream, taken by polling it in the current task.
async fn collect_stream(mut imap: procpool::Imap<'_, u64>) -> Vec<u64> {
    use futures_core::Stream;
    let mut out = Vec::new();
    while let Some(result) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut imap).poll_next(cx)).await
    {
        out.push(result.expect("a square"));
    }
    out
}

#[test]
fn imap_is_a_stream_under_tokio_and_the_futures_executor() {
    let _serial = serial();
    let pool = pool(2);
    let squares: Vec<u64> = (1..=50).map(|x| x * x).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let ordered = runtime.block_on(collect_stream(pool.imap(square, 1..=50u64).unwrap()));
    assert_eq!(ordered, squares);
    let mut unordered = futures_executor::block_on(collect_stream(
        pool.imap_unordered(square, 1..=50u64).unwrap(),
    ));
    unordered.sort_unstable();
    assert_eq!(unordered, squares);
    finish(pool);
}

#[test]
fn imap_knows_its_length_when_the_input_does() {
    let _serial = serial();
    let pool = pool(2);
    let mut results = pool.imap(square, 1..=10u64).unwrap();
    assert_eq!(results.size_hint(), (10, Some(10)));
    results.next().unwrap().unwrap();
    assert_eq!(results.size_hint(), (9, Some(9)));
    assert_eq!(results.by_ref().count(), 9);
    assert_eq!(results.size_hint(), (0, Some(0)));
    let filtered = pool
        .imap(square, (1..=10u64).filter(|x| x % 2 == 0))
        .unwrap();
    let (low, high) = filtered.size_hint();
    assert!(low <= 5 && high.is_some_and(|h| h >= 5), "{low} {high:?}");
    assert_eq!(filtered.count(), 5);
    finish(pool);
}

#[test]
fn imap_has_a_progress_bar_that_knows_the_count() {
    let _serial = serial();
    let pool = pool(2);
    let mut results = pool.imap(square, 1..=50u64).unwrap().progress();
    assert_eq!(results.progress.length(), Some(50));
    let squares: Vec<u64> = results.by_ref().map(Result::unwrap).collect();
    assert_eq!(squares, (1..=50u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(results.progress.position(), 50);
    // An input of unknown length: a spinner that counts.
    let odd = pool
        .imap(square, (1..=50u64).filter(|x| x % 2 == 1))
        .unwrap()
        .progress();
    assert_eq!(odd.progress.length(), None);
    assert_eq!(odd.count(), 25);
    finish(pool);
}
