//! Errors: what a caller sees ([`Error`], [`BuildError`]) and what a worker reports
//! (`TaskFailure`, which crosses the wire).

use std::any::Any;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Which worker ran (or was running) a task: its slot index in the pool and its process id.
///
/// A replacement worker takes the index of the worker it replaces, with a new pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's slot, `0..processes`.
    pub index: usize,
    /// The worker's process id.
    pub pid: u32,
}

impl fmt::Display for WorkerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {} (pid {})", self.index, self.pid)
    }
}

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerExit {
    /// It exited with this status code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// It exited, but its status could not be read: the program has the kernel reap its
    /// children (`SIGCHLD` set to `SIG_IGN`) or reaped the worker itself (`wait` for any
    /// child).
    Unknown,
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WorkerExit::Code(code) => write!(f, "exited with code {code}"),
            WorkerExit::Unknown => f.write_str(
                "exited with a status that could not be read (was SIGCHLD ignored, or the worker reaped by a wait for any child?)",
            ),
            WorkerExit::Signal(signal) => match signal_name(signal) {
                Some(name) => write!(f, "was killed by signal {signal} ({name})"),
                None => write!(f, "was killed by signal {signal}"),
            },
        }
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => return None,
    })
}

/// What kind of failure an [`Error`] is. More kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The task panicked; the message and location are in [`Error::panic_message`] and
    /// [`Error::panic_location`]. The worker carried on.
    Panicked,
    /// The worker process died while it held the task; see [`Error::worker_exit`].
    WorkerDied,
    /// Arguments or a result could not be encoded or decoded with the wire codec.
    Codec,
    /// The function was not registered with `#[procpool::task]`.
    Unregistered,
    /// The pool was closed or terminated before the task was submitted.
    Closed,
    /// The pool was terminated before the task finished.
    Terminated,
    /// The pool cannot start workers any more: the initializer failed in a replacement
    /// worker, replacements kept dying before they were ready, a worker could not be
    /// started, or the supervisor itself failed. The message says which.
    PoolBroken,
    /// A wait with a timeout ran out; the task itself goes on.
    WaitTimeout,
    /// `join` was called while the pool was still running.
    StillRunning,
    /// A call's argument was out of range, such as a chunk size of zero.
    InvalidInput,
    /// The pool (or a result handle) was used in another process than the one that built
    /// it: a child made by `fork` after the pool was built. Build a new pool there.
    OtherProcess,
    /// The call was cancelled ([`AsyncResult::cancel`](crate::AsyncResult::cancel) and the
    /// like) before its result was delivered: removed from the queue, or its worker killed.
    Cancelled,
    /// The input iterator of an [`imap`](crate::Pool::imap) panicked while the pool pulled
    /// the item for this call; the message is the panic's. The calls before it ran, and
    /// the iterator ends here.
    InputPanicked,
    /// The task ran past its timeout ([`Builder::task_timeout`](crate::Builder::task_timeout)
    /// or a per-call timeout), so its worker was killed and replaced; see [`Error::timeout`].
    TimedOut,
    /// The task's worker went over its memory limit
    /// ([`Builder::memory_limit`](crate::Builder::memory_limit)) and ended; a replacement
    /// worker starts. The limit is in [`Error::memory_limit`].
    OutOfMemory,
}

/// The error of a task or of a call on a [`Pool`](crate::Pool).
///
/// It is cheap to clone. Use [`kind`](Error::kind) and the accessors to tell failures apart;
/// its `Display` names the task, the worker and how it ended, where they are known.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    task: Option<String>,
    worker: Option<WorkerInfo>,
    exit: Option<WorkerExit>,
    message: String,
    location: Option<String>,
    backtrace: Option<String>,
    timeout: Option<Duration>,
    /// The memory limit the worker went over, in bytes.
    memory_limit: Option<u64>,
    retried: u32,
    /// Why the pool killed the worker, when it did (not for a timeout, which says so).
    killed_by_pool: Option<String>,
    /// The machine whose worker ran the task, for a pool over Redis.
    host: Option<String>,
}

impl Inner {
    /// The worker, and its host where it had one: "worker 0 (pid 7) on host a".
    fn worker_text(&self) -> Option<String> {
        let worker = self.worker?;
        Some(match &self.host {
            Some(host) => format!("{worker} on host {host}"),
            None => worker.to_string(),
        })
    }
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            inner: Arc::new(Inner {
                kind,
                task: None,
                worker: None,
                exit: None,
                message: message.into(),
                location: None,
                backtrace: None,
                timeout: None,
                memory_limit: None,
                retried: 0,
                killed_by_pool: None,
                host: None,
            }),
        }
    }

    fn with(self, edit: impl FnOnce(&mut Inner)) -> Error {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            kind: shared.kind,
            task: shared.task.clone(),
            worker: shared.worker,
            exit: shared.exit,
            message: shared.message.clone(),
            location: shared.location.clone(),
            backtrace: shared.backtrace.clone(),
            timeout: shared.timeout,
            memory_limit: shared.memory_limit,
            retried: shared.retried,
            killed_by_pool: shared.killed_by_pool.clone(),
            host: shared.host.clone(),
        });
        edit(&mut inner);
        Error {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn task(self, name: &str) -> Error {
        self.with(|inner| inner.task = Some(name.to_owned()))
    }

    pub(crate) fn worker(self, worker: WorkerInfo) -> Error {
        self.with(|inner| inner.worker = Some(worker))
    }

    pub(crate) fn died(task: &str, worker: WorkerInfo, exit: WorkerExit) -> Error {
        Error::new(ErrorKind::WorkerDied, "")
            .task(task)
            .worker(worker)
            .with(|inner| inner.exit = Some(exit))
    }

    /// The pool killed the worker, for `reason`.
    pub(crate) fn killed_by_the_pool(self, reason: &str) -> Error {
        self.with(|inner| inner.killed_by_pool = Some(reason.to_owned()))
    }

    /// A worker sent something the protocol does not allow, and was killed for it.
    pub(crate) fn protocol(
        task: &str,
        worker: WorkerInfo,
        exit: WorkerExit,
        detail: &str,
    ) -> Error {
        Error::new(
            ErrorKind::WorkerDied,
            format!("broke the protocol ({detail})"),
        )
        .task(task)
        .worker(worker)
        .with(|inner| inner.exit = Some(exit))
        .killed_by_the_pool("it broke the protocol")
    }

    pub(crate) fn timed_out(task: &str, worker: WorkerInfo, timeout: Duration) -> Error {
        Error::new(ErrorKind::TimedOut, "")
            .task(task)
            .worker(worker)
            .with(|inner| inner.timeout = Some(timeout))
    }

    /// The worker running `task` went over its memory limit of `limit` bytes and ended
    /// with `exit`.
    pub(crate) fn out_of_memory(
        task: &str,
        worker: WorkerInfo,
        exit: WorkerExit,
        limit: u64,
    ) -> Error {
        Error::new(ErrorKind::OutOfMemory, "")
            .task(task)
            .worker(worker)
            .with(|inner| {
                inner.exit = Some(exit);
                inner.memory_limit = Some(limit);
            })
    }

    /// Records that the task was run this many times more before it failed.
    pub(crate) fn with_retries(self, times: u32) -> Error {
        if times == 0 {
            return self;
        }
        self.with(|inner| inner.retried = times)
    }

    /// This error, for the last calls an iterator yields: it says that the rest of the input
    /// will not be run.
    pub(crate) fn ending_the_iterator(self) -> Error {
        self.with(|inner| {
            inner
                .message
                .push_str("; the iterator ends here, and the rest of its input is not run")
        })
    }

    /// The caller's input iterator panicked, with `payload`, when asked for item `index`.
    pub(crate) fn input_panicked(task: &str, index: usize, payload: &(dyn Any + Send)) -> Error {
        let message = panic_message(payload);
        Error::new(
            ErrorKind::InputPanicked,
            format!("the input iterator panicked when asked for item {index}: {message}"),
        )
        .task(task)
    }

    pub(crate) fn cancelled(task: &str) -> Error {
        Error::new(ErrorKind::Cancelled, "the call was cancelled").task(task)
    }

    /// A pool or a handle used in a forked child of the process that built it.
    pub(crate) fn other_process(what: &str) -> Error {
        Error::new(
            ErrorKind::OtherProcess,
            format!(
                "this {what} belongs to the process that built the pool, not to this forked child of it (pid {}): build a new pool here",
                std::process::id()
            ),
        )
    }

    pub(crate) fn closed() -> Error {
        Error::new(
            ErrorKind::Closed,
            "the pool is closed: it accepts no new tasks",
        )
    }

    pub(crate) fn terminated(task: &str) -> Error {
        Error::new(ErrorKind::Terminated, "the pool was terminated").task(task)
    }

    /// For a call whose caller's thread panicked while it ran the call on borrowed workers.
    pub(crate) fn abandoned(task: &str) -> Error {
        Error::new(
            ErrorKind::Terminated,
            "the thread that made the call panicked while it ran",
        )
        .task(task)
    }

    pub(crate) fn wait_timeout(task: &str, after: Duration) -> Error {
        Error::new(ErrorKind::WaitTimeout, format!("timed out after {after:?}")).task(task)
    }

    /// Turns what a worker reported into the caller's error.
    pub(crate) fn from_failure(failure: TaskFailure, task: &str, worker: WorkerInfo) -> Error {
        let error = match failure {
            TaskFailure::Panic {
                message,
                location,
                backtrace,
            } => Error::new(ErrorKind::Panicked, message).with(|inner| {
                inner.location = location;
                inner.backtrace = backtrace;
            }),
            TaskFailure::ArgsDecode(detail) => Error::new(
                ErrorKind::Codec,
                format!("cannot decode the arguments in the worker: {detail}"),
            ),
            TaskFailure::ResultEncode(detail) => Error::new(
                ErrorKind::Codec,
                format!("cannot encode the result: {detail}"),
            ),
            TaskFailure::Unregistered(name) => Error::new(
                ErrorKind::Unregistered,
                format!("the worker has no task named `{name}`"),
            ),
        };
        error.task(task).worker(worker)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        self.inner.kind == ErrorKind::Panicked
    }

    /// Whether the worker died while it held the task.
    pub fn is_worker_died(&self) -> bool {
        self.inner.kind == ErrorKind::WorkerDied
    }

    /// The panic message, if the task panicked.
    pub fn panic_message(&self) -> Option<&str> {
        self.is_panic().then_some(self.inner.message.as_str())
    }

    /// Where the task panicked (`file:line:column`), if it panicked and the worker knew.
    pub fn panic_location(&self) -> Option<&str> {
        self.inner.location.as_deref()
    }

    /// The worker's backtrace of the panic, for [`ErrorKind::Panicked`], when the program
    /// asked for backtraces (`RUST_BACKTRACE=1`, or `RUST_LIB_BACKTRACE`, which workers
    /// inherit). The alternate form of `Display` (`{:#}`) shows it after the message, as
    /// Python shows a remote traceback.
    pub fn panic_backtrace(&self) -> Option<&str> {
        self.inner.backtrace.as_deref()
    }

    /// The registered name of the task, where the error belongs to one.
    pub fn task_name(&self) -> Option<&str> {
        self.inner.task.as_deref()
    }

    /// The worker that ran the task, where one did.
    pub fn worker_info(&self) -> Option<WorkerInfo> {
        self.inner.worker
    }

    /// The machine whose worker ran the task, for a pool over Redis
    /// (`Builder::redis`, with the `redis` feature): the host agent's name.
    pub fn host(&self) -> Option<&str> {
        self.inner.host.as_deref()
    }

    /// How the worker ended, if it died while it held the task.
    pub fn worker_exit(&self) -> Option<WorkerExit> {
        self.inner.exit
    }

    /// Whether the pool itself killed the worker that held the task: it broke the protocol,
    /// or its socket closed and it did not exit by itself soon after. (A timeout, which kills
    /// the worker too, is [`ErrorKind::TimedOut`].)
    pub fn killed_by_pool(&self) -> bool {
        self.inner.killed_by_pool.is_some()
    }

    /// Whether the task ran past its timeout and its worker was killed.
    pub fn is_timed_out(&self) -> bool {
        self.inner.kind == ErrorKind::TimedOut
    }

    /// The timeout the task ran past, if it timed out.
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    /// Whether the task's worker went over its memory limit ([`ErrorKind::OutOfMemory`]).
    pub fn is_out_of_memory(&self) -> bool {
        self.inner.kind == ErrorKind::OutOfMemory
    }

    /// The memory limit, in bytes, that the task's worker went over, if it did
    /// ([`ErrorKind::OutOfMemory`]).
    pub fn memory_limit(&self) -> Option<u64> {
        self.inner.memory_limit
    }

    /// How many times the task was run again (see
    /// [`Builder::retries`](crate::Builder::retries)) before it failed with this error.
    pub fn retried(&self) -> u32 {
        self.inner.retried
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("task", &self.inner.task)
            .field("worker", &self.inner.worker)
            .field("exit", &self.inner.exit)
            .field("message", &self.inner.message)
            .field("location", &self.inner.location)
            .field("timeout", &self.inner.timeout)
            .field("memory_limit", &self.inner.memory_limit)
            .field("retried", &self.inner.retried)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let task = inner.task.as_deref().unwrap_or("?");
        match inner.kind {
            ErrorKind::WorkerDied => {
                let worker = inner.worker_text().unwrap_or_else(|| "a worker".into());
                if inner.message.is_empty() {
                    let exit = inner
                        .exit
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "died".into());
                    write!(f, "{worker} {exit} while running task `{task}`")?;
                } else {
                    write!(f, "{worker} {} while running task `{task}`", inner.message)?;
                    if let Some(exit) = inner.exit {
                        write!(f, " and {exit}")?;
                    }
                }
                if let Some(reason) = &inner.killed_by_pool {
                    write!(f, " (killed by the pool: {reason})")?;
                }
                match inner.retried {
                    0 => Ok(()),
                    1 => write!(f, ", after 1 retry"),
                    n => write!(f, ", after {n} retries"),
                }
            }
            ErrorKind::TimedOut => {
                write!(f, "task `{task}` timed out")?;
                if let Some(timeout) = inner.timeout {
                    write!(f, " after {timeout:?}")?;
                }
                match inner.worker_text() {
                    Some(worker) => write!(f, ": {worker} was killed"),
                    None => Ok(()),
                }
            }
            ErrorKind::OutOfMemory => {
                write!(f, "task `{task}` ran out of memory")?;
                let worker = inner.worker_text().unwrap_or_else(|| "its worker".into());
                write!(f, ": {worker} went over its memory limit")?;
                if let Some(limit) = inner.memory_limit {
                    write!(f, " of {limit} bytes ({:.1} MiB)", limit as f64 / 1048576.0)?;
                }
                f.write_str(" and was replaced")
            }
            ErrorKind::Panicked => {
                write!(f, "task `{task}` panicked")?;
                if let Some(location) = &inner.location {
                    write!(f, " at {location}")?;
                }
                if let Some(worker) = inner.worker_text() {
                    write!(f, " in {worker}")?;
                }
                write!(f, ": {}", inner.message)?;
                match &inner.backtrace {
                    Some(backtrace) if f.alternate() => {
                        write!(f, "\n\nbacktrace in the worker:\n{backtrace}")
                    }
                    _ => Ok(()),
                }
            }
            _ => {
                if inner.task.is_some() {
                    write!(f, "task `{task}`: ")?;
                }
                f.write_str(&inner.message)?;
                if let Some(worker) = inner.worker_text() {
                    write!(f, " (in {worker})")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

/// An [`Error`] as plain data, to cross from a host agent to its caller over Redis.
#[cfg(feature = "redis")]
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ErrorRecord {
    kind: String,
    task: Option<String>,
    worker: Option<(usize, u32)>,
    /// 0 for an exit code, 1 for a signal, 2 for a status that could not be read.
    exit: Option<(u8, i32)>,
    message: String,
    location: Option<String>,
    backtrace: Option<String>,
    timeout: Option<Duration>,
    retried: u32,
    killed_by_pool: Option<String>,
}

#[cfg(feature = "redis")]
impl Error {
    pub(crate) fn to_record(&self) -> ErrorRecord {
        let inner = &*self.inner;
        ErrorRecord {
            kind: format!("{:?}", inner.kind),
            task: inner.task.clone(),
            worker: inner.worker.map(|w| (w.index, w.pid)),
            exit: inner.exit.map(|exit| match exit {
                WorkerExit::Code(code) => (0, code),
                WorkerExit::Signal(signal) => (1, signal),
                WorkerExit::Unknown => (2, 0),
            }),
            message: inner.message.clone(),
            location: inner.location.clone(),
            backtrace: inner.backtrace.clone(),
            timeout: inner.timeout,
            retried: inner.retried,
            killed_by_pool: inner.killed_by_pool.clone(),
        }
    }

    /// The error a host agent named `host` sent. A kind this build does not know (a host
    /// of a newer procpool) becomes [`ErrorKind::PoolBroken`] with its name in the message.
    pub(crate) fn from_record(record: ErrorRecord, host: &str) -> Error {
        const KINDS: [ErrorKind; 15] = [
            ErrorKind::Panicked,
            ErrorKind::WorkerDied,
            ErrorKind::Codec,
            ErrorKind::Unregistered,
            ErrorKind::Closed,
            ErrorKind::Terminated,
            ErrorKind::PoolBroken,
            ErrorKind::WaitTimeout,
            ErrorKind::StillRunning,
            ErrorKind::InvalidInput,
            ErrorKind::OtherProcess,
            ErrorKind::Cancelled,
            ErrorKind::InputPanicked,
            ErrorKind::TimedOut,
            ErrorKind::OutOfMemory,
        ];
        let known = KINDS.iter().find(|k| format!("{k:?}") == record.kind);
        let (kind, message) = match known {
            Some(&kind) => (kind, record.message),
            None => (
                ErrorKind::PoolBroken,
                format!("{} (an error of kind {})", record.message, record.kind),
            ),
        };
        Error {
            inner: Arc::new(Inner {
                kind,
                task: record.task,
                worker: record.worker.map(|(index, pid)| WorkerInfo { index, pid }),
                exit: record.exit.map(|(how, value)| match how {
                    0 => WorkerExit::Code(value),
                    1 => WorkerExit::Signal(value),
                    _ => WorkerExit::Unknown,
                }),
                message,
                location: record.location,
                backtrace: record.backtrace,
                timeout: record.timeout,
                // Hosts set no memory limit, and the record does not carry one.
                memory_limit: None,
                retried: record.retried,
                killed_by_pool: record.killed_by_pool,
                host: Some(host.to_owned()),
            }),
        }
    }

    /// This error, with the host whose worker it came from.
    pub(crate) fn on_host(self, host: &str) -> Error {
        self.with(|inner| inner.host = Some(host.to_owned()))
    }
}

/// Why [`Builder::build`](crate::Builder::build) could not start a pool.
#[derive(Debug)]
pub struct BuildError {
    kind: BuildErrorKind,
    message: String,
    worker: Option<WorkerInfo>,
    exit: Option<WorkerExit>,
    source: Option<BuildSource>,
}

#[derive(Debug)]
enum BuildSource {
    Io(io::Error),
    Initializer(Error),
}

/// What kind of failure a [`BuildError`] is. More kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BuildErrorKind {
    /// A setting is out of range (zero processes, say); the message names it and its limit.
    InvalidInput,
    /// A worker process could not be started (the operating system refused).
    Spawn,
    /// The initializer failed in a worker: it panicked or its arguments did not decode;
    /// [`BuildError::initializer_error`] has the details.
    Initializer,
    /// A worker ended before it was ready (an initializer that exits, or a crash);
    /// [`BuildError::worker_exit`] says how.
    WorkerDied,
    /// A worker answered the handshake wrongly (a binary rebuilt while the pool started).
    Handshake,
    /// The pool could not reach its queue's server (Redis, with
    /// `Builder::redis`, with the `redis` feature); the message says why.
    Connect,
}

impl BuildError {
    fn new(kind: BuildErrorKind, message: String) -> BuildError {
        BuildError {
            kind,
            message,
            worker: None,
            exit: None,
            source: None,
        }
    }

    pub(crate) fn invalid(message: String) -> BuildError {
        BuildError::new(BuildErrorKind::InvalidInput, message)
    }

    /// A pool over Redis could not set up its queue.
    #[cfg(feature = "redis")]
    pub(crate) fn connect(error: &Error) -> BuildError {
        let kind = match error.kind() {
            ErrorKind::InvalidInput => BuildErrorKind::InvalidInput,
            _ => BuildErrorKind::Connect,
        };
        BuildError::new(kind, error.to_string())
    }

    pub(crate) fn spawn(error: io::Error) -> BuildError {
        BuildError {
            source: Some(BuildSource::Io(error)),
            ..BuildError::new(
                BuildErrorKind::Spawn,
                "cannot start a worker process".into(),
            )
        }
    }

    pub(crate) fn initializer(error: Error) -> BuildError {
        BuildError {
            worker: error.worker_info(),
            message: format!("the initializer failed: {error}"),
            source: Some(BuildSource::Initializer(error)),
            ..BuildError::new(BuildErrorKind::Initializer, String::new())
        }
    }

    /// `worker` ended with `exit` before its handshake.
    pub(crate) fn died(worker: WorkerInfo, exit: WorkerExit) -> BuildError {
        BuildError {
            worker: Some(worker),
            exit: Some(exit),
            ..BuildError::new(
                BuildErrorKind::WorkerDied,
                format!("worker handshake failed: {worker} {exit} before it was ready"),
            )
        }
    }

    pub(crate) fn handshake(worker: WorkerInfo, message: &str) -> BuildError {
        BuildError {
            worker: Some(worker),
            ..BuildError::new(
                BuildErrorKind::Handshake,
                format!("worker handshake failed: {worker}: {message}"),
            )
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> BuildErrorKind {
        self.kind
    }

    /// The worker that failed, where one did.
    pub fn worker_info(&self) -> Option<WorkerInfo> {
        self.worker
    }

    /// How the worker ended, for [`BuildErrorKind::WorkerDied`]: its exit code or the
    /// signal that killed it.
    pub fn worker_exit(&self) -> Option<WorkerExit> {
        self.exit
    }

    /// The initializer's failure, if that is why the pool did not start.
    pub fn initializer_error(&self) -> Option<&Error> {
        match &self.source {
            Some(BuildSource::Initializer(error)) => Some(error),
            _ => None,
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(BuildSource::Io(error)) => Some(error),
            _ => None,
        }
    }
}

/// A panic's message: its payload when that is a string.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_owned()
    }
}

/// A task's failure as a worker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskFailure {
    /// The task panicked.
    Panic {
        /// The panic's message, or a placeholder when the payload was not a string.
        message: String,
        /// `file:line:column`, as the worker's panic hook saw it.
        location: Option<String>,
        /// The worker's backtrace, when the program asked for backtraces (`RUST_BACKTRACE`).
        backtrace: Option<String>,
    },
    /// The arguments did not decode in the worker.
    ArgsDecode(String),
    /// The result did not encode in the worker.
    ResultEncode(String),
    /// The worker has no task of that name.
    Unregistered(String),
}

impl TaskFailure {
    /// The failure of a call that panicked with `payload`, raised at `location`.
    pub(crate) fn from_panic(
        payload: Box<dyn Any + Send>,
        location: Option<String>,
        backtrace: Option<String>,
    ) -> TaskFailure {
        let message = panic_message(payload.as_ref());
        TaskFailure::Panic {
            message,
            location,
            backtrace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_signal_is_named_in_the_exit() {
        for (signal, name) in [
            (libc::SIGHUP, "SIGHUP"),
            (libc::SIGINT, "SIGINT"),
            (libc::SIGQUIT, "SIGQUIT"),
            (libc::SIGILL, "SIGILL"),
            (libc::SIGABRT, "SIGABRT"),
            (libc::SIGBUS, "SIGBUS"),
            (libc::SIGFPE, "SIGFPE"),
            (libc::SIGKILL, "SIGKILL"),
            (libc::SIGSEGV, "SIGSEGV"),
            (libc::SIGPIPE, "SIGPIPE"),
            (libc::SIGTERM, "SIGTERM"),
            (libc::SIGXCPU, "SIGXCPU"),
        ] {
            assert_eq!(
                WorkerExit::Signal(signal).to_string(),
                format!("was killed by signal {signal} ({name})")
            );
        }
        assert_eq!(
            WorkerExit::Signal(64).to_string(),
            "was killed by signal 64"
        );
        assert_eq!(WorkerExit::Code(3).to_string(), "exited with code 3");
        assert!(
            WorkerExit::Unknown
                .to_string()
                .contains("could not be read")
        );
    }

    #[test]
    fn each_kind_answers_its_own_question_only() {
        let worker = WorkerInfo { index: 0, pid: 1 };
        let died = Error::died("t", worker, WorkerExit::Code(1));
        let timed_out = Error::timed_out("t", worker, Duration::from_secs(1));
        let panicked = Error::new(ErrorKind::Panicked, "p");
        for (error, [panic, death, timeout]) in [
            (&died, [false, true, false]),
            (&timed_out, [false, false, true]),
            (&panicked, [true, false, false]),
        ] {
            assert_eq!(
                [
                    error.is_panic(),
                    error.is_worker_died(),
                    error.is_timed_out()
                ],
                [panic, death, timeout],
                "{error:?}"
            );
        }
    }

    #[test]
    fn worker_died_names_worker_exit_and_task() {
        let error = Error::died(
            "demo::boom",
            WorkerInfo {
                index: 3,
                pid: 4711,
            },
            WorkerExit::Signal(9),
        );
        assert_eq!(
            error.to_string(),
            "worker 3 (pid 4711) was killed by signal 9 (SIGKILL) while running task `demo::boom`"
        );
        assert!(error.is_worker_died());
        assert_eq!(error.worker_exit(), Some(WorkerExit::Signal(9)));
        let error = error.with_retries(2);
        assert!(
            error.to_string().ends_with("`demo::boom`, after 2 retries"),
            "{error}"
        );
        assert_eq!(error.retried(), 2);
    }

    #[test]
    fn timeouts_and_protocol_errors_name_task_and_worker() {
        let worker = WorkerInfo { index: 1, pid: 42 };
        let error = Error::timed_out("demo::slow", worker, Duration::from_millis(250));
        assert_eq!(
            error.to_string(),
            "task `demo::slow` timed out after 250ms: worker 1 (pid 42) was killed"
        );
        assert!(error.is_timed_out());
        assert_eq!(error.timeout(), Some(Duration::from_millis(250)));
        let error = Error::protocol(
            "demo::junk",
            worker,
            WorkerExit::Signal(9),
            "unknown frame tag 7",
        );
        assert_eq!(
            error.to_string(),
            "worker 1 (pid 42) broke the protocol (unknown frame tag 7) while running task `demo::junk` and was killed by signal 9 (SIGKILL) (killed by the pool: it broke the protocol)"
        );
        assert!(error.is_worker_died());
        assert!(error.killed_by_pool());
        let error = Error::died("demo::exit", worker, WorkerExit::Code(3));
        assert!(!error.killed_by_pool());
    }

    #[test]
    fn panic_names_location_and_message() {
        let failure = TaskFailure::Panic {
            message: "boom".into(),
            location: Some("src/a.rs:1:2".into()),
            backtrace: Some("   0: a::b\n".into()),
        };
        let error = Error::from_failure(failure, "t", WorkerInfo { index: 0, pid: 1 });
        assert_eq!(error.panic_backtrace(), Some("   0: a::b\n"));
        assert!(
            format!("{error:#}").ends_with("\n\nbacktrace in the worker:\n   0: a::b\n"),
            "{error:#}"
        );
        assert!(
            !error.to_string().contains("backtrace"),
            "only the alternate form shows it"
        );
        assert_eq!(
            error.to_string(),
            "task `t` panicked at src/a.rs:1:2 in worker 0 (pid 1): boom"
        );
        assert_eq!(error.panic_message(), Some("boom"));
    }
}
