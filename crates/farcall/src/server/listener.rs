//! A server's native side: accepting connections and admitting them.
//!
//! A new connection is a [`Pending`] one until its handshake (see
//! `crate::handshake`) admits it: until then it may send only the next
//! hello step, in messages of at most [`HANDSHAKE_MAX_MESSAGE`] bytes,
//! within the server's handshake timeout. Once admitted it becomes a peer
//! link whose requests go to the server's queue.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::channel::frame::{Fill, FrameReader, Kind, Outgoing};
use crate::channel::{Channel, FdChannel};
use crate::codec::Format;
use crate::error::{Error, Result};
use crate::handshake::{ClientId, Gate, Hello, PeerState};
use crate::host::{self, Host};
use crate::peer::{Executor, Heartbeat, Link};
use crate::protocol::Frames;

/// Largest message a peer may send before it is admitted: handshakes are
/// small, and nobody unauthenticated gets to make us allocate more.
pub(crate) const HANDSHAKE_MAX_MESSAGE: u64 = 4096;

/// A connection whose handshake has not finished.
pub(crate) struct Pending {
    channel: FdChannel,
    reader: FrameReader,
    out: Outgoing,
    state: PeerState,
    client: Option<ClientId>,
    /// When it was accepted (for the handshake deadline).
    pub(crate) since: Instant,
}

/// What the server needs to admit a connection.
pub(crate) struct Admission<'a> {
    pub(crate) gate: &'a Gate,
    pub(crate) address: &'a str,
    pub(crate) max_message: u64,
    pub(crate) host: &'a Arc<Host>,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) heartbeat: Heartbeat,
}

/// Where a pending connection stands after reading what it sent.
pub(crate) enum Step {
    /// Still in its handshake.
    Pending(Box<Pending>),
    /// Admitted: now a link.
    Admitted(Arc<Link>),
    /// Refused or gone (logged).
    Dropped,
}

impl Pending {
    /// A connection just accepted.
    pub(crate) fn new(channel: FdChannel) -> Pending {
        Pending {
            channel,
            reader: FrameReader::new(HANDSHAKE_MAX_MESSAGE),
            out: Outgoing::default(),
            state: PeerState::New,
            client: None,
            since: Instant::now(),
        }
    }

    /// The descriptor to poll.
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        self.channel.read_fd().expect("a socket")
    }

    /// Reads and answers every handshake message that has arrived.
    pub(crate) fn advance(mut self: Box<Self>, admission: &Admission<'_>) -> Step {
        self.reader.mark_readable();
        loop {
            let frames = match self.next_hello() {
                Ok(Some(frames)) => frames,
                Ok(None) => return Step::Pending(self),
                Err(e) => {
                    if !matches!(e, Error::Disconnected(_)) {
                        log::warn!(
                            "dropping a connection to {} during its handshake: {e}",
                            admission.address
                        );
                    }
                    return Step::Dropped;
                }
            };
            match self.answer(&frames, admission) {
                Ok(true) => return self.admit(admission),
                Ok(false) => {}
                Err(e) => {
                    log::warn!(
                        "handshake refused on {}: {e}; dropping connection",
                        admission.address
                    );
                    let denied = Hello::Verdict(Err(e.to_string()));
                    self.out.push(Kind::Hello, denied.to_frames());
                    let _ = self.out.flush(&self.channel);
                    return Step::Dropped;
                }
            }
        }
    }

    /// The next hello message, if one is complete; anything else before
    /// admission is an error.
    fn next_hello(&mut self) -> Result<Option<Frames>> {
        loop {
            match self.reader.next_message()? {
                Some((Kind::Hello, frames)) => return Ok(Some(frames)),
                Some(_) => return Err(Error::Protocol("a message before the handshake".into())),
                None => {}
            }
            if self.reader.drained() {
                return Ok(None);
            }
            match self.reader.fill(&self.channel)? {
                Fill::Data => {}
                Fill::WouldBlock => return Ok(None),
                Fill::Eof => return Err(Error::Disconnected("peer closed".into())),
            }
        }
    }

    /// Answers one hello step; true once the peer is admitted.
    fn answer(&mut self, frames: &[bytes::Bytes], admission: &Admission<'_>) -> Result<bool> {
        let (reply, state) = match (Hello::parse(frames)?, &self.state) {
            (Hello::Hello(nonce, client), PeerState::New) => {
                self.client = Some(client);
                let (challenge, state) = admission.gate.challenge(admission.address, &nonce)?;
                (Hello::Challenge(challenge), state)
            }
            (Hello::Proof(proof), state @ PeerState::Challenged { .. }) => {
                if !admission.gate.admits(state, &proof) {
                    return Err(Error::exception("PermissionError", "wrong key"));
                }
                (Hello::Verdict(Ok(())), PeerState::Admitted)
            }
            _ => return Err(Error::Protocol("unexpected handshake message".into())),
        };
        self.out.push(Kind::Hello, reply.to_frames());
        if !self.out.flush(&self.channel)? {
            return Err(Error::Protocol(
                "the peer does not read its handshake".into(),
            ));
        }
        self.state = state;
        Ok(self.state.admitted())
    }

    /// Turns the admitted connection into a link of the server.
    fn admit(mut self: Box<Self>, admission: &Admission<'_>) -> Step {
        let client = self.client.expect("admitted after a hello");
        self.reader.set_max_message(admission.max_message);
        let Pending {
            channel, reader, ..
        } = *self;
        let link = Link::accepted(
            Arc::new(channel),
            reader,
            Format::Farcall,
            admission.host.clone(),
            admission.executor.clone(),
            host::link_address(&client),
            format!("a client of {}", admission.address),
            admission.heartbeat,
        );
        Step::Admitted(link)
    }
}

impl Link {
    /// A link a server accepted and admitted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn accepted(
        channel: Arc<dyn Channel>,
        reader: FrameReader,
        format: Format,
        host: Arc<Host>,
        executor: Arc<dyn Executor>,
        home: String,
        name: String,
        heartbeat: Heartbeat,
    ) -> Arc<Link> {
        Link::assemble(crate::peer::Parts {
            wire: crate::peer::Wire::Stream {
                channel,
                out: Mutex::new(Default::default()),
            },
            reader: crate::peer::ReadState::Stream(reader),
            format,
            timeout: crate::peer::DEFAULT_TIMEOUT,
            host,
            executor,
            peer: crate::peer::PeerInfo { home, name },
            heartbeat,
        })
    }
}
