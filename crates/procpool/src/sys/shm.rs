#![allow(unsafe_code)]
//! Shared memory (sealed `memfd`s and their mappings) and descriptors passed over a socket
//! (`SCM_RIGHTS`), for `SharedBytes`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;

/// The most descriptors one `sendmsg` carries (the kernel's `SCM_MAX_FD`).
pub(crate) const FDS_PER_MESSAGE: usize = 253;

/// The seals a received `memfd` must carry before it is mapped: with them, nobody can write
/// to it, shrink it (which would make a reader's access fault with `SIGBUS`) or grow it, so
/// the bytes a receiver maps are fixed for good, whatever the sender does next.
const SEALS: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

/// A fresh anonymous file of `len` bytes that can be sealed, closed on exec.
pub(crate) fn memfd(len: usize) -> io::Result<OwnedFd> {
    // SAFETY: a constant, NUL-terminated name and flags; no memory is touched.
    let fd = unsafe {
        libc::memfd_create(
            c"procpool-shared".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
    // SAFETY: ftruncate of a descriptor this function owns.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Seals `fd` (see [`SEALS`]); it must have no writable mapping left.
pub(crate) fn seal(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl(F_ADD_SEALS) takes an integer and touches no memory.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS | libc::F_SEAL_SEAL) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A duplicate of the received descriptor `fd`, if it is a sealed `memfd` (see [`SEALS`])
/// of exactly `len` bytes.
///
/// `fd` is a number, not a borrow: the caller keeps it open for the call. Were it closed,
/// the worst outcome is `EBADF`, or a check of another file, never memory unsafety.
pub(crate) fn dup_sealed(fd: RawFd, len: usize) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor number only creates a new descriptor.
    let fd = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is the fresh duplicate, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fcntl(F_GET_SEALS) only reads the file's seals.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 || seals & SEALS != SEALS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the descriptor is not a sealed shared-memory file",
        ));
    }
    // SAFETY: `stat` is plain data for which all zeroes is a valid value.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes only into `stat`, which lives for the call.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if usize::try_from(stat.st_size).ok() != Some(len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the shared-memory file holds {} bytes, not the {len} announced",
                stat.st_size
            ),
        ));
    }
    Ok(fd)
}

/// A shared mapping of a whole file, unmapped when dropped.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; `&Mapping` gives only shared
// reads, and writes need `&mut Mapping`.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` (> 0) bytes of `fd`, writable or read-only.
    pub(crate) fn new(fd: &OwnedFd, len: usize, writable: bool) -> io::Result<Mapping> {
        assert!(len > 0, "a mapping of no bytes");
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh mapping at an address the kernel picks; it aliases no Rust object.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).expect("mmap does not return null");
        Ok(Mapping { ptr, len })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for as long as `self` lives. Its file is
        // sealed against writes and shrinking before any other process may see it, or it is
        // this process's own writable mapping, reached only through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Only for a mapping made writable.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value made; no slice of it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Room for the control message of one `sendmsg` or `recvmsg`. A header and
/// [`FDS_PER_MESSAGE`] descriptors take `CMSG_SPACE(253 * 4)`, 1,032 bytes on Linux; this
/// holds more (checked when the crate is built).
#[repr(C, align(8))]
struct ControlBuf([u8; CONTROL_LEN]);

const CONTROL_LEN: usize = 2048;

const _: () = assert!(control_space(FDS_PER_MESSAGE) <= CONTROL_LEN);

/// The room the control message for `count` (at most [`FDS_PER_MESSAGE`]) descriptors
/// takes.
const fn control_space(count: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic.
    unsafe { libc::CMSG_SPACE((count * size_of::<RawFd>()) as libc::c_uint) as usize }
}

/// The next `sendmsg` of a frame whose descriptors go with it: of the bytes of the frame
/// not yet sent, `frame`, and of its descriptors not yet sent, `fds`, those of one message.
/// A message carries at most [`FDS_PER_MESSAGE`] descriptors on its first byte, so while
/// more are left than that, the message is that one byte; the last carries the rest of the
/// frame. `None` when fewer bytes are left than the messages the descriptors need.
pub(crate) fn next_message<'a, F>(frame: &'a [u8], fds: &'a [F]) -> Option<(&'a [u8], &'a [F])> {
    if fds.len().div_ceil(FDS_PER_MESSAGE) > frame.len() {
        return None;
    }
    let group = &fds[..fds.len().min(FDS_PER_MESSAGE)];
    let bytes = if group.len() < fds.len() {
        &frame[..1]
    } else {
        frame
    };
    Some((bytes, group))
}

/// The descriptors of the frame just read: the first `count` that [`recv`] queued (they
/// came with its bytes, after those of the frames before it); `None` if fewer came.
pub(crate) fn claim(queue: &mut VecDeque<OwnedFd>, count: usize) -> Option<Vec<OwnedFd>> {
    (count <= queue.len()).then(|| queue.drain(..count).collect())
}

/// Writes what the socket takes of `slices` with `fds` attached to its first byte
/// (at most [`FDS_PER_MESSAGE`]); never raises `SIGPIPE`.
pub(crate) fn send(
    socket: &UnixStream,
    slices: &[IoSlice<'_>],
    fds: &[impl AsFd],
) -> io::Result<usize> {
    assert!(
        fds.len() <= FDS_PER_MESSAGE,
        "too many descriptors for one message"
    );
    // Written only for a message that carries descriptors, and then only as far as it needs.
    let mut control = MaybeUninit::<ControlBuf>::uninit();
    // SAFETY: `msghdr` is plain data for which all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec`; sendmsg only reads through the pointer.
    msg.msg_iov = slices.as_ptr().cast_mut().cast::<libc::iovec>();
    msg.msg_iovlen = slices.len() as _;
    if !fds.is_empty() {
        let bytes = (fds.len() * size_of::<RawFd>()) as libc::c_uint;
        let space = control_space(fds.len());
        // Not a debug assertion: the writes below stay within `space` bytes of `control`.
        assert!(
            space <= CONTROL_LEN,
            "no room for the descriptors' control message"
        );
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg` describes `control`, which has room for one header and the
        // descriptors (checked above), and is aligned for `cmsghdr`; its first `space`
        // bytes are zeroed before the header and the descriptors are written into them.
        unsafe {
            control.as_mut_ptr().cast::<u8>().write_bytes(0, space);
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(bytes) as _;
            let data = libc::CMSG_DATA(header).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_fd().as_raw_fd());
            }
        }
    }
    // SAFETY: `msg` points at live slices and a live control buffer for the call.
    let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Reads what the socket has into `buf`. With `fds`, it reads with `recvmsg` and appends
/// the descriptors that came with those bytes to `fds` (closed on exec); descriptors the
/// kernel had to drop (no room, or the process's limit on open files) are an `InvalidData`
/// error: the frames they belonged to cannot be decoded any more. Without, it is a plain
/// `recv`, a quarter of a microsecond cheaper on the path of every round trip, after which
/// the kernel closes any descriptor that came: an end that is sent none (see the
/// descriptors' handshake in `wire`) reads this way.
pub(crate) fn recv(
    socket: &UnixStream,
    buf: &mut [u8],
    fds: Option<&mut VecDeque<OwnedFd>>,
) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes, borrowed for the call.
    unsafe { recv_raw(socket, buf.as_mut_ptr(), buf.len(), fds, 0) }
}

/// [`recv`] that never waits, on a blocking socket too: `WouldBlock` when it has nothing.
pub(crate) fn recv_now(
    socket: &UnixStream,
    buf: &mut [u8],
    fds: Option<&mut VecDeque<OwnedFd>>,
) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes, borrowed for the call.
    unsafe { recv_raw(socket, buf.as_mut_ptr(), buf.len(), fds, libc::MSG_DONTWAIT) }
}

/// [`recv`] into the spare capacity of `buf`, at most `max` bytes, which it appends: a large
/// frame is read into its buffer without zeroing it first.
pub(crate) fn recv_spare(
    socket: &UnixStream,
    buf: &mut Vec<u8>,
    max: usize,
    fds: Option<&mut VecDeque<OwnedFd>>,
) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: the spare capacity is `len` or more writable bytes, borrowed for the call;
    // the kernel writes only initialized bytes into it.
    let n = unsafe { recv_raw(socket, spare.as_mut_ptr().cast(), len, fds, 0)? };
    // SAFETY: the read initialized the `n <= len` bytes after the vector's length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// # Safety
///
/// `buf` must be valid for writes of `len` bytes.
unsafe fn recv_raw(
    socket: &UnixStream,
    buf: *mut u8,
    len: usize,
    fds: Option<&mut VecDeque<OwnedFd>>,
    flags: libc::c_int,
) -> io::Result<usize> {
    let Some(fds) = fds else {
        // SAFETY: `buf` is writable for `len` bytes, by the caller's contract.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.cast(), len, flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(n as usize);
    };
    // Room for all the descriptors one message can bring (checked above `control_space`),
    // so that none is cut off. Not zeroed: the kernel writes the control messages it returns, and only those are read.
    let mut control = MaybeUninit::<ControlBuf>::uninit();
    let mut iov = libc::iovec {
        iov_base: buf.cast(),
        iov_len: len,
    };
    // SAFETY: `msghdr` is plain data for which all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = CONTROL_LEN as _;
    // SAFETY: `msg` points at `buf` (writable for `len` bytes, by the caller's contract)
    // and `control`, both live for the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC | flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled `control` with `msg_controllen` bytes of control messages,
    // which the CMSG macros walk within; each SCM_RIGHTS payload is descriptors that now
    // belong to this process and to nothing in it yet.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                let payload =
                    ((*header).cmsg_len as usize).saturating_sub(data as usize - header as usize);
                for i in 0..payload / size_of::<RawFd>() {
                    fds.push_back(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors sent with a frame were lost (too many open files?)",
        ));
    }
    Ok(n as usize)
}

/// Raises this process's soft limit on open files to its hard limit: a worker holds a
/// descriptor for each `SharedBytes` of a job's arguments and results at once.
pub(crate) fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only `limit`, live for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `count` descriptors (of one file) over a socket pair in messages of at most
    /// [`FDS_PER_MESSAGE`], a byte each, and receives them all.
    fn round_trip(count: usize) -> usize {
        let (a, b) = UnixStream::pair().unwrap();
        let file = memfd(1).unwrap();
        let fds: Vec<OwnedFd> = (0..count).map(|_| file.try_clone().unwrap()).collect();
        let mut messages = 0;
        for group in fds.chunks(FDS_PER_MESSAGE) {
            assert_eq!(send(&a, &[IoSlice::new(&[7])], group).unwrap(), 1);
            messages += 1;
        }
        let mut received = VecDeque::new();
        let mut buf = [0; 1];
        for _ in 0..messages {
            assert_eq!(recv(&b, &mut buf, Some(&mut received)).unwrap(), 1);
        }
        received.len()
    }

    #[test]
    fn descriptors_up_to_a_full_message_and_beyond_arrive_whole() {
        for count in [1, 252, 253, 254, 506, 507] {
            assert_eq!(round_trip(count), count, "{count} descriptors");
        }
    }

    #[test]
    fn a_plain_read_takes_the_bytes_and_no_descriptor() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = memfd(1).unwrap();
        assert_eq!(send(&a, &[IoSlice::new(b"abc")], &[file]).unwrap(), 3);
        let mut buf = [0; 8];
        assert_eq!(recv(&b, &mut buf, None).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        // The descriptor went with its bytes: a read with room for it finds nothing more.
        let mut received = VecDeque::new();
        let more = recv_now(&b, &mut buf, Some(&mut received));
        assert_eq!(more.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(received.is_empty());
    }

    #[test]
    fn a_frame_sends_a_byte_per_message_until_its_descriptors_fit_one() {
        let frame = [1, 2, 3, 4];
        let fds = [0u8; 600];
        // 600 descriptors: 253 on the first byte, 253 on the second, the rest with the end.
        let (bytes, group) = next_message(&frame, &fds).unwrap();
        assert_eq!((bytes, group.len()), (&frame[..1], 253));
        let (bytes, group) = next_message(&frame[1..], &fds[253..]).unwrap();
        assert_eq!((bytes, group.len()), (&frame[1..2], 253));
        let (bytes, group) = next_message(&frame[2..], &fds[506..]).unwrap();
        assert_eq!((bytes, group.len()), (&frame[2..], 94));
        // No descriptors: the whole frame; too few bytes for the messages needed: none.
        assert_eq!(next_message(&frame, &fds[..0]).unwrap().0, &frame[..]);
        assert!(next_message(&frame[..2], &fds).is_none());
    }

    #[test]
    fn the_control_buffer_holds_a_full_message() {
        assert!(control_space(FDS_PER_MESSAGE) <= CONTROL_LEN);
        assert!(
            control_space(FDS_PER_MESSAGE) > 1024,
            "the size the first version had"
        );
    }
}
