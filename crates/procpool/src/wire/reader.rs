//! Reading frames off a socket: whole frames, without copying large bodies twice.

use std::io::{self, BufRead, Read};

use super::*;

/// Reads one frame body from a blocking, buffered stream; `Ok(None)` on a clean end of
/// stream. What the buffer holds of the body is copied; the rest is read by `read_spare`,
/// which appends at most the count it is given to the vector, into its spare capacity (a
/// worker reads its socket so, without zeroing the buffer first), and returns how many
/// bytes it appended, 0 at the end of the stream.
///
/// The body's buffer grows with the bytes that arrive, not with the length the header
/// claims, so a short stream cannot make it allocate up to the frame limit.
pub(crate) fn read_frame<R: BufRead>(
    reader: &mut R,
    body: &mut Vec<u8>,
    mut read_spare: impl FnMut(&mut R, &mut Vec<u8>, usize) -> io::Result<usize>,
) -> io::Result<Option<()>> {
    let mut header = [0; HEADER];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = parse_header(&header)?;
    body.clear();
    body.reserve(len.min(LARGE));
    let buffered = reader.fill_buf()?;
    let from_buffer = buffered.len().min(len);
    body.extend_from_slice(&buffered[..from_buffer]);
    reader.consume(from_buffer);
    while body.len() < len {
        if body.len() == body.capacity() {
            body.reserve(body.len().min(len - body.len()));
        }
        let room = (body.capacity() - body.len()).min(len - body.len());
        match read_spare(reader, body, room) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(()))
}

/// A `read_spare` for [`read_frame`] over any reader, through a small stack buffer: for
/// tests and the fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub(super) fn read_spare_copying(
    reader: &mut impl Read,
    body: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    let mut buf = [0; 4096];
    let max = max.min(buf.len());
    let n = reader.read(&mut buf[..max])?;
    body.extend_from_slice(&buf[..n]);
    Ok(n)
}

/// Splits frames out of a non-blocking byte stream, as bytes arrive.
///
/// Small frames are gathered in one buffer and copied out; a large frame gets a buffer of its
/// own, read into directly (and not zeroed first), so that a big result is not copied twice.
/// That buffer doubles as bytes arrive instead of taking the length the header claims at
/// once, so that a peer that sends a large length and little else cannot make the reader
/// allocate up to the limit.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    /// Bytes `start..end` are read and not yet split off; allocated on first use, and grown
    /// while reads fill it.
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
    /// The large frame being read straight into its own buffer.
    pub(super) large: Option<Large>,
}

/// Above this, a frame body gets its own buffer.
pub(crate) const LARGE: usize = 64 * 1024;

/// The size of a [`FrameReader`]'s buffer at first. It doubles each time reads fill it, up to
/// [`MAX_BUF`]: a worker that says little (a handshake and a few small results) costs its
/// pool one page, not the 128 KiB a busy stream reads into, zeroed and faulted in for each
/// of the hundreds of workers a recycling pool starts.
pub(super) const FIRST_BUF: usize = 4096;

/// The most a [`FrameReader`]'s buffer grows to: room for two frames of [`LARGE`].
pub(super) const MAX_BUF: usize = 2 * LARGE;

/// A large frame body being read: `body` has arrived, out of `len` bytes.
#[derive(Debug)]
pub(super) struct Large {
    pub(super) body: Vec<u8>,
    pub(super) len: usize,
}

/// A read function as a reader, for [`Read::read_to_end`], which reads into a vector's spare
/// capacity without zeroing it first.
pub(super) struct ReadFn<F>(F);

impl<F: FnMut(&mut [u8]) -> io::Result<usize>> Read for ReadFn<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (self.0)(buf)
    }
}

impl FrameReader {
    /// Reads what `read` has now and hands each complete frame body to `on_frame`. Returns
    /// `Ok(false)` at the end of the stream, `Ok(true)` when it would block or a read came
    /// back short (the stream is drained for now).
    pub(crate) fn read_from(
        &mut self,
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
        mut on_frame: impl FnMut(Vec<u8>),
    ) -> io::Result<bool> {
        if self.buf.is_empty() {
            self.buf = vec![0; FIRST_BUF];
        }
        loop {
            if let Some(large) = &mut self.large {
                let body = &mut large.body;
                let missing = large.len - body.len();
                if body.len() == body.capacity() {
                    body.reserve(body.len().max(LARGE).min(missing));
                }
                let room = (body.capacity() - body.len()).min(missing);
                let before = body.len();
                // Reads until the room is full or the stream would block; what it read is
                // kept either way.
                let outcome = (&mut ReadFn(&mut read)).take(room as u64).read_to_end(body);
                let got = body.len() - before;
                if body.len() == large.len {
                    let large = self.large.take().expect("a large frame is being read");
                    on_frame(large.body);
                }
                match outcome {
                    Ok(_) if got < room => return Ok(false),
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            if self.end == self.buf.len() {
                if self.buf.len() < MAX_BUF {
                    self.buf.resize(self.buf.len() * 2, 0);
                } else {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                }
            }
            let target = &mut self.buf[self.end..];
            let offered = target.len();
            let got = match read(target) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.end += got;
            self.split(&mut on_frame)?;
            // A read that did not fill what it was offered found the stream drained: stop
            // here rather than pay for a read that only says `EAGAIN`. The descriptor is
            // polled level-triggered, so bytes that arrive meanwhile (or the end of the
            // stream) wake the next poll.
            if got < offered {
                return Ok(true);
            }
        }
    }

    pub(super) fn split(&mut self, on_frame: &mut impl FnMut(Vec<u8>)) -> io::Result<()> {
        while self.end - self.start >= HEADER {
            let at = self.start;
            let len = parse_header(&self.buf[at..at + HEADER])?;
            let body = at + HEADER;
            let available = self.end - body;
            if available >= len {
                on_frame(self.buf[body..body + len].to_vec());
                self.start = body + len;
            } else if len > LARGE {
                let mut body = Vec::with_capacity(available.max(LARGE).min(len));
                body.extend_from_slice(&self.buf[at + HEADER..self.end]);
                self.large = Some(Large { body, len });
                self.start = self.end;
                break;
            } else {
                break;
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(())
    }
}
