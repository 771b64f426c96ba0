//! The forkserver: a process started by spawn, as a worker is, that forks workers when its
//! pool asks and reaps them when the pool asks how they ended.
//!
//! It is entered before `main` and starts no thread, so it has one thread when it forks:
//! the child inherits no lock another thread held, and runs the worker's code at once. The
//! pool's end is `start::forkserver`.
//!
//! The protocol, over the socket the server has as stdin: each request is 8 bytes, an
//! operation and a pid (little-endian `u32`s), and each reply is 8 bytes.
//! - [`FORK`], with the new worker's socket attached: the server forks a child that serves
//!   as a worker on that socket; the reply is the child's pid and 0, with a pidfd of the
//!   child attached, or 0 and an `errno`.
//! - [`WAIT`] a pid: the server waits for that child of its own and reaps it; the reply is
//!   [`EXITED`] and the code, [`KILLED`] and the signal, or [`UNKNOWN`] and 0.
//! - [`REAP`] a pid that has exited: the server reaps it, and there is no reply. The pool
//!   asks so for a worker whose end says nothing it needs (one it retired), and goes on
//!   without a round trip.
//!
//! The server dies with the thread that started it (`PR_SET_PDEATHSIG`), and its workers die
//! with it; it exits when its socket ends, after the requests before the end. It names
//! itself `pp-forkserver`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use crate::sys::{self, Forked, WaitStatus};

/// The environment variable that marks a process as a forkserver; its value is the pool's
/// pid.
pub(crate) const ENV: &str = "PROCPOOL_FORKSERVER";

/// The name the server goes by in `ps` (its workers keep the program's).
const NAME: &[u8; 16] = b"pp-forkserver\0\0\0";

/// Fork a worker on the attached socket.
pub(crate) const FORK: u32 = 1;
/// Wait for a worker and say how it ended.
pub(crate) const WAIT: u32 = 2;
/// Reap a worker that has exited, without a reply.
pub(crate) const REAP: u32 = 3;

/// A [`WAIT`] reply: the worker exited with the code that follows.
pub(crate) const EXITED: u32 = 0;
/// A [`WAIT`] reply: the worker was killed by the signal that follows.
pub(crate) const KILLED: u32 = 1;
/// A [`WAIT`] reply: the worker's status could not be read.
pub(crate) const UNKNOWN: u32 = 2;

/// One request or reply: two little-endian `u32`s.
fn message(a: u32, b: u32) -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&a.to_le_bytes());
    out[4..].copy_from_slice(&b.to_le_bytes());
    out
}

/// Reads one 8-byte message and the descriptors that came with it; `None` at the end of the
/// stream before its first byte.
pub(crate) fn read_message(
    socket: &UnixStream,
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<Option<(u32, u32)>> {
    let mut buf = [0u8; 8];
    let mut read = 0;
    while read < buf.len() {
        match sys::recv(socket, &mut buf[read..], Some(fds)) {
            Ok(0) if read == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let a = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
    let b = u32::from_le_bytes(buf[4..].try_into().expect("4 bytes"));
    Ok(Some((a, b)))
}

/// Writes one message with `fds` attached.
pub(crate) fn write_message(
    socket: &UnixStream,
    a: u32,
    b: u32,
    fds: &[OwnedFd],
) -> io::Result<()> {
    let bytes = message(a, b);
    let mut written = 0;
    while written < bytes.len() {
        let attach = if written == 0 { fds } else { &[] };
        match sys::send(socket, &[io::IoSlice::new(&bytes[written..])], attach) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Serves the pool (`parent`) until its socket ends; in a forked child, serves as a worker
/// and never returns.
pub(super) fn serve(parent: u32) -> io::Result<()> {
    let control = sys::adopt_socket(parent)?;
    // Its children's statuses are what the pool asks for.
    sys::default_sigchld();
    let program = sys::thread_name();
    sys::set_thread_name(NAME);
    let server = std::process::id();
    // Built once here, and shared by every worker forked after.
    crate::registry::build_index();
    super::install_panic_hook();
    let mut fds = VecDeque::new();
    while let Some((op, pid)) = read_message(&control, &mut fds)? {
        match op {
            FORK => {
                let socket = sys::claim(&mut fds, 1)
                    .and_then(|mut socket| socket.pop())
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "a FORK without a socket")
                    })?;
                match sys::fork() {
                    Ok(Forked::Child) => {
                        drop(control);
                        drop(fds);
                        sys::set_thread_name(&program);
                        sys::own_process_group();
                        // Its stdin is the server's, `/dev/null`, and it holds no descriptor
                        // but those the server had open, all close-on-exec: unlike a worker
                        // started by spawn, it has nothing to adopt or close. Its socket
                        // takes the number a spawned worker's has (3, as a rule).
                        let socket = sys::die_with_parent(server)
                            .and_then(|()| sys::renumber_low(socket))
                            .map(UnixStream::from);
                        // Exit handlers run, as in a spawned worker: a task may have
                        // registered one.
                        std::process::exit(super::serve_on(socket, true));
                    }
                    Ok(Forked::Parent(child)) => {
                        drop(socket);
                        match sys::pidfd_open(child) {
                            Some(pidfd) => write_message(&control, child, 0, &[pidfd])?,
                            None => {
                                // The pool signals and watches its workers through pidfds.
                                let errno = io::Error::last_os_error().raw_os_error();
                                sys::kill_child(child);
                                let _ = sys::wait_child(child);
                                let errno = errno.unwrap_or(sys::ENOSYS) as u32;
                                write_message(&control, 0, errno, &[])?;
                            }
                        }
                    }
                    Err(error) => {
                        let errno = error.raw_os_error().unwrap_or(0) as u32;
                        write_message(&control, 0, errno, &[])?;
                    }
                }
            }
            WAIT => {
                let (kind, value) = match sys::wait_child(pid) {
                    Ok(WaitStatus::Code(code)) => (EXITED, code as u32),
                    Ok(WaitStatus::Signal(signal)) => (KILLED, signal as u32),
                    Err(_) => (UNKNOWN, 0),
                };
                write_message(&control, kind, value, &[])?;
            }
            REAP => {
                let _ = sys::wait_child(pid);
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown forkserver request {op}"),
                ));
            }
        }
    }
    Ok(())
}
