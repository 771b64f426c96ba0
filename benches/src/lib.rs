//! Tasks and workloads shared by procpool's criterion benches and by `procpool-compare`.
//!
//! Every task here is registered with `#[procpool::task]`, so any binary that links this
//! crate (a bench, `procpool-compare`) can run them in its workers: the workers are the
//! binary itself, re-executed and entered before `main`.

use num_bigint::BigUint;
use procpool::{MapOptions, Pool, SharedBytes, StartMethod};
use serde_bytes::ByteBuf;

/// The task that does nothing: it measures the pool, not the work.
#[procpool::task]
pub fn noop(x: u64) -> u64 {
    x
}

/// Sends its argument back, to measure moving bytes both ways. `ByteBuf` keeps bincode from
/// encoding the bytes one by one.
#[procpool::task]
pub fn echo(bytes: ByteBuf) -> ByteBuf {
    bytes
}

/// Sends its shared argument back: the bytes are mapped on each side, never copied.
#[procpool::task]
pub fn echo_shared(bytes: SharedBytes) -> SharedBytes {
    bytes
}

/// Reads every byte of its shared argument, and sends it back with what it read.
#[procpool::task]
pub fn read_shared(bytes: SharedBytes) -> (SharedBytes, u64) {
    let sum = checksum(&bytes);
    (bytes, sum)
}

/// A sum of the bytes taken eight at a time as words, to read every one of them at about
/// the speed memory gives them.
pub fn checksum(bytes: &[u8]) -> u64 {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder().iter().map(|&b| u64::from(b)).sum::<u64>();
    words
        .map(|word| u64::from_le_bytes(word.try_into().expect("8 bytes")))
        .fold(tail, u64::wrapping_add)
}

/// Ends its worker at once with exit code `code`, as a task that calls `exit` does: the pool
/// sees a death and starts a replacement. It never returns.
#[procpool::task]
pub fn exit_worker(code: i32) -> u64 {
    std::process::exit(code)
}

/// `n!` as a big integer, by the product of `1..=n`, as the Pool tutorial computes it.
#[procpool::task]
pub fn factorial(n: u64) -> BigUint {
    (1..=n).map(BigUint::from).product()
}

/// The serial loop the pools are measured against: `k!` for every `k` in `1..=n`.
pub fn factorials_serial(n: u64) -> Vec<BigUint> {
    (1..=n).map(factorial).collect()
}

/// A pool of `processes` workers started by the default method (the one
/// `PROCPOOL_START_METHOD` names, else the forkserver), panicking if it cannot start (a
/// bench cannot go on).
pub fn pool(processes: usize) -> Pool {
    Pool::builder()
        .processes(processes)
        .build()
        .expect("the pool starts")
}

/// A pool of `processes` workers started by `method`, panicking if it cannot start.
pub fn pool_started_by(processes: usize, method: StartMethod) -> Pool {
    Pool::builder()
        .processes(processes)
        .start_method(method)
        .build()
        .expect("the pool starts")
}

/// Starts a pool of `processes` workers by `method` and waits for one no-op result: the
/// cost of having a pool that is ready to work. Returns the pool so that its shutdown is not
/// timed.
pub fn start_and_first_result(processes: usize, method: StartMethod) -> Pool {
    let pool = pool_started_by(processes, method);
    let x = pool.apply(noop, (1,)).expect("the no-op runs");
    assert_eq!(x, 1);
    pool
}

/// Starts a pool of `processes` workers by `method` (`build` returns once every one is
/// ready) and maps the no-op over as many items, with the default chunk size: a large pool
/// ready and its first map back. Returns the pool so that its shutdown is not timed.
pub fn start_and_first_map(processes: usize, method: StartMethod) -> Pool {
    let pool = pool_started_by(processes, method);
    let out = pool.map(noop, 0..processes as u64).expect("the map runs");
    assert_eq!(out.len(), processes);
    pool
}

/// A pool of `processes` workers started by `method` that replaces each worker after its
/// first job (`max_tasks_per_child(1)`), as Python's `maxtasksperchild=1` does.
pub fn one_job_per_worker(processes: usize, method: StartMethod) -> Pool {
    Pool::builder()
        .processes(processes)
        .start_method(method)
        .max_tasks_per_child(1)
        .build()
        .expect("the pool starts")
}

/// Maps the no-op over `0..n` in chunks of one on `pool`: with [`one_job_per_worker`], each
/// call runs in a worker of its own, started for it.
pub fn map_one_by_one(pool: &Pool, n: u64) {
    let out = pool
        .map_with(noop, 0..n, MapOptions::new().chunksize(1))
        .expect("the map runs");
    assert_eq!(out.len(), n as usize);
}

/// A buffer of `len` bytes that is not all zeroes, so that no layer can cheat on it.
pub fn payload(len: usize) -> ByteBuf {
    ByteBuf::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

/// [`payload`]'s bytes in shared memory.
pub fn shared_payload(len: usize) -> SharedBytes {
    SharedBytes::new(len, |bytes| {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
    })
    .expect("shared memory")
}
