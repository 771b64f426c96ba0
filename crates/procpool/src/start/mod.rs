//! Turning a start method into a running worker process and the parent's end of its socket.
//!
//! Whatever starts a worker hands back a [`Process`], the one handle through which the pool
//! waits for it, signals it and learns how it ended.

mod process;
mod spawn;

use std::io;
use std::os::unix::net::UnixStream;

pub(crate) use process::{Process, Reaped};

/// How a pool starts its worker processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartMethod {
    /// Re-execute the current binary (`/proc/self/exe`) with the worker's socket inherited
    /// and a marker in the child's environment; the worker is entered before `main`, so no
    /// code of the program's own runs in it, other than the tasks.
    #[default]
    Spawn,
}

/// A freshly started worker process, not yet through its handshake.
pub(crate) struct Started {
    pub(crate) process: Process,
    pub(crate) socket: UnixStream,
}

pub(crate) fn start(method: StartMethod) -> io::Result<Started> {
    match method {
        StartMethod::Spawn => spawn::spawn(),
    }
}
