//! The worker side: entered before `main` when the process was started as a worker, it runs
//! the handshake, then serves jobs until the parent says stop or goes away.
//!
//! The state machine: `setup` (read SETUP, run the initializer, answer READY or INIT_FAILED)
//! → `serve` (read RUN, run each call under `catch_unwind`, answer RESULTS, and if SETUP
//! allowed it, watch the socket for a short while before sleeping in `read`; a SHUTDOWN frame
//! or the end of the stream ends it) → exit.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use crate::error::{TaskFailure, WorkerInfo};
use crate::memory;
use crate::registry::{self, Calls};
use crate::shared;
use crate::sys;
use crate::watch::{self, Watcher};
use crate::wire::{self, Descriptors, ResultsFrame, ToWorker};

pub(crate) mod forkserver;

/// The environment variable that marks a process as a worker.
pub(crate) const ENV: &str = "PROCPOOL_WORKER";

/// The exit code of a worker that could not talk to its parent.
const EXIT_PROTOCOL: i32 = 70;

/// The worker's read buffer: room for the small frames that come in a burst. A frame
/// longer than what the buffer holds is read straight into its own vector. The buffer is
/// zeroed the first time it fills (the standard library's `BufReader` does so for a reader
/// that has no `read_buf`), which a worker that runs one job pays in page faults: so it is
/// kept small.
const READ_BUFFER: usize = 8 * 1024;

/// Buffer room a worker always keeps between jobs, for the frames it reads and for those it
/// writes; see [`trim`] for more.
const KEEP: usize = 1 << 20;

/// Frees the room of `buf`, which holds the last frame it carried, once that frame needed
/// less than a quarter of it. So a run of large payloads reuses pages already faulted in
/// (fresh ones cost more than the copy into them), and room a huge payload left is given
/// back at the next smaller job rather than kept for good.
fn trim(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP && buf.capacity() / 4 > buf.len() {
        *buf = Vec::new();
    }
}

static CURRENT: OnceLock<WorkerInfo> = OnceLock::new();

/// The pool's process: the parent of a spawned worker, or of the forkserver that forked it.
#[cfg(feature = "test-hooks")]
pub(crate) static POOL: OnceLock<u32> = OnceLock::new();

/// The worker this code runs in, or `None` outside a worker.
///
/// Inside a task (and inside an initializer) it tells the worker's index in its pool and its
/// process id, so that a program can show which process ran which task.
///
/// # Examples
///
/// ```
/// #[procpool::task]
/// fn whoami() -> u32 {
///     procpool::current_worker().map_or(std::process::id(), |w| w.pid)
/// }
/// assert!(procpool::current_worker().is_none());
/// ```
pub fn current_worker() -> Option<WorkerInfo> {
    CURRENT.get().copied()
}

/// Where a host agent's workers find its name: the variable, and the name the agent sets
/// before it starts its workers.
#[cfg(feature = "redis")]
pub(crate) const HOST_ENV: &str = "PROCPOOL_HOST";
#[cfg(feature = "redis")]
pub(crate) static HOST_NAME: OnceLock<String> = OnceLock::new();

/// Inside a task that a [`Host`](crate::Host) agent runs for a pool over Redis: the host's
/// name, as errors name it. `None` elsewhere (outside a worker, or in a local pool's).
///
/// ```
/// #[procpool::task]
/// fn ran_on() -> String {
///     procpool::current_host().unwrap_or_else(|| "this machine".into())
/// }
/// assert_eq!(procpool::current_host(), None);
/// ```
#[cfg(feature = "redis")]
pub fn current_host() -> Option<String> {
    current_worker()?;
    std::env::var(HOST_ENV).ok()
}

extern "C" fn worker_entry() {
    enter_if_worker();
}

/// The automatic worker entry: runs before `main` in every process of a binary that links
/// procpool, and turns the process into a worker when its environment says so.
///
/// The one `unsafe` outside `sys`, and an attribute rather than a block: the entry must name
/// this module's function, and `sys` depends on no module of the crate.
#[cfg(target_os = "linux")]
#[used]
#[allow(unsafe_code)]
// SAFETY: `.init_array` holds functions the loader calls before `main` with no arguments;
// `worker_entry` is such a function, and it does nothing in a process that is not a worker.
#[unsafe(link_section = ".init_array")]
static WORKER_ENTRY: extern "C" fn() = worker_entry;

/// Keeps [`WORKER_ENTRY`] in the final binary: the linker drops an object file of the library
/// that nothing refers to, and with it the entry.
pub(crate) fn keep_entry() {
    std::hint::black_box(&WORKER_ENTRY);
}

/// Runs the worker (or the forkserver) and exits if this process was started as one;
/// returns otherwise.
pub(crate) fn enter_if_worker() {
    if let Some(parent) = started_as(forkserver::ENV) {
        #[cfg(feature = "test-hooks")]
        let _ = POOL.set(parent);
        let code = match forkserver::serve(parent) {
            Ok(()) => 0,
            Err(_) => EXIT_PROTOCOL,
        };
        std::process::exit(code);
    }
    if let Some(parent) = started_as(ENV) {
        #[cfg(feature = "test-hooks")]
        let _ = POOL.set(parent);
        run(sys::adopt_socket(parent));
    }
}

/// The parent's pid, if this process was started as a worker or a forkserver (`marker`),
/// which is then made ready to serve: the marker leaves the environment and the signals a
/// background process must not die or stop of are ignored.
fn started_as(marker: &str) -> Option<u32> {
    // A worker is started with its parent's pid as the marker and its socket as stdin. A
    // program that has the variable for another reason (empty, or inherited by a process
    // that is no worker) runs its `main` as usual.
    let parent = std::env::var_os(marker)?.to_str()?.parse::<u32>().ok()?;
    if !sys::stdin_is_socket() {
        return None;
    }
    // Processes that tasks start must not take themselves for workers.
    sys::remove_env_before_main(marker);
    sys::ignore_sigpipe();
    // Workers run in a process group of their own, in the background of the terminal: a
    // task that writes to it (under `stty tostop`) or sets its modes would be stopped by
    // SIGTTOU, one that reads it by SIGTTIN. Ignored, the write goes through and the read
    // fails (EIO) instead of stopping the worker for good.
    sys::ignore_terminal_stops();
    Some(parent)
}

/// Serves as a worker on `socket`, and exits.
fn run(socket: io::Result<UnixStream>) -> ! {
    // A forked worker has the hook from its server.
    install_panic_hook();
    std::process::exit(serve_on(socket, false));
}

/// Has panics in this process, once it serves as a worker, recorded for the calls they fail.
fn install_panic_hook() {
    registry::record_panic_locations(|| current_worker().is_some());
}

/// The worker's exit code: 0 once it was told to stop or its parent went away, else (it
/// could not talk to its parent) a code of its own, which its parent, if still there,
/// reports.
fn serve_on(socket: io::Result<UnixStream>, forked: bool) -> i32 {
    match socket.and_then(|socket| serve(socket, forked)) {
        Ok(()) => 0,
        Err(_) => EXIT_PROTOCOL,
    }
}

/// The worker's socket as a reader that, once the parent has descriptors for it, keeps the
/// descriptors that come with the bytes.
struct Incoming<'a> {
    socket: &'a UnixStream,
    fds: VecDeque<OwnedFd>,
    /// Whether reads take descriptors (`recvmsg`): from the parent's OFFER on (see
    /// [`wire::Descriptors`]).
    takes_fds: bool,
    /// While the worker watches for its next job: reads do not wait.
    now: bool,
}

impl Incoming<'_> {
    fn fds(&mut self) -> Option<&mut VecDeque<OwnedFd>> {
        self.takes_fds.then_some(&mut self.fds)
    }
}

impl Read for Incoming<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let socket = self.socket;
        if self.now {
            sys::recv_now(socket, buf, self.fds())
        } else {
            sys::recv(socket, buf, self.fds())
        }
    }
}

impl Incoming<'_> {
    /// The `count` descriptors of the frame just read.
    fn take(&mut self, count: usize) -> io::Result<Vec<OwnedFd>> {
        let came = self.fds.len();
        sys::claim(&mut self.fds, count).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame named {count} descriptors, {came} came"),
            )
        })
    }
}

/// Reads one frame (see [`wire::read_frame`]), its body straight from the socket into its
/// buffer, not zeroed first, and keeps the descriptors that come with it.
fn read_frame(reader: &mut BufReader<Incoming<'_>>, body: &mut Vec<u8>) -> io::Result<Option<()>> {
    wire::read_frame(reader, body, |reader, body, max| {
        let incoming = reader.get_mut();
        let socket = incoming.socket;
        sys::recv_spare(socket, body, max, incoming.fds())
    })
}

/// Writes a whole frame to the blocking `socket`, its descriptors with its first bytes
/// (see [`sys::next_message`]).
fn send_frame(socket: &UnixStream, frame: &[u8], fds: &[impl AsFd]) -> io::Result<()> {
    let mut written = 0;
    let mut sent = 0;
    while written < frame.len() {
        let Some((bytes, group)) = sys::next_message(&frame[written..], &fds[sent..]) else {
            return Err(io::Error::other(
                "more descriptors than bytes to carry them",
            ));
        };
        match sys::send(socket, &[IoSlice::new(bytes)], group) {
            Ok(n) => {
                written += n;
                sent += group.len();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends the parent an OFFER of descriptors and reads until its TAKING: the results that
/// hold descriptors go after it. The frames that come meanwhile are kept in `stash`, in
/// order, the parent's own OFFER among them: it is answered in its turn, after the results
/// of the jobs ahead of it, as the parent expects (see `Worker::on_descriptors`); the
/// parent answers this worker's OFFER without waiting for its own. False if the stream
/// ended first.
fn offer_descriptors(
    reader: &mut BufReader<Incoming<'_>>,
    stash: &mut VecDeque<Vec<u8>>,
) -> io::Result<bool> {
    let mut writer = reader.get_ref().socket;
    writer.write_all(&wire::descriptors_frame(Descriptors::Offer(0), false))?;
    loop {
        let mut body = Vec::new();
        if read_frame(reader, &mut body)?.is_none() {
            return Ok(false);
        }
        match ToWorker::decode(&body)? {
            // Whichever OFFER it answers (one may have been a task's), the parent reads with
            // `recvmsg`.
            ToWorker::Descriptors(Descriptors::Taking(_)) => return Ok(true),
            _ => stash.push_back(body),
        }
    }
}

/// Takes the parent's OFFER of descriptors: reads take them from now on, and the parent is
/// told so, with the OFFER's nonce. Any other descriptors frame here is out of turn.
fn answer_offer(reader: &mut BufReader<Incoming<'_>>, message: Descriptors) -> io::Result<()> {
    let Descriptors::Offer(nonce) = message else {
        return Err(out_of_turn(message));
    };
    if reader.get_ref().takes_fds {
        return Err(out_of_turn(message));
    }
    reader.get_mut().takes_fds = true;
    let mut writer = reader.get_ref().socket;
    writer.write_all(&wire::descriptors_frame(Descriptors::Taking(nonce), false))
}

fn out_of_turn(message: Descriptors) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("a descriptors frame out of turn ({message:?})"),
    )
}

/// Watches the socket for the next frame for up to `window` (see `watch`) before the read
/// that waits for it. Each look is a read that does not wait, into the reader's buffer: what
/// comes is read by the look that sees it, and so is an end of stream, which the read after
/// meets again. An error is not met again (a read that lost a frame's descriptors has taken
/// its bytes): it is returned here, to end the worker as it would there.
fn watch_for_frame(
    reader: &mut BufReader<Incoming<'_>>,
    window: std::time::Duration,
    watcher: &mut Watcher,
) -> io::Result<()> {
    reader.get_mut().now = true;
    let mut failed = None;
    let watched = watch::watch_by(window, || match reader.fill_buf() {
        Ok(_) => true,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            false
        }
        Err(e) => {
            failed = Some(e);
            true
        }
    });
    reader.get_mut().now = false;
    watcher.record(watched.paid_off);
    failed.map_or(Ok(()), Err)
}

/// Serves as a worker on `socket`; `forked` says that the forkserver forked this process.
fn serve(socket: UnixStream, forked: bool) -> io::Result<()> {
    sys::raise_open_files_limit();
    let mut reader = BufReader::with_capacity(
        READ_BUFFER,
        Incoming {
            socket: &socket,
            fds: VecDeque::new(),
            takes_fds: false,
            now: false,
        },
    );
    let mut writer = &socket;

    let mut body = Vec::new();
    if read_frame(&mut reader, &mut body)?.is_none() {
        return Ok(());
    }
    let ToWorker::Setup {
        index,
        watch: window,
        backtraces,
        memory_limit,
        jobs,
        initializer,
    } = ToWorker::decode(&body)?
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected a SETUP frame first",
        ));
    };
    #[cfg(feature = "test-hooks")]
    crate::test_hooks::before_ready();
    registry::capture_backtraces(backtraces);
    // Before the initializer: the limit bounds the whole worker, not only its tasks.
    if let Some(limit) = memory_limit {
        sys::limit_data(limit, memory::EXIT_OUT_OF_MEMORY)?;
    }
    let pid = std::process::id();
    let _ = CURRENT.set(WorkerInfo {
        index: index as usize,
        pid,
    });
    if let Some((name, args)) = initializer {
        let outcome = match registry::by_name(name) {
            Some(entry) => registry::run_one(entry, args),
            None => Err(TaskFailure::Unregistered(name.to_owned())),
        };
        if let Err(failure) = outcome {
            writer.write_all(&wire::init_failed_frame(&failure))?;
            return Ok(());
        }
    }
    writer.write_all(&wire::ready_frame(pid, registry::registry_fingerprint()))?;

    let mut out = Vec::new();
    let mut watcher = Watcher::default();
    // RUN frames still to come, if the pool recycles workers: after the last, the next frame
    // is a SHUTDOWN, not worth a watch.
    let mut runs_left = jobs;
    // Whether the parent reads descriptors (it answered this worker's OFFER), and the frames
    // that came while the worker waited for that answer, to be taken first.
    let mut parent_takes_fds = false;
    let mut stash = VecDeque::new();
    loop {
        trim(&mut body);
        if let Some(frame) = stash.pop_front() {
            body = frame;
        } else {
            if !window.is_zero()
                && runs_left != Some(0)
                && reader.buffer().is_empty()
                && watcher.should_watch()
            {
                watch_for_frame(&mut reader, window, &mut watcher)?;
            }
            if read_frame(&mut reader, &mut body)?.is_none() {
                break;
            }
        }
        match ToWorker::decode(&body)? {
            ToWorker::Run {
                job,
                name,
                fds,
                fd_base,
                items,
            } => {
                let fds = reader.get_mut().take(fds)?;
                runs_left = runs_left.map(|left| left.saturating_sub(1));
                let buf = std::mem::take(&mut out);
                let mut results = ResultsFrame::reusing(buf, job, items.len() as u32);
                match registry::by_name(name) {
                    // Arguments that are `SharedBytes` map the job's descriptors: one scope
                    // for all its calls costs a map's tight loop nothing per call.
                    Some(entry) => shared::decoding(&fds, fd_base, || {
                        registry::run(entry, &mut Calls::new(items, &mut results));
                    }),
                    None => {
                        for _ in items {
                            results.push(|_, _| Err(TaskFailure::Unregistered(name.to_owned())));
                        }
                    }
                }
                drop(fds);
                let out_fds;
                (out, out_fds) = results.finish();
                if !out_fds.is_empty() && !parent_takes_fds {
                    if !offer_descriptors(&mut reader, &mut stash)? {
                        break;
                    }
                    parent_takes_fds = true;
                }
                send_frame(&socket, &out, &out_fds)?;
                trim(&mut out);
            }
            // A TAKING this worker did not ask for answers an OFFER a task forged on its
            // socket: the parent reads with `recvmsg` from then on, as after its own.
            ToWorker::Descriptors(Descriptors::Taking(_)) if !parent_takes_fds => {
                parent_takes_fds = true;
            }
            ToWorker::Descriptors(message) => answer_offer(&mut reader, message)?,
            ToWorker::Shutdown => {
                // Its peak memory, for the pool's insights: read here, where it costs the
                // pool's supervisor nothing (and a forked worker, a system call).
                let peak = if forked {
                    sys::peak_resident_forked()
                } else {
                    sys::peak_resident(pid)
                };
                let peak = peak.unwrap_or(0);
                let _ = writer.write_all(&wire::bye_frame(peak));
                return Ok(());
            }
            ToWorker::Setup { .. } => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unexpected SETUP frame",
                ));
            }
        }
    }
    Ok(())
}
