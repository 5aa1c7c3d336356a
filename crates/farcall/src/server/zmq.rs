//! A server's ZeroMQ side: one ROUTER socket for every ZeroMQ peer, as in
//! pyacq. Its requests go to the same queue and host as the native
//! links'; only admission (the handshake as two actions) and replies
//! (sent on the ROUTER, to a routing id) are its own.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::codec::Format;
use crate::error::{Error, Result};
use crate::handshake::{self, Gate, PeerState};
use crate::host::Caller;
use crate::host::{Host, HostExporter};
use crate::protocol::command::Command;
use crate::protocol::{self, Action, ErrorShape, Frames, Request};
use crate::sync::lock;
use crate::transport;
use crate::value::Value;

/// Most ZeroMQ peers kept mid-handshake; past it the oldest are forgotten
/// (they can start again), so strangers cannot grow the table.
const MAX_CHALLENGES: usize = 4096;

/// The ROUTER and what it knows of its peers.
pub(crate) struct Endpoint {
    pub(crate) router: transport::zmq::Router,
    /// Peers seen, with their serializer, for disconnect notices.
    peers: HashMap<Bytes, Format>,
}

/// Handshake state of the ZeroMQ peers, by routing id.
#[derive(Default)]
pub(crate) struct Admissions {
    peers: Mutex<HashMap<Bytes, PeerState>>,
}

/// What running one ZeroMQ request led to.
pub(crate) struct Ran {
    /// The frames to send back, if the request wants a reply.
    pub(crate) reply: Option<Frames>,
    /// The request was `close`, and it succeeded.
    pub(crate) close: bool,
    /// The serializer the peer speaks.
    pub(crate) format: Format,
}

impl Endpoint {
    /// Wraps a bound ROUTER.
    pub(crate) fn new(router: transport::zmq::Router) -> Endpoint {
        Endpoint {
            router,
            peers: HashMap::new(),
        }
    }

    /// The next request waiting on the socket: the peer's routing id and
    /// the request's frames.
    pub(crate) fn next(&self) -> Result<Option<(Bytes, Frames)>> {
        if !transport::zmq::readable(&self.router.socket)? {
            return Ok(None);
        }
        let Some(frames) = transport::zmq::try_recv(&self.router.socket)? else {
            return Ok(None);
        };
        let mut frames = frames.into_iter();
        let identity = frames.next().unwrap_or_default();
        Ok(Some((identity, frames.collect())))
    }

    /// Sends `frames` to the peer `identity` (which speaks `format`).
    pub(crate) fn send(&mut self, identity: &Bytes, format: Format, frames: Option<Frames>) {
        self.peers.insert(identity.clone(), format);
        let Some(frames) = frames else {
            return;
        };
        let mut all = Vec::with_capacity(frames.len() + 1);
        all.push(identity.clone());
        all.extend(frames);
        if let Err(e) = transport::zmq::send(&self.router.socket, &all) {
            log::warn!("a reply to a ZeroMQ peer was lost: {e}");
        }
    }

    /// Tells every peer seen (but `except`) that the server closes.
    pub(crate) fn say_goodbye(&mut self, except: Option<&Bytes>) {
        for (identity, format) in self.peers.drain() {
            if except == Some(&identity) {
                continue;
            }
            let mut frames = vec![identity];
            frames.extend(protocol::disconnect_frames(format));
            let _ = transport::zmq::send(&self.router.socket, &frames);
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.router.socket.set_linger(0);
    }
}

impl Admissions {
    /// Runs one request of peer `identity`: the handshake actions admit
    /// it; other actions run on `host` once it is admitted (or at once
    /// on an open server). `cancel` drops a queued request of the peer.
    pub(crate) fn run(
        &self,
        gate: &Gate,
        address: &str,
        host: &Host,
        identity: &Bytes,
        mut request: Request,
        cancel: &dyn Fn(&Bytes, i64),
    ) -> Ran {
        // An unknown serializer is answered in msgpack, pyacq's default.
        let (format, result, close) = match request.format() {
            Err(e) => (Format::Msgpack, Err(e), false),
            Ok(format) => {
                let (result, close) =
                    self.execute(gate, address, host, identity, &mut request, format, cancel);
                (format, result, close)
            }
        };
        let reply = if request.wants_reply() {
            let mut exporter = HostExporter { host, holder: None };
            let shape = ErrorShape::for_routing_id(identity);
            let req_id = request.req_id;
            let frames =
                protocol::reply_frames_shaped(format, shape, req_id, result, &mut exporter)
                    .or_else(|e| {
                        protocol::reply_frames_shaped(format, shape, req_id, Err(e), &mut exporter)
                    });
            match frames {
                Ok(f) => Some(f),
                Err(e) => {
                    log::error!("cannot encode a reply on {address}: {e}");
                    None
                }
            }
        } else {
            // One that raised was logged by the host; anything else is news.
            if let Some(e) = result
                .as_ref()
                .err()
                .filter(|e| !matches!(e, Error::Remote { .. }))
            {
                log::error!(
                    "one-way '{}' on {address} failed: {e}",
                    String::from_utf8_lossy(&request.action)
                );
            }
            None
        };
        Ran {
            reply,
            close,
            format,
        }
    }

    /// Runs a request: the handshake actions for anyone, the others only
    /// for an admitted peer (whose options are decoded only then).
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &self,
        gate: &Gate,
        address: &str,
        host: &Host,
        identity: &Bytes,
        request: &mut Request,
        format: Format,
        cancel: &dyn Fn(&Bytes, i64),
    ) -> (Result<Value>, bool) {
        let handshaking = matches!(request.action(), Ok(Action::Hello | Action::Auth));
        let admitted = !gate.authenticates()
            || lock(&self.peers)
                .get(identity)
                .is_some_and(PeerState::admitted);
        if !handshaking && !admitted {
            let refused = Error::exception(
                "PermissionError",
                "this server requires authentication: farcall clients do it when they \
                 connect; pyacq clients need a server started with auth=False",
            );
            return (Err(refused), false);
        }
        let result = match Command::parse(request, format) {
            Err(e) => Err(e),
            Ok(Command::Hello(hello)) => self.hello(gate, address, identity, hello.nonce),
            Ok(Command::Auth(auth)) => self.auth(gate, address, identity, &auth.proof),
            Ok(Command::Close(_)) => return (Ok(Value::Bool(true)), true),
            Ok(Command::Cancel(c)) => {
                cancel(identity, c.req_id);
                Ok(Value::None)
            }
            Ok(command) => request.return_type().and_then(|return_type| {
                let describe = || {
                    let who = String::from_utf8_lossy(identity);
                    format!("ZeroMQ peer {who:?} of {address}")
                };
                let caller = Caller {
                    describe: &describe,
                    wants_reply: request.wants_reply(),
                };
                host.run(command, return_type, &caller)
            }),
        };
        (result, false)
    }

    /// The request id a `farcall_cancel` from `identity` names, if the
    /// peer is admitted and the request well formed.
    pub(crate) fn cancelled(
        &self,
        gate: &Gate,
        identity: &Bytes,
        request: &mut Request,
    ) -> Option<i64> {
        let admitted = !gate.authenticates()
            || lock(&self.peers)
                .get(identity)
                .is_some_and(PeerState::admitted);
        let format = request.format().ok()?;
        match Command::parse(request, format) {
            Ok(Command::Cancel(c)) if admitted => Some(c.req_id),
            _ => None,
        }
    }

    /// `farcall_hello`: the server's challenge.
    fn hello(
        &self,
        gate: &Gate,
        address: &str,
        identity: &Bytes,
        nonce: Option<Bytes>,
    ) -> Result<Value> {
        // A pyacq-style hello with no nonce suits an open server.
        let nonce = match nonce {
            Some(n) => n,
            None if !gate.authenticates() => Bytes::new(),
            None => return Err(Error::Protocol("handshake option 'nonce' missing".into())),
        };
        let (challenge, state) = gate.challenge(address, &nonce)?;
        let mut peers = lock(&self.peers);
        if peers.len() >= MAX_CHALLENGES {
            peers.retain(|_, s| s.admitted());
        }
        peers.insert(identity.clone(), state);
        Ok(handshake::challenge_value(&challenge))
    }

    /// `farcall_auth`: admits the peer if its proof holds.
    fn auth(&self, gate: &Gate, address: &str, identity: &Bytes, proof: &[u8]) -> Result<Value> {
        let mut peers = lock(&self.peers);
        let state = peers.get(identity).cloned().unwrap_or_default();
        if gate.admits(&state, proof) {
            peers.insert(identity.clone(), PeerState::Admitted);
            Ok(Value::from("ok"))
        } else {
            peers.remove(identity);
            log::warn!("a ZeroMQ peer of {address} failed to authenticate");
            Err(Error::exception("PermissionError", "wrong key"))
        }
    }
}
