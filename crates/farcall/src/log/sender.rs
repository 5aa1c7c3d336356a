//! [`LogSender`]: sends records to a log server from a background thread,
//! through a bounded queue that never blocks the caller.

use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::record::Record;
use super::{DEFAULT_CAPACITY, DEFAULT_FLUSH_TIMEOUT};
use crate::error::{Error, Result};
use crate::sync::lock;

thread_local! {
    /// Set on a sender's own thread, and while this thread is inside the
    /// forwarder: records made there are never sent (no recursion).
    pub(super) static IN_LOG: Cell<bool> = const { Cell::new(false) };
}

/// Checks that an address names a ZeroMQ endpoint (log records always
/// travel over ZeroMQ, as in pyacq).
pub(super) fn check_zmq_address(address: &str) -> Result<()> {
    if ["tcp://", "ipc://", "inproc://"]
        .iter()
        .any(|s| address.starts_with(s))
    {
        Ok(())
    } else {
        Err(Error::Address(
            address.into(),
            "a log server address is a ZeroMQ endpoint (tcp://, ipc:// or inproc://)".into(),
        ))
    }
}

/// Counters and the close handshake shared with the sending thread.
struct Shared {
    enqueued: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    closing: AtomicBool,
    /// Records handled by the thread (sent or dropped), and whether it ended.
    progress: Mutex<(u64, bool)>,
    changed: Condvar,
    close_deadline: Mutex<Option<Instant>>,
}

impl Shared {
    fn handled(&self, ended: bool) {
        let mut p = lock(&self.progress);
        if ended {
            p.1 = true;
        } else {
            p.0 += 1;
        }
        self.changed.notify_all();
    }

    fn deadline(&self) -> Option<Instant> {
        *lock(&self.close_deadline)
    }
}

/// Sends records to a log server from a background thread.
///
/// [`send`](LogSender::send) never blocks: records wait in a bounded queue
/// ([`DEFAULT_CAPACITY`] by default) and a full queue drops the record and
/// counts it ([`dropped`](LogSender::dropped)). A log server that is gone
/// only fills the queue. The sender is a [`log::Log`] too.
pub struct LogSender {
    address: String,
    queue: SyncSender<Record>,
    shared: Arc<Shared>,
    level: log::LevelFilter,
}

impl LogSender {
    /// Connects to the log server at `address` (a ZeroMQ endpoint) with a
    /// queue of [`DEFAULT_CAPACITY`] records.
    pub fn connect(address: &str) -> Result<LogSender> {
        LogSender::with_capacity(address, DEFAULT_CAPACITY)
    }

    /// Connects with a queue of `capacity` records.
    pub fn with_capacity(address: &str, capacity: usize) -> Result<LogSender> {
        check_zmq_address(address)?;
        // A context of its own, terminated by the thread at close: that
        // wait (bounded by the linger time) is what gets the last records
        // on the wire before the process exits. inproc:// must share the
        // process context with its server.
        let own = (!address.starts_with("inproc://")).then(zmq::Context::new);
        let context = own
            .clone()
            .unwrap_or_else(|| crate::transport::zmq::context().clone());
        let socket = context.socket(zmq::PUSH)?;
        socket.set_linger(0)?;
        socket.set_sndhwm(1000)?;
        socket.connect(address)?;
        let (queue, rx) = mpsc::sync_channel(capacity.max(1));
        let shared = Arc::new(Shared {
            enqueued: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            progress: Mutex::new((0, false)),
            changed: Condvar::new(),
            close_deadline: Mutex::new(None),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("farcall-log-sender".into())
            .spawn(move || {
                IN_LOG.with(|f| f.set(true));
                run_sender(socket, own, rx, &thread_shared);
                thread_shared.handled(true);
            })?;
        Ok(LogSender {
            address: address.to_string(),
            queue,
            shared,
            level: log::LevelFilter::Trace,
        })
    }

    /// Sets the level this sender accepts as a [`log::Log`].
    pub fn with_level(mut self, level: log::LevelFilter) -> Self {
        self.level = level;
        self
    }

    /// The log server's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Queues a record; never blocks. False when it was dropped (queue
    /// full, or the sender closed).
    pub fn send(&self, mut record: Record) -> bool {
        if self.shared.closing.load(Ordering::Relaxed) {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        record.truncate();
        match self.queue.try_send(record) {
            Ok(()) => {
                self.shared.enqueued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Records handed to ZeroMQ so far.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Records dropped so far (full queue, closed sender, send failure).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Records waiting in the queue now (at most the capacity, plus the one
    /// the thread is sending).
    pub fn queued(&self) -> u64 {
        let handled = lock(&self.shared.progress).0;
        self.shared
            .enqueued
            .load(Ordering::Relaxed)
            .saturating_sub(handled)
    }

    /// Waits until every record queued before the call is sent or dropped,
    /// at most `timeout`; true if it got there.
    pub fn flush(&self, timeout: Duration) -> bool {
        let target = self.shared.enqueued.load(Ordering::Relaxed);
        let p = lock(&self.shared.progress);
        let (p, _) = self
            .shared
            .changed
            .wait_timeout_while(p, timeout, |p| p.0 < target && !p.1)
            .unwrap_or_else(|e| e.into_inner());
        p.0 >= target
    }

    /// Stops accepting records, lets the queued ones go for at most
    /// `timeout` (the rest are dropped and counted), and waits for that.
    /// True if the thread finished in time. Closing twice is harmless.
    pub fn close(&self, timeout: Duration) -> bool {
        self.begin_close(timeout);
        let p = lock(&self.shared.progress);
        let (p, _) = self
            .shared
            .changed
            .wait_timeout_while(p, timeout + Duration::from_millis(200), |p| !p.1)
            .unwrap_or_else(|e| e.into_inner());
        p.1
    }

    fn begin_close(&self, timeout: Duration) {
        let mut deadline = lock(&self.shared.close_deadline);
        if deadline.is_none() {
            *deadline = Some(Instant::now() + timeout);
        }
        self.shared.closing.store(true, Ordering::Relaxed);
    }

    /// True once [`close`](LogSender::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closing.load(Ordering::Relaxed)
    }
}

impl Drop for LogSender {
    /// Starts closing without waiting: the thread keeps sending what is
    /// queued for up to [`DEFAULT_FLUSH_TIMEOUT`].
    fn drop(&mut self) {
        self.begin_close(DEFAULT_FLUSH_TIMEOUT);
    }
}

impl std::fmt::Debug for LogSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSender")
            .field("address", &self.address)
            .field("sent", &self.sent())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl log::Log for LogSender {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) && !IN_LOG.with(Cell::get) {
            self.send(Record::from_log(record));
        }
    }

    fn flush(&self) {
        LogSender::flush(self, DEFAULT_FLUSH_TIMEOUT);
    }
}

/// Writes a note about the log machinery itself to the process's stderr
/// (never through the `log` crate, which may lead back here).
pub(super) fn note(text: &str) {
    let _ = std::io::stderr().write_all(format!("farcall.log: {text}\n").as_bytes());
}

/// The sending thread: takes records from the queue and sends them;
/// waits (never the caller) while ZeroMQ's own queue is full.
fn run_sender(
    socket: zmq::Socket,
    context: Option<zmq::Context>,
    rx: Receiver<Record>,
    shared: &Shared,
) {
    let mut stuck_since: Option<Instant> = None;
    let mut warned = false;
    loop {
        let closing = shared.closing.load(Ordering::Relaxed);
        let record = if closing {
            match rx.try_recv() {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        let bytes = record.to_bytes();
        drop(record);
        loop {
            match socket.send(&bytes[..], zmq::DONTWAIT) {
                Ok(()) => {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                    if stuck_since.take().is_some() && warned {
                        warned = false;
                        note("the log server takes records again");
                    }
                    break;
                }
                Err(zmq::Error::EAGAIN) => {
                    let since = *stuck_since.get_or_insert_with(Instant::now);
                    if !warned && since.elapsed() > Duration::from_secs(1) {
                        warned = true;
                        note("the log server takes no records; queueing, then dropping");
                    }
                    let past_deadline = shared
                        .closing
                        .load(Ordering::Relaxed)
                        .then(|| shared.deadline())
                        .flatten()
                        .is_some_and(|d| Instant::now() >= d);
                    if past_deadline {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    let _ = zmq::poll(&mut [socket.as_poll_item(zmq::POLLOUT)], 100);
                }
                Err(e) => {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    note(&format!("cannot send a log record: {e}"));
                    break;
                }
            }
        }
        shared.handled(false);
    }
    // What is still queued after the deadline is dropped and counted.
    while rx.try_recv().is_ok() {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
        shared.handled(false);
    }
    // Let what ZeroMQ holds leave before the deadline: terminating the
    // context waits for it (bounded by the linger time).
    let left = shared.deadline().map_or(Duration::ZERO, |d| {
        d.saturating_duration_since(Instant::now())
    });
    let _ = socket.set_linger(left.as_millis().min(i32::MAX as u128) as i32);
    drop(socket);
    drop(context);
}
