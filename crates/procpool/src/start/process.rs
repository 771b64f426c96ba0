//! The handle of one worker process: waiting for it, signalling it and how it ended go
//! through here and nowhere else.
//!
//! A signal goes through the process's pidfd where the kernel has them (Linux 5.3 and later),
//! so it reaches that process or none, even when something else in the program reaps children
//! (a `SIGCHLD` set to `SIG_IGN` makes the kernel reap them at once, and a pid can then be
//! reused). Without a pidfd, it goes by pid, and only after a wait that finds the child
//! unreaped.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::forkserver::Server;
use crate::error::WorkerExit;
use crate::sys;

/// How a process ended, and whether the pool had to kill it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reaped {
    pub(crate) exit: WorkerExit,
    pub(crate) killed: bool,
}

/// A worker process the pool started, until it is reaped.
#[derive(Debug)]
pub(crate) struct Process {
    parent: Parent,
    /// Readable once the process has exited; `None` on kernels without pidfds (then the
    /// process is always the pool's own child).
    pidfd: Option<OwnedFd>,
    /// How it ended, once known.
    exit: Option<WorkerExit>,
}

/// Who waits for the process.
#[derive(Debug)]
enum Parent {
    /// This process: the worker was spawned.
    Pool(Child),
    /// A forkserver, which reaps it when asked and says how it ended.
    Server { pid: u32, server: Arc<Server> },
}

impl Process {
    /// The handle of a child just started by this process.
    pub(crate) fn spawned(mut child: Child) -> Process {
        // A child that `try_wait` finds running is unreaped, unless the program has the
        // kernel reap its children, which makes it exit first: its pid then names nothing
        // yet (the pidfd fails) or, in a window of a few microseconds, a new process.
        let exit = match child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(exit_of(status)),
            Err(_) => Some(WorkerExit::Unknown),
        };
        let pidfd = exit
            .is_none()
            .then(|| sys::pidfd_open(child.id()))
            .flatten();
        Process {
            parent: Parent::Pool(child),
            pidfd,
            exit,
        }
    }

    /// The handle of a worker that `server` forked, with the pidfd it opened: the server
    /// reaps the worker only when asked, so the pidfd names it for good.
    pub(crate) fn forked(pid: u32, pidfd: OwnedFd, server: Arc<Server>) -> Process {
        Process {
            parent: Parent::Server { pid, server },
            pidfd: Some(pidfd),
            exit: None,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        match &self.parent {
            Parent::Pool(child) => child.id(),
            Parent::Server { pid, .. } => *pid,
        }
    }

    /// A descriptor that becomes readable when the process exits, where the kernel has
    /// pidfds. It stays open as long as this handle lives.
    pub(crate) fn exit_fd(&self) -> Option<RawFd> {
        self.pidfd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Sends `signal`; false if the process is known to have exited, or the signal could not
    /// be sent.
    pub(crate) fn signal(&mut self, signal: i32) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match (&self.pidfd, &mut self.parent) {
            (Some(pidfd), _) => sys::pidfd_signal(pidfd.as_fd(), signal).is_ok(),
            (None, Parent::Pool(child)) => sys::signal_child(child, signal),
            (None, Parent::Server { .. }) => false,
        }
    }

    /// Kills the process (SIGKILL), if it still runs.
    pub(crate) fn kill(&mut self) {
        self.signal(sys::SIGKILL);
    }

    /// How the process ended, if it has; never waits (a forkserver asked about a worker that
    /// has exited answers at once).
    pub(crate) fn try_exit(&mut self) -> Option<WorkerExit> {
        if self.exit.is_none() {
            self.exit = match &mut self.parent {
                Parent::Pool(child) => match child.try_wait() {
                    Ok(None) => None,
                    Ok(Some(status)) => Some(exit_of(status)),
                    // Reaped by someone else: the kernel, for a program that ignores
                    // SIGCHLD, or the program's own wait for any child.
                    Err(_) => Some(WorkerExit::Unknown),
                },
                Parent::Server { pid, server } => {
                    let pidfd = self.pidfd.as_ref().expect("a forked worker has a pidfd");
                    sys::has_exited(pidfd).then(|| server_exit(server, *pid, pidfd))
                }
            };
        }
        self.exit
    }

    /// Kills the process if it still runs, waits for it, and says how it ended.
    pub(crate) fn reap(self) -> WorkerExit {
        self.reap_within(Duration::ZERO).exit
    }

    /// Waits up to `grace` for the process to exit by itself, kills it if it has not, waits
    /// for it, and says how it ended and whether it was killed here.
    pub(crate) fn reap_within(mut self, grace: Duration) -> Reaped {
        if let Some(exit) = self.try_exit() {
            return Reaped {
                exit,
                killed: false,
            };
        }
        if !grace.is_zero() {
            self.wait_exit(grace);
            if let Some(exit) = self.try_exit() {
                return Reaped {
                    exit,
                    killed: false,
                };
            }
        }
        self.kill();
        let exit = match &mut self.parent {
            Parent::Pool(child) => match child.wait() {
                Ok(status) => exit_of(status),
                Err(_) => WorkerExit::Unknown,
            },
            Parent::Server { pid, server } => {
                let pidfd = self.pidfd.as_ref().expect("a forked worker has a pidfd");
                // Killed just now: once its server is gone, it is not reaped at once.
                let mut fds = [sys::PollFd::new(pidfd.as_raw_fd(), false)];
                let _ = sys::poll(&mut fds, Some(ADOPTED_EXIT));
                server_exit(server, *pid, pidfd)
            }
        };
        Reaped { exit, killed: true }
    }

    /// Reaps the process, killing it first if it still runs, when how it ended is of no
    /// interest: a forked worker that has exited is left to its server to reap, with no
    /// round trip.
    pub(crate) fn release(mut self) {
        if let (Parent::Server { pid, server }, Some(pidfd), None) =
            (&self.parent, &self.pidfd, self.exit)
            && sys::has_exited(pidfd)
        {
            server.reap(*pid, self.pidfd.take().expect("checked above"));
            return;
        }
        self.reap();
    }

    /// Waits until the process has exited or `grace` has passed.
    fn wait_exit(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.try_exit().is_some() {
                return;
            }
            match self.exit_fd() {
                Some(fd) => {
                    let _ = sys::poll(&mut [sys::PollFd::new(fd, false)], Some(left));
                }
                // Without a pidfd, look again soon.
                None => std::thread::sleep(left.min(Duration::from_millis(1))),
            }
        }
    }
}

/// How long a forked worker killed after its server died may take to exit.
pub(super) const ADOPTED_EXIT: Duration = Duration::from_secs(1);

/// How the exited worker `pid` of `server` ended: as its server says, or, if its server
/// died first (it died with it) and this process adopted it (PID 1, or a child subreaper),
/// as reaping it here says; otherwise it stays unknown, and whoever adopts it reaps it
/// (this process too, when it ends the server).
fn server_exit(server: &Server, pid: u32, pidfd: &OwnedFd) -> WorkerExit {
    match server.wait(pid) {
        WorkerExit::Unknown => match sys::reap_adopted(pidfd) {
            Some(sys::WaitStatus::Code(code)) => WorkerExit::Code(code),
            Some(sys::WaitStatus::Signal(signal)) => WorkerExit::Signal(signal),
            None => {
                // Its server is alive but stuck: the worker is reaped once it is ended.
                if let Ok(pidfd) = pidfd.try_clone() {
                    server.reap_when_gone(pidfd);
                }
                WorkerExit::Unknown
            }
        },
        known => known,
    }
}

fn exit_of(status: ExitStatus) -> WorkerExit {
    match (status.code(), status.signal()) {
        (Some(code), _) => WorkerExit::Code(code),
        (None, Some(signal)) => WorkerExit::Signal(signal),
        // Neither an exit code nor a signal: stopped or continued, which `wait` does not report.
        (None, None) => WorkerExit::Unknown,
    }
}
