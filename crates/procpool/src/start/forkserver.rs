//! The forkserver start method, the pool's end: one server per pool, started by spawn (so
//! it is the program's code and nothing else: no heap of the pool's, no threads), forks
//! each worker. The server's side and the protocol are in `worker::forkserver`.
//!
//! Workers stay the server's children, not the pool's: the server hands a pidfd of each one
//! over, through which the pool signals it and sees it exit, and reaps a worker when the
//! pool asks how it ended. (Making them the pool's children with `clone(CLONE_PARENT)` would
//! take a raw `clone`, after which the C library's idea of the child's thread is the
//! server's; a `fork` is what a C library supports.)

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Process, Started, spawn};
use crate::error::WorkerExit;
use crate::worker::forkserver::{self as protocol, EXITED, FORK, KILLED, WAIT};

/// The longest the pool waits for one reply: a fork, or the reaping of a worker that has
/// exited or been killed, takes microseconds, so a server this slow is stuck, and is
/// replaced.
const REPLY_WAIT: Duration = Duration::from_secs(10);

/// A pool's forkserver.
#[derive(Debug)]
pub(crate) struct Server {
    conn: Mutex<Conn>,
}

#[derive(Debug)]
struct Conn {
    socket: UnixStream,
    /// The server process, this process's child.
    process: Child,
    /// Descriptors that came with replies.
    fds: VecDeque<OwnedFd>,
    /// Set once a request failed on the socket: the server is gone, or stuck, and a reply
    /// may still come late, so nothing more is asked of it.
    broken: bool,
}

impl Server {
    /// Starts a server. It is ready when it answers its first request.
    pub(super) fn start() -> io::Result<Arc<Server>> {
        let (ours, theirs) = UnixStream::pair()?;
        let process = spawn::command(protocol::ENV, theirs).spawn()?;
        ours.set_read_timeout(Some(REPLY_WAIT))?;
        ours.set_write_timeout(Some(REPLY_WAIT))?;
        Ok(Arc::new(Server {
            conn: Mutex::new(Conn {
                socket: ours,
                process,
                fds: VecDeque::new(),
                broken: false,
            }),
        }))
    }

    /// Whether the server failed a request; a broken server is replaced.
    pub(super) fn is_broken(&self) -> bool {
        self.lock().broken
    }

    /// Forks a worker.
    pub(super) fn fork(self: &Arc<Server>) -> io::Result<Started> {
        let (ours, theirs) = UnixStream::pair()?;
        let (pid, errno, pidfd) = {
            let mut conn = self.lock();
            let (pid, errno) = conn.call(FORK, 0, &[OwnedFd::from(theirs)])?;
            let pidfd = if pid != 0 { conn.fds.pop_front() } else { None };
            (pid, errno, pidfd)
        };
        let Some(pidfd) = pidfd else {
            return Err(match errno {
                0 => io::Error::other("the forkserver sent no pidfd"),
                errno => io::Error::from_raw_os_error(errno as i32),
            });
        };
        ours.set_nonblocking(true)?;
        Ok(Started {
            process: Process::forked(pid, pidfd, Arc::clone(self)),
            socket: ours,
        })
    }

    /// Reaps the worker `pid`, which has exited or been killed, and says how it ended.
    pub(super) fn wait(&self, pid: u32) -> WorkerExit {
        match self.lock().call(WAIT, pid, &[]) {
            Ok((EXITED, code)) => WorkerExit::Code(code as i32),
            Ok((KILLED, signal)) => WorkerExit::Signal(signal as i32),
            _ => WorkerExit::Unknown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Conn {
    /// Sends one request and reads its reply.
    fn call(&mut self, op: u32, pid: u32, fds: &[OwnedFd]) -> io::Result<(u32, u32)> {
        if self.broken {
            return Err(io::Error::other("the forkserver stopped answering"));
        }
        let reply = protocol::write_message(&self.socket, op, pid, fds).and_then(|()| {
            protocol::read_message(&self.socket, &mut self.fds)?
                .ok_or_else(|| io::Error::other("the forkserver exited"))
        });
        if reply.is_err() {
            self.broken = true;
        }
        reply
    }
}

impl Drop for Server {
    /// Kills the server, whose workers die with it (`PR_SET_PDEATHSIG`), and reaps it. The
    /// pool's workers each hold the server, so this runs after the last is reaped.
    fn drop(&mut self) {
        let conn = self.conn.get_mut().unwrap_or_else(PoisonError::into_inner);
        let _ = conn.process.kill();
        let _ = conn.process.wait();
    }
}
