//! The client: sends requests to one server and waits for replies.
//!
//! A sync call writes its request and reads the reply in the calling
//! thread: no I/O thread sits between the caller and the socket. When
//! several threads wait on one client, one of them reads ("the reader")
//! and hands each reply to its owner; the others sleep until their reply
//! arrives or the reading role is free. A thread that also hosts a server
//! (`Server::run_lazy`) keeps serving it while it waits, so A -> B -> A
//! calls complete.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{Field, Format};
use crate::error::{Error, Result};
use crate::handshake::{self, Auth, ClientHandshake, Hello};
use crate::protocol::{self, Action, Frames, Opts, Reply, ReturnType};
use crate::server::{Server, ThreadExporter};
use crate::transport::stream::{self, Fill, FrameReader, Kind, Outgoing, Stream};
use crate::transport::{self, spin, Address};
use crate::value::{ProxyRef, Value};

/// Default timeout of a sync call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (and the handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Options for connecting a client.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Force a serializer (default: `farcall` with farcall servers,
    /// `msgpack` with pyacq servers).
    pub format: Option<Format>,
    /// Default timeout of sync calls (default 10 s).
    pub timeout: Option<Duration>,
    /// How to authenticate (default: with this process's key, or the
    /// per-user key file's).
    pub auth: Auth,
}

/// A connection to one server. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    address: String,
    conn: Conn,
    format: Format,
    timeout: Duration,
    next_req_id: AtomicI64,
    state: Mutex<State>,
    /// Signalled when a reply lands or the reading role is released.
    cv: Condvar,
    /// Held by the thread that currently reads from the connection.
    reading: Mutex<()>,
    driver_running: AtomicBool,
}

enum Conn {
    Native {
        stream: Stream,
        out: Mutex<Outbox>,
        reader: Mutex<FrameReader>,
    },
    Zmq {
        /// The DEALER and its monitor (which tells when the connection
        /// drops: see `transport::zmq::Dealer`).
        dealer: Mutex<transport::zmq::Dealer>,
        fd: RawFd,
    },
}

/// Requests waiting to be written. Async requests are queued and written
/// together (one system call for many), by the next sync call or wait,
/// when [`CORK_BYTES`] pile up, or by the flusher thread soon after.
#[derive(Default)]
struct Outbox {
    queue: Outgoing,
    /// The flusher thread has been asked to write this queue.
    flush_scheduled: bool,
}

/// Queued async requests are written at once past this many bytes.
const CORK_BYTES: usize = 16 * 1024;
/// How long the flusher lets a burst of async requests pile up before it
/// writes them. Only requests nobody waits on see it: a wait (a sync call,
/// `result()`, an awaited future) writes the queue first.
const FLUSH_DELAY: Duration = Duration::from_micros(100);

/// When a request must reach the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Urgency {
    /// Before returning: the caller waits for the reply next.
    Now,
    /// Soon: an async or one-way request, batched with its neighbours.
    Soon,
}

#[derive(Default)]
struct State {
    pending: HashMap<i64, Slot, BuildHasherDefault<IdHasher>>,
    waiters: usize,
    disconnected: Option<String>,
}

/// Hashes request ids, which this client numbers itself: SipHash, the
/// default, resists keys chosen by an attacker and costs more than the
/// rest of a lookup; a multiplication spreads sequential ids well enough.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_i64(&mut self, id: i64) {
        self.0 = (id as u64).wrapping_mul(FIBONACCI);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// 2^64 divided by the golden ratio: multiplying by it scatters
/// consecutive integers over all the bits.
const FIBONACCI: u64 = 0x9e37_79b9_7f4a_7c15;

enum Slot {
    Waiting(Option<Waker>),
    Done(Result<Value>),
}

/// What one read turn saw besides replies.
enum Turn {
    Progress,
    ServerReady(Server),
}

thread_local! {
    static CLIENTS: RefCell<HashMap<String, Client>> = RefCell::new(HashMap::new());
}

/// Every client of the process, by address, for work that may use any
/// thread's connection (releasing references).
static ALL_CLIENTS: Mutex<Vec<(String, Weak<Inner>)>> = Mutex::new(Vec::new());

impl Client {
    /// Connects to the server at `address`.
    pub fn connect(address: &str) -> Result<Client> {
        Self::connect_with(address, ClientOptions::default())
    }

    /// Connects with explicit options.
    pub fn connect_with(address: &str, options: ClientOptions) -> Result<Client> {
        let parsed = Address::parse(address)?;
        let conn = match &parsed {
            Address::Zmq(ep) => {
                let dealer = transport::zmq::connect_dealer(ep)?;
                let fd = transport::zmq::poll_fd(&dealer.socket)?;
                Conn::Zmq {
                    dealer: Mutex::new(dealer),
                    fd,
                }
            }
            native => {
                let stream = Stream::connect(native).map_err(|e| match e {
                    Error::Io(io) => {
                        Error::Disconnected(format!("cannot connect to {address}: {io}"))
                    }
                    other => other,
                })?;
                Conn::Native {
                    stream,
                    out: Mutex::new(Outbox::default()),
                    reader: Mutex::new(FrameReader::new(stream::DEFAULT_MAX_MESSAGE)),
                }
            }
        };
        let mut inner = Inner {
            address: address.to_string(),
            conn,
            format: options.format.unwrap_or(Format::Farcall),
            timeout: options.timeout.unwrap_or(DEFAULT_TIMEOUT),
            next_req_id: AtomicI64::new(1),
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            reading: Mutex::new(()),
            driver_running: AtomicBool::new(false),
        };
        inner
            .handshake(options.format, &options.auth)
            .map_err(|e| match e {
                // The server went away mid-handshake (it closed, or died).
                Error::Io(io) => Error::Disconnected(format!("cannot connect to {address}: {io}")),
                other => other,
            })?;
        let inner = Arc::new(inner);
        let mut all = lock(&ALL_CLIENTS);
        all.retain(|(_, c)| c.strong_count() > 0);
        all.push((address.to_string(), Arc::downgrade(&inner)));
        Ok(Client { inner })
    }

    /// A connected client of this process (any thread's) for `address`.
    pub fn any_connected(address: &str) -> Option<Client> {
        lock(&ALL_CLIENTS)
            .iter()
            .filter(|(a, _)| a == address)
            .filter_map(|(_, c)| c.upgrade())
            .map(|inner| Client { inner })
            .find(|c| c.disconnected().is_none())
    }

    /// The client of this thread for `address`, connecting on first use.
    pub fn get(address: &str) -> Result<Client> {
        if let Some(c) = CLIENTS.with(|m| m.borrow().get(address).cloned()) {
            if c.disconnected().is_none() {
                return Ok(c);
            }
        }
        let client = Client::connect(address)?;
        CLIENTS.with(|m| m.borrow_mut().insert(address.to_string(), client.clone()));
        Ok(client)
    }

    /// The client of this thread for `address`, if one exists.
    pub fn existing(address: &str) -> Option<Client> {
        CLIENTS.with(|m| m.borrow().get(address).cloned())
    }

    /// Registers `client` as this thread's client for its address.
    pub fn register_for_thread(&self) {
        CLIENTS.with(|m| {
            m.borrow_mut()
                .insert(self.inner.address.clone(), self.clone())
        });
    }

    /// The server address.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// The serializer this client speaks.
    pub fn format(&self) -> Format {
        self.inner.format
    }

    /// The default timeout of sync calls.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Why the client is disconnected, if it is.
    pub fn disconnected(&self) -> Option<String> {
        lock(&self.inner.state).disconnected.clone()
    }

    /// Sends a request and returns a future for its reply. Requests sent
    /// in a burst are written together, soon after (or when waited on).
    /// `opts` is a `&Value`, or a map of borrowed fields ([`Opts`]).
    pub fn send<'a>(
        &self,
        action: Action,
        opts: impl Into<Opts<'a>>,
        return_type: ReturnType,
    ) -> Result<Future> {
        self.send_with(action, opts.into(), return_type, Urgency::Soon)
    }

    fn send_with(
        &self,
        action: Action,
        opts: Opts<'_>,
        return_type: ReturnType,
        urgency: Urgency,
    ) -> Result<Future> {
        let req_id = self.inner.next_req_id.fetch_add(1, Ordering::Relaxed);
        {
            // One lock: a client that is gone takes no more calls.
            let mut st = lock(&self.inner.state);
            if let Some(why) = &st.disconnected {
                return Err(Error::Disconnected(why.clone()));
            }
            st.pending.insert(req_id, Slot::Waiting(None));
        }
        let frames = protocol::request_frames(
            req_id,
            action,
            return_type,
            self.inner.format,
            opts,
            &mut ThreadExporter,
        );
        let sent = frames.and_then(|f| {
            self.inner
                .write(f, Some(Instant::now() + self.inner.timeout), urgency)
        });
        if let Err(e) = sent {
            lock(&self.inner.state).pending.remove(&req_id);
            return Err(e);
        }
        Ok(Future {
            client: self.clone(),
            req_id,
            consumed: false,
        })
    }

    /// Sends a request that wants no reply (`opts` as for [`Client::send`]).
    pub fn send_off<'a>(
        &self,
        action: Action,
        opts: impl Into<Opts<'a>>,
        return_type: ReturnType,
    ) -> Result<()> {
        self.inner.check_connected()?;
        let frames = protocol::request_frames(
            -1,
            action,
            return_type,
            self.inner.format,
            opts.into(),
            &mut ThreadExporter,
        )?;
        self.inner.write(
            frames,
            Some(Instant::now() + self.inner.timeout),
            Urgency::Soon,
        )
    }

    /// Sends a request and waits for its reply (`timeout`: the client's
    /// default when `None`; `opts` as for [`Client::send`]).
    pub fn call<'a>(
        &self,
        action: Action,
        opts: impl Into<Opts<'a>>,
        return_type: ReturnType,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        self.send_with(action, opts.into(), return_type, Urgency::Now)?
            .wait(Some(timeout.unwrap_or(self.inner.timeout)))
    }

    /// Calls the object `proxy` refers to (a method, through its path).
    pub fn call_obj(
        &self,
        proxy: &ProxyRef,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value> {
        let fields = call_fields(proxy, None, &args, &kwargs);
        self.call(Action::CallObj, &fields[..], ReturnType::Auto, None)
    }

    /// Answers `"pong"` if the server is there.
    pub fn ping(&self) -> Result<Value> {
        self.call(Action::Ping, &Value::None, ReturnType::Auto, None)
    }

    /// Reads the object the server published as `name`.
    pub fn get_item(&self, name: &str) -> Result<Value> {
        let opts = Value::map([("name", Value::from(name))]);
        self.call(Action::GetItem, &opts, ReturnType::Auto, None)
    }

    /// Publishes `value` on the server as `name`.
    pub fn set_item(&self, name: &str, value: Value) -> Result<()> {
        let opts = Value::map([("name", Value::from(name)), ("obj", value)]);
        self.call(Action::SetItem, &opts, ReturnType::Auto, None)
            .map(drop)
    }

    /// Imports `module` on the server and returns it (by proxy).
    pub fn import(&self, module: &str) -> Result<Value> {
        let opts = Value::map([("module", Value::from(module))]);
        self.call(Action::Import, &opts, ReturnType::Auto, None)
    }

    /// Releases the server's object behind `proxy` (one reference).
    pub fn delete(&self, proxy: &ProxyRef) -> Result<()> {
        self.call(Action::Delete, &delete_opts(proxy), ReturnType::Auto, None)
            .map(drop)
    }

    /// Releases a reference without waiting for the answer.
    pub fn delete_later(&self, proxy: &ProxyRef) -> Result<()> {
        self.send_off(Action::Delete, &delete_opts(proxy), ReturnType::Auto)
    }

    /// Asks the server to close. Every client it knows is told.
    pub fn close_server(&self) -> Result<()> {
        if self.disconnected().is_some() {
            return Ok(());
        }
        self.call(Action::Close, &Value::None, ReturnType::Auto, None)?;
        self.inner
            .fail_all("the server closed (close_server)".into());
        Ok(())
    }

    /// Closes this client's connection (the server keeps running).
    pub fn close(&self) {
        CLIENTS.with(|m| {
            let mut m = m.borrow_mut();
            if m.get(&self.inner.address)
                .is_some_and(|c| Arc::ptr_eq(&c.inner, &self.inner))
            {
                m.remove(&self.inner.address);
            }
        });
        if let Conn::Native { stream, .. } = &self.inner.conn {
            stream.shutdown();
        }
        self.inner.fail_all("the client was closed".into());
    }

    /// True when both handles share one connection.
    pub fn same_as(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Number of calls sent and not yet answered.
    pub fn pending(&self) -> usize {
        lock(&self.inner.state).pending.len()
    }
}

/// The opts of a `call_obj` request.
pub fn call_opts(proxy: &ProxyRef, args: Vec<Value>, kwargs: Vec<(String, Value)>) -> Value {
    Value::map([
        ("obj", Value::Proxy(proxy.clone())),
        ("args", Value::List(args)),
        (
            "kwargs",
            Value::Map(
                kwargs
                    .into_iter()
                    .map(|(k, v)| (Value::Str(k), v))
                    .collect(),
            ),
        ),
    ])
}

/// The options of `call_obj` as borrowed fields: what [`call_opts`]
/// builds, with `method` appended to the proxy's attribute path, encoded
/// without copying any of it.
pub fn call_fields<'a>(
    proxy: &'a ProxyRef,
    method: Option<&'a str>,
    args: &'a [Value],
    kwargs: &'a [(String, Value)],
) -> [(&'static str, Field<'a>); 3] {
    [
        ("obj", Field::Proxy { proxy, method }),
        ("args", Field::List(args)),
        ("kwargs", Field::StrMap(kwargs)),
    ]
}

fn delete_opts(proxy: &ProxyRef) -> Value {
    Value::map([
        ("obj_id", Value::from(proxy.obj_id)),
        ("ref_id", Value::from(proxy.ref_id)),
    ])
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    /// The connection handshake (see `handshake`): both sides prove they
    /// hold the key before any request. Over ZeroMQ it also picks the
    /// format: farcall's own with farcall servers; with a pyacq server
    /// (an explicit `Auth::Open`), msgpack.
    fn handshake(&mut self, forced: Option<Format>, auth: &Auth) -> Result<()> {
        let deadline = Some(Instant::now() + CONNECT_TIMEOUT);
        let hs = ClientHandshake::new(&self.address, auth)?;
        match &self.conn {
            Conn::Native {
                stream,
                out,
                reader,
            } => {
                let mut out = lock(out);
                let mut reader = lock(reader);
                let mut say = |hello: Hello| {
                    out.queue.push(Kind::Hello, hello.to_frames());
                    out.queue.flush_blocking(stream.as_raw_fd(), deadline)
                };
                say(Hello::Hello(*hs.nonce(), handshake::client_id()))?;
                let Hello::Challenge(challenge) = read_hello(&mut reader, stream, deadline)? else {
                    return Err(Error::Protocol("expected the server's challenge".into()));
                };
                let Some(proof) = hs.answer(&challenge)? else {
                    return Ok(());
                };
                say(Hello::Proof(proof))?;
                match read_hello(&mut reader, stream, deadline)? {
                    Hello::Verdict(Ok(())) => Ok(()),
                    Hello::Verdict(Err(why)) => Err(Error::exception(
                        "PermissionError",
                        format!("{} refused us: {why}", self.address),
                    )),
                    _ => Err(Error::Protocol("expected the server's verdict".into())),
                }
            }
            Conn::Zmq { dealer, fd } => {
                let dealer = lock(dealer);
                let socket = &dealer.socket;
                let nonce = Value::Bytes(Bytes::copy_from_slice(hs.nonce()));
                let hello = zmq_handshake_call(
                    socket,
                    *fd,
                    Action::Hello,
                    Value::map([("nonce", nonce)]),
                    deadline,
                )?;
                let challenge = match hello {
                    Ok(v) => handshake::challenge_from_value(&v)?,
                    // A pyacq server does not know the action.
                    Err(_) if matches!(auth, Auth::Open) => {
                        self.format = forced.unwrap_or(Format::Msgpack);
                        return Ok(());
                    }
                    Err(e) => {
                        return Err(Error::exception(
                            "PermissionError",
                            format!(
                                "{} did not authenticate (a pyacq server? connect with \
                                 auth=False): {e}",
                                self.address
                            ),
                        ))
                    }
                };
                self.format = forced.unwrap_or(Format::Farcall);
                let Some(proof) = hs.answer(&challenge)? else {
                    return Ok(());
                };
                let proof = Value::Bytes(Bytes::copy_from_slice(&proof));
                let opts = Value::map([("proof", proof)]);
                match zmq_handshake_call(socket, *fd, Action::Auth, opts, deadline)? {
                    Ok(_) => Ok(()),
                    Err(e) => Err(Error::exception(
                        "PermissionError",
                        format!("{} refused us: {e}", self.address),
                    )),
                }
            }
        }
    }

    fn check_connected(&self) -> Result<()> {
        match &lock(&self.state).disconnected {
            Some(why) => Err(Error::Disconnected(why.clone())),
            None => Ok(()),
        }
    }

    fn write(
        self: &Arc<Self>,
        frames: Frames,
        deadline: Option<Instant>,
        urgency: Urgency,
    ) -> Result<()> {
        let written = match &self.conn {
            Conn::Native { stream, out, .. } => {
                let mut out = lock(out);
                out.queue.push(Kind::Request, frames);
                if urgency == Urgency::Now || out.queue.queued_bytes() >= CORK_BYTES {
                    out.queue.flush_blocking(stream.as_raw_fd(), deadline)
                } else {
                    if !out.flush_scheduled {
                        out.flush_scheduled = true;
                        drop(out);
                        schedule_flush(self);
                    }
                    Ok(())
                }
            }
            Conn::Zmq { dealer, .. } => {
                let socket = &lock(dealer).socket;
                let last = frames.len() - 1;
                frames.iter().enumerate().try_for_each(|(i, f)| {
                    let more = if i < last { zmq::SNDMORE } else { 0 };
                    socket.send(&f[..], more).map_err(Error::from)
                })
            }
        };
        if let Err(Error::Io(e)) = &written {
            self.fail_all(format!("connection to {} lost: {e}", self.address));
            return Err(Error::Disconnected(format!(
                "connection to {} lost: {e}",
                self.address
            )));
        }
        written
    }

    /// Writes the queued async requests now (before waiting for a reply).
    fn flush_queued(&self) {
        let Conn::Native { stream, out, .. } = &self.conn else {
            return;
        };
        let mut out = lock(out);
        out.flush_scheduled = false;
        if out.queue.is_empty() {
            return;
        }
        let deadline = Some(Instant::now() + self.timeout);
        if let Err(e) = out.queue.flush_blocking(stream.as_raw_fd(), deadline) {
            drop(out);
            self.fail_all(format!("connection to {} lost: {e}", self.address));
        }
    }

    /// Marks the client disconnected and fails every pending call.
    fn fail_all(&self, why: String) {
        let mut st = lock(&self.state);
        if st.disconnected.is_none() {
            st.disconnected = Some(why.clone());
        }
        let mut wakers = Vec::new();
        for slot in st.pending.values_mut() {
            if let Slot::Waiting(waker) = slot {
                wakers.extend(waker.take());
                *slot = Slot::Done(Err(Error::Disconnected(why.clone())));
            }
        }
        drop(st);
        self.cv.notify_all();
        // Outside the lock: a waker may run user code that calls back in.
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Hands one reply to its caller.
    fn deliver(&self, frames: Frames) {
        match Reply::parse(self.format, &frames) {
            Ok(Reply::Return { req_id, result }) => {
                let mut st = lock(&self.state);
                let Some(slot) = st.pending.get_mut(&req_id) else {
                    return; // timed out, or a one-way call: nobody waits
                };
                let waker = match std::mem::replace(slot, Slot::Done(result)) {
                    Slot::Waiting(w) => w,
                    Slot::Done(_) => None,
                };
                let waiters = st.waiters > 0;
                drop(st);
                if waiters {
                    self.cv.notify_all();
                }
                // Outside the lock: a waker may run user code that calls back in.
                if let Some(w) = waker {
                    w.wake();
                }
            }
            Ok(Reply::Disconnect) => {
                self.fail_all(format!("the server at {} closed", self.address));
            }
            Err(e) => log::warn!("unreadable reply from {}: {e}", self.address),
        }
    }

    /// One turn as the reader: deliver what is buffered, else wait (up to
    /// `deadline`) for the connection or this thread's lazy server.
    fn read_turn(&self, deadline: Option<Instant>) -> Result<Turn> {
        if self.drain()? > 0 {
            return Ok(Turn::Progress);
        }
        let server = Server::current();
        let mut fds = vec![libc::pollfd {
            fd: self.poll_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(s) = &server {
            fds.push(libc::pollfd {
                fd: s.poll_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        match &self.conn {
            // ZeroMQ's descriptor signals edges that another thread's send
            // may consume; a short slice bounds the cost of that rare race.
            Conn::Zmq { .. } => {
                let slice = Instant::now() + ZMQ_SLICE;
                stream::poll_fds(&mut fds, Some(deadline.map_or(slice, |d| d.min(slice))))?;
            }
            // The reply to a request just sent often comes within the spin
            // budget; waiting for it awake saves a wake-up (see spin.rs).
            // The rest of a message already begun comes at the pace of
            // the writer: sleeping costs nothing then.
            Conn::Native { reader, .. } => {
                let budget = spin::budget(deadline).filter(|_| !lock(reader).mid_message());
                if !spin::until(budget, || stream::poll_now(&mut fds))? {
                    stream::poll_fds(&mut fds, deadline)?;
                }
            }
        }
        if fds[0].revents != 0 {
            self.mark_readable();
        }
        if fds.len() > 1 && fds[1].revents != 0 {
            return Ok(Turn::ServerReady(server.expect("pushed above")));
        }
        self.drain()?;
        Ok(Turn::Progress)
    }

    /// Lets the next drain read from the socket again.
    fn mark_readable(&self) {
        if let Conn::Native { reader, .. } = &self.conn {
            lock(reader).mark_readable();
        }
    }

    fn poll_fd(&self) -> RawFd {
        match &self.conn {
            Conn::Native { stream, .. } => stream.as_raw_fd(),
            Conn::Zmq { fd, .. } => *fd,
        }
    }

    /// Delivers every reply that can be read without waiting.
    fn drain(&self) -> Result<usize> {
        let mut delivered = 0;
        loop {
            let frames = match &self.conn {
                Conn::Native { stream, reader, .. } => {
                    let mut reader = lock(reader);
                    match read_reply(&mut reader, stream) {
                        Ok(Some(f)) => f,
                        Ok(None) => return Ok(delivered),
                        Err(e) => {
                            drop(reader);
                            self.fail_all(format!("connection to {} lost: {e}", self.address));
                            return Ok(delivered + 1);
                        }
                    }
                }
                Conn::Zmq { dealer, .. } => {
                    let dealer = lock(dealer);
                    let socket = &dealer.socket;
                    if !transport::zmq::readable(socket)? {
                        // Replies first: a server that answered and then
                        // closed has still answered.
                        let dropped = transport::zmq::dropped(&dealer.monitor)?;
                        drop(dealer);
                        if dropped {
                            self.fail_all(format!("connection to {} lost", self.address));
                            return Ok(delivered + 1);
                        }
                        return Ok(delivered);
                    }
                    match transport::zmq::try_recv(socket)? {
                        Some(f) => f,
                        None => return Ok(delivered),
                    }
                }
            };
            self.deliver(frames);
            delivered += 1;
        }
    }

    /// Takes the result of `req_id` if it is there.
    fn take_done(&self, st: &mut State, req_id: i64) -> Option<Result<Value>> {
        match st.pending.get(&req_id) {
            Some(Slot::Done(_)) => match st.pending.remove(&req_id) {
                Some(Slot::Done(r)) => Some(r),
                _ => unreachable!(),
            },
            Some(Slot::Waiting(_)) => None,
            None => Some(Err(Error::Protocol(format!("no call {req_id} is pending")))),
        }
    }

    /// Waits for the reply to `req_id` until `deadline`; `None` when the
    /// deadline passes first (the call stays pending).
    fn wait(&self, req_id: i64, deadline: Option<Instant>) -> Result<Option<Result<Value>>> {
        self.flush_queued();
        let mut read_at_deadline = false;
        loop {
            if let Some(r) = self.take_done(&mut lock(&self.state), req_id) {
                return Ok(Some(r));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                // Time is up, but what has arrived counts: read it once
                // (a zero timeout polls).
                if read_at_deadline {
                    return Ok(None);
                }
                read_at_deadline = true;
                self.read_available();
                continue;
            }
            let turn = match self.reading.try_lock() {
                Ok(role) => {
                    let turn = self.read_turn(deadline);
                    drop(role);
                    self.release_role();
                    turn?
                }
                Err(_) => {
                    self.sleep_until_called(req_id, deadline);
                    continue;
                }
            };
            if let Turn::ServerReady(server) = turn {
                server.poll_once(Some(Duration::ZERO))?;
            }
        }
    }

    /// Delivers what can be read now, unless another thread is reading.
    fn read_available(&self) {
        if let Ok(role) = self.reading.try_lock() {
            self.mark_readable();
            let _ = self.drain();
            drop(role);
            self.release_role();
        }
    }

    /// Wakes threads waiting for the reading role.
    fn release_role(&self) {
        if lock(&self.state).waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// Sleeps while another thread reads, until this call's reply lands,
    /// the reading role is free, or `deadline` passes.
    fn sleep_until_called(&self, req_id: i64, deadline: Option<Instant>) {
        let mut st = lock(&self.state);
        st.waiters += 1;
        // Checked under the state lock: the reader takes this lock before
        // notifying, so its notification cannot slip in before we sleep.
        let free = self.reading.try_lock().is_ok();
        let done = matches!(st.pending.get(&req_id), Some(Slot::Done(_)) | None);
        if !free && !done {
            let wait = deadline.map_or(Duration::from_secs(1), |d| {
                d.saturating_duration_since(Instant::now())
            });
            st = self
                .cv
                .wait_timeout(st, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.waiters -= 1;
    }

    /// Reads on behalf of async futures that nobody waits on
    /// synchronously; runs in its own thread while such futures exist.
    fn drive(self: Arc<Self>) {
        loop {
            let wanted = {
                let st = lock(&self.state);
                st.disconnected.is_none()
                    && st
                        .pending
                        .values()
                        .any(|s| matches!(s, Slot::Waiting(Some(_))))
            };
            if !wanted {
                self.driver_running.store(false, Ordering::Release);
                // A future may have registered between the check and the
                // store; if so, take the job back.
                let again = lock(&self.state)
                    .pending
                    .values()
                    .any(|s| matches!(s, Slot::Waiting(Some(_))));
                if !again || self.driver_running.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
            self.flush_queued();
            let role = lock(&self.reading);
            let turn = self.read_turn(Some(Instant::now() + Duration::from_millis(50)));
            drop(role);
            self.release_role();
            if let Err(e) = turn {
                self.fail_all(format!("connection to {} lost: {e}", self.address));
            }
        }
    }
}

const ZMQ_SLICE: Duration = Duration::from_millis(10);

/// Asks the flusher thread to write `inner`'s queued requests within
/// [`FLUSH_DELAY`]; requests queued meanwhile go out in the same write, so
/// a burst costs one wake-up per delay, not one per request.
fn schedule_flush(inner: &Arc<Inner>) {
    static FLUSHER: OnceLock<Sender<Weak<Inner>>> = OnceLock::new();
    let flusher = FLUSHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Weak<Inner>>();
        std::thread::Builder::new()
            .name("farcall-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    std::thread::sleep(FLUSH_DELAY);
                    let mut due = vec![first];
                    due.extend(rx.try_iter());
                    for inner in due.iter().filter_map(Weak::upgrade) {
                        inner.flush_queued();
                    }
                }
            })
            .expect("spawning the flusher thread");
        tx
    });
    if flusher.send(Arc::downgrade(inner)).is_err() {
        inner.flush_queued();
    }
}

/// One handshake request over ZeroMQ (msgpack, which every server reads),
/// waiting for its reply until `deadline`.
fn zmq_handshake_call(
    socket: &zmq::Socket,
    fd: RawFd,
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
        &mut crate::codec::NoExport,
    )?;
    transport::zmq::send(socket, &request)?;
    loop {
        while transport::zmq::readable(socket)? {
            let Some(frames) = transport::zmq::try_recv(socket)? else {
                break;
            };
            if let Reply::Return { req_id: 0, result } = Reply::parse(Format::Msgpack, &frames)? {
                return Ok(result);
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Timeout(CONNECT_TIMEOUT));
        }
        let slice = Instant::now() + ZMQ_SLICE;
        wait_serving(fd, Some(deadline.map_or(slice, |d| d.min(slice))))?;
    }
}

/// Reads one native hello message, waiting until `deadline`.
fn read_hello(
    reader: &mut FrameReader,
    stream: &Stream,
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
        match reader.fill(stream.as_raw_fd())? {
            Fill::Data => {}
            Fill::Eof => {
                return Err(Error::Disconnected(
                    "the server closed the connection during the handshake".into(),
                ))
            }
            Fill::WouldBlock => {
                if !wait_serving(stream.as_raw_fd(), deadline)? {
                    return Err(Error::Timeout(CONNECT_TIMEOUT));
                }
            }
        }
    }
}

/// Waits until `fd` is readable or `deadline` passes (false), serving
/// this thread's server meanwhile: a client connecting to the server of
/// its own thread (`RPCServer.local_client()`) must not wait on itself.
fn wait_serving(fd: RawFd, deadline: Option<Instant>) -> Result<bool> {
    loop {
        let Some(server) = Server::current() else {
            return stream::wait_fd(fd, libc::POLLIN, deadline);
        };
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: server.poll_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if stream::poll_fds(&mut fds, deadline)? == 0 {
            return Ok(false);
        }
        if fds[0].revents != 0 {
            return Ok(true);
        }
        server.poll_once(Some(Duration::ZERO))?;
    }
}

fn read_reply(reader: &mut FrameReader, stream: &Stream) -> Result<Option<Frames>> {
    loop {
        match reader.next_message()? {
            Some((Kind::Reply, frames)) => return Ok(Some(frames)),
            Some((kind, _)) => {
                return Err(Error::Protocol(format!(
                    "unexpected {kind:?} from the server"
                )))
            }
            None => {}
        }
        if reader.drained() {
            // Nothing more was there at the last read; poll says when.
            return Ok(None);
        }
        match reader.fill(stream.as_raw_fd())? {
            Fill::Data => {}
            Fill::WouldBlock => return Ok(None),
            Fill::Eof => {
                return Err(Error::Disconnected(
                    "the server closed the connection".into(),
                ))
            }
        }
    }
}

/// The pending reply to one request.
///
/// Wait for it with [`Future::wait`] from any thread, or `.await` it (a
/// helper thread then reads on its behalf).
pub struct Future {
    client: Client,
    req_id: i64,
    consumed: bool,
}

impl Future {
    /// Waits for the result (`None`: no time limit). On timeout the call
    /// is forgotten: a late reply is dropped.
    pub fn wait(mut self, timeout: Option<Duration>) -> Result<Value> {
        match self.wait_for(timeout)? {
            Some(result) => result,
            None => Err(Error::Timeout(timeout.unwrap_or(Duration::MAX))),
        }
    }

    /// Waits up to `timeout` (`None`: no limit). `Ok(None)` when the time
    /// passes first; the call then stays pending and can be waited on again.
    /// Once a result has been returned, later calls report an error.
    pub fn wait_for(&mut self, timeout: Option<Duration>) -> Result<Option<Result<Value>>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let got = self.client.inner.wait(self.req_id, deadline)?;
        if got.is_some() {
            self.consumed = true;
        }
        Ok(got)
    }

    /// True when the result has arrived (reads what is available now).
    pub fn is_done(&self) -> bool {
        let inner = &self.client.inner;
        inner.flush_queued();
        inner.read_available();
        !matches!(
            lock(&inner.state).pending.get(&self.req_id),
            Some(Slot::Waiting(_))
        )
    }

    /// The request id.
    pub fn req_id(&self) -> i64 {
        self.req_id
    }

    /// The client the request went through.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl std::future::Future for Future {
    type Output = Result<Value>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.client.inner.clone();
        let mut st = lock(&inner.state);
        match st.pending.get_mut(&self.req_id) {
            Some(Slot::Waiting(waker)) => {
                *waker = Some(cx.waker().clone());
                drop(st);
                if !inner.driver_running.swap(true, Ordering::AcqRel) {
                    let driver = inner.clone();
                    std::thread::Builder::new()
                        .name("farcall-driver".into())
                        .spawn(move || driver.drive())
                        .expect("spawning the reply driver");
                }
                Poll::Pending
            }
            _ => {
                let r = inner.take_done(&mut st, self.req_id).expect("not waiting");
                self.consumed = true;
                Poll::Ready(r)
            }
        }
    }
}

impl Drop for Future {
    fn drop(&mut self) {
        if !self.consumed {
            // Nobody will read the result: forget the call.
            lock(&self.client.inner.state).pending.remove(&self.req_id);
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.inner.address)
    }
}

impl std::fmt::Debug for Future {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Future({} #{})", self.client.inner.address, self.req_id)
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Client>();
    is::<Future>();
    let _ = Bytes::new();
}
