//! The reading role, and how a caller waits for its reply.
//!
//! A sync call writes its request and reads the reply in the calling
//! thread: no I/O thread sits between the caller and the socket. One
//! thread at a time holds a link's reading role; whoever holds it reads
//! every message there is and routes it: a reply to its caller's slot, a
//! request to the link's executor, a cancel to the executor, a ping
//! answered at once. The role is never held while user code runs, so a
//! busy thread never keeps a link unread. Threads waiting on a link
//! without the role sleep on their signal; the role holder wakes one of
//! them when it leaves, and the I/O thread reads links nobody else reads.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::chain::Waiting;
use super::executor::{self, Job};
use super::in_flight::{Status, Wakeups};
use super::signal::Signal;
use super::{io, Link, ReadState, Wire};
use crate::channel::frame::{Fill, Kind};
use crate::channel::poll;
use crate::codec::Format;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::protocol::{message, Beat, Frames, Message, Reply};
use crate::sync::lock;
use crate::transport::{self, spin};
use crate::value::Value;

/// How long a ZeroMQ reader sleeps at most: ZeroMQ's descriptor signals
/// edges that another thread's send may consume, and a short slice bounds
/// the cost of that rare race.
const ZMQ_SLICE: Duration = Duration::from_millis(10);

/// A server that serves in the thread that registered it
/// (`Server::run_lazy`): a caller waiting in that thread keeps serving
/// it, which makes A -> B -> A calls through servers complete.
pub trait Service: Send + Sync {
    /// The server's host (objects this thread sends are served there).
    fn host(&self) -> Arc<Host>;
    /// The descriptor that becomes readable when the server has work.
    fn poll_fd(&self) -> RawFd;
    /// True when requests wait in the server's queue.
    fn has_work(&self) -> bool;
    /// Handles what is ready, without waiting.
    fn serve(&self) -> Result<usize>;
    /// True once the server is closed: it serves this thread no more.
    fn closed(&self) -> bool;
}

thread_local! {
    static SERVICE: RefCell<Option<Arc<dyn Service>>> = const { RefCell::new(None) };
}

/// Registers (or, with `None`, removes) the server this thread serves.
pub fn set_thread_service(service: Option<Arc<dyn Service>>) {
    SERVICE.with(|s| *s.borrow_mut() = service);
}

/// The server this thread serves, if any (a closed one is forgotten: the
/// objects this thread sends are then served over their links).
pub fn thread_service() -> Option<Arc<dyn Service>> {
    SERVICE.with(|s| {
        let mut s = s.borrow_mut();
        if s.as_ref().is_some_and(|service| service.closed()) {
            *s = None;
        }
        s.clone()
    })
}

impl Link {
    /// Reads and routes whatever has arrived, unless another thread holds
    /// the role (it will). Called by whoever saw the channel readable.
    /// `None` when another thread holds the role, else how many messages
    /// this thread routed.
    pub(crate) fn read_available(self: &Arc<Self>) -> Option<usize> {
        if self.pumped() {
            return None;
        }
        // A note for whoever holds the role: it looks again before leaving.
        self.hint.store(true, Ordering::SeqCst);
        let mut routed = None;
        loop {
            let Ok(mut role) = self.role.try_lock() else {
                // Wake the holder if it sleeps: it reads on waking.
                if let Some(s) = lock(&self.reader_signal).as_ref() {
                    s.notify();
                }
                return routed;
            };
            let mut wake = Wakeups::default();
            let drained = self.drain(&mut role, &mut wake);
            *routed.get_or_insert(0) += *drained.as_ref().unwrap_or(&0);
            self.leave(role, drained, wake);
            // Data seen while we held the role: take it, unless someone
            // else already did.
            if !self.hint.load(Ordering::SeqCst) {
                return routed;
            }
        }
    }

    /// Gives the role up after a turn: ends the link on a read error,
    /// hands the role to a sleeping waiter, then wakes whoever the turn
    /// completed (never under the role).
    pub(crate) fn leave(
        self: &Arc<Self>,
        role: MutexGuard<'_, ReadState>,
        drained: Result<usize>,
        wake: Wakeups,
    ) {
        drop(role);
        if let Err(e) = drained {
            let why = match e {
                Error::Disconnected(why) => why,
                other => {
                    log::warn!("dropping the link to {}: {other}", self.describe());
                    format!("link to {} dropped: {other}", self.describe())
                }
            };
            self.end(&why);
        }
        if self.sleeping.load(Ordering::SeqCst) > 0 {
            let sleeper = lock(&self.flight).sleepers.first().cloned();
            if let Some(s) = sleeper {
                s.notify();
            }
        }
        wake.run();
    }

    /// Reads and routes every message that can be read without waiting.
    /// Errors mean the link is unusable.
    fn drain(self: &Arc<Self>, role: &mut ReadState, wake: &mut Wakeups) -> Result<usize> {
        // Whatever was noted, this turn reads it.
        let hinted = self.hint.swap(false, Ordering::SeqCst);
        match (role, &self.wire) {
            (ReadState::Stream(reader), Wire::Stream { channel, .. }) => {
                if hinted {
                    reader.mark_readable();
                }
                let mut routed = 0;
                loop {
                    if let Some((kind, frames)) = reader.next_message()? {
                        self.route(kind, frames, wake)?;
                        routed += 1;
                        if self.backlogged() {
                            // The peer does not read our replies: read no
                            // more of its requests until it does.
                            return Ok(routed);
                        }
                        continue;
                    }
                    if reader.drained() {
                        if !self.hint.swap(false, Ordering::SeqCst) {
                            return Ok(routed);
                        }
                        reader.mark_readable();
                    }
                    match reader.fill(channel.as_ref())? {
                        Fill::Data => self.saw_peer(),
                        Fill::WouldBlock => return Ok(routed),
                        Fill::Eof => {
                            return Err(Error::Disconnected(format!(
                                "{} closed the connection",
                                self.describe()
                            )))
                        }
                    }
                }
            }
            (
                ReadState::Zmq,
                Wire::Zmq {
                    dealer, dropped, ..
                },
            ) => {
                let mut routed = 0;
                loop {
                    // A receive that finds nothing is what looks at libzmq's
                    // commands (one syscall); asking for the socket's events
                    // first would cost one per message.
                    let Some(frames) = transport::zmq::try_recv(&lock(dealer).socket)? else {
                        // Replies first: a server that answered and then
                        // closed has still answered. The I/O thread reads
                        // the monitor and raises `dropped`.
                        if dropped.load(Ordering::SeqCst) {
                            return Err(Error::Disconnected(format!(
                                "connection to {} lost",
                                self.describe()
                            )));
                        }
                        return Ok(routed);
                    };
                    self.saw_peer();
                    self.deliver(&frames, wake)?;
                    routed += 1;
                }
            }
            (ReadState::Pumped, _) => Ok(0),
            _ => unreachable!("a link reads the way its wire says"),
        }
    }

    /// Routes one native message.
    pub(crate) fn route(
        self: &Arc<Self>,
        kind: Kind,
        frames: Frames,
        wake: &mut Wakeups,
    ) -> Result<()> {
        match Message::parse(kind, frames)? {
            Message::Request(Ok(request)) => self.executor.push(Job {
                link: self.clone(),
                request,
            }),
            Message::Request(Err(bad)) => {
                log::warn!("malformed request from {}: {}", self.describe(), bad.error);
                if let Some(req_id) = bad.req_id.filter(|id| *id >= 0) {
                    self.reply(Format::Msgpack, req_id, Err(bad.error), true);
                }
            }
            Message::Reply(frames) => self.deliver(&frames, wake)?,
            Message::Hello(_) => {
                return Err(Error::Protocol(
                    "a handshake message on an open link".into(),
                ))
            }
            Message::Cancel(req_id) => self.executor.cancel(self.id, req_id),
            Message::Beat(Beat::Ping) => {
                let (kind, frames) = message::beat(Beat::Pong);
                self.queue(kind, frames, true);
            }
            Message::Beat(Beat::Pong) => {}
        }
        Ok(())
    }

    /// Hands a reply to its caller; a disconnect notice ends the link.
    fn deliver(&self, frames: &[bytes::Bytes], wake: &mut Wakeups) -> Result<()> {
        match Reply::parse(self.format, frames) {
            Ok(Reply::Return { req_id, result }) => {
                // Nobody waits (a timed-out or one-way call): dropped.
                lock(&self.flight).complete(req_id, result, wake);
                Ok(())
            }
            Ok(Reply::Disconnect) => {
                self.farewell.store(true, Ordering::Release);
                Err(Error::Disconnected(format!(
                    "the server at {} closed",
                    self.describe()
                )))
            }
            Err(e) => {
                log::warn!("unreadable reply from {}: {e}", self.describe());
                Ok(())
            }
        }
    }

    /// Reads the link as its reader while this thread has nothing else to
    /// do (a pool thread after a job of this link): until `done()`, the
    /// `deadline`, the link's end, or a caller of this process waits to
    /// read it. Between messages the thread sleeps in `poll` on the
    /// channel and its own signal, so the peer's next request wakes it
    /// directly (one wake-up per call, as a server thread has) instead of
    /// waking the I/O thread, which would wake a pool thread.
    pub(crate) fn read_while_idle(self: &Arc<Self>, deadline: Instant, done: impl Fn() -> bool) {
        if self.pumped() || !matches!(self.wire, Wire::Stream { .. }) {
            return;
        }
        let signal = Signal::current();
        // A caller that starts waiting meanwhile wakes us (see `sleep`).
        *lock(&self.reader_signal) = Some(signal.clone());
        while !done() && !self.is_dead() && Instant::now() < deadline {
            if self.sleeping.load(Ordering::SeqCst) > 0 {
                break; // a caller reads its own reply: no hop for it
            }
            let Ok(role) = self.role.try_lock() else {
                break; // someone else reads
            };
            self.attend();
            // Turns short enough to renew `attend` within a server's grace.
            let turn = deadline.min(Instant::now() + io::SERVER_GRACE / 2);
            if self.read_turn(role, Some(turn), &signal, None).is_err() {
                break;
            }
        }
        *lock(&self.reader_signal) = None;
    }

    /// Waits for the reply to `req_id` until `deadline`; `None` when the
    /// deadline passes first (the call stays pending). Meanwhile runs the
    /// requests of this thread's call chain and serves this thread's
    /// server.
    pub(crate) fn wait(
        self: &Arc<Self>,
        req_id: i64,
        deadline: Option<Instant>,
        registered: Option<&Waiting>,
    ) -> Result<Option<Result<Value>>> {
        let signal = Signal::current();
        {
            // The reply may be here already (a pipelined future): one lock.
            let mut flight = lock(&self.flight);
            match flight.take(req_id) {
                Status::Done(outcome) => return Ok(Some(outcome)),
                Status::Unknown => {
                    let why = format!("no call {req_id} is pending");
                    return Ok(Some(Err(Error::Protocol(why))));
                }
                Status::Pending => flight.set_waiter(req_id, Some(signal.clone())),
            }
        }
        self.flush_queued();
        // A sync call registered as waiting before it sent; others now.
        let own;
        let waiting = match registered {
            Some(w) => w,
            None => {
                own = Waiting::here(self.id);
                &own
            }
        };
        let service = thread_service();
        let mut last_look = false;
        // The table was looked at just above: the first turn reads (a
        // reply another thread routes meanwhile notifies our signal).
        let mut first = true;
        let got = loop {
            if !std::mem::take(&mut first) {
                match self.status(req_id) {
                    Status::Done(outcome) => break Some(outcome),
                    Status::Unknown => {
                        break Some(Err(Error::Protocol(format!("no call {req_id} is pending"))))
                    }
                    Status::Pending => {}
                }
            }
            if let Some(job) = waiting.next_job() {
                executor::run_detached(job);
                continue;
            }
            if let Some(s) = service.as_ref().filter(|s| s.has_work()) {
                s.serve()?;
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                // Time is up, but what has arrived counts: look once more.
                if last_look {
                    break None;
                }
                last_look = true;
                self.read_available();
                continue;
            }
            let role = if self.pumped() {
                None // its own thread reads it
            } else {
                self.role.try_lock().ok()
            };
            let serve = match role {
                Some(role) => self.read_turn(role, deadline, &signal, service.as_deref())?,
                None => self.sleep(req_id, deadline, &signal, service.as_deref())?,
            };
            if serve {
                if let Some(s) = &service {
                    s.serve()?;
                }
            }
        };
        if got.is_none() {
            // Still pending: whoever answers it later has nobody to wake.
            lock(&self.flight).set_waiter(req_id, None);
        }
        Ok(got)
    }

    /// One turn as the reader: route what is there, else wait (up to
    /// `deadline`) for the channel, this thread's signal or its server.
    /// Returns true when the server has work.
    fn read_turn(
        self: &Arc<Self>,
        mut role: MutexGuard<'_, ReadState>,
        deadline: Option<Instant>,
        signal: &Signal,
        service: Option<&dyn Service>,
    ) -> Result<bool> {
        let mut wake = Wakeups::default();
        let mut drained = self.drain(&mut role, &mut wake);
        let mut serve = false;
        // Nothing routed: our call is not done, or whoever completed it
        // (a deadline, the link's end) notified our signal.
        let idle = matches!(drained, Ok(0)) && wake.is_empty();
        if idle {
            let (fd, zmq) = match &self.wire {
                Wire::Stream { channel, .. } => (channel.read_fd(), false),
                Wire::Zmq { fd, .. } => (Some(*fd), true),
            };
            let mut all = [pollfd(signal.fd(), libc::POLLIN); 3];
            let mut n = 1;
            let channel_at = fd.map(|fd| {
                let out = if self.has_output() { libc::POLLOUT } else { 0 };
                all[n] = pollfd(fd, libc::POLLIN | out);
                n += 1;
                n - 1
            });
            let service_at = service.map(|s| {
                all[n] = pollfd(s.poll_fd(), libc::POLLIN);
                n += 1;
                n - 1
            });
            let fds = &mut all[..n];
            if zmq {
                // News of a ZeroMQ link can come by its monitor, which the
                // I/O thread reads: it wakes us through this.
                *lock(&self.reader_signal) = Some(Signal::current());
            }
            // The reply to a request just sent often comes within the spin
            // budget; waiting for it awake saves a wake-up (see spin.rs).
            // The spin polls the channel alone and looks at the signal in
            // memory. The rest of a message already begun comes at the pace
            // of the writer: sleeping costs nothing then. ZeroMQ clients do
            // not spin (their replies come through libzmq's I/O thread).
            let mid = matches!(&*role, ReadState::Stream(r) if r.mid_message());
            let budget = spin::budget(deadline).filter(|_| !mid && !zmq);
            let spun = spin::until(budget, || {
                Ok(signal.take() || poll::poll_now(&mut fds[1..])?)
            })?;
            if !spun {
                if !signal.begin_wait() {
                    let until = if zmq {
                        let slice = Instant::now() + ZMQ_SLICE;
                        Some(deadline.map_or(slice, |d| d.min(slice)))
                    } else {
                        deadline
                    };
                    poll::poll_fds(fds, until)?;
                }
                signal.end_wait();
            }
            if zmq {
                *lock(&self.reader_signal) = None;
                // A slice passed with no news: look at the monitor here
                // too, in case the I/O thread missed what it said (a call
                // to a dead server once waited out its whole timeout).
                if fds.iter().all(|f| f.revents == 0) && self.monitor_says_dropped() {
                    drained = self.drain(&mut role, &mut wake);
                }
            }
            if let Some(at) = channel_at {
                if fds[at].revents & libc::POLLOUT != 0 {
                    self.flush_queued();
                }
                if fds[at].revents & !libc::POLLOUT != 0 {
                    if let ReadState::Stream(reader) = &mut *role {
                        reader.mark_readable();
                    }
                    drained = self.drain(&mut role, &mut wake);
                }
            }
            serve = service_at.is_some_and(|at| fds[at].revents != 0);
        }
        self.leave(role, drained, wake);
        Ok(serve)
    }

    /// Reads a ZeroMQ link's monitor; true when it reports the connection
    /// gone (and marks it so).
    fn monitor_says_dropped(&self) -> bool {
        let Wire::Zmq {
            dealer, dropped, ..
        } = &self.wire
        else {
            return false;
        };
        let gone = transport::zmq::dropped(&lock(dealer).monitor).unwrap_or(true);
        if gone {
            dropped.store(true, Ordering::SeqCst);
        }
        gone
    }

    /// Waits without the role (another thread reads) until this call is
    /// done, the role is free, this thread has a request to run or its
    /// server has work, or `deadline` passes. Returns true when the server
    /// has work.
    fn sleep(
        self: &Arc<Self>,
        req_id: i64,
        deadline: Option<Instant>,
        signal: &Arc<Signal>,
        service: Option<&dyn Service>,
    ) -> Result<bool> {
        lock(&self.flight).sleepers.push(signal.clone());
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        // A reader with nothing to wait for gives the role up to us.
        if let Some(s) = lock(&self.reader_signal).as_ref() {
            s.notify();
        }
        let mut serve = false;
        // The role may have been released between our try and our
        // registration: the holder then saw no sleeper, so look again.
        if !self.pumped() {
            if let Ok(role) = self.role.try_lock() {
                self.remove_sleeper(signal);
                return self.read_turn(role, deadline, signal, service);
            }
        }
        if self.has_output() {
            io::want_write(self);
        }
        if !signal.begin_wait() && !lock(&self.flight).is_done(req_id) {
            let mut fds = vec![pollfd(signal.fd(), libc::POLLIN)];
            if let Some(s) = service {
                fds.push(pollfd(s.poll_fd(), libc::POLLIN));
            }
            // Bounded, so that a lost wake-up costs a second, not a hang.
            let cap = Instant::now() + Duration::from_secs(1);
            poll::poll_fds(&mut fds, Some(deadline.map_or(cap, |d| d.min(cap))))?;
            serve = fds.len() > 1 && fds[1].revents != 0;
        }
        signal.end_wait();
        self.remove_sleeper(signal);
        Ok(serve)
    }

    fn remove_sleeper(&self, signal: &Arc<Signal>) {
        let mut flight = lock(&self.flight);
        if let Some(at) = flight.sleepers.iter().position(|s| Arc::ptr_eq(s, signal)) {
            flight.sleepers.swap_remove(at);
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}
