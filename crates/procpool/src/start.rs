//! Turning a start method into a running worker process and the parent's end of its socket.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};

use crate::error::WorkerExit;
use crate::worker;

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
    pub(crate) child: Child,
    pub(crate) socket: UnixStream,
}

pub(crate) fn start(method: StartMethod) -> io::Result<Started> {
    match method {
        StartMethod::Spawn => spawn(),
    }
}

fn spawn() -> io::Result<Started> {
    let (ours, theirs) = UnixStream::pair()?;
    let mut command = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    // The socket goes as the worker's stdin and the parent's pid in its environment: with no
    // code to run between fork and exec, the standard library starts it with posix_spawn,
    // which is cheaper than fork for a large parent. The worker sets itself up before `main`
    // (`sys::adopt_socket`).
    command
        .env(worker::ENV, std::process::id().to_string())
        .stdin(Stdio::from(OwnedFd::from(theirs)));
    let child = command.spawn()?;
    ours.set_nonblocking(true)?;
    Ok(Started {
        child,
        socket: ours,
    })
}

pub(crate) fn exit_of(status: ExitStatus) -> WorkerExit {
    match (status.code(), status.signal()) {
        (Some(code), _) => WorkerExit::Code(code),
        (None, Some(signal)) => WorkerExit::Signal(signal),
        // Neither an exit code nor a signal: stopped or continued, which `wait` does not report.
        (None, None) => WorkerExit::Code(-1),
    }
}
