//! The control frames and the decoding of every frame into a message.

use std::time::Duration;

use super::*;
use crate::error::TaskFailure;

/// The SETUP frame: the worker's index, whether it captures backtraces of panics (flag 2),
/// how long it watches its socket before it sleeps when it waits for work (see `watch`; in
/// microseconds, 0 for not at all), the memory limit it sets for itself (0 for none), and the
/// initializer to run, if any.
pub(crate) fn setup_frame(
    index: u32,
    watch: Duration,
    backtraces: bool,
    memory_limit: Option<u64>,
    jobs: Option<u64>,
    initializer: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut frame = FrameWriter::new(TAG_SETUP);
    let flags = u8::from(backtraces) << 1;
    let watch = u32::try_from(watch.as_micros()).unwrap_or(u32::MAX);
    frame
        .u32(MAGIC)
        .u16(VERSION)
        .u32(index)
        .u8(flags)
        .u32(watch);
    frame.u64(memory_limit.unwrap_or(0));
    frame.u64(jobs.unwrap_or(0));
    match initializer {
        Some((name, args)) => frame.u8(1).str(name).bytes(args),
        None => frame.u8(0),
    };
    frame.finish()
}

pub(crate) fn shutdown_frame() -> Vec<u8> {
    FrameWriter::new(TAG_SHUTDOWN).finish()
}

/// A worker's last words, after a SHUTDOWN: its peak resident memory in bytes (0 if it
/// could not read it).
pub(crate) fn bye_frame(peak: u64) -> Vec<u8> {
    let mut frame = FrameWriter::new(TAG_BYE);
    frame.u64(peak);
    frame.finish()
}

pub(crate) fn ready_frame(pid: u32, fingerprint: u64) -> Vec<u8> {
    let mut frame = FrameWriter::new(TAG_READY);
    frame.u32(MAGIC).u16(VERSION).u32(pid).u64(fingerprint);
    frame.finish()
}

/// A frame of the descriptors' handshake (see `wire/README.md`, "Descriptors"), from the
/// parent if `to_worker`, else from a worker.
pub(crate) fn descriptors_frame(message: Descriptors, to_worker: bool) -> Vec<u8> {
    let (tag, nonce) = match (message, to_worker) {
        (Descriptors::Offer(nonce), true) => (TAG_OFFER_FDS, nonce),
        (Descriptors::Taking(nonce), true) => (TAG_TAKING_FDS, nonce),
        (Descriptors::Offer(nonce), false) => (TAG_WORKER_OFFER_FDS, nonce),
        (Descriptors::Taking(nonce), false) => (TAG_WORKER_TAKING_FDS, nonce),
    };
    let mut frame = FrameWriter::new(tag);
    frame.u64(nonce);
    frame.finish()
}

/// The descriptors' handshake. Each end reads its socket with plain reads, which drop any
/// descriptor that comes, until the other end has descriptors for it: a side that has some
/// sends OFFER and holds them; the other starts to read with `recvmsg` and answers TAKING;
/// the descriptors go once TAKING has come. Each direction does this at most once.
///
/// An OFFER carries a nonce and a TAKING the nonce of the OFFER it answers. The parent's is
/// random and checked, against a task that writes frames on its worker's end of the socket
/// without reading it; a worker's is 0 and not checked: nothing but the parent writes what a
/// worker reads. (`wire/README.md` has what a forging task can and cannot do.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Descriptors {
    /// The sender has descriptors to send, once the receiver takes them.
    Offer(u64),
    /// The sender reads with `recvmsg` already: what comes after this frame may carry
    /// descriptors.
    Taking(u64),
}

pub(crate) fn init_failed_frame(failure: &TaskFailure) -> Vec<u8> {
    let mut frame = FrameWriter::new(TAG_INIT_FAILED);
    frame.failure(failure);
    frame.finish()
}

/// A bounds-checked reader over one frame body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cursor<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(WireError::Truncated)?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    #[inline]
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    #[inline]
    pub(super) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_le_bytes)
    }

    #[inline]
    pub(super) fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_le_bytes)
    }

    #[inline]
    pub(super) fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_le_bytes)
    }

    #[inline]
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// A count of descriptors, refused over [`MAX_FDS`].
    pub(super) fn fds(&mut self) -> Result<usize, WireError> {
        let fds = self.u32()? as usize;
        if fds > MAX_FDS {
            return Err(WireError::TooManyFds(fds));
        }
        Ok(fds)
    }

    pub(super) fn str(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError::BadUtf8)
    }

    /// Steps over `count` packed items of `items`' size. The count is held to the frame
    /// limit as the writer holds it (see `ItemWriter::sized_len`): `per_item` bytes of length
    /// and status each, so that items of no bytes cannot come in billions.
    pub(super) fn skip_packed(
        &mut self,
        count: usize,
        items: &ItemReader<'_>,
        per_item: usize,
    ) -> Result<(), WireError> {
        let sized = count.saturating_mul(per_item);
        if sized > MAX_FRAME {
            return Err(WireError::TooLarge { len: sized });
        }
        let size = items.packed.unwrap_or(0);
        let len = count.checked_mul(size).ok_or(WireError::Truncated)?;
        self.take(len).map(|_| ())
    }

    pub(super) fn failure(&mut self) -> Result<TaskFailure, WireError> {
        Ok(match self.u8()? {
            0 => {
                let message = self.str()?.to_owned();
                let flags = self.u8()?;
                let location = match flags & 1 {
                    0 => None,
                    _ => Some(self.str()?.to_owned()),
                };
                let backtrace = match flags & 2 {
                    0 => None,
                    _ => Some(self.str()?.to_owned()),
                };
                TaskFailure::Panic {
                    message,
                    location,
                    backtrace,
                }
            }
            1 => TaskFailure::ArgsDecode(self.str()?.to_owned()),
            2 => TaskFailure::ResultEncode(self.str()?.to_owned()),
            3 => TaskFailure::Unregistered(self.str()?.to_owned()),
            tag => return Err(WireError::UnknownTag(tag)),
        })
    }

    pub(super) fn handshake(&mut self) -> Result<(), WireError> {
        let magic = self.u32()?;
        if magic != MAGIC {
            return Err(WireError::Handshake {
                expected: format!("magic {MAGIC:#x}"),
                found: format!("{magic:#x}"),
            });
        }
        let version = self.u16()?;
        if version != VERSION {
            return Err(WireError::Handshake {
                expected: format!("protocol version {VERSION}"),
                found: version.to_string(),
            });
        }
        Ok(())
    }

    pub(super) fn end(&self) -> Result<(), WireError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

/// A frame a worker receives.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ToWorker<'a> {
    Setup {
        index: u32,
        /// How long the worker watches its socket before it sleeps; zero for not at all.
        watch: Duration,
        backtraces: bool,
        /// The `RLIMIT_DATA` the worker sets for itself, in bytes.
        memory_limit: Option<u64>,
        /// The most RUN frames the worker is sent (`max_tasks_per_child`): after the last,
        /// it does not watch for another.
        jobs: Option<u64>,
        initializer: Option<(&'a str, &'a [u8])>,
    },
    Run {
        job: u64,
        name: &'a str,
        /// How many descriptors came with the frame, and the index its arguments give the
        /// first of them.
        fds: usize,
        fd_base: usize,
        items: RunItems<'a>,
    },
    Shutdown,
    Descriptors(Descriptors),
}

impl<'a> ToWorker<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<ToWorker<'a>, WireError> {
        let mut cursor = Cursor { buf: body, pos: 0 };
        let message = match cursor.u8()? {
            TAG_SETUP => {
                cursor.handshake()?;
                let index = cursor.u32()?;
                let flags = cursor.u8()?;
                let watch = Duration::from_micros(u64::from(cursor.u32()?));
                let memory_limit = Some(cursor.u64()?).filter(|&limit| limit > 0);
                let jobs = Some(cursor.u64()?).filter(|&jobs| jobs > 0);
                let initializer = match cursor.u8()? {
                    0 => None,
                    _ => Some((cursor.str()?, cursor.bytes()?)),
                };
                ToWorker::Setup {
                    index,
                    watch,
                    backtraces: flags & 2 != 0,
                    memory_limit,
                    jobs,
                    initializer,
                }
            }
            TAG_RUN => {
                let job = cursor.u64()?;
                let name = cursor.str()?;
                let count = cursor.u32()? as usize;
                let fds = cursor.fds()?;
                let fd_base = cursor.u32()? as usize;
                let items = ItemReader::new(&mut cursor, count)?;
                match items.packed {
                    Some(_) => cursor.skip_packed(count, &items, 4)?,
                    None => {
                        for _ in 0..count {
                            cursor.bytes()?;
                        }
                    }
                }
                ToWorker::Run {
                    job,
                    name,
                    fds,
                    fd_base,
                    items: RunItems(items),
                }
            }
            TAG_SHUTDOWN => ToWorker::Shutdown,
            TAG_OFFER_FDS => ToWorker::Descriptors(Descriptors::Offer(cursor.u64()?)),
            TAG_TAKING_FDS => ToWorker::Descriptors(Descriptors::Taking(cursor.u64()?)),
            tag => return Err(WireError::UnknownTag(tag)),
        };
        cursor.end()?;
        Ok(message)
    }
}

/// A frame the parent receives. A RESULTS frame is checked whole here, and its body is then
/// handed on as it is, to be read item by item by [`ResultItems`] where the results are
/// wanted: nothing is copied or allocated per result on the way.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FromWorker {
    Ready {
        pid: u32,
        fingerprint: u64,
    },
    InitFailed(TaskFailure),
    Results(Results),
    /// The answer to a SHUTDOWN: the worker's peak resident memory, if it could read it.
    Bye {
        peak: Option<u64>,
    },
    Descriptors(Descriptors),
}

/// What a RESULTS frame says of its job, once checked whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Results {
    pub(crate) job: u64,
    pub(crate) count: usize,
    /// How many descriptors came with the frame.
    pub(crate) fds: usize,
    /// How many of the calls panicked, and how many failed otherwise.
    pub(crate) panicked: usize,
    pub(crate) failed: usize,
}

impl FromWorker {
    pub(crate) fn decode(body: &[u8]) -> Result<FromWorker, WireError> {
        let mut cursor = Cursor { buf: body, pos: 0 };
        let message = match cursor.u8()? {
            TAG_READY => {
                cursor.handshake()?;
                FromWorker::Ready {
                    pid: cursor.u32()?,
                    fingerprint: cursor.u64()?,
                }
            }
            TAG_INIT_FAILED => FromWorker::InitFailed(cursor.failure()?),
            TAG_BYE => FromWorker::Bye {
                peak: Some(cursor.u64()?).filter(|&peak| peak > 0),
            },
            TAG_WORKER_OFFER_FDS => FromWorker::Descriptors(Descriptors::Offer(cursor.u64()?)),
            TAG_WORKER_TAKING_FDS => FromWorker::Descriptors(Descriptors::Taking(cursor.u64()?)),
            TAG_RESULTS => {
                let job = cursor.u64()?;
                let count = cursor.u32()? as usize;
                let fds = cursor.fds()?;
                let items = ItemReader::new(&mut cursor, count)?;
                let (mut panicked, mut failed) = (0, 0);
                match items.packed {
                    Some(_) => cursor.skip_packed(count, &items, 5)?,
                    None => {
                        for _ in 0..count {
                            match cursor.u8()? {
                                0 => {
                                    cursor.bytes()?;
                                }
                                1 => match cursor.failure()? {
                                    TaskFailure::Panic { .. } => panicked += 1,
                                    _ => failed += 1,
                                },
                                tag => return Err(WireError::UnknownTag(tag)),
                            }
                        }
                    }
                }
                FromWorker::Results(Results {
                    job,
                    count,
                    fds,
                    panicked,
                    failed,
                })
            }
            tag => return Err(WireError::UnknownTag(tag)),
        };
        cursor.end()?;
        Ok(message)
    }
}
