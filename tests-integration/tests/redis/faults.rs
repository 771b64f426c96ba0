//! The server's own faults: restarts (with and without a snapshot), keys that vanish,
//! loading, silence, and hosts stopped one after another while a call runs.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixture::{Agent, BOUND, Server};
use procpool::{ErrorKind, Pool};
use tests_integration::remote_tasks::{hold, square};
use tests_integration::{Rendezvous, assert_no_children, serial};

/// A fresh folder for a server with a snapshot.
fn scratch(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("procpool-faults-{test}-{}", std::process::id()))
}

fn qname(test: &str) -> String {
    format!("faults-{test}-{}", std::process::id())
}

fn pool_at(url: &str, queue: &str, lease: Duration) -> Pool {
    tests_integration::remote_tasks::linked();
    Pool::builder()
        .redis(url)
        .queue(queue)
        .processes(2)
        .lease(lease)
        .build()
        .expect("the pool starts")
}

fn conn(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn keys(url: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg("rp:*")
        .query(&mut conn(url))
        .unwrap()
}

/// After a server restart, the pool submits, cancels and terminates on a new connection.
#[test]
fn a_pool_submits_again_after_a_server_restart() {
    let _serial = serial();
    let mut server = Server::start();
    let queue = qname("restart-submit");
    let a = Agent::start(&server, &queue, 1, Duration::from_millis(400), "a");
    let pool = pool_at(&server.url(), &queue, Duration::from_millis(400));
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    server.restart();
    for x in 4..7 {
        let got = pool
            .apply_async(square, (x,))
            .and_then(|c| c.get_timeout(BOUND));
        assert_eq!(got.unwrap(), x * x);
    }
    drop(pool);
    a.stop();
    drop(server);
    assert_no_children();
}

/// The caller's keys vanish while it lives (it was paused past its lease, or evicted) and a
/// call goes out before it notices: a host takes the caller for dead and drops the call,
/// the caller then sets its keys again and queues the call again, and the host runs it.
#[test]
fn a_call_dropped_while_its_callers_keys_were_gone_is_queued_again() {
    let _serial = serial();
    let server = Server::start();
    let queue = qname("vanished");
    let lease = Duration::from_millis(3000);
    let pool = pool_at(&server.url(), &queue, lease);
    let mut c = server.connect().unwrap();
    let ours: Vec<String> = keys(&server.url())
        .into_iter()
        .filter(|k| k.contains(":pool:") || k.contains(":res:"))
        .collect();
    assert_eq!(ours.len(), 2, "{ours:?}");
    let _: () = redis::cmd("DEL").arg(&ours).query(&mut c).unwrap();
    let call = pool.apply_async(square, (5,)).unwrap();
    let a = Agent::start(&server, &queue, 2, lease, "a");
    assert_eq!(call.get_timeout(BOUND).unwrap(), 25);
    drop(pool);
    a.stop();
    drop(server);
    assert_no_children();
}

/// A redis-server of our own with a data folder, so that it can restart from a snapshot.
struct Persistent {
    child: Option<Child>,
    dir: PathBuf,
}

impl Persistent {
    fn start(dir: PathBuf, extra: &[&str]) -> Persistent {
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = Persistent { child: None, dir };
        p.spawn(extra);
        p
    }
    fn sock(&self) -> PathBuf {
        self.dir.join("r.sock")
    }
    fn url(&self) -> String {
        format!("unix://{}", self.sock().display())
    }
    fn spawn(&mut self, extra: &[&str]) {
        let _ = std::fs::remove_file(self.sock());
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
            ])
            .arg("--unixsocket")
            .arg(self.sock())
            .arg("--dir")
            .arg(&self.dir)
            .args(extra)
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + BOUND;
        while !self.sock().exists() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    fn wait_ready(&self) {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Ok(mut c) = redis::Client::open(self.url()).unwrap().get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    /// A crash: SIGKILL, then a start that loads the last snapshot.
    fn crash_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        self.spawn(&[]);
    }
}

impl Drop for Persistent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server that restarts from a snapshot older than a call: the pool's keys are in the
/// snapshot, the call's entry is not; the pool finds it gone and queues it again.
#[test]
fn a_call_lost_with_an_older_snapshot_is_queued_again() {
    let _serial = serial();
    let mut server = Persistent::start(scratch("snapshot"), &[]);
    server.wait_ready();
    let queue = qname("snapshot");
    let lease = Duration::from_secs(10);
    let pool = pool_at(&server.url(), &queue, lease);
    let _: () = redis::cmd("SAVE").query(&mut conn(&server.url())).unwrap();
    let call = pool.apply_async(square, (7,)).unwrap();
    server.crash_and_restart();
    server.wait_ready();
    let a = Agent::start_at(
        &server.url(),
        &queue,
        1,
        Duration::from_millis(400),
        "a",
        &[],
    );
    assert_eq!(call.get_timeout(BOUND).unwrap(), 49);
    drop(pool);
    a.stop();
    drop(server);
    assert_no_children();
}

/// A server that restarts from a snapshot large enough to take a while to load: hosts and
/// pools wait out `LOADING`, and serve again.
#[test]
fn hosts_and_pools_wait_out_a_server_loading_its_snapshot() {
    let _serial = serial();
    let mut server = Persistent::start(scratch("loading"), &[]);
    server.wait_ready();
    let mut c = conn(&server.url());
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(1_000_000)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    let queue = qname("loading");
    let lease = Duration::from_millis(400);
    let a = Agent::start_at(&server.url(), &queue, 1, lease, "a", &[]);
    let pool = pool_at(&server.url(), &queue, lease);
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    server.crash_and_restart();
    server.wait_ready();
    let got = pool
        .apply_async(square, (4,))
        .and_then(|c| c.get_timeout(BOUND));
    assert_eq!(got.unwrap(), 16);
    drop(pool);
    a.stop();
    drop(server);
    assert_no_children();
}

/// Hosts stopped one after another while a call runs hand it back without using up its
/// deliveries, and leave the queue's group: the call ends on the last host.
#[test]
fn hosts_stopped_one_after_another_hand_a_call_on_and_leave_the_group() {
    let _serial = serial();
    let server = Server::start();
    let queue = qname("rolling");
    let lease = Duration::from_millis(400);
    let pool = pool_at(&server.url(), &queue, lease);
    let meeting = Rendezvous::new();
    let call = pool.apply_async(hold, (meeting.path(),)).unwrap();
    for name in ["a", "b", "c", "d"] {
        let agent = Agent::start(&server, &queue, 1, lease, name);
        let arrival = meeting.arrive();
        agent.stop();
        drop(arrival);
    }
    let e = Agent::start(&server, &queue, 1, lease, "e");
    meeting.arrive().release(9);
    let (ran, byte) = call.get_timeout(BOUND).unwrap();
    assert_eq!((ran.host.as_str(), byte), ("e", 9));
    let tasks = keys(&server.url())
        .into_iter()
        .find(|k| k.ends_with(":tasks"))
        .unwrap();
    let consumers: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&tasks)
        .arg("hosts")
        .query(&mut conn(&server.url()))
        .unwrap();
    let names: Vec<String> = consumers
        .iter()
        .map(|fields| match &fields[1] {
            redis::Value::BulkString(name) => String::from_utf8_lossy(name).into_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(
        names.iter().all(|n| n == "e" || n == "returned"),
        "{names:?}"
    );
    drop(pool);
    e.stop();
    drop(server);
    assert_no_children();
}

/// A server that stops answering (SIGSTOP, as a partition that drops packets): the pool
/// fails its calls in flight with `PoolBroken` instead of waiting for ever.
#[test]
fn a_silent_server_fails_the_calls_in_flight() {
    let _serial = serial();
    let server = Persistent::start(scratch("silent"), &[]);
    server.wait_ready();
    let queue = qname("silent");
    let lease = Duration::from_millis(400);
    let a = Agent::start_at(&server.url(), &queue, 1, lease, "a", &[]);
    let pool = pool_at(&server.url(), &queue, lease);
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    let meeting = Rendezvous::new();
    let call = pool.apply_async(hold, (meeting.path(),)).unwrap();
    let arrival = meeting.arrive();
    let pid = server.child.as_ref().unwrap().id() as i32;
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let got = call.get_timeout(BOUND);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    arrival.release(1);
    let error = got.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PoolBroken, "{error}");
    assert!(error.to_string().contains("no answer"), "{error}");
    drop(pool);
    a.stop();
    drop(server);
    assert_no_children();
}
