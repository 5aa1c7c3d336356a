//! Opening a link: connecting and running the handshake (see
//! `crate::handshake` for the messages, docs/transports.md for the
//! exchange). The server's side of the exchange is the listener's
//! (`crate::server`); this is the dialer's, and the symmetric hello of
//! private channels.

use std::os::fd::RawFd;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::outbox::Outbox;
use super::{
    read, Link, LinkOptions, LocalExecutor, Parts, PeerInfo, ReadState, Wire, CONNECT_TIMEOUT,
};
use crate::channel::frame::{Fill, FrameReader, Kind, Outgoing};
use crate::channel::{poll, Channel};
use crate::codec::{Format, NoExport};
use crate::error::{Error, Result};
use crate::handshake::{self, Auth, Challenge, ClientHandshake, Hello};
use crate::host::{self, Host};
use crate::protocol::command;
use crate::protocol::{self, Action, Opts, Reply, ReturnType};
use crate::transport::{self, stream, Address};
use crate::value::Value;

/// How long a ZeroMQ handshake waits at a time for its reply.
const ZMQ_SLICE: Duration = Duration::from_millis(10);

/// Connects to the server at `address` and runs the client's handshake.
pub(crate) fn dial(address: &str, options: &LinkOptions) -> Result<Arc<Link>> {
    let cannot = |e: Error| match e {
        // The server went away mid-handshake (it closed, or died), or is
        // not there at all.
        Error::Io(io) => Error::Disconnected(format!("cannot connect to {address}: {io}")),
        other => other,
    };
    match Address::parse(address)? {
        Address::Zmq(endpoint) => dial_zmq(address, &endpoint, options).map_err(cannot),
        native => {
            let channel: Arc<dyn Channel> = Arc::new(stream::connect(&native).map_err(cannot)?);
            over_socket(channel, address, options).map_err(cannot)
        }
    }
}

/// Runs the client's side of the key handshake over a connected socket
/// (`address` names the peer, and picks the key to prove).
pub(crate) fn over_socket(
    channel: Arc<dyn Channel>,
    address: &str,
    options: &LinkOptions,
) -> Result<Arc<Link>> {
    let mut reader = FrameReader::new(options.max_message);
    let mut out = Outgoing::default();
    let challenge = client_handshake(
        channel.as_ref(),
        &mut reader,
        &mut out,
        address,
        &options.auth,
    )?;
    let home = if challenge.address.is_empty() {
        address.to_string()
    } else {
        challenge.address.clone()
    };
    let peer = PeerInfo {
        home,
        name: address.to_string(),
    };
    Ok(open_stream(channel, out, reader, options, peer))
}

/// Opens a link over a private channel: both sides say who they are.
pub(crate) fn private(channel: Arc<dyn Channel>, options: &LinkOptions) -> Result<Arc<Link>> {
    let deadline = Some(Instant::now() + CONNECT_TIMEOUT);
    let mut reader = FrameReader::new(options.max_message);
    let mut out = Outgoing::default();
    out.push(Kind::Hello, Hello::Peer(handshake::client_id()).to_frames());
    flush(channel.as_ref(), &mut out, deadline)?;
    let peer = match read_hello(&mut reader, channel.as_ref(), deadline)? {
        Hello::Peer(id) => id,
        _ => return Err(Error::Protocol("expected the peer's hello".into())),
    };
    let peer = PeerInfo {
        home: host::link_address(&peer),
        name: channel.describe(),
    };
    Ok(open_stream(channel, out, reader, options, peer))
}

/// Opens a link over a channel that others may reach (a user's channel
/// object): both sides prove they hold the key before any request. Each
/// sends a hello with a fresh nonce; the side whose nonce is the larger
/// plays the listener's part of the key handshake and the other the
/// dialer's, so two peers that both call this agree on their parts
/// without being told. Each proof covers both nonces and its side, so a
/// peer without the key can neither answer nor replay one.
pub(crate) fn keyed(channel: Arc<dyn Channel>, options: &LinkOptions) -> Result<Arc<Link>> {
    match keyed_exchange(channel.as_ref(), options) {
        Ok((out, reader, peer)) => Ok(open_stream(channel, out, reader, options, peer)),
        Err(e) => {
            // The peer may be waiting for our next message: it learns now
            // that none will come, instead of waiting as long as it may.
            channel.cancel();
            Err(e)
        }
    }
}

/// The exchange of [`keyed`]: what is left to write, what was read past
/// it, and who the peer is.
fn keyed_exchange(
    channel: &dyn Channel,
    options: &LinkOptions,
) -> Result<(Outgoing, FrameReader, PeerInfo)> {
    let deadline = Some(Instant::now() + CONNECT_TIMEOUT);
    let name = channel.describe();
    let mut reader = FrameReader::new(options.max_message);
    let mut out = Outgoing::default();
    let dialer = ClientHandshake::new(&name, &options.auth)?;
    out.push(
        Kind::Hello,
        Hello::Hello(*dialer.nonce(), handshake::client_id()).to_frames(),
    );
    flush(channel, &mut out, deadline)?;
    let refused = |why: String| Error::exception("PermissionError", why);
    let (theirs, peer) = match read_hello(&mut reader, channel, deadline)? {
        Hello::Hello(nonce, id) => (nonce, id),
        Hello::Peer(_) => {
            return Err(refused(format!(
                "the peer over {name} does not authenticate (auth=False on its side)"
            )))
        }
        _ => return Err(Error::Protocol("expected the peer's hello".into())),
    };
    match theirs.cmp(dialer.nonce()) {
        std::cmp::Ordering::Equal => {
            return Err(Error::Protocol("the peer sent our own hello back".into()))
        }
        std::cmp::Ordering::Greater => {
            // The dialer's part: check the peer's proof, prove ours.
            dialers_part(channel, &mut reader, &mut out, &dialer, &name, deadline)?;
        }
        std::cmp::Ordering::Less => {
            // The listener's part: challenge, then check the peer's proof.
            let gate = handshake::Gate::new(&options.auth)?;
            let (challenge, state) = gate.challenge(&name, &theirs)?;
            out.push(Kind::Hello, Hello::Challenge(challenge).to_frames());
            flush(channel, &mut out, deadline)?;
            let proof = match read_hello(&mut reader, channel, deadline) {
                Ok(Hello::Proof(proof)) => proof,
                Ok(_) => return Err(Error::Protocol("expected the peer's proof".into())),
                // A dialer that cannot check our proof hangs up.
                Err(Error::Disconnected(_)) => {
                    return Err(refused(format!(
                        "the peer over {name} hung up on our challenge: it does not hold \
                         our key (pass the same key= on both sides)"
                    )))
                }
                Err(e) => return Err(e),
            };
            let admitted = gate.admits(&state, &proof);
            let verdict = if admitted {
                Ok(())
            } else {
                Err("wrong key".to_string())
            };
            out.push(Kind::Hello, Hello::Verdict(verdict).to_frames());
            flush(channel, &mut out, deadline)?;
            if !admitted {
                return Err(refused(format!(
                    "the peer over {name} failed to prove it holds the key"
                )));
            }
        }
    }
    let peer = PeerInfo {
        home: host::link_address(&peer),
        name,
    };
    Ok((out, reader, peer))
}

/// A link over a stream whose handshake is done: `out` holds what is
/// still to be written of it, `reader` what was read past it.
fn open_stream(
    channel: Arc<dyn Channel>,
    out: Outgoing,
    reader: FrameReader,
    options: &LinkOptions,
    peer: PeerInfo,
) -> Arc<Link> {
    let wire = Wire::Stream {
        channel,
        out: Mutex::new(Outbox::with(out)),
    };
    open(
        wire,
        ReadState::Stream(reader),
        Format::Farcall,
        options,
        peer,
    )
}

/// A link this process opened: its requests run on this process's link
/// host (chain, else pool); `format` unless the options force another.
fn open(
    wire: Wire,
    reader: ReadState,
    format: Format,
    options: &LinkOptions,
    peer: PeerInfo,
) -> Arc<Link> {
    Link::assemble(Parts {
        wire,
        reader,
        format: options.format.unwrap_or(format),
        timeout: options.timeout,
        host: Host::local(),
        executor: LocalExecutor::shared(),
        peer,
        heartbeat: options.heartbeat,
    })
}

/// Writes what `out` holds, waiting for room until `deadline`.
fn flush(channel: &dyn Channel, out: &mut Outgoing, deadline: Option<Instant>) -> Result<()> {
    match out.flush_blocking(channel, deadline) {
        Err(Error::Timeout(_)) => Err(Error::Timeout(CONNECT_TIMEOUT)),
        other => other,
    }
}

/// The client's side of the native handshake: both sides prove they hold
/// the key before any request.
fn client_handshake(
    channel: &dyn Channel,
    reader: &mut FrameReader,
    out: &mut Outgoing,
    address: &str,
    auth: &Auth,
) -> Result<Challenge> {
    let deadline = Some(Instant::now() + CONNECT_TIMEOUT);
    let hs = ClientHandshake::new(address, auth)?;
    out.push(
        Kind::Hello,
        Hello::Hello(*hs.nonce(), handshake::client_id()).to_frames(),
    );
    flush(channel, out, deadline)?;
    dialers_part(channel, reader, out, &hs, address, deadline)
}

/// The dialer's part once its hello is sent: reads the challenge, checks
/// the other side's proof and sends its own, reads the verdict. `address`
/// names the other side in errors.
fn dialers_part(
    channel: &dyn Channel,
    reader: &mut FrameReader,
    out: &mut Outgoing,
    hs: &ClientHandshake,
    address: &str,
    deadline: Option<Instant>,
) -> Result<Challenge> {
    let Hello::Challenge(challenge) = read_hello(reader, channel, deadline)? else {
        return Err(Error::Protocol("expected the server's challenge".into()));
    };
    let Some(proof) = hs.answer(&challenge)? else {
        return Ok(challenge);
    };
    out.push(Kind::Hello, Hello::Proof(proof).to_frames());
    flush(channel, out, deadline)?;
    match read_hello(reader, channel, deadline)? {
        Hello::Verdict(Ok(())) => Ok(challenge),
        Hello::Verdict(Err(why)) => Err(Error::exception(
            "PermissionError",
            format!("{address} refused us: {why}"),
        )),
        _ => Err(Error::Protocol("expected the server's verdict".into())),
    }
}

/// Reads one native hello message, waiting until `deadline`.
fn read_hello(
    reader: &mut FrameReader,
    channel: &dyn Channel,
    deadline: Option<Instant>,
) -> Result<Hello> {
    loop {
        match reader.next_message()? {
            Some((Kind::Hello, frames)) => return Hello::parse(&frames),
            // The server's goodbye: it is closing.
            Some((Kind::Reply, _)) => {
                return Err(Error::Disconnected(
                    "the server closed during the handshake".into(),
                ))
            }
            Some(_) => return Err(Error::Protocol("expected a handshake message".into())),
            None => {}
        }
        match reader.fill(channel)? {
            Fill::Data => {}
            Fill::Eof => {
                return Err(Error::Disconnected(
                    "the peer closed the connection during the handshake".into(),
                ))
            }
            Fill::WouldBlock => {
                let fd = channel
                    .read_fd()
                    .expect("a channel that would block has a descriptor");
                if !wait_serving(fd, deadline)? {
                    return Err(Error::Timeout(CONNECT_TIMEOUT));
                }
            }
        }
    }
}

/// Connects a DEALER and runs the handshake as ZeroMQ actions; picks the
/// format: farcall's own with farcall servers, msgpack with a pyacq
/// server (which only an explicit `Auth::Open` accepts).
fn dial_zmq(address: &str, endpoint: &str, options: &LinkOptions) -> Result<Arc<Link>> {
    let dealer = transport::zmq::connect_dealer(endpoint)?;
    let fd = transport::zmq::poll_fd(&dealer.socket)?;
    let monitor_fd = transport::zmq::poll_fd(&dealer.monitor)?;
    let deadline = Some(Instant::now() + CONNECT_TIMEOUT);
    let hs = ClientHandshake::new(address, &options.auth)?;
    let call = |action, opts: Value| zmq_call(&dealer, fd, address, action, opts, deadline);
    let (format, challenge) = match call(Action::Hello, command::Hello::opts(hs.nonce()))? {
        Ok(v) => (Format::Farcall, Some(handshake::challenge_from_value(&v)?)),
        // A pyacq server does not know the action.
        Err(_) if matches!(options.auth, Auth::Open) => (Format::Msgpack, None),
        Err(e) => {
            return Err(Error::exception(
                "PermissionError",
                format!(
                    "{address} did not authenticate (a pyacq server? connect with auth=False): {e}"
                ),
            ))
        }
    };
    if let Some(challenge) = &challenge {
        if let Some(proof) = hs.answer(challenge)? {
            if let Err(e) = call(Action::Auth, command::Auth::opts(&proof))? {
                return Err(Error::exception(
                    "PermissionError",
                    format!("{address} refused us: {e}"),
                ));
            }
        }
    }
    let home = challenge
        .as_ref()
        .map(|c| c.address.clone())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| address.to_string());
    let wire = Wire::Zmq {
        dealer: Mutex::new(dealer),
        fd,
        monitor_fd,
        dropped: AtomicBool::new(false),
    };
    let peer = PeerInfo {
        home,
        name: address.to_string(),
    };
    Ok(open(wire, ReadState::Zmq, format, options, peer))
}

/// One handshake request over ZeroMQ (msgpack, which every server reads),
/// waiting for its reply until `deadline`; a connection refused fails at
/// once.
fn zmq_call(
    dealer: &transport::zmq::Dealer,
    fd: RawFd,
    address: &str,
    action: Action,
    opts: Value,
    deadline: Option<Instant>,
) -> Result<Result<Value>> {
    let request = protocol::request_frames(
        0,
        action,
        ReturnType::Auto,
        Format::Msgpack,
        Opts::Value(&opts),
        &mut NoExport,
    )?;
    transport::zmq::send(&dealer.socket, &request)?;
    loop {
        while transport::zmq::readable(&dealer.socket)? {
            let Some(frames) = transport::zmq::try_recv(&dealer.socket)? else {
                break;
            };
            if let Reply::Return { req_id: 0, result } = Reply::parse(Format::Msgpack, &frames)? {
                return Ok(result);
            }
        }
        if transport::zmq::dropped(&dealer.monitor)? {
            return Err(Error::Disconnected(format!(
                "cannot connect to {address}: nobody answers there"
            )));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Disconnected(format!(
                "cannot connect to {address}: no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
        let slice = Instant::now() + ZMQ_SLICE;
        wait_serving(fd, Some(deadline.map_or(slice, |d| d.min(slice))))?;
    }
}

/// Waits until `fd` is readable or `deadline` passes (false), serving
/// this thread's server meanwhile: a client connecting to the server of
/// its own thread (`RPCServer.local_client()`) must not wait on itself.
pub fn wait_serving(fd: RawFd, deadline: Option<Instant>) -> Result<bool> {
    loop {
        let Some(service) = read::thread_service() else {
            return poll::wait_fd(fd, libc::POLLIN, deadline);
        };
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: service.poll_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if !service.has_work() && poll::poll_fds(&mut fds, deadline)? == 0 {
            return Ok(false);
        }
        if fds[0].revents != 0 {
            return Ok(true);
        }
        service.serve()?;
    }
}
