//! Watching descriptors for a short while before sleeping on them, where that pays off.
//!
//! Sleeping in `poll` or `read` and being woken costs a few microseconds, and on a virtual
//! machine whose idle CPUs halt, some tens: more than a short call takes. So both ends of a
//! call watch for the other's answer for a moment first: a worker for the next job (which a
//! loop of `apply`, or maps in turn, sends within microseconds of the last result), a caller
//! for its results. They yield the CPU between looks, so that whatever else wants it gets
//! it.
//!
//! Yielding has a bad case: with more runnable threads than CPUs, a thread that yields can
//! hand its CPU to another process for a whole time slice, some milliseconds, and lose the
//! head start a sleeper gets when it is woken (two CPU hogs beside a pool of two on two CPUs
//! are enough). So a watch that ends with nothing, or that took longer than its window,
//! makes the next waits sleep at once: one after the first such watch, then twice as many
//! each time, up to [`MAX_SKIP`]; a watch that pays off halves the count.
//!
//! Watching also holds a CPU that a worker may need. A caller whose workers take every CPU
//! (a pool of 2 on 2 CPUs) therefore watches only for the last results of a call, once it
//! has no jobs left to feed them (see `supervisor::borrow`): a caller that watched while it
//! still fed jobs would hold the CPU that a worker needs, and the scheduler would often
//! queue one worker behind the other for a whole time slice.

use std::time::{Duration, Instant};

use crate::sys::{self, PollFd};

/// How long a waiter watches before it sleeps: a worker for its next job, a caller for its
/// results. Between two maps a worker waits for the other workers' results to come in and
/// the caller's next map to go out, which often takes longer than 50 µs. An idle pool costs this much CPU
/// per worker after its last job, then none.
pub(crate) const WINDOW: Duration = Duration::from_micros(200);

/// The most waits that go straight to sleep after watches that did not pay off.
pub(crate) const MAX_SKIP: u32 = 1024;

/// Whether watching has been paying off, from the last watches of one waiter.
#[derive(Debug, Default)]
pub(crate) struct Watcher {
    /// Waits left that go straight to sleep, and how many the last failed watch set.
    skip: u32,
    backoff: u32,
}

impl Watcher {
    /// Whether this wait should watch first; if not, one of the waits to skip is used up.
    pub(crate) fn should_watch(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// Records how a watch went.
    pub(crate) fn record(&mut self, paid_off: bool) {
        if paid_off {
            self.backoff /= 2;
        } else {
            self.backoff = (self.backoff * 2).clamp(1, MAX_SKIP);
            self.skip = self.backoff;
        }
    }
}

/// What a watch found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Watched {
    /// One of the descriptors became ready.
    pub(crate) ready: bool,
    /// It did within the window: the watch saved a wake-up.
    pub(crate) paid_off: bool,
}

/// Polls `fds` without blocking, yielding between looks, until one is ready or `window` has
/// passed. What the last poll found stays in `fds`.
pub(crate) fn watch(fds: &mut [PollFd], window: Duration) -> Watched {
    watch_by(window, || {
        sys::poll(fds, Some(Duration::ZERO)).is_ok_and(|ready| ready > 0)
    })
}

/// As [`watch`], with `look` saying whether what is watched is ready: a look that reads
/// what came, where it can, costs one system call where a poll and a read cost two.
pub(crate) fn watch_by(window: Duration, mut look: impl FnMut() -> bool) -> Watched {
    let started = Instant::now();
    loop {
        let ready = look();
        let late = started.elapsed() > window;
        if ready || late {
            return Watched {
                ready,
                paid_off: ready && !late,
            };
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_watch_that_finds_nothing_backs_off_twice_as_long_each_time() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut fds = [PollFd::new(ours.as_raw_fd(), false)];
        let window = Duration::from_micros(50);
        let mut watcher = Watcher::default();
        let mut watches = 0;
        let mut wait = |watcher: &mut Watcher| {
            if watcher.should_watch() {
                watches += 1;
                let watched = watch(&mut fds, window);
                assert!(!watched.ready && !watched.paid_off);
                watcher.record(watched.paid_off);
            }
        };
        wait(&mut watcher);
        assert_eq!((watcher.skip, watcher.backoff), (1, 1));
        wait(&mut watcher);
        assert_eq!(watcher.skip, 0, "the second wait went straight to sleep");
        wait(&mut watcher);
        assert_eq!((watcher.skip, watcher.backoff), (2, 2));
        for _ in 0..10_000 {
            wait(&mut watcher);
        }
        assert_eq!(watcher.backoff, MAX_SKIP);
        assert!(
            watches < 30,
            "{watches} watches: the back-off skips most waits"
        );
    }

    #[test]
    fn a_watch_that_pays_off_halves_the_back_off() {
        let mut watcher = Watcher::default();
        for _ in 0..3 {
            watcher.record(false);
        }
        assert_eq!(watcher.backoff, 4);
        watcher.record(true);
        assert_eq!(watcher.backoff, 2);
    }

    #[test]
    fn a_watch_ends_as_soon_as_there_is_something_to_read() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut theirs, b"x").unwrap();
        let mut fds = [PollFd::new(ours.as_raw_fd(), false)];
        // A window far longer than any test: the watch must end on the byte, not on time.
        let watched = watch(&mut fds, Duration::from_secs(60));
        assert!(watched.ready);
    }
}
