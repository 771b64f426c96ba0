//! The task registry: registered name → type-erased call, filled at link time.
//!
//! `#[procpool::task]` puts one [`TaskEntry`] per function into the `TASKS` slice. The parent
//! looks a function up by its type (every fn item has its own type) to find the registered
//! name; a worker, which is the same binary, looks the name up to find the call.

use std::any::type_name;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::TaskFailure;
use crate::shared;
use crate::wire::{ResultItems, ResultsFrame, RunItems};

/// Everything the registry knows of one task.
#[doc(hidden)]
#[derive(Debug)]
pub struct TaskEntry {
    /// The stable name that crosses the wire: `module::path::function`.
    pub name: &'static str,
    /// The name of the function's own type, the parent's key from a fn item to `name`.
    pub type_name: fn() -> &'static str,
    /// Runs calls of the task: decodes each one's arguments, runs the function and writes
    /// its encoded result. Monomorphic per task, so that the loop over a job's calls has
    /// nothing to look up or call through a pointer per call.
    pub call: fn(&mut Calls<'_>),
}

/// The calls of one job as a worker runs them: each one's encoded arguments in, its outcome
/// out. Opaque outside the crate.
#[doc(hidden)]
pub struct Calls<'a> {
    inputs: RunItems<'a>,
    results: &'a mut ResultsFrame,
}

impl fmt::Debug for Calls<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calls")
            .field("left", &self.inputs.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Calls<'a> {
    pub(crate) fn new(inputs: RunItems<'a>, results: &'a mut ResultsFrame) -> Calls<'a> {
        Calls { inputs, results }
    }
}

#[doc(hidden)]
#[linkme::distributed_slice]
pub static TASKS: [TaskEntry];

/// A function that can run as a task with arguments `Args`, a tuple of its argument types.
///
/// It is implemented for every `Fn` of zero to six arguments whose argument and result types
/// are serde types. Only functions marked `#[procpool::task]` can be submitted: others are
/// refused when submitted, with an error that names them.
pub trait Task<Args>: Copy + Send + Sync + 'static {
    /// What the function returns.
    type Output: Serialize + DeserializeOwned;

    /// Calls the function with its arguments unpacked from the tuple.
    fn call(self, args: Args) -> Self::Output;
}

macro_rules! impl_task {
    ($($arg:ident),*) => {
        impl<Func, Out, $($arg,)*> Task<($($arg,)*)> for Func
        where
            Func: Fn($($arg),*) -> Out + Copy + Send + Sync + 'static,
            Out: Serialize + DeserializeOwned,
            $($arg: Serialize + DeserializeOwned,)*
        {
            type Output = Out;

            #[allow(non_snake_case)]
            fn call(self, ($($arg,)*): ($($arg,)*)) -> Out {
                self($($arg),*)
            }
        }
    };
}

impl_task!();
impl_task!(A);
impl_task!(A, B);
impl_task!(A, B, C);
impl_task!(A, B, C, D);
impl_task!(A, B, C, D, E);
impl_task!(A, B, C, D, E, G);

#[doc(hidden)]
pub fn type_name_of<F>(_: &F) -> &'static str {
    type_name::<F>()
}

/// The body of every registered task: for each call, decode, run, encode. Runs in a worker.
#[doc(hidden)]
pub fn invoke<F, Args, Out>(f: F, calls: &mut Calls<'_>)
where
    F: Task<Args, Output = Out>,
    Args: DeserializeOwned,
    Out: Serialize,
{
    for input in calls.inputs.by_ref() {
        calls.results.push(|output, out_fds| {
            // A `SharedBytes` among the arguments maps a descriptor of the job: the worker
            // runs the whole job in `shared::decoding`'s scope.
            let args: Args =
                codec::decode(input).map_err(|e| TaskFailure::ArgsDecode(e.to_string()))?;
            let result = f.call(args);
            shared::encode_item(out_fds, output, |buf| codec::encode_into(buf, &result))
                .map_err(|e| TaskFailure::ResultEncode(e.to_string()))
        });
    }
}

thread_local! {
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
    static PANIC_BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Makes every panic in a worker record where it was raised, for the [`TaskFailure`] that
/// [`run`] makes of it; `in_worker` says whether this process serves as a worker yet.
/// Workers install it, and the forkserver for the workers it forks: a panic outside a
/// worker (in the server itself) is reported as the default hook reports it.
pub(crate) fn record_panic_locations(in_worker: fn() -> bool) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !in_worker() {
            return default(info);
        }
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location);
        // Captured only when the pool asks for backtraces (`Builder::backtraces`);
        // otherwise this costs nothing.
        let backtrace = CAPTURE_BACKTRACES
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| std::backtrace::Backtrace::force_capture().to_string());
        PANIC_BACKTRACE.with(|slot| *slot.borrow_mut() = backtrace);
    }));
}

/// Whether the panic hook captures backtraces: the pool's choice, from its SETUP frame.
static CAPTURE_BACKTRACES: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Makes the panic hook capture a backtrace of each panic, or not.
pub(crate) fn capture_backtraces(capture: bool) {
    CAPTURE_BACKTRACES.store(capture, std::sync::atomic::Ordering::Relaxed);
}

/// The location the last panic on this thread was raised at, if the hook recorded it.
fn take_panic_location() -> Option<String> {
    PANIC_LOCATION.with(|location| location.borrow_mut().take())
}

/// Runs every call of `calls`: a call that panics fails alone, with [`TaskFailure::Panic`],
/// and the calls after it go on.
///
/// The worker's panic hook records the message and location of the last panic; see `worker`.
pub(crate) fn run(entry: &TaskEntry, calls: &mut Calls<'_>) {
    // The call that panicked has taken its input: the next round starts after it.
    while let Err(payload) = catch_unwind(AssertUnwindSafe(|| (entry.call)(calls))) {
        calls.results.push_panicked(TaskFailure::from_panic(
            payload,
            take_panic_location(),
            PANIC_BACKTRACE.with(|slot| slot.borrow_mut().take()),
        ));
    }
}

/// Runs one call whose result is not wanted (an initializer): how it failed, if it did. The
/// result is never sent, so no frame limit applies to it.
pub(crate) fn run_one(entry: &TaskEntry, input: &[u8]) -> Result<(), TaskFailure> {
    let mut results = ResultsFrame::with_limit(0, 1, usize::MAX);
    run(entry, &mut Calls::new(RunItems::one(input), &mut results));
    let (frame, _) = results.finish();
    match ResultItems::new(&frame[crate::wire::HEADER..]).next() {
        Some(Err(failure)) => Err(failure),
        _ => Ok(()),
    }
}

struct Index {
    by_type: HashMap<&'static str, &'static TaskEntry>,
    /// Names registered once; a name two functions share is in `shared` instead, since a
    /// worker could not tell which one a job means.
    by_name: HashMap<&'static str, &'static TaskEntry>,
    shared: HashSet<&'static str>,
    fingerprint: u64,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut by_type = HashMap::with_capacity(TASKS.len());
        let mut by_name = HashMap::with_capacity(TASKS.len());
        let mut shared = HashSet::new();
        for entry in TASKS.iter() {
            by_type.insert((entry.type_name)(), entry);
            if by_name.insert(entry.name, entry).is_some() {
                shared.insert(entry.name);
            }
        }
        for name in &shared {
            by_name.remove(name);
        }
        let mut names: Vec<&str> = TASKS.iter().map(|entry| entry.name).collect();
        names.sort_unstable();
        Index {
            by_type,
            by_name,
            shared,
            fingerprint: fingerprint(&names),
        }
    })
}

/// Why a function cannot be submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LookupError {
    /// Not marked `#[procpool::task]`; the function's type name.
    Unregistered(&'static str),
    /// Registered under a name another task has too (two nested functions of one name in
    /// one module); the name.
    Shared(&'static str),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::Unregistered(name) if name.contains("{{closure}}") => write!(
                f,
                "a closure cannot be a task (`{name}`): workers find a task by its name, and a closure has none; move its body into a function marked #[procpool::task] and pass that"
            ),
            LookupError::Unregistered(name) if name.starts_with("fn(") => write!(
                f,
                "a function pointer cannot be a task (`{name}`): workers find a task by its name; pass the function itself, marked #[procpool::task]"
            ),
            LookupError::Unregistered(name) => write!(
                f,
                "`{name}` is not a registered task: mark the function with #[procpool::task]"
            ),
            LookupError::Shared(name) => write!(
                f,
                "two registered tasks share the name `{name}`, so a worker could not tell them apart: rename one or move it to another module"
            ),
        }
    }
}

/// The registered entry of the function type `F`.
pub(crate) fn lookup<F: 'static>() -> Result<&'static TaskEntry, LookupError> {
    let name = type_name::<F>();
    let index = index();
    let entry = index
        .by_type
        .get(name)
        .copied()
        .ok_or(LookupError::Unregistered(name))?;
    if index.shared.contains(entry.name) {
        return Err(LookupError::Shared(entry.name));
    }
    Ok(entry)
}

/// Builds the index of registered tasks now: a forkserver does, so that the workers it forks
/// share it instead of each building its own.
pub(crate) fn build_index() {
    index();
}

/// The entry registered under `name`, unless two tasks share it; used by workers.
pub(crate) fn by_name(name: &str) -> Option<&'static TaskEntry> {
    index().by_name.get(name).copied()
}

/// A digest of every registered name, so that a parent and a worker built from different
/// binaries (a rebuild between start and respawn) notice it at the handshake.
pub(crate) fn registry_fingerprint() -> u64 {
    index().fingerprint
}

/// FNV-1a over the sorted names, each followed by a zero byte.
fn fingerprint(sorted_names: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for name in sorted_names {
        for &byte in name.as_bytes().iter().chain(&[0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    #[test]
    fn task_call_unpacks_tuples() {
        assert_eq!(Task::call(double, (21,)), 42);
        assert_eq!(Task::call(|a: u8, b: u8| a + b, (1, 2)), 3);
        assert_eq!(Task::call(|| 7u8, ()), 7);
    }

    /// The outcomes of the calls of `call` on `inputs`, run as a worker runs a job.
    fn run_calls<Out: DeserializeOwned>(
        call: fn(&mut Calls<'_>),
        inputs: &[&[u8]],
    ) -> Vec<Result<Out, TaskFailure>> {
        let mut frame = crate::wire::RunFrame::new(1, "f");
        for input in inputs {
            frame
                .push(|buf| -> Result<(), ()> {
                    buf.extend_from_slice(input);
                    Ok(())
                })
                .unwrap();
        }
        let (frame, _) = frame.finish().unwrap();
        let crate::wire::ToWorker::Run { items, .. } =
            crate::wire::ToWorker::decode(&frame[crate::wire::HEADER..]).unwrap()
        else {
            panic!("not a RUN frame");
        };
        let entry = TaskEntry {
            name: "f",
            type_name: || "f",
            call,
        };
        let mut results = ResultsFrame::reusing(Vec::new(), 1, inputs.len() as u32);
        run(&entry, &mut Calls::new(items, &mut results));
        let (out, _) = results.finish();
        ResultItems::new(&out[crate::wire::HEADER..])
            .map(|item| item.map(|bytes| codec::decode(bytes).unwrap()))
            .collect()
    }

    #[test]
    fn invoke_round_trips_and_reports_bad_input() {
        let input = codec::encode(&(21u32,)).unwrap();
        let outcomes = run_calls(|calls| invoke(double, calls), &[&input, &[1], &input]);
        assert_eq!(outcomes[0], Ok(42));
        assert!(
            matches!(&outcomes[1], Err(TaskFailure::ArgsDecode(_))),
            "{:?}",
            outcomes[1]
        );
        assert_eq!(outcomes[2], Ok(42));
    }

    /// Encodes as a `u32`, after panicking for odd ones: a result cut short mid-write.
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct EvenOnly(u32);

    impl Serialize for EvenOnly {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            assert!(self.0.is_multiple_of(2), "odd");
            serializer.serialize_u32(self.0)
        }
    }

    #[test]
    fn a_call_that_panics_mid_write_fails_alone() {
        fn pair(x: u32) -> (u32, EvenOnly) {
            (x, EvenOnly(x))
        }
        let inputs: Vec<Vec<u8>> = (0..5u32).map(|x| codec::encode(&x).unwrap()).collect();
        let inputs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let outcomes = run_calls(|calls| invoke(pair, calls), &inputs);
        for (x, outcome) in outcomes.into_iter().enumerate() {
            let x = x as u32;
            if x.is_multiple_of(2) {
                assert_eq!(outcome, Ok((x, EvenOnly(x))));
            } else {
                assert!(
                    matches!(&outcome, Err(TaskFailure::Panic { message, .. }) if message == "odd"),
                    "{outcome:?}"
                );
            }
        }
    }

    #[test]
    fn unregistered_functions_are_named() {
        let error = lookup::<fn(u32) -> u32>().unwrap_err();
        assert_eq!(error, LookupError::Unregistered("fn(u32) -> u32"));
    }

    #[test]
    fn fingerprint_depends_on_every_name() {
        assert_ne!(fingerprint(&["a", "b"]), fingerprint(&["a", "c"]));
        assert_ne!(fingerprint(&["ab"]), fingerprint(&["a", "b"]));
    }
}
