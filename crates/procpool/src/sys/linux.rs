#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::time::Duration;

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

    /// An entry that reads as readable, to service a descriptor without polling it.
    pub(crate) fn readable_now() -> PollFd {
        PollFd(libc::pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: libc::POLLIN,
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
/// For kernels without pidfds. The check comes first so that the pid is not a stale one: a
/// child that `try_wait` finds running stays unreaped until this process waits for it, and
/// its pid cannot be reused before then, even if it exits in between (it stays a zombie),
/// unless the program has the kernel reap its children (SIGCHLD ignored), which pidfds,
/// where there are some, make harmless.
pub(crate) fn signal_child(child: &mut Child, signal: libc::c_int) -> bool {
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

/// Eight bytes from the kernel's random source, which nothing outside this process can
/// guess.
pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    loop {
        // SAFETY: getrandom writes at most `bytes.len()` bytes into `bytes`, live for the
        // call.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if n == bytes.len() as isize {
            return u64::from_le_bytes(bytes);
        }
        // Eight bytes never come short once the source is seeded; a signal may interrupt
        // the wait for the seeding at boot. Any other failure (no getrandom, before Linux
        // 3.17) falls back to the time, which is guessable, and so only as good as the
        // nonce's other defences (see `wire::Descriptors`).
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32);
    }
}

/// A descriptor that refers to the process `pid` (Linux 5.3 and later): it becomes readable
/// when the process exits, and signals sent through it can reach no other process, even once
/// the pid is reused. `None` where the kernel has no `pidfd_open` or no such process runs.
///
/// The caller must know that `pid` is its own unreaped child, or a process that cannot have
/// exited and been reaped yet; the descriptor then names that process for good.
pub(crate) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: pidfd_open returned a fresh descriptor (close-on-exec by default) that nothing
    // else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to the process `pidfd` refers to. An error (`ESRCH`) when it has exited;
/// never another process.
pub(crate) fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a descriptor, a signal, a null `siginfo` (which makes
    // it act as kill) and flags; it touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// As [`pidfd_signal`], for a pidfd whose owner keeps it open for the duration of the call.
pub(crate) fn pidfd_signal_raw(pidfd: RawFd, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: the caller's owner of `pidfd` keeps it open while this runs.
    pidfd_signal(unsafe { BorrowedFd::borrow_raw(pidfd) }, signal)
}

pub(crate) use libc::{ENOSYS, SIGKILL, SIGTERM};

/// Whether standard input is a socket, as a worker's is.
pub(crate) fn stdin_is_socket() -> bool {
    // SAFETY: `stat` is plain data for which all zeroes is a valid value.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes only into `stat`, which lives for the call.
    unsafe { libc::fstat(0, &mut stat) == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK }
}

/// `fd` moved to the lowest free descriptor from 3 up, close-on-exec: where a worker started
/// by spawn finds its socket too ([`adopt_socket`]), whatever number it arrived as.
pub(crate) fn renumber_low(fd: OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates `fd`, which the `OwnedFd` keeps open for the call.
    let low = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if low < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `low` is the fresh duplicate made above, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(low) })
}

/// Makes this process die (SIGKILL) when the thread that started it ends, and checks that
/// `parent` has not ended already.
pub(crate) fn die_with_parent(parent: u32) -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } as u32 != parent {
        return Err(io::Error::other("the parent is gone"));
    }
    Ok(())
}

/// The socket a worker was handed as its standard input, moved to a descriptor of its own.
///
/// The parent starts a worker with the socket as stdin, so that the standard library can
/// start it with `posix_spawn` (no code runs between fork and exec). Here, before `main`, the
/// worker makes itself what a worker must be:
/// - it dies with its parent: `PR_SET_PDEATHSIG`, and an exit if the parent (`parent`, the
///   pid the parent put in the environment) is already gone, since then nobody would send
///   the signal;
/// - the socket moves to a close-on-exec descriptor above 2, and stdin becomes `/dev/null`,
///   so a task that reads or closes its stdin cannot touch the socket;
/// - every other descriptor it inherited is closed: ones the parent had without
///   close-on-exec (from a test runner or a shell) would otherwise live on in every worker.
pub(crate) fn adopt_socket(parent: u32) -> io::Result<UnixStream> {
    die_with_parent(parent)?;
    // SAFETY: `stat` is plain data for which all zeroes is a valid value.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes only into `stat`, which lives for the call.
    if unsafe { libc::fstat(0, &mut stat) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "stdin is not a socket",
        ));
    }
    // Close what else came through the exec, first, so that the socket's new descriptor is
    // the lowest free one (3, as a rule): a descriptor without close-on-exec above 2 was
    // inherited (anything this process opened itself, before `main`, is close-on-exec, as
    // the standard library and libc open them).
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        let inherited: Vec<RawFd> = entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<RawFd>().ok())
            .filter(|&fd| fd > 2)
            .collect();
        for fd in inherited {
            // SAFETY: fcntl(F_GETFD) only reads flags; a descriptor without close-on-exec
            // here came from the parent for no one in this process, so closing it takes
            // nothing from an owner. (The directory's own descriptor is close-on-exec.)
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                    libc::close(fd);
                }
            }
        }
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates descriptor 0, just checked to be open.
    let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is the fresh duplicate made above, owned by nothing else; taking it here
    // closes it on every path below.
    let socket = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: open of a constant, NUL-terminated path.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if null < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dup2 and close of descriptors this function opened, and of descriptor 0, which
    // nothing in the process holds before `main` but the inherited socket just duplicated.
    unsafe {
        let moved = libc::dup2(null, 0);
        libc::close(null);
        if moved < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(socket)
}

/// Makes writes to a closed pipe fail with `EPIPE` instead of killing the process, as the
/// standard library's runtime does before `main` (which a worker never reaches).
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to "ignore" installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Ignores SIGTTOU and SIGTTIN, which stop a background process that uses its terminal.
pub(crate) fn ignore_terminal_stops() {
    // SAFETY: setting a signal's disposition to "ignore" installs no handler code.
    unsafe {
        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::signal(libc::SIGTTIN, libc::SIG_IGN);
    }
}

/// Removes a variable from this process's environment.
///
/// Only called by the worker entry before `main`, while the process has one thread.
pub(crate) fn remove_env_before_main(key: &str) {
    // SAFETY: called before `main`, when no other thread exists that could read the
    // environment concurrently.
    unsafe { std::env::remove_var(OsStr::new(key)) };
}

/// How many times the processes this one descends from, and it, were made by `fork` since
/// the count began: a pool remembers it when it is built, and a different count means the
/// pool is a copy in a forked child, where its supervisor thread does not exist.
pub(crate) fn fork_generation() -> u64 {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: pthread_atfork registers a handler that only increments an atomic, which
        // is async-signal-safe, as a handler run in the child of a fork must be.
        unsafe { libc::pthread_atfork(None, None, Some(count_fork)) };
    });
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}

static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn count_fork() {
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the process `pid` is stopped by a signal (state `T` in `/proc/PID/stat`). The
/// caller holds `pid` unreaped, so it names that process.
pub(crate) fn is_stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold any byte.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "T")
}

/// The most memory process `pid` has held resident, in bytes: its `VmHWM` in
/// `/proc/<pid>/status`. `None` once it has exited (a zombie has no memory left to report),
/// or where it cannot be read.
pub(crate) fn peak_resident(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// The most memory this process has held resident, in bytes, from `getrusage`: its
/// `VmHWM` in a process that was forked and has not exec'd since. (After an exec, the count
/// starts from the memory of the process that exec'd, which for a process spawned with
/// `vfork` is the spawner's.)
pub(crate) fn peak_resident_forked() -> Option<u64> {
    // SAFETY: `rusage` is plain data for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into `usage`, which lives for the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    u64::try_from(usage.ru_maxrss).ok().map(|kib| kib * 1024)
}

/// Which side of a [`fork`] this is.
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The process that forked, with the child's pid.
    Parent(u32),
}

/// Forks this process.
///
/// Only the forkserver calls it, and the forkserver has one thread (it is entered before
/// `main` and starts none), so the child inherits no lock held by another thread, and may
/// allocate and run any code.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory preconditions; in a process with one thread the child's
    // copy of its state is consistent (see above).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as u32)),
    }
}

/// How a child ended, as `wait` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitStatus {
    Code(i32),
    Signal(i32),
}

/// Waits for the child `pid` to exit and reaps it.
pub(crate) fn wait_child(pid: u32) -> io::Result<WaitStatus> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("no such pid"))?;
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes only into `status`, which lives for the call.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let error = io::Error::last_os_error();
        if r < 0 && error.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(error);
    }
    if libc::WIFSIGNALED(status) {
        Ok(WaitStatus::Signal(libc::WTERMSIG(status)))
    } else {
        Ok(WaitStatus::Code(libc::WEXITSTATUS(status)))
    }
}

/// Gives `SIGCHLD` its default disposition: a program that ignores it passes that on through
/// exec, and then the kernel reaps children at once and their exit statuses are lost.
pub(crate) fn default_sigchld() {
    // SAFETY: setting a signal's disposition to the default installs no handler code.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
}

/// Kills `pid`, a child of this process that it has not reaped.
pub(crate) fn kill_child(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory effects; an unreaped child's pid names that child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// This thread's name (`/proc/self/comm` for a process with one thread): at most 15 bytes.
pub(crate) fn thread_name() -> [u8; 16] {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into the buffer.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    name
}

/// Names this thread (and, for a process with one thread, the process as `ps` shows it);
/// `name` is NUL-terminated, as [`thread_name`] gives it; the kernel keeps 15 bytes.
pub(crate) fn set_thread_name(name: &[u8; 16]) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes; the last byte
    // of a name from `thread_name` is NUL, and the kernel stops at 16 bytes in any case.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// Whether the process a pidfd refers to has exited (the pidfd is readable); never waits.
pub(crate) fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd.as_raw_fd(), false)];
    poll(&mut fds, Some(Duration::ZERO)).is_ok_and(|n| n > 0)
}

/// Makes this process the leader of a process group of its own, as a spawned worker is:
/// a task that signals its group (`kill(0, …)`, a shell's `trap 'kill 0' EXIT`) then
/// reaches its own worker and what it started, no other worker.
pub(crate) fn own_process_group() {
    // SAFETY: setpgid of this process, with no memory effects.
    unsafe { libc::setpgid(0, 0) };
}

/// Reaps the exited process `pidfd` refers to, if it has become a child of this process
/// (an orphan this process adopted: it is PID 1, or a child subreaper); never waits.
pub(crate) fn reap_adopted(pidfd: &OwnedFd) -> Option<WaitStatus> {
    // SAFETY: `siginfo_t` is plain data for which all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes only into `info`, which lives for the call; the pidfd is open.
    let r = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    // SAFETY: waitid filled `info` (its pid is 0 when nothing was reaped).
    if r != 0 || unsafe { info.si_pid() } == 0 {
        return None;
    }
    // SAFETY: as above, for a child that was reaped.
    let status = unsafe { info.si_status() };
    Some(if info.si_code == libc::CLD_EXITED {
        WaitStatus::Code(status)
    } else {
        WaitStatus::Signal(status)
    })
}
