//! Host agents (`pp_host`) as separate process groups that the tests kill, stop and resume,
//! on the real `redis-server` of `tests_integration::redis_server`.

pub use tests_integration::redis_server::{BOUND, Server, wait_gone, wait_until};

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A host agent process (`pp_host`), in a process group of its own with its workers.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    pub name: String,
}

impl Agent {
    /// Starts host `name` on `queue` with `processes` workers and a lease of `lease`.
    pub fn start(
        server: &Server,
        queue: &str,
        processes: usize,
        lease: Duration,
        name: &str,
    ) -> Agent {
        Agent::start_at(&server.url(), queue, processes, lease, name, &[])
    }

    /// [`Agent::start`] for the server at `url`, with more environment variables.
    pub fn start_at(
        url: &str,
        queue: &str,
        processes: usize,
        lease: Duration,
        name: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Agent {
        let child = Command::new(env!("CARGO_BIN_EXE_pp_host"))
            .arg(url)
            .arg(queue)
            .arg(processes.to_string())
            .arg(lease.as_millis().to_string())
            .arg(name)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start pp_host");
        Agent {
            child: Some(child),
            name: name.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The agent's local workers.
    pub fn workers(&self) -> Vec<u32> {
        tests_integration::workers_of(self.pid())
    }

    /// Sends `signal` to the agent's whole process group.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a process group id of our own child; no memory is involved.
        let done = unsafe { libc::kill(-(self.pid() as i32), signal) };
        assert_eq!(done, 0, "kill({signal}) of host {}", self.name);
    }

    /// Kills the agent (SIGKILL to the group), reaps it, and waits until its workers are
    /// gone too.
    pub fn kill(mut self) {
        let workers = tests_integration::descendants_of(self.pid());
        self.signal(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        wait_gone(&workers);
    }

    /// Stops the agent as a user does: its standard input closes, it hands back its calls,
    /// ends its workers and exits 0.
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let workers = tests_integration::descendants_of(child.id());
        drop(child.stdin.take());
        let status = child.wait().expect("wait for pp_host");
        assert!(status.success(), "host {} exited with {status}", self.name);
        wait_gone(&workers);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let workers = tests_integration::descendants_of(child.id());
            // SAFETY: as in `signal`.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            wait_gone(&workers);
        }
    }
}

/// A caller process (`pp_host caller`) that queues `n` calls of `work_logged(log, 100)`;
/// returns once they are queued.
pub fn start_caller(server: &Server, queue: &str, lease: Duration, log: &str, n: usize) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pp_host"))
        .args(["caller", &server.url(), queue])
        .arg(lease.as_millis().to_string())
        .args([log, &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the caller");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the caller's line");
    assert_eq!(line.trim(), "queued");
    child
}

/// Runs `pp_host square URL QUEUE X` with `env`: a caller in a process of its own; returns
/// what it printed, or its failure.
pub fn square_in_a_caller(
    url: &str,
    queue: &str,
    x: u64,
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<u64, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_pp_host"))
        .args(["square", url, queue, &x.to_string()])
        .envs(env.iter().copied())
        .output()
        .expect("run the caller");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a number"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Ends a test: closes `pool` and waits for its calls, stops `hosts` as a user does (each
/// hands back what it holds and exits 0), stops the server, and checks that no child
/// process is left.
pub fn finish<const N: usize>(pool: procpool::Pool, hosts: [Agent; N], server: Server) {
    pool.close();
    pool.join().expect("join after close");
    for host in hosts {
        host.stop();
    }
    drop(server);
    tests_integration::assert_no_children();
}
