//! Entry points for the fuzz targets.

use std::io;

#[cfg(feature = "fuzzing")]
use super::*;

/// A non-blocking reader over `left`, for tests and the fuzz target: each read takes what
/// fits, and once it is empty it would block.
#[cfg(any(test, feature = "fuzzing"))]
pub(super) fn feed(mut left: &[u8]) -> impl FnMut(&mut [u8]) -> io::Result<usize> + '_ {
    move |out| {
        if left.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = left.len().min(out.len());
        out[..n].copy_from_slice(&left[..n]);
        left = &left[n..];
        Ok(n)
    }
}

/// One fuzz input: decodes it as a frame body both ways, then feeds it to a
/// `FrameReader` in pieces whose sizes the input's first byte picks, decoding every frame
/// that comes out. Panics if any frame exceeds the limit; decoders must not panic at all.
#[cfg(feature = "fuzzing")]
pub fn fuzz_wire(data: &[u8]) {
    let _ = ToWorker::decode(data);
    decode_all(data);
    let piece = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut reader = FrameReader::default();
    let mut rest = data;
    loop {
        let (now, later) = rest.split_at(piece.min(rest.len()));
        rest = later;
        let result = reader.read_from(feed(now), |frame| {
            assert!(frame.len() <= MAX_FRAME, "a frame over the limit");
            decode_all(&frame);
            let _ = ToWorker::decode(&frame);
        });
        if result.is_err() || rest.is_empty() {
            break;
        }
    }
    let mut body = Vec::new();
    let _ = read_frame(&mut &data[..], &mut body, read_spare_copying);
    assert!(body.len() <= MAX_FRAME, "a frame over the limit");
}

/// Decodes a body as a parent does, and reads the results of an accepted RESULTS body: what
/// the check lets through must read without a panic. (Up to a few thousand: packed results of
/// no bytes can number hundreds of millions in a short body, and a parent reads no more than
/// the job it sent holds.)
#[cfg(feature = "fuzzing")]
pub(super) fn decode_all(body: &[u8]) {
    if let Ok(FromWorker::Results(Results { count, .. })) = FromWorker::decode(body) {
        let items = ResultItems::new(body);
        assert_eq!(items.len(), count);
        assert_eq!(items.take(4096).count(), count.min(4096));
    }
}
