//! Tasks, and values, that several groups of tests use.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tests_integration::{Rendezvous, meet};

/// Decodes fine; refuses to encode.
#[derive(Debug)]
pub struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

impl<'de> Deserialize<'de> for Unencodable {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unencodable)
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

/// Runs one long job on each of the two workers of `pool`, held at `rendezvous` for well
/// past the 10 ms after which a job counts as long, so that each worker then holds one job
/// at a time. (The sleep makes the jobs long; it synchronises nothing.)
pub fn run_long_jobs(pool: &procpool::Pool, rendezvous: &Rendezvous) {
    std::thread::scope(|scope| {
        let paths = [rendezvous.path(), rendezvous.path()];
        let caller = scope.spawn(|| pool.map(hold, paths));
        let (first, second) = (rendezvous.arrive(), rendezvous.arrive());
        assert_ne!(first.pid, second.pid, "one on each worker");
        std::thread::sleep(std::time::Duration::from_millis(50));
        first.release(1);
        second.release(1);
        assert_eq!(caller.join().unwrap().unwrap(), [1, 1]);
    });
}
