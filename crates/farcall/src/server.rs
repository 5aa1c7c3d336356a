//! The server: hosts objects and answers requests.
//!
//! A server binds one address and serves it from one thread: requests run
//! in that thread, in the order they arrive. `run_forever` serves until
//! closed; `run_lazy` registers the server with its thread so that a
//! client waiting in that thread keeps serving it, which makes
//! A -> B -> A calls complete.
//!
//! I/O is an epoll loop (mio) over the listening socket (or ZeroMQ
//! ROUTER), every native connection and a waker. The loop can be entered
//! again from inside a request (a nested wait), so no lock is held while a
//! request runs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::codec::{Exporter, Format};
use crate::error::{Error, Result};
use crate::handshake::{self, Auth, ClientId, Gate, Hello, PeerState};
use crate::object::{Kwargs, RemoteObject, ValueObject};
use crate::protocol::{self, Action, CallOpts, Frames, Request, ReturnType};
use crate::table::ObjectTable;
use crate::transport::stream::{self, FrameReader, Kind, Listener, Outgoing, Stream};
use crate::transport::{self, spin, Address};
use crate::value::{ObjectRef, ProxyRef, Value};

const WAKER: Token = Token(0);
const ENDPOINT: Token = Token(1);
const FIRST_CONN: usize = 2;

/// What the language hosting a server's objects provides: module
/// imports, and turning plain values into objects. The Python bindings
/// install one so that imports and `return_type="proxy"` give real Python
/// objects.
pub trait Runtime: Send + Sync {
    /// Returns the module (or any object standing for it) named `module`.
    fn import(&self, module: &str) -> Result<Value>;

    /// Hosts a plain value as an object, for results that must go by proxy.
    fn host_value(&self, value: Value) -> Result<ObjectRef> {
        Ok(ValueObject::new_ref(value))
    }
}

/// A callback the server runs every `interval` while it serves.
struct Timer {
    interval: Duration,
    due: Instant,
    callback: Box<dyn FnMut() + Send>,
}

/// Options for binding a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Largest message accepted from an admitted peer, in bytes.
    pub max_message: u64,
    /// How peers authenticate (default: with this process's key).
    pub auth: Auth,
    /// Allow [`Auth::Open`] on an address other hosts can reach. Without
    /// it, binding one unauthenticated is refused.
    pub allow_unauthenticated_public: bool,
    /// How long a peer may take to complete its handshake (default 10 s).
    pub handshake_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_message: stream::DEFAULT_MAX_MESSAGE,
            auth: Auth::ProcessKey,
            allow_unauthenticated_public: false,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Largest message a peer may send before it is admitted: handshakes are
/// small, and nobody unauthenticated gets to make us allocate more.
const HANDSHAKE_MAX_MESSAGE: u64 = 4096;
/// Most ZeroMQ peers kept mid-handshake; past it the oldest are forgotten
/// (they can start again), so strangers cannot grow the table.
const MAX_ZMQ_CHALLENGES: usize = 4096;
/// Replies queued for a client past which its requests are not read
/// until it reads (a client that never reads cannot grow our memory).
const MAX_QUEUED_REPLIES: usize = 64 << 20;

/// A handle to a server. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    address: String,
    objects: Mutex<ObjectTable>,
    names: Mutex<HashMap<String, Value>>,
    modules: Mutex<HashMap<String, Value>>,
    runtime: Mutex<Option<Arc<dyn Runtime>>>,
    timers: Mutex<Vec<Timer>>,
    io: Mutex<Io>,
    waker: Waker,
    poll_fd: RawFd,
    closed: AtomicBool,
    max_message: u64,
    /// True for a ZeroMQ endpoint (whose socket needs draining every poll).
    zmq: bool,
    /// Who may send requests.
    gate: Gate,
    handshake_timeout: Duration,
    /// ZeroMQ peers' handshake state, by routing id.
    zmq_admission: Mutex<HashMap<Bytes, PeerState>>,
    /// The last poll handled requests: the next may be close behind.
    recently_served: AtomicBool,
}

struct Io {
    poll: Poll,
    events: Events,
    endpoint: Option<Endpoint>,
    conns: HashMap<Token, Conn>,
    /// ZeroMQ peers seen, with their serializer, for disconnect notices.
    zmq_peers: HashMap<Bytes, Format>,
    /// Open connections per client process.
    clients: HashMap<ClientId, usize>,
    next_token: usize,
    /// Connections waiting for their socket to take queued replies.
    writing: usize,
}

enum Endpoint {
    Native(Listener),
    Zmq(transport::zmq::Router),
}

/// One native connection.
struct Conn {
    stream: Stream,
    reader: FrameReader,
    out: Outgoing,
    peer: PeerState,
    /// The client process, once its hello named it.
    client: Option<ClientId>,
    /// When the connection was accepted (for the handshake deadline).
    since: Instant,
    format: Format,
    wants_write: bool,
}

/// Who sent a request, so the reply goes back there.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Peer {
    Native(Token),
    Zmq(Bytes),
}

thread_local! {
    static CURRENT: RefCell<Option<Server>> = const { RefCell::new(None) };
}

impl Server {
    /// Binds `address` (see docs/transports.md for the syntax).
    pub fn bind(address: &str) -> Result<Server> {
        Self::bind_with(address, ServerOptions::default())
    }

    /// Binds `address` with explicit options.
    pub fn bind_with(address: &str, options: ServerOptions) -> Result<Server> {
        let parsed = Address::parse(address)?;
        let gate = Gate::new(&options.auth)?;
        if !gate.authenticates() {
            if !parsed.is_local() && !options.allow_unauthenticated_public {
                return Err(Error::exception(
                    "PermissionError",
                    format!(
                        "refusing to serve {address} without authentication: other hosts \
                         can reach it (allow_unauthenticated_public=True to insist)"
                    ),
                ));
            }
            log::warn!("serving {address} without authentication (auth=False)");
        }
        let poll = Poll::new()?;
        let (endpoint, bound) = match &parsed {
            Address::Zmq(ep) => {
                let (router, bound) = transport::zmq::bind_router(ep, options.max_message)?;
                let fd = transport::zmq::poll_fd(&router.socket)?;
                poll.registry()
                    .register(&mut SourceFd(&fd), ENDPOINT, Interest::READABLE)?;
                (Endpoint::Zmq(router), bound)
            }
            native => {
                let (listener, bound) = Listener::bind(native)?;
                poll.registry().register(
                    &mut SourceFd(&listener.as_raw_fd()),
                    ENDPOINT,
                    Interest::READABLE,
                )?;
                (Endpoint::Native(listener), bound.to_url())
            }
        };
        let waker = Waker::new(poll.registry(), WAKER)?;
        let poll_fd = poll.as_raw_fd();
        let io = Io {
            poll,
            events: Events::with_capacity(256),
            endpoint: Some(endpoint),
            conns: HashMap::new(),
            zmq_peers: HashMap::new(),
            clients: HashMap::new(),
            next_token: FIRST_CONN,
            writing: 0,
        };
        let shared = Arc::new(Shared {
            address: bound,
            objects: Mutex::new(ObjectTable::default()),
            names: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            runtime: Mutex::new(None),
            timers: Mutex::new(Vec::new()),
            io: Mutex::new(io),
            waker,
            poll_fd,
            closed: AtomicBool::new(false),
            max_message: options.max_message,
            zmq: parsed.is_zmq(),
            gate,
            handshake_timeout: options.handshake_timeout,
            zmq_admission: Mutex::new(HashMap::new()),
            recently_served: AtomicBool::new(false),
        });
        shared.gate.publish_key(&shared.address);
        // Peers that connect and never finish their handshake are dropped.
        let weak = Arc::downgrade(&shared);
        let sweep = (options.handshake_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        lock(&shared.timers).push(Timer {
            interval: sweep,
            due: Instant::now() + sweep,
            callback: Box::new(move || {
                if let Some(shared) = weak.upgrade() {
                    shared.drop_stale_handshakes();
                }
            }),
        });
        Ok(Server { shared }.publish_self())
    }

    /// The address clients connect to (a free port is filled in).
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// Publishes `value` under `name` (`client.get_item(name)` reads it).
    pub fn publish(&self, name: impl Into<String>, value: impl Into<Value>) {
        lock(&self.shared.names).insert(name.into(), value.into());
    }

    /// Reads a published name.
    pub fn published(&self, name: &str) -> Option<Value> {
        lock(&self.shared.names).get(name).cloned()
    }

    /// Makes `value` importable under `module` (for Rust servers).
    pub fn add_module(&self, module: impl Into<String>, value: impl Into<Value>) {
        lock(&self.shared.modules).insert(module.into(), value.into());
    }

    /// Installs the language runtime: module lookup for the `import`
    /// action and hosting of plain values (the Python bindings install one).
    pub fn set_runtime(&self, runtime: Arc<dyn Runtime>) {
        *lock(&self.shared.runtime) = Some(runtime);
    }

    /// Runs `callback` every `interval` in the serving thread, between
    /// requests, while the server runs (pyacq's `start_timer`).
    pub fn start_timer(&self, interval: Duration, callback: impl FnMut() + Send + 'static) {
        lock(&self.shared.timers).push(Timer {
            interval,
            due: Instant::now() + interval,
            callback: Box::new(callback),
        });
        let _ = self.shared.waker.wake();
    }

    /// A proxy reference to a local object, registered in the table.
    pub fn get_proxy(&self, obj: &ObjectRef) -> ProxyRef {
        self.shared.export_ref(obj, None)
    }

    /// The local object a proxy of this server refers to (its attribute
    /// path followed).
    pub fn unwrap_proxy(&self, proxy: &ProxyRef) -> Result<Value> {
        if proxy.rpc_addr != self.shared.address {
            return Err(Error::value_error(format!(
                "the proxy belongs to {}, not to this server ({})",
                proxy.rpc_addr, self.shared.address
            )));
        }
        self.shared.resolve_proxy(proxy)
    }

    /// Number of objects currently held for peers.
    pub fn object_count(&self) -> usize {
        lock(&self.shared.objects).len()
    }

    /// True until the server is closed.
    pub fn running(&self) -> bool {
        !self.shared.closed.load(Ordering::Acquire)
    }

    /// Closes the server: every client it has seen gets a disconnect
    /// notice, connections are dropped, the address is released.
    pub fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // If the serving thread is inside poll, it shuts down when woken;
        // otherwise nobody is serving and this thread does it.
        match self.shared.io.try_lock() {
            Ok(mut io) => self.shared.shut_down(&mut io, None),
            Err(_) => {
                let _ = self.shared.waker.wake();
            }
        }
    }

    /// Serves in this thread until the server is closed.
    pub fn run_forever(&self) -> Result<()> {
        self.run_lazy()?;
        while self.running() {
            self.poll_once(None)?;
        }
        Ok(())
    }

    /// Serves in this thread until closed or until `timeout` passes
    /// without a request; returns the number of requests handled.
    pub fn run_for(&self, timeout: Duration) -> Result<usize> {
        self.poll_once(Some(timeout))
    }

    /// Registers the server with this thread: clients waiting in this
    /// thread serve it while they wait. One server per thread.
    pub fn run_lazy(&self) -> Result<()> {
        CURRENT.with(|c| {
            let mut c = c.borrow_mut();
            match &*c {
                Some(s) if !Arc::ptr_eq(&s.shared, &self.shared) && s.running() => Err(
                    Error::key_error("a server is already registered in this thread"),
                ),
                _ => {
                    *c = Some(self.clone());
                    Ok(())
                }
            }
        })
    }

    /// The server registered with this thread, if any.
    pub fn current() -> Option<Server> {
        CURRENT.with(|c| c.borrow().clone().filter(Server::running))
    }

    /// The descriptor that becomes readable when the server has work
    /// (for callers that poll it together with other descriptors).
    pub fn poll_fd(&self) -> RawFd {
        self.shared.poll_fd
    }

    /// Handles whatever is ready, waiting up to `timeout` (`None`: until
    /// something happens). Returns the number of requests handled.
    pub fn poll_once(&self, timeout: Option<Duration>) -> Result<usize> {
        let shared = &self.shared;
        let mut handled = if shared.zmq { shared.service_zmq()? } else { 0 };
        if handled > 0 {
            return Ok(handled);
        }
        let timeout = shared.timer_bound(timeout);
        let ready: Vec<(Token, bool, bool)> = {
            let mut io = lock(&shared.io);
            if shared.closed.load(Ordering::Acquire) {
                shared.shut_down(&mut io, None);
                return Ok(0);
            }
            // Right after serving, the next request often comes within the
            // spin budget; waiting for it awake saves a wake-up (spin.rs).
            // Not while a reply waits for its client to read: that comes
            // at the reader's pace, and spinning would take its CPU.
            let budget = (shared.recently_served.load(Ordering::Relaxed) && io.writing == 0)
                .then(|| spin::budget(timeout.map(|t| Instant::now() + t)))
                .flatten();
            let Io { poll, events, .. } = &mut *io;
            let ready_now =
                || poll_events(poll, events, Some(Duration::ZERO)).map(|()| !events.is_empty());
            if !spin::until(budget, ready_now)? {
                poll_events(poll, events, timeout)?;
            }
            events
                .iter()
                .map(|e| {
                    let closed = e.is_read_closed() || e.is_error();
                    (e.token(), e.is_writable(), closed)
                })
                .collect()
        };
        for (token, writable, closed) in ready {
            handled += match token {
                WAKER => 0,
                ENDPOINT => shared.service_endpoint()?,
                conn if writable => {
                    shared.flush_conn(conn);
                    shared.service_conn(conn, closed)
                }
                conn => shared.service_conn(conn, closed),
            };
        }
        shared.run_due_timers();
        if shared.closed.load(Ordering::Acquire) {
            shared.shut_down(&mut lock(&shared.io), None);
        }
        shared.recently_served.store(handled > 0, Ordering::Relaxed);
        Ok(handled)
    }
}

/// One `epoll_wait`; an interrupted one reports no events.
fn poll_events(poll: &mut Poll, events: &mut Events, timeout: Option<Duration>) -> Result<()> {
    match poll.poll(events, timeout) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
            events.clear();
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(io) = self.io.get_mut() {
            if let Some(Endpoint::Zmq(router)) = &io.endpoint {
                let _ = router.socket.set_linger(0);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A request that panicked must not take the server down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---- timers -----------------------------------------------------------

impl Shared {
    /// Shortens a poll timeout so that it ends when the next timer is due.
    fn timer_bound(&self, timeout: Option<Duration>) -> Option<Duration> {
        let timers = lock(&self.timers);
        let Some(next) = timers.iter().map(|t| t.due).min() else {
            return timeout;
        };
        let until = next.saturating_duration_since(Instant::now());
        Some(timeout.map_or(until, |t| t.min(until)))
    }

    /// Runs the timers that are due. Callbacks run without the timer lock,
    /// so one may start another timer.
    fn run_due_timers(&self) {
        let now = Instant::now();
        let due: Vec<Timer> = {
            let mut timers = lock(&self.timers);
            if timers.iter().all(|t| t.due > now) {
                return;
            }
            let (due, waiting) = std::mem::take(&mut *timers)
                .into_iter()
                .partition(|t| t.due <= now);
            *timers = waiting;
            due
        };
        for mut timer in due {
            (timer.callback)();
            timer.due = now + timer.interval;
            lock(&self.timers).push(timer);
        }
    }
}

// ---- I/O --------------------------------------------------------------

impl Shared {
    /// Accepts new connections (native) or drains the ROUTER (ZeroMQ).
    fn service_endpoint(&self) -> Result<usize> {
        let mut io = lock(&self.io);
        let Some(Endpoint::Native(listener)) = &io.endpoint else {
            drop(io);
            return self.service_zmq();
        };
        let mut accepted = Vec::new();
        loop {
            match listener.accept() {
                Ok(Some(stream)) => accepted.push(stream),
                Ok(None) => break,
                Err(e) => {
                    log::warn!("accept failed on {}: {e}", self.address);
                    break;
                }
            }
        }
        for stream in accepted {
            let token = Token(io.next_token);
            io.next_token += 1;
            let fd = stream.as_raw_fd();
            if let Err(e) =
                io.poll
                    .registry()
                    .register(&mut SourceFd(&fd), token, Interest::READABLE)
            {
                log::warn!("cannot watch a new connection: {e}");
                continue;
            }
            let conn = Conn {
                stream,
                reader: FrameReader::new(HANDSHAKE_MAX_MESSAGE),
                out: Outgoing::default(),
                peer: PeerState::New,
                client: None,
                since: Instant::now(),
                format: Format::Farcall,
                wants_write: false,
            };
            io.conns.insert(token, conn);
        }
        Ok(0)
    }

    /// Handles every message waiting on the ZeroMQ socket.
    fn service_zmq(&self) -> Result<usize> {
        let mut handled = 0;
        loop {
            let frames = {
                let io = lock(&self.io);
                let Some(Endpoint::Zmq(transport::zmq::Router { socket, .. })) = &io.endpoint
                else {
                    return Ok(handled);
                };
                if !transport::zmq::readable(socket)? {
                    return Ok(handled);
                }
                match transport::zmq::try_recv(socket)? {
                    Some(f) => f,
                    None => return Ok(handled),
                }
            };
            let mut frames = frames.into_iter();
            let identity = frames.next().unwrap_or_default();
            self.handle(Peer::Zmq(identity), frames.collect());
            handled += 1;
        }
    }

    /// Reads and handles every complete message on one connection.
    /// `closed`: the peer hung up (its last bytes may still be unread).
    fn service_conn(&self, token: Token, closed: bool) -> usize {
        if let Some(conn) = lock(&self.io).conns.get_mut(&token) {
            conn.reader.mark_readable();
            if closed {
                conn.reader.mark_peer_closed();
            }
        }
        let mut handled = 0;
        loop {
            let message = {
                let mut io = lock(&self.io);
                let Some(conn) = io.conns.get_mut(&token) else {
                    return handled;
                };
                let admitted = conn.peer.admitted();
                if conn.out.queued_bytes() > MAX_QUEUED_REPLIES {
                    // The client is not reading its replies: read no more
                    // of its requests until the socket drains (a writable
                    // event brings us back here).
                    self.flush_queued(&mut io, token);
                    if io
                        .conns
                        .get(&token)
                        .is_none_or(|c| c.out.queued_bytes() > MAX_QUEUED_REPLIES)
                    {
                        return handled;
                    }
                }
                let conn = io.conns.get_mut(&token).expect("present");
                let next = read_message(conn);
                if let Ok(None) = next {
                    // Replies to a batch of requests go out in one write.
                    self.flush_queued(&mut io, token);
                }
                match next {
                    Ok(Some((kind, _))) if kind != Kind::Hello && !admitted => {
                        log::warn!(
                            "a message before the handshake on {}; dropping",
                            self.address
                        );
                        self.drop_conn(&mut io, token);
                        return handled;
                    }
                    Ok(Some(m)) => m,
                    Ok(None) => return handled,
                    Err(e) => {
                        if !matches!(e, Error::Disconnected(_)) {
                            log::warn!("dropping connection to {}: {e}", self.address);
                        }
                        self.drop_conn(&mut io, token);
                        return handled;
                    }
                }
            };
            match message {
                (Kind::Request, frames) => {
                    self.handle(Peer::Native(token), frames);
                    handled += 1;
                }
                (Kind::Hello, frames) => self.greet(token, frames),
                (Kind::Reply, _) => {
                    log::warn!("a client sent a reply to {}; dropping it", self.address);
                    self.drop_conn(&mut lock(&self.io), token);
                    return handled;
                }
            }
        }
    }

    /// The connection handshake (see `handshake`): the one place a
    /// connection is admitted before any request on it runs.
    fn greet(&self, token: Token, frames: Frames) {
        let mut guard = lock(&self.io);
        let io = &mut *guard;
        let Some(conn) = io.conns.get_mut(&token) else {
            return;
        };
        let step = match (Hello::parse(&frames), &conn.peer) {
            (Ok(Hello::Hello(nonce, client)), PeerState::New) => {
                conn.client = Some(client);
                *io.clients.entry(client).or_insert(0) += 1;
                self.gate
                    .challenge(&self.address, &nonce)
                    .map(|(challenge, state)| (Hello::Challenge(challenge), state))
            }
            (Ok(Hello::Proof(proof)), state @ PeerState::Challenged { .. }) => {
                if self.gate.admits(state, &proof) {
                    Ok((Hello::Verdict(Ok(())), PeerState::Admitted))
                } else {
                    Err(Error::exception("PermissionError", "wrong key"))
                }
            }
            (Ok(_), _) => Err(Error::Protocol("unexpected handshake message".into())),
            (Err(e), _) => Err(e),
        };
        let conn = io.conns.get_mut(&token).expect("present");
        match step {
            Ok((reply, state)) => {
                if state.admitted() {
                    conn.reader.set_max_message(self.max_message);
                }
                conn.peer = state;
                self.queue(io, token, Kind::Hello, reply.to_frames());
            }
            Err(e) => {
                log::warn!(
                    "handshake refused on {}: {e}; dropping connection",
                    self.address
                );
                let denied = Hello::Verdict(Err(e.to_string()));
                conn.out.push(Kind::Hello, denied.to_frames());
                let _ = conn.out.flush(conn.stream.as_raw_fd());
                self.drop_conn(io, token);
            }
        }
    }

    fn flush_conn(&self, token: Token) {
        let mut io = lock(&self.io);
        let Some(conn) = io.conns.get_mut(&token) else {
            return;
        };
        match conn.out.flush(conn.stream.as_raw_fd()) {
            Ok(true) if conn.wants_write => {
                conn.wants_write = false;
                let fd = conn.stream.as_raw_fd();
                io.writing -= 1;
                let _ =
                    io.poll
                        .registry()
                        .reregister(&mut SourceFd(&fd), token, Interest::READABLE);
            }
            Ok(_) => {}
            Err(_) => self.drop_conn(&mut io, token),
        }
    }

    /// Queues a message on a native connection and writes what it can;
    /// the rest goes out when the socket is writable. Never blocks, so a
    /// client that stops reading cannot stall the server.
    fn queue(&self, io: &mut Io, token: Token, kind: Kind, frames: Frames) {
        let Some(conn) = io.conns.get_mut(&token) else {
            return;
        };
        conn.out.push(kind, frames);
        self.flush_queued(io, token);
    }

    /// Writes what a connection has queued, as far as the socket takes it.
    fn flush_queued(&self, io: &mut Io, token: Token) {
        let Some(conn) = io.conns.get_mut(&token) else {
            return;
        };
        if conn.out.is_empty() {
            return;
        }
        let fd = conn.stream.as_raw_fd();
        match conn.out.flush(fd) {
            Ok(true) => {}
            Ok(false) if !conn.wants_write => {
                conn.wants_write = true;
                io.writing += 1;
                let _ = io.poll.registry().reregister(
                    &mut SourceFd(&fd),
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                );
            }
            Ok(false) => {}
            Err(_) => self.drop_conn(io, token),
        }
    }

    /// Records which serializer `peer` speaks (for its disconnect notice)
    /// and sends it `frames`, if any, under one lock.
    fn send(&self, peer: &Peer, format: Format, frames: Option<Frames>) {
        let mut io = lock(&self.io);
        match peer {
            // Written at the end of the batch being read (service_conn).
            Peer::Native(token) => {
                if let Some(conn) = io.conns.get_mut(token) {
                    conn.format = format;
                    if let Some(frames) = frames {
                        conn.out.push(Kind::Reply, frames);
                    }
                }
            }
            Peer::Zmq(identity) => {
                io.zmq_peers.insert(identity.clone(), format);
                let (Some(frames), Some(Endpoint::Zmq(router))) = (frames, &io.endpoint) else {
                    return;
                };
                let mut all = Vec::with_capacity(frames.len() + 1);
                all.push(identity.clone());
                all.extend(frames);
                if let Err(e) = transport::zmq::send(&router.socket, &all) {
                    log::warn!("reply to a ZeroMQ client of {} lost: {e}", self.address);
                }
            }
        }
    }

    /// Sends disconnect notices, drops connections, releases the address.
    fn shut_down(&self, io: &mut Io, except: Option<&Peer>) {
        let Some(endpoint) = io.endpoint.take() else {
            return;
        };
        match &endpoint {
            Endpoint::Zmq(router) => {
                for (identity, format) in io.zmq_peers.drain() {
                    if except == Some(&Peer::Zmq(identity.clone())) {
                        continue;
                    }
                    let mut frames = vec![identity];
                    frames.extend(protocol::disconnect_frames(format));
                    let _ = transport::zmq::send(&router.socket, &frames);
                }
            }
            Endpoint::Native(_) => {
                let tokens: Vec<Token> = io.conns.keys().copied().collect();
                for token in tokens {
                    if except != Some(&Peer::Native(token)) {
                        let format = io.conns[&token].format;
                        self.queue(io, token, Kind::Reply, protocol::disconnect_frames(format));
                    }
                }
            }
        }
        // Connections get their notice (best effort, never blocking), then
        // are closed; dropping the listener removes a Unix socket file.
        for (_, conn) in io.conns.drain() {
            let mut out = conn.out;
            let _ = out.flush(conn.stream.as_raw_fd());
            conn.stream.shutdown();
        }
        drop(endpoint);
        lock(&self.objects).clear();
    }
}

fn read_message(conn: &mut Conn) -> Result<Option<(Kind, Frames)>> {
    loop {
        if let Some(m) = conn.reader.next_message()? {
            return Ok(Some(m));
        }
        if conn.reader.drained() {
            return Ok(None);
        }
        match conn.reader.fill(conn.stream.as_raw_fd())? {
            stream::Fill::Data => continue,
            stream::Fill::WouldBlock => return Ok(None),
            stream::Fill::Eof => return Err(Error::Disconnected("peer closed".into())),
        }
    }
}

impl Shared {
    /// Closes a connection; when it was its client's last, what that
    /// client held is released.
    fn drop_conn(&self, io: &mut Io, token: Token) {
        let Some(conn) = io.conns.remove(&token) else {
            return;
        };
        let fd = conn.stream.as_raw_fd();
        let _ = io.poll.registry().deregister(&mut SourceFd(&fd));
        if conn.wants_write {
            io.writing -= 1;
        }
        let Some(client) = conn.client else {
            return;
        };
        let count = io.clients.entry(client).or_insert(1);
        *count -= 1;
        if *count == 0 {
            io.clients.remove(&client);
            let freed = lock(&self.objects).release_client(&client);
            if !freed.is_empty() {
                log::debug!(
                    "{}: released {} objects of a client that left",
                    self.address,
                    freed.len()
                );
            }
        }
    }

    /// Drops connections that have not finished their handshake in time
    /// (a peer that connects and says nothing holds nothing for long).
    fn drop_stale_handshakes(&self) {
        let mut io = lock(&self.io);
        let now = Instant::now();
        let stale: Vec<Token> = io
            .conns
            .iter()
            .filter(|(_, c)| !c.peer.admitted() && now - c.since > self.handshake_timeout)
            .map(|(t, _)| *t)
            .collect();
        for token in stale {
            log::warn!(
                "{}: a peer did not complete its handshake; dropping it",
                self.address
            );
            self.drop_conn(&mut io, token);
        }
    }
}

// ---- requests -----------------------------------------------------------

impl Shared {
    fn handle(&self, peer: Peer, frames: Frames) {
        let mut request = match Request::parse(frames) {
            Ok(r) => r,
            Err(bad) => {
                log::warn!("malformed request to {}: {}", self.address, bad.error);
                if let Some(req_id) = bad.req_id.filter(|id| *id >= 0) {
                    self.reply(&peer, Format::Msgpack, req_id, Err(bad.error));
                }
                return;
            }
        };
        // An unknown serializer is answered in msgpack, pyacq's default.
        let (format, result) = match request.format() {
            Ok(f) => (f, self.admit_and_run(&peer, &mut request, f)),
            Err(e) => (Format::Msgpack, Err(e)),
        };
        let closing = matches!(request.action(), Ok(Action::Close)) && result.is_ok();
        if request.wants_reply() {
            self.reply(&peer, format, request.req_id, result);
        } else {
            self.send(&peer, format, None);
            if let Err(e) = result {
                log::error!(
                    "one-way '{}' on {} failed: {e}",
                    String::from_utf8_lossy(&request.action),
                    self.address
                );
            }
        }
        if closing {
            self.closed.store(true, Ordering::Release);
            self.shut_down(&mut lock(&self.io), Some(&peer));
        }
    }

    fn reply(&self, peer: &Peer, format: Format, req_id: i64, result: Result<Value>) {
        let mut exporter = ServerExporter {
            shared: self,
            peer,
            holder: None,
        };
        let frames = protocol::reply_frames(format, req_id, result, &mut exporter)
            .or_else(|e| protocol::reply_frames(format, req_id, Err(e), &mut exporter));
        if let Err(e) = &frames {
            log::error!("cannot encode a reply on {}: {e}", self.address);
        }
        self.send(peer, format, frames.ok());
    }

    /// Runs a request if its peer is admitted; over ZeroMQ, the handshake
    /// actions admit peers (a native connection is admitted by `greet`).
    fn admit_and_run(&self, peer: &Peer, request: &mut Request, format: Format) -> Result<Value> {
        let Peer::Zmq(identity) = peer else {
            return self.run(request, format);
        };
        match request.action() {
            Ok(Action::Hello) => {
                let nonce = request.decode_opts(format).and_then(|opts| {
                    handshake::opts_bytes(&opts, "nonce").or_else(|e| {
                        // A pyacq-style hello with no nonce suits an open server.
                        if self.gate.authenticates() {
                            Err(e)
                        } else {
                            Ok(Bytes::new())
                        }
                    })
                })?;
                let (challenge, state) = self.gate.challenge(&self.address, &nonce)?;
                let mut admission = lock(&self.zmq_admission);
                if admission.len() >= MAX_ZMQ_CHALLENGES {
                    admission.retain(|_, s| s.admitted());
                }
                admission.insert(identity.clone(), state);
                Ok(handshake::challenge_value(&challenge))
            }
            Ok(Action::Auth) => {
                let proof = handshake::opts_bytes(&request.decode_opts(format)?, "proof")?;
                let mut admission = lock(&self.zmq_admission);
                let state = admission.get(identity).cloned().unwrap_or_default();
                if self.gate.admits(&state, &proof) {
                    admission.insert(identity.clone(), PeerState::Admitted);
                    Ok(Value::from("ok"))
                } else {
                    admission.remove(identity);
                    log::warn!("a ZeroMQ peer of {} failed to authenticate", self.address);
                    Err(Error::exception("PermissionError", "wrong key"))
                }
            }
            _ if self.gate.authenticates()
                && !lock(&self.zmq_admission)
                    .get(identity)
                    .is_some_and(PeerState::admitted) =>
            {
                Err(Error::exception(
                    "PermissionError",
                    "this server requires authentication: farcall clients do it when they \
                     connect; pyacq clients need a server started with auth=False",
                ))
            }
            _ => self.run(request, format),
        }
    }

    fn run(&self, request: &mut Request, format: Format) -> Result<Value> {
        let action = request.action()?;
        let return_type = request.return_type()?;
        let result = self.act(action, request, format)?;
        self.apply_return_type(result, return_type)
    }

    /// call_obj: arguments checked, proxies of ours among them resolved to
    /// their objects, then the call.
    fn call_obj(&self, opts: CallOpts) -> Result<Value> {
        let mut args = match opts.args {
            Value::List(v) | Value::Tuple(v) => v,
            Value::None => Vec::new(),
            other => {
                return Err(Error::type_error(format!(
                    "args must be a list, not {}",
                    other.kind()
                )))
            }
        };
        let mut kwargs = kwargs_of(opts.kwargs)?;
        args.iter_mut().try_for_each(|a| self.resolve_home(a))?;
        kwargs
            .iter_mut()
            .try_for_each(|(_, v)| self.resolve_home(v))?;
        self.call(opts.obj, args, kwargs)
    }

    /// Runs an action, each reading the options it needs: a `call_obj`'s
    /// entry by entry (the hot path), the others as a value.
    fn act(&self, action: Action, request: &mut Request, format: Format) -> Result<Value> {
        match action {
            Action::CallObj => self.call_obj(request.take_call_opts(format)?),
            Action::GetObj => {
                let mut obj = request.take_opts(format)?.take("obj").unwrap_or_default();
                self.resolve_home(&mut obj)?;
                Ok(obj)
            }
            Action::GetItem => {
                let name = str_opt(&request.take_opts(format)?, "name")?;
                self.lookup_name(&name)
            }
            Action::SetItem => {
                let mut opts = request.take_opts(format)?;
                let name = str_opt(&opts, "name")?;
                let mut obj = opts.take("obj").unwrap_or_default();
                self.resolve_home(&mut obj)?;
                lock(&self.names).insert(name, obj);
                Ok(Value::None)
            }
            Action::Delete => {
                let opts = request.take_opts(format)?;
                let id = |k| opts.get(k).and_then(Value::as_i64).map(|v| v as u64);
                let obj_id =
                    id("obj_id").ok_or_else(|| Error::type_error("delete needs obj_id"))?;
                let released = lock(&self.objects).release(obj_id, id("ref_id"))?;
                drop(released); // outside the lock: a finalizer may run
                Ok(Value::None)
            }
            Action::Import => {
                let module = str_opt(&request.take_opts(format)?, "module")?;
                self.import(&module)
            }
            // No options, but unreadable ones are still an error.
            Action::Ping => request.take_opts(format).map(|_| Value::from("pong")),
            Action::Close => request.take_opts(format).map(|_| Value::Bool(true)),
            Action::Hello | Action::Auth => request.take_opts(format).and_then(|_| {
                Err(Error::Protocol(
                    "handshake actions are for ZeroMQ peers; native connections say hello first"
                        .into(),
                ))
            }),
        }
    }

    /// call_obj: the target is a proxy of ours with an attribute path; the
    /// last attribute is called as a method, so no bound method is built.
    fn call(&self, target: Value, args: Vec<Value>, kwargs: Kwargs) -> Result<Value> {
        let Value::Proxy(proxy) = target else {
            return Err(Error::type_error(format!(
                "call_obj needs a proxy to an object of this server, got {}",
                target.kind()
            )));
        };
        if proxy.rpc_addr != self.address {
            return Err(Error::value_error(format!(
                "proxy belongs to {}, not to this server ({})",
                proxy.rpc_addr, self.address
            )));
        }
        let mut obj = self.object(proxy.obj_id)?;
        let Some((method, path)) = proxy.attributes.split_last() else {
            return obj.call(args, kwargs);
        };
        for attr in path {
            obj = obj.get_attr_object(attr)?;
        }
        obj.call_method(method, args, kwargs)
    }

    fn object(&self, obj_id: u64) -> Result<ObjectRef> {
        lock(&self.objects).get(obj_id).ok_or_else(|| {
            Error::key_error(format!(
                "Invalid proxy object ID {obj_id}. The object may have been released already."
            ))
        })
    }

    /// Replaces proxies of this server inside `value` by the objects they
    /// refer to (a proxy that comes home is unwrapped).
    fn resolve_home(&self, value: &mut Value) -> Result<()> {
        let mut failure = None;
        value.visit_proxies_mut(&mut |v| {
            if let Value::Proxy(p) = v {
                if p.rpc_addr == self.address {
                    match self.resolve_proxy(p) {
                        Ok(resolved) => *v = resolved,
                        Err(e) => failure = Some(e),
                    }
                }
            }
        });
        failure.map_or(Ok(()), Err)
    }

    fn resolve_proxy(&self, proxy: &ProxyRef) -> Result<Value> {
        let mut obj = self.object(proxy.obj_id)?;
        let Some((last, path)) = proxy.attributes.split_last() else {
            return Ok(Value::Object(obj));
        };
        for attr in path {
            obj = obj.get_attr_object(attr)?;
        }
        obj.get_attr(last)
    }

    fn lookup_name(&self, name: &str) -> Result<Value> {
        if let Some(v) = lock(&self.names).get(name) {
            return Ok(v.clone());
        }
        Err(Error::key_error(format!("'{name}'")))
    }

    fn import(&self, module: &str) -> Result<Value> {
        if let Some(v) = lock(&self.modules).get(module) {
            return Ok(v.clone());
        }
        let runtime = lock(&self.runtime).clone();
        match runtime {
            Some(r) => r.import(module),
            None => Err(Error::exception(
                "ModuleNotFoundError",
                format!("No module named '{module}'"),
            )),
        }
    }

    fn export_ref(&self, obj: &ObjectRef, holder: Option<ClientId>) -> ProxyRef {
        let (obj_id, ref_id) = lock(&self.objects).register(obj, holder);
        ProxyRef {
            rpc_addr: self.address.clone(),
            obj_id,
            ref_id,
            type_str: obj.type_str(),
            attributes: Vec::new(),
        }
    }
}

impl Shared {
    fn apply_return_type(&self, result: Value, return_type: ReturnType) -> Result<Value> {
        match (return_type, result) {
            (ReturnType::Value, Value::Object(o)) => o.to_value(),
            (ReturnType::Proxy, v @ (Value::Object(_) | Value::Proxy(_))) => Ok(v),
            (ReturnType::Proxy, v) => match lock(&self.runtime).clone() {
                Some(runtime) => runtime.host_value(v).map(Value::Object),
                None => Ok(Value::Object(ValueObject::new_ref(v))),
            },
            (_, v) => Ok(v),
        }
    }
}

fn str_opt(opts: &Value, key: &str) -> Result<String> {
    opts.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::type_error(format!("option '{key}' must be a string")))
}

fn kwargs_of(v: Value) -> Result<Kwargs> {
    match v {
        Value::None => Ok(Vec::new()),
        Value::Map(entries) => entries
            .into_iter()
            .map(|(k, v)| match k {
                Value::Str(k) => Ok((k, v)),
                other => Err(Error::type_error(format!(
                    "keywords must be strings, not {}",
                    other.kind()
                ))),
            })
            .collect(),
        other => Err(Error::type_error(format!(
            "kwargs must be a dict, not {}",
            other.kind()
        ))),
    }
}

/// Exports local objects met while encoding a reply, as held by the
/// client the reply goes to.
struct ServerExporter<'a> {
    shared: &'a Shared,
    peer: &'a Peer,
    /// The peer's client id, looked up at the first export.
    holder: Option<Option<ClientId>>,
}

impl Exporter for ServerExporter<'_> {
    fn export(&mut self, obj: &ObjectRef) -> Result<ProxyRef> {
        let holder = *self.holder.get_or_insert_with(|| match self.peer {
            Peer::Native(token) => lock(&self.shared.io)
                .conns
                .get(token)
                .and_then(|c| c.client),
            Peer::Zmq(_) => None,
        });
        Ok(self.shared.export_ref(obj, holder))
    }
}

/// Exports objects through whichever server this thread has, for clients
/// that pass local objects as arguments (and for encoding outside a call).
pub struct ThreadExporter;

impl Exporter for ThreadExporter {
    fn export(&mut self, obj: &ObjectRef) -> Result<ProxyRef> {
        match Server::current() {
            Some(server) => Ok(server.get_proxy(obj)),
            None => crate::codec::NoExport.export(obj),
        }
    }
}

/// The object published as `"self"`: the server, seen from a peer.
struct ServerObject {
    server: Weak<Shared>,
}

impl RemoteObject for ServerObject {
    fn type_str(&self) -> String {
        "<class 'farcall.RPCServer'>".into()
    }

    fn get_attr(&self, name: &str) -> Result<Value> {
        let shared = self
            .server
            .upgrade()
            .ok_or_else(|| Error::Disconnected("server closed".into()))?;
        match name {
            "address" => Ok(Value::from(shared.address.clone())),
            _ => Err(Error::attribute_error(format!(
                "'RPCServer' object has no attribute '{name}'"
            ))),
        }
    }

    fn call_method(&self, name: &str, _args: Vec<Value>, _kwargs: Kwargs) -> Result<Value> {
        let shared = self
            .server
            .upgrade()
            .ok_or_else(|| Error::Disconnected("server closed".into()))?;
        match name {
            "running" => Ok(Value::Bool(!shared.closed.load(Ordering::Acquire))),
            "object_count" => Ok(Value::from(lock(&shared.objects).len())),
            _ => Err(Error::attribute_error(format!(
                "'RPCServer' object has no method '{name}'"
            ))),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Server {
    /// Publishes the server itself as `"self"` (done by `bind`).
    fn publish_self(self) -> Self {
        let me: ObjectRef = Arc::new(ServerObject {
            server: Arc::downgrade(&self.shared),
        });
        self.publish("self", me);
        self
    }
}
