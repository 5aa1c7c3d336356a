//! Byte channels: what a peer link runs over, and the framing on top.
//!
//! A [`Channel`] moves bytes and nothing else: read, write, cancel,
//! close, and a descriptor to poll when it has one. [`FdChannel`] covers
//! every descriptor farcall opens itself (Unix and TCP sockets, socket
//! pairs, a child's pipes, this process's stdin and stdout); the Python
//! bindings implement the trait for any object with
//! `recv`/`send`/`cancel`/`close`. [`frame`] turns a
//! channel's bytes into messages, once, for every kind of channel
//! ([`large`] recycles the memory of large frames); [`poll`] waits on
//! descriptors ([`sys`] makes the system calls of the hot path).

pub mod frame;
pub mod large;
pub mod poll;
mod sys;

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

/// A byte channel between two peers.
///
/// A channel with a descriptor ([`Channel::read_fd`]) is non-blocking:
/// `read` and `write` return `Ok(None)` when they would block, and the
/// reader polls the descriptor. A channel without one blocks in `read`,
/// and a thread of its own reads it.
pub trait Channel: Send + Sync + 'static {
    /// Reads into `buf`: `Ok(Some(0))` at the end of the stream,
    /// `Ok(None)` when nothing is there now.
    fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>>;

    /// Reads into memory that may be uninitialised (a large frame's own
    /// buffer, filled straight from the kernel); the default zeroes it
    /// first.
    fn read_uninit(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<Option<usize>> {
        for b in buf.iter_mut() {
            b.write(0);
        }
        // SAFETY: every byte was just initialised.
        let init = unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) };
        self.read(init)
    }

    /// Writes some of `bufs` (in order); `Ok(None)` when it would block.
    fn write(&self, bufs: &[IoSlice<'_>]) -> io::Result<Option<usize>>;

    /// The descriptor that polls readable when there is data, if any.
    fn read_fd(&self) -> Option<RawFd>;

    /// The descriptor that polls writable when there is room, if any.
    fn write_fd(&self) -> Option<RawFd> {
        self.read_fd()
    }

    /// Ends the stream in both directions: the peer reads the end, and a
    /// read of ours returns the end (a blocked one returns at once).
    fn cancel(&self);

    /// Releases the channel (after `cancel`, which it implies).
    fn close(&self) {
        self.cancel();
    }

    /// What the channel is, for messages ("unix socket", "pipes", ...).
    fn describe(&self) -> String;
}

/// A channel over file descriptors: one socket, or a pair of pipes.
#[derive(Debug)]
pub struct FdChannel {
    read: OwnedFd,
    /// The write end when it differs from `read` (pipes).
    write: Option<OwnedFd>,
    socket: bool,
    cancelled: AtomicBool,
    name: &'static str,
}

impl FdChannel {
    /// A channel over a connected stream socket (set non-blocking).
    pub fn socket(fd: OwnedFd, name: &'static str) -> io::Result<FdChannel> {
        set_nonblocking(fd.as_raw_fd())?;
        Ok(FdChannel {
            read: fd,
            write: None,
            socket: true,
            cancelled: AtomicBool::new(false),
            name,
        })
    }

    /// A channel over two pipes (or any two descriptors): read from
    /// `read`, write to `write` (both set non-blocking), as a child's
    /// stdout and stdin.
    ///
    /// The two may be one socket (a child whose stdin and stdout are one
    /// end of a socket pair): cancelling then shuts the socket down, so
    /// the peer reads the end even while other descriptors of it live.
    pub fn pipes(read: OwnedFd, write: OwnedFd) -> io::Result<FdChannel> {
        set_nonblocking(read.as_raw_fd())?;
        set_nonblocking(write.as_raw_fd())?;
        let socket = is_socket(read.as_raw_fd());
        if !socket {
            widen_pipe(read.as_raw_fd());
            widen_pipe(write.as_raw_fd());
        }
        Ok(FdChannel {
            read,
            write: Some(write),
            socket,
            cancelled: AtomicBool::new(false),
            name: if socket { "socket pair" } else { "pipes" },
        })
    }

    /// A channel over this process's stdin and stdout (copies of them),
    /// to serve the process that started this one with its pipes: the
    /// child's side of [`FdChannel::pipes`]. From then on, what is written
    /// to stdout (descriptor 1) goes to stderr, so a stray `println!`
    /// cannot corrupt the channel; what `io::stdout` had buffered is
    /// flushed first. Call it before anything reads stdin.
    pub fn stdio() -> io::Result<FdChannel> {
        use std::io::Write;
        use std::os::fd::AsFd;
        let read = io::stdin().as_fd().try_clone_to_owned()?;
        // Held across the switch, so no print lands half in each place.
        let mut stdout = io::stdout().lock();
        stdout.flush()?;
        let write = stdout.as_fd().try_clone_to_owned()?;
        // SAFETY: dup2(2) onto descriptor 1, which the lock above keeps
        // Rust's own writers off while it changes.
        if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
            return Err(io::Error::last_os_error());
        }
        drop(stdout);
        FdChannel::pipes(read, write)
    }

    /// Two connected channels (a Unix socket pair).
    pub fn pair() -> io::Result<(FdChannel, FdChannel)> {
        let (a, b) = UnixStream::pair()?;
        let own = |s: UnixStream| unsafe_own(s.into_raw_fd());
        Ok((
            FdChannel::socket(own(a), "socket pair")?,
            FdChannel::socket(own(b), "socket pair")?,
        ))
    }

    fn write_raw_fd(&self) -> RawFd {
        self.write.as_ref().unwrap_or(&self.read).as_raw_fd()
    }
}

fn unsafe_own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just released by its owner (into_raw_fd).
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl Channel for FdChannel {
    fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: initialised bytes are valid MaybeUninit bytes, and read(2)
        // writes only initialised bytes.
        let buf = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        self.read_uninit(buf)
    }

    fn read_uninit(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<Option<usize>> {
        // SAFETY: the pointer and length describe `buf`, which read(2) may
        // fill with at most buf.len() bytes.
        let got = retry(|| unsafe {
            sys::read(
                self.read.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        });
        match got {
            // A socket whose peer died with our data unread is reset
            // rather than ended (a killed child, half the time): for us it
            // is the same end of the stream.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(Some(0)),
            other => other,
        }
    }

    fn write(&self, bufs: &[IoSlice<'_>]) -> io::Result<Option<usize>> {
        // SAFETY: IoSlice is ABI-compatible with iovec; the slices outlive
        // the call.
        retry(|| unsafe {
            sys::writev(
                self.write_raw_fd(),
                bufs.as_ptr() as *const libc::iovec,
                bufs.len().min(libc::UIO_MAXIOV as usize) as libc::c_int,
            )
        })
    }

    fn read_fd(&self) -> Option<RawFd> {
        Some(self.read.as_raw_fd())
    }

    fn write_fd(&self) -> Option<RawFd> {
        Some(self.write_raw_fd())
    }

    fn cancel(&self) {
        if self.cancelled.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.socket {
            // SAFETY: shutdown(2) on a descriptor we own.
            unsafe { libc::shutdown(self.read.as_raw_fd(), libc::SHUT_RDWR) };
            return;
        }
        // Pipes cannot be shut down: point both descriptors at /dev/null
        // instead, which closes our ends of the pipes (the peer reads the
        // end) while the numbers stay ours, so a thread polling them sees
        // the end too and no other file can take their place.
        if let Ok(null) = std::fs::File::open("/dev/null") {
            for fd in [self.read.as_raw_fd(), self.write_raw_fd()] {
                // SAFETY: dup2 onto descriptors we own.
                unsafe { libc::dup2(null.as_raw_fd(), fd) };
            }
        }
    }

    fn describe(&self) -> String {
        self.name.to_string()
    }
}

/// Runs a read(2)/write(2)-like call until it is not interrupted: its
/// count, `None` when it would block, or the error.
fn retry(mut call: impl FnMut() -> isize) -> io::Result<Option<usize>> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// How much a pipe of ours holds: 1 MiB, the most an unprivileged process
/// may ask for by default (`/proc/sys/fs/pipe-max-size`), instead of
/// 64 KiB. A large message then crosses in 16 times fewer turns of writer
/// and reader, each a wake-up (a 64 MiB argument over a child's pipes went
/// from 1.3 to 2.7 GB/s, see bench/README.md).
const PIPE_SIZE: libc::c_int = 1 << 20;

/// True when `fd` is a socket.
fn is_socket(fd: RawFd) -> bool {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` for a descriptor we own, or fails.
    let ok = unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0;
    // SAFETY: initialised by the successful fstat above.
    ok && unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFSOCK
}

/// Asks for a [`PIPE_SIZE`] buffer; a descriptor that is no pipe, or a
/// refusal, leaves it as it is.
fn widen_pipe(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ changes nothing
    // but the buffer's size, and fails harmlessly on anything but a pipe.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_carry_bytes_and_cancel_ends_both_ways() {
        let mut fds = [0; 2];
        let mut back = [0; 2];
        // SAFETY: pipe(2) fills two descriptors we then own.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(back.as_mut_ptr()), 0);
        }
        let a = FdChannel::pipes(unsafe_own(back[0]), unsafe_own(fds[1])).unwrap();
        let b = FdChannel::pipes(unsafe_own(fds[0]), unsafe_own(back[1])).unwrap();
        // SAFETY: F_GETPIPE_SZ only reads the size of a pipe we own.
        let size = unsafe { libc::fcntl(fds[1], libc::F_GETPIPE_SZ) };
        assert_eq!(size, PIPE_SIZE, "the pipe was widened");
        assert_eq!(a.write(&[IoSlice::new(b"hi")]).unwrap(), Some(2));
        let mut buf = [0u8; 8];
        assert_eq!(b.read(&mut buf).unwrap(), Some(2));
        assert_eq!(&buf[..2], b"hi");
        assert_eq!(b.read(&mut buf).unwrap(), None, "nothing more: would block");
        a.cancel();
        assert_eq!(b.read(&mut buf).unwrap(), Some(0), "the peer reads the end");
        assert_eq!(a.read(&mut buf).unwrap(), Some(0), "and so do we");
    }

    #[test]
    fn pipes_over_one_socket_end_it_for_the_peer_on_cancel() {
        // A child whose stdin and stdout are one end of a socket pair: its
        // channel holds two copies, and the descriptors 0 and 1 it was
        // started with stay open.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let kept = ours.try_clone().unwrap();
        let (r, w): (OwnedFd, OwnedFd) = (ours.try_clone().unwrap().into(), ours.into());
        let a = FdChannel::pipes(r, w).unwrap();
        let b = FdChannel::socket(theirs.into(), "socket").unwrap();
        assert_eq!(a.write(&[IoSlice::new(b"hi")]).unwrap(), Some(2));
        let mut buf = [0u8; 8];
        assert_eq!(b.read(&mut buf).unwrap(), Some(2));
        a.cancel();
        assert_eq!(b.read(&mut buf).unwrap(), Some(0), "the peer reads the end");
        drop(kept);
    }

    #[test]
    fn a_reset_reads_as_the_end_of_the_stream() {
        // A peer that dies with data of ours unread resets the socket.
        let (a, b) = FdChannel::pair().unwrap();
        assert_eq!(a.write(&[IoSlice::new(b"unread")]).unwrap(), Some(6));
        drop(b);
        let mut buf = [0u8; 8];
        assert_eq!(a.read(&mut buf).unwrap(), Some(0));
    }

    #[test]
    fn a_pair_is_two_ends_of_one_socket() {
        let (a, b) = FdChannel::pair().unwrap();
        assert_eq!(b.write(&[IoSlice::new(b"x")]).unwrap(), Some(1));
        let mut buf = [0u8; 4];
        assert_eq!(a.read(&mut buf).unwrap(), Some(1));
        b.cancel();
        assert_eq!(a.read(&mut buf).unwrap(), Some(0));
    }
}
