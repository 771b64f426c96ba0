//! What only the forkserver start method has: the server process itself. (Every other test
//! runs under both start methods: `scripts/test.sh` runs this package again under the one
//! that is not the default.) A stopped server costs one reply wait (10 s) in one test.

use std::time::Duration;

use procpool::{ErrorKind, Pool, StartMethod};
use tests_integration::{
    FORKSERVER_NAME, Rendezvous, adopt_orphans, children_of, finish, forkservers,
    recycling_forkserver_pool, serial,
};

use crate::tasks::{hold, pid, pid_of, square};

fn forkserver_pool(processes: usize) -> Pool {
    Pool::builder()
        .processes(processes)
        .start_method(StartMethod::Forkserver)
        .build()
        .expect("the pool starts")
}

fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the worker runs");
    let after = &stat[stat.rfind(')').expect("a command name") + 1..];
    after
        .split_whitespace()
        .nth(1)
        .and_then(|ppid| ppid.parse().ok())
        .expect("a parent pid")
}

#[test]
fn workers_are_children_of_one_server_and_keep_the_programs_name() {
    let _serial = serial();
    let pool = forkserver_pool(3);
    let server = forkservers();
    assert_eq!(server.len(), 1, "one server for the pool: {server:?}");
    let mut pids = pool.worker_pids();
    pids.sort_unstable();
    let mut forked = children_of(server[0]);
    forked.sort_unstable();
    assert_eq!(pids, forked, "the pool's workers are the server's children");
    for &worker in &pids {
        assert_eq!(parent_of(worker), server[0]);
        let name = std::fs::read_to_string(format!("/proc/{worker}/comm")).unwrap();
        assert_ne!(
            name.trim_end(),
            FORKSERVER_NAME,
            "a worker has the program's name"
        );
    }
    // And they run tasks as spawned workers do.
    let ran = pool.map(square, 1..=10u64).unwrap();
    assert_eq!(ran, (1..=10u64).map(|x| x * x).collect::<Vec<_>>());
    assert!(pids.contains(&pool.apply(pid, ()).unwrap()));
    finish(pool);
    assert!(
        forkservers().is_empty(),
        "the server is reaped with the pool"
    );
}

#[test]
fn a_killed_server_takes_its_workers_and_the_pool_starts_another() {
    let _serial = serial();
    // Its workers must die with it, and be reaped, not merely leave this process's tree.
    adopt_orphans();
    let pool = forkserver_pool(2);
    let rendezvous = Rendezvous::new();
    let held = pool.apply_async(hold, (rendezvous.path(),)).unwrap();
    let arrival = rendezvous.arrive();
    let first = forkservers();
    assert_eq!(first.len(), 1);
    // SAFETY: kill has no memory effects; the server is this process's unreaped child.
    assert_eq!(unsafe { libc::kill(first[0] as i32, libc::SIGKILL) }, 0);
    // Its workers die with it (PR_SET_PDEATHSIG): the call that was running fails as a
    // death, and is never delivered twice.
    let error = held.get_timeout(Duration::from_secs(30)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
    drop(arrival);
    // The next calls run on workers of a new server.
    assert_eq!(
        pool.map(square, 1..=20u64).unwrap(),
        (1..=20u64).map(|x| x * x).collect::<Vec<_>>()
    );
    let second = forkservers();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first, "a new server");
    for worker in pool.worker_pids() {
        assert_eq!(parent_of(worker), second[0]);
    }
    finish(pool);
}

#[test]
fn replacements_after_deaths_and_recycles_are_forked_from_the_same_server() {
    let _serial = serial();
    // The pool keeps a spare worker forked once it replaces workers: it must be ended and
    // reaped with the pool, not left to die with its server.
    adopt_orphans();
    let pool = recycling_forkserver_pool(2);
    let server = forkservers();
    assert_eq!(server.len(), 1);
    let pids: Vec<u32> = pool
        .map_with(pid_of, 0..40u64, procpool::MapOptions::new().chunksize(1))
        .unwrap();
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 40, "every call had a fresh worker");
    assert_eq!(forkservers(), server, "one server all along");
    let stats = pool.stats();
    assert!(stats.worker_starts >= 40, "{stats:?}");
    finish(pool);
}

#[test]
fn workers_of_a_killed_server_are_reaped_by_the_pool_when_it_adopted_them() {
    let _serial = serial();
    // As PID 1 in a container is: the orphans of a dead server come to this process.
    adopt_orphans();
    let pool = forkserver_pool(2);
    let before = pool.worker_pids();
    for server in forkservers() {
        // SAFETY: kill has no memory effects; the server is this process's unreaped child.
        unsafe { libc::kill(server as i32, libc::SIGKILL) };
    }
    crate::tasks::wait_for("the workers are replaced", || {
        let now = pool.worker_pids();
        now.len() == before.len() && now.iter().all(|pid| !before.contains(pid))
    });
    assert_eq!(pool.map(square, 1..=4u64).unwrap(), [1, 4, 9, 16]);
    finish(pool);
}

#[test]
fn a_stopped_server_holds_the_pool_for_one_reply_wait_and_nothing_hangs() {
    let _serial = serial();
    // The workers the stopped server was asked to reap and never did come to this process
    // when the pool kills that server: the pool reaps them.
    adopt_orphans();
    let pool = recycling_forkserver_pool(2);
    let options = procpool::MapOptions::new().chunksize(1);
    assert_eq!(pool.map_with(pid_of, 0..4u64, options).unwrap().len(), 4);
    let stopped = forkservers();
    // SAFETY: kill has no memory effects; the server is this process's unreaped child.
    assert_eq!(unsafe { libc::kill(stopped[0] as i32, libc::SIGSTOP) }, 0);
    // Replacements wait for the stopped server's answer, give up on it, and fork from a
    // new one: every call still ends with its value.
    let pids = pool.map_with(pid_of, 0..6u64, options).unwrap();
    assert_eq!(pids.len(), 6);
    assert_ne!(forkservers(), stopped, "a new server");
    finish(pool);
}
