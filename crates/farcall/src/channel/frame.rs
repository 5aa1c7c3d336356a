//! Native framing: messages on a byte channel.
//!
//! A message on the channel is
//!
//! ```text
//! u8 kind | u8 0 | u16 0 | u32 n (LE) | n x u64 frame length (LE) | frames
//! ```
//!
//! `kind` says what the frames are (see `protocol::message`), so one
//! channel carries traffic both ways. The reader is incremental and never
//! allocates more than a frame's declared length, which is checked
//! against the message size limit first. Large frames are read straight
//! into their own buffer (no copy after the kernel's), small ones are cut
//! from the read buffer without a copy either: they share its memory,
//! which a new buffer replaces while any of them lives. Writes are queued ([`Outgoing`]) and go
//! out in as few system calls as the channel allows.

use std::io;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;

use super::poll::wait_fd;
use super::{large, Channel};
use crate::error::{Error, Result};

/// A message as a channel moves it: a list of frames.
pub type Frames = Vec<Bytes>;

/// What a native message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Request frames (see `protocol::message`).
    Request = 1,
    /// Reply frames.
    Reply = 2,
    /// Connection handshake.
    Hello = 3,
    /// The sender no longer waits for a reply.
    Cancel = 4,
    /// A heartbeat (ping or pong).
    Heartbeat = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Request),
            2 => Some(Kind::Reply),
            3 => Some(Kind::Hello),
            4 => Some(Kind::Cancel),
            5 => Some(Kind::Heartbeat),
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
/// A read asks for at least this much: less room left in the buffer
/// makes the reader take a new one (or reclaim the one it has).
const MIN_READ: usize = 8 * 1024;

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

    /// Writes as much as the channel takes now. `Ok(true)`: all written.
    pub fn flush(&mut self, channel: &dyn Channel) -> io::Result<bool> {
        self.seal();
        while !self.chunks.is_empty() {
            let slices: Vec<io::IoSlice<'_>> = self
                .chunks
                .iter()
                .take(64)
                .map(|c| io::IoSlice::new(c))
                .collect();
            let n = match channel.write(&slices)? {
                Some(0) => return Err(io::ErrorKind::WriteZero.into()),
                Some(n) => n,
                None => return Ok(false),
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

    /// Writes everything, waiting for the channel when it is full, until
    /// `deadline`.
    pub fn flush_blocking(
        &mut self,
        channel: &dyn Channel,
        deadline: Option<Instant>,
    ) -> Result<()> {
        while !self.flush(channel)? {
            let fd = channel
                .write_fd()
                .expect("only a pollable channel would block");
            if !wait_fd(fd, libc::POLLOUT, deadline)? {
                return Err(Error::Timeout(std::time::Duration::ZERO));
            }
        }
        Ok(())
    }
}

/// A message being received.
struct Partial {
    kind: Kind,
    /// Inline for the usual handful of frames: no allocation per message.
    lengths: SmallVec<[u64; 8]>,
    frames: Frames,
    /// The large frame being filled, if the current frame is large.
    large: Option<BytesMut>,
}

/// Incremental reader of native messages from a channel.
pub struct FrameReader {
    /// Bytes read and not yet taken, at its front; its spare capacity is
    /// where the next read lands.
    buf: BytesMut,
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
            buf: BytesMut::with_capacity(READ_CHUNK),
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
        self.partial.is_some() || !self.buf.is_empty()
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

    /// Reads what the channel has (one system call on a descriptor).
    pub fn fill(&mut self, channel: &dyn Channel) -> io::Result<Fill> {
        let (n, asked) = match self.large_target() {
            Some((large, missing)) => (read_into_spare(channel, large, missing)?, missing),
            None => {
                if self.buf.capacity() - self.buf.len() < MIN_READ {
                    // Reclaims the buffer when no message cut from it
                    // lives any more, else takes a new one (the unread
                    // rest moves along). Bounded: frames of LARGE_FRAME
                    // or more bypass the buffer.
                    self.buf.reserve(READ_CHUNK);
                }
                let asked = self.buf.capacity() - self.buf.len();
                let n = read_into_spare(channel, &mut self.buf, asked)?;
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
        if !self.buf.is_empty() {
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
            // A small message that is all here: its frames are cut from
            // the read buffer, uncopied.
            let total: u64 = partial.lengths.iter().sum();
            let all_small = partial.lengths.iter().all(|&l| l < LARGE_FRAME);
            if all_small && total <= self.buf.len() as u64 {
                let whole = self.buf.split_to(total as usize).freeze();
                let mut at = 0;
                for &len in &partial.lengths {
                    partial.frames.push(whole.slice(at..at + len as usize));
                    at += len as usize;
                }
            }
        }
        while partial.frames.len() < partial.lengths.len() {
            let len = partial.lengths[partial.frames.len()];
            let avail = self.buf.len();
            if let Some(large) = partial.large.as_mut() {
                let want = (len as usize - large.len()).min(avail);
                large.extend_from_slice(&self.buf[..want]);
                self.buf.advance(want);
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
            partial
                .frames
                .push(self.buf.split_to(len as usize).freeze());
        }
        let done = self.partial.take().expect("checked");
        Ok(Some((done.kind, done.frames)))
    }

    /// Parses a header and frame lengths if they are all here.
    fn start_message(&mut self) -> Result<bool> {
        let avail = &self.buf[..];
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
            self.buf.reserve(need - avail.len());
            return Ok(false);
        }
        let lengths: SmallVec<[u64; 8]> = self.buf[HEADER..need]
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
        self.buf.advance(need);
        self.partial = Some(Partial {
            kind,
            frames: Vec::with_capacity(lengths.len()),
            lengths,
            large: None,
        });
        Ok(true)
    }
}

/// Reads up to `max` bytes into the unused capacity of `buf` without
/// zeroing it first (on a descriptor): a large frame is filled straight
/// from the kernel.
fn read_into_spare(
    channel: &dyn Channel,
    buf: &mut BytesMut,
    max: usize,
) -> io::Result<Option<usize>> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    let n = channel.read_uninit(&mut spare[..len])?;
    if let Some(n) = n {
        // SAFETY: the channel initialised exactly n bytes past len.
        unsafe { buf.set_len(buf.len() + n) };
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::FdChannel;

    fn pair() -> (FdChannel, FdChannel) {
        FdChannel::pair().unwrap()
    }

    fn read_all(reader: &mut FrameReader, ch: &FdChannel) -> Result<Option<(Kind, Frames)>> {
        for _ in 0..10_000 {
            if let Some(m) = reader.next_message()? {
                return Ok(Some(m));
            }
            match reader.fill(ch)? {
                Fill::Eof => return Ok(None),
                Fill::WouldBlock => {
                    wait_fd(
                        ch.read_fd().unwrap(),
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
            out.flush_blocking(&a, None).unwrap();
            a
        });
        let mut r = FrameReader::new(DEFAULT_MAX_MESSAGE);
        let (kind, got) = read_all(&mut r, &b).unwrap().unwrap();
        assert_eq!(kind, Kind::Request);
        assert_eq!(got.len(), 4);
        assert_eq!(got[3], medium);
        assert_eq!(got[0], "1");
        assert!(got[1].is_empty());
        assert_eq!(got[2], big);
        let (kind, got) = read_all(&mut r, &b).unwrap().unwrap();
        assert_eq!((kind, got), (Kind::Reply, vec![Bytes::from_static(b"x")]));
        drop(writer.join().unwrap());
        assert!(read_all(&mut r, &b).unwrap().is_none());
    }

    #[test]
    fn frames_kept_while_reading_on_stay_intact() {
        // Thousands of small messages, many per read and some split across
        // reads; every frame is kept while the reader goes on, so the read
        // buffer is replaced under live frames rather than reused.
        let (a, b) = pair();
        let message = |i: u32| {
            let text = format!("message {i} ").repeat(1 + (i % 7) as usize);
            vec![Bytes::from(i.to_le_bytes().to_vec()), Bytes::from(text)]
        };
        let count = 5000;
        let writer = std::thread::spawn(move || {
            let mut out = Outgoing::default();
            for i in 0..count {
                out.push(Kind::Request, message(i));
            }
            out.flush_blocking(&a, None).unwrap();
            a
        });
        let mut r = FrameReader::new(DEFAULT_MAX_MESSAGE);
        let mut kept = Vec::new();
        for _ in 0..count {
            kept.push(read_all(&mut r, &b).unwrap().unwrap().1);
        }
        for (i, frames) in kept.iter().enumerate() {
            assert_eq!(frames, &message(i as u32), "message {i}");
        }
        drop(writer.join().unwrap());
        assert!(read_all(&mut r, &b).unwrap().is_none());
    }

    #[test]
    fn rejects_bad_headers_and_oversized_messages() {
        let mut r = FrameReader::new(100);
        r.buf.extend_from_slice(&[9, 0, 0, 0, 1, 0, 0, 0]);
        assert!(matches!(r.next_message(), Err(Error::Protocol(_))));

        let mut r = FrameReader::new(100);
        let h = encode_header(Kind::Request, &[Bytes::from(vec![0u8; 101])]);
        r.buf.extend_from_slice(&h);
        assert!(matches!(r.next_message(), Err(Error::Protocol(_))));

        let mut r = FrameReader::new(u64::MAX);
        let mut h = vec![1, 0, 0, 0, 2, 0, 0, 0];
        h.extend_from_slice(&u64::MAX.to_le_bytes());
        h.extend_from_slice(&u64::MAX.to_le_bytes());
        r.buf.extend_from_slice(&h);
        assert!(
            matches!(r.next_message(), Err(Error::Protocol(_))),
            "overflowing sum"
        );
    }
}
