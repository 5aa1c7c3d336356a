//! Messages queued for a link's channel.
//!
//! Writes never block: a message is queued and written as far as the
//! channel takes it; the rest goes out when the channel has room, written
//! by the caller that waits on the link or, for a link nobody waits on,
//! by the I/O thread. Async requests are corked: queued and written
//! together (one system call for many) by the next sync call or wait,
//! when [`CORK_BYTES`] pile up, or by the flusher thread soon after.

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use super::{io, Link, Wire};
use crate::channel::frame::{Kind, Outgoing};
use crate::error::{Error, Result};
use crate::protocol::Frames;
use crate::sync::lock;

/// Queued async requests are written at once past this many bytes.
const CORK_BYTES: usize = 16 * 1024;
/// How long the flusher lets a burst of async requests pile up before it
/// writes them. Only requests nobody waits on see it: a wait (a sync call,
/// `result()`, an awaited future) writes the queue first.
const FLUSH_DELAY: Duration = Duration::from_micros(100);
/// Bytes queued for a peer past which its requests are not read until it
/// reads (a peer that never reads cannot grow our memory).
pub(crate) const MAX_QUEUED: usize = 64 << 20;

/// A link's outgoing queue.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) queue: Outgoing,
    /// The flusher thread has been asked to write this queue.
    flush_scheduled: bool,
    /// The last write left bytes behind: the channel was full.
    full: bool,
}

impl Outbox {
    /// An outbox holding what `queue` holds already (a handshake's rest).
    pub(crate) fn with(queue: Outgoing) -> Outbox {
        Outbox {
            queue,
            flush_scheduled: false,
            full: false,
        }
    }
}

impl Link {
    /// Queues a request: written now when `urgent` (the caller waits for
    /// the reply next) or when enough is queued, else soon.
    pub(crate) fn write(self: &Arc<Self>, kind: Kind, frames: Frames, urgent: bool) -> Result<()> {
        let Wire::Stream { channel, out } = &self.wire else {
            unreachable!("ZeroMQ links send directly");
        };
        let mut out = lock(out);
        out.queue.push(kind, frames);
        if !urgent && out.queue.queued_bytes() < CORK_BYTES {
            if !out.flush_scheduled {
                out.flush_scheduled = true;
                drop(out);
                schedule_flush(self);
            }
            return Ok(());
        }
        match out.queue.flush(channel.as_ref()) {
            Ok(true) => Ok(()),
            Ok(false) => {
                drop(out);
                if !urgent {
                    io::want_write(self);
                }
                Ok(())
            }
            Err(e) => {
                drop(out);
                Err(self.write_failed(&e))
            }
        }
    }

    /// Queues a message of ours (a reply, a cancel, a pong), written at
    /// once with `flush`; a failure ends the link (nobody to tell).
    pub(crate) fn queue(self: &Arc<Self>, kind: Kind, frames: Frames, flush: bool) {
        let Wire::Stream { out, .. } = &self.wire else {
            return;
        };
        lock(out).queue.push(kind, frames);
        if flush {
            self.flush_queued();
        }
    }

    /// Writes what is queued, as far as the channel takes it now; the rest
    /// is left to the I/O thread.
    pub(crate) fn flush_queued(self: &Arc<Self>) {
        match self.flush_now() {
            Ok(true) => {}
            Ok(false) => io::want_write(self),
            Err(e) => {
                self.write_failed(&e);
            }
        }
    }

    /// The channel refused our bytes (the peer is gone): the replies it
    /// sent before going still count, so read them first (the end of the
    /// stream then ends the link, with its reason); end the link here only
    /// if nobody else is reading it. The error for the caller.
    pub(crate) fn write_failed(self: &Arc<Self>, e: &std::io::Error) -> Error {
        let why = format!("connection to {} lost: {e}", self.describe());
        if self.read_available().is_some() {
            self.end(&why);
        }
        Error::Disconnected(self.dead().unwrap_or(why))
    }

    /// Writes what the channel takes now; true when nothing is left.
    pub(crate) fn flush_now(&self) -> std::io::Result<bool> {
        let Wire::Stream { channel, out } = &self.wire else {
            return Ok(true);
        };
        let mut out = lock(out);
        out.flush_scheduled = false;
        if out.queue.is_empty() {
            return Ok(true);
        }
        let before = out.queue.queued_bytes();
        let done = out.queue.flush(channel.as_ref())?;
        if out.full && out.queue.queued_bytes() < before {
            // A full channel took more: the peer reads, so it is alive,
            // even if it is busy reading a large message and says nothing.
            // (Bytes taken by a channel with room prove nothing: the
            // kernel buffers them for a stopped peer too.)
            self.saw_peer();
        }
        out.full = !done;
        Ok(done)
    }

    /// True when messages wait for room on the channel.
    pub(crate) fn has_output(&self) -> bool {
        match &self.wire {
            Wire::Stream { out, .. } => !lock(out).queue.is_empty(),
            Wire::Zmq { .. } => false,
        }
    }

    /// True when so much waits for the peer that its requests should not
    /// be read until it reads.
    pub(crate) fn backlogged(&self) -> bool {
        match &self.wire {
            Wire::Stream { out, .. } => lock(out).queue.queued_bytes() > MAX_QUEUED,
            Wire::Zmq { .. } => false,
        }
    }
}

/// Asks the flusher thread to write `link`'s queue within [`FLUSH_DELAY`];
/// requests queued meanwhile go out in the same write, so a burst costs
/// one wake-up per delay, not one per request.
fn schedule_flush(link: &Arc<Link>) {
    static FLUSHER: OnceLock<Sender<Weak<Link>>> = OnceLock::new();
    let flusher = FLUSHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Weak<Link>>();
        std::thread::Builder::new()
            .name("farcall-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    std::thread::sleep(FLUSH_DELAY);
                    let mut due = vec![first];
                    due.extend(rx.try_iter());
                    for link in due.iter().filter_map(Weak::upgrade) {
                        link.flush_queued();
                    }
                }
            })
            .expect("spawning the flusher thread");
        tx
    });
    if flusher.send(Arc::downgrade(link)).is_err() {
        link.flush_queued();
    }
}
