//! Helpers shared by the integration tests: child-process accounting, a lock that keeps
//! tests of one process from counting each other's workers, and a rendezvous that lets a
//! test hold a task inside its worker without sleeping.

pub mod redis_server;
pub mod remote_tasks;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The pids of this process's descendants (children, and their children: a forkserver's
/// workers), zombies included, read from `/proc`.
pub fn children() -> Vec<u32> {
    descendants_of(std::process::id())
}

/// The pids of `parent`'s children, zombies included, read from `/proc`.
pub fn children_of(parent: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == parent)
        .map(|p| p.pid)
        .collect()
}

/// The pids of `parent`'s descendants, zombies included.
pub fn descendants_of(parent: u32) -> Vec<u32> {
    let all = processes();
    let mut found = Vec::new();
    let mut next = vec![parent];
    while let Some(at) = next.pop() {
        for p in all.iter().filter(|p| p.ppid == at) {
            found.push(p.pid);
            next.push(p.pid);
        }
    }
    found
}

/// The worker processes of the pool in process `parent`: its children, or under the
/// forkserver start method the children of its forkserver (which names itself
/// [`FORKSERVER_NAME`]).
pub fn workers_of(parent: u32) -> Vec<u32> {
    let all = processes();
    let mut found = Vec::new();
    for child in all.iter().filter(|p| p.ppid == parent) {
        if child.name == FORKSERVER_NAME {
            found.extend(all.iter().filter(|p| p.ppid == child.pid).map(|p| p.pid));
        } else {
            found.push(child.pid);
        }
    }
    found
}

/// The name (`/proc/PID/comm`) a forkserver gives itself.
pub const FORKSERVER_NAME: &str = "pp-forkserver";

struct Proc {
    pid: u32,
    ppid: u32,
    name: String,
}

/// Every process in `/proc`, with its parent and name.
fn processes() -> Vec<Proc> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces; fields after it are plain.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            found.push(Proc {
                pid,
                ppid,
                name: stat[open + 1..close].to_owned(),
            });
        }
    }
    found
}

/// Makes this process the reaper of its orphaned descendants: a worker whose forkserver died
/// before it then shows among this process's children instead of init's.
pub fn adopt_orphans() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer and touches no memory.
    let adopted = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(adopted, 0);
}

/// This process's forkservers, by the name they give themselves.
pub fn forkservers() -> Vec<u32> {
    children_of(std::process::id())
        .into_iter()
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim_end() == FORKSERVER_NAME)
        })
        .collect()
}

/// A pool of `processes` workers with every other setting at its default.
pub fn pool(processes: usize) -> procpool::Pool {
    procpool::Pool::builder()
        .processes(processes)
        .build()
        .expect("the pool starts")
}

/// A pool of `processes` workers, each replaced after `jobs` jobs (`max_tasks_per_child`), by
/// the default start method.
pub fn recycling_pool(processes: usize, jobs: usize) -> procpool::Pool {
    procpool::Pool::builder()
        .processes(processes)
        .max_tasks_per_child(jobs)
        .build()
        .expect("the pool starts")
}

/// A forkserver pool of `processes` workers that replaces each worker after its one job
/// (`max_tasks_per_child(1)`).
pub fn recycling_forkserver_pool(processes: usize) -> procpool::Pool {
    procpool::Pool::builder()
        .processes(processes)
        .start_method(procpool::StartMethod::Forkserver)
        .max_tasks_per_child(1)
        .build()
        .expect("the pool starts")
}

/// Closes and joins `pool`, then checks that no child is left.
pub fn finish(pool: procpool::Pool) {
    pool.close();
    pool.join().expect("join after close");
    assert_no_children();
}

/// Panics if this process has any descendant left, running or unreaped.
pub fn assert_no_children() {
    let left = children();
    assert!(left.is_empty(), "child processes left behind: {left:?}");
}

/// Held for the whole of a test: under `cargo test`, tests share a process, and one test's
/// workers would count as another's leftovers. Under `cargo nextest` each test has its own
/// process and the lock costs nothing.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A meeting point between a test and a task running in a worker: the task connects and
/// says its pid, then waits until the test releases it (or its connection closes).
#[derive(Debug)]
pub struct Rendezvous {
    listener: UnixListener,
    path: PathBuf,
}

/// One task that has arrived at a [`Rendezvous`].
#[derive(Debug)]
pub struct Arrival {
    /// The pid of the worker the task runs in.
    pub pid: u32,
    stream: UnixStream,
}

impl Rendezvous {
    /// A fresh rendezvous with a unique socket path.
    pub fn new() -> Rendezvous {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("procpool-test-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the rendezvous socket");
        Rendezvous { listener, path }
    }

    /// The path a task connects to.
    pub fn path(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// Waits for the next task to arrive.
    pub fn arrive(&self) -> Arrival {
        let (stream, _) = self.listener.accept().expect("accept a task");
        Arrival::greet(stream)
    }

    /// Waits up to `bound` for the next task to arrive; `None` if none did. The task is on
    /// another process, so the listener is polled.
    pub fn arrive_within(&self, bound: Duration) -> Option<Arrival> {
        let deadline = Instant::now() + bound;
        self.listener
            .set_nonblocking(true)
            .expect("poll the listener");
        let accepted = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break Some(stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::yield_now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break None,
                Err(e) => panic!("cannot accept a task: {e}"),
            }
        };
        self.listener
            .set_nonblocking(false)
            .expect("block on the listener");
        let stream = accepted?;
        stream
            .set_nonblocking(false)
            .expect("block on the task's stream");
        Some(Arrival::greet(stream))
    }
}

impl Default for Rendezvous {
    fn default() -> Self {
        Rendezvous::new()
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Arrival {
    /// Reads the pid a task says first.
    fn greet(mut stream: UnixStream) -> Arrival {
        let mut pid = [0; 4];
        stream.read_exact(&mut pid).expect("read the task's pid");
        Arrival {
            pid: u32::from_le_bytes(pid),
            stream,
        }
    }

    /// Lets the task go on, handing it one byte.
    pub fn release(mut self, byte: u8) {
        let _ = self.stream.write_all(&[byte]);
    }
}

/// The task's side: connect, say the pid, wait to be released; returns the byte it got, or
/// `None` if the test hung up instead.
pub fn meet(path: &str) -> Option<u8> {
    let mut stream = UnixStream::connect(path).expect("connect to the rendezvous");
    stream
        .write_all(&std::process::id().to_le_bytes())
        .expect("say the pid");
    let mut byte = [0];
    stream.read_exact(&mut byte).ok().map(|()| byte[0])
}
