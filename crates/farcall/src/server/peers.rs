//! A listener for symmetric peers (across's socket servers): every
//! connection it admits, after the key handshake, becomes a peer link of
//! this process like one it opened itself: its requests run in the thread
//! that waits in their call chain, else on the pool, on the process's link
//! host. What the links are for is the caller's business.
//!
//! Connections are accepted by a thread of the listener; each handshake
//! runs in a thread of its own, bounded by [`HANDSHAKE_TIMEOUT`], so a slow
//! or silent client delays nobody else, and at most [`MAX_HANDSHAKES`] run
//! at once (more connections are dropped).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::listener::{Admission, Pending, Step};
use crate::channel::frame::DEFAULT_MAX_MESSAGE;
use crate::channel::poll;
use crate::channel::FdChannel;
use crate::error::{Error, Result};
use crate::handshake::{Auth, Gate};
use crate::host::Host;
use crate::peer::{Heartbeat, Link, LocalExecutor};
use crate::sync::lock;
use crate::transport::{stream::Listener, Address};

/// How long a connection may take to prove it holds the key.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes running at once.
pub const MAX_HANDSHAKES: usize = 64;
/// How often the accepting thread looks whether the listener was closed.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Accepts symmetric peer links on a native address.
pub struct PeerListener {
    address: String,
    admitted: Mutex<Receiver<Arc<Link>>>,
    stop: Arc<AtomicBool>,
}

impl PeerListener {
    /// Binds `address` (`unix://PATH`, `tcp+native://HOST:PORT`, a port of
    /// `*` picks a free one); peers must hold the key `auth` names.
    pub fn bind(address: &str, auth: &Auth) -> Result<PeerListener> {
        let parsed = Address::parse(address)?;
        if parsed.is_zmq() {
            return Err(Error::Address(
                address.to_string(),
                "peer links need a native address (unix:// or tcp+native://)".into(),
            ));
        }
        if matches!(auth, Auth::Open) && !parsed.is_local() {
            // Peers of a listener unpickle what they are sent: anyone who
            // reaches an open one runs code in this process.
            return Err(Error::Address(
                address.to_string(),
                "a listener without authentication must be on a loopback or Unix address".into(),
            ));
        }
        let gate = Arc::new(Gate::new(auth)?);
        let (listener, bound) = Listener::bind(&parsed)?;
        let bound = bound.to_url();
        let (tx, rx) = mpsc::sync_channel(MAX_HANDSHAKES);
        let stop = Arc::new(AtomicBool::new(false));
        let accepting = Accepting {
            listener,
            gate,
            address: bound.clone(),
            admitted: tx,
            stop: stop.clone(),
            handshakes: Arc::new(AtomicUsize::new(0)),
        };
        std::thread::Builder::new()
            .name("farcall-accept".into())
            .spawn(move || accepting.run())?;
        Ok(PeerListener {
            address: bound,
            admitted: Mutex::new(rx),
            stop,
        })
    }

    /// The address peers connect to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The next admitted link, waiting until `deadline` (`None`: no limit);
    /// `Ok(None)` when it passes. Fails once the listener is closed.
    pub fn accept(&self, deadline: Option<Instant>) -> Result<Option<Arc<Link>>> {
        let admitted = lock(&self.admitted);
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(Error::Disconnected(format!("{} is closed", self.address)));
            }
            let slice = Instant::now() + STOP_CHECK;
            let until = deadline.map_or(slice, |d| d.min(slice));
            match admitted.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(link) => return Ok(Some(link)),
                Err(RecvTimeoutError::Timeout) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Disconnected(format!("{} stopped", self.address)))
                }
            }
        }
    }

    /// Stops accepting (links already admitted go on).
    pub fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for PeerListener {
    fn drop(&mut self) {
        self.close();
    }
}

/// The accepting thread's state.
struct Accepting {
    listener: Listener,
    gate: Arc<Gate>,
    address: String,
    admitted: SyncSender<Arc<Link>>,
    stop: Arc<AtomicBool>,
    handshakes: Arc<AtomicUsize>,
}

impl Accepting {
    fn run(self) {
        let fd = self.listener.as_raw_fd();
        while !self.stop.load(Ordering::SeqCst) {
            let deadline = Some(Instant::now() + STOP_CHECK);
            if !matches!(poll::wait_fd(fd, libc::POLLIN, deadline), Ok(true)) {
                continue;
            }
            loop {
                match self.listener.accept() {
                    Ok(Some(channel)) => self.admit(channel),
                    Ok(None) => break,
                    Err(e) => {
                        log::warn!("{}: accept failed: {e}", self.address);
                        std::thread::sleep(STOP_CHECK);
                        break;
                    }
                }
            }
        }
        // Dropping the listener removes a Unix socket's path.
    }

    /// Runs the handshake of a new connection in a thread of its own.
    fn admit(&self, channel: FdChannel) {
        if self.handshakes.fetch_add(1, Ordering::SeqCst) >= MAX_HANDSHAKES {
            self.handshakes.fetch_sub(1, Ordering::SeqCst);
            log::warn!(
                "{}: too many handshakes at once; dropping a connection",
                self.address
            );
            return;
        }
        let gate = self.gate.clone();
        let address = self.address.clone();
        let admitted = self.admitted.clone();
        let stop = self.stop.clone();
        let handshakes = self.handshakes.clone();
        let spawned = std::thread::Builder::new()
            .name("farcall-handshake".into())
            .spawn(move || {
                if let Some(link) = handshake(channel, &gate, &address) {
                    if stop.load(Ordering::SeqCst) || admitted.send(link.clone()).is_err() {
                        link.close("the listener closed");
                    }
                }
                handshakes.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.handshakes.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The server's side of the key handshake on one connection: the link
/// once admitted, `None` when refused, silent too long, or gone.
fn handshake(channel: FdChannel, gate: &Gate, address: &str) -> Option<Arc<Link>> {
    let host = Host::local();
    let admission = Admission {
        gate,
        address,
        max_message: DEFAULT_MAX_MESSAGE,
        host: &host,
        executor: LocalExecutor::shared(),
        heartbeat: Heartbeat::default(),
    };
    let deadline = Some(Instant::now() + HANDSHAKE_TIMEOUT);
    let mut pending = Box::new(Pending::new(channel));
    loop {
        match pending.advance(&admission) {
            Step::Admitted(link) => return Some(link),
            Step::Dropped => return None,
            Step::Pending(p) => {
                if !matches!(poll::wait_fd(p.fd(), libc::POLLIN, deadline), Ok(true)) {
                    log::warn!("{address}: a connection did not finish its handshake in time");
                    return None;
                }
                pending = p;
            }
        }
    }
}
