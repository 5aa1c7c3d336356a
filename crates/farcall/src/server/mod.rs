//! The server: a listener that accepts peer links on an address and runs
//! their requests in its thread, in the order they arrive.
//!
//! `run_forever` serves until closed; `run_lazy` registers the server with
//! its thread so that a caller waiting in that thread keeps serving it,
//! which makes A -> B -> A calls complete. The objects live in the
//! server's [`Host`]; the links are [`crate::peer::Link`]s (symmetric: the
//! server may call back over them); ZeroMQ peers come through one ROUTER.
//!
//! - `listener`: native connections, from accept to admission.
//! - `zmq`: the ROUTER side (pyacq's transport).
//! - `queue`: the requests waiting for the server's thread.
//!
//! I/O is an epoll loop (mio) over the listening socket (or the ROUTER),
//! every link and a waker. The loop can be entered again from inside a
//! request (a nested wait), so no lock is held while a request runs.

mod listener;
pub mod peers;
mod queue;
mod timers;
mod zmq;

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::channel::frame::DEFAULT_MAX_MESSAGE;
use crate::error::{Error, Result};
use crate::handshake::{Auth, Gate};
use crate::host::Host;
use crate::object::{Kwargs, RemoteObject};
use crate::peer::{self, Heartbeat, Link, Service};
use crate::protocol;
use crate::sync::lock;
use crate::transport::stream::Listener;
use crate::transport::{self, spin, Address};
use crate::value::{ObjectRef, ProxyRef, Value};

pub use crate::host::Runtime;

use listener::{Admission, Pending, Step};
use queue::{Queue, ServerJob};

/// The tokens one poll found ready: a few, mostly one (kept inline, so a
/// poll costs no allocation for them).
type Ready = smallvec::SmallVec<[Token; 8]>;
use timers::Timers;

const WAKER: Token = Token(0);
const ENDPOINT: Token = Token(1);
const FIRST_CONN: usize = 2;

/// A callback the server runs every `interval` while it serves.
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
    /// Dead-peer detection on the server's native links.
    pub heartbeat: Heartbeat,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_message: DEFAULT_MAX_MESSAGE,
            auth: Auth::ProcessKey,
            allow_unauthenticated_public: false,
            handshake_timeout: Duration::from_secs(10),
            heartbeat: Heartbeat::default(),
        }
    }
}

/// A handle to a server. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    address: String,
    host: Arc<Host>,
    queue: Arc<Queue>,
    timers: Timers,
    io: Mutex<Io>,
    waker: Arc<Waker>,
    poll_fd: RawFd,
    closed: AtomicBool,
    max_message: u64,
    heartbeat: Heartbeat,
    /// True for a ZeroMQ endpoint (whose socket needs draining every poll).
    zmq: bool,
    /// Who may send requests.
    gate: Gate,
    handshake_timeout: Duration,
    /// ZeroMQ peers' handshake state.
    admissions: zmq::Admissions,
    /// The last poll handled requests: the next may be close behind.
    recently_served: AtomicBool,
}

struct Io {
    poll: Poll,
    events: Events,
    endpoint: Option<Endpoint>,
    conns: HashMap<Token, Conn>,
    /// Connections polled for room to write too: a reply too large for
    /// the socket goes out from this thread as the peer reads, not from
    /// the I/O thread (a wake-up of another thread per socketful).
    writing: Vec<Token>,
    next_token: usize,
}

enum Endpoint {
    Native(Listener),
    Zmq(zmq::Endpoint),
}

/// A native connection: in its handshake, or a link.
enum Conn {
    Pending(Box<Pending>),
    Open(Arc<Link>),
}

/// Who sent a request, so that the reply goes back there.
#[derive(Clone)]
enum Origin {
    Link(Arc<Link>),
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
                (Endpoint::Zmq(zmq::Endpoint::new(router)), bound)
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
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let poll_fd = poll.as_raw_fd();
        let io = Io {
            poll,
            events: Events::with_capacity(256),
            endpoint: Some(endpoint),
            conns: HashMap::new(),
            writing: Vec::new(),
            next_token: FIRST_CONN,
        };
        let shared = Arc::new(Shared {
            host: Host::new(bound.clone()),
            address: bound,
            queue: Queue::new(waker.clone()),
            timers: Timers::default(),
            io: Mutex::new(io),
            waker,
            poll_fd,
            closed: AtomicBool::new(false),
            max_message: options.max_message,
            heartbeat: options.heartbeat,
            zmq: parsed.is_zmq(),
            gate,
            handshake_timeout: options.handshake_timeout,
            admissions: zmq::Admissions::default(),
            recently_served: AtomicBool::new(false),
        });
        shared.gate.publish_key(&shared.address);
        // Peers that connect and never finish their handshake are dropped.
        let weak = Arc::downgrade(&shared);
        let sweep = (options.handshake_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        shared.timers.add(
            sweep,
            Box::new(move || {
                if let Some(shared) = weak.upgrade() {
                    shared.drop_stale_handshakes();
                }
            }),
        );
        let server = Server { shared };
        let me: ObjectRef = Arc::new(ServerObject {
            server: Arc::downgrade(&server.shared),
        });
        server.publish("self", me);
        Ok(server)
    }

    /// The address clients connect to (a free port is filled in).
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// The host of the server's objects.
    pub fn host(&self) -> &Arc<Host> {
        &self.shared.host
    }

    /// Publishes `value` under `name` (`client.get_item(name)` reads it).
    pub fn publish(&self, name: impl Into<String>, value: impl Into<Value>) {
        self.shared.host.publish(name, value);
    }

    /// Reads a published name.
    pub fn published(&self, name: &str) -> Option<Value> {
        self.shared.host.published(name)
    }

    /// Makes `value` importable under `module` (for Rust servers).
    pub fn add_module(&self, module: impl Into<String>, value: impl Into<Value>) {
        self.shared.host.add_module(module, value);
    }

    /// Installs the language runtime: module lookup for the `import`
    /// action and hosting of plain values (the Python bindings install one).
    pub fn set_runtime(&self, runtime: Arc<dyn Runtime>) {
        self.shared.host.set_runtime(runtime);
    }

    /// Runs `callback` every `interval` in the serving thread, between
    /// requests, while the server runs (pyacq's `start_timer`).
    pub fn start_timer(&self, interval: Duration, callback: impl FnMut() + Send + 'static) {
        self.shared.timers.add(interval, Box::new(callback));
        let _ = self.shared.waker.wake();
    }

    /// A proxy reference to a local object, registered in the table.
    pub fn get_proxy(&self, obj: &ObjectRef) -> ProxyRef {
        self.shared.host.export(obj, None)
    }

    /// The local object a proxy of this server refers to (its attribute
    /// path followed).
    pub fn unwrap_proxy(&self, proxy: &ProxyRef) -> Result<Value> {
        self.shared.host.unwrap_proxy(proxy)
    }

    /// Number of objects currently held for peers.
    pub fn object_count(&self) -> usize {
        self.shared.host.object_count()
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

    /// Registers the server with this thread: callers waiting in this
    /// thread serve it while they wait, and objects this thread sends are
    /// served by it. One server per thread.
    pub fn run_lazy(&self) -> Result<()> {
        CURRENT.with(|c| {
            let mut c = c.borrow_mut();
            match &*c {
                Some(s) if !Arc::ptr_eq(&s.shared, &self.shared) && s.running() => Err(
                    Error::key_error("a server is already registered in this thread"),
                ),
                _ => {
                    *c = Some(self.clone());
                    peer::set_thread_service(Some(Arc::new(self.clone())));
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
    /// (for callers that poll it together with other descriptors, such as
    /// a GUI event loop's socket notifier); on readable, call
    /// [`serve_ready`](Server::serve_ready) in the serving thread.
    pub fn poll_fd(&self) -> RawFd {
        self.shared.poll_fd
    }

    /// Serves everything ready now, without waiting, for an event loop
    /// woken by [`poll_fd`](Server::poll_fd). Returns after at most
    /// `budget` of serving so that the loop's other events are not
    /// starved; work left over keeps the descriptor readable, so the loop
    /// comes back. Returns the number of requests handled.
    pub fn serve_ready(&self, budget: Duration) -> Result<usize> {
        let start = Instant::now();
        let mut handled = 0;
        loop {
            let n = self.poll_once(Some(Duration::ZERO))?;
            handled += n;
            let more = self.running() && Service::has_work(self);
            if !more {
                return Ok(handled);
            }
            if start.elapsed() >= budget {
                // Edge-triggered: nothing new may arrive to make the
                // descriptor readable again, so say it ourselves.
                let _ = self.shared.waker.wake();
                return Ok(handled);
            }
        }
    }

    /// Handles whatever is ready, waiting up to `timeout` (`None`: until
    /// something happens). Returns the number of requests handled.
    pub fn poll_once(&self, timeout: Option<Duration>) -> Result<usize> {
        let shared = &self.shared;
        let _serving = shared.queue.serving();
        let mut handled = shared.run_queue();
        if shared.zmq {
            shared.service_zmq()?;
            handled += shared.run_queue();
        }
        if handled > 0 {
            shared.recently_served.store(true, Ordering::Relaxed);
            shared.after_poll();
            return Ok(handled);
        }
        let timeout = shared.timers.bound(timeout);
        let ready: Ready = {
            let mut io = lock(&shared.io);
            if shared.closed.load(Ordering::Acquire) {
                shared.shut_down(&mut io, None);
                return Ok(0);
            }
            // Right after serving, the next request often comes within the
            // spin budget; waiting for it awake saves a wake-up (spin.rs).
            let budget = shared
                .recently_served
                .load(Ordering::Relaxed)
                .then(|| spin::budget(timeout.map(|t| Instant::now() + t)))
                .flatten();
            shared.queue.set_polling(true);
            let Io { poll, events, .. } = &mut *io;
            let ready_now =
                || poll_events(poll, events, Some(Duration::ZERO)).map(|()| !events.is_empty());
            let polled = spin::until(budget, ready_now).and_then(|ready| {
                if ready {
                    Ok(())
                } else {
                    poll_events(poll, events, timeout)
                }
            });
            if let Err(e) = polled {
                shared.queue.set_polling(false);
                return Err(e);
            }
            events.iter().map(|e| e.token()).collect()
        };
        shared.handle_events(ready)?;
        shared.queue.set_polling(false);
        handled += shared.run_queue();
        shared.after_poll();
        shared.recently_served.store(handled > 0, Ordering::Relaxed);
        Ok(handled)
    }
}

/// The links with replies queued and not yet written: one, mostly (kept
/// inline, so a request costs no allocation for it).
#[derive(Default)]
struct Touched {
    first: Option<Arc<Link>>,
    more: Vec<Arc<Link>>,
}

impl Touched {
    fn add(&mut self, link: Arc<Link>) {
        match &self.first {
            None => self.first = Some(link),
            Some(f) if Arc::ptr_eq(f, &link) => {}
            Some(_) => {
                if !self.more.iter().any(|l| Arc::ptr_eq(l, &link)) {
                    self.more.push(link);
                }
            }
        }
    }

    /// The links, emptied.
    fn take(&mut self) -> impl Iterator<Item = Arc<Link>> {
        self.first
            .take()
            .into_iter()
            .chain(std::mem::take(&mut self.more))
    }
}

/// A request that ran this long may have been overtaken by news for the
/// requests behind it (a cancel): read what has arrived before the next.
const SLOW_REQUEST: Duration = Duration::from_millis(1);

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

impl Service for Server {
    fn host(&self) -> Arc<Host> {
        self.shared.host.clone()
    }

    fn poll_fd(&self) -> RawFd {
        self.shared.poll_fd
    }

    fn has_work(&self) -> bool {
        self.shared.queue.has_jobs() || (self.shared.zmq && self.shared.zmq_readable())
    }

    fn serve(&self) -> Result<usize> {
        self.poll_once(Some(Duration::ZERO))
    }

    fn closed(&self) -> bool {
        !self.running()
    }
}

// ---- running requests ---------------------------------------------------

/// Replies of a batch of requests are written together, unless the batch
/// has been running for this long (a slow request does not hold back the
/// replies of the quick ones before it). Longer starves a pipelining
/// client: at 1 ms, rpc_bench's pipelined unix:// figure fell by 10%.
const BATCH_WRITE: Duration = Duration::from_micros(100);

impl Shared {
    /// Runs every queued request, in order; returns how many ran.
    fn run_queue(&self) -> usize {
        let mut ran = 0;
        let mut touched = Touched::default();
        let Some(mut next) = self.queue.pop() else {
            return 0;
        };
        // When the replies now queued began to pile up.
        let mut piling = Instant::now();
        // When the request before this one started.
        let mut last = piling;
        loop {
            let mut job = next;
            if ran > 0 {
                let now = Instant::now();
                if now - piling > BATCH_WRITE {
                    self.write_replies(&mut touched);
                    piling = now;
                }
                if now - last > SLOW_REQUEST {
                    // Back at the head (it came first), then read: only a
                    // cancel that arrived meanwhile can take it out.
                    self.queue.push_front(job);
                    if let Err(e) = self.absorb() {
                        log::warn!("reading {} between requests: {e}", self.address);
                    }
                    match self.queue.pop() {
                        Some(next) => job = next,
                        None => break,
                    }
                }
                last = now;
            }
            ran += 1;
            match job {
                ServerJob::Link(job) => {
                    let link = job.link().clone();
                    let outcome = job.run(false);
                    if outcome.close {
                        link.flush_queued();
                        self.close_for(Origin::Link(link));
                        break;
                    }
                    touched.add(link);
                }
                ServerJob::Zmq { identity, request } => {
                    if self.run_zmq(&identity, request) {
                        self.close_for(Origin::Zmq(identity));
                        break;
                    }
                }
            }
            match self.queue.pop() {
                Some(job) => next = job,
                None => break,
            }
        }
        self.write_replies(&mut touched);
        ran
    }

    /// Closes the server after answering `origin`'s `close`.
    fn close_for(&self, origin: Origin) {
        self.closed.store(true, Ordering::Release);
        self.shut_down(&mut lock(&self.io), Some(&origin));
    }

    /// Runs one ZeroMQ request and sends its reply; true when it closed
    /// the server.
    fn run_zmq(&self, identity: &Bytes, request: protocol::Request) -> bool {
        let queue = &self.queue;
        let cancel = |peer: &Bytes, req_id: i64| {
            queue.drop_where(|j| {
                matches!(j, ServerJob::Zmq { identity, request } if identity == peer && request.req_id == req_id)
            })
        };
        let ran = self.admissions.run(
            &self.gate,
            &self.address,
            &self.host,
            identity,
            request,
            &cancel,
        );
        let mut io = lock(&self.io);
        if let Some(Endpoint::Zmq(endpoint)) = &mut io.endpoint {
            endpoint.send(identity, ran.format, ran.reply);
        }
        ran.close
    }

    /// Reads whatever has arrived, without waiting and without running
    /// requests (they join the queue, cancels apply at once).
    fn absorb(&self) -> Result<()> {
        if self.zmq {
            self.service_zmq()?;
        }
        let ready: Ready = {
            let Ok(mut io) = self.io.try_lock() else {
                return Ok(()); // a nested poll of this thread holds it
            };
            let Io { poll, events, .. } = &mut *io;
            poll_events(poll, events, Some(Duration::ZERO))?;
            events.iter().map(|e| e.token()).collect()
        };
        self.handle_events(ready)
    }

    /// Handles the events of one poll.
    fn handle_events(&self, ready: Ready) -> Result<()> {
        for token in ready {
            match token {
                WAKER => {}
                ENDPOINT => self.service_endpoint()?,
                conn => self.service_conn(conn),
            }
        }
        Ok(())
    }

    /// After a poll: timers, and the shutdown a `close` asked for.
    fn after_poll(&self) {
        self.timers.run_due();
        if self.closed.load(Ordering::Acquire) {
            self.shut_down(&mut lock(&self.io), None);
        }
    }
}

// ---- I/O --------------------------------------------------------------

impl Shared {
    /// Accepts new connections (native) or drains the ROUTER (ZeroMQ).
    fn service_endpoint(&self) -> Result<()> {
        let mut io = lock(&self.io);
        let Some(Endpoint::Native(listener)) = &io.endpoint else {
            drop(io);
            return self.service_zmq();
        };
        let mut accepted = Vec::new();
        loop {
            match listener.accept() {
                Ok(Some(channel)) => accepted.push(channel),
                Ok(None) => break,
                Err(e) => {
                    log::warn!("accept failed on {}: {e}", self.address);
                    break;
                }
            }
        }
        for channel in accepted {
            let token = Token(io.next_token);
            io.next_token += 1;
            let pending = Box::new(Pending::new(channel));
            if let Err(e) =
                io.poll
                    .registry()
                    .register(&mut SourceFd(&pending.fd()), token, Interest::READABLE)
            {
                log::warn!("cannot watch a new connection: {e}");
                continue;
            }
            io.conns.insert(token, Conn::Pending(pending));
        }
        Ok(())
    }

    /// True when the ROUTER has a message waiting.
    fn zmq_readable(&self) -> bool {
        let Ok(io) = self.io.try_lock() else {
            return false;
        };
        match &io.endpoint {
            Some(Endpoint::Zmq(ep)) => transport::zmq::readable(&ep.router.socket).unwrap_or(false),
            _ => false,
        }
    }

    /// Queues every request waiting on the ZeroMQ socket.
    fn service_zmq(&self) -> Result<()> {
        loop {
            let next = {
                let io = lock(&self.io);
                let Some(Endpoint::Zmq(endpoint)) = &io.endpoint else {
                    return Ok(());
                };
                endpoint.next()?
            };
            let Some((identity, frames)) = next else {
                return Ok(());
            };
            match protocol::Request::parse(frames) {
                // A cancel acts now: the request it names waits in the
                // queue, ahead of it.
                Ok(mut request) if matches!(request.action(), Ok(protocol::Action::Cancel)) => {
                    let req_id = self
                        .admissions
                        .cancelled(&self.gate, &identity, &mut request);
                    if let Some(req_id) = req_id {
                        self.queue.drop_where(|j| {
                            matches!(j, ServerJob::Zmq { identity: who, request } if *who == identity && request.req_id == req_id)
                        });
                    }
                }
                Ok(request) => self.queue.push_job(ServerJob::Zmq { identity, request }),
                Err(bad) => {
                    log::warn!("malformed request to {}: {}", self.address, bad.error);
                    if let Some(req_id) = bad.req_id.filter(|id| *id >= 0) {
                        let mut exporter = crate::codec::NoExport;
                        let format = crate::codec::Format::Msgpack;
                        let reply =
                            protocol::reply_frames(format, req_id, Err(bad.error), &mut exporter)
                                .ok();
                        let mut io = lock(&self.io);
                        if let Some(Endpoint::Zmq(endpoint)) = &mut io.endpoint {
                            endpoint.send(&identity, format, reply);
                        }
                    }
                }
            }
        }
    }

    /// Writes the replies queued on `touched`'s links; what a socket
    /// cannot take now goes out when it has room (see [`Io::writing`]).
    fn write_replies(&self, touched: &mut Touched) {
        for link in touched.take() {
            match link.flush_now() {
                Ok(true) => {}
                Ok(false) => self.write_when_ready(&link),
                Err(e) => {
                    link.write_failed(&e);
                }
            }
        }
    }

    /// Polls `link`'s socket for room as well, until its output is out.
    fn write_when_ready(&self, link: &Arc<Link>) {
        let mut io = lock(&self.io);
        let token = io.conns.iter().find_map(|(token, conn)| {
            matches!(conn, Conn::Open(l) if Arc::ptr_eq(l, link)).then_some(*token)
        });
        let Some(token) = token else {
            drop(io);
            link.flush_queued(); // not one of ours: the I/O thread writes it
            return;
        };
        if io.writing.contains(&token) {
            return;
        }
        if poll_for(&io, token, link, Interest::READABLE | Interest::WRITABLE) {
            io.writing.push(token);
        } else {
            drop(io);
            link.flush_queued();
        }
    }

    /// Writes more of the output of a link polled for room (see
    /// [`Io::writing`]); back to reading only once it is all out.
    fn write_more(&self, token: Token, link: &Arc<Link>) {
        let done = match link.flush_now() {
            Ok(false) => return,
            done => done,
        };
        let mut io = lock(&self.io);
        io.writing.retain(|t| *t != token);
        poll_for(&io, token, link, Interest::READABLE);
        drop(io);
        if let Err(e) = done {
            link.write_failed(&e);
        }
    }

    /// Reads a native connection: a link routes its messages itself; a
    /// pending one advances its handshake.
    fn service_conn(&self, token: Token) {
        let mut io = lock(&self.io);
        if let Some(Conn::Open(link)) = io.conns.get(&token) {
            let link = link.clone();
            let writing = io.writing.contains(&token);
            drop(io);
            if writing {
                self.write_more(token, &link);
            }
            link.read_available();
            if link.is_dead() {
                let mut io = lock(&self.io);
                io.conns.remove(&token);
                io.writing.retain(|t| *t != token);
                deregister(&io, &link);
            }
            return;
        }
        match io.conns.remove(&token) {
            Some(Conn::Open(_)) => unreachable!("handled above"),
            Some(Conn::Pending(pending)) => {
                let fd = pending.fd();
                let admission = Admission {
                    gate: &self.gate,
                    address: &self.address,
                    max_message: self.max_message,
                    host: &self.host,
                    executor: self.queue.clone(),
                    heartbeat: self.heartbeat,
                };
                match pending.advance(&admission) {
                    Step::Pending(p) => {
                        io.conns.insert(token, Conn::Pending(p));
                    }
                    Step::Admitted(link) => {
                        io.conns.insert(token, Conn::Open(link.clone()));
                        drop(io);
                        // Requests sent right behind the proof.
                        link.read_available();
                    }
                    Step::Dropped => {
                        let _ = io.poll.registry().deregister(&mut SourceFd(&fd));
                    }
                }
            }
            None => {}
        }
    }

    /// Sends disconnect notices, drops connections, releases the address.
    fn shut_down(&self, io: &mut Io, except: Option<&Origin>) {
        let Some(mut endpoint) = io.endpoint.take() else {
            return;
        };
        let notice = protocol::disconnect_frames(crate::codec::Format::Farcall);
        for (_, conn) in io.conns.drain() {
            match conn {
                Conn::Open(link) => {
                    let closer = matches!(except, Some(Origin::Link(l)) if Arc::ptr_eq(l, &link));
                    if closer {
                        link.close("the server closed (close_server)");
                    } else {
                        link.close_with_notice(notice.clone(), "the server closed");
                    }
                }
                Conn::Pending(_) => {}
            }
        }
        if let Endpoint::Zmq(ep) = &mut endpoint {
            let except = match except {
                Some(Origin::Zmq(identity)) => Some(identity),
                _ => None,
            };
            ep.say_goodbye(except);
        }
        // Dropping the listener removes a Unix socket file.
        drop(endpoint);
        self.host.clear();
        // An event loop watching poll_fd (a QtRPCServer) learns of the
        // close from the descriptor, whoever closed it.
        let _ = self.waker.wake();
    }

    /// Drops connections that have not finished their handshake in time
    /// (a peer that connects and says nothing holds nothing for long).
    fn drop_stale_handshakes(&self) {
        let mut io = lock(&self.io);
        let now = Instant::now();
        let stale: Vec<Token> = io
            .conns
            .iter()
            .filter(
                |(_, c)| matches!(c, Conn::Pending(p) if now - p.since > self.handshake_timeout),
            )
            .map(|(t, _)| *t)
            .collect();
        for token in stale {
            log::warn!(
                "{}: a peer did not complete its handshake; dropping it",
                self.address
            );
            if let Some(Conn::Pending(p)) = io.conns.remove(&token) {
                let _ = io.poll.registry().deregister(&mut SourceFd(&p.fd()));
            }
        }
        // Links that ended (their peer went) while nobody polled them.
        let dead: Vec<Token> = io
            .conns
            .iter()
            .filter(|(_, c)| matches!(c, Conn::Open(l) if l.is_dead()))
            .map(|(t, _)| *t)
            .collect();
        for token in dead {
            if let Some(Conn::Open(link)) = io.conns.remove(&token) {
                deregister(&io, &link);
            }
        }
    }
}

/// Polls a link's descriptor for `interest` from now on; false when it
/// cannot be (the link has none, or the registry refused).
fn poll_for(io: &Io, token: Token, link: &Link, interest: Interest) -> bool {
    link.read_fd().is_some_and(|fd| {
        io.poll
            .registry()
            .reregister(&mut SourceFd(&fd), token, interest)
            .is_ok()
    })
}

/// Stops polling a link's descriptor.
fn deregister(io: &Io, link: &Link) {
    if let Some(fd) = link.read_fd() {
        let _ = io.poll.registry().deregister(&mut SourceFd(&fd));
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(io) = self.io.get_mut() {
            for conn in io.conns.values() {
                if let Conn::Open(link) = conn {
                    link.close("the server was dropped");
                }
            }
        }
    }
}

// ---- the server as an object -----------------------------------------------

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
            "object_count" => Ok(Value::from(shared.host.object_count())),
            _ => Err(Error::attribute_error(format!(
                "'RPCServer' object has no method '{name}'"
            ))),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
