#![allow(unsafe_code)]
//! The worker's memory: its resident size as the pool reads it, and the resource limit a
//! worker sets for itself with the handler that tells its allocation failure.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

/// The exit code the `SIGABRT` handler exits with; set before the handler is installed.
static OUT_OF_MEMORY_CODE: AtomicI32 = AtomicI32::new(0);

fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf takes a name and touches no memory of ours.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
    })
}

/// The memory process `pid` holds resident now, in bytes: the second field of
/// `/proc/<pid>/statm` (pages), one small read. `None` once it has exited or where it
/// cannot be read.
pub(crate) fn resident(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// Limits this process's data (its heap and private writable mappings: `RLIMIT_DATA`, soft
/// and hard) to `bytes`, so that an allocation past it fails; and makes the abort that
/// follows such a failure exit with `code` instead (see [`on_abort`]).
pub(crate) fn limit_data(bytes: u64, code: i32) -> io::Result<()> {
    OUT_OF_MEMORY_CODE.store(code, Ordering::SeqCst);
    // SAFETY: `sigaction` is plain data for which all zeroes is a valid value.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_abort as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // Reset to the default on entry: a handler that returns lets `abort` go on and end the
    // process by SIGABRT, as without it.
    action.sa_flags = libc::SA_RESETHAND;
    // SAFETY: installs a handler that makes only async-signal-safe calls (reading errno,
    // `_exit`); `action` lives for the call and the old action is not asked for.
    if unsafe { libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads `limit`, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SIGABRT` in a worker with a memory limit. The standard library aborts when an
/// allocation fails, right after the allocator failed with `ENOMEM` (the message it
/// writes first leaves `errno` alone when the write succeeds): that abort exits with the
/// code set by [`limit_data`]. Any other abort goes on as usual. An abort of another cause
/// while `errno` happens to hold `ENOMEM` is taken for the limit too.
extern "C" fn on_abort(_signal: libc::c_int) {
    // SAFETY: `__errno_location` returns this thread's errno, valid for the thread's life.
    let errno = unsafe { *libc::__errno_location() };
    if errno == libc::ENOMEM {
        // SAFETY: `_exit` is async-signal-safe and ends the process at once.
        unsafe { libc::_exit(OUT_OF_MEMORY_CODE.load(Ordering::SeqCst)) };
    }
}
