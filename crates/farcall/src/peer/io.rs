//! The I/O thread: the side of every link that user code can never block.
//!
//! One thread per process reads the links nobody else reads (a client
//! with futures pending and nobody waiting, a symmetric link between
//! calls, a server's links while its thread is busy in a long call),
//! writes what could not be written at once, enforces the deadlines of
//! calls nobody waits on, and sends heartbeats. It never runs user code
//! beyond the wakers of completed futures (and the Python bindings hand
//! those to a thread of their own).
//!
//! It stays out of the way of callers: each link is registered one-shot
//! (`EPOLLONESHOT`), so when a caller holds the reading role (it waits for
//! its reply) the I/O thread wakes at most once, finds the role taken,
//! pauses the link and looks again a little later, instead of racing the
//! caller for every message. A server's links are left to the server
//! thread while it serves, and watched once it has been busy for
//! [`SERVER_GRACE`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::in_flight::Wakeups;
use super::{message, nanos_since_epoch, Link, Wire};
use crate::channel::frame::{Fill, FrameReader, DEFAULT_MAX_MESSAGE};
use crate::channel::Channel;
use crate::protocol::Beat;
use crate::sync::lock;

/// How soon the I/O thread looks again at a link whose callers read it
/// (ms), at first ...
const RECHECK_MS: u32 = 2;
/// ... and at the latest, while they go on reading it.
const CALM_MS: u32 = 32;
/// How long a server thread may be busy before the I/O thread reads its
/// links (and answers their heartbeats) in its place.
pub(crate) const SERVER_GRACE: Duration = Duration::from_millis(200);
/// How often heartbeats are checked.
const BEAT_TICK: Duration = Duration::from_millis(100);

/// Which descriptor of a link an event is for.
const DATA: u64 = 0;
const MONITOR: u64 = 1;
const WRITE: u64 = 2;
/// The event of the I/O thread's own eventfd.
const WAKE: u64 = u64::MAX;

/// The I/O thread's view of one link.
#[derive(Debug)]
pub(crate) struct Watch {
    /// Someone else reads it: do not watch for input until a recheck.
    paused: AtomicBool,
    /// A recheck is scheduled.
    recheck: AtomicBool,
    /// Output waits for room.
    out: AtomicBool,
    /// How long to wait before looking again at a link its callers read
    /// (ms): doubled each time they still do, back to the least once the
    /// I/O thread finds work of its own there.
    calm_ms: AtomicU32,
    /// Which descriptors are in the epoll set (changed under this lock).
    registered: Mutex<Registered>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            paused: AtomicBool::new(false),
            recheck: AtomicBool::new(false),
            out: AtomicBool::new(false),
            calm_ms: AtomicU32::new(RECHECK_MS),
            registered: Mutex::new(Registered::default()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Recheck,
    Deadline,
    Beat,
}

struct IoThread {
    epfd: OwnedFd,
    wake_fd: OwnedFd,
    state: Mutex<State>,
    /// When the thread will look at its timers next (ns since epoch).
    sleeping_until: AtomicU64,
}

#[derive(Default)]
struct State {
    links: HashMap<u64, Weak<Link>>,
    /// (when, link id, what), earliest first.
    timers: BinaryHeap<Reverse<(u64, u64, Timer)>>,
    beat_scheduled: bool,
}

fn io() -> &'static IoThread {
    static IO: OnceLock<&'static IoThread> = OnceLock::new();
    IO.get_or_init(|| {
        // SAFETY: epoll_create1 and eventfd return new descriptors or -1.
        let (epfd, wake_fd) = unsafe {
            (
                libc::epoll_create1(libc::EPOLL_CLOEXEC),
                libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC),
            )
        };
        assert!(
            epfd >= 0 && wake_fd >= 0,
            "cannot create the I/O thread's descriptors"
        );
        let io: &'static IoThread = Box::leak(Box::new(IoThread {
            // SAFETY: fresh descriptors we own.
            epfd: unsafe { OwnedFd::from_raw_fd(epfd) },
            wake_fd: unsafe { OwnedFd::from_raw_fd(wake_fd) },
            state: Mutex::new(State::default()),
            sleeping_until: AtomicU64::new(u64::MAX),
        }));
        ctl(io, libc::EPOLL_CTL_ADD, wake_fd, WAKE, libc::EPOLLIN as u32);
        std::thread::Builder::new()
            .name("farcall-io".into())
            .spawn(move || io.run())
            .expect("spawning the I/O thread");
        io
    })
}

fn ctl(io: &IoThread, op: libc::c_int, fd: RawFd, data: u64, events: u32) -> bool {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: a valid epoll descriptor and event.
    unsafe { libc::epoll_ctl(io.epfd.as_raw_fd(), op, fd, &mut ev) == 0 }
}

fn token(link: &Link, which: u64) -> u64 {
    (link.id << 2) | which
}

/// Starts watching a new link; a link without a descriptor gets a thread
/// that reads it with `pump`.
pub(crate) fn watch(link: &Arc<Link>, pump: Option<FrameReader>) {
    let io = io();
    // Known before its descriptors are armed: an event that fires at once
    // (a one-shot one, never re-armed if lost) must find the link.
    let beat_at = {
        let mut st = lock(&io.state);
        st.links.insert(link.id, Arc::downgrade(link));
        (!std::mem::replace(&mut st.beat_scheduled, true)).then(|| {
            let at = nanos_since_epoch(Instant::now() + BEAT_TICK);
            st.timers.push(Reverse((at, 0, Timer::Beat)));
            at
        })
    };
    if let Some(at) = beat_at {
        io.poke(at);
    }
    match &link.wire {
        Wire::Stream { channel, .. } => match channel.read_fd() {
            Some(_) => arm(link),
            None => {
                let weak = Arc::downgrade(link);
                let channel = channel.clone();
                let reader = pump.unwrap_or_else(|| FrameReader::new(DEFAULT_MAX_MESSAGE));
                let spawned = std::thread::Builder::new()
                    .name("farcall-pump".into())
                    .spawn(move || run_pump(weak, channel, reader));
                if spawned.is_err() {
                    link.end("cannot start a thread to read the channel");
                }
            }
        },
        Wire::Zmq { monitor_fd, .. } => {
            arm(link);
            let once = (libc::EPOLLIN | libc::EPOLLONESHOT) as u32;
            ctl(
                io,
                libc::EPOLL_CTL_ADD,
                *monitor_fd,
                token(link, MONITOR),
                once,
            );
        }
    }
}

/// Stops watching a link that ended.
pub(crate) fn unwatch(link: &Link) {
    let io = io();
    {
        let mut reg = lock(&link.watch.registered);
        let fds: Vec<(RawFd, bool)> = match &link.wire {
            Wire::Stream { channel, .. } => vec![
                (channel.read_fd().unwrap_or(-1), reg.data),
                (channel.write_fd().unwrap_or(-1), reg.write),
            ],
            Wire::Zmq { fd, monitor_fd, .. } => vec![(*fd, reg.data), (*monitor_fd, true)],
        };
        for (fd, present) in fds {
            if present && fd >= 0 {
                ctl(io, libc::EPOLL_CTL_DEL, fd, 0, 0);
            }
        }
        *reg = Registered::default();
    }
    lock(&io.state).links.remove(&link.id);
}

/// The epoll events to watch on a link's data descriptor.
fn interest(link: &Link, read: bool, write: bool) -> u32 {
    let mut events = 0;
    if read {
        events |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
    }
    if write
        && !matches!(&link.wire, Wire::Stream { channel, .. } if channel.write_fd() != channel.read_fd())
    {
        events |= libc::EPOLLOUT as u32;
    }
    events
}

/// Which of a link's descriptors are in the I/O thread's epoll set.
#[derive(Debug, Default)]
pub(crate) struct Registered {
    data: bool,
    write: bool,
}

/// Puts `fd` in the epoll set for `events` (one-shot), or takes it out
/// when there are none: a descriptor in an epoll set costs every write to
/// it a callback, disarmed or not, and the links callers read (or a busy
/// server's) should cost their writers nothing.
fn register(io: &IoThread, fd: RawFd, data: u64, events: u32, present: &mut bool) {
    if events == 0 {
        if std::mem::take(present) {
            ctl(io, libc::EPOLL_CTL_DEL, fd, 0, 0);
        }
        return;
    }
    let op = if *present {
        libc::EPOLL_CTL_MOD
    } else {
        libc::EPOLL_CTL_ADD
    };
    *present = ctl(io, op, fd, data, events | libc::EPOLLONESHOT as u32);
}

/// Re-arms a link's descriptors for what the I/O thread waits for now.
fn arm(link: &Link) {
    if link.is_dead() {
        return;
    }
    let io = io();
    let read = !link.watch.paused.load(Ordering::SeqCst);
    let write = link.watch.out.load(Ordering::SeqCst);
    let mut reg = lock(&link.watch.registered);
    let reg = &mut *reg;
    match &link.wire {
        Wire::Stream { channel, .. } => {
            let Some(r) = channel.read_fd() else {
                return;
            };
            let events = interest(link, read, write);
            register(io, r, token(link, DATA), events, &mut reg.data);
            if let Some(w) = channel.write_fd().filter(|w| *w != r) {
                let events = if write { libc::EPOLLOUT as u32 } else { 0 };
                register(io, w, token(link, WRITE), events, &mut reg.write);
            }
        }
        Wire::Zmq { fd, .. } => {
            let events = interest(link, read, false);
            register(io, *fd, token(link, DATA), events, &mut reg.data);
        }
    }
}

/// The link has output that waits for room: write it when there is.
pub(crate) fn want_write(link: &Link) {
    if link.pumped() {
        return;
    }
    if !link.watch.out.swap(true, Ordering::SeqCst) {
        arm(link);
    }
}

/// Somebody (a task) waits on the link: read it promptly when nobody
/// else does.
pub(crate) fn wanted(link: &Link) {
    if link.watch.paused.swap(false, Ordering::SeqCst) {
        arm(link);
    }
}

/// A call on `link` times out at `at` unless answered.
pub(crate) fn deadline(link: &Link, at: Instant) {
    schedule(link, at, Timer::Deadline);
}

fn schedule(link: &Link, at: Instant, timer: Timer) {
    let io = io();
    let at = nanos_since_epoch(at);
    lock(&io.state).timers.push(Reverse((at, link.id, timer)));
    io.poke(at);
}

/// Stops reading `link` until a recheck `after` from now (still writing
/// it, if output waits).
fn pause(link: &Link, after: Duration) {
    link.watch.paused.store(true, Ordering::SeqCst);
    if !link.watch.recheck.swap(true, Ordering::SeqCst) {
        schedule(link, Instant::now() + after, Timer::Recheck);
    }
    // Out of the epoll set, unless output waits.
    arm(link);
}

/// A pool thread looks after `link` (it runs a job of it, then reads it
/// for the next request): stay away from its input, as from a busy
/// server's links. Taking it out of the epoll set matters: while it is
/// in, every message the pool thread reads first wakes this thread for
/// nothing (the event is gone when it looks, so it stays armed).
pub(crate) fn leave_to_pool(link: &Link) {
    if !link.watch.paused.load(Ordering::SeqCst) {
        pause(link, SERVER_GRACE / 2);
    }
}

/// Pauses a link its callers read, backing off while they go on.
fn leave_to_callers(link: &Link) {
    let calm = link.watch.calm_ms.load(Ordering::Relaxed);
    link.watch
        .calm_ms
        .store((calm * 2).min(CALM_MS), Ordering::Relaxed);
    pause(link, Duration::from_millis(u64::from(calm)));
}

impl IoThread {
    /// Wakes the thread if it sleeps past `at`.
    fn poke(&self, at: u64) {
        if at < self.sleeping_until.load(Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes to our eventfd.
            unsafe {
                libc::write(
                    self.wake_fd.as_raw_fd(),
                    &one as *const u64 as *const libc::c_void,
                    8,
                )
            };
        }
    }

    fn run(&self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let next = lock(&self.state)
                .timers
                .peek()
                .map_or(u64::MAX, |Reverse((at, _, _))| *at);
            self.sleeping_until.store(next, Ordering::SeqCst);
            let now = nanos_since_epoch(Instant::now());
            let timeout_ms = if next == u64::MAX {
                -1
            } else {
                // Rounded up: waking early would only spin.
                next.saturating_sub(now)
                    .div_ceil(1_000_000)
                    .min(i32::MAX as u64) as i32
            };
            // SAFETY: a valid epoll descriptor and event buffer.
            let n = unsafe {
                libc::epoll_wait(
                    self.epfd.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    timeout_ms,
                )
            };
            self.sleeping_until.store(0, Ordering::SeqCst);
            for ev in events.iter().take(n.max(0) as usize) {
                let (data, flags) = (ev.u64, ev.events);
                if data == WAKE {
                    let mut count: u64 = 0;
                    // SAFETY: reads 8 bytes from our non-blocking eventfd.
                    unsafe {
                        libc::read(
                            self.wake_fd.as_raw_fd(),
                            &mut count as *mut u64 as *mut libc::c_void,
                            8,
                        )
                    };
                    continue;
                }
                let link = lock(&self.state)
                    .links
                    .get(&(data >> 2))
                    .and_then(Weak::upgrade);
                if let Some(link) = link {
                    on_event(&link, data & 3, flags);
                }
            }
            self.run_timers();
        }
    }

    fn run_timers(&self) {
        let now = Instant::now();
        let now_ns = nanos_since_epoch(now);
        loop {
            let (timer, link) = {
                let mut st = lock(&self.state);
                match st.timers.peek() {
                    Some(Reverse((at, _, _))) if *at <= now_ns => {}
                    _ => return,
                }
                let Reverse((_, id, timer)) = st.timers.pop().expect("peeked");
                if timer == Timer::Beat {
                    let links: Vec<Weak<Link>> = st.links.values().cloned().collect();
                    if links.is_empty() {
                        st.beat_scheduled = false;
                    } else {
                        let at = nanos_since_epoch(now + BEAT_TICK);
                        st.timers.push(Reverse((at, 0, Timer::Beat)));
                    }
                    drop(st);
                    links
                        .iter()
                        .filter_map(Weak::upgrade)
                        .for_each(|l| beat(&l));
                    continue;
                }
                (timer, st.links.get(&id).and_then(Weak::upgrade))
            };
            let Some(link) = link else { continue };
            match timer {
                Timer::Recheck => {
                    link.watch.recheck.store(false, Ordering::SeqCst);
                    read(&link);
                }
                Timer::Deadline => expire(&link, now),
                Timer::Beat => unreachable!("handled above"),
            }
        }
    }
}

fn on_event(link: &Arc<Link>, which: u64, flags: u32) {
    if which == MONITOR {
        let Wire::Zmq {
            dealer,
            monitor_fd,
            dropped,
            ..
        } = &link.wire
        else {
            return;
        };
        let gone = crate::transport::zmq::dropped(&lock(dealer).monitor).unwrap_or(true);
        if gone {
            // Replies that made it count: whoever reads ends the link
            // once it has read them.
            dropped.store(true, Ordering::SeqCst);
            link.read_available();
        } else {
            let once = (libc::EPOLLIN | libc::EPOLLONESHOT) as u32;
            ctl(
                io(),
                libc::EPOLL_CTL_MOD,
                *monitor_fd,
                token(link, MONITOR),
                once,
            );
        }
        return;
    }
    if flags & libc::EPOLLOUT as u32 != 0 {
        link.watch.out.store(false, Ordering::SeqCst);
        match link.flush_now() {
            Ok(true) => {}
            Ok(false) => link.watch.out.store(true, Ordering::SeqCst),
            Err(e) => {
                link.write_failed(&e);
                return;
            }
        }
        // Room again: requests held back because the peer did not read
        // our replies can be read now.
        if flags & !(libc::EPOLLOUT as u32) == 0 && which == WRITE {
            arm(link);
            return;
        }
    }
    read(link);
}

/// Reads a link for its callers, unless someone else does (then looks
/// again later, later each time they still do).
fn read(link: &Arc<Link>) {
    if link.is_dead() {
        return;
    }
    if link.executor.attended() || link.attended() {
        pause(link, SERVER_GRACE / 2);
        return;
    }
    match link.read_available() {
        Some(routed) => {
            if routed > 0 {
                link.watch.calm_ms.store(RECHECK_MS, Ordering::Relaxed);
            }
            link.watch.paused.store(false, Ordering::SeqCst);
            arm(link);
        }
        None => leave_to_callers(link),
    }
}

/// Fails the calls of `link` whose deadline passed, and tells the peer.
fn expire(link: &Arc<Link>, now: Instant) {
    let mut wake = Wakeups::default();
    let (expired, next) = lock(&link.flight).expire(now, &mut wake);
    if let Some(next) = next {
        schedule(link, next, Timer::Deadline);
    }
    for req_id in expired {
        link.send_cancel(req_id);
    }
    wake.run();
}

/// Pings a link that has been silent, and ends one silent for too long.
fn beat(link: &Arc<Link>) {
    if link.is_dead() {
        return;
    }
    if let Wire::Zmq { .. } = &link.wire {
        // libzmq runs its own heartbeats; this only catches replies whose
        // descriptor signal another thread's send consumed.
        if link.pending() > 0 && !link.executor.attended() {
            link.read_available();
        }
        return;
    }
    let hb = link.heartbeat;
    // A channel without a descriptor blocks on writes: the I/O thread must
    // not write to it (its own reading thread answers the peer's pings).
    if hb.timeout.is_zero() || link.pumped() {
        return;
    }
    // The clock of `last_seen` and `pinged`.
    let now_ns = super::coarse_nanos();
    let silent =
        Duration::from_nanos(now_ns.saturating_sub(link.last_seen.load(Ordering::Relaxed)));
    if silent >= hb.timeout {
        link.end(&format!(
            "{} stopped answering (no heartbeat for {:.1} s)",
            link.describe(),
            silent.as_secs_f64()
        ));
        return;
    }
    let pinged = Duration::from_nanos(now_ns.saturating_sub(link.pinged.load(Ordering::Relaxed)));
    if silent >= hb.interval && pinged >= hb.interval {
        link.pinged.store(now_ns, Ordering::Relaxed);
        let (kind, frames) = message::beat(Beat::Ping);
        link.queue(kind, frames, true);
    }
}

/// Reads a channel that has no descriptor (it blocks), in a thread of its
/// own, until the channel ends or the link goes. Holds the link only while
/// routing, so a link nobody uses can still be dropped (which cancels the
/// channel and ends the read).
fn run_pump(link: Weak<Link>, channel: Arc<dyn Channel>, mut reader: FrameReader) {
    loop {
        let Some(strong) = link.upgrade() else { return };
        let mut wake = Wakeups::default();
        let routed = (|| -> crate::error::Result<()> {
            while let Some((kind, frames)) = reader.next_message()? {
                strong.route(kind, frames, &mut wake)?;
            }
            Ok(())
        })();
        wake.run();
        if let Err(e) = routed {
            strong.end(&format!("link to {} dropped: {e}", strong.describe()));
            return;
        }
        drop(strong);
        let filled = reader.fill(channel.as_ref());
        let Some(strong) = link.upgrade() else { return };
        match filled {
            Ok(Fill::Data) => strong.saw_peer(),
            Ok(Fill::WouldBlock) => {}
            Ok(Fill::Eof) => {
                strong.end(&format!("{} closed the connection", strong.describe()));
                return;
            }
            Err(e) => {
                strong.end(&format!("link to {} dropped: {e}", strong.describe()));
                return;
            }
        }
    }
}
