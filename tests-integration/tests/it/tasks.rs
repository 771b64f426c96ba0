//! Tasks, values and helpers that several groups of tests use.

use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tests_integration::meet;

/// How long [`wait_for`] waits: far more than anything it waits for takes.
pub const WAIT_BOUND: Duration = Duration::from_secs(30);

/// Waits, up to [`WAIT_BOUND`], until `ready` holds; the state it waits for comes from
/// another process (a worker starting, a worker going idle), so it is polled.
pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_BOUND;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

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

/// Encodes fine; refuses to decode.
#[derive(Debug, Clone)]
pub struct Undecodable;

impl Serialize for Undecodable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(0)
    }
}

impl<'de> Deserialize<'de> for Undecodable {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("this value refuses to be decoded"))
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

/// The pid of the worker that ran it, for a map.
#[procpool::task]
pub fn pid_of(_call: u64) -> u32 {
    std::process::id()
}

/// Waits at the rendezvous at `path` until the test releases it; returns the byte it got.
#[procpool::task]
pub fn hold(path: String) -> u64 {
    u64::from(meet(&path).unwrap_or(0))
}
