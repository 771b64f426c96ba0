//! An embedded HTTP server that speaks the public repost-timeline API.
//!
//! The tutorial crawls `GET /2/statuses/repost_timeline.json` of a public microblog service.
//! [`Server`] answers the same request with the same JSON on `127.0.0.1`, from the seeded,
//! deterministic posts of [`dataset`], after a configurable latency per page, so that the
//! demo's serial and parallel crawls can be compared without the network and without a real
//! account.
//!
//! # The contract
//!
//! Parameters (in the query string):
//!
//! - `access_token`: one of [`ServerConfig::tokens`], in the query or in an
//!   `Authorization: OAuth2 TOKEN` header (`Bearer` is accepted too; the query's comes first).
//!   Missing or unknown: error 21332.
//! - `id`: the post. Missing or not a number: error 10008; not in the data set: error 20101.
//! - `count`: reposts per page, default [`DEFAULT_COUNT`]. Larger than [`MAX_COUNT`] is
//!   clamped to [`MAX_COUNT`], as the public service does; not a positive number: error 10008.
//! - `page`: 1-based, default 1; not a positive number: error 10008.
//! - `max_id`: only reposts whose id is at most this; `since_id`: only reposts whose id is
//!   greater than this. Pages count from the newest repost within those bounds. Not a
//!   number: error 10008; 0 is no bound.
//! - `filter_by_author` and anything else are accepted and ignored.
//!
//! A page is `{"reposts": [...], "hasvisible": false, "previous_cursor": ID, "next_cursor":
//! ID, "total_number": N}`, newest repost first. Only the newest [`REACHABLE`] reposts can be
//! reached, whatever `count` is: a page that starts past them (or past the total) has an empty
//! `reposts` and the same `total_number`. `next_cursor` is the id of the newest repost on the
//! next page and `previous_cursor` that of the newest on the previous page, or 0 when there is
//! no such page; so a client can page with `max_id=next_cursor` instead of page numbers.
//!
//! Errors are `{"error": "...", "error_code": N, "request": "/2/statuses/..."}`, checked in
//! this order:
//!
//! | code  | `error`                                        | HTTP | when |
//! |-------|------------------------------------------------|------|------|
//! | 10020 | `request api not found!`                       | 404  | any other path |
//! | 10021 | `HTTP method is not suported for this request!`| 405  | a method other than `GET` |
//! | 21332 | `invalid_access_token`                         | 401  | token missing or unknown |
//! | 10023 | `User requests out of rate limit!`             | 403  | token over [`ServerConfig::rate_limit`] |
//! | 10008 | `param error, see doc for more info.`          | 400  | `id`, `count` or `page` bad |
//! | 20101 | `target weibo does not exist!`                 | 400  | `id` not in the data set |
//! | 10012 | `illegal request!`                             | 400  | bytes that are not an HTTP/1.x request |
//! | 10009 | `Too many pending tasks, system is busy!`      | 503  | more than [`ServerConfig::max_connections`] open |
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use procpool_cli::api::{self, dataset, Server, ServerConfig};
//! use procpool_cli::crawl::{self, PageRequest};
//!
//! let server = Server::start(ServerConfig { latency: Duration::ZERO, ..ServerConfig::default() })?;
//! let request = PageRequest::new(server.base_url(), dataset::TUTORIAL_POST, api::DEFAULT_TOKEN);
//! let page = crawl::fetch_page(&request)?;
//! assert_eq!(page.total_number, 2_731);
//! assert_eq!(page.reposts.len(), 200);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Caveats
//!
//! - Each connection carries one request and is closed after the response
//!   (`Connection: close`); each is served on its own thread, so the latency of concurrent
//!   requests overlaps instead of adding up.
//! - A page is sent once the latency has passed since its request arrived (its body is
//!   built meanwhile, so a page costs the latency however long building it takes, as a
//!   remote server's own work is part of the latency it is measured by); an error is
//!   answered at once.
//! - A connection must send its whole request head within [`HEAD_DEADLINE`], however it
//!   spreads the bytes out; then it is closed without an answer.
//! - At most [`ServerConfig::max_connections`] connections are served at once (one thread
//!   each); one more is answered 503 (error 10009) at once and closed. It is a local server
//!   for a demo and tests, not a service to expose.
//! - Dropping the [`Server`] cuts latency waits short: requests still in flight get a closed
//!   connection instead of a response.

pub mod dataset;
mod http;
mod timeline;

use std::fmt;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use http::Incoming;
use timeline::{ApiError, Policy, Usage};

/// The path the server answers: the public repost-timeline endpoint.
pub const TIMELINE_PATH: &str = "/2/statuses/repost_timeline.json";

/// The token the tutorial uses, which the server accepts by default.
pub const DEFAULT_TOKEN: &str = "2.00Hk5I5B0XUlu4bde500a7f8FHAqIB";

/// The default latency per request: about what the tutorial saw per page of 200.
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(800);

/// Reposts per page when the request does not say.
pub const DEFAULT_COUNT: u32 = 20;

/// The most reposts per page; a larger `count` is clamped to it.
pub const MAX_COUNT: u32 = 200;

/// How many of a post's newest reposts can be reached: 10 pages of 200.
pub const REACHABLE: u64 = 2_000;

/// How long a connection may take to send its whole request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(10);

/// The default [`ServerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// How long a connection may take to accept its response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the accept loop waits after an error such as running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// How a [`Server`] behaves.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use procpool_cli::api::ServerConfig;
///
/// let config = ServerConfig {
///     latency: Duration::from_millis(5),
///     rate_limit: Some(100),
///     ..ServerConfig::default()
/// };
/// assert_eq!(config.port, 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The port to listen on, on `127.0.0.1`; 0 (the default) picks a free one.
    pub port: u16,
    /// How long after its request each page is sent (default [`DEFAULT_LATENCY`]); errors
    /// are answered at once.
    pub latency: Duration,
    /// The tokens the server accepts (default: [`DEFAULT_TOKEN`] alone).
    pub tokens: Vec<String>,
    /// The most requests each token may make over the server's whole life; later ones get
    /// error 10023. Every request with a valid token counts, whatever its answer. `None` (the
    /// default) is no limit. The limit never resets, so tests can reach it deterministically.
    pub rate_limit: Option<u32>,
    /// The most connections served at once (default [`DEFAULT_MAX_CONNECTIONS`]); one more is
    /// answered 503 at once.
    pub max_connections: usize,
    /// How long a connection may take to send its whole request head (default
    /// [`HEAD_DEADLINE`]).
    pub head_deadline: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            port: 0,
            latency: DEFAULT_LATENCY,
            tokens: vec![DEFAULT_TOKEN.to_owned()],
            rate_limit: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            head_deadline: HEAD_DEADLINE,
        }
    }
}

/// A running repost-timeline server on `127.0.0.1`.
///
/// It accepts connections on one thread and serves each on a thread of its own. Dropping it
/// stops accepting, closes the connections still open and joins every thread it started.
///
/// # Example
///
/// ```
/// use procpool_cli::api::{Server, ServerConfig};
///
/// let server = Server::start(ServerConfig::default())?;
/// assert!(server.base_url().starts_with("http://127.0.0.1:"));
/// assert_eq!(server.requests_served(), 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the server's threads share.
struct Shared {
    config: ServerConfig,
    /// Set once, when the server is dropped; `stop` is notified then.
    stopping: Mutex<bool>,
    stop: Condvar,
    served: AtomicU64,
    usage: Usage,
    /// The connection threads not yet joined, each with a handle on its socket.
    connections: Mutex<Vec<Connection>>,
}

/// A connection being served.
struct Connection {
    thread: JoinHandle<()>,
    stream: TcpStream,
}

impl Server {
    /// Binds `127.0.0.1:config.port` and starts serving.
    ///
    /// # Errors
    ///
    /// Returns the error from binding the port (for example, the port is in use) or from
    /// starting the accept thread.
    pub fn start(config: ServerConfig) -> io::Result<Server> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            stopping: Mutex::new(false),
            stop: Condvar::new(),
            served: AtomicU64::new(0),
            usage: Usage::default(),
            connections: Mutex::new(Vec::new()),
        });
        let acceptor = thread::Builder::new()
            .name("api-accept".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || shared.accept_loop(&listener)
            })?;
        Ok(Server {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to put in front of [`TIMELINE_PATH`]: `http://127.0.0.1:PORT`, without a
    /// trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many responses the server has sent (or begun to send), errors included.
    ///
    /// A response is counted before it is written, so once a client has read a response the
    /// count includes it.
    pub fn requests_served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("config", &self.shared.config)
            .field("requests_served", &self.requests_served())
            .finish_non_exhaustive()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        *lock(&self.shared.stopping) = true;
        self.shared.stop.notify_all();
        if let Some(acceptor) = self.acceptor.take() {
            // The accept thread is blocked in `accept`; a connection of our own wakes it to
            // see `stopping`. If even that fails (no descriptors left), leave the thread
            // detached rather than hang: it exits at its next connection.
            if TcpStream::connect(self.addr).is_ok() {
                let _ = acceptor.join();
            }
        }
        // The accept thread is gone, so no connection is added after this.
        let connections = mem::take(&mut *lock(&self.shared.connections));
        for connection in connections {
            // Wakes a thread blocked reading its request; one in its latency wait has been
            // woken by `stop` already.
            let _ = connection.stream.shutdown(Shutdown::Both);
            let _ = connection.thread.join();
        }
    }
}

impl Shared {
    fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        loop {
            let accepted = listener.accept();
            if self.is_stopping() {
                return;
            }
            match accepted {
                Ok((stream, _)) => self.serve(stream),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                // Out of descriptors or memory, or the peer gave up first: pause so that a
                // persistent error does not spin.
                Err(_) => {
                    if !self.wait_unless_stopping(ACCEPT_BACKOFF) {
                        return;
                    }
                }
            }
        }
    }

    /// Serves `stream` on a new thread and remembers the thread, joining those that ended;
    /// past the bound on connections, answers 503 at once instead.
    fn serve(self: &Arc<Self>, mut stream: TcpStream) {
        let mut connections = lock(&self.connections);
        let (ended, running): (Vec<_>, Vec<_>) = mem::take(&mut *connections)
            .into_iter()
            .partition(|connection| connection.thread.is_finished());
        for connection in ended {
            let _ = connection.thread.join();
        }
        *connections = running;
        if connections.len() >= self.config.max_connections {
            drop(connections);
            // The answer is small enough for the socket's buffer; a short timeout keeps a
            // peer that does not read from holding the accept loop.
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let reply = ApiError::Busy.reply("");
            self.served.fetch_add(1, Ordering::SeqCst);
            let _ = http::write_response(&mut stream, reply.status, &reply.body);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let Ok(handle) = stream.try_clone() else {
            return;
        };
        let shared = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("api-connection".to_owned())
            .spawn(move || shared.handle(stream));
        // Without a thread the connection is dropped, and closed: the client sees a reset.
        let Ok(thread) = spawned else {
            return;
        };
        connections.push(Connection {
            thread,
            stream: handle,
        });
    }

    /// Serves the one request of `stream`, then closes the connection: explicitly, because
    /// the copy of the socket kept for [`Server`]'s `Drop` would otherwise hold it open.
    fn handle(&self, mut stream: TcpStream) {
        self.answer(&mut stream);
        let _ = stream.shutdown(Shutdown::Both);
    }

    /// Reads one request from `stream`, waits until the latency has passed since it arrived
    /// (for a page, not an error) and answers.
    fn answer(&self, stream: &mut TcpStream) {
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let policy = Policy {
            tokens: &self.config.tokens,
            rate_limit: self.config.rate_limit,
        };
        let incoming = http::read_request(stream, self.config.head_deadline);
        let arrived = Instant::now();
        let reply = match incoming {
            Ok(Incoming::Request(request)) => timeline::answer(&request, policy, &self.usage),
            Ok(Incoming::Malformed) => ApiError::IllegalRequest.reply(""),
            Ok(Incoming::Closed) | Err(_) => return,
        };
        let left = self.config.latency.saturating_sub(arrived.elapsed());
        if reply.status == 200 && !self.wait_unless_stopping(left) {
            return;
        }
        self.served.fetch_add(1, Ordering::SeqCst);
        // A client that went away is not the server's problem.
        let _ = http::write_response(stream, reply.status, &reply.body);
    }

    fn is_stopping(&self) -> bool {
        *lock(&self.stopping)
    }

    /// Waits for `duration`, or less if the server is dropped meanwhile; false if it was.
    fn wait_unless_stopping(&self, duration: Duration) -> bool {
        if duration.is_zero() {
            return !self.is_stopping();
        }
        let stopping = lock(&self.stopping);
        let (stopping, _) = self
            .stop
            .wait_timeout_while(stopping, duration, |stopping| !*stopping)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        !*stopping
    }
}

/// Locks `mutex`, ignoring poisoning: every value behind these locks stays consistent even if
/// a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
