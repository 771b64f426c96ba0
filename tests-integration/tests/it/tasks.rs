//! Tasks that several groups of tests use.

use tests_integration::meet;

#[procpool::task]
pub fn square(x: u64) -> u64 {
    x * x
}

#[procpool::task]
pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// The pid of the worker that runs it.
#[procpool::task]
pub fn pid() -> u32 {
    std::process::id()
}

/// Waits at the rendezvous at `path` until the test releases it; returns the byte it got.
#[procpool::task]
pub fn hold(path: String) -> u64 {
    u64::from(meet(&path).unwrap_or(0))
}
