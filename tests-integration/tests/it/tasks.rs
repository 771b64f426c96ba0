//! Tasks, and values, that several groups of tests use.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tests_integration::meet;

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
