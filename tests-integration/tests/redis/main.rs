//! Tests of pools over Redis, with a real `redis-server` of their own and host agents as
//! separate process groups that they kill, stop and resume. Every test ends by checking
//! that no child process is left, and that the host agents' workers are gone.

mod faults;
mod fixture;

use std::time::{Duration, Instant};

use fixture::{Agent, BOUND, Server, finish, square_in_a_caller, start_caller, wait_until};
use procpool::{ErrorKind, Pool};
use tests_integration::remote_tasks::{
    Ran, abort_worker, add, echo_bytes, fail_on, hold, shared_len, square, whereami, work_logged,
};
use tests_integration::{Rendezvous, assert_no_children, serial};

const LEASE: Duration = Duration::from_millis(400);

/// A queue name of the test's own.
fn queue(test: &str) -> String {
    format!("test-{test}-{}", std::process::id())
}

fn pool(server: &Server, queue: &str) -> Pool {
    tests_integration::remote_tasks::linked();
    Pool::builder()
        .redis(server.url())
        .queue(queue)
        .processes(2)
        .lease(LEASE)
        .build()
        .expect("the pool starts")
}

/// The keys of every queue on the server.
fn keys(server: &Server) -> Vec<String> {
    let mut conn = server.connect().expect("connect");
    redis::cmd("KEYS")
        .arg("rp:*")
        .query(&mut conn)
        .expect("KEYS")
}

/// The key of this build's task stream for `queue`.
fn tasks_key(server: &Server, queue: &str) -> String {
    keys(server)
        .into_iter()
        .find(|key| key.starts_with(&format!("rp:{{{queue}@")) && key.ends_with(":tasks"))
        .expect("the queue's task stream")
}

/// Who holds the entries of the task stream that are pending: (consumer, deliveries).
fn pending(server: &Server, tasks: &str) -> Vec<(String, u64)> {
    let mut conn = server.connect().expect("connect");
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(tasks)
        .arg("hosts")
        .arg("-")
        .arg("+")
        .arg(100)
        .query(&mut conn)
        .expect("XPENDING");
    rows.into_iter()
        .map(|(_, owner, _, count)| (owner, count))
        .collect()
}

fn stream_len(server: &Server, key: &str) -> u64 {
    let mut conn = server.connect().expect("connect");
    redis::cmd("XLEN").arg(key).query(&mut conn).expect("XLEN")
}

#[test]
fn the_pool_vocabulary_runs_on_two_hosts() {
    let _serial = serial();
    let server = Server::start();
    let queue = queue("vocabulary");
    let a = Agent::start(&server, &queue, 2, LEASE, "a");
    let b = Agent::start(&server, &queue, 2, LEASE, "b");
    let pool = pool(&server, &queue);
    assert_eq!(pool.apply(add, (2, 3)).unwrap(), 5);
    assert_eq!(pool.apply_async(square, (9,)).unwrap().get().unwrap(), 81);
    let squares: Vec<u64> = (0..1000).map(|x| x * x).collect();
    assert_eq!(pool.map(square, 0..1000).unwrap(), squares);
    assert_eq!(
        pool.map_async(square, 0..1000).unwrap().get().unwrap(),
        squares
    );
    let ordered: Vec<u64> = pool
        .imap(square, 0..300)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(ordered, squares[..300]);
    let mut unordered: Vec<u64> = pool
        .imap_unordered(square, 0..300)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    unordered.sort_unstable();
    assert_eq!(unordered, squares[..300]);
    assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)]).unwrap(), vec![3, 7]);
    let big = vec![7u8; 3 << 20];
    assert_eq!(pool.apply(echo_bytes, (big.clone(),)).unwrap(), big);
    // Calls of one chunk each, from two hosts: both take work.
    let hosts: std::collections::BTreeSet<String> = pool
        .starmap_with(
            whereami,
            vec![(); 200],
            procpool::MapOptions::new().chunksize(1),
        )
        .unwrap()
        .into_iter()
        .map(|ran: Ran| ran.host)
        .collect();
    assert!(hosts.iter().all(|h| h == "a" || h == "b"), "{hosts:?}");
    let stats = pool.stats();
    assert_eq!(stats.submitted, stats.ok);
    assert_eq!(stats.in_flight, 0);
    finish(pool, [a, b], server);
}

#[test]
fn a_panic_and_a_crash_on_a_host_are_typed_errors_and_the_host_goes_on() {
    let _serial = serial();
    let server = Server::start();
    let queue = queue("failures");
    let a = Agent::start(&server, &queue, 2, LEASE, "a");
    let pool = pool(&server, &queue);
    let panicked = pool.apply(fail_on, (3, 3)).unwrap_err();
    assert_eq!(panicked.kind(), ErrorKind::Panicked);
    assert_eq!(panicked.host(), Some("a"));
    assert!(
        panicked.panic_message().unwrap().contains("refused 3"),
        "{panicked}"
    );
    let mapped = pool.starmap(fail_on, (0..10).map(|x| (x, 7))).unwrap_err();
    assert_eq!(mapped.kind(), ErrorKind::Panicked);
    let workers = a.workers();
    let died = pool.apply(abort_worker, ()).unwrap_err();
    assert_eq!(died.kind(), ErrorKind::WorkerDied, "{died}");
    assert_eq!(died.host(), Some("a"));
    assert_eq!(
        died.worker_exit(),
        Some(procpool::WorkerExit::Signal(libc::SIGABRT))
    );
    let pid = died.worker_info().expect("the worker").pid;
    assert!(
        workers.contains(&pid),
        "pid {pid} is not one of {workers:?}"
    );
    assert!(died.to_string().contains("on host a"), "{died}");
    // Not run again without retries: one death, and the host goes on.
    assert_eq!(pool.apply(add, (1, 1)).unwrap(), 2);
    let stats = pool.stats();
    assert_eq!((stats.worker_died, stats.panicked), (1, 2));
    finish(pool, [a], server);
}

#[test]
fn retries_run_a_call_again_after_its_worker_died() {
    let _serial = serial();
    let server = Server::start();
    let queue = queue("retries");
    let a = Agent::start(&server, &queue, 1, LEASE, "a");
    let pool = Pool::builder()
        .redis(server.url())
        .queue(&queue)
        .lease(LEASE)
        .retries(2)
        .build()
        .unwrap();
    let died = pool.apply(abort_worker, ()).unwrap_err();
    assert_eq!(died.kind(), ErrorKind::WorkerDied);
    assert_eq!(died.retried(), 2, "{died}");
    finish(pool, [a], server);
}

#[test]
fn a_host_killed_mid_call_loses_it_to_another_host_after_its_lease() {
    let _serial = serial();
    let server = Server::start();
    let queue = queue("killed");
    let a = Agent::start(&server, &queue, 1, LEASE, "a");
    let pool = pool(&server, &queue);
    let meeting = Rendezvous::new();
    let call = pool.apply_async(hold, (meeting.path(),)).unwrap();
    let first = meeting.arrive();
    assert!(a.workers().contains(&first.pid));
    let tasks = tasks_key(&server, &queue);
    assert_eq!(pending(&server, &tasks), vec![("a".to_owned(), 1)]);
    a.kill();
    drop(first);
    let b = Agent::start(&server, &queue, 1, LEASE, "b");
    let killed_at = Instant::now();
    let second = meeting.arrive();
    assert!(b.workers().contains(&second.pid));
    assert!(killed_at.elapsed() < BOUND);
    assert_eq!(pending(&server, &tasks), vec![("b".to_owned(), 2)]);
    second.release(42);
    let (ran, byte) = call.get().unwrap();
    assert_eq!((ran.host.as_str(), byte), ("b", 42));
    // One result, and nothing left in the queue.
    assert_eq!(pool.stats().ok, 1);
    wait_until("the entry to go", || stream_len(&server, &tasks) == 0);
    assert!(pending(&server, &tasks).is_empty());
    finish(pool, [b], server);
}

#[test]
fn a_host_stopped_past_its_lease_loses_its_call_and_its_late_result_is_dropped() {
    let _serial = serial();
    let server = Server::start();
    let queue = queue("stopped");
    let a = Agent::start(&server, &queue, 1, LEASE, "a");
    let pool = pool(&server, &queue);
    let meeting = Rendezvous::new();
    let call = pool.apply_async(hold, (meeting.path(),)).unwrap();
    let first = meeting.arrive();
    a.signal(libc::SIGSTOP);
    let b = Agent::start(&server, &queue, 1, LEASE, "b");
    let second = meeting.arrive();
    assert!(b.workers().contains(&second.pid));
    // The first run finishes while its host is stopped; the host resumes and learns that
    // it lost the call.
    first.release(1);
    a.signal(libc::SIGCONT);
    let tasks = tasks_key(&server, &queue);
    wait_until("host a to give up the call", || {
        pending(&server, &tasks)
            .iter()
            .all(|(owner, _)| owner == "b")
    });
    second.release(2);
    let (ran, byte) = call.get().unwrap();
    assert_eq!((ran.host.as_str(), byte), ("b", 2));
    // Host a goes on serving.
    b.stop();
    assert_eq!(pool.apply(whereami, ()).unwrap().host, "a");
    let stats = pool.stats();
    assert_eq!((stats.submitted, stats.ok), (2, 2));
    finish(pool, [a], server);
}

#[test]
fn a_call_longer_than_the_lease_runs_once() {
    let _serial = serial();
    let server = Server::start();
    let queue = queue("long");
    let a = Agent::start(&server, &queue, 1, LEASE, "a");
    let b = Agent::start(&server, &queue, 1, LEASE, "b");
    let pool = pool(&server, &queue);
    let log = std::env::temp_dir().join(format!("procpool-long-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log_path = log.to_string_lossy().into_owned();
    let ms = 4 * LEASE.as_millis() as u64;
    pool.apply(work_logged, (log_path.clone(), ms)).unwrap();
    let runs = std::fs::read_to_string(&log).unwrap().lines().count();
    assert_eq!(runs, 1, "the call ran {runs} times");
    let _ = std::fs::remove_file(&log);
    finish(pool, [a, b], server);
}

#[test]
fn a_caller_that_dies_leaves_its_queued_calls_unrun_and_its_keys_expire() {
    let _serial = serial();
    let server = Server::start();
    let queue = queue("caller");
    let log = std::env::temp_dir().join(format!("procpool-caller-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log_path = log.to_string_lossy().into_owned();
    let mut caller = start_caller(&server, &queue, LEASE, &log_path, 50);
    caller.kill().unwrap();
    caller.wait().unwrap();
    wait_until("the caller's keys to expire", || {
        keys(&server)
            .iter()
            .all(|key| !key.contains(":pool:") && !key.contains(":res:"))
    });
    // A host that comes now runs none of them, and empties the queue.
    let a = Agent::start(&server, &queue, 2, LEASE, "a");
    let tasks = tasks_key(&server, &queue);
    wait_until("the dead caller's calls to be dropped", || {
        stream_len(&server, &tasks) == 0
    });
    assert!(!log.exists(), "a call of a dead caller ran");
    a.stop();
    drop(server);
    assert_no_children();
}

#[test]
fn calls_lost_with_a_restarted_server_are_queued_again_and_end_once() {
    let _serial = serial();
    let mut server = Server::start();
    let queue = queue("restart");
    let a = Agent::start(&server, &queue, 2, LEASE, "a");
    let pool = pool(&server, &queue);
    let meeting = Rendezvous::new();
    let held = pool.apply_async(hold, (meeting.path(),)).unwrap();
    let first = meeting.arrive();
    let squares = pool
        .map_async_with(square, 0..100, procpool::MapOptions::new().chunksize(10))
        .unwrap();
    server.restart();
    drop(first);
    let second = meeting.arrive();
    second.release(5);
    assert_eq!(held.get().unwrap().1, 5);
    assert_eq!(
        squares.get().unwrap(),
        (0..100).map(|x| x * x).collect::<Vec<u64>>()
    );
    let stats = pool.stats();
    assert_eq!((stats.submitted, stats.ok), (101, 101));
    finish(pool, [a], server);
}

#[test]
fn a_call_whose_hosts_keep_dying_goes_to_the_dead_letters() {
    let _serial = serial();
    let server = Server::start();
    let queue = queue("poison");
    let pool = pool(&server, &queue);
    let meeting = Rendezvous::new();
    let call = pool.apply_async(hold, (meeting.path(),)).unwrap();
    for name in ["a", "b", "c"] {
        let agent = Agent::start(&server, &queue, 1, LEASE, name);
        let arrival = meeting.arrive();
        agent.kill();
        drop(arrival);
    }
    let d = Agent::start(&server, &queue, 1, LEASE, "d");
    let error = call.get().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerDied, "{error}");
    assert_eq!(error.host(), Some("d"));
    assert!(error.to_string().contains("lost"), "{error}");
    let dead = keys(&server)
        .into_iter()
        .find(|key| key.ends_with(":dead"))
        .expect("the dead-letter stream");
    assert_eq!(stream_len(&server, &dead), 1);
    finish(pool, [d], server);
}

#[test]
fn cancel_and_terminate_end_calls_and_stop_their_runs() {
    let _serial = serial();
    let server = Server::start();
    let queue = queue("cancel");
    let a = Agent::start(&server, &queue, 1, LEASE, "a");
    let pool = pool(&server, &queue);
    let meeting = Rendezvous::new();
    let call = pool.apply_async(hold, (meeting.path(),)).unwrap();
    let arrival = meeting.arrive();
    call.cancel();
    assert_eq!(call.get().unwrap_err().kind(), ErrorKind::Cancelled);
    // The host stops the run: its worker is killed, and the task sees its peer hang up.
    let workers = a.workers();
    fixture::wait_gone(&[arrival.pid]);
    assert!(!workers.is_empty());
    drop(arrival);
    assert_eq!(pool.apply(add, (2, 2)).unwrap(), 4);
    let queued: Vec<_> = (0..3)
        .map(|_| pool.apply_async(hold, (meeting.path(),)).unwrap())
        .collect();
    let running = meeting.arrive();
    pool.terminate();
    for call in queued {
        assert_eq!(call.get().unwrap_err().kind(), ErrorKind::Terminated);
    }
    fixture::wait_gone(&[running.pid]);
    let tasks = tasks_key(&server, &queue);
    wait_until("the queue to empty", || {
        stream_len(&server, &tasks) == 0 && pending(&server, &tasks).is_empty()
    });
    assert_eq!(pool.stats().cancelled, 1);
    drop(pool);
    a.stop();
    drop(server);
    assert_no_children();
}

#[test]
fn what_cannot_cross_machines_is_refused_at_submission() {
    let _serial = serial();
    let server = Server::start();
    let queue = queue("refused");
    let pool = pool(&server, &queue);
    let shared = procpool::SharedBytes::copy_from_slice(b"local only").unwrap();
    let error = pool.apply(shared_len, (shared,)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("SharedBytes"), "{error}");
    let huge = pool.apply(echo_bytes, (vec![0u8; 257 << 20],)).unwrap_err();
    assert_eq!(huge.kind(), ErrorKind::Codec);
    assert!(huge.to_string().contains("over the limit"), "{huge}");
    let bad = Pool::builder()
        .redis(server.url())
        .queue("no{braces}")
        .build()
        .unwrap_err();
    assert_eq!(bad.kind(), procpool::BuildErrorKind::InvalidInput);
    let nowhere = Pool::builder()
        .redis("redis://127.0.0.1:1/")
        .build()
        .unwrap_err();
    assert_eq!(
        nowhere.kind(),
        procpool::BuildErrorKind::Connect,
        "{nowhere}"
    );
    drop(pool);
    drop(server);
    assert_no_children();
}

#[test]
fn a_call_past_its_timeout_ends_timed_out_with_its_host_named() {
    let _serial = serial();
    let server = Server::start();
    let queue = queue("timeout");
    let a = Agent::start(&server, &queue, 1, LEASE, "a");
    let pool = pool(&server, &queue);
    let meeting = Rendezvous::new();
    let options = procpool::ApplyOptions::new().timeout(Duration::from_millis(200));
    let call = pool
        .apply_async_with(hold, (meeting.path(),), options)
        .unwrap();
    let arrival = meeting.arrive();
    let error = call.get().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    assert_eq!(error.host(), Some("a"));
    assert_eq!(error.worker_info().map(|w| w.pid), Some(arrival.pid));
    assert_eq!(error.timeout(), Some(Duration::from_millis(200)));
    drop(arrival);
    assert_eq!(pool.apply(add, (1, 2)).unwrap(), 3);
    finish(pool, [a], server);
}

#[test]
fn over_tls_an_acl_user_runs_its_queue_and_cannot_touch_another() {
    let _serial = serial();
    let server = Server::start_tls();
    let queue = queue("tls");
    let mut admin = server.connect().expect("connect");
    let pattern = format!("~rp:{{{queue}@*");
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("rpool")
        .arg("on")
        .arg(">s3cret")
        .arg(&pattern)
        .arg("+@all")
        .arg("-@dangerous")
        .query::<()>(&mut admin)
        .expect("ACL SETUSER");
    let url = server.tls_url("rpool", "s3cret");
    let ca = server.ca();
    let env = [("SSL_CERT_FILE", ca.as_os_str())];
    let a = Agent::start_at(&url, &queue, 1, LEASE, "a", &env);
    assert_eq!(square_in_a_caller(&url, &queue, 12, &env), Ok(144));
    // With other roots than the private CA (the system's, where it has them), the server's
    // certificate is refused.
    let system = "/etc/ssl/certs/ca-certificates.crt";
    let roots = if std::path::Path::new(system).exists() {
        system
    } else {
        "/dev/null"
    };
    let refused = square_in_a_caller(&url, &queue, 3, &[("SSL_CERT_FILE", roots.as_ref())]);
    assert!(
        refused.is_err(),
        "a certificate of an unknown CA was accepted"
    );
    // The user cannot reach another queue's keys, nor run what is dangerous.
    let unix_as_rpool = format!("{}?user=rpool&pass=s3cret", server.url());
    let mut conn = redis::Client::open(unix_as_rpool)
        .unwrap()
        .get_connection()
        .unwrap();
    let other = redis::cmd("XADD")
        .arg("rp:{other@00000000}:tasks")
        .arg("*")
        .arg("f")
        .arg("x")
        .query::<String>(&mut conn)
        .unwrap_err();
    assert_eq!(other.code(), Some("NOPERM"), "{other}");
    let flush = redis::cmd("FLUSHALL").query::<()>(&mut conn).unwrap_err();
    assert_eq!(flush.code(), Some("NOPERM"), "{flush}");
    a.stop();
    drop(server);
    assert_no_children();
}
