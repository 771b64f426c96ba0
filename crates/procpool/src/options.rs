//! Options for one call: [`MapOptions`] and [`ApplyOptions`], and their checks.

use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::wire::MAX_FRAME;

/// The most calls a chunk may hold: a frame of calls takes at least 4 bytes a call (its
/// length), and a frame at most [`MAX_FRAME`].
const MAX_CHUNKSIZE: usize = MAX_FRAME / 4;

/// Options for one call of the map family.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapOptions {
    pub(crate) chunksize: Option<usize>,
    pub(crate) timeout: Option<Duration>,
}

impl MapOptions {
    /// Options with every default: an automatic chunk size.
    pub fn new() -> MapOptions {
        MapOptions::default()
    }

    /// Sends the calls to workers in chunks of `chunksize` (the last may be smaller).
    ///
    /// Larger chunks cost fewer round trips; smaller ones balance uneven work better. A chunk
    /// size of 0 is refused when the options are used. Without one, `imap` sends one call at
    /// a time, and `map` and `starmap` cut the input into two to eight chunks per worker (two
    /// for a short input) whose items interleave: each chunk takes every `s`-th item from
    /// some start below `s` (with two chunks per worker, chunk `j` of `c` takes items `j`,
    /// `j + c`, `j + 2c`…). So every chunk samples the whole input, and work that grows or
    /// shrinks along the input (the last items the heaviest, say) is spread evenly, without
    /// the round trips of small chunks. From 768 items per worker the last chunks to go out
    /// are smaller (a half of the others, and from 1,024 items per worker a half, then a
    /// quarter), so that a worker that runs slower than the rest ends on a small one. Give a
    /// chunk size where the cost of items varies at random and a few are far heavier than
    /// the rest.
    ///
    /// A chunk size of zero, or over 268,435,456 (as many calls as a frame can hold), is
    /// refused by the call with [`ErrorKind::InvalidInput`]; a chunk whose arguments grow
    /// past the frame limit is refused as soon as they do, with [`ErrorKind::Codec`].
    pub fn chunksize(mut self, chunksize: usize) -> MapOptions {
        self.chunksize = Some(chunksize);
        self
    }

    /// How long each call may run, instead of the pool's
    /// [`task_timeout`](crate::Builder::task_timeout). A call that runs longer has its worker killed
    /// and ends with [`ErrorKind::TimedOut`]; see `task_timeout` for the details. A zero
    /// timeout is refused when the options are used.
    pub fn timeout(mut self, timeout: Duration) -> MapOptions {
        self.timeout = Some(timeout);
        self
    }
}

/// Options for one [`apply_async_with`](crate::Pool::apply_async_with) or
/// [`apply_with`](crate::Pool::apply_with).
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    pub(crate) timeout: Option<Duration>,
}

impl ApplyOptions {
    /// Options with every default.
    pub fn new() -> ApplyOptions {
        ApplyOptions::default()
    }

    /// How long the task may run, instead of the pool's
    /// [`task_timeout`](crate::Builder::task_timeout). If it runs longer, its worker is killed and
    /// it ends with [`ErrorKind::TimedOut`]. A zero timeout is refused when the options are
    /// used.
    pub fn timeout(mut self, timeout: Duration) -> ApplyOptions {
        self.timeout = Some(timeout);
        self
    }
}

pub(crate) fn checked_chunksize(options: MapOptions) -> Result<Option<usize>, Error> {
    match options.chunksize {
        Some(0) => Err(Error::new(
            ErrorKind::InvalidInput,
            "chunksize must be at least 1, got 0",
        )),
        Some(size) if size > MAX_CHUNKSIZE => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "chunksize must be at most {MAX_CHUNKSIZE} (as many calls as a frame can hold), got {size}"
            ),
        )),
        other => Ok(other),
    }
}

pub(crate) fn checked_timeout(timeout: Option<Duration>) -> Result<Option<Duration>, Error> {
    match timeout {
        Some(Duration::ZERO) => Err(Error::new(
            ErrorKind::InvalidInput,
            "timeout must be more than zero, got 0s",
        )),
        other => Ok(other),
    }
}
