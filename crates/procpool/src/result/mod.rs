//! Handles to results: [`AsyncResult`], [`MapResult`], and the [`Imap`] iterator, over one
//! shared `Collector` that results are delivered to as they arrive, one batch per job.
//!
//! `batch` (one job's outcomes), `collector` (the sink), `assembly` (a map's results in
//! order), `handle` (`AsyncResult`, `MapResult`) and `imap`.

mod assembly;
mod batch;
mod collector;
mod handle;
mod imap;

// Each file reaches its siblings' items through `use super::*`, which these globs fill.
#[allow(unused_imports)]
use assembly::*;
#[allow(unused_imports)]
use batch::*;
#[allow(unused_imports)]
use collector::*;

pub(crate) use assembly::Assembly;
pub(crate) use batch::Batch;
pub(crate) use collector::{Callbacks, Collector, Link};
pub use handle::{AsyncResult, Awaited, Cancel, MapResult};
pub use imap::Imap;
pub(crate) use imap::{Fed, Feed};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::error::{Error, ErrorKind, WorkerInfo};
    use crate::wire::ResultsFrame;
    use serde::de::DeserializeOwned;
    use std::fmt;
    use std::future::Future;
    use std::os::fd::OwnedFd;
    use std::sync::Arc;

    /// A future over [`Collector::poll_filled`], to check that deliveries wake tasks.
    struct Filled(Arc<Collector>, usize);

    impl std::future::Future for Filled {
        type Output = ();
        fn poll(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            self.0.poll_filled(self.1, cx)
        }
    }

    /// Wakes the thread that polls, by unparking it, and counts its wakes.
    struct Unpark(std::thread::Thread, std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.unpark();
        }
    }

    #[test]
    fn a_delivery_wakes_the_task_that_awaits_it() {
        let collector = Collector::new();
        let unpark = Arc::new(Unpark(std::thread::current(), Default::default()));
        let waker = std::task::Waker::from(Arc::clone(&unpark));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut filled = std::pin::pin!(Filled(Arc::clone(&collector), 2));
        assert!(filled.as_mut().poll(&mut cx).is_pending());
        assert!(
            filled.as_mut().poll(&mut cx).is_pending(),
            "polled twice, registered once"
        );
        let error = Error::new(ErrorKind::Closed, "closed");
        let deliverer = {
            let collector = Arc::clone(&collector);
            std::thread::spawn(move || {
                collector.deliver(Batch::failed((0, 1, 1), error.clone()));
                collector.deliver(Batch::failed((1, 1, 1), error));
            })
        };
        // Park until a delivery wakes this task, then poll again, as an executor does.
        loop {
            match filled.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(()) => break,
                std::task::Poll::Pending => std::thread::park(),
            }
        }
        deliverer.join().unwrap();
        let wakes = unpark.1.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=2).contains(&wakes), "woken {wakes} times");
    }

    /// A batch of the calls `start, start + stride, …` that returned `values`.
    fn batch<T: serde::Serialize>(start: usize, stride: usize, values: &[T]) -> Batch {
        let mut frame = ResultsFrame::new(0, values.len() as u32);
        for value in values {
            frame.push(|buf, _| {
                codec::encode_into(buf, value).unwrap();
                Ok(())
            });
        }
        let body = frame.finish().0[crate::wire::HEADER..].to_vec();
        let worker = WorkerInfo { index: 0, pid: 1 };
        Batch::results((start, stride, values.len()), body, Vec::new(), "t", worker)
    }

    /// The batches that `batches` makes, assembled both ways: lent to [`Assembly::add`], as
    /// `MapResult::get` does, and given to [`Assembly::keep`], as `map` does. Both must
    /// agree.
    fn assemble_as<R>(len: usize, batches: impl Fn() -> Vec<Batch>) -> Result<Vec<R>, Error>
    where
        R: DeserializeOwned + PartialEq + fmt::Debug,
    {
        let mut lent = Assembly::<R>::new(len, "t");
        for batch in batches() {
            lent.add(&batch);
        }
        let mut given = Assembly::<R>::new(len, "t");
        for batch in batches() {
            given.keep(batch);
        }
        let (lent, given) = (lent.finish(), given.finish());
        match (&lent, &given) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("the two ways disagree: {lent:?} and {given:?}"),
        }
        given
    }

    fn assemble(len: usize, batches: impl Fn() -> Vec<Batch>) -> Result<Vec<u64>, Error> {
        assemble_as(len, batches)
    }

    #[test]
    fn interleaved_chunks_come_back_in_input_order() {
        let batches = || {
            vec![
                batch(2, 3, &[2u64, 5, 8]),
                batch(0, 3, &[0u64, 3, 6, 9]),
                batch(1, 3, &[1u64, 4, 7]),
            ]
        };
        assert_eq!(assemble(10, batches).unwrap(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn automatic_chunks_come_back_in_input_order_by_the_straight_path() {
        for workers in 1..=5 {
            for len in (0..3000).step_by(37).chain([2048, 4096, 40_000]) {
                let chunks = crate::pool::auto_chunks(len, workers);
                let batches = || {
                    // Results in the order the chunks go out, last first.
                    let mut batches: Vec<Batch> = chunks
                        .iter()
                        .rev()
                        .map(|&(start, stride, count)| {
                            let values: Vec<u64> =
                                (start..len).step_by(stride).map(|i| i as u64).collect();
                            assert_eq!(values.len(), count);
                            batch(start, stride, &values)
                        })
                        .collect();
                    let third = batches.len() / 3;
                    batches.rotate_left(third);
                    batches
                };
                let expected: Vec<u64> = (0..len as u64).collect();
                assert_eq!(
                    in_order::<u64>(&mut batches(), len).as_ref(),
                    Some(&expected)
                );
                assert_eq!(assemble(len, batches).unwrap(), expected);
            }
        }
    }

    #[test]
    fn strided_chunks_must_hold_each_item_once() {
        let owners = |chunks: &[(usize, usize, usize)], len| owners(chunks.iter().copied(), len);
        assert_eq!(
            owners(
                &[
                    (0, 4, 3),
                    (1, 4, 3),
                    (2, 8, 1),
                    (3, 8, 1),
                    (6, 8, 1),
                    (7, 8, 1)
                ],
                10
            ),
            Some(vec![0, 1, 2, 3, 0, 1, 4, 5])
        );
        // Residue 3 of 4 in no chunk; residue 2 of 4 in two.
        assert_eq!(owners(&[(0, 2, 5), (1, 4, 3)], 10), None);
        assert_eq!(owners(&[(0, 2, 5), (1, 2, 5), (2, 4, 2)], 10), None);
        // A count that does not fit, a start past the stride, a stride that does not divide.
        assert_eq!(owners(&[(0, 2, 4), (1, 2, 5)], 10), None);
        assert_eq!(owners(&[(0, 1, 1), (1, 2, 5)], 10), None);
        assert_eq!(owners(&[(0, 2, 5), (1, 3, 3)], 10), None);
        // Fewer items than the period: only the items there are need an owner.
        assert_eq!(owners(&[(0, 8, 1), (1, 8, 1)], 2), Some(vec![0, 1]));
    }

    #[test]
    fn chunks_of_a_given_size_come_back_in_input_order() {
        let batches = || {
            vec![
                batch(8, 1, &[8u64, 9]),
                batch(0, 1, &[0u64, 1, 2, 3]),
                batch(4, 1, &[4u64, 5, 6, 7]),
            ]
        };
        assert_eq!(assemble(10, batches).unwrap(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_chunk_split_into_single_calls_comes_back_in_input_order() {
        let batches = || {
            vec![
                batch(3, 1, &[3u64]),
                batch(0, 2, &[0u64, 2, 4]),
                batch(1, 1, &[1u64]),
            ]
        };
        assert_eq!(assemble(5, batches).unwrap(), (0..5).collect::<Vec<_>>());
    }

    #[test]
    fn the_failure_first_in_input_order_is_the_error() {
        let batches = || {
            vec![
                batch(0, 1, &[0u64, 1]),
                Batch::failed((5, 1, 1), Error::new(ErrorKind::Panicked, "later")),
                Batch::failed((2, 1, 3), Error::new(ErrorKind::Panicked, "first")),
                batch(6, 1, &[6u64]),
            ]
        };
        let error = assemble(7, batches).unwrap_err();
        assert!(error.to_string().contains("first"), "{error}");
    }

    #[test]
    fn a_failure_comes_before_the_cancels_it_caused() {
        let batches = || {
            vec![
                Batch::failed((0, 1, 2), Error::new(ErrorKind::Cancelled, "cancelled")),
                Batch::failed((4, 1, 1), Error::new(ErrorKind::Panicked, "the cause")),
                Batch::failed((5, 1, 1), Error::new(ErrorKind::Panicked, "later")),
                batch(2, 1, &[2u64, 3]),
            ]
        };
        let error = assemble(6, batches).unwrap_err();
        assert!(error.to_string().contains("the cause"), "{error}");
        // Cancelled calls alone: the first of them.
        let cancelled = || {
            vec![
                Batch::failed((1, 1, 1), Error::new(ErrorKind::Cancelled, "second")),
                Batch::failed((0, 1, 1), Error::new(ErrorKind::Cancelled, "first")),
            ]
        };
        let error = assemble(2, cancelled).unwrap_err();
        assert!(error.to_string().contains("first"), "{error}");
    }

    #[test]
    fn packed_batches_are_decoded_straight_into_input_order() {
        let interleaved = || vec![batch(1, 2, &[1u64, 3]), batch(0, 2, &[0u64, 2, 4])];
        assert_eq!(
            in_order::<u64>(&mut interleaved(), 5),
            Some(vec![0, 1, 2, 3, 4])
        );
        let tiled = || vec![batch(3, 1, &[3u64, 4]), batch(0, 1, &[0u64, 1, 2])];
        assert_eq!(in_order::<u64>(&mut tiled(), 5), Some(vec![0, 1, 2, 3, 4]));
        // A chunk split into single calls after its worker died: placed by index instead.
        let split = || {
            vec![
                batch(0, 2, &[0u64, 2, 4]),
                batch(1, 1, &[1u64]),
                batch(3, 1, &[3u64]),
            ]
        };
        assert_eq!(in_order::<u64>(&mut split(), 5), None);
        assert_eq!(assemble(5, split).unwrap(), (0..5).collect::<Vec<_>>());
        let mut assembly = Assembly::<u64>::new(5, "t");
        for batch in interleaved() {
            assembly.keep(batch);
        }
        assert_eq!((assembly.kept.len(), assembly.parts.len()), (2, 0));
    }

    #[test]
    fn large_results_of_one_size_are_decoded_as_they_come() {
        // Two results of 9 MiB: the first is kept, the second would take the kept bytes
        // past `KEEP_MAX` and is decoded at once.
        let big = |x: &str| x.repeat(9 << 20);
        let mut assembly = Assembly::<String>::new(2, "t");
        assembly.keep(batch(0, 1, &[big("a")]));
        assembly.keep(batch(1, 1, &[big("b")]));
        assert_eq!((assembly.kept.len(), assembly.parts.len()), (1, 1));
        assert!(assembly.finish().unwrap() == [big("a"), big("b")]);
    }

    #[test]
    fn results_that_carry_descriptors_are_never_kept() {
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let worker = WorkerInfo { index: 0, pid: 1 };
        let plain = batch(0, 1, &[7u64]);
        let Outcomes::Results { body, .. } = &plain.outcomes else {
            unreachable!("a batch of results");
        };
        let with_fd = Batch::results((0, 1, 1), body.clone(), vec![fd], "t", worker);
        assert!(plain.packed().is_some());
        assert!(with_fd.packed().is_none());
    }

    #[test]
    fn packed_and_sized_batches_come_back_in_input_order() {
        // Results of one size in the first two chunks, of several in the third.
        let batches = || {
            vec![
                batch(2, 3, &["c", "ff", "iii"]),
                batch(0, 3, &["a", "d", "g"]),
                batch(1, 3, &["b", "e", "h"]),
            ]
        };
        let out: Vec<String> = assemble_as(9, batches).unwrap();
        assert_eq!(out, ["a", "b", "c", "d", "e", "ff", "g", "h", "iii"]);
    }

    #[test]
    fn a_packed_result_that_does_not_decode_is_the_error() {
        // Every result is one byte; 2 is no `bool`.
        let batches = || vec![batch(1, 2, &[1u8, 0]), batch(0, 2, &[0u8, 2])];
        let error = assemble_as::<bool>(4, batches).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Codec);
        assert!(
            error.to_string().contains("cannot decode the result"),
            "{error}"
        );
    }
}
