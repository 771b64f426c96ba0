//! A real `redis-server` of a test's own, and waits on what other processes do.

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
