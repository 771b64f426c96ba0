//! [`SharedBytes`]: bytes in shared memory that go to a task and back without being copied.
//!
//! The bytes live in a sealed `memfd`. Encoding one puts its memory (and so its descriptor)
//! in the descriptor list of the frame being written, and only the index into that list and
//! the length in the bytes; the frame's descriptors go with it over the worker's socket
//! (`SCM_RIGHTS`), and decoding maps the descriptor the index names. The list is reached
//! through a thread-local slot that the frame writer fills for the time of one item's
//! encoding ([`encode_item`]), and the frame reader for the time of one decoding
//! ([`decoding`]): serde has no other way to hand a value's encoder something beside the
//! bytes.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::ops::{Deref, Range};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
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
/// The first call that sends a `SharedBytes` to a worker, and the first whose results bring
/// one back from it, each cost one round trip more: until then the pool and the worker read
/// their socket without taking descriptors, which is cheaper on every call that passes none
/// (the "Descriptors" section of the wire protocol's README says how they agree).
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
            Some(region) => attach(region).map_err(S::Error::custom)?,
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
    /// The descriptor list of the frame being written, while an item is encoded in
    /// [`encode_in_scope`].
    static OUTGOING: RefCell<Option<Vec<Attached>>> = const { RefCell::new(None) };
    /// Set when a `SharedBytes` was encoded outside any frame's scope: the item's encoding
    /// failed for want of one, and [`encode_item`] runs it again in one.
    static MISSED: Cell<bool> = const { Cell::new(false) };
    /// The descriptors of the frame being read, while its items are decoded, and the index
    /// the first of them has in the frame that encoded them.
    static INCOMING: RefCell<Option<(usize, Vec<RawFd>)>> = const { RefCell::new(None) };
}

/// A `SharedBytes`'s memory in a frame's descriptor list: its descriptor stays open, and
/// the memory mapped, until the frame has been sent and dropped. (A duplicate descriptor
/// would do as well, but would cost a system call and a descriptor per value.)
#[derive(Debug)]
pub(crate) struct Attached(Arc<Region>);

impl AsFd for Attached {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }
}

/// Adds `region` to the descriptors of the frame being written; its index there.
fn attach(region: &Arc<Region>) -> io::Result<u32> {
    OUTGOING.with_borrow_mut(|slot| {
        let Some(fds) = slot.as_mut() else {
            MISSED.set(true);
            return Err(io::Error::other(
                "a SharedBytes encodes only as a task's arguments or result",
            ));
        };
        let index = u32::try_from(fds.len())
            .ok()
            .filter(|&i| i != NONE)
            .ok_or_else(|| io::Error::other("too many SharedBytes in one frame"))?;
        fds.push(Attached(Arc::clone(region)));
        Ok(index)
    })
}

/// Maps the descriptor at `index` of the frame being read, after checking it.
fn map_attached(index: u32, len: usize) -> io::Result<SharedBytes> {
    let raw = INCOMING.with(|slot| {
        let slot = slot.borrow();
        let (base, fds) = slot.as_ref().ok_or_else(|| {
            io::Error::other("a SharedBytes decodes only as a task's arguments or result")
        })?;
        (index as usize)
            .checked_sub(*base)
            .and_then(|at| fds.get(at))
            .copied()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "descriptor {index} named, but the frame brought {} from {base} on",
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

/// Encodes one item of a frame into `buf` with `encode`, the descriptors of the
/// `SharedBytes` in it going to `fds`, the frame's list.
///
/// Most items hold no `SharedBytes`, and a map encodes a great many of them in a tight loop,
/// so `encode` first runs as it is, with nothing around it. A `SharedBytes` met on the way
/// fails that encoding for want of the list; then, and only then, the item is encoded again
/// with `fds` in reach ([`encode_in_scope`]). Encoding is deterministic, so the second run
/// writes what the first would have.
#[inline]
pub(crate) fn encode_item<E>(
    fds: &mut Vec<Attached>,
    buf: &mut Vec<u8>,
    mut encode: impl FnMut(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let start = buf.len();
    match encode(buf) {
        Ok(()) => Ok(()),
        Err(error) => encode_in_scope(fds, buf, start, encode, error),
    }
}

/// The second run of [`encode_item`], after its first failed with `error`: if that was for
/// want of a frame's list, `buf` is cut back to `start`, and the item encoded again with
/// `fds` in reach; if that fails too, the descriptors it added go. Otherwise `error` is
/// the outcome, and `buf` is left as the first run left it.
#[cold]
#[inline(never)]
pub(crate) fn encode_in_scope<E>(
    fds: &mut Vec<Attached>,
    buf: &mut Vec<u8>,
    start: usize,
    mut encode: impl FnMut(&mut Vec<u8>) -> Result<(), E>,
    error: E,
) -> Result<(), E> {
    if !MISSED.replace(false) {
        return Err(error);
    }
    buf.truncate(start);
    /// Moves the list back out of the slot, and what was there before back in, even if
    /// `encode` panics; without the item's own descriptors unless it was encoded whole.
    struct Restore<'a> {
        fds: &'a mut Vec<Attached>,
        before: usize,
        outer: Option<Vec<Attached>>,
        /// Set once `encode` has returned `Ok`. (Not `thread::panicking`, which is also
        /// true for an encoding that succeeds in a `Drop` run while another panic unwinds.)
        encoded: bool,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            *self.fds = OUTGOING.replace(self.outer.take()).unwrap_or_default();
            if !self.encoded {
                self.fds.truncate(self.before);
            }
        }
    }
    let before = fds.len();
    let outer = OUTGOING.replace(Some(std::mem::take(fds)));
    let mut restore = Restore {
        fds,
        before,
        outer,
        encoded: false,
    };
    let encoded = encode(buf);
    restore.encoded = encoded.is_ok();
    encoded
}

/// Runs `decode` with `fds` as the descriptors that `SharedBytes` indices name, the first
/// being index `base`. A frame without descriptors needs no scope: an index in it names
/// nothing. A worker decodes a whole job in one scope, its tasks' own code included: there,
/// a `SharedBytes` that a task decodes from bytes of its own maps one of the job's
/// descriptors (sealed and checked like any other) instead of failing. The scope is a
/// function of its own, so that `decode` is inlined where there is none.
#[inline]
pub(crate) fn decoding<T>(fds: &[OwnedFd], base: usize, decode: impl FnOnce() -> T) -> T {
    if fds.is_empty() {
        decode()
    } else {
        decoding_in_scope(fds, base, decode)
    }
}

#[cold]
#[inline(never)]
fn decoding_in_scope<T>(fds: &[OwnedFd], base: usize, decode: impl FnOnce() -> T) -> T {
    struct Restore(Option<(usize, Vec<RawFd>)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            INCOMING.set(self.0.take());
        }
    }
    let raw = fds.iter().map(|fd| fd.as_fd().as_raw_fd()).collect();
    let _restore = Restore(INCOMING.replace(Some((base, raw))));
    decode()
}

/// The descriptors that travel with one RUN frame: those its arguments encoded, or, for a
/// call split out of a chunk, the part of the chunk's that its argument names.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fds {
    table: Option<Arc<FdTable>>,
    range: Range<usize>,
}

#[derive(Debug)]
struct FdTable {
    fds: Vec<Attached>,
    /// Where the descriptors of each item of the frame that made them end.
    ends: Vec<u32>,
}

impl Fds {
    /// The descriptors of a frame, and where each of its items' end (one per item).
    pub(crate) fn new(fds: Vec<Attached>, ends: Vec<u32>) -> Fds {
        if fds.is_empty() {
            return Fds::default();
        }
        let range = 0..fds.len();
        Fds {
            table: Some(Arc::new(FdTable { fds, ends })),
            range,
        }
    }

    pub(crate) fn as_slice(&self) -> &[Attached] {
        self.table
            .as_ref()
            .map_or(&[], |table| &table.fds[self.range.clone()])
    }

    /// The index, in the frame that made them, of the first of these descriptors: what a
    /// receiver takes from the indices it decodes.
    pub(crate) fn base(&self) -> usize {
        self.range.start
    }

    /// The descriptors of item `i` of the frame that made them, for a call split out of
    /// it: only those travel with that call, not the whole chunk's.
    pub(crate) fn item(&self, i: usize) -> Fds {
        let Some(table) = &self.table else {
            return Fds::default();
        };
        let start = if i == 0 {
            0
        } else {
            table.ends[i - 1] as usize
        };
        let end = table.ends[i] as usize;
        if start == end {
            return Fds::default();
        }
        Fds {
            table: Some(Arc::clone(table)),
            range: start..end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `(index, len)` as a `SharedBytes` with `fds` as the frame's descriptors.
    fn decode(fds: &[OwnedFd], index: u32, len: u64) -> Result<SharedBytes, String> {
        let bytes = crate::codec::encode(&(index, len)).unwrap();
        decoding(fds, 0, || crate::codec::decode::<SharedBytes>(&bytes)).map_err(|e| e.to_string())
    }

    /// Encodes `value` as a frame would: its bytes and its descriptors.
    fn encode<T: Serialize>(value: &T) -> (Vec<u8>, Vec<OwnedFd>) {
        let (bytes, fds) = encode_attached(value);
        let fds = fds
            .iter()
            .map(|fd| fd.as_fd().try_clone_to_owned().unwrap())
            .collect();
        (bytes, fds)
    }

    fn encode_attached<T: Serialize>(value: &T) -> (Vec<u8>, Vec<Attached>) {
        let (mut bytes, mut fds) = (Vec::new(), Vec::new());
        encode_item(&mut fds, &mut bytes, |buf| {
            crate::codec::encode_into(buf, value)
        })
        .unwrap();
        (bytes, fds)
    }

    #[test]
    fn encoding_and_decoding_map_the_same_bytes() {
        let original = SharedBytes::copy_from_slice(b"hello").unwrap();
        let (bytes, fds) = encode(&(original.clone(), 7u8, original.clone()));
        assert_eq!(fds.len(), 2, "one descriptor per value encoded");
        // A second item's descriptors are numbered after the first's.
        let (mut more, mut more_fds) = (Vec::new(), Vec::new());
        encode_item(&mut more_fds, &mut more, |buf| {
            crate::codec::encode_into(buf, &7u8)
        })
        .unwrap();
        encode_item(&mut more_fds, &mut more, |buf| {
            crate::codec::encode_into(buf, &original)
        })
        .unwrap();
        assert_eq!(more_fds.len(), 1);
        assert_eq!(crate::codec::decode::<(u8, u32)>(&more).unwrap(), (7, 0));
        let (a, n, b): (SharedBytes, u8, SharedBytes) =
            decoding(&fds, 0, || crate::codec::decode(&bytes)).unwrap();
        assert_eq!((&a[..], n, &b[..]), (&b"hello"[..], 7, &b"hello"[..]));
    }

    #[test]
    fn outside_a_frame_neither_encodes_nor_decodes() {
        let bytes = SharedBytes::copy_from_slice(b"x").unwrap();
        let error = crate::codec::encode(&bytes).unwrap_err().to_string();
        assert!(
            error.contains("only as a task's arguments or result"),
            "{error}"
        );
        let encoded = crate::codec::encode(&(0u32, 1u64)).unwrap();
        let error = crate::codec::decode::<SharedBytes>(&encoded)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("only as a task's arguments or result"),
            "{error}"
        );
        // No bytes need no descriptor, anywhere.
        let empty = crate::codec::encode(&SharedBytes::default()).unwrap();
        assert!(
            crate::codec::decode::<SharedBytes>(&empty)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_unsealed_file_is_refused() {
        let fd = sys::memfd(4096).unwrap();
        let error = decode(&[fd], 0, 4096).unwrap_err();
        assert!(error.contains("not a sealed shared-memory file"), "{error}");
    }

    #[test]
    fn a_length_other_than_the_file_is_refused() {
        let (_, fds) = encode(&SharedBytes::copy_from_slice(&[1; 100]).unwrap());
        let error = decode(&fds, 0, 4096).unwrap_err();
        assert!(
            error.contains("holds 100 bytes, not the 4096 announced"),
            "{error}"
        );
        assert_eq!(decode(&fds, 0, 100).unwrap().len(), 100);
    }

    #[test]
    fn an_index_past_the_frame_is_refused() {
        let (_, fds) = encode(&SharedBytes::copy_from_slice(&[1]).unwrap());
        let error = decode(&fds, 1, 1).unwrap_err();
        assert!(
            error.contains("descriptor 1 named, but the frame brought 1"),
            "{error}"
        );
        let error = decode(&fds, NONE, 1).unwrap_err();
        assert!(error.contains("both a descriptor and bytes"), "{error}");
    }

    #[test]
    fn nothing_can_write_to_the_file_once_sealed_not_even_its_maker() {
        let bytes = SharedBytes::new(10, |b| b.fill(3)).unwrap();
        let region = bytes.region.as_ref().unwrap();
        assert!(Mapping::new(&region.fd, 10, true).is_err());
        assert_eq!(&bytes[..], &[3; 10]);
    }
}
