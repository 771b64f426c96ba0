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
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::process::ADOPTED_EXIT;
use super::{Process, Started, spawn};
use crate::error::WorkerExit;
use crate::sys;
use crate::worker::forkserver::{self as protocol, EXITED, FORK, KILLED, REAP, WAIT};

/// The longest the pool waits for one reply: a fork, or the reaping of a worker that has
/// exited or been killed, takes microseconds, so a server this slow is stuck, and is
/// replaced.
const REPLY_WAIT: Duration = Duration::from_secs(10);

/// The most FORK requests in flight: each carries a descriptor, and descriptors in flight
/// count against the sender's limit on open files.
const AHEAD: usize = 16;

/// A pool's forkserver.
#[derive(Debug)]
pub(crate) struct Server {
    /// The pool's number for this server (see `Started::server`).
    id: u64,
    conn: Mutex<Conn>,
}

#[derive(Debug)]
struct Conn {
    socket: UnixStream,
    /// The server process, this process's child: signalled through its pidfd, as workers
    /// are. `None` once reaped.
    process: Option<Process>,
    /// Descriptors that came with replies.
    fds: VecDeque<OwnedFd>,
    /// Set once a request failed on the socket: the server is gone, or stuck, and a reply
    /// may still come late, so nothing more is asked of it.
    broken: bool,
    /// Our ends of the sockets of workers asked for and not answered yet, in order, with
    /// the number of each request: a pool asks for all its first workers at once, and the
    /// server forks the next while the pool sets up the last.
    asked: VecDeque<(u64, UnixStream)>,
    /// Answers to those requests not taken yet, in order.
    answered: VecDeque<io::Result<Forked>>,
    /// Workers the pool said it is about to start, not asked for yet.
    wanted: usize,
    /// Requests sent so far: the next one's number. The server answers in order, so a
    /// reply to request `n` says that every request before `n` was carried out.
    sent: u64,
    /// Pidfds of the workers the server was asked to [`REAP`], with the numbers of those
    /// requests, until a later reply says they were reaped; and (numbered `u64::MAX`) of
    /// those it could not be asked about. Should the server be killed first, they are
    /// orphans this process may have adopted, and it reaps them.
    unconfirmed: VecDeque<(u64, OwnedFd)>,
}

/// A worker the server forked: its pid, a pidfd, and our end of its socket.
#[derive(Debug)]
struct Forked {
    pid: u32,
    pidfd: OwnedFd,
    socket: UnixStream,
}

impl Server {
    /// Starts a server. It is ready when it answers its first request.
    pub(super) fn start(id: u64) -> io::Result<Arc<Server>> {
        let (ours, theirs) = UnixStream::pair()?;
        let process = Process::spawned(spawn::command(protocol::ENV, theirs).spawn()?);
        ours.set_read_timeout(Some(REPLY_WAIT))?;
        ours.set_write_timeout(Some(REPLY_WAIT))?;
        Ok(Arc::new(Server {
            id,
            conn: Mutex::new(Conn {
                socket: ours,
                process: Some(process),
                fds: VecDeque::new(),
                broken: false,
                asked: VecDeque::new(),
                answered: VecDeque::new(),
                wanted: 0,
                sent: 0,
                unconfirmed: VecDeque::new(),
            }),
        }))
    }

    /// Whether the server failed a request; a broken server is replaced.
    pub(super) fn is_broken(&self) -> bool {
        self.lock().broken
    }

    /// Asks for `count` workers ahead ([`AHEAD`] at a time), taken by the next calls of
    /// [`fork`](Server::fork).
    pub(super) fn ask_ahead(&self, count: usize) -> io::Result<()> {
        let mut conn = self.lock();
        conn.wanted += count;
        conn.top_up()
    }

    /// Forks a worker, or takes one asked for ahead; then asks for more until `spares` are
    /// on their way: a pool that replaces workers (after deaths, recycles or cancels) then
    /// takes a worker already forked, and the server forks the next while the pool goes
    /// on.
    pub(super) fn fork(self: &Arc<Server>, spares: usize) -> io::Result<Started> {
        let forked = {
            let mut conn = self.lock();
            // Whether the answer taken next was asked for by this call.
            let mut fresh = false;
            let forked = loop {
                if conn.answered.is_empty() {
                    if conn.asked.is_empty() {
                        conn.wanted += 1;
                        conn.top_up()?;
                        fresh = true;
                    }
                    conn.take_answer()?;
                    conn.top_up()?;
                }
                let forked = match conn.answered.pop_front().expect("an answer was just read") {
                    Ok(forked) => forked,
                    // A fork asked for ahead failed then (no memory, too many processes):
                    // the cause may have passed, so it is asked for again now.
                    Err(_) if !fresh => {
                        fresh = true;
                        conn.wanted += 1;
                        conn.top_up()?;
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                if !sys::has_exited(&forked.pidfd) {
                    break forked;
                }
                // A worker forked ahead that died waiting (killed with its process group,
                // or with a server that died: then this WAIT finds the server gone).
                conn.call(WAIT, forked.pid)?;
            };
            let ready = conn.asked.len() + conn.answered.len() + conn.wanted;
            if ready < spares {
                conn.wanted += spares - ready;
                // A failure shows at the next fork.
                let _ = conn.top_up();
            }
            forked
        };
        forked.socket.set_nonblocking(true)?;
        Ok(Started {
            process: Process::forked(forked.pid, forked.pidfd, Arc::clone(self)),
            socket: forked.socket,
            server: Some(self.id),
        })
    }

    /// Reaps the worker `pid`, which has exited or been killed, and says how it ended.
    pub(super) fn wait(&self, pid: u32) -> WorkerExit {
        match self.lock().call(WAIT, pid) {
            Ok((EXITED, code)) => WorkerExit::Code(code as i32),
            Ok((KILLED, signal)) => WorkerExit::Signal(signal as i32),
            _ => WorkerExit::Unknown,
        }
    }

    /// Has the server reap the worker `pid`, which has exited, without waiting for it to.
    /// If the server cannot be asked, the worker is reaped once the server is gone (see
    /// [`Server::reap_when_gone`]).
    pub(super) fn reap(&self, pid: u32, pidfd: OwnedFd) {
        let mut conn = self.lock();
        let request = conn.send(REAP, pid).unwrap_or(u64::MAX);
        conn.unconfirmed.push_back((request, pidfd));
    }

    /// Keeps the pidfd of an exited worker that this server did not reap (it stopped
    /// answering), to reap the worker when the server has been ended: it is an orphan then,
    /// which this process may have adopted (as PID 1, or a child subreaper).
    pub(super) fn reap_when_gone(&self, pidfd: OwnedFd) {
        self.lock().unconfirmed.push_back((u64::MAX, pidfd));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Conn {
    /// Sends FORK requests for the workers wanted, while fewer than [`AHEAD`] are in flight.
    fn top_up(&mut self) -> io::Result<()> {
        while self.wanted > 0 && self.asked.len() < AHEAD {
            self.check()?;
            let (ours, theirs) = UnixStream::pair()?;
            let sent = protocol::write_message(&self.socket, FORK, 0, &[OwnedFd::from(theirs)]);
            self.broken |= sent.is_err();
            sent?;
            self.asked.push_back((self.sent, ours));
            self.sent += 1;
            self.wanted -= 1;
        }
        Ok(())
    }

    /// Reads the answer to the oldest FORK request not answered yet.
    fn take_answer(&mut self) -> io::Result<()> {
        let (request, socket) = self.asked.pop_front().expect("a request was sent");
        let (pid, errno) = self.read(request)?;
        let forked = match (pid, self.fds.pop_front()) {
            (0, _) => Err(io::Error::from_raw_os_error(errno as i32)),
            (pid, Some(pidfd)) => Ok(Forked { pid, pidfd, socket }),
            (_, None) => Err(io::Error::other("the forkserver sent no pidfd")),
        };
        self.answered.push_back(forked);
        Ok(())
    }

    /// Sends one request that is not a FORK and reads its reply, after the answers to the
    /// FORKs before it.
    fn call(&mut self, op: u32, pid: u32) -> io::Result<(u32, u32)> {
        while !self.asked.is_empty() {
            self.take_answer()?;
        }
        let request = self.send(op, pid)?;
        self.read(request)
    }

    /// Sends one request that is not a FORK; returns its number.
    fn send(&mut self, op: u32, pid: u32) -> io::Result<u64> {
        self.check()?;
        let sent = protocol::write_message(&self.socket, op, pid, &[]);
        self.broken |= sent.is_err();
        sent?;
        self.sent += 1;
        Ok(self.sent - 1)
    }

    /// Reads the reply to request number `request`.
    fn read(&mut self, request: u64) -> io::Result<(u32, u32)> {
        self.check()?;
        let reply = protocol::read_message(&self.socket, &mut self.fds)
            .and_then(|reply| reply.ok_or_else(|| io::Error::other("the forkserver exited")));
        self.broken |= reply.is_err();
        if reply.is_ok() {
            while self
                .unconfirmed
                .front()
                .is_some_and(|&(reaped, _)| reaped < request)
            {
                self.unconfirmed.pop_front();
            }
        }
        reply
    }

    fn check(&self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("the forkserver stopped answering"));
        }
        Ok(())
    }
}

/// How long a server whose socket has ended may take to reap what it was asked to and exit.
const SERVER_EXIT: Duration = Duration::from_secs(1);

impl Drop for Server {
    /// Ends the workers asked for ahead and never taken, reaps them, ends the server's
    /// socket and waits for the server to exit (it reaps the workers it was asked to reap
    /// first), killing it if it has not within [`SERVER_EXIT`]. The pool's workers each hold
    /// the server, so this runs after the last has exited: no worker outlives the pool, not
    /// even for the moment it would take one whose server died to die too
    /// (`PR_SET_PDEATHSIG`) and be reaped by someone else.
    fn drop(&mut self) {
        let conn = self.conn.get_mut().unwrap_or_else(PoisonError::into_inner);
        while !conn.asked.is_empty() && conn.take_answer().is_ok() {}
        for forked in std::mem::take(&mut conn.answered).into_iter().flatten() {
            let _ = sys::pidfd_signal(forked.pidfd.as_fd(), sys::SIGKILL);
            if conn.call(WAIT, forked.pid).is_err() {
                // The server stopped answering: reaped below, once it is gone.
                conn.unconfirmed.push_back((u64::MAX, forked.pidfd));
            }
        }
        let _ = conn.socket.shutdown(std::net::Shutdown::Write);
        if let Some(process) = conn.process.take() {
            let grace = if conn.broken {
                Duration::ZERO
            } else {
                SERVER_EXIT
            };
            process.reap_within(grace);
        }
        // Those the server did not reap before it ended are orphans now: this process's own
        // if it adopts orphans (PID 1, or a child subreaper), and then it reaps them. Each
        // has exited or been killed (by this drop, or with its server): its exit shows at
        // once or within moments.
        for (_, pidfd) in conn.unconfirmed.drain(..) {
            let mut fds = [sys::PollFd::new(pidfd.as_raw_fd(), false)];
            let _ = sys::poll(&mut fds, Some(ADOPTED_EXIT));
            let _ = sys::reap_adopted(&pidfd);
        }
    }
}
