//! The serde codec of task arguments and results: the one place that names it.
//!
//! The wire's frames are the crate's own (see `wire/README.md`); inside them, each argument
//! and each result is one value encoded here. The codec writes fixed-width integers, so that
//! the items of a map over numbers all take the same number of bytes and travel in the
//! wire's packed layout, and a one-element tuple `(a,)` encodes as `a` alone.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a value did not encode or decode.
///
/// One pointer wide, as the codec's own error: every item of a map returns a
/// `Result<(), CodecError>`, which then comes back in a register; a wider one goes through
/// memory and slows the encoding loop.
#[derive(Debug)]
pub(crate) struct CodecError(bincode::Error);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for CodecError {}

/// Appends `value`, encoded, to `buf`. `value` is serialized exactly once: a `SharedBytes`
/// hands over its descriptor while it is serialized.
#[inline]
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    value: &T,
) -> Result<(), CodecError> {
    bincode::serialize_into(buf, value).map_err(CodecError)
}

/// `value`, encoded.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::new();
    encode_into(&mut buf, value)?;
    Ok(buf)
}

/// Decodes a value from `bytes`, which may come from another process: a length that claims
/// more than `bytes` holds is an error, never an allocation of that length.
#[inline]
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    bincode::deserialize(bytes).map_err(CodecError)
}
