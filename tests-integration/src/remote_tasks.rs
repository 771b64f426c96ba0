//! Tasks for the tests of pools over Redis. They live in this library, which both the test
//! binary (the caller) and `pp_host` (the host agent) link, so that both have the same task
//! registry, as a caller and its hosts must.

use serde::{Deserialize, Serialize};

/// Where a call ran: the host agent's name and the worker's pid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ran {
    pub host: String,
    pub pid: u32,
}

fn here() -> Ran {
    Ran {
        host: procpool::current_host().unwrap_or_default(),
        pid: std::process::id(),
    }
}

#[procpool::task]
pub fn square(x: u64) -> u64 {
    x * x
}

#[procpool::task]
pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[procpool::task]
pub fn whereami() -> Ran {
    here()
}

#[procpool::task]
pub fn fail_on(x: u64, bad: u64) -> u64 {
    assert_ne!(x, bad, "refused {x}");
    x
}

#[procpool::task]
pub fn abort_worker() {
    std::process::abort();
}

/// Waits at the rendezvous at `path` and returns where it ran and the byte it was released
/// with.
#[procpool::task]
pub fn hold(path: String) -> (Ran, u8) {
    let byte = crate::meet(&path).unwrap_or(0);
    (here(), byte)
}

/// Appends a line to `log` when it starts, then works for `ms` milliseconds: a long call
/// whose runs can be counted.
#[procpool::task]
pub fn work_logged(log: String, ms: u64) -> Ran {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("open the log");
    writeln!(file, "{}", std::process::id()).expect("write the log");
    std::thread::sleep(std::time::Duration::from_millis(ms));
    here()
}

#[procpool::task]
pub fn echo_bytes(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

#[procpool::task]
pub fn shared_len(bytes: procpool::SharedBytes) -> usize {
    bytes.len()
}

/// Called by every binary that uses these tasks, so that the linker keeps them in it.
#[inline(never)]
pub fn linked() -> usize {
    std::hint::black_box(square as fn(u64) -> u64) as usize
}
