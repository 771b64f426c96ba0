//! What a hostile task cannot do: hang a call by writing on its worker's socket, steal a
//! result through a forked copy of the pool, make another call pay for what it wrote, or be
//! killed by the terminal's signals.

use std::time::{Duration, Instant};

use procpool::{ApplyOptions, ErrorKind, SharedBytes};
use tests_integration::{Rendezvous, finish, meet, pool, serial};

use crate::tasks::{square, wait_for};

/// Writes `text` on the worker's own socket (the one descriptor of the worker that is a
/// socket), as a task that scribbles on a descriptor it does not own would, and returns.
#[procpool::task]
fn scribble(text: String) -> u32 {
    let mut written = 0;
    for fd in 3..256 {
        // SAFETY: `stat` is plain data; fstat writes only into it.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on any number is safe; a closed one fails.
        if unsafe { libc::fstat(fd, &mut stat) } == 0
            && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK
        {
            // SAFETY: write from a live buffer of the length given.
            let n = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
            assert_eq!(n, text.len() as isize, "the write went through");
            written += 1;
        }
    }
    written
}

#[test]
fn bytes_a_task_writes_on_its_socket_end_its_worker_at_once() {
    let _serial = serial();
    let pool = pool(2);
    let bound = Duration::from_secs(60);
    for text in ["Hi, world\n", "{\"a\":1}", "abc"] {
        // Through the supervisor, waiting with a generous bound: the call must end, as a
        // dead worker's, not run out the bound.
        let pending = pool.apply_async(scribble, (text.to_string(),)).unwrap();
        let error = pending.get_timeout(bound).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::WorkerDied, "{text:?}: {error}");
        assert!(error.to_string().contains("not a frame"), "{error}");
        // On a borrowed worker, with a task timeout that must not be what ends it.
        let options = ApplyOptions::new().timeout(bound);
        let error = pool
            .apply_with(scribble, (text.to_string(),), options)
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::WorkerDied, "{text:?}: {error}");
        assert!(error.to_string().contains("not a frame"), "{error}");
    }
    assert_eq!(pool.apply(square, (4,)).unwrap(), 16, "the pool carries on");
    let stats = pool.stats();
    assert_eq!(stats.worker_deaths, 6);
    assert_eq!(stats.in_flight, 0);
    finish(pool);
}

/// The worker's own socket, as a task finds it: the one descriptor from 3 on that is a
/// socket.
fn own_socket() -> i32 {
    (3..256)
        .find(|&fd| {
            // SAFETY: `stat` is plain data; fstat writes only into it.
            let mut stat: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat on any number is safe; a closed one fails.
            let open = unsafe { libc::fstat(fd, &mut stat) } == 0;
            open && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK
        })
        .expect("a worker has its socket")
}

/// Waits (up to 30 s) until at least `n` bytes the parent wrote wait on the worker's socket;
/// returns how many do.
fn wait_queued(n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int into `queued`, live for the call.
        let asked = unsafe { libc::ioctl(own_socket(), libc::FIONREAD, &mut queued) };
        assert_eq!(asked, 0, "FIONREAD on the worker's socket");
        if queued as usize >= n {
            return queued as usize;
        }
        assert!(Instant::now() < deadline, "{queued} bytes came, not {n}");
        std::thread::yield_now();
    }
}

/// Writes a whole frame of body `body` on the worker's socket, as a task that knows the wire
/// (`src/wire/README.md`) could.
fn forge(body: &[u8]) {
    let len = body.len() as u32;
    let magic = u32::from_le_bytes(*b"PPL1");
    let check = (len ^ magic).wrapping_mul(0x9E37_79B9).rotate_left(15) ^ 0x5050_4C32;
    let frame = [&len.to_le_bytes()[..], &check.to_le_bytes(), body].concat();
    // SAFETY: write from a live buffer of the length given.
    let n = unsafe { libc::write(own_socket(), frame.as_ptr().cast(), frame.len()) };
    assert_eq!(n, frame.len() as isize, "the frame is written whole");
}

/// A handshake frame (tag, then a nonce) takes 17 bytes on the wire.
const HANDSHAKE_FRAME: usize = 8 + 1 + 8;

/// The tags of the worker's OFFER and TAKING (`src/wire/README.md`).
const WORKER_OFFER: u8 = 14;
const WORKER_TAKING: u8 = 15;

/// Forges a handshake frame of the worker's: `tag`, then `nonce`.
fn forge_handshake(tag: u8, nonce: &[u8]) {
    forge(&[&[tag][..], nonce].concat());
}

/// Meets the test at `path`; once the next call's job has come on the socket behind this
/// one, forges the worker's OFFER of descriptors, without reading anything, and returns.
#[procpool::task]
fn forge_offer(path: String) -> u64 {
    meet(&path);
    wait_queued(1);
    forge_handshake(WORKER_OFFER, &0u64.to_le_bytes());
    7
}

/// Meets the test at `path`; once the parent's OFFER of descriptors for the job held behind
/// this one has come, forges the worker's TAKING: with a guessed nonce, or, if `peek`, with
/// the OFFER's own, read off the socket and left there.
#[procpool::task]
fn forge_taking(path: String, peek: bool) -> u64 {
    meet(&path);
    wait_queued(HANDSHAKE_FRAME);
    let mut offer = [0u8; HANDSHAKE_FRAME];
    if peek {
        // SAFETY: recv writes at most `offer.len()` bytes into `offer`, live for the call;
        // MSG_PEEK leaves them for the worker.
        let n = unsafe {
            libc::recv(
                own_socket(),
                offer.as_mut_ptr().cast(),
                offer.len(),
                libc::MSG_PEEK,
            )
        };
        assert_eq!(n, HANDSHAKE_FRAME as isize, "the parent's OFFER, whole");
        assert_eq!(offer[8], 4, "the parent's OFFER comes first");
    }
    forge_handshake(WORKER_TAKING, &offer[9..]);
    7
}

#[procpool::task]
fn echo(bytes: SharedBytes) -> SharedBytes {
    bytes
}

/// Bytes made in the worker: results with descriptors, from arguments without.
#[procpool::task]
fn made(len: usize) -> SharedBytes {
    SharedBytes::copy_from_slice(&vec![5; len]).unwrap()
}

/// A task that forges its worker's OFFER of descriptors costs no call anything: the parent
/// answers it and reads descriptors from then on. The worker takes the answer as its own:
/// unasked, when the next call returns no descriptors (and the one after returns some at
/// once); or as the answer to its own OFFER, which the parent then lets be, when the next
/// call's results are the first with descriptors.
#[test]
fn a_task_that_forges_an_offer_of_descriptors_costs_no_call() {
    let _serial = serial();
    let bound = Duration::from_secs(60);
    for results_with_descriptors_next in [false, true] {
        let pool = pool(1);
        let rendezvous = Rendezvous::new();
        let forger = pool.apply_async(forge_offer, (rendezvous.path(),)).unwrap();
        let arrival = rendezvous.arrive();
        let (plain, with_descriptors) = if results_with_descriptors_next {
            (None, pool.apply_async(made, (300,)).unwrap())
        } else {
            let plain = pool.apply_async(square, (5,)).unwrap();
            (Some(plain), pool.apply_async(made, (300,)).unwrap())
        };
        arrival.release(1);
        assert_eq!(forger.get_timeout(bound).unwrap(), 7);
        if let Some(plain) = plain {
            assert_eq!(plain.get_timeout(bound).unwrap(), 25);
        }
        assert_eq!(
            &with_descriptors.get_timeout(bound).unwrap()[..],
            &[5; 300][..]
        );
        assert_eq!(pool.stats().worker_deaths, 0);
        finish(pool);
    }
}

/// A task that forges its worker's TAKING while the parent holds another call's descriptors
/// for that worker fails its own call, whether it guessed the nonce of the parent's OFFER
/// or read it off the socket: a TAKING that comes before the results of the jobs written
/// ahead of the OFFER is not the worker's. The held call runs on the next worker.
#[test]
fn a_task_that_forges_a_taking_of_descriptors_fails_its_own_call() {
    let _serial = serial();
    let bound = Duration::from_secs(60);
    for peek in [false, true] {
        // A fresh worker, which has never taken descriptors.
        let pool = pool(1);
        let rendezvous = Rendezvous::new();
        let forger = pool
            .apply_async(forge_taking, (rendezvous.path(), peek))
            .unwrap();
        let arrival = rendezvous.arrive();
        let sent = SharedBytes::copy_from_slice(&[9; 500]).unwrap();
        let other = pool.apply_async(echo, (sent.clone(),)).unwrap();
        arrival.release(1);
        let error = forger.get_timeout(bound).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
        assert!(error.to_string().contains("out of turn"), "{error}");
        assert_eq!(other.get_timeout(bound).unwrap(), sent);
        assert_eq!(pool.stats().worker_deaths, 1);
        finish(pool);
    }
}

/// Runs `child` in a forked child of this process and returns its exit code: each check it
/// makes is one bit of the code, set when the check failed.
fn in_forked_child(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: fork has no memory effects on this process; the child runs `child`, which
    // takes no lock a thread of the parent could hold (the pool refuses before taking any),
    // and leaves with _exit, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(127);
        // SAFETY: _exit ends the child at once, running nothing of the parent's.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked, writing only into `status`.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status),
        "the child ended by a signal: {status}"
    );
    libc::WEXITSTATUS(status)
}

#[test]
fn a_pool_used_in_a_forked_child_refuses_and_leaves_the_parent_alone() {
    let _serial = serial();
    let pool = pool(2);
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    let pids = pool.worker_pids();
    let pending = pool.apply_async(square, (5,)).unwrap();
    let code = in_forked_child(|| {
        let refused = |r: Result<(), procpool::Error>| !matches!(r, Err(e) if e.kind() == ErrorKind::OtherProcess);
        let mut failed = 0;
        let checks = [
            refused(pool.apply(square, (6,)).map(drop)),
            refused(pool.apply_async(square, (6,)).map(drop)),
            refused(pool.map(square, 1..=4).map(drop)),
            refused(pool.imap(square, 1..=4).map(drop)),
            refused(pending.get().map(drop)),
            refused(pool.join()),
            !pool.worker_pids().is_empty() || pool.stats().submitted != 0,
        ];
        for (bit, check) in checks.into_iter().enumerate() {
            if check {
                failed |= 1 << bit;
            }
        }
        pool.close();
        pool.terminate();
        // SAFETY: this process's copy of the pool is never used again: the child leaves by
        // _exit, so the bits read here are dropped once, as the child's own pool.
        drop(unsafe { std::ptr::read(&pool) });
        failed
    });
    assert_eq!(code, 0, "checks that failed in the child, one bit each");
    // The parent's pool is as it was: the same workers, every result its own.
    assert_eq!(pending.get().unwrap(), 25);
    assert_eq!(pool.apply(square, (7,)).unwrap(), 49);
    assert_eq!(pool.map(square, 1..=3).unwrap(), [1, 4, 9]);
    assert_eq!(pool.worker_pids(), pids, "no worker was killed or replaced");
    assert_eq!(pool.stats().worker_deaths, 0);
    finish(pool);
}

#[test]
fn a_terminals_ctrl_c_reaches_the_program_not_its_workers() {
    let _serial = serial();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_terminal_signals"))
        .output()
        .expect("the program runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("results: 1 1\n"), "{stdout}");
    assert!(stdout.contains("deaths: 0\n"), "{stdout}");
    tests_integration::assert_no_children();
}

/// Closes every descriptor above 2 (its socket among them), then exits with `code`, or, for
/// a negative one, blocks for good on a pipe of its own.
#[procpool::task]
fn close_socket_then(code: i32) -> u32 {
    for fd in 3..1024 {
        // SAFETY: closing descriptors this process may or may not have open; nothing in the
        // task uses them afterwards.
        unsafe { libc::close(fd) };
    }
    if code >= 0 {
        std::process::exit(code);
    }
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut byte = 0u8;
    // SAFETY: reads one byte into `byte`; the write end stays open here, so it never comes.
    unsafe { libc::read(fds[0], (&raw mut byte).cast(), 1) };
    0
}

/// A panic payload whose drop panics, which aborts the worker after its task has failed.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("the payload's drop panics too");
    }
}

#[procpool::task]
fn panic_with_a_bomb() -> u32 {
    std::panic::panic_any(Bomb)
}

#[test]
fn a_worker_that_closes_its_socket_is_reported_by_its_own_exit() {
    let _serial = serial();
    let pool = pool(1);
    let error = pool.apply(close_socket_then, (5,)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
    assert_eq!(
        error.worker_exit(),
        Some(procpool::WorkerExit::Code(5)),
        "{error}"
    );
    assert!(!error.killed_by_pool(), "{error}");
    let error = pool.apply(panic_with_a_bomb, ()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
    assert_eq!(
        error.worker_exit(),
        Some(procpool::WorkerExit::Signal(libc::SIGABRT)),
        "{error}"
    );
    // One that closes its socket and goes on running is killed, and the error says so.
    let error = pool.apply(close_socket_then, (-1,)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
    assert_eq!(
        error.worker_exit(),
        Some(procpool::WorkerExit::Signal(libc::SIGKILL))
    );
    assert!(error.killed_by_pool(), "{error}");
    assert!(
        error
            .to_string()
            .contains("killed by the pool: its socket closed"),
        "{error}"
    );
    assert_eq!(pool.apply(square, (5,)).unwrap(), 25, "the pool carries on");
    assert_eq!(pool.stats().worker_deaths, 3);
    finish(pool);
}

#[test]
fn a_program_that_ignores_sigchld_gets_no_invented_exit_code() {
    let _serial = serial();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sigchld_ignored"))
        .output()
        .expect("the program runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    match procpool::StartMethod::from_env().unwrap() {
        // The pool's own children are reaped by the kernel: the status is lost.
        procpool::StartMethod::Spawn => {
            assert!(stdout.contains("exit: Some(Unknown)\n"), "{stdout}");
            assert!(stdout.contains("could not be read"), "{stdout}");
        }
        // The forkserver's children are its own, and it gives SIGCHLD its default: the
        // status is the real one.
        _ => {
            assert!(stdout.contains("exit: Some(Code(3))\n"), "{stdout}");
            assert!(stdout.contains("exited with code 3"), "{stdout}");
        }
    }
    assert!(!stdout.contains("code -1"), "{stdout}");
    assert!(stdout.contains("after: 36\n"), "{stdout}");
    tests_integration::assert_no_children();
}

#[test]
fn absurd_settings_are_refused_at_once_with_the_limit() {
    let _serial = serial();
    for processes in [1 << 40, usize::MAX, (1 << 14) + 1] {
        let error = procpool::Pool::builder()
            .processes(processes)
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), procpool::BuildErrorKind::InvalidInput);
        assert!(error.to_string().contains("at most 16384"), "{error}");
    }
    let pool = pool(1);
    let huge = procpool::MapOptions::new().chunksize(usize::MAX);
    let error = pool.imap_with(square, 1..=10u64, huge).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("at most 268435456"), "{error}");
    let error = pool.map_with(square, 1..=10u64, huge).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    let fine = procpool::MapOptions::new().chunksize(1 << 28);
    assert_eq!(pool.map_with(square, 1..=3u64, fine).unwrap(), [1, 4, 9]);
    finish(pool);
}

/// 1, 2, 3, then a panic when asked for the fourth.
fn three_then_a_panic() -> impl Iterator<Item = u64> {
    (1..=10u64).inspect(|&x| assert!(x < 4, "the input gave out at {x}"))
}

#[test]
fn a_panic_in_the_input_of_imap_comes_after_the_results_before_it() {
    let _serial = serial();
    let pool = pool(2);
    let results: Vec<_> = pool.imap(square, three_then_a_panic()).unwrap().collect();
    assert_eq!(results.len(), 4, "{results:?}");
    let squares: Vec<u64> = results[..3].iter().map(|r| *r.as_ref().unwrap()).collect();
    assert_eq!(squares, [1, 4, 9]);
    let error = results[3].as_ref().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InputPanicked, "{error}");
    assert!(
        error
            .to_string()
            .contains("item 3: the input gave out at 4"),
        "{error}"
    );
    let options = procpool::MapOptions::new().chunksize(2);
    // Unordered, the failure comes as soon as it is known, among the results.
    let (failed, succeeded): (Vec<_>, Vec<_>) = pool
        .imap_unordered_with(square, three_then_a_panic(), options)
        .unwrap()
        .partition(Result::is_err);
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].as_ref().unwrap_err().kind(),
        ErrorKind::InputPanicked
    );
    let mut squares: Vec<u64> = succeeded.into_iter().map(Result::unwrap).collect();
    squares.sort_unstable();
    assert_eq!(squares, [1, 4, 9]);
    assert_eq!(pool.apply(square, (8,)).unwrap(), 64, "the pool carries on");
    finish(pool);
}

#[test]
fn an_imap_that_outlives_its_pool_says_why_it_ends() {
    let _serial = serial();
    let pool = pool(1);
    let options = procpool::MapOptions::new().chunksize(1);
    let mut results = pool.imap_with(square, 1..=10u64, options).unwrap();
    assert_eq!(results.next().unwrap().unwrap(), 1);
    pool.terminate();
    let rest: Vec<_> = results.collect();
    assert!(!rest.is_empty() && rest.len() < 9, "{rest:?}");
    let last = rest.last().unwrap().as_ref().unwrap_err();
    assert_eq!(last.kind(), ErrorKind::Closed, "{last}");
    assert!(
        last.to_string().contains("the iterator ends here"),
        "{last}"
    );
    // Calls that finished before the pool ended keep their results; every one after the
    // first failure failed too.
    let first_failure = rest.iter().position(Result::is_err).unwrap();
    for result in &rest[first_failure..] {
        let kind = result.as_ref().unwrap_err().kind();
        assert!(
            matches!(kind, ErrorKind::Terminated | ErrorKind::Closed),
            "{kind:?}"
        );
    }
    drop(pool);
    tests_integration::assert_no_children();
}

#[test]
fn a_program_that_has_the_worker_variable_for_no_reason_runs_its_main() {
    let _serial = serial();
    for marker in ["", "not a pid", "1"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sigchld_ignored"))
            .env("PROCPOOL_WORKER", marker)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the program runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{marker:?}: {output:?}");
        assert!(stdout.contains("after: 36\n"), "{marker:?}: {stdout}");
    }
    tests_integration::assert_no_children();
}

/// Stops its own worker (SIGSTOP), as a task that raises it would; it never returns.
#[procpool::task]
fn stop_myself() -> u32 {
    // SAFETY: raise has no memory effects.
    unsafe { libc::raise(libc::SIGSTOP) };
    0
}

#[test]
fn join_returns_when_a_worker_stops_itself_holding_a_call() {
    let _serial = serial();
    let pool = pool(2);
    let stopped = pool.apply_async(stop_myself, ()).unwrap();
    let ok = pool.apply_async(square, (3,)).unwrap();
    assert_eq!(ok.get().unwrap(), 9);
    let started = std::time::Instant::now();
    pool.close();
    pool.join().unwrap();
    // The pool waits 5 s for the stopped worker to continue; 30 s is a generous bound that a
    // join waiting on it for good, or far longer, would break.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "join took {took:?}");
    let error = stopped.get().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
    assert!(error.killed_by_pool(), "{error}");
    assert!(error.to_string().contains("stopped by a signal"), "{error}");
    tests_integration::assert_no_children();
}

#[test]
fn join_returns_with_stopped_workers_borrowed_or_with_work_queued_behind_them() {
    let _serial = serial();
    let pool = pool(2);
    std::thread::scope(|scope| {
        // One worker, borrowed by a blocking call, stops itself.
        let borrowed = scope.spawn(|| pool.apply(stop_myself, ()));
        wait_for("the call borrows a worker", || {
            procpool::test_hooks::idle_workers(&pool) == 1
        });
        // The other stops itself with calls queued behind it.
        let queued_stop = pool.apply_async(stop_myself, ()).unwrap();
        let behind: Vec<_> = (1..=3u64)
            .map(|x| pool.apply_async(square, (x,)).unwrap())
            .collect();
        let started = std::time::Instant::now();
        pool.close();
        pool.join().unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(30), "join took {took:?}");
        for stopped in [borrowed.join().unwrap(), queued_stop.get()] {
            let error = stopped.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
            assert!(error.to_string().contains("stopped by a signal"), "{error}");
        }
        // The calls behind the stopped worker ran on its replacement.
        let squares: Vec<u64> = behind.iter().map(|h| h.get().unwrap()).collect();
        assert_eq!(squares, [1, 4, 9]);
    });
    tests_integration::assert_no_children();
}

#[test]
fn a_stopped_worker_that_continues_within_the_grace_keeps_its_call() {
    let _serial = serial();
    let pool = pool(1);
    let pid = pool.worker_pids()[0];
    let stopped = pool.apply_async(stop_myself, ()).unwrap();
    wait_for("the worker stops", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| Some(stat.rsplit_once(')')?.1.split_whitespace().next()? == "T"))
            .unwrap_or(false)
    });
    pool.close();
    // The pool is not done while the call is stopped; meanwhile the supervisor looks at the
    // stopped worker (every 100 ms), and must leave it be for 5 s.
    assert!(!pool.join_timeout(Duration::from_millis(300)).unwrap());
    // Continued well within the 5 s the pool gives a stopped worker.
    // SAFETY: kill has no memory effects; `pid` is the pool's live, unreaped worker.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGCONT) }, 0);
    pool.join().unwrap();
    assert_eq!(stopped.get().unwrap(), 0, "the call ran to its end");
    tests_integration::assert_no_children();
}

/// The worker's pid and its process group.
#[procpool::task]
fn pid_and_group() -> (u32, u32) {
    // SAFETY: getpgrp has no preconditions.
    (std::process::id(), unsafe { libc::getpgrp() } as u32)
}

/// Kills the process group the worker is in, as a task that cleans up its own subprocesses
/// with `kill(0, …)` (or a shell's `trap 'kill 0' EXIT`) does.
#[procpool::task]
fn kill_own_group() -> u32 {
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(0, libc::SIGKILL) };
    0
}

#[test]
fn each_worker_leads_a_process_group_of_its_own() {
    let _serial = serial();
    let pool = pool(2);
    for _ in 0..4 {
        let (pid, group) = pool.apply(pid_and_group, ()).unwrap();
        assert_eq!(pid, group);
    }
    finish(pool);
}

#[test]
fn a_task_that_kills_its_process_group_takes_only_its_own_worker() {
    let _serial = serial();
    let pool = pool(2);
    let rendezvous = tests_integration::Rendezvous::new();
    let held = pool
        .apply_async(crate::tasks::hold, (rendezvous.path(),))
        .unwrap();
    let arrival = rendezvous.arrive();
    let error = pool.apply(kill_own_group, ()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
    // The other call, on the other worker, is untouched.
    arrival.release(7);
    assert_eq!(held.get_timeout(Duration::from_secs(30)).unwrap(), 7);
    finish(pool);
}
