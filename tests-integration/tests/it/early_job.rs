//! A forked replacement's first job, sent with its SETUP before the worker is ready: it goes
//! back to the queue only when it cannot have run, and a stopped worker holding one ends as
//! any worker does. Forkserver only, as the early job is.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use procpool::{ErrorKind, Event, Events, Pool, SharedBytes, WorkerExit, test_hooks};
use tests_integration::{
    Rendezvous, adopt_orphans, assert_no_children, children_of, finish, forkservers,
    recycling_forkserver_pool, serial,
};

use crate::tasks::{hold, pid, square, wait_for};

/// Appends a line to `path`, to count its runs, then returns `n` shared buffers.
#[procpool::task]
fn counted_shared(path: String, n: usize) -> Vec<SharedBytes> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .unwrap();
    file.write_all(b"ran\n").unwrap();
    drop(file);
    (0..n)
        .map(|i| SharedBytes::copy_from_slice(&[i as u8]).unwrap())
        .collect()
}

/// Puts this thread (and the threads and processes it starts, which inherit it) on one CPU
/// under SCHED_FIFO where the process may: a woken worker then runs only once the
/// supervisor waits, so the race these tests are about always goes the supervisor's way.
/// Where it may not (no CAP_SYS_NICE), the tests run as they are and the race goes either
/// way; what they assert holds both ways.
fn one_cpu_fifo() {
    // SAFETY: `cpu_set_t` is plain data, all zeroes valid; the calls read what they are
    // given for their duration.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        let param = libc::sched_param { sched_priority: 1 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param);
    }
}

/// Sets the soft limit on open files; returns the one before.
fn set_open_files_limit(soft: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only `limit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let before = limit.rlim_cur;
        limit.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        before
    }
}

#[test]
fn a_first_job_sent_with_the_handshake_waits_again_when_its_worker_dies_before_ready() {
    let _serial = serial();
    adopt_orphans();
    let pool = recycling_forkserver_pool(1);
    let events = pool.subscribe();
    let first = pool.apply(pid, ()).unwrap();
    // The first worker's READY showed that the server's workers hold this program's tasks:
    // from here on, a replacement gets its first job with its SETUP. The second worker holds
    // a call at the rendezvous while the next call waits in the queue.
    let rendezvous = Rendezvous::new();
    let held = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let arrival = rendezvous.arrive();
    let second = arrival.pid;
    let queued = pool.apply_async(pid, ()).unwrap();
    let die = Removed(test_hooks::die_before_ready_file(std::process::id()));
    std::fs::write(&die.0, b"").unwrap();
    // Released, the second worker is replaced; the replacement gets the queued call with its
    // SETUP, takes the file and exits before its READY: the call waits for the worker after.
    arrival.release(1);
    assert_eq!(held.get().unwrap(), 1);
    let ran_on = queued.get().unwrap();
    assert!(!die.0.exists(), "a worker took the file and exited");
    assert!(![first, second].contains(&ran_on));
    finish(pool);
    let events: Vec<Event> = events.collect();
    let died = events
        .iter()
        .find_map(|event| match event {
            Event::WorkerExited {
                worker,
                exit: WorkerExit::Code(test_hooks::DIED_BEFORE_READY),
                killed_by_pool: false,
            } => Some(worker.pid),
            _ => None,
        })
        .expect("the worker that took the file exited by itself");
    // The job it was sent started there and again on the next worker, and finished once,
    // with no failure.
    let job = events
        .iter()
        .find_map(|event| match event {
            Event::Started { job, worker } if worker.pid == died => Some(*job),
            _ => None,
        })
        .expect("a job was sent to the worker before it was ready");
    let started_on: Vec<u32> = events
        .iter()
        .filter_map(|event| match event {
            Event::Started { job: j, worker } if *j == job => Some(worker.pid),
            _ => None,
        })
        .collect();
    assert_eq!(started_on, [died, ran_on], "{events:?}");
    let finished: Vec<usize> = events
        .iter()
        .filter_map(|event| match event {
            Event::Finished { job: j, failed, .. } if *j == job => Some(*failed),
            _ => None,
        })
        .collect();
    assert_eq!(finished, [0], "{events:?}");
}

/// Every free descriptor number below a limit taken, but for a few, and the soft limit on
/// open files lowered to it: this process can take in only those few more descriptors until
/// this is dropped, which gives them back and restores the limit (on a panic too).
struct FewFreeDescriptors {
    placeholders: Vec<OwnedFd>,
    before: u64,
}

impl FewFreeDescriptors {
    fn leave(limit: i32, free: i32) -> FewFreeDescriptors {
        let mut placeholders = Vec::new();
        loop {
            // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor, which is owned from here on.
            let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 0) };
            assert!(fd >= 0);
            // SAFETY: `fd` was just made and nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            if fd.as_raw_fd() >= limit {
                break;
            }
            placeholders.push(fd);
        }
        placeholders.retain(|fd| fd.as_raw_fd() < limit - free);
        let before = set_open_files_limit(limit as u64);
        FewFreeDescriptors {
            placeholders,
            before,
        }
    }
}

impl Drop for FewFreeDescriptors {
    fn drop(&mut self) {
        self.placeholders.clear();
        set_open_files_limit(self.before);
    }
}

/// A file removed when this is dropped, on a panic too.
struct Removed(std::path::PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A worker that wrote READY, ran its first job and wrote its RESULTS, all before the pool
/// read any of it: when the READY and the RESULTS come in one read, and that read fails (the
/// pool's process has no room for the results' descriptors), the READY is lost with it. The
/// job ran: it must not run again.
#[test]
fn a_first_job_that_ran_runs_once_when_its_ready_is_lost_with_a_failed_read() {
    let _serial = serial();
    one_cpu_fifo();
    // The starved descriptors can break the pool's connection to its forkserver too (a
    // worker's pidfd that does not come through), and the server is replaced; a spare the
    // old one had forked, whose pidfd never came, dies with it. A process that adopts
    // orphans (another test of this process, under `cargo test`) would be left to reap it.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer and touches no memory.
    let unset = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
    assert_eq!(unset, 0);
    let pool = recycling_forkserver_pool(1);
    let runs =
        Removed(std::env::temp_dir().join(format!("procpool-early-runs-{}", std::process::id())));
    let _ = std::fs::remove_file(&runs.0);
    let rendezvous = Rendezvous::new();
    let held = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let arrival = rendezvous.arrive();
    // Queued behind the held job: it goes to the replacement with its SETUP.
    let job = pool
        .apply_async(counted_shared, (runs.0.to_string_lossy().into_owned(), 300))
        .unwrap();
    let starved = FewFreeDescriptors::leave(1000, 40);
    arrival.release(1);
    assert_eq!(held.get().unwrap(), 1);
    let outcome = job.get();
    drop(starved);
    let ran = std::fs::read_to_string(&runs.0)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(
        ran, 1,
        "the job, which has no retries, ran {ran} times: {outcome:?}"
    );
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9, "the pool carries on");
    finish(pool);
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory effects; `pid` is a worker of this process's pool.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// A recycling pool of 1 whose next worker, a spare forked ahead, was stopped (SIGSTOP)
/// before its SETUP, and a job that went to it with the SETUP (`Started` on it, and no
/// READY from it). Returns the pool, its events, the spare and the job.
fn early_job_on_a_stopped_spare<R: serde::de::DeserializeOwned + 'static>(
    submit: impl FnOnce(&Pool) -> procpool::AsyncResult<R>,
) -> (Pool, Events, u32, procpool::AsyncResult<R>) {
    adopt_orphans();
    let pool = recycling_forkserver_pool(1);
    let events = pool.subscribe();
    let first = pool.apply(pid, ()).unwrap();
    let servers = forkservers();
    assert_eq!(servers.len(), 1, "{servers:?}");
    let server = servers[0];
    let rendezvous = Rendezvous::new();
    let held = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let arrival = rendezvous.arrive();
    let second = arrival.pid;
    // The spare the server forked ahead when the second worker was taken.
    let mut spare = 0;
    wait_for("a spare is forked", || {
        let others: Vec<u32> = children_of(server)
            .into_iter()
            .filter(|&p| p != first && p != second)
            .collect();
        match others[..] {
            [one] => {
                spare = one;
                true
            }
            _ => false,
        }
    });
    signal(spare, libc::SIGSTOP);
    let job = submit(&pool);
    arrival.release(1);
    assert_eq!(held.get().unwrap(), 1);
    loop {
        match events
            .next_timeout(Duration::from_secs(30))
            .expect("an event")
        {
            Event::WorkerReady(worker) if worker.pid == spare => {
                panic!("a stopped worker is ready")
            }
            Event::Started { worker, .. } if worker.pid == spare => break,
            _ => {}
        }
    }
    (pool, events, spare, job)
}

#[test]
fn a_first_job_cancelled_before_its_worker_is_ready_ends_cancelled() {
    let _serial = serial();
    let (pool, _events, spare, job) =
        early_job_on_a_stopped_spare(|pool| pool.apply_async(square, (7,)).unwrap());
    job.cancel();
    let error = job.get_timeout(Duration::from_secs(30)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Cancelled, "{error}");
    wait_for("the stopped worker is gone", || {
        std::fs::read_to_string(format!("/proc/{spare}/stat")).is_err()
    });
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    finish(pool);
}

#[test]
fn a_first_job_on_a_worker_not_ready_runs_after_close_and_ends_at_terminate() {
    let _serial = serial();
    let (pool, _events, spare, job) =
        early_job_on_a_stopped_spare(|pool| pool.apply_async(pid, ()).unwrap());
    pool.close();
    signal(spare, libc::SIGCONT);
    assert_eq!(job.get_timeout(Duration::from_secs(30)).unwrap(), spare);
    pool.join().unwrap();
    assert_no_children();

    let (pool, _events, _spare, job) =
        early_job_on_a_stopped_spare(|pool| pool.apply_async(pid, ()).unwrap());
    pool.terminate();
    let error = job.get_timeout(Duration::from_secs(30)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Terminated, "{error}");
    pool.join().unwrap();
    assert_no_children();
}
