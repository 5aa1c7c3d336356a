//! The native stream transport: farcall framing on Unix and TCP sockets.
//!
//! A message on the stream is
//!
//! ```text
//! u8 kind | u8 0 | u16 0 | u32 n (LE) | n x u64 frame length (LE) | frames
//! ```
//!
//! `kind` says what the frames are (request, reply, hello), so the same
//! stream can carry traffic both ways. Sockets are non-blocking; the
//! reader is incremental and never allocates more than a frame's declared
//! length, which is checked against the message size limit first. Large
//! frames are read straight into their own buffer (no copy after the
//! kernel's), small ones are cut from a reusable read buffer.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::protocol::Frames;

use super::{large, Address};

/// What a native message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Request frames (see `protocol`).
    Request = 1,
    /// Reply frames.
    Reply = 2,
    /// Connection handshake.
    Hello = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Request),
            2 => Some(Kind::Reply),
            3 => Some(Kind::Hello),
            _ => None,
        }
    }
}

/// Default limit on one message's total size (all frames): 4 GiB.
pub const DEFAULT_MAX_MESSAGE: u64 = 4 << 30;
/// Most frames one message may have.
pub const MAX_FRAMES: u32 = 65_536;
const HEADER: usize = 8;
/// Frames at least this long get a buffer of their own.
const LARGE_FRAME: u64 = 256 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// A connected native socket.
#[derive(Debug)]
pub enum Stream {
    /// A Unix-domain stream socket.
    Unix(UnixStream),
    /// A TCP socket (Nagle disabled).
    Tcp(TcpStream),
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Stream {
    /// Connects to a native address; the socket is left non-blocking.
    pub fn connect(address: &Address) -> Result<Stream> {
        let stream = match address {
            Address::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            Address::Tcp(hostport) => {
                let s = TcpStream::connect(hostport.as_str())?;
                s.set_nodelay(true)?;
                keep_alive(s.as_raw_fd());
                Stream::Tcp(s)
            }
            Address::Zmq(a) => return Err(not_native(a)),
        };
        stream.set_nonblocking()?;
        Ok(stream)
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(true),
            Stream::Tcp(s) => s.set_nonblocking(true),
        }
    }

    /// Shuts both directions down, waking any thread blocked on it.
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

/// Turns on TCP keepalive probes, so that a peer whose host died or
/// vanished from the network is noticed in about 16 s (10 s idle, then 3
/// probes 2 s apart) and its pending calls fail. The kernel sends them:
/// nothing on the call path, nothing user code can block. (Unix sockets
/// need none: the kernel knows when the peer process is gone.)
fn keep_alive(fd: RawFd) {
    let set = |level, name, value: libc::c_int| {
        // SAFETY: setsockopt reads one c_int from a valid pointer.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 2);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
}

fn not_native(address: &str) -> Error {
    Error::Address(address.to_string(), "not a native address".into())
}

/// A listening native socket.
#[derive(Debug)]
pub enum Listener {
    /// Listening on a Unix socket path (removed again on drop).
    Unix(UnixListener, std::path::PathBuf),
    /// Listening on a TCP port.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `address`; returns the listener and the address peers use to
    /// reach it (the real port when `*` was asked for).
    pub fn bind(address: &Address) -> Result<(Listener, Address)> {
        let listener = match address {
            Address::Unix(path) => {
                let l = UnixListener::bind(path)?;
                l.set_nonblocking(true)?;
                Listener::Unix(l, path.clone())
            }
            Address::Tcp(hostport) => {
                let l = TcpListener::bind(hostport.as_str())?;
                l.set_nonblocking(true)?;
                Listener::Tcp(l)
            }
            Address::Zmq(a) => return Err(not_native(a)),
        };
        let bound = match &listener {
            Listener::Unix(_, p) => Address::Unix(p.clone()),
            Listener::Tcp(l) => Address::Tcp(l.local_addr()?.to_string()),
        };
        Ok((listener, bound))
    }

    /// Accepts one pending connection, if any.
    pub fn accept(&self) -> io::Result<Option<Stream>> {
        let accepted = match self {
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                keep_alive(s.as_raw_fd());
                Stream::Tcp(s)
            }),
        };
        match accepted {
            Ok(s) => {
                s.set_nonblocking()?;
                Ok(Some(s))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Unix(l, _) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The 8-byte message header plus frame lengths.
pub fn encode_header(kind: Kind, frames: &[Bytes]) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER + 8 * frames.len());
    write_header(&mut h, kind, frames);
    h
}

/// Appends a message header to `out`.
fn write_header(out: &mut Vec<u8>, kind: Kind, frames: &[Bytes]) {
    out.extend_from_slice(&[kind as u8, 0, 0, 0]);
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for f in frames {
        out.extend_from_slice(&(f.len() as u64).to_le_bytes());
    }
}

/// Messages whose frames add up to at most this many bytes are copied
/// into the queue, back to back, so a burst of them goes out in one write;
/// larger frames are queued as they are, uncopied.
const PACKED_MAX: usize = 16 * 1024;

/// Bytes of messages still to be written, as a queue of chunks.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Chunks to write, in order, before `tail`.
    chunks: std::collections::VecDeque<Bytes>,
    /// Small messages packed back to back, not yet moved to `chunks`.
    tail: Vec<u8>,
    bytes: usize,
}

impl Outgoing {
    /// Queues one message. Small messages are packed together so they go
    /// out in one system call, with one allocation for many.
    pub fn push(&mut self, kind: Kind, frames: Frames) {
        let total: usize = frames.iter().map(Bytes::len).sum();
        let header = HEADER + 8 * frames.len();
        self.bytes += header + total;
        if total <= PACKED_MAX {
            self.tail.reserve((header + total).max(1024));
            write_header(&mut self.tail, kind, &frames);
            frames.iter().for_each(|f| self.tail.extend_from_slice(f));
        } else {
            self.seal();
            self.chunks
                .push_back(Bytes::from(encode_header(kind, &frames)));
            self.chunks
                .extend(frames.into_iter().filter(|f| !f.is_empty()));
        }
    }

    /// Moves the packed messages to the chunks to write.
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            self.chunks
                .push_back(Bytes::from(std::mem::take(&mut self.tail)));
        }
    }

    /// True when everything has been written.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.tail.is_empty()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.bytes
    }

    /// Writes as much as the socket takes now. `Ok(true)`: all written.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<bool> {
        self.seal();
        while !self.chunks.is_empty() {
            let slices: Vec<io::IoSlice<'_>> = self
                .chunks
                .iter()
                .take(64)
                .map(|c| io::IoSlice::new(c))
                .collect();
            let n = match writev(fd, &slices) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.advance(n);
        }
        Ok(true)
    }

    fn advance(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let front = self.chunks.front_mut().expect("wrote more than queued");
            if n >= front.len() {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }

    /// Writes everything, waiting for the socket when it is full, until
    /// `deadline`.
    pub fn flush_blocking(&mut self, fd: RawFd, deadline: Option<Instant>) -> Result<()> {
        while !self.flush(fd)? {
            if !wait_fd(fd, libc::POLLOUT, deadline)? {
                return Err(Error::Timeout(std::time::Duration::ZERO));
            }
        }
        Ok(())
    }
}

fn writev(fd: RawFd, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: IoSlice is ABI-compatible with iovec; the slices outlive the call.
    let n = unsafe {
        libc::writev(
            fd,
            slices.as_ptr() as *const libc::iovec,
            slices.len() as libc::c_int,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Waits until `fd` is ready for `events` or `deadline` passes. Returns
/// false on timeout. Hang-up and errors count as ready (the next read or
/// write reports them).
pub fn wait_fd(fd: RawFd, events: libc::c_short, deadline: Option<Instant>) -> Result<bool> {
    let mut fds = [libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    Ok(poll_fds(&mut fds, deadline)? > 0)
}

/// `poll(2)` on several descriptors until `deadline`; retries on EINTR.
pub fn poll_fds(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> Result<usize> {
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so that we never spin on a sub-millisecond rest.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: fds is a valid, exclusively borrowed pollfd array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err.into());
        }
    }
}

/// `poll(2)` on several descriptors without sleeping: true when any is
/// ready.
pub fn poll_now(fds: &mut [libc::pollfd]) -> Result<bool> {
    // SAFETY: fds is a valid, exclusively borrowed pollfd array.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    match n {
        0 => Ok(false),
        n if n > 0 => Ok(true),
        _ => match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            e => Err(e.into()),
        },
    }
}

/// A message being received.
struct Partial {
    kind: Kind,
    lengths: Vec<u64>,
    frames: Frames,
    /// The large frame being filled, if the current frame is large.
    large: Option<BytesMut>,
}

/// Incremental reader of native messages from a non-blocking socket.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    partial: Option<Partial>,
    max_message: u64,
    /// The last read returned less than it asked for (or nothing): the
    /// socket had no more data then, so reading again before the next
    /// readiness event would only cost a system call.
    drained: bool,
    /// The peer hung up: read on until the end of the stream, which no
    /// further readiness event would announce.
    peer_closed: bool,
}

/// What one `fill` call saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// Some bytes arrived.
    Data,
    /// Nothing to read right now.
    WouldBlock,
    /// The peer closed its end.
    Eof,
}

impl FrameReader {
    /// A reader that refuses messages larger than `max_message` bytes.
    pub fn new(max_message: u64) -> Self {
        FrameReader {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            partial: None,
            max_message,
            drained: false,
            peer_closed: false,
        }
    }

    /// True when the socket was found empty by the last read: wait for
    /// readiness before reading again.
    pub fn drained(&self) -> bool {
        self.drained && !self.peer_closed
    }

    /// True when part of a message has been read and the rest not yet.
    pub fn mid_message(&self) -> bool {
        self.partial.is_some() || self.start != self.end
    }

    /// Records that the peer hung up, so reading goes on to the end.
    pub fn mark_peer_closed(&mut self) {
        self.peer_closed = true;
    }

    /// Changes the message size limit (raised once a peer is admitted).
    pub fn set_max_message(&mut self, max_message: u64) {
        self.max_message = max_message;
    }

    /// Records that the socket became readable (a poll said so).
    pub fn mark_readable(&mut self) {
        self.drained = false;
    }

    /// Reads what the socket has (one system call).
    pub fn fill(&mut self, fd: RawFd) -> io::Result<Fill> {
        let (n, asked) = match self.large_target() {
            Some((large, missing)) => (read_into_spare(fd, large, missing)?, missing),
            None => {
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                } else if self.end == self.buf.len() {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                }
                if self.end == self.buf.len() {
                    // A small frame longer than the buffer: grow it. Bounded,
                    // since frames of LARGE_FRAME or more bypass the buffer.
                    self.buf.resize(self.buf.len() * 2, 0);
                }
                let asked = self.buf.len() - self.end;
                let n = read_fd(fd, &mut self.buf[self.end..])?.inspect(|n| self.end += n);
                (n, asked)
            }
        };
        // A stream socket returns less than asked only when it has no more
        // right now; an edge-triggered poll reports anything newer.
        self.drained = n.is_none_or(|n| n < asked);
        Ok(match n {
            None => Fill::WouldBlock,
            Some(0) => Fill::Eof,
            Some(_) => Fill::Data,
        })
    }

    /// The large frame to read into directly, when the small buffer has
    /// nothing left for it, and how many of its bytes are still to come
    /// (its buffer may be larger: reused memory).
    fn large_target(&mut self) -> Option<(&mut BytesMut, usize)> {
        if self.start != self.end {
            return None;
        }
        let partial = self.partial.as_mut()?;
        let len = partial.lengths[partial.frames.len()] as usize;
        let large = partial.large.as_mut()?;
        let missing = len - large.len();
        Some((large, missing))
    }

    /// Takes the next complete message out of what has been read.
    pub fn next_message(&mut self) -> Result<Option<(Kind, Frames)>> {
        if self.partial.is_none() && !self.start_message()? {
            return Ok(None);
        }
        let partial = self.partial.as_mut().expect("started above");
        if partial.frames.is_empty() && partial.large.is_none() {
            // A small message that is all here: one copy, frames sliced
            // out of it (one allocation instead of one per frame).
            let total: u64 = partial.lengths.iter().sum();
            let all_small = partial.lengths.iter().all(|&l| l < LARGE_FRAME);
            if all_small && total <= (self.end - self.start) as u64 {
                let whole =
                    Bytes::copy_from_slice(&self.buf[self.start..self.start + total as usize]);
                self.start += total as usize;
                let mut at = 0;
                for &len in &partial.lengths {
                    partial.frames.push(whole.slice(at..at + len as usize));
                    at += len as usize;
                }
            }
        }
        while partial.frames.len() < partial.lengths.len() {
            let len = partial.lengths[partial.frames.len()];
            let avail = self.end - self.start;
            if let Some(large) = partial.large.as_mut() {
                let want = (len as usize - large.len()).min(avail);
                large.extend_from_slice(&self.buf[self.start..self.start + want]);
                self.start += want;
                if large.len() as u64 == len {
                    let done = partial.large.take().expect("checked").freeze();
                    partial.frames.push(done);
                    continue;
                }
                return Ok(None);
            }
            if len >= LARGE_FRAME {
                partial.large = Some(large::buffer(len as usize));
                continue;
            }
            if (avail as u64) < len {
                return Ok(None);
            }
            let frame = Bytes::copy_from_slice(&self.buf[self.start..self.start + len as usize]);
            self.start += len as usize;
            partial.frames.push(frame);
        }
        let done = self.partial.take().expect("checked");
        Ok(Some((done.kind, done.frames)))
    }

    /// Parses a header and frame lengths if they are all here.
    fn start_message(&mut self) -> Result<bool> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < HEADER {
            return Ok(false);
        }
        let kind = Kind::from_u8(avail[0])
            .filter(|_| avail[1..4] == [0, 0, 0])
            .ok_or_else(|| Error::Protocol(format!("bad message header {:02x?}", &avail[..4])))?;
        let n = u32::from_le_bytes(avail[4..8].try_into().expect("4 bytes"));
        if n > MAX_FRAMES {
            return Err(Error::Protocol(format!("{n} frames in one message")));
        }
        let need = HEADER + 8 * n as usize;
        if avail.len() < need {
            // Make room for the whole length table, then wait for it.
            if self.start + need > self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if need > self.buf.len() {
                    self.buf.resize(need, 0);
                }
            }
            return Ok(false);
        }
        let avail = &self.buf[self.start..self.end];
        let lengths: Vec<u64> = avail[HEADER..need]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let total = lengths.iter().try_fold(0u64, |acc, &l| acc.checked_add(l));
        if total.is_none_or(|t| t > self.max_message) {
            return Err(Error::Protocol(format!(
                "message larger than the limit of {} bytes",
                self.max_message
            )));
        }
        self.start += need;
        self.partial = Some(Partial {
            kind,
            frames: Vec::with_capacity(lengths.len()),
            lengths,
            large: None,
        });
        Ok(true)
    }
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: buf is a valid writable slice of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
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

/// Reads up to `max` bytes into the unused capacity of `buf` without
/// zeroing it first: a large frame is filled straight from the kernel.
fn read_into_spare(fd: RawFd, buf: &mut BytesMut, max: usize) -> io::Result<Option<usize>> {
    let spare = (buf.capacity() - buf.len()).min(max);
    loop {
        // SAFETY: the pointer and length describe buf's spare capacity;
        // read(2) writes at most `spare` bytes there, and only the bytes it
        // reports written are then marked initialised.
        let n = unsafe {
            let dst = buf.as_mut_ptr().add(buf.len());
            libc::read(fd, dst as *mut libc::c_void, spare)
        };
        if n >= 0 {
            // SAFETY: read(2) initialised exactly n bytes past len.
            unsafe { buf.set_len(buf.len() + n as usize) };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn read_all(reader: &mut FrameReader, fd: RawFd) -> Result<Option<(Kind, Frames)>> {
        for _ in 0..10_000 {
            if let Some(m) = reader.next_message()? {
                return Ok(Some(m));
            }
            match reader.fill(fd)? {
                Fill::Eof => return Ok(None),
                Fill::WouldBlock => {
                    wait_fd(
                        fd,
                        libc::POLLIN,
                        Some(Instant::now() + std::time::Duration::from_secs(5)),
                    )?;
                }
                Fill::Data => {}
            }
        }
        panic!("no message")
    }

    #[test]
    fn small_and_large_frames_round_trip() {
        let (a, b) = pair();
        let big = Bytes::from(vec![7u8; 3 << 20]);
        let medium = Bytes::from(vec![5u8; 200 << 10]);
        let frames = vec![
            Bytes::from_static(b"1"),
            Bytes::new(),
            big.clone(),
            medium.clone(),
        ];
        let writer = std::thread::spawn(move || {
            let mut out = Outgoing::default();
            out.push(Kind::Request, frames);
            out.push(Kind::Reply, vec![Bytes::from_static(b"x")]);
            out.flush_blocking(a.as_raw_fd(), None).unwrap();
            a
        });
        let mut r = FrameReader::new(DEFAULT_MAX_MESSAGE);
        let (kind, got) = read_all(&mut r, b.as_raw_fd()).unwrap().unwrap();
        assert_eq!(kind, Kind::Request);
        assert_eq!(got.len(), 4);
        assert_eq!(got[3], medium);
        assert_eq!(got[0], "1");
        assert!(got[1].is_empty());
        assert_eq!(got[2], big);
        let (kind, got) = read_all(&mut r, b.as_raw_fd()).unwrap().unwrap();
        assert_eq!((kind, got), (Kind::Reply, vec![Bytes::from_static(b"x")]));
        drop(writer.join().unwrap());
        assert!(read_all(&mut r, b.as_raw_fd()).unwrap().is_none());
    }

    #[test]
    fn rejects_bad_headers_and_oversized_messages() {
        let mut r = FrameReader::new(100);
        r.buf[..8].copy_from_slice(&[9, 0, 0, 0, 1, 0, 0, 0]);
        r.end = 8;
        assert!(matches!(r.next_message(), Err(Error::Protocol(_))));

        let mut r = FrameReader::new(100);
        let h = encode_header(Kind::Request, &[Bytes::from(vec![0u8; 101])]);
        r.buf[..h.len()].copy_from_slice(&h);
        r.end = h.len();
        assert!(matches!(r.next_message(), Err(Error::Protocol(_))));

        let mut r = FrameReader::new(u64::MAX);
        let mut h = vec![1, 0, 0, 0, 2, 0, 0, 0];
        h.extend_from_slice(&u64::MAX.to_le_bytes());
        h.extend_from_slice(&u64::MAX.to_le_bytes());
        r.buf[..h.len()].copy_from_slice(&h);
        r.end = h.len();
        assert!(
            matches!(r.next_message(), Err(Error::Protocol(_))),
            "overflowing sum"
        );
    }
}
