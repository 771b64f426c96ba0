//! Frames: the length prefix, the limit, and a writer of frame bodies.

use std::fmt;
use std::io;

use super::*;
use crate::error::TaskFailure;

/// Why a frame could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WireError {
    TooLarge {
        len: usize,
    },
    /// Bytes where a frame's header should be that are not one.
    NotAFrame([u8; HEADER]),
    TooManyFds(usize),
    Truncated,
    UnknownTag(u8),
    UnknownLayout(u8),
    BadUtf8,
    Trailing(usize),
    Handshake {
        expected: String,
        found: String,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLarge { len } => {
                write!(f, "frame of {len} bytes exceeds the limit of {MAX_FRAME}")
            }
            WireError::NotAFrame(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                write!(
                    f,
                    "bytes that are not a frame where a frame should start: {bytes:02x?} ({text:?}); was something other than procpool writing to the socket?"
                )
            }
            WireError::TooManyFds(n) => {
                write!(
                    f,
                    "frame carries {n} descriptors, over the limit of {MAX_FDS}"
                )
            }
            WireError::Truncated => f.write_str("frame ends in the middle of a field"),
            WireError::UnknownTag(tag) => write!(f, "unknown frame tag {tag}"),
            WireError::UnknownLayout(layout) => write!(f, "unknown layout {layout} of items"),
            WireError::BadUtf8 => f.write_str("name is not valid UTF-8"),
            WireError::Trailing(n) => {
                write!(f, "{n} unexpected bytes after the frame's last field")
            }
            WireError::Handshake { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
        }
    }
}

impl From<WireError> for io::Error {
    fn from(error: WireError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error.to_string())
    }
}

/// Builds one frame: a length prefix, patched by `finish`, then the body.
pub(crate) struct FrameWriter {
    pub(super) buf: Vec<u8>,
}

impl FrameWriter {
    pub(crate) fn new(tag: u8) -> FrameWriter {
        FrameWriter::reusing(Vec::with_capacity(64), tag)
    }

    /// A frame written into `buf`, whose contents are dropped and whose room is kept.
    pub(crate) fn reusing(mut buf: Vec<u8>, tag: u8) -> FrameWriter {
        buf.clear();
        buf.extend_from_slice(&[0; HEADER]);
        buf.push(tag);
        FrameWriter { buf }
    }

    #[inline]
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    #[inline]
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    #[inline]
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    #[inline]
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    #[inline]
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(len_u32(v.len()));
        self.buf.extend_from_slice(v);
        self
    }

    pub(crate) fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// Appends a length-prefixed field written by `write`; `write` may fail and leave nothing.
    pub(crate) fn field<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<&mut Self, E> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        if let Err(error) = write(&mut self.buf) {
            self.buf.truncate(at);
            return Err(error);
        }
        let len = len_u32(self.buf.len() - at - 4);
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(self)
    }

    pub(super) fn failure(&mut self, failure: &TaskFailure) -> &mut Self {
        match failure {
            TaskFailure::Panic {
                message,
                location,
                backtrace,
            } => {
                self.u8(0).str(message);
                let flags = u8::from(location.is_some()) | u8::from(backtrace.is_some()) << 1;
                self.u8(flags);
                if let Some(location) = location {
                    self.str(location);
                }
                if let Some(backtrace) = backtrace {
                    self.str(backtrace);
                }
                self
            }
            TaskFailure::ArgsDecode(detail) => self.u8(1).str(detail),
            TaskFailure::ResultEncode(detail) => self.u8(2).str(detail),
            TaskFailure::Unregistered(name) => self.u8(3).str(name),
        }
    }

    /// The position where the next byte goes, for `patch_u32`.
    #[inline]
    pub(crate) fn position(&self) -> usize {
        self.buf.len()
    }

    #[inline]
    pub(crate) fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        let len = len_u32(self.buf.len() - HEADER);
        self.buf[..HEADER].copy_from_slice(&header(len));
        self.buf
    }
}

#[inline]
pub(super) fn len_u32(len: usize) -> u32 {
    // A longer field is refused by the frame limit on the reading side; saturating keeps the
    // writer from wrapping into a shorter, wrong length.
    u32::try_from(len).unwrap_or(u32::MAX)
}
