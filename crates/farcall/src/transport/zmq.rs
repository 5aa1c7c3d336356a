//! The ZeroMQ transport: ROUTER on the server, one DEALER per client.
//!
//! This is pyacq's transport, kept for pyacq peers and for users who ask
//! for ZeroMQ endpoints. Sockets are polled through their `ZMQ_FD`, which
//! signals edges, not levels: after any send or receive the socket must
//! be looked at again (a receive that finds nothing will do, and costs
//! one system call; `ZMQ_EVENTS` costs one per query) before sleeping on
//! the descriptor.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::protocol::Frames;
use crate::sync::lock;

/// The process-wide ZeroMQ context (never terminated: terminating it
/// blocks on unsent messages, and a process must be able to exit).
pub fn context() -> &'static zmq::Context {
    static CONTEXT: OnceLock<zmq::Context> = OnceLock::new();
    CONTEXT.get_or_init(zmq::Context::new)
}

/// A bound ROUTER socket, with the context it lives in.
///
/// `tcp://` and `ipc://` servers get a context of their own: dropping the
/// router then terminates it, which waits (up to the linger time) until
/// the last replies and disconnect notices are on the wire. Without that,
/// a server process that exits right after `close` could lose its answer
/// to the client that asked. `inproc://` endpoints must share the process
/// context, so they get no such guarantee at process exit.
pub struct Router {
    /// The socket (dropped before the context, by field order).
    pub socket: zmq::Socket,
    _own_context: Option<zmq::Context>,
}

/// Binds a ROUTER socket; returns it with the endpoint it really got.
pub fn bind_router(endpoint: &str, max_message: u64) -> Result<(Router, String)> {
    let own_context = (!endpoint.starts_with("inproc://")).then(zmq::Context::new);
    let socket = own_context
        .as_ref()
        .unwrap_or(context())
        .socket(zmq::ROUTER)?;
    // Let queued replies and notices out after close, but never hold the
    // process for long.
    socket.set_linger(1000)?;
    // A ROUTER drops (silently) what it cannot queue for a peer past the
    // high-water mark: a client with more than 1000 calls in flight would
    // lose replies. Replies are never dropped; a client's own number of
    // calls in flight bounds the queue.
    socket.set_sndhwm(0)?;
    socket.set_heartbeat_ivl(HEARTBEAT_IVL_MS)?;
    socket.set_heartbeat_timeout(HEARTBEAT_TIMEOUT_MS)?;
    // libzmq drops a peer that sends more, before we ever see the bytes.
    socket.set_maxmsgsize(i64::try_from(max_message).unwrap_or(i64::MAX))?;
    socket.bind(endpoint)?;
    let bound = socket
        .get_last_endpoint()?
        .unwrap_or_else(|raw| String::from_utf8_lossy(&raw).into_owned());
    let router = Router {
        socket,
        _own_context: own_context,
    };
    Ok((router, bound))
}

/// Longest a DEALER's send waits for room in its queue (ms).
pub const SEND_TIMEOUT_MS: i32 = 10_000;
/// libzmq pings a silent peer this often (ms) ...
const HEARTBEAT_IVL_MS: i32 = 1000;
/// ... and drops the connection when no answer comes within this (ms).
const HEARTBEAT_TIMEOUT_MS: i32 = 5000;

/// A DEALER socket connected to a server, and a monitor that reports when
/// the connection drops (the server closed or died, or stopped answering
/// heartbeats): libzmq would otherwise reconnect silently and leave calls
/// waiting for their timeout.
pub struct Dealer {
    /// The socket requests and replies go through.
    pub socket: zmq::Socket,
    /// Receives libzmq's `DISCONNECTED` events for `socket`.
    pub monitor: zmq::Socket,
}

/// Connects a DEALER socket to `endpoint`.
pub fn connect_dealer(endpoint: &str) -> Result<Dealer> {
    static NEXT_MONITOR: AtomicU64 = AtomicU64::new(0);
    let socket = context().socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    socket.set_rcvhwm(0)?;
    socket.set_heartbeat_ivl(HEARTBEAT_IVL_MS)?;
    socket.set_heartbeat_timeout(HEARTBEAT_TIMEOUT_MS)?;
    // A random routing id: the server admits a peer by it after the
    // handshake, so it must not be guessable (libzmq's own are sequential).
    // Printable, because pyacq's server decodes it as UTF-8 to log it (and
    // it starts with a letter: ids starting with a zero byte are libzmq's).
    let id = format!(
        "farcall-{}",
        crate::auth::encode_hex(&crate::auth::random::<16>()?)
    );
    socket.set_identity(id.as_bytes())?;
    let monitor_endpoint = format!(
        "inproc://farcall-monitor-{}-{}",
        std::process::id(),
        NEXT_MONITOR.fetch_add(1, Ordering::Relaxed)
    );
    // A dropped connection, and a connection attempt that failed (nobody
    // listens there): either way the server cannot be reached.
    let events = zmq::SocketEvent::DISCONNECTED as i32 | zmq::SocketEvent::CONNECT_RETRIED as i32;
    socket.monitor(&monitor_endpoint, events)?;
    let monitor = context().socket(zmq::PAIR)?;
    monitor.set_linger(0)?;
    // libzmq's I/O thread blocks when a monitor's queue is full; events
    // are rare and tiny, so let the queue grow instead.
    monitor.set_rcvhwm(0)?;
    monitor.connect(&monitor_endpoint)?;
    socket.connect(endpoint)?;
    Ok(Dealer { socket, monitor })
}

impl Drop for Dealer {
    fn drop(&mut self) {
        // Stop monitoring before the sockets close: closing is finished
        // by libzmq's I/O thread later, and an event it then sent to our
        // closed monitor socket would block that thread (and with it
        // every ZeroMQ socket of the process) for good.
        // SAFETY: the socket is open (it closes after this, as a field).
        unsafe {
            zmq_sys::zmq_socket_monitor(self.socket.as_mut_ptr(), std::ptr::null(), 0);
        }
    }
}

/// True when the monitor has reported that the connection dropped or
/// could not be made (reads the events waiting, never blocks).
pub fn dropped(monitor: &zmq::Socket) -> Result<bool> {
    let mut dropped = false;
    while readable(monitor)? {
        let Some(event) = try_recv(monitor)? else {
            break;
        };
        // Frame 0: u16 event id, u32 value (little-endian); frame 1: endpoint.
        let id = event
            .first()
            .filter(|f| f.len() >= 2)
            .map(|f| u16::from_le_bytes([f[0], f[1]]));
        dropped |= id == Some(zmq::SocketEvent::DISCONNECTED as u16)
            || id == Some(zmq::SocketEvent::CONNECT_RETRIED as u16);
    }
    Ok(dropped)
}

/// The descriptor to poll for a socket's readiness.
pub fn poll_fd(socket: &zmq::Socket) -> Result<RawFd> {
    Ok(socket.get_fd()?)
}

/// True when the socket has a message to read now.
pub fn readable(socket: &zmq::Socket) -> Result<bool> {
    Ok(socket.get_events()?.contains(zmq::POLLIN))
}

/// Receives one multipart message without waiting; `None` when there is
/// nothing to read.
pub fn try_recv(socket: &zmq::Socket) -> Result<Option<Frames>> {
    match socket.recv_multipart(zmq::DONTWAIT) {
        Ok(parts) => Ok(Some(parts.into_iter().map(Bytes::from).collect())),
        Err(zmq::Error::EAGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sends a multipart message without waiting (a full queue drops it and
/// reports `EAGAIN`).
pub fn send(socket: &zmq::Socket, frames: &[Bytes]) -> Result<()> {
    let last = frames.len().saturating_sub(1);
    for (i, frame) in frames.iter().enumerate() {
        let flags = if i < last { zmq::SNDMORE } else { 0 } | zmq::DONTWAIT;
        socket.send(&frame[..], flags)?;
    }
    Ok(())
}

/// What [`send_waiting`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The message is queued.
    Queued,
    /// `gone` said the peer is lost while there was no room.
    PeerGone,
    /// No room came within [`SEND_TIMEOUT_MS`].
    TimedOut,
}

/// Sends a multipart message on the DEALER in `dealer`, waiting for room
/// (a DEALER has none while its peer is disconnected) up to
/// [`SEND_TIMEOUT_MS`]. The lock is never held while waiting, so whoever
/// reads the socket or its monitor goes on meanwhile; between tries
/// `gone()` says whether the peer is known to be lost.
pub fn send_waiting(
    dealer: &Mutex<Dealer>,
    frames: &[Bytes],
    gone: impl Fn() -> bool,
) -> Result<Sent> {
    let give_up = Instant::now() + Duration::from_millis(SEND_TIMEOUT_MS as u64);
    let mut pause = Duration::from_micros(20);
    loop {
        match send(&lock(dealer).socket, frames) {
            Ok(()) => return Ok(Sent::Queued),
            // A message refused at a later part was rolled back whole by
            // libzmq: the next try sends it from its first part.
            Err(Error::Zmq(zmq::Error::EAGAIN)) => {}
            Err(e) => return Err(e),
        }
        if gone() {
            return Ok(Sent::PeerGone);
        }
        let now = Instant::now();
        if now >= give_up {
            return Ok(Sent::TimedOut);
        }
        std::thread::sleep(pause.min(give_up - now));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// A DEALER without a peer has no room: the send waits without holding
    /// the socket, and stops as soon as the peer is known lost.
    #[test]
    fn a_send_without_room_waits_unlocked_and_stops_when_the_peer_is_gone() {
        // A port nobody listens on, and no queue before a connection: the
        // DEALER has no room, as when its queue to a peer is full.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("tcp://{}", free.local_addr().unwrap());
        drop(free);
        let socket = context().socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        socket.set_immediate(true).unwrap();
        socket.connect(&endpoint).unwrap();
        let monitor = context().socket(zmq::PAIR).unwrap();
        let dealer = Arc::new(Mutex::new(Dealer { socket, monitor }));
        let gone = Arc::new(AtomicBool::new(false));
        let locked_meanwhile = {
            let (dealer, gone) = (dealer.clone(), gone.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                // The monitor's reader gets the socket while the send waits.
                let started = Instant::now();
                drop(lock(&dealer));
                gone.store(true, Ordering::SeqCst);
                started.elapsed()
            })
        };
        let started = Instant::now();
        let sent = send_waiting(&dealer, &[Bytes::from_static(b"x")], || {
            gone.load(Ordering::SeqCst)
        })
        .unwrap();
        assert_eq!(sent, Sent::PeerGone);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(locked_meanwhile.join().unwrap() < Duration::from_millis(100));
    }
}
