//! Turning a start method into a running worker process and the parent's end of its socket.
//!
//! Whatever starts a worker hands back a [`Process`], the one handle through which the pool
//! waits for it, signals it and learns how it ended.

mod forkserver;
mod process;
mod spawn;

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

pub(crate) use process::{Process, Reaped};

/// How a pool starts its worker processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartMethod {
    /// Re-execute the current binary (`/proc/self/exe`) with the worker's socket inherited
    /// and a marker in the child's environment; the worker is entered before `main`, so no
    /// code of the program's own runs in it, other than the tasks.
    Spawn,
    /// Fork each worker from a server process that the pool starts first, by spawn: a
    /// process with one thread that has run nothing but the program's start-up. A worker
    /// then starts in a fraction of the time a spawn takes (no exec, no dynamic linking),
    /// which makes large pools and replacements after a death or a recycle cheap.
    ///
    /// Workers are forked from the server, never from the pool's own process, so they
    /// inherit none of its threads, locks or heap. They share the server's address-space
    /// layout (one exec, not one per worker), and the state the server started with: its
    /// environment, working directory, umask, resource limits and standard output and error
    /// are the pool's at the moment its first worker started, where a spawned replacement
    /// takes the pool's as they are when it starts. Each worker leads a process group of its
    /// own, as under spawn. It needs pidfds (Linux 5.3); where the kernel has none, the pool
    /// spawns its workers instead.
    ///
    /// A server that stops answering (stopped by a signal, say) holds the pool's supervisor
    /// for up to 10 seconds, then is replaced; its workers end with it.
    ///
    /// The default, because it is as safe as spawn (no worker is a copy of a process with
    /// other threads) and faster wherever many workers are started: on a 2-core VM, in the
    /// latest run of `bench/compare`, a pool of 100 and a first map in 16.6 ms (spawn
    /// 66.6 ms), a replacement after a death in 0.18 ms (0.86 ms), and
    /// `max_tasks_per_child(1)` at 4,811 tasks a second (1,377). A pool of 2 starts in
    /// about the same time either way (1.52 ms, spawn 1.22 ms; 1.45 and 1.34 ms in the run
    /// before): the server's exec takes the place of the workers'. `BENCHMARKS.md` has the
    /// figures.
    #[default]
    Forkserver,
}

impl StartMethod {
    /// The variable that sets the default start method for the pools of a program that does
    /// not choose one: `spawn` or `forkserver`.
    pub const ENV: &'static str = "PROCPOOL_START_METHOD";

    /// The start method a pool uses when its builder is not given one: the one
    /// [`StartMethod::ENV`] names, else the default, [`StartMethod::Forkserver`].
    ///
    /// # Errors
    ///
    /// A message naming the value, if the variable is set to neither name.
    pub fn from_env() -> Result<StartMethod, String> {
        match std::env::var(Self::ENV) {
            Err(std::env::VarError::NotPresent) => Ok(StartMethod::default()),
            Ok(name) if name == "spawn" => Ok(StartMethod::Spawn),
            Ok(name) if name == "forkserver" => Ok(StartMethod::Forkserver),
            Ok(name) => Err(format!(
                "{}={name:?} names no start method (spawn or forkserver)",
                Self::ENV
            )),
            Err(std::env::VarError::NotUnicode(name)) => Err(format!(
                "{}={name:?} names no start method (spawn or forkserver)",
                Self::ENV
            )),
        }
    }
}

/// How many workers a pool that replaces workers keeps forked ahead: with one, a pool of 2
/// that recycles each worker after one job waited for a fork in about one recycle of two.
const SPARES: usize = 2;

/// A freshly started worker process, not yet through its handshake.
pub(crate) struct Started {
    pub(crate) process: Process,
    pub(crate) socket: UnixStream,
    /// Which forkserver forked it (numbered from 1 in the order the pool started them);
    /// `None` for a spawned worker. Workers of one server are copies of one process.
    pub(crate) server: Option<u64>,
}

/// What starts a pool's workers: for the forkserver, it holds the server, started with the
/// first worker and started again if it dies or stops answering.
#[derive(Debug)]
pub(crate) struct Starter {
    method: StartMethod,
    server: Option<Arc<forkserver::Server>>,
    /// The pool's first workers, and how many workers were started so far: a start after
    /// the first ones is a replacement, and replacements keep [`SPARES`] forked (no more
    /// than the pool has workers).
    first: usize,
    started: usize,
    /// Servers started so far.
    servers: u64,
}

impl Starter {
    pub(crate) fn new(method: StartMethod) -> Starter {
        Starter {
            method,
            server: None,
            first: 0,
            started: 0,
            servers: 0,
        }
    }

    /// Says that `count` workers are about to be started one after another, so that a
    /// forkserver can fork the next while the pool sets up the last.
    pub(crate) fn expect(&mut self, count: usize) {
        self.first = count;
        if self.method == StartMethod::Forkserver
            && let Ok(server) = self.server()
        {
            // A failure shows again, and is reported, at the start it concerns.
            let _ = server.ask_ahead(count);
        }
    }

    /// Starts a worker.
    pub(crate) fn start(&mut self) -> io::Result<Started> {
        match self.method {
            StartMethod::Spawn => spawn::spawn(),
            StartMethod::Forkserver => {
                let spares = if self.started >= self.first {
                    SPARES.min(self.first)
                } else {
                    0
                };
                self.started += 1;
                let server = self.server()?;
                match server.fork(spares) {
                    // A server that died (killed by someone) or got stuck is replaced once.
                    Err(_) if server.is_broken() => {
                        self.server = None;
                        self.server()?.fork(spares)
                    }
                    // A kernel without pidfds (before Linux 5.3): workers are spawned.
                    Err(error) if error.raw_os_error() == Some(crate::sys::ENOSYS) => {
                        self.method = StartMethod::Spawn;
                        self.server = None;
                        spawn::spawn()
                    }
                    started => started,
                }
            }
        }
    }

    /// Ends the server, if there is one and nothing else holds it (no worker of it is left):
    /// it is reaped here, and a later start would start another.
    pub(crate) fn stop(&mut self) {
        self.server = None;
    }

    /// The server, started if there is none yet or the last one broke.
    fn server(&mut self) -> io::Result<Arc<forkserver::Server>> {
        match &self.server {
            Some(server) if !server.is_broken() => Ok(Arc::clone(server)),
            _ => {
                let server = forkserver::Server::start(self.servers + 1)?;
                self.servers += 1;
                self.server = Some(Arc::clone(&server));
                Ok(server)
            }
        }
    }
}
