//! The spawn start method: the current binary, executed again, is the worker.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::{Process, Started};
use crate::worker;

pub(super) fn spawn() -> io::Result<Started> {
    let (ours, theirs) = UnixStream::pair()?;
    let child = command(worker::ENV, theirs).spawn()?;
    ours.set_nonblocking(true)?;
    Ok(Started {
        process: Process::spawned(child),
        socket: ours,
        server: None,
    })
}

/// The current binary, to be started with `socket` as its stdin and `marker` (the worker's
/// variable, or the forkserver's) set to this process's pid.
pub(super) fn command(marker: &str, socket: UnixStream) -> Command {
    let mut command = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    // The socket goes as stdin and the parent's pid in the environment: with no code to run
    // between fork and exec, the standard library starts the process with posix_spawn,
    // which is cheaper than fork for a large parent. The process sets itself up before
    // `main` (`sys::adopt_socket`).
    command
        .env(marker, std::process::id().to_string())
        .stdin(Stdio::from(OwnedFd::from(socket)))
        // A process group of its own: the signals a terminal sends to the foreground group
        // (Ctrl-C's SIGINT, Ctrl-\'s SIGQUIT, Ctrl-Z's SIGTSTP) reach the program, which
        // decides; if it exits, its workers follow it (PR_SET_PDEATHSIG).
        .process_group(0);
    #[cfg(feature = "redis")]
    if let Some(host) = worker::HOST_NAME.get() {
        command.env(worker::HOST_ENV, host);
    }
    command
}
