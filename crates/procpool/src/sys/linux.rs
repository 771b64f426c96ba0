#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

/// The descriptor number a worker finds its socket at.
pub(crate) const WORKER_FD: RawFd = 3;

/// One entry for [`poll`].
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub(crate) struct PollFd(libc::pollfd);

impl PollFd {
    pub(crate) fn new(fd: RawFd, write: bool) -> PollFd {
        let events = libc::POLLIN | if write { libc::POLLOUT } else { 0 };
        PollFd(libc::pollfd {
            fd,
            events,
            revents: 0,
        })
    }

    pub(crate) fn readable(&self) -> bool {
        self.0.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
    }

    pub(crate) fn writable(&self) -> bool {
        self.0.revents & libc::POLLOUT != 0
    }
}

/// Waits until one of `fds` is ready or `timeout` passes (forever when `None`).
pub(crate) fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let timeout = match timeout {
        None => -1,
        // Round up, so that a wait for a deadline does not wake just before it.
        Some(t) => i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
    };
    // SAFETY: `PollFd` is a `repr(transparent)` wrapper of `libc::pollfd`, and the
    // pointer and length describe the caller's live, exclusively borrowed slice.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr().cast::<libc::pollfd>(),
            fds.len() as libc::nfds_t,
            timeout,
        )
    };
    if n < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(error);
    }
    Ok(n as usize)
}

/// Sends `signal` to a child that has not exited yet; returns false (and sends nothing) if it
/// has exited, in which case it is now reaped.
///
/// The check comes first so that the pid is never a stale one: a child that `try_wait` finds
/// running stays unreaped until this process waits for it, and its pid cannot be reused
/// before then, even if it exits in between (it stays a zombie).
fn signal_child(child: &mut Child, signal: libc::c_int) -> bool {
    if !matches!(child.try_wait(), Ok(None)) {
        return false;
    }
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return false;
    };
    // SAFETY: kill has no memory effects; `pid` is an unreaped child of ours (checked above),
    // so it names that child and no other process.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Asks a child to stop (SIGTERM); false if it has already exited (it is now reaped).
pub(crate) fn ask_to_stop(child: &mut Child) -> bool {
    signal_child(child, libc::SIGTERM)
}

/// A descriptor that becomes readable when `child` exits (Linux 5.3 and later), or `None`
/// where the kernel has no `pidfd_open` or the child has already exited and been reaped.
pub(crate) fn exit_fd(child: &mut Child) -> Option<OwnedFd> {
    if !matches!(child.try_wait(), Ok(None)) {
        return None;
    }
    let pid = libc::pid_t::try_from(child.id()).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; `pid` is an
    // unreaped child of ours (checked above), so it cannot name another process.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: pidfd_open returned a fresh descriptor (close-on-exec by default) that nothing
    // else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets up `command` so that the child finds `socket` at [`WORKER_FD`] and is killed when the
/// thread that spawns it exits (the supervisor thread, which lives as long as the pool).
pub(crate) fn hand_over_socket(command: &mut Command, socket: &UnixStream) {
    let fd = socket.as_raw_fd();
    // SAFETY: `getpid` has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (dup2, fcntl, close_range, prctl, getppid), touching no memory the parent's threads own.
    unsafe {
        command.pre_exec(move || {
            if fd == WORKER_FD {
                // dup2 onto itself keeps close-on-exec set; clear it instead.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, WORKER_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            // Hand over nothing else: descriptors the parent inherited without close-on-exec
            // (from a test runner or a shell) would otherwise live on in every worker. They
            // are marked close-on-exec rather than closed, so that the standard library's
            // own pipe for reporting a failed exec still works until the exec. An old kernel
            // without close_range leaves them, which is harmless.
            libc::syscall(
                libc::SYS_close_range,
                WORKER_FD + 1,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody would send the signal.
            if libc::getppid() != parent {
                libc::_exit(111);
            }
            Ok(())
        });
    }
}

/// The socket a worker inherited at [`WORKER_FD`], checked to be a socket and made
/// close-on-exec so that processes the worker's tasks start do not inherit it.
pub(crate) fn inherited_socket() -> io::Result<UnixStream> {
    // SAFETY: `stat` is plain data for which all zeroes is a valid value.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes only into `stat`, which lives for the call.
    if unsafe { libc::fstat(WORKER_FD, &mut stat) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptor 3 is not a socket",
        ));
    }
    // SAFETY: fcntl on a descriptor just checked to be open.
    if unsafe { libc::fcntl(WORKER_FD, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the parent handed this descriptor over for the worker alone, nothing else in
    // this process owns it, and it is taken exactly once (the worker entry runs once).
    Ok(unsafe { UnixStream::from_raw_fd(WORKER_FD) })
}

/// Makes writes to a closed pipe fail with `EPIPE` instead of killing the process, as the
/// standard library's runtime does before `main` (which a worker never reaches).
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to "ignore" installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Removes a variable from this process's environment.
///
/// Only called by the worker entry before `main`, while the process has one thread.
pub(crate) fn remove_env_before_main(key: &str) {
    // SAFETY: called before `main`, when no other thread exists that could read the
    // environment concurrently.
    unsafe { std::env::remove_var(OsStr::new(key)) };
}

extern "C" fn worker_entry() {
    crate::worker::enter_if_worker();
}

/// The automatic worker entry: runs before `main` in every process of a binary that links
/// procpool, and turns the process into a worker when its environment says so.
#[used]
#[unsafe(link_section = ".init_array")]
static WORKER_ENTRY: extern "C" fn() = worker_entry;

/// Keeps [`WORKER_ENTRY`] in the final binary: the linker drops an object file of the library
/// that nothing refers to, and with it the entry.
pub(crate) fn keep_worker_entry() {
    std::hint::black_box(&WORKER_ENTRY);
}
