//! Peer links: one link joins two processes over one byte channel and
//! carries requests, replies, cancellations and heartbeats in both
//! directions. Either end may host objects and call the other.
//!
//! - [`Link`] (this file): the link itself, how calls are sent on it and
//!   how it ends.
//! - `in_flight`: the calls waiting for a reply, with their deadlines.
//! - `read`: the reading role (whoever reads routes every message: replies
//!   to their callers, requests to the executor, heartbeats answered) and
//!   the wait of a caller.
//! - `outbox`: messages queued for the channel, written in batches.
//! - `io`: the I/O thread, which reads links nobody else reads, enforces
//!   deadlines and sends heartbeats; it never runs user code.
//! - `executor` and `chain`: who runs a request that arrived.
//! - `hello`: opening a link (the handshakes).
//!
//! ZeroMQ endpoints are the one asymmetric transport: a client's DEALER
//! is a link too (the same in-flight table, waits and error handling),
//! but only replies travel on it.

mod chain;
pub mod executor;
mod hello;
mod in_flight;
mod io;
mod outbox;
mod read;
mod signal;

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

pub(crate) use chain::Waiting;
pub use executor::{Executor, Job, LocalExecutor};
pub use hello::wait_serving;

use crate::channel::frame::{FrameReader, Kind, DEFAULT_MAX_MESSAGE};
use crate::channel::Channel;
use crate::codec::{Exporter, Field, Format, NoExport};
use crate::error::{Error, Result};
use crate::handshake::Auth;
use crate::host::{Host, HostExporter};
use crate::protocol::command::{Share, FORWARDED_REF};
use crate::protocol::{self, message, Action, Frames, Opts, ReturnType};
use crate::sync::lock;
use crate::transport;
use crate::value::{ObjectRef, ProxyRef, Value};

pub(crate) use in_flight::Status;
use in_flight::{InFlight, Wakeups};
use outbox::Outbox;

/// Default timeout of a sync call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (and the handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a link finds out that its peer stopped answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// A link that received nothing for this long sends a ping.
    pub interval: Duration,
    /// A link that received nothing for this long is dead: its pending
    /// calls fail with `Disconnected`. `Duration::ZERO` turns it off.
    pub timeout: Duration,
}

impl Default for Heartbeat {
    /// Every second, dead after 4.5 s of silence (or `FARCALL_HEARTBEAT`
    /// seconds from the environment).
    fn default() -> Self {
        let timeout = std::env::var("FARCALL_HEARTBEAT")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(Duration::from_millis(4500), Duration::from_secs_f64);
        Heartbeat {
            interval: (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
            timeout,
        }
    }
}

impl Heartbeat {
    /// Declared dead after `timeout` of silence, pinging four times per
    /// timeout (at most once a second).
    pub fn with_timeout(timeout: Duration) -> Heartbeat {
        Heartbeat {
            interval: (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
            timeout,
        }
    }
}

/// Options for opening a link.
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// Force a serializer (default: `farcall` with farcall peers,
    /// `msgpack` with pyacq servers).
    pub format: Option<Format>,
    /// Default timeout of sync calls (default 10 s).
    pub timeout: Duration,
    /// How to authenticate (default: with this process's key, or the
    /// per-user key file's).
    pub auth: Auth,
    /// Dead-peer detection on native links (ZeroMQ has its own).
    pub heartbeat: Heartbeat,
    /// Largest message accepted from the peer, in bytes.
    pub max_message: u64,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            format: None,
            timeout: DEFAULT_TIMEOUT,
            auth: Auth::ProcessKey,
            heartbeat: Heartbeat::default(),
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }
}

/// How a call waits for its reply.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallMode {
    /// The caller wants a reply (else the request id is -1).
    pub(crate) wants_reply: bool,
    /// How long the call may take (`None`: no limit).
    pub(crate) timeout: Option<Duration>,
    /// The engine fails the call at its deadline even if nobody waits
    /// (an async call; a sync caller enforces its own).
    pub(crate) enforce: bool,
    /// The caller waits for the reply next: write the request now.
    pub(crate) urgent: bool,
}

impl CallMode {
    /// A call whose caller waits for the reply next, enforcing `timeout`
    /// itself: written at once.
    pub(crate) fn waited(timeout: Option<Duration>) -> Self {
        CallMode {
            wants_reply: true,
            timeout,
            enforce: false,
            urgent: true,
        }
    }

    /// A call whose reply comes to a future: the engine fails it at its
    /// deadline, and it may wait for the next batch of writes.
    pub(crate) fn later(timeout: Option<Duration>) -> Self {
        CallMode {
            wants_reply: true,
            timeout,
            enforce: true,
            urgent: false,
        }
    }

    /// A request that wants no reply (`urgent`: write it at once).
    pub(crate) fn no_reply(urgent: bool) -> Self {
        CallMode {
            wants_reply: false,
            timeout: None,
            enforce: false,
            urgent,
        }
    }
}

/// Who the peer is.
#[derive(Clone, Debug)]
pub(crate) struct PeerInfo {
    /// The address of the peer's host: what its proxies carry.
    pub(crate) home: String,
    /// What to call the peer in messages.
    pub(crate) name: String,
}

/// How the link's bytes move.
pub(crate) enum Wire {
    /// farcall framing on a byte channel.
    Stream {
        channel: Arc<dyn Channel>,
        out: Mutex<Outbox>,
    },
    /// A ZeroMQ DEALER (pyacq's transport), with its monitor.
    Zmq {
        dealer: Mutex<transport::zmq::Dealer>,
        fd: RawFd,
        monitor_fd: RawFd,
        /// The monitor reported the connection gone: once the replies
        /// that made it are read, the link ends.
        dropped: AtomicBool,
    },
}

/// What the thread holding the reading role reads with.
pub(crate) enum ReadState {
    /// A channel's incremental frame reader.
    Stream(FrameReader),
    /// A DEALER (nothing to keep between reads).
    Zmq,
    /// A channel without a descriptor: a thread of its own reads it
    /// (blocking), and nobody else does.
    Pumped,
}

/// A link between this process and a peer. See the module docs.
pub struct Link {
    id: u64,
    wire: Wire,
    /// The reading role: whoever holds it reads and routes for everyone.
    role: Mutex<ReadState>,
    /// Someone saw the channel readable while another held the role.
    hint: AtomicBool,
    /// The signal of the thread holding the role while it sleeps in its
    /// poll, to wake it when news comes some other way (a ZeroMQ monitor).
    reader_signal: Mutex<Option<Arc<signal::Signal>>>,
    /// How many threads wait on the link without the role.
    sleeping: AtomicUsize,
    /// When a pool thread last started a job of this link, or a turn
    /// reading it (`coarse_nanos`; 0: none now): the I/O thread stays away
    /// meanwhile, as from a busy server's links (see `attended`).
    pool_attended: AtomicU64,
    flight: Mutex<InFlight>,
    /// The link has ended (`flight` says why): looked at without its lock.
    ended: AtomicBool,
    /// The peer closed with a notice (a goodbye), not by vanishing.
    farewell: AtomicBool,
    next_req_id: AtomicI64,
    /// References dropped here, released before the next request this
    /// link sends (or by the release thread, if none comes), so a call
    /// made after `del proxy` never overtakes the release.
    releases: Mutex<Vec<ProxyRef>>,
    /// `releases` is not empty: the hot path looks at this flag only.
    has_releases: AtomicBool,
    /// Held while releases are written (by one thread at a time).
    sending_releases: Mutex<()>,
    format: Format,
    timeout: Duration,
    /// This side's host: the objects requests on this link reach, and
    /// those sent over it (unless the sending thread has a server).
    host: Arc<Host>,
    /// Hosts that sent objects over this link, to release them when it
    /// goes.
    exporters: Mutex<Vec<Weak<Host>>>,
    /// The host that serves the objects sent over this link, when its
    /// user chose one (teleprox's `local_server`): before the thread's.
    local_host: Mutex<Option<Weak<Host>>>,
    executor: Arc<dyn Executor>,
    peer: PeerInfo,
    heartbeat: Heartbeat,
    /// When something last came from the peer (or it last took our
    /// bytes), on the [`coarse_nanos`] clock.
    last_seen: AtomicU64,
    /// When we last pinged, on the [`coarse_nanos`] clock (0: never).
    pinged: AtomicU64,
    /// The I/O thread's view of the link.
    watch: io::Watch,
}

/// Every live link, by the address of the peer's host, so that a proxy
/// finds the link to its object's home.
fn registry() -> &'static Mutex<HashMap<String, Vec<Weak<Link>>>> {
    static LINKS: OnceLock<Mutex<HashMap<String, Vec<Weak<Link>>>>> = OnceLock::new();
    LINKS.get_or_init(Default::default)
}

/// The reference point of the link clocks.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64
}

/// A cheap clock for what needs a few milliseconds of precision (when a
/// peer was last heard of, when a server thread left its poll), read on
/// every message: the kernel's coarse monotonic clock, in nanoseconds.
pub(crate) fn coarse_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The parts a new link is made of.
pub(crate) struct Parts {
    pub(crate) wire: Wire,
    pub(crate) reader: ReadState,
    pub(crate) format: Format,
    pub(crate) timeout: Duration,
    pub(crate) host: Arc<Host>,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) peer: PeerInfo,
    pub(crate) heartbeat: Heartbeat,
}

impl Link {
    /// Opens a link to the server at `address` (native or ZeroMQ),
    /// running the handshake.
    pub fn connect(address: &str, options: &LinkOptions) -> Result<Arc<Link>> {
        hello::dial(address, options)
    }

    /// Opens a symmetric link over `channel`, which only this process and
    /// its peer can reach (a child's pipes, a socket pair): both sides say
    /// who they are, and neither authenticates. Requests from the peer run
    /// on this process's [`Host::local`] (chain, else pool).
    pub fn over_private(channel: Arc<dyn Channel>, options: &LinkOptions) -> Result<Arc<Link>> {
        hello::private(channel, options)
    }

    /// Opens a symmetric link over `channel`, which others may reach (a
    /// user's channel object): both sides prove they hold the key first
    /// (`options.auth`: a key, else this process's key), then requests
    /// run as over [`Link::over_private`]. The peer opens its side the same
    /// way.
    pub fn over_channel(channel: Arc<dyn Channel>, options: &LinkOptions) -> Result<Arc<Link>> {
        hello::keyed(channel, options)
    }

    /// Opens a link over a socket already connected to a listener of
    /// peers (or a server), running the key handshake; `address` names
    /// the peer in messages and picks the key to prove.
    pub fn over_socket(
        channel: Arc<dyn Channel>,
        address: &str,
        options: &LinkOptions,
    ) -> Result<Arc<Link>> {
        hello::over_socket(channel, address, options)
    }

    /// Builds a link from its parts and starts watching it.
    pub(crate) fn assemble(parts: Parts) -> Arc<Link> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        // A channel without a descriptor is read by a thread of its own,
        // which takes the reader (and what it holds already) along.
        let (role, pump) = match (&parts.wire, parts.reader) {
            (Wire::Stream { channel, .. }, ReadState::Stream(reader))
                if channel.read_fd().is_none() =>
            {
                (ReadState::Pumped, Some(reader))
            }
            (_, reader) => (reader, None),
        };
        let link = Arc::new(Link {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            wire: parts.wire,
            role: Mutex::new(role),
            hint: AtomicBool::new(true),
            reader_signal: Mutex::new(None),
            sleeping: AtomicUsize::new(0),
            pool_attended: AtomicU64::new(0),
            flight: Mutex::new(InFlight::default()),
            ended: AtomicBool::new(false),
            farewell: AtomicBool::new(false),
            next_req_id: AtomicI64::new(1),
            releases: Mutex::new(Vec::new()),
            has_releases: AtomicBool::new(false),
            sending_releases: Mutex::new(()),
            format: parts.format,
            timeout: parts.timeout,
            host: parts.host,
            exporters: Mutex::new(Vec::new()),
            local_host: Mutex::new(None),
            executor: parts.executor,
            peer: parts.peer,
            heartbeat: parts.heartbeat,
            last_seen: AtomicU64::new(coarse_nanos()),
            pinged: AtomicU64::new(0),
            watch: io::Watch::default(),
        });
        let mut links = lock(registry());
        links.retain(|_, v| {
            v.retain(|w| w.strong_count() > 0);
            !v.is_empty()
        });
        links
            .entry(link.peer.home.clone())
            .or_default()
            .push(Arc::downgrade(&link));
        drop(links);
        io::watch(&link, pump);
        link
    }

    /// A live link to the peer whose host has address `home`, if this
    /// process has one.
    pub fn find(home: &str) -> Option<Arc<Link>> {
        lock(registry())
            .get(home)?
            .iter()
            .filter_map(Weak::upgrade)
            .find(|l| !l.is_dead())
    }

    /// A number naming the link within this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The serializer requests on this link are sent in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The default timeout of sync calls.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// This side's host (see the field).
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// The address of the peer's host: the `rpc_addr` of its proxies.
    pub fn peer_home(&self) -> &str {
        &self.peer.home
    }

    /// The peer, for messages.
    pub fn describe(&self) -> &str {
        &self.peer.name
    }

    /// Why the link is dead, if it is.
    pub fn dead(&self) -> Option<String> {
        lock(&self.flight).dead().map(str::to_owned)
    }

    /// True once the link has ended (see [`Link::dead`] for why).
    pub fn is_dead(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Number of calls sent and not yet taken by their caller.
    pub fn pending(&self) -> usize {
        lock(&self.flight).len()
    }

    /// True for links that carry requests both ways (native ones); a
    /// ZeroMQ client's link only carries its own calls.
    pub fn symmetric(&self) -> bool {
        matches!(self.wire, Wire::Stream { .. })
    }

    /// The descriptor the link is read from, if it has one.
    pub(crate) fn read_fd(&self) -> Option<RawFd> {
        match &self.wire {
            Wire::Stream { channel, .. } => channel.read_fd(),
            Wire::Zmq { fd, .. } => Some(*fd),
        }
    }

    /// True when a thread of its own reads the link (a blocking channel).
    pub(crate) fn pumped(&self) -> bool {
        matches!(&self.wire, Wire::Stream { channel, .. } if channel.read_fd().is_none())
    }

    // ---- sending ------------------------------------------------------

    /// The reference to send for `proxy`, a proxy to a third process's
    /// object that a reply passes on: the object's home (a
    /// farcall peer this process has a link to) is asked for a reference
    /// of the receiver's own (`farcall_share`, ahead of any release of
    /// ours on that link), marked so the receiver owns it. `None`: send
    /// `proxy` as it is (the receiver borrows it, as in pyacq).
    pub fn forward(proxy: &ProxyRef) -> Option<ProxyRef> {
        // Our own objects' proxies are not ours to share. One that goes
        // back to its home is harmless: the home drops a forwarded
        // reference that arrives in a reply (`Host::release_forwarded`).
        if Host::find(&proxy.rpc_addr).is_some() {
            return None;
        }
        let Some(home) = Link::find(&proxy.rpc_addr).filter(|l| l.format == Format::Farcall) else {
            // A reference made for us that cannot be shared is handed
            // over: its receiver owns it (it is marked so), we stop
            // releasing it.
            if proxy.forwarded() {
                crate::proxy::hand_over(proxy);
            }
            return None;
        };
        let random = u64::from_le_bytes(crate::auth::random::<8>().ok()?);
        let new_ref_id = FORWARDED_REF | (random & (FORWARDED_REF - 1));
        let opts = Share::opts(proxy, new_ref_id);
        let mode = CallMode::no_reply(false);
        if let Err(e) = home.send(Action::Share, (&opts).into(), ReturnType::Auto, mode) {
            log::debug!("could not share {proxy:?}: {e}");
            return None;
        }
        Some(ProxyRef {
            ref_id: new_ref_id,
            ..proxy.clone()
        })
    }

    /// Queues the release of `reference` (a proxy family's last handle
    /// was dropped): sent before this link's next request, or by
    /// [`Link::send_releases`]. Takes a lock nobody holds for more than a
    /// push or a take, so it can run in any drop (with the GIL held).
    pub(crate) fn release_later(&self, reference: ProxyRef) {
        let mut releases = lock(&self.releases);
        releases.push(reference);
        self.has_releases.store(true, Ordering::Release);
    }

    /// Sends the releases queued by [`Link::release_later`]. One thread
    /// at a time writes them (`sending_releases`), and the flag is cleared
    /// only when none is left: a request sent meanwhile from another
    /// thread waits here, so it never overtakes them.
    pub(crate) fn send_releases(self: &Arc<Self>) {
        let _one_writer = lock(&self.sending_releases);
        loop {
            let batch = {
                let mut releases = lock(&self.releases);
                if releases.is_empty() {
                    self.has_releases.store(false, Ordering::Release);
                    return;
                }
                std::mem::take(&mut *releases)
            };
            for reference in batch {
                let opts = protocol::command::Delete::opts(&reference);
                let sent = self
                    .encode_request(-1, Action::Delete, (&opts).into(), ReturnType::Auto)
                    .and_then(|frames| self.write_request(frames, false));
                if let Err(e) = sent {
                    log::debug!("could not release {reference:?}: {e}");
                }
            }
        }
    }

    /// Sends a request; returns its id (-1 when no reply is wanted).
    pub(crate) fn send(
        self: &Arc<Self>,
        action: Action,
        opts: Opts<'_>,
        return_type: ReturnType,
        mode: CallMode,
    ) -> Result<i64> {
        if self.has_releases.load(Ordering::Relaxed) {
            self.send_releases();
        }
        let req_id = if mode.wants_reply {
            self.next_req_id.fetch_add(1, Ordering::Relaxed)
        } else {
            -1
        };
        if mode.wants_reply {
            let earliest = lock(&self.flight).insert(req_id, mode.timeout, mode.enforce)?;
            if let Some(at) = earliest {
                io::deadline(self, at);
            }
        } else if let Some(why) = self.dead() {
            return Err(Error::Disconnected(why));
        }
        let sent = self
            .encode_request(req_id, action, opts, return_type)
            .and_then(|frames| self.write_request(frames, mode.urgent));
        if let Err(e) = sent {
            if mode.wants_reply {
                lock(&self.flight).forget(req_id);
            }
            return Err(e);
        }
        Ok(req_id)
    }

    fn encode_request(
        &self,
        req_id: i64,
        action: Action,
        opts: Opts<'_>,
        return_type: ReturnType,
    ) -> Result<Frames> {
        let mut exporter = self.exporter();
        // The call opts provider's entries join call_obj's own (hooks.rs).
        let context = match action {
            Action::CallObj => crate::hooks::call_opts()?,
            _ => Vec::new(),
        };
        if context.is_empty() {
            return protocol::request_frames(
                req_id,
                action,
                return_type,
                self.format,
                opts,
                &mut exporter,
            );
        }
        let extra = context.iter().map(|(k, v)| (k.as_str(), Field::Value(v)));
        let (fields, value);
        let opts = match opts {
            Opts::Fields(own) => {
                fields = own.iter().copied().chain(extra).collect::<Vec<_>>();
                Opts::Fields(&fields)
            }
            Opts::Value(own) => {
                let mut entries = match own {
                    Value::Map(entries) => entries.clone(),
                    _ => Vec::new(),
                };
                entries.extend(
                    context
                        .iter()
                        .map(|(k, v)| (Value::from(k.as_str()), v.clone())),
                );
                value = Value::Map(entries);
                Opts::Value(&value)
            }
        };
        protocol::request_frames(
            req_id,
            action,
            return_type,
            self.format,
            opts,
            &mut exporter,
        )
    }

    /// Who exports the local objects this thread sends: its server's host
    /// when it has one (pyacq's rule: objects of a thread with a server
    /// are served there), else this link's host on a symmetric link.
    /// Looked up at the first object, if any.
    fn exporter(&self) -> LinkExporter<'_> {
        LinkExporter {
            link: self,
            host: None,
            thread_host: true,
        }
    }

    /// Queues the reply to request `req_id`, written at once with `flush`.
    pub(crate) fn reply(
        self: &Arc<Self>,
        format: Format,
        req_id: i64,
        result: Result<Value>,
        flush: bool,
    ) {
        let mut exporter = LinkExporter {
            link: self,
            host: Some(self.host.clone()),
            thread_host: false,
        };
        let frames = protocol::reply_frames(format, req_id, result, &mut exporter)
            .or_else(|e| protocol::reply_frames(format, req_id, Err(e), &mut exporter));
        match frames {
            Ok(frames) => self.queue(Kind::Reply, frames, flush),
            Err(e) => log::error!("cannot encode a reply to {}: {e}", self.describe()),
        }
    }

    /// Tells the peer it need not run request `req_id` (best effort).
    pub(crate) fn send_cancel(self: &Arc<Self>, req_id: i64) {
        if self.is_dead() {
            return;
        }
        match &self.wire {
            Wire::Stream { .. } => {
                let (kind, frames) = message::cancel(req_id);
                self.queue(kind, frames, true);
            }
            // Only a farcall server knows the action; pyacq ones would
            // answer it with an error.
            Wire::Zmq { .. } if self.format == Format::Farcall => {
                let opts = protocol::command::Cancel::opts(req_id);
                let mode = CallMode::no_reply(true);
                let _ = self.send(Action::Cancel, Opts::Value(&opts), ReturnType::Auto, mode);
            }
            Wire::Zmq { .. } => {}
        }
    }

    // ---- ending ---------------------------------------------------------

    /// Closes the link: pending calls fail with `Disconnected(why)`, the
    /// peer reads the end of the stream, references the peer held are
    /// released.
    pub fn close(self: &Arc<Self>, why: &str) {
        self.end(why);
    }

    /// Closes the link after telling the peer (a disconnect notice, best
    /// effort): it knows the end was meant, not a crash.
    pub fn close_notifying(self: &Arc<Self>, why: &str) {
        let frames = protocol::reply::disconnect_frames(self.format);
        self.close_with_notice(frames, why);
    }

    /// True when the link ended because the peer said it was closing.
    pub fn peer_said_goodbye(&self) -> bool {
        self.farewell.load(Ordering::Acquire)
    }

    /// Sends `frames` (a disconnect notice) as the last message, then
    /// closes the link.
    pub(crate) fn close_with_notice(self: &Arc<Self>, frames: Frames, why: &str) {
        if let Wire::Stream { channel, out } = &self.wire {
            let mut out = lock(out);
            out.queue.push(Kind::Reply, frames);
            // Best effort, never blocking: a peer that does not read
            // loses its notice, not our time.
            let _ = out.queue.flush(channel.as_ref());
        }
        self.end(why);
    }

    /// A pool thread runs a job of this link, or reads it for the next.
    pub(crate) fn attend(&self) {
        self.pool_attended.store(coarse_nanos(), Ordering::Relaxed);
    }

    /// No pool thread looks after this link any more.
    pub(crate) fn unattend(&self) {
        self.pool_attended.store(0, Ordering::Relaxed);
    }

    /// True while a pool thread looks after this link, and not for longer
    /// than a server's grace: past it (a long job) the I/O thread reads
    /// the link again, so heartbeats are answered.
    pub(crate) fn attended(&self) -> bool {
        let since = self.pool_attended.load(Ordering::Relaxed);
        since != 0 && coarse_nanos().saturating_sub(since) < io::SERVER_GRACE.as_nanos() as u64
    }

    /// The link is dead: fail every pending call, stop watching it, end
    /// the channel, release what the peer held. Idempotent.
    pub(crate) fn end(&self, why: &str) {
        let mut wake = Wakeups::default();
        if !lock(&self.flight).fail_all(why, &mut wake) {
            return;
        }
        self.ended.store(true, Ordering::Release);
        log::debug!("link to {} ended: {why}", self.describe());
        match &self.wire {
            Wire::Stream { channel, .. } => channel.cancel(),
            Wire::Zmq { dealer, .. } => {
                let _ = lock(dealer).socket.set_linger(0);
            }
        }
        io::unwatch(self);
        // A reader asleep on the channel (see `read_while_idle`) leaves.
        if let Some(s) = lock(&self.reader_signal).as_ref() {
            s.notify();
        }
        self.release_exports();
        wake.run();
    }

    fn release_exports(&self) {
        let hosts = std::mem::take(&mut *lock(&self.exporters));
        for host in hosts.iter().filter_map(Weak::upgrade) {
            host.release_holder(self.id);
        }
    }

    /// Writes a request.
    fn write_request(self: &Arc<Self>, frames: Frames, urgent: bool) -> Result<()> {
        match &self.wire {
            Wire::Stream { .. } => {
                let (kind, frames) = message::request_in(chain::current_frame(), frames);
                self.write(kind, frames, urgent)
            }
            Wire::Zmq {
                dealer, dropped, ..
            } => {
                // No room means no peer: while the send waits, the I/O
                // thread reads the monitor, which says whether it is lost.
                let gone = || dropped.load(Ordering::SeqCst) || self.is_dead();
                let why = match transport::zmq::send_waiting(dealer, &frames, gone) {
                    Ok(transport::zmq::Sent::Queued) => None,
                    Ok(transport::zmq::Sent::PeerGone) => Some(
                        self.dead()
                            .unwrap_or_else(|| format!("connection to {} lost", self.describe())),
                    ),
                    Ok(transport::zmq::Sent::TimedOut) => Some(format!(
                        "connection to {} lost: no room to send for {} s",
                        self.describe(),
                        transport::zmq::SEND_TIMEOUT_MS / 1000
                    )),
                    Err(e) => Some(format!("connection to {} lost: {e}", self.describe())),
                };
                if let Some(why) = why {
                    self.end(&why);
                    return Err(Error::Disconnected(why));
                }
                // Sending may have taken the descriptor's signal for a reply
                // that is already here. A caller about to wait reads before
                // it sleeps, and so does a future when first polled (see
                // `set_waker`); a task waiting already, or a thread holding
                // the reading role, would miss it.
                if !urgent {
                    if lock(&self.flight).has_tasks() {
                        self.read_available();
                    } else if let Some(s) = lock(&self.reader_signal).as_ref() {
                        s.notify();
                    }
                }
                Ok(())
            }
        }
    }

    /// Marks that the peer showed signs of life just now.
    fn saw_peer(&self) {
        self.last_seen.store(coarse_nanos(), Ordering::Relaxed);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Wire::Stream { channel, .. } = &self.wire {
            channel.close();
        }
        self.release_exports();
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link#{}({})", self.id, self.peer.name)
    }
}

/// Exports local objects through a host, as held by the link the message
/// goes on; without a host (a ZeroMQ link in a thread with no server),
/// objects cannot travel by proxy.
struct LinkExporter<'a> {
    link: &'a Link,
    host: Option<Arc<Host>>,
    /// `host` is still to be found: the sending thread's (see
    /// [`Link::exporter`]).
    thread_host: bool,
}

impl Exporter for LinkExporter<'_> {
    fn export(&mut self, obj: &ObjectRef) -> Result<ProxyRef> {
        if std::mem::take(&mut self.thread_host) {
            let chosen = lock(&self.link.local_host).as_ref().and_then(Weak::upgrade);
            self.host = chosen
                .or_else(|| read::thread_service().map(|s| s.host()))
                .or_else(|| self.link.symmetric().then(|| self.link.host.clone()));
        }
        let Some(host) = &self.host else {
            return NoExport.export(obj);
        };
        let mut exporters = lock(&self.link.exporters);
        if !exporters
            .iter()
            .any(|h| std::ptr::eq(h.as_ptr(), Arc::as_ptr(host)))
        {
            exporters.retain(|h| h.strong_count() > 0);
            exporters.push(Arc::downgrade(host));
        }
        drop(exporters);
        HostExporter {
            host,
            holder: Some(self.link.id),
        }
        .export(obj)
    }
}

/// Calls into a link, as [`crate::Client`] and [`crate::Proxy`] make them.
impl Link {
    /// Makes `host` serve the objects sent over this link from any thread
    /// (`None`: the sending thread's server, as pyacq does). Held weakly:
    /// a closed server's host stops serving.
    pub fn set_local_host(&self, host: Option<&Arc<Host>>) {
        *lock(&self.local_host) = host.map(Arc::downgrade);
    }

    /// Sends `action` and waits for the reply (`timeout`: `None` waits
    /// without limit).
    pub(crate) fn call(
        self: &Arc<Self>,
        action: Action,
        opts: Opts<'_>,
        return_type: ReturnType,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let mode = CallMode::waited(timeout);
        let waiting = chain::Waiting::here(self.id);
        let req_id = self.send(action, opts, return_type, mode)?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        match self.wait(req_id, deadline, Some(&waiting))? {
            Some(outcome) => outcome,
            None => {
                self.abandon(req_id);
                Err(Error::Timeout(timeout.unwrap_or(Duration::MAX)))
            }
        }
    }

    /// Forgets call `req_id` and, if it was still pending, tells the peer.
    pub(crate) fn abandon(self: &Arc<Self>, req_id: i64) {
        if lock(&self.flight).forget(req_id) {
            self.send_cancel(req_id);
        }
    }

    /// What a waiter finds for call `req_id`.
    pub(crate) fn status(&self, req_id: i64) -> Status {
        lock(&self.flight).take(req_id)
    }

    /// True when call `req_id` is answered (or unknown), reading what has
    /// arrived first.
    pub(crate) fn is_done(self: &Arc<Self>, req_id: i64) -> bool {
        self.flush_queued();
        self.read_available();
        lock(&self.flight).is_done(req_id)
    }

    /// Registers the task waiting for call `req_id`; false when it is done
    /// already.
    pub(crate) fn set_waker(self: &Arc<Self>, req_id: i64, waker: &std::task::Waker) -> bool {
        self.flush_queued();
        let waiting = lock(&self.flight).set_waker(req_id, waker);
        if waiting {
            // Somebody must read for the task: the I/O thread, if no
            // caller of this process does.
            io::wanted(self);
            if matches!(self.wire, Wire::Zmq { .. }) {
                // A ZeroMQ descriptor signals news once: a send since the
                // reply came may have taken the signal, so look now.
                self.read_available();
            }
        }
        waiting
    }
}

/// The link of the request this thread is running, if any (across's
/// `get_connection()`).
pub fn current_link() -> Option<Arc<Link>> {
    chain::current_link()
}

pub use read::{set_thread_service, thread_service, Service};
