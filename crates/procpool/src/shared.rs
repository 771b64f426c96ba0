//! [`SharedBytes`]: bytes in shared memory that go to a task and back without being copied.
//!
//! The bytes live in a sealed `memfd`. Encoding one puts a duplicate of its descriptor in
//! the descriptor list of the frame being written, and only the index into that list and the
//! length in the bytes; the frame's descriptors go with it over the worker's socket
//! (`SCM_RIGHTS`), and decoding maps the descriptor the index names. The list is reached
//! through a thread-local slot that the frame writer fills for the time of one encoding
//! ([`encoding`]), and the frame reader for the time of one decoding ([`decoding`]): serde
//! has no other way to hand a value's encoder something beside the bytes.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys::{self, Mapping};

/// Bytes in shared memory: they go to a task, and come back from one, without being copied.
///
/// A `SharedBytes` is an immutable byte buffer, like a `Vec<u8>` that can no longer change.
/// As a task's argument or result it does not travel in the frame: the worker (or the
/// caller) maps the same memory, so 64 MiB cost what a few bytes cost. Cloning one is cheap,
/// and the clones share the memory. Its bytes are read with [`Deref`] (`&bytes[..]`).
///
/// The memory is an anonymous file (`memfd`) sealed against writing, shrinking and growing
/// before anyone else may see it, and a receiver checks those seals before it maps one: a
/// task cannot change bytes the caller is reading, nor make the caller fault by truncating
/// the file under it.
///
/// Each `SharedBytes` holds one file descriptor until it and its clones are dropped, so a
/// program that keeps many thousands of them alive at once needs a limit on open files
/// (`ulimit -n`) to match.
///
/// A `SharedBytes` encodes only as part of a task's arguments or result; encoding one
/// anywhere else (to a file, or as an initializer's argument) fails with a serde error.
///
/// # Examples
///
/// ```no_run
/// use procpool::{Pool, SharedBytes};
///
/// #[procpool::task]
/// fn checksum(bytes: SharedBytes) -> u64 {
///     bytes.iter().map(|&b| u64::from(b)).sum()
/// }
///
/// #[procpool::task]
/// fn doubled(bytes: SharedBytes) -> SharedBytes {
///     SharedBytes::new(bytes.len(), |out| {
///         for (o, b) in out.iter_mut().zip(bytes.iter()) {
///             *o = b.wrapping_mul(2);
///         }
///     })
///     .expect("shared memory")
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Pool::builder().processes(1).build()?;
/// let bytes = SharedBytes::copy_from_slice(&[1, 2, 3])?;
/// assert_eq!(pool.apply(checksum, (bytes.clone(),))?, 6);
/// assert_eq!(&pool.apply(doubled, (bytes,))?[..], [2, 4, 6]);
/// # pool.close();
/// # pool.join()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct SharedBytes {
    /// `None` for no bytes, which need no file.
    region: Option<Arc<Region>>,
}

#[derive(Debug)]
struct Region {
    fd: OwnedFd,
    map: Mapping,
}

impl SharedBytes {
    /// Shared memory of `len` bytes, which `fill` writes (they start as zeroes); sealed
    /// once it returns.
    ///
    /// # Errors
    ///
    /// When the system cannot create, size, seal or map the memory.
    pub fn new(len: usize, fill: impl FnOnce(&mut [u8])) -> io::Result<SharedBytes> {
        if len == 0 {
            fill(&mut []);
            return Ok(SharedBytes::default());
        }
        let fd = sys::memfd(len)?;
        // Writing needs a writable mapping, and sealing against writes needs none left: the
        // bytes are mapped again, read-only, once sealed.
        fill(Mapping::new(&fd, len, true)?.as_mut_slice());
        sys::seal(&fd)?;
        let map = Mapping::new(&fd, len, false)?;
        Ok(SharedBytes {
            region: Some(Arc::new(Region { fd, map })),
        })
    }

    /// Shared memory holding a copy of `bytes`.
    ///
    /// # Errors
    ///
    /// As [`SharedBytes::new`].
    pub fn copy_from_slice(bytes: &[u8]) -> io::Result<SharedBytes> {
        SharedBytes::new(bytes.len(), |out| out.copy_from_slice(bytes))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.region
            .as_ref()
            .map_or(&[], |region| region.map.as_slice())
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &SharedBytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SharedBytes {}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// The index that stands for "no descriptor": the encoding of no bytes.
const NONE: u32 = u32::MAX;

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let index = match &self.region {
            None => NONE,
            Some(region) => attach(&region.fd).map_err(S::Error::custom)?,
        };
        (index, self.len() as u64).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SharedBytes, D::Error> {
        let (index, len) = <(u32, u64)>::deserialize(deserializer)?;
        let len = usize::try_from(len).map_err(D::Error::custom)?;
        match (index, len) {
            (NONE, 0) => Ok(SharedBytes::default()),
            (NONE, _) | (_, 0) => Err(D::Error::custom(
                "a SharedBytes must have both a descriptor and bytes, or neither",
            )),
            _ => map_attached(index, len).map_err(D::Error::custom),
        }
    }
}

thread_local! {
    /// The descriptor list of the frame being written, while one item is encoded.
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    /// The descriptors of the frame being read, while one item is decoded.
    static INCOMING: RefCell<Option<Vec<RawFd>>> = const { RefCell::new(None) };
}

/// Adds a duplicate of `fd` to the descriptors of the frame being written; its index there.
fn attach(fd: &OwnedFd) -> io::Result<u32> {
    OUTGOING.with(|slot| {
        let mut slot = slot.borrow_mut();
        let Some(fds) = slot.as_mut() else {
            return Err(io::Error::other(
                "a SharedBytes encodes only as a task's arguments or result",
            ));
        };
        let index = u32::try_from(fds.len())
            .ok()
            .filter(|&i| i != NONE)
            .ok_or_else(|| io::Error::other("too many SharedBytes in one frame"))?;
        fds.push(fd.try_clone()?);
        Ok(index)
    })
}

/// Maps the descriptor at `index` of the frame being read, after checking it.
fn map_attached(index: u32, len: usize) -> io::Result<SharedBytes> {
    let raw = INCOMING.with(|slot| {
        let slot = slot.borrow();
        let fds = slot.as_ref().ok_or_else(|| {
            io::Error::other("a SharedBytes decodes only as a task's arguments or result")
        })?;
        fds.get(index as usize).copied().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "descriptor {index} named, but the frame brought {}",
                    fds.len()
                ),
            )
        })
    })?;
    let fd = sys::dup_sealed(raw, len)?;
    let map = Mapping::new(&fd, len, false)?;
    Ok(SharedBytes {
        region: Some(Arc::new(Region { fd, map })),
    })
}

/// Runs `encode` with `fds` as the descriptor list that `SharedBytes` values add to.
pub(crate) fn encoding<T>(fds: &mut Vec<OwnedFd>, encode: impl FnOnce() -> T) -> T {
    struct Restore<'a> {
        fds: &'a mut Vec<OwnedFd>,
        outer: Option<Vec<OwnedFd>>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let outer = self.outer.take();
            let ours = OUTGOING.with(|slot| std::mem::replace(&mut *slot.borrow_mut(), outer));
            *self.fds = ours.unwrap_or_default();
        }
    }
    let ours = std::mem::take(fds);
    let outer = OUTGOING.with(|slot| slot.borrow_mut().replace(ours));
    let _restore = Restore { fds, outer };
    encode()
}

/// Runs `decode` with `fds` as the descriptors that `SharedBytes` indices name. A frame
/// without descriptors needs no scope: an index in it names nothing.
pub(crate) fn decoding<T>(fds: &[OwnedFd], decode: impl FnOnce() -> T) -> T {
    if fds.is_empty() {
        return decode();
    }
    struct Restore(Option<Vec<RawFd>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            INCOMING.with(|slot| *slot.borrow_mut() = outer);
        }
    }
    let raw = fds.iter().map(|fd| fd.as_fd().as_raw_fd()).collect();
    let _restore = Restore(INCOMING.with(|slot| slot.borrow_mut().replace(raw)));
    decode()
}

/// The descriptors that travel with one RUN frame, shared by the jobs that a chunk is split
/// into (each sends them all; its items name them by index).
#[derive(Clone, Debug, Default)]
pub(crate) struct Fds(Option<Arc<[OwnedFd]>>);

impl Fds {
    pub(crate) fn new(fds: Vec<OwnedFd>) -> Fds {
        Fds((!fds.is_empty()).then(|| fds.into()))
    }

    pub(crate) fn as_slice(&self) -> &[OwnedFd] {
        self.0.as_deref().unwrap_or(&[])
    }
}
