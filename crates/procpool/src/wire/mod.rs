//! The wire between a parent and its workers: length-prefixed frames over one socket per
//! worker, a handshake, and the serde codec. See `README.md` beside this file for the layout.
//!
//! Nothing here knows about processes; decoding never panics and never allocates more than
//! the frame limit, whatever the input.
//!
//! One concern a file: `frame` (length prefix, limit, writer), `items` and `read_items` (the
//! packed and sized layouts), `run` and `results` (the job frames), `message` (control
//! frames and decoding), `reader` (frames off a socket).

mod frame;
#[cfg(any(test, feature = "fuzzing"))]
mod fuzz;
mod items;
mod message;
mod read_items;
mod reader;
mod results;
mod run;

// Each file reaches its siblings' items through `use super::*`, which these globs fill.
#[allow(unused_imports)]
use frame::*;
#[cfg(feature = "fuzzing")]
pub use fuzz::fuzz_wire;
#[cfg(any(test, feature = "fuzzing"))]
#[allow(unused_imports)]
use fuzz::*;
#[allow(unused_imports)]
use items::*;
#[allow(unused_imports)]
use message::*;
#[allow(unused_imports)]
use read_items::*;
#[allow(unused_imports)]
use reader::*;
#[allow(unused_imports)]
use results::*;
#[allow(unused_imports)]
use run::*;

pub(crate) use frame::{FrameWriter, WireError};
pub(crate) use items::Oversized;
pub(crate) use message::{
    Descriptors, FromWorker, Results, ToWorker, bye_frame, descriptors_frame, init_failed_frame,
    ready_frame, setup_frame, shutdown_frame,
};
pub(crate) use read_items::{PackedItems, ResultItems, ResultsAt, RunItems};
pub(crate) use reader::{FrameReader, read_frame};
pub(crate) use results::ResultsFrame;
pub(crate) use run::RunFrame;
#[cfg(feature = "redis")]
pub(crate) use run::adopt;

/// "PPL" and a 1: the first four bytes of both sides' handshake frames.
pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"PPL1");
/// Bumped on every change of the frame layout.
pub(crate) const VERSION: u16 = 8;
/// The bytes before a frame's body: its length, then a check of the length.
pub(crate) const HEADER: usize = 8;

/// The check that follows a frame's length: a function of the length that bytes written
/// to the socket by anything but the wire (a task that writes text on its worker's
/// descriptor) match by chance once in 2^32, so that they are refused at once instead of
/// being waited on as a frame that never completes.
#[inline]
pub(crate) fn header_check(len: u32) -> u32 {
    (len ^ MAGIC).wrapping_mul(0x9E37_79B9).rotate_left(15) ^ 0x5050_4C32
}

/// The header of a frame whose body takes `len` bytes.
#[inline]
pub(crate) fn header(len: u32) -> [u8; HEADER] {
    let mut bytes = [0; HEADER];
    bytes[..4].copy_from_slice(&len.to_le_bytes());
    bytes[4..].copy_from_slice(&header_check(len).to_le_bytes());
    bytes
}

/// The body length a header announces, if it is a frame's header and the body is within
/// the limit.
#[inline]
pub(crate) fn parse_header(bytes: &[u8]) -> Result<usize, WireError> {
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    let check = u32::from_le_bytes(bytes[4..HEADER].try_into().expect("4 bytes"));
    if check != header_check(len) {
        return Err(WireError::NotAFrame(
            bytes[..HEADER].try_into().expect("8 bytes"),
        ));
    }
    let len = len as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge { len });
    }
    Ok(len)
}
/// The largest frame body either side accepts.
pub(crate) const MAX_FRAME: usize = 1 << 30;
/// The most descriptors (of `SharedBytes`) one RUN or RESULTS frame may carry.
pub(crate) const MAX_FDS: usize = 1 << 16;

const TAG_SETUP: u8 = 1;
const TAG_RUN: u8 = 2;
const TAG_SHUTDOWN: u8 = 3;
const TAG_OFFER_FDS: u8 = 4;
const TAG_TAKING_FDS: u8 = 5;
const TAG_READY: u8 = 10;
const TAG_INIT_FAILED: u8 = 11;
const TAG_RESULTS: u8 = 12;
const TAG_BYE: u8 = 13;
const TAG_WORKER_OFFER_FDS: u8 = 14;
const TAG_WORKER_TAKING_FDS: u8 = 15;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TaskFailure;
    use std::io;

    fn body(frame: &[u8]) -> &[u8] {
        let len = parse_header(&frame[..HEADER]).unwrap();
        assert_eq!(len, frame.len() - HEADER);
        &frame[HEADER..]
    }

    /// The job, task name, arguments and layout byte of a RUN frame.
    fn run_items(frame: &[u8]) -> (u64, &str, Vec<&[u8]>, u8) {
        let ToWorker::Run {
            job, name, items, ..
        } = ToWorker::decode(body(frame)).unwrap()
        else {
            panic!("not a RUN frame");
        };
        let layout = frame[HEADER + 1 + 8 + 4 + name.len() + 4 + 4 + 4];
        (job, name, items.collect(), layout)
    }

    /// The outcomes and layout byte of a RESULTS frame, which must decode as `results`.
    fn result_items(frame: &[u8], results: Results) -> (Vec<Result<&[u8], TaskFailure>>, u8) {
        let body = body(frame);
        assert_eq!(
            FromWorker::decode(body).unwrap(),
            FromWorker::Results(results)
        );
        (ResultItems::new(body).collect(), body[RESULTS_LAYOUT_AT])
    }

    /// Where the layout byte of a RESULTS body is: after the tag, the job, the count and the
    /// count of descriptors.
    const RESULTS_LAYOUT_AT: usize = 1 + 8 + 4 + 4;

    fn push_run(run: &mut RunFrame, item: &[u8]) {
        run.push(|buf| -> Result<(), ()> {
            buf.extend_from_slice(item);
            Ok(())
        })
        .unwrap();
    }

    fn ok(job: u64, count: usize) -> Results {
        Results {
            job,
            count,
            fds: 0,
            panicked: 0,
            failed: 0,
        }
    }

    #[test]
    fn run_frame_round_trips() {
        let mut run = RunFrame::new(7, "demo::add");
        push_run(&mut run, b"ab");
        assert!(
            run.push(|buf| {
                buf.push(1);
                Err(())
            })
            .is_err()
        );
        push_run(&mut run, b"");
        assert_eq!(run.len(), 2);
        let frame = run.finish().unwrap().0;
        assert_eq!(
            run_items(&frame),
            (7, "demo::add", vec![b"ab".as_slice(), b""], LAYOUT_SIZED)
        );
    }

    #[test]
    fn items_of_one_size_are_packed_without_lengths() {
        let mut run = RunFrame::new(1, "t");
        for item in [b"abc", b"def", b"ghi"] {
            push_run(&mut run, item);
        }
        let frame = run.finish().unwrap().0;
        let (_, _, items, layout) = run_items(&frame);
        assert_eq!(items, [b"abc", b"def", b"ghi"]);
        assert_eq!(layout, LAYOUT_PACKED);
        // The body: tag, job, name, count, descriptors, the first descriptor's index,
        // layout, size, then the items and nothing else.
        assert_eq!(
            frame.len(),
            HEADER + 1 + 8 + (4 + 1) + 4 + 4 + 4 + 1 + 4 + 9
        );

        let mut results = ResultsFrame::new(2, 2);
        for item in [b"xy", b"zw"] {
            results.push(|buf, _| {
                buf.extend_from_slice(item);
                Ok(())
            });
        }
        let frame = results.finish().0;
        let (items, layout) = result_items(&frame, ok(2, 2));
        assert_eq!(items, [Ok(b"xy".as_slice()), Ok(b"zw".as_slice())]);
        assert_eq!(layout, LAYOUT_PACKED);
    }

    #[test]
    fn items_of_no_bytes_are_packed_and_counted() {
        let mut run = RunFrame::new(1, "t");
        for _ in 0..3 {
            push_run(&mut run, b"");
        }
        let frame = run.finish().unwrap().0;
        let (_, _, items, layout) = run_items(&frame);
        assert_eq!(items, [b"", b"", b""]);
        assert_eq!(layout, LAYOUT_PACKED);
        let frame = ResultsFrame::new(4, 0).finish().0;
        let (items, _) = result_items(&frame, ok(4, 0));
        assert!(items.is_empty());
    }

    #[test]
    fn an_item_of_another_size_unpacks_the_items_before_it() {
        let mut run = RunFrame::new(1, "t");
        for item in [b"ab".as_slice(), b"cd", b"efg", b"hi"] {
            push_run(&mut run, item);
        }
        let frame = run.finish().unwrap().0;
        let (_, _, items, layout) = run_items(&frame);
        assert_eq!(items, [b"ab".as_slice(), b"cd", b"efg", b"hi"]);
        assert_eq!(layout, LAYOUT_SIZED);

        let mut results = ResultsFrame::new(5, 3);
        for item in [b"".as_slice(), b"", b"x"] {
            results.push(|buf, _| {
                buf.extend_from_slice(item);
                Ok(())
            });
        }
        let frame = results.finish().0;
        let (items, layout) = result_items(&frame, ok(5, 3));
        assert_eq!(items, [Ok(b"".as_slice()), Ok(b""), Ok(b"x")]);
        assert_eq!(layout, LAYOUT_SIZED);
    }

    #[test]
    fn results_frame_round_trips() {
        let mut results = ResultsFrame::new(3, 3);
        results.push(|buf, _| {
            buf.extend_from_slice(b"xyz");
            Ok(())
        });
        let failure = TaskFailure::Panic {
            message: "boom".into(),
            location: Some("a.rs:1:1".into()),
            backtrace: Some("   0: main\n".into()),
        };
        results.push(|buf, _| {
            buf.push(9);
            Err(failure.clone())
        });
        // After a failure, results of the first one's size still read back.
        results.push(|buf, _| {
            buf.extend_from_slice(b"uvw");
            Ok(())
        });
        let results_of = Results {
            job: 3,
            count: 3,
            fds: 0,
            panicked: 1,
            failed: 0,
        };
        let frame = results.finish().0;
        let (items, layout) = result_items(&frame, results_of);
        assert_eq!(
            items,
            [Ok(b"xyz".as_slice()), Err(failure), Ok(b"uvw".as_slice())]
        );
        assert_eq!(layout, LAYOUT_SIZED);
    }

    #[test]
    fn a_result_over_the_frame_limit_fails_alone() {
        let limit = 300;
        let mut results = ResultsFrame::with_limit(1, 3, limit);
        for len in [2, limit, 2] {
            results.push(|buf, _| {
                buf.resize(buf.len() + len, 0);
                Ok(())
            });
        }
        let frame = results.finish().0;
        let results_of = Results {
            job: 1,
            count: 3,
            fds: 0,
            panicked: 0,
            failed: 1,
        };
        let (items, _) = result_items(&frame, results_of);
        assert_eq!(items[0], Ok([0, 0].as_slice()));
        assert!(
            matches!(&items[1], Err(TaskFailure::ResultEncode(m)) if m.contains("over the frame limit")),
            "{:?}",
            items[1]
        );
        assert_eq!(items[2], Ok([0, 0].as_slice()));
    }

    #[test]
    fn packed_results_are_held_to_the_limit_they_would_have_sized() {
        // An item of another size unpacks the frame, within the limit.
        let mut results = ResultsFrame::with_limit(1, 15, 600);
        for _ in 0..14 {
            results.push(|_, _| Ok(()));
        }
        results.push(|buf, _| {
            buf.extend_from_slice(b"ab");
            Ok(())
        });
        let frame = results.finish().0;
        assert!(body(&frame).len() <= 600);
        assert_eq!(ResultItems::new(body(&frame)).count(), 15);

        // Ten results of 40 bytes take 18 + 4 + 400 = 422 bytes packed, 18 + 10 * 45 = 468
        // sized. Under a limit of 450, result `k` (from 1) is kept while the frame sized,
        // with room for an `OVER_LIMIT` record (41 bytes) for each call after it, stays
        // within the limit: 18 + 45k + 41(10 - k) <= 450 holds up to k = 5. The others fail,
        // as they would have in the sized layout.
        let limit = 450;
        let mut results = ResultsFrame::with_limit(1, 10, limit);
        for _ in 0..10 {
            results.push(|buf, _| {
                buf.extend_from_slice(&[7; 40]);
                Ok(())
            });
        }
        let frame = results.finish().0;
        assert!(body(&frame).len() <= limit, "{} bytes", body(&frame).len());
        let items: Vec<_> = ResultItems::new(body(&frame)).collect();
        assert_eq!(items.len(), 10);
        assert!(
            items[..5]
                .iter()
                .all(|item| item == &Ok([7; 40].as_slice()))
        );
        for item in &items[5..] {
            assert!(
                matches!(item, Err(TaskFailure::ResultEncode(m)) if m.contains("over the frame limit")),
                "{item:?}"
            );
        }
    }

    #[test]
    fn calls_that_fail_once_the_frame_is_full_still_fit() {
        // Results fill the frame as far as they may; then every call fails with a long
        // message. Each failure takes the room kept for it, so the frame never goes over.
        let limit = 2000;
        let mut results = ResultsFrame::with_limit(1, 30, limit);
        for _ in 0..5 {
            results.push(|buf, _| {
                buf.extend_from_slice(&[1; 150]);
                Ok(())
            });
        }
        for _ in 0..25 {
            results.push_panicked(TaskFailure::Panic {
                message: "x".repeat(500),
                location: None,
                backtrace: None,
            });
        }
        let frame = results.finish().0;
        assert!(body(&frame).len() <= limit, "{} bytes", body(&frame).len());
        let items: Vec<_> = ResultItems::new(body(&frame)).collect();
        assert_eq!(items.len(), 30);
        assert!(items[25..].iter().all(Result::is_err));
    }

    #[test]
    fn a_failure_too_large_for_the_frame_is_cut_short() {
        let mut results = ResultsFrame::with_limit(1, 2, 200);
        results.push(|_, _| Err(TaskFailure::ArgsDecode("x".repeat(500))));
        results.push(|_, _| Ok(()));
        let frame = results.finish().0;
        let body = body(&frame);
        assert!(body.len() <= 200, "{} bytes", body.len());
        let items: Vec<_> = ResultItems::new(body).collect();
        assert!(
            matches!(&items[0], Err(TaskFailure::ResultEncode(m)) if m.contains("over the frame limit")),
            "{:?}",
            items[0]
        );
        assert_eq!(items[1], Ok(b"".as_slice()));
    }

    #[test]
    fn a_packed_run_frame_is_held_to_the_limit_it_would_have_sized() {
        // Empty arguments take no bytes packed, 4 each sized: the limit counts those.
        let mut run = RunFrame::with_limit(1, "t", 100);
        for _ in 0..30 {
            push_run(&mut run, b"");
        }
        assert!(run.finish().is_err());
        let mut run = RunFrame::with_limit(1, "t", 100);
        for _ in 0..10 {
            push_run(&mut run, b"");
        }
        let frame = run.finish().unwrap().0;
        assert_eq!(run_items(&frame).2.len(), 10);
    }

    #[test]
    fn reading_results_goes_on_from_a_position() {
        for packed in [true, false] {
            let mut results = ResultsFrame::new(1, 3);
            for item in [b"a".as_slice(), b"b", if packed { b"c" } else { b"cc" }] {
                results.push(|buf, _| {
                    buf.extend_from_slice(item);
                    Ok(())
                });
            }
            let frame = results.finish().0;
            let body = body(&frame);
            let mut items = ResultItems::new(body);
            assert_eq!(items.next(), Some(Ok(b"a".as_slice())));
            let mut items = ResultItems::at(body, items.position());
            assert_eq!(items.len(), 2);
            assert_eq!(items.next(), Some(Ok(b"b".as_slice())));
            let mut items = ResultItems::at(body, items.position());
            let last: &[u8] = if packed { b"c" } else { b"cc" };
            assert_eq!(items.next(), Some(Ok(last)));
            assert_eq!(items.next(), None);
        }
    }

    #[test]
    fn packed_items_of_no_bytes_cannot_come_in_billions() {
        let mut body = vec![TAG_RESULTS];
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(LAYOUT_PACKED);
        body.extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            FromWorker::decode(&body),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn packed_items_must_fill_the_body_exactly() {
        let mut run = RunFrame::new(1, "t");
        push_run(&mut run, b"ab");
        push_run(&mut run, b"cd");
        let frame = run.finish().unwrap().0;
        let short = &frame[HEADER..frame.len() - 1];
        assert_eq!(ToWorker::decode(short), Err(WireError::Truncated));
        let mut long = frame[HEADER..].to_vec();
        long.push(0);
        assert_eq!(ToWorker::decode(&long), Err(WireError::Trailing(1)));
        let mut bad = frame[HEADER..].to_vec();
        bad[1 + 8 + 5 + 4 + 4 + 4] = 7;
        assert_eq!(ToWorker::decode(&bad), Err(WireError::UnknownLayout(7)));
    }

    #[test]
    fn handshake_checks_magic_and_version() {
        let frame = ready_frame(42, 9);
        assert_eq!(
            FromWorker::decode(body(&frame)).unwrap(),
            FromWorker::Ready {
                pid: 42,
                fingerprint: 9
            }
        );
        let mut bad = frame.clone();
        bad[HEADER + 5] = 9; // the version's low byte
        let err = FromWorker::decode(body(&bad)).unwrap_err();
        assert_eq!(err.to_string(), "expected protocol version 8, found 9");
        let watch = std::time::Duration::from_micros(200);
        let setup = setup_frame(
            1,
            watch,
            true,
            Some(64 << 20),
            Some(3),
            Some(("init", b"args")),
        );
        assert_eq!(
            ToWorker::decode(body(&setup)).unwrap(),
            ToWorker::Setup {
                index: 1,
                watch,
                backtraces: true,
                memory_limit: Some(64 << 20),
                jobs: Some(3),
                initializer: Some(("init", b"args".as_slice()))
            }
        );
    }

    #[test]
    fn frame_reader_splits_small_and_large_frames() {
        let big = vec![7u8; LARGE * 3];
        let mut stream = Vec::new();
        for payload in [&b"one"[..], &big, b"two"] {
            stream.extend_from_slice(&header(payload.len() as u32));
            stream.extend_from_slice(payload);
        }
        // Feed it in awkward pieces, with a would-block between pieces.
        let mut reader = FrameReader::default();
        let mut frames = Vec::new();
        for piece in stream.chunks(1000) {
            let more = reader
                .read_from(feed(piece), |frame| frames.push(frame))
                .unwrap();
            assert!(more);
        }
        assert_eq!(frames, vec![b"one".to_vec(), big, b"two".to_vec()]);
        assert!(!reader.read_from(|_| Ok(0), |_| unreachable!()).unwrap());
    }

    #[test]
    fn descriptors_frames_name_their_message_in_each_direction() {
        for message in [Descriptors::Offer(7), Descriptors::Taking(u64::MAX)] {
            assert_eq!(
                ToWorker::decode(body(&descriptors_frame(message, true))).unwrap(),
                ToWorker::Descriptors(message)
            );
            assert_eq!(
                FromWorker::decode(body(&descriptors_frame(message, false))).unwrap(),
                FromWorker::Descriptors(message)
            );
            // A frame of one direction is not one of the other.
            assert!(FromWorker::decode(body(&descriptors_frame(message, true))).is_err());
            assert!(ToWorker::decode(body(&descriptors_frame(message, false))).is_err());
        }
    }

    #[test]
    fn bye_frames_carry_the_peak_or_nothing() {
        assert_eq!(
            FromWorker::decode(body(&bye_frame(5 << 20))).unwrap(),
            FromWorker::Bye {
                peak: Some(5 << 20)
            }
        );
        assert_eq!(
            FromWorker::decode(body(&bye_frame(0))).unwrap(),
            FromWorker::Bye { peak: None }
        );
    }

    #[test]
    fn frame_reader_grows_its_buffer_only_while_reads_fill_it() {
        // Small frames, each read on its own: one page of buffer.
        let mut reader = FrameReader::default();
        let mut frames = Vec::new();
        for payload in [&b"ready"[..], b"result"] {
            let mut bytes = header(payload.len() as u32).to_vec();
            bytes.extend_from_slice(payload);
            reader.read_from(feed(&bytes), |f| frames.push(f)).unwrap();
        }
        assert_eq!(frames, vec![b"ready".to_vec(), b"result".to_vec()]);
        assert_eq!(reader.buf.len(), reader::FIRST_BUF);
        // A burst of medium frames, more than the buffer holds: it grows to its limit, and
        // every frame comes out whole.
        let medium = vec![9u8; LARGE - 10];
        let mut stream = Vec::new();
        for _ in 0..4 {
            stream.extend_from_slice(&header(medium.len() as u32));
            stream.extend_from_slice(&medium);
        }
        frames.clear();
        reader.read_from(feed(&stream), |f| frames.push(f)).unwrap();
        assert_eq!(frames.len(), 4);
        assert!(frames.iter().all(|f| *f == medium));
        assert_eq!(reader.buf.len(), reader::MAX_BUF);
    }

    #[test]
    fn oversized_frames_are_refused_before_allocating() {
        let header = header(MAX_FRAME as u32 + 1);
        let mut reader = FrameReader::default();
        let err = reader
            .read_from(
                |out| {
                    out[..HEADER].copy_from_slice(&header);
                    Ok(HEADER)
                },
                |_| (),
            )
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut body = Vec::new();
        assert!(read_frame(&mut &header[..], &mut body, read_spare_copying).is_err());
        assert_eq!(body.capacity(), 0);
    }

    #[test]
    fn a_chunk_over_the_limit_stops_encoding_at_the_limit() {
        for varying in [false, true] {
            let mut run = RunFrame::with_limit(1, "t", 1000);
            let mut encoded = 0usize;
            run.extend(0..1_000_000u64, |x, buf| -> Result<(), ()> {
                encoded += 1;
                // Packed while every item takes 8 bytes; sized once they vary.
                let bytes = x.to_le_bytes();
                let len = if varying { 1 + (*x as usize % 8) } else { 8 };
                buf.extend_from_slice(&bytes[..len]);
                Ok(())
            })
            .unwrap();
            // Each item takes at least 12 bytes of the sized limit (5 when they vary): that
            // many fit, and at most one more is encoded before the frame is known to be over.
            let least = if varying { 5 } else { 12 };
            assert!(encoded <= 1000 / least + 2, "{encoded} items encoded");
            assert!(run.over_limit());
            assert!(matches!(run.finish(), Err(Oversized::Bytes(len)) if len > 1000));
        }
    }

    #[test]
    fn text_written_on_the_socket_is_not_taken_for_a_frame() {
        for text in ["Hi, world\n", "{\"a\":1}", "\0\0\0\0\0\0\0\0"] {
            let mut stream = text.as_bytes().to_vec();
            stream.extend_from_slice(&header(1));
            stream.push(7);
            let mut reader = FrameReader::default();
            let error = reader
                .read_from(feed(&stream), |_| unreachable!("no frame is whole"))
                .unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{text:?}");
            assert!(error.to_string().contains("not a frame"), "{error}");
        }
    }

    #[test]
    fn a_large_claimed_length_allocates_with_the_bytes_that_arrive() {
        let mut stream = header(MAX_FRAME as u32).to_vec();
        stream.extend_from_slice(&[5; 1000]);
        let mut body = Vec::new();
        let err = read_frame(&mut stream.as_slice(), &mut body, read_spare_copying).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(body.capacity() <= 2 * LARGE, "{}", body.capacity());

        let mut reader = FrameReader::default();
        let more = reader
            .read_from(feed(&stream), |_| unreachable!("the frame is not complete"))
            .unwrap();
        assert!(more);
        let large = reader.large.as_ref().expect("a large frame is being read");
        assert_eq!((large.body.len(), large.len), (1000, MAX_FRAME));
        assert!(large.body.capacity() <= 2 * LARGE);
    }

    #[test]
    fn a_large_frame_arrives_whole_in_pieces_of_any_size() {
        let body: Vec<u8> = (0..3 * LARGE + 100).map(|i| (i % 251) as u8).collect();
        let mut stream = header(body.len() as u32).to_vec();
        stream.extend_from_slice(&body);
        stream.extend_from_slice(&header(1));
        stream.push(7);
        for piece in [1000, LARGE - 1, LARGE + 1, 150_000, stream.len()] {
            let mut reader = FrameReader::default();
            let mut frames = Vec::new();
            for chunk in stream.chunks(piece) {
                let more = reader.read_from(feed(chunk), |frame| frames.push(frame));
                assert!(more.unwrap());
            }
            assert_eq!(frames, vec![body.clone(), vec![7]], "pieces of {piece}");
        }
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// Items mostly of one size, some of another, some `SharedBytes` (which encode to
        /// the common size, 12 bytes, but only with the frame's descriptor list in reach), a
        /// few that fail after writing part of themselves: `extend` writes the frame that
        /// pushing them one by one writes, with the same descriptors for each item, encodes
        /// each item as many times, and stops at the same failure.
        #[test]
        fn extend_writes_what_pushing_one_by_one_writes(
            kinds in proptest::collection::vec(
                proptest::prop_oneof![
                    6 => proptest::strategy::Just((0u8, 12usize)),
                    1 => (0usize..14).prop_map(|len| (0u8, len)),
                    1 => proptest::strategy::Just((1u8, 0usize)),
                    1 => (0usize..14).prop_map(|len| (2u8, len)),
                ],
                0..64,
            ),
        ) {
            // 0: plain bytes; 1: a `SharedBytes`; 2: a failure after some bytes.
            let shared = crate::SharedBytes::copy_from_slice(b"shared").unwrap();
            let items: Vec<(usize, u8, usize)> =
                kinds.into_iter().enumerate().map(|(i, (kind, len))| (i, kind, len)).collect();
            let runs = std::cell::Cell::new(0);
            let encode = |&(i, kind, len): &(usize, u8, usize), buf: &mut Vec<u8>| {
                runs.set(runs.get() + 1);
                match kind {
                    0 => {
                        buf.extend(std::iter::repeat_n(i as u8, len));
                        Ok(())
                    }
                    1 => crate::codec::encode_into(buf, &shared).map_err(|_| i),
                    _ => {
                        buf.extend(std::iter::repeat_n(i as u8, len));
                        Err(i)
                    }
                }
            };
            let mut pushed = RunFrame::new(1, "t");
            let pushing = items.iter().try_for_each(|item| pushed.push(|buf| encode(item, buf)));
            let pushed_runs = runs.replace(0);
            let mut extended = RunFrame::new(1, "t");
            let extending = extended.extend(items.iter(), |item, buf| encode(item, buf));
            proptest::prop_assert_eq!(pushing, extending);
            proptest::prop_assert_eq!(pushed_runs, runs.get());
            let count = pushed.len();
            proptest::prop_assert_eq!(count, extended.len());
            let (Ok((pushed, pushed_fds)), Ok((extended, extended_fds))) =
                (pushed.finish(), extended.finish())
            else {
                panic!("a frame of a few bytes is within the limits");
            };
            proptest::prop_assert_eq!(pushed, extended);
            proptest::prop_assert_eq!(pushed_fds.as_slice().len(), extended_fds.as_slice().len());
            if !pushed_fds.as_slice().is_empty() {
                for i in 0..count {
                    let (a, b) = (pushed_fds.item(i), extended_fds.item(i));
                    proptest::prop_assert_eq!((a.base(), a.as_slice().len()), (b.base(), b.as_slice().len()));
                }
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = ToWorker::decode(&bytes);
            let _ = FromWorker::decode(&bytes);
            let mut reader = FrameReader::default();
            let mut fed = false;
            let _ = reader.read_from(|out| {
                if fed { return Ok(0); }
                fed = true;
                let n = bytes.len().min(out.len());
                out[..n].copy_from_slice(&bytes[..n]);
                Ok(n)
            }, |_| ());
        }

        #[test]
        fn handshakes_round_trip(
            pid in proptest::prelude::any::<u32>(),
            fingerprint in proptest::prelude::any::<u64>(),
            index in proptest::prelude::any::<u32>(),
            init in proptest::option::of((".{0,16}", proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32))),
        ) {
            let ready = ready_frame(pid, fingerprint);
            proptest::prop_assert_eq!(
                FromWorker::decode(&ready[HEADER..]).unwrap(),
                FromWorker::Ready { pid, fingerprint }
            );
            let limit = (index % 5 != 0).then_some(u64::from(index) << 20);
            let watch = std::time::Duration::from_micros(u64::from(index % 7) * 100);
            let jobs = (index % 4 != 0).then_some(u64::from(index % 9));
            let setup = setup_frame(index, watch, index % 3 == 0, limit, jobs, init.as_ref().map(|(n, a)| (n.as_str(), a.as_slice())));
            proptest::prop_assert_eq!(
                ToWorker::decode(&setup[HEADER..]).unwrap(),
                ToWorker::Setup {
                    index,
                    watch,
                    backtraces: index % 3 == 0,
                    memory_limit: limit.filter(|&l| l > 0),
                    jobs: jobs.filter(|&j| j > 0),
                    initializer: init.as_ref().map(|(n, a)| (n.as_str(), a.as_slice())),
                }
            );
        }

        /// Bodies that pass the tag and the magic and version checks, then go anywhere.
        #[test]
        fn handshake_bodies_with_any_tail_never_panic(
            tag in proptest::sample::select(vec![TAG_SETUP, TAG_READY, TAG_INIT_FAILED, TAG_RESULTS, TAG_RUN]),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
        ) {
            let mut body = vec![tag];
            body.extend_from_slice(&MAGIC.to_le_bytes());
            body.extend_from_slice(&VERSION.to_le_bytes());
            body.extend_from_slice(&tail);
            let _ = ToWorker::decode(&body);
            let _ = FromWorker::decode(&body);
        }

        /// A handshake frame with bytes overwritten: it decodes to something or is refused,
        /// and a changed magic or version is always refused.
        #[test]
        fn corrupted_handshakes_are_refused_never_panic(
            setup in proptest::prelude::any::<bool>(),
            edits in proptest::collection::vec((0usize..64, proptest::prelude::any::<u8>()), 1..4),
        ) {
            let frame = if setup { setup_frame(3, std::time::Duration::ZERO, false, None, None, Some(("init", b"args"))) } else { ready_frame(42, 9) };
            let mut body = frame[HEADER..].to_vec();
            for (at, byte) in edits {
                let at = at % body.len();
                body[at] = byte;
            }
            let handshake_intact = body[1..7] == frame[HEADER + 1..HEADER + 7];
            let decoded = if setup {
                ToWorker::decode(&body).map(|_| ())
            } else {
                FromWorker::decode(&body).map(|_| ())
            };
            if !handshake_intact && body[0] == frame[HEADER] {
                proptest::prop_assert!(decoded.is_err());
            }
        }

        /// Lengths over the limit are refused before anything is allocated for them.
        #[test]
        fn oversized_lengths_are_refused(len in (MAX_FRAME as u32 + 1)..=u32::MAX) {
            let header = header(len);
            let mut body = Vec::new();
            proptest::prop_assert!(read_frame(&mut &header[..], &mut body, read_spare_copying).is_err());
            proptest::prop_assert_eq!(body.capacity(), 0);
            let mut reader = FrameReader::default();
            let mut fed = false;
            let result = reader.read_from(|out| {
                if fed { return Err(io::ErrorKind::WouldBlock.into()); }
                fed = true;
                out[..HEADER].copy_from_slice(&header);
                Ok(HEADER)
            }, |_| ());
            proptest::prop_assert!(result.is_err());
            proptest::prop_assert!(reader.large.is_none());
        }

        /// Bytes written on the socket by anything but the wire, ahead of a real frame, are
        /// refused as soon as a header's worth has come, by both readers.
        #[test]
        fn stray_bytes_before_a_frame_are_refused(
            stray in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..64),
        ) {
            let mut stream = stray.clone();
            stream.extend_from_slice(&header(3));
            stream.extend_from_slice(&[1, 2, 3]);
            // A stray prefix that happens to be a header is the 2^-32 case: skip it.
            proptest::prop_assume!(stray.len() < HEADER || parse_header(&stray[..HEADER]).is_err());
            let mut reader = FrameReader::default();
            let error = reader.read_from(feed(&stream), |_| ()).unwrap_err();
            proptest::prop_assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            let mut body = Vec::new();
            let error = read_frame(&mut stream.as_slice(), &mut body, read_spare_copying).unwrap_err();
            proptest::prop_assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        }

        /// Any stream of well-formed frames, cut into any pieces, comes out whole and in order.
        #[test]
        fn frame_reader_reassembles_any_split(
            bodies in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..8),
            cuts in proptest::collection::vec(1usize..300, 1..16),
        ) {
            let mut stream = Vec::new();
            for body in &bodies {
                stream.extend_from_slice(&header(body.len() as u32));
                stream.extend_from_slice(body);
            }
            let mut reader = FrameReader::default();
            let mut frames = Vec::new();
            let mut rest = stream.as_slice();
            let mut cuts = cuts.into_iter().cycle();
            while !rest.is_empty() {
                let piece = cuts.next().unwrap().min(rest.len());
                let (now, later) = rest.split_at(piece);
                rest = later;
                let more = reader.read_from(feed(now), |frame| frames.push(frame)).unwrap();
                proptest::prop_assert!(more);
            }
            proptest::prop_assert_eq!(frames, bodies);
        }

        /// Outcomes of a few sizes, so that runs of one size pack and a size or a failure
        /// that breaks the run unpacks them; `None` is a call that failed.
        #[test]
        fn results_survive_any_outcomes(outcomes in proptest::collection::vec(proptest::option::weighted(0.9, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3)), 0..16)) {
            let mut results = ResultsFrame::new(1, outcomes.len() as u32);
            let failure = TaskFailure::ArgsDecode("bad".into());
            for outcome in &outcomes {
                results.push(|buf, _| match outcome {
                    Some(bytes) => { buf.extend_from_slice(bytes); Ok(()) }
                    None => { buf.push(1); Err(failure.clone()) }
                });
            }
            let frame = results.finish().0;
            let body = &frame[HEADER..];
            let failed = outcomes.iter().filter(|o| o.is_none()).count();
            let decoded = FromWorker::decode(body).unwrap();
            let expected = FromWorker::Results(Results { job: 1, count: outcomes.len(), fds: 0, panicked: 0, failed });
            proptest::prop_assert_eq!(decoded, expected);
            let got: Vec<Result<&[u8], TaskFailure>> = ResultItems::new(body).collect();
            let want: Vec<Result<&[u8], TaskFailure>> = outcomes
                .iter()
                .map(|o| o.as_deref().ok_or(failure.clone()))
                .collect();
            proptest::prop_assert_eq!(got, want);
        }

        /// Under any limit that has room for the header and an over-limit record per call,
        /// results and failures of any sizes, in any order, give a frame within the limit
        /// that holds every call. (A job has at least one call: a frame of none, never
        /// sent, still takes the 4 bytes of a packed size that the limit does not count.)
        #[test]
        fn results_frames_stay_within_their_limit(
            outcomes in proptest::collection::vec((proptest::prelude::any::<bool>(), 0usize..300), 1..24),
            spare in 0usize..2000,
        ) {
            let limit = 18 + outcomes.len() * OVER_LIMIT_LEN + spare;
            let mut results = ResultsFrame::with_limit(1, outcomes.len() as u32, limit);
            for &(ok, len) in &outcomes {
                if ok {
                    results.push(|buf, _| { buf.resize(buf.len() + len, 3); Ok(()) });
                } else {
                    results.push_panicked(TaskFailure::Panic { message: "p".repeat(len), location: None, backtrace: None });
                }
            }
            let frame = results.finish().0;
            let body = &frame[HEADER..];
            proptest::prop_assert!(body.len() <= limit, "{} bytes over a limit of {}", body.len(), limit);
            proptest::prop_assert!(FromWorker::decode(body).is_ok());
            proptest::prop_assert_eq!(ResultItems::new(body).count(), outcomes.len());
        }

        /// Arguments of a few sizes, some of which fail to encode and leave nothing.
        #[test]
        fn run_frames_survive_any_arguments(args in proptest::collection::vec(proptest::option::weighted(0.9, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3)), 0..16)) {
            let mut run = RunFrame::new(9, "t");
            for arg in &args {
                let pushed = run.push(|buf| match arg {
                    Some(bytes) => { buf.extend_from_slice(bytes); Ok(()) }
                    None => { buf.push(1); Err(()) }
                });
                proptest::prop_assert_eq!(pushed.is_ok(), arg.is_some());
            }
            let frame = run.finish().unwrap().0;
            let ToWorker::Run { items, .. } = ToWorker::decode(&frame[HEADER..]).unwrap() else {
                panic!("not a RUN frame");
            };
            let got: Vec<&[u8]> = items.collect();
            let want: Vec<&[u8]> = args.iter().flatten().map(Vec::as_slice).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
