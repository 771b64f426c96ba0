//! A real `redis-server` for the tests of pools over Redis, and host agents (`pp_host`) as
//! separate process groups that the tests kill, stop and resume.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits at most for something that should happen much sooner.
pub const BOUND: Duration = Duration::from_secs(30);

/// A `redis-server` of the test's own, on a Unix socket in a fresh folder, with no
/// persistence; killed and reaped on drop.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    dir: PathBuf,
    /// With TLS: the port it takes TLS connections on.
    tls_port: Option<u16>,
}

impl Server {
    /// Starts a server, and waits until it answers `PING`. Panics with a clear message if
    /// `redis-server` is not installed: these tests are never skipped.
    pub fn start() -> Server {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("procpool-redis-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make the server's folder");
        let mut server = Server {
            child: None,
            dir,
            tls_port: None,
        };
        server.spawn();
        server
    }

    /// A server that also takes TLS connections on a loopback port, with a certificate of a
    /// private CA made by `openssl` ([`Server::ca`]).
    pub fn start_tls() -> Server {
        let mut server = Server::start();
        server.kill();
        let dir = server.dir.clone();
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stderr(Stdio::null())
                .status()
                .expect("run openssl (Debian: apt-get install openssl)");
            assert!(status.success(), "openssl {args:?}");
        };
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=procpool test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        server.tls_port = Some(port);
        server.spawn();
        server
    }

    /// The private CA's certificate of a TLS server.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The `rediss://` URL of a TLS server, for `user`.
    pub fn tls_url(&self, user: &str, password: &str) -> String {
        let port = self.tls_port.expect("a TLS server");
        format!("rediss://{user}:{password}@127.0.0.1:{port}/")
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(self.socket())
            .arg("--dir")
            .arg(&self.dir);
        if let Some(port) = self.tls_port {
            command
                .args(["--tls-port", &port.to_string()])
                .args([
                    "--tls-cert-file",
                    "server.crt",
                    "--tls-key-file",
                    "server.key",
                ])
                .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"]);
        }
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (Debian: apt-get install redis-server); .ci/run does")
            });
        self.child = Some(child);
        let deadline = Instant::now() + BOUND;
        loop {
            if let Ok(mut conn) = self.connect()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// The URL of the server.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// A connection of the test's own, to look at the queue's keys.
    pub fn connect(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection()
    }

    /// Kills the server with SIGKILL, reaps it, and starts a fresh one on the same socket:
    /// everything it held is lost.
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.socket());
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
        tests_integration::children_of(self.pid())
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
        let workers = self.workers();
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
        let workers = tests_integration::children_of(child.id());
        drop(child.stdin.take());
        let status = child.wait().expect("wait for pp_host");
        assert!(status.success(), "host {} exited with {status}", self.name);
        wait_gone(&workers);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let workers = tests_integration::children_of(child.id());
            // SAFETY: as in `signal`.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            wait_gone(&workers);
        }
    }
}

/// Waits until none of `pids` exists any more (they are not our children: another process
/// reaps them).
pub fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + BOUND;
    for pid in pids {
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "process {pid} is still there");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Waits until `check` holds, looking again every few milliseconds, for at most [`BOUND`].
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !check() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(5));
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
