//! Log forwarding between processes: records travel on their own ZeroMQ
//! channel (PUSH from senders, PULL at the log server), json-encoded with
//! the field names of Python's `logging.LogRecord` plus pyacq's
//! `host_name`, `process_name` and `thread_name` (see `docs/protocol.md`).
//!
//! - [`Record`]: one log record, from a `log` crate record or from JSON.
//! - [`LogSender`]: sends records from a background thread; [`send`]
//!   never blocks (a bounded queue; a full queue drops and counts). It is
//!   also a [`log::Log`], so `log` records of a Rust program can go to it.
//! - [`LogReceiver`] / [`LogServer`]: bind a PULL socket and hand records
//!   to a callback.
//! - [`install`], [`set_logger_address`], [`init_child`], [`shutdown`]:
//!   the process-wide forwarder for `log` records.
//! - [`capture_stdio`]: file descriptors 1 and 2 become pipes read by a
//!   thread; every line becomes a record.
//!
//! Names (host, process, thread) are process-wide and shared with the
//! Python package, so Rust and Python records of one process agree.
//!
//! [`send`]: LogSender::send

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::spawn::ChildConfig;
use crate::sync::{lock, read, write};

/// Records a sender queues before it starts dropping them.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// The address a log server binds when given none (loopback, any port).
pub const DEFAULT_ADDRESS: &str = "tcp://127.0.0.1:*";
/// Longest message body a sender sends; longer ones are cut.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Largest message a log server accepts (libzmq drops the peer beyond).
pub const MAX_RECORD_BYTES: i64 = 16 << 20;
/// How long [`shutdown`] and the exit of a spawned child wait for records
/// to leave by default.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Python's numeric levels.
pub mod level {
    /// `logging.DEBUG`.
    pub const DEBUG: i64 = 10;
    /// `logging.INFO`.
    pub const INFO: i64 = 20;
    /// `logging.WARNING`.
    pub const WARNING: i64 = 30;
    /// `logging.ERROR`.
    pub const ERROR: i64 = 40;
    /// `logging.CRITICAL`.
    pub const CRITICAL: i64 = 50;
    /// The `log` crate's `Trace` (Python has no name for it).
    pub const TRACE: i64 = 5;
}

// ---- names ----------------------------------------------------------------

static HOST_NAME: RwLock<Option<Arc<str>>> = RwLock::new(None);
static PROCESS_NAME: RwLock<Option<Arc<str>>> = RwLock::new(None);
static THREAD_NAMES: OnceLock<Mutex<HashMap<u64, Arc<str>>>> = OnceLock::new();

/// The name of this host in log records (default: the system host name).
pub fn host_name() -> Arc<str> {
    if let Some(name) = read(&HOST_NAME) {
        return name;
    }
    static SYSTEM: OnceLock<Arc<str>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let mut buf = [0u8; 256];
            // SAFETY: gethostname writes at most `len` bytes into the buffer.
            let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            if ok && end > 0 {
                String::from_utf8_lossy(&buf[..end]).into()
            } else {
                "localhost".into()
            }
        })
        .clone()
}

/// Sets the host name used in this process's records.
pub fn set_host_name(name: &str) {
    write(&HOST_NAME, Some(name.into()));
}

/// The name of this process in log records (default `process-<pid>`, as
/// in pyacq; a spawned child gets the name its parent gave it).
pub fn process_name() -> Arc<str> {
    read(&PROCESS_NAME).unwrap_or_else(|| format!("process-{}", std::process::id()).into())
}

/// Sets the process name used in this process's records.
pub fn set_process_name(name: &str) {
    write(&PROCESS_NAME, Some(name.into()));
}

/// The calling thread's id as Python's `threading.get_ident()` sees it
/// (`pthread_self`), so Rust and Python agree on thread ids.
pub fn current_thread_id() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

fn thread_names() -> MutexGuard<'static, HashMap<u64, Arc<str>>> {
    lock(THREAD_NAMES.get_or_init(Default::default))
}

/// Names a thread in log records (`tid`: a [`current_thread_id`]; `None`:
/// the calling thread).
pub fn set_thread_name(name: &str, tid: Option<u64>) {
    let tid = tid.unwrap_or_else(current_thread_id);
    thread_names().insert(tid, name.into());
}

/// The name given to thread `tid` with [`set_thread_name`], if any.
pub fn registered_thread_name(tid: u64) -> Option<Arc<str>> {
    thread_names().get(&tid).cloned()
}

/// The calling thread's name in log records: the registered name, else
/// the Rust thread's name, else `thread-<id in hex>`.
pub fn thread_name() -> Arc<str> {
    let tid = current_thread_id();
    registered_thread_name(tid).unwrap_or_else(|| match std::thread::current().name() {
        Some(n) => n.into(),
        None => format!("thread-{tid:x}").into(),
    })
}

// ---- records ----------------------------------------------------------------

/// One log record, with the fields of Python's `logging.LogRecord` (the
/// message already formatted) and pyacq's names of its source.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The logger name (`name`); a Rust record's target.
    pub name: String,
    /// The formatted message (`msg`).
    pub msg: String,
    /// The numeric level (`levelno`): 10 debug ... 50 critical.
    pub levelno: i64,
    /// The level's name (`levelname`).
    pub levelname: String,
    /// Creation time, seconds since the epoch (`created`).
    pub created: f64,
    /// Milliseconds since process start (`relativeCreated`).
    pub relative_created: f64,
    /// Source file path (`pathname`).
    pub pathname: String,
    /// Source file name (`filename`).
    pub filename: String,
    /// Module (`module`; a Rust module path).
    pub module: String,
    /// Source line (`lineno`).
    pub lineno: i64,
    /// Function name (`funcName`; empty for Rust records).
    pub func_name: String,
    /// Thread id (`thread`).
    pub thread: u64,
    /// The thread's own name (`threadName`).
    pub py_thread_name: String,
    /// Process id (`process`).
    pub process: u32,
    /// The process's own name (`processName`).
    pub py_process_name: String,
    /// A formatted exception traceback (`exc_text`).
    pub exc_text: Option<String>,
    /// A formatted stack (`stack_info`).
    pub stack_info: Option<String>,
    /// pyacq's `host_name`.
    pub host_name: String,
    /// pyacq's `process_name`.
    pub process_name: String,
    /// pyacq's `thread_name`.
    pub thread_name: String,
    /// Any other attribute the sender attached (`extra=` in Python).
    pub extra: Map<String, Json>,
}

/// The name Python gives a numeric level.
pub fn level_name(levelno: i64) -> String {
    match levelno {
        level::CRITICAL => "CRITICAL".into(),
        level::ERROR => "ERROR".into(),
        level::WARNING => "WARNING".into(),
        level::INFO => "INFO".into(),
        level::DEBUG => "DEBUG".into(),
        level::TRACE => "TRACE".into(),
        0 => "NOTSET".into(),
        n => format!("Level {n}"),
    }
}

/// The Python level of a `log` crate level.
pub fn python_level(level: log::Level) -> i64 {
    match level {
        log::Level::Error => level::ERROR,
        log::Level::Warn => level::WARNING,
        log::Level::Info => level::INFO,
        log::Level::Debug => level::DEBUG,
        log::Level::Trace => level::TRACE,
    }
}

/// The `log` crate filter that lets through records at Python level
/// `levelno` and above.
pub fn level_filter(levelno: i64) -> log::LevelFilter {
    match levelno {
        n if n > level::ERROR => log::LevelFilter::Error,
        n if n > level::WARNING => log::LevelFilter::Error,
        n if n > level::INFO => log::LevelFilter::Warn,
        n if n > level::DEBUG => log::LevelFilter::Info,
        n if n > level::TRACE => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Parses a level given as a number or a name (`"info"`, `"WARNING"`).
pub fn parse_level(level: &Json) -> Option<i64> {
    match level {
        Json::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Json::String(s) => match s.to_ascii_uppercase().as_str() {
            "CRITICAL" | "FATAL" => Some(level::CRITICAL),
            "ERROR" => Some(level::ERROR),
            "WARNING" | "WARN" => Some(level::WARNING),
            "INFO" => Some(level::INFO),
            "DEBUG" => Some(level::DEBUG),
            "TRACE" => Some(level::TRACE),
            "NOTSET" => Some(0),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn process_start() -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(now)
}

/// The program's name, as `processName` of Rust records.
fn program_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::args_os()
            .next()
            .and_then(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "rust".into())
    })
}

/// Field names a record carries as struct fields (everything else of a
/// JSON record lands in `extra`). `args`, `exc_info`, `message` and
/// `asctime` are dropped: the message travels formatted.
const DROPPED: [&str; 4] = ["args", "exc_info", "message", "asctime"];

impl Record {
    /// A record made here, now, by this thread, with this process's names.
    pub fn new(name: impl Into<String>, levelno: i64, msg: impl Into<String>) -> Record {
        let created = now();
        Record {
            name: name.into(),
            msg: msg.into(),
            levelno,
            levelname: level_name(levelno),
            created,
            relative_created: (created - process_start()) * 1000.0,
            pathname: String::new(),
            filename: String::new(),
            module: String::new(),
            lineno: 0,
            func_name: String::new(),
            thread: current_thread_id(),
            py_thread_name: std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_string(),
            process: std::process::id(),
            py_process_name: program_name().to_string(),
            exc_text: None,
            stack_info: None,
            host_name: host_name().to_string(),
            process_name: process_name().to_string(),
            thread_name: thread_name().to_string(),
            extra: Map::new(),
        }
    }

    /// A record of a `log` crate record (target as logger name).
    pub fn from_log(record: &log::Record<'_>) -> Record {
        let mut r = Record::new(
            record.target(),
            python_level(record.level()),
            record.args().to_string(),
        );
        if let Some(file) = record.file() {
            r.pathname = file.to_string();
            r.filename = file.rsplit('/').next().unwrap_or(file).to_string();
        }
        r.module = record.module_path().unwrap_or_default().to_string();
        r.lineno = record.line().map_or(0, i64::from);
        r
    }

    /// The milliseconds part of `created` (`msecs`).
    pub fn msecs(&self) -> f64 {
        (self.created.fract() * 1000.0).floor()
    }

    /// The record as a JSON object (the wire format of `docs/protocol.md`).
    pub fn to_json(&self) -> Json {
        let mut m = Map::with_capacity(24 + self.extra.len());
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        let mut put = |k: &str, v: Json| {
            m.insert(k.to_string(), v);
        };
        put("name", self.name.clone().into());
        put("msg", self.msg.clone().into());
        put("args", Json::Null);
        put("levelno", self.levelno.into());
        put("levelname", self.levelname.clone().into());
        put("created", json_f64(self.created));
        put("msecs", json_f64(self.msecs()));
        put("relativeCreated", json_f64(self.relative_created));
        put("pathname", self.pathname.clone().into());
        put("filename", self.filename.clone().into());
        put("module", self.module.clone().into());
        put("lineno", self.lineno.into());
        put("funcName", self.func_name.clone().into());
        put("thread", self.thread.into());
        put("threadName", self.py_thread_name.clone().into());
        put("process", self.process.into());
        put("processName", self.py_process_name.clone().into());
        put("exc_info", Json::Null);
        put("exc_text", self.exc_text.clone().into());
        put("stack_info", self.stack_info.clone().into());
        put("host_name", self.host_name.clone().into());
        put("process_name", self.process_name.clone().into());
        put("thread_name", self.thread_name.clone().into());
        Json::Object(m)
    }

    /// The record as one JSON message (what a sender puts on the wire).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Reads a record from JSON, leniently: missing fields get defaults,
    /// fields of the wrong type are coerced or dropped, unknown fields go
    /// to `extra`. Only a message that is not a JSON object is an error.
    pub fn from_json(bytes: &[u8]) -> Result<Record> {
        match serde_json::from_slice::<Json>(bytes) {
            Ok(Json::Object(m)) => Ok(Record::from_map(m)),
            Ok(_) => Err(Error::Protocol("a log record is not a JSON object".into())),
            Err(e) => Err(Error::Protocol(format!("a log record is not JSON: {e}"))),
        }
    }

    /// A record from the fields of a JSON object (see [`Record::from_json`]).
    pub fn from_map(mut m: Map<String, Json>) -> Record {
        let mut take = |k: &str| m.remove(k);
        let string = |v: Option<Json>| match v {
            Some(Json::String(s)) => Some(s),
            Some(Json::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        let int = |v: &Option<Json>| match v {
            Some(Json::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Some(Json::String(s)) => s.parse().ok(),
            _ => None,
        };
        let float = |v: &Option<Json>| match v {
            Some(Json::Number(n)) => n.as_f64(),
            _ => None,
        };
        let levelname = string(take("levelname"));
        let levelno_json = take("levelno");
        let levelno = int(&levelno_json)
            .or_else(|| {
                levelname
                    .as_ref()
                    .and_then(|n| parse_level(&Json::String(n.clone())))
            })
            .unwrap_or(level::INFO);
        let created = float(&take("created")).unwrap_or_else(now);
        let relative_created = float(&take("relativeCreated")).unwrap_or(0.0);
        let thread = take("thread");
        let thread = match &thread {
            Some(Json::Number(n)) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        let process = int(&take("process")).unwrap_or(0) as u32;
        let lineno = int(&take("lineno")).unwrap_or(0);
        let py_thread_name = string(take("threadName")).unwrap_or_default();
        let py_process_name = string(take("processName")).unwrap_or_default();
        let host = string(take("host_name")).or_else(|| string(take("hostname")));
        let process_name = string(take("process_name"))
            .or_else(|| (!py_process_name.is_empty()).then(|| py_process_name.clone()))
            .unwrap_or_else(|| format!("process-{process}"));
        let thread_name = string(take("thread_name"))
            .or_else(|| (!py_thread_name.is_empty()).then(|| py_thread_name.clone()))
            .unwrap_or_else(|| format!("thread-{thread:x}"));
        let record = Record {
            name: string(take("name")).unwrap_or_else(|| "root".into()),
            msg: string(take("msg")).unwrap_or_default(),
            levelname: levelname.unwrap_or_else(|| level_name(levelno)),
            levelno,
            created,
            relative_created,
            pathname: string(take("pathname")).unwrap_or_default(),
            filename: string(take("filename")).unwrap_or_default(),
            module: string(take("module")).unwrap_or_default(),
            lineno,
            func_name: string(take("funcName")).unwrap_or_default(),
            thread,
            py_thread_name,
            process,
            py_process_name,
            exc_text: string(take("exc_text")),
            stack_info: string(take("stack_info")),
            host_name: host.unwrap_or_else(|| "?".into()),
            process_name,
            thread_name,
            extra: Map::new(),
        };
        take("msecs");
        for k in DROPPED {
            take(k);
        }
        Record { extra: m, ..record }
    }

    /// One line of text (more when there is a traceback), as `farcall logs`
    /// prints it: `12:00:01.250 [host:process:thread] WARNING name: msg`
    /// (the host only when it is not this one). With `color`, ANSI colours
    /// mark the level.
    pub fn format_line(&self, color: bool) -> String {
        let secs = self.created.floor() as libc::time_t;
        // SAFETY: localtime_r fills a plain struct from a plain value.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        unsafe { libc::localtime_r(&secs, &mut tm) };
        let host = if self.host_name == *host_name() {
            String::new()
        } else {
            format!("{}:", self.host_name)
        };
        let mut out = format!(
            "{:02}:{:02}:{:02}.{:03} [{host}{}:{}] {} {}: {}",
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            self.msecs() as u32,
            self.process_name,
            self.thread_name,
            self.levelname,
            self.name,
            self.msg
        );
        for extra in [&self.exc_text, &self.stack_info].into_iter().flatten() {
            out.push('\n');
            out.push_str(extra.trim_end());
        }
        if color {
            let code = match self.levelno {
                n if n >= level::CRITICAL => "\x1b[97;41m",
                n if n >= level::ERROR => "\x1b[1;31m",
                n if n >= level::WARNING => "\x1b[33m",
                n if n >= level::INFO => "",
                _ => "\x1b[2m",
            };
            if !code.is_empty() {
                out = format!("{code}{out}\x1b[0m");
            }
        }
        out
    }

    /// Cuts the message and traceback to [`MAX_MESSAGE`] bytes each.
    fn truncate(&mut self) {
        for text in [Some(&mut self.msg), self.exc_text.as_mut()]
            .into_iter()
            .flatten()
        {
            if text.len() > MAX_MESSAGE {
                let mut end = MAX_MESSAGE;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                let cut = text.len() - end;
                text.truncate(end);
                text.push_str(&format!("... [{cut} bytes cut]"));
            }
        }
    }
}

fn json_f64(x: f64) -> Json {
    serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
}

// ---- the sender -------------------------------------------------------------

thread_local! {
    /// Set on a sender's own thread, and while this thread is inside the
    /// forwarder: records made there are never sent (no recursion).
    static IN_LOG: Cell<bool> = const { Cell::new(false) };
}

/// Checks that an address names a ZeroMQ endpoint (log records always
/// travel over ZeroMQ, as in pyacq).
fn check_zmq_address(address: &str) -> Result<()> {
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
fn note(text: &str) {
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

// ---- the receiving side ---------------------------------------------------

/// A bound PULL socket that reads records (the core of a log server, for
/// callers that want to do the waiting themselves).
pub struct LogReceiver {
    socket: zmq::Socket,
    address: String,
    rejected: u64,
}

impl LogReceiver {
    /// Binds `address` (a ZeroMQ endpoint; `tcp://127.0.0.1:*` picks a free
    /// port). Binding anything but loopback is logged as a warning: anyone
    /// who can connect can send records.
    pub fn bind(address: &str) -> Result<LogReceiver> {
        check_zmq_address(address)?;
        let socket = crate::transport::zmq::context().socket(zmq::PULL)?;
        socket.set_linger(0)?;
        socket.set_maxmsgsize(MAX_RECORD_BYTES)?;
        socket.set_rcvhwm(10_000)?;
        socket.bind(address)?;
        let bound = socket
            .get_last_endpoint()?
            .unwrap_or_else(|raw| String::from_utf8_lossy(&raw).into_owned());
        if let Some(host) = bound.strip_prefix("tcp://") {
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            if !matches!(host, "127.0.0.1" | "[::1]" | "localhost") {
                log::warn!(
                    "log server bound to {bound}: any host that can reach it can send records"
                );
            }
        }
        Ok(LogReceiver {
            socket,
            address: bound,
            rejected: 0,
        })
    }

    /// The address senders connect to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Messages that were not records (not a JSON object), dropped so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Waits at most `timeout` (`None`: no limit) for records, then returns
    /// every record already there (at most `max`). Empty when none came.
    pub fn recv(&mut self, timeout: Option<Duration>, max: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(i64::MAX as u128) as i64);
        let mut first = true;
        while out.len() < max.max(1) {
            let flags = if first {
                let ready = zmq::poll(&mut [self.socket.as_poll_item(zmq::POLLIN)], timeout_ms)?;
                if ready == 0 {
                    break;
                }
                zmq::DONTWAIT
            } else {
                zmq::DONTWAIT
            };
            first = false;
            let parts = match self.socket.recv_multipart(flags) {
                Ok(parts) => parts,
                Err(zmq::Error::EAGAIN) => break,
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            match parts.first().map(|p| Record::from_json(p)) {
                Some(Ok(record)) => out.push(record),
                _ => self.rejected += 1,
            }
        }
        Ok(out)
    }
}

/// A log server: a thread that receives records from any number of
/// processes and hands each to a callback (in arrival order).
pub struct LogServer {
    address: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LogServer {
    /// Binds `address` (see [`LogReceiver::bind`]) and starts the thread.
    pub fn bind(
        address: &str,
        mut handler: impl FnMut(Record) + Send + 'static,
    ) -> Result<LogServer> {
        let mut receiver = LogReceiver::bind(address)?;
        let address = receiver.address().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("farcall-log-server".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match receiver.recv(Some(Duration::from_millis(100)), 1000) {
                        Ok(records) => records.into_iter().for_each(&mut handler),
                        Err(e) => {
                            note(&format!("log server: {e}"));
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(LogServer {
            address,
            stop,
            thread: Some(thread),
        })
    }

    /// The address senders connect to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Stops the thread (after the batch it is handling) and unbinds.
    pub fn close(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LogServer {
    fn drop(&mut self) {
        self.close();
    }
}

// ---- the process-wide forwarder ---------------------------------------------

static GLOBAL_SENDER: RwLock<Option<Arc<LogSender>>> = RwLock::new(None);

/// The `log` logger [`install`] sets: forwards to the global sender, or
/// writes to stderr while there is none.
struct Forwarder;

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let sender = read(&GLOBAL_SENDER);
        match sender {
            Some(sender) if !IN_LOG.with(Cell::get) => {
                IN_LOG.with(|f| f.set(true));
                sender.send(Record::from_log(record));
                IN_LOG.with(|f| f.set(false));
            }
            _ => {
                let _ = std::io::stderr().write_all(
                    format!(
                        "{} {}: {}\n",
                        level_name(python_level(record.level())),
                        record.target(),
                        record.args()
                    )
                    .as_bytes(),
                );
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the process-wide forwarder as the `log` crate's logger, with
/// `level` as the maximum level: records go to the log server set with
/// [`set_logger_address`], or to stderr until one is set. False if
/// another logger was installed first (then only the level is set).
pub fn install(level: log::LevelFilter) -> bool {
    static FORWARDER: Forwarder = Forwarder;
    let installed = log::set_logger(&FORWARDER).is_ok();
    log::set_max_level(level);
    installed
}

/// Connects the process-wide sender to the log server at `address` (the
/// previous one, if any, closes in the background) and returns it.
pub fn set_logger_address(address: &str) -> Result<Arc<LogSender>> {
    let sender = Arc::new(LogSender::connect(address)?);
    set_global_sender(Some(sender.clone()));
    Ok(sender)
}

/// Replaces the process-wide sender (`None`: records go to stderr again).
pub fn set_global_sender(sender: Option<Arc<LogSender>>) {
    write(&GLOBAL_SENDER, sender);
}

/// The process-wide sender, if one is set.
pub fn global_sender() -> Option<Arc<LogSender>> {
    read(&GLOBAL_SENDER)
}

/// The address of the process-wide sender's log server, if one is set.
pub fn logger_address() -> Option<String> {
    global_sender().map(|s| s.address().to_string())
}

static CAPTURE: Mutex<Option<StdioCapture>> = Mutex::new(None);

/// Sets up a Rust child started by a `ProcessSpawner`: takes the name its
/// parent gave it, and when the parent passed `log_addr` (and maybe
/// `log_level`) in `extra`, installs the forwarder, connects it, and
/// captures stdout and stderr. True when logs are forwarded. Call
/// [`shutdown`] before the process exits so the last records leave.
pub fn init_child(config: &ChildConfig) -> Result<bool> {
    init_forwarding(config.name.as_deref(), &config.extra)
}

/// [`init_child`] from its parts: the child's name and the `extra` object
/// (`log_addr`, `log_level`) of its spawn configuration.
pub fn init_forwarding(name: Option<&str>, extra: &Json) -> Result<bool> {
    if let Some(name) = name {
        set_process_name(name);
    }
    let Some(address) = extra.get("log_addr").and_then(Json::as_str) else {
        return Ok(false);
    };
    let levelno = extra
        .get("log_level")
        .and_then(parse_level)
        .unwrap_or(level::INFO);
    install(level_filter(levelno));
    let sender = set_logger_address(address)?;
    *lock(&CAPTURE) = Some(capture_stdio(sender)?);
    Ok(true)
}

/// Stops capturing stdout/stderr (if [`init_child`] did), then closes the
/// process-wide sender, waiting at most `timeout` for its records to
/// leave. Records logged afterwards go to stderr.
pub fn shutdown(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    if let Some(capture) = lock(&CAPTURE).take() {
        capture.finish(timeout / 2);
    }
    if let Some(sender) = global_sender() {
        set_global_sender(None);
        sender.close(deadline.saturating_duration_since(Instant::now()));
    }
}

// ---- stdout / stderr capture ----------------------------------------------

/// File descriptors replaced by pipes whose lines become log records;
/// [`finish`](StdioCapture::finish) puts the originals back.
pub struct StdioCapture {
    streams: Vec<Captured>,
}

struct Captured {
    fd: RawFd,
    saved: OwnedFd,
    done: Arc<(Mutex<bool>, Condvar)>,
}

/// Captures fds 1 and 2: lines written to stdout become `INFO` records of
/// logger `stdout`, lines written to stderr `WARNING` records of logger
/// `stderr` (pyacq's levels), sent through `sender`. Output of native code
/// and of subprocesses that inherit the descriptors is captured too.
pub fn capture_stdio(sender: Arc<LogSender>) -> Result<StdioCapture> {
    let mut capture = StdioCapture {
        streams: Vec::new(),
    };
    capture
        .streams
        .push(capture_fd(1, "stdout", level::INFO, sender.clone())?);
    capture
        .streams
        .push(capture_fd(2, "stderr", level::WARNING, sender)?);
    line_buffer_c_stdout();
    Ok(capture)
}

/// C's stdout is fully buffered on a pipe; make native `printf` output
/// arrive line by line, as on a terminal.
fn line_buffer_c_stdout() {
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            static mut stdout: *mut libc::FILE;
        }
        // SAFETY: `stdout` is libc's stream; setvbuf with a null buffer lets
        // libc allocate. Nothing in this process has written through it yet
        // in the intended use (a freshly started child).
        unsafe {
            let stream = stdout;
            if !stream.is_null() {
                libc::fflush(stream);
                libc::setvbuf(stream, std::ptr::null_mut(), libc::_IOLBF, 0);
            }
        }
    }
}

fn cvt(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn capture_fd(fd: RawFd, stream: &str, levelno: i64, sender: Arc<LogSender>) -> Result<Captured> {
    let mut ends = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    cvt(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    // SAFETY: duplicating a descriptor we were given; the copy is ours.
    let saved = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    let saved = unsafe { OwnedFd::from_raw_fd(saved) };
    // SAFETY: dup2 onto a standard descriptor; the write end stays ours and
    // is closed below, so `fd` holds the only copy.
    cvt(unsafe { libc::dup2(write_end.as_raw_fd(), fd) })?;
    drop(write_end);
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let finished = done.clone();
    let stream = stream.to_string();
    let started = std::thread::Builder::new()
        .name(format!("farcall-{stream}"))
        .spawn(move || {
            IN_LOG.with(|f| f.set(true));
            read_lines(read_end, &stream, levelno, &sender);
            *lock(&finished.0) = true;
            finished.1.notify_all();
        });
    if let Err(e) = started {
        // SAFETY: restoring the descriptor we replaced.
        unsafe { libc::dup2(saved.as_raw_fd(), fd) };
        return Err(e.into());
    }
    Ok(Captured { fd, saved, done })
}

/// How long a line without its newline waits before it is sent as is.
const PARTIAL_LINE_WAIT: Duration = Duration::from_millis(200);
/// A line longer than this is sent in pieces.
const MAX_LINE: usize = 64 << 10;

fn read_lines(pipe: OwnedFd, stream: &str, levelno: i64, sender: &LogSender) {
    let fd = pipe.as_raw_fd();
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    let emit = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        let mut r = Record::new(stream, levelno, text);
        r.thread_name = stream.to_string();
        r.py_thread_name = stream.to_string();
        r.pathname = format!("<{stream}>");
        r.filename = r.pathname.clone();
        sender.send(r);
    };
    loop {
        if !pending.is_empty() {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polling one descriptor we own.
            let ready = unsafe { libc::poll(&mut pfd, 1, PARTIAL_LINE_WAIT.as_millis() as i32) };
            if ready == 0 {
                emit(&pending);
                pending.clear();
                continue;
            }
        }
        // SAFETY: reading into a live buffer of the given length.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        let mut rest = &chunk[..n as usize];
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            pending.extend_from_slice(&rest[..=end]);
            emit(&pending);
            pending.clear();
            rest = &rest[end + 1..];
        }
        pending.extend_from_slice(rest);
        if pending.len() >= MAX_LINE {
            emit(&pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        emit(&pending);
    }
}

impl StdioCapture {
    /// A copy of the original descriptor behind `fd` (1 or 2), e.g. for
    /// crash reports that must not depend on the capturing thread.
    pub fn saved_fd(&self, fd: RawFd) -> Option<RawFd> {
        self.streams
            .iter()
            .find(|s| s.fd == fd)
            .map(|s| s.saved.as_raw_fd())
    }

    /// Puts the original descriptors back and waits at most `timeout` for
    /// the reading threads to send what was written before (a subprocess
    /// that still holds the pipe keeps its thread going after that).
    pub fn finish(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for s in &self.streams {
            // SAFETY: putting back the descriptor saved at capture.
            unsafe { libc::dup2(s.saved.as_raw_fd(), s.fd) };
        }
        for s in &self.streams {
            let left = deadline.saturating_duration_since(Instant::now());
            let done = lock(&s.done.0);
            let _ = s.done.1.wait_timeout_while(done, left, |d| !*d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level_name(30), "WARNING");
        assert_eq!(level_name(25), "Level 25");
        assert_eq!(parse_level(&Json::from("debug")), Some(10));
        assert_eq!(parse_level(&Json::from(15)), Some(15));
        assert_eq!(parse_level(&Json::from("nope")), None);
        assert_eq!(level_filter(20), log::LevelFilter::Info);
        assert_eq!(level_filter(30), log::LevelFilter::Warn);
        assert_eq!(level_filter(10), log::LevelFilter::Debug);
        assert_eq!(level_filter(0), log::LevelFilter::Trace);
        assert_eq!(python_level(log::Level::Warn), 30);
    }

    #[test]
    fn record_round_trip() {
        let mut r = Record::new("app.io", level::WARNING, "disk at 91%");
        // serde_json parses floats to within one ulp (no float_roundtrip
        // feature): use times it reads back exactly.
        r.created = 1_700_000_000.25;
        r.relative_created = 12.5;
        r.exc_text = Some("Traceback ...".into());
        r.extra.insert("device".into(), Json::from("cam0"));
        let back = Record::from_json(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        let json = r.to_json();
        assert_eq!(json["levelname"], "WARNING");
        assert_eq!(json["msecs"], Json::from(r.msecs()));
        assert_eq!(json["process_name"], Json::from(&*process_name()));
    }

    #[test]
    fn lenient_parsing() {
        let r = Record::from_json(br#"{"msg": "hi", "levelno": "40", "args": [1], "exc_info": [1, 2], "hostname": "h", "custom": {"a": 1}}"#).unwrap();
        assert_eq!(r.msg, "hi");
        assert_eq!(r.levelno, 40);
        assert_eq!(r.levelname, "ERROR");
        assert_eq!(r.name, "root");
        assert_eq!(r.host_name, "h");
        assert_eq!(r.extra.len(), 1);
        assert_eq!(r.extra["custom"]["a"], 1);
        let r = Record::from_json(br#"{"levelname": "debug", "msg": 3}"#).unwrap();
        assert_eq!((r.levelno, r.msg.as_str()), (10, "3"));
        assert!(Record::from_json(b"[1]").is_err());
        assert!(Record::from_json(b"\xff").is_err());
    }

    #[test]
    fn names() {
        let tid = current_thread_id();
        assert!(registered_thread_name(tid).is_none());
        set_thread_name("worker-a", None);
        assert_eq!(&*thread_name(), "worker-a");
        assert_eq!(&*Record::new("x", 20, "m").thread_name, "worker-a");
        assert!(!host_name().is_empty());
    }

    #[test]
    fn truncation() {
        let mut r = Record::new("x", 20, "é".repeat(MAX_MESSAGE));
        r.truncate();
        assert!(r.msg.len() < MAX_MESSAGE + 40);
        assert!(r.msg.ends_with("bytes cut]"));
    }

    #[test]
    fn format() {
        let mut r = Record::new("app", level::ERROR, "boom");
        r.host_name = "h".into();
        r.process_name = "p".into();
        r.thread_name = "t".into();
        let line = r.format_line(false);
        assert!(line.ends_with(" [h:p:t] ERROR app: boom"), "{line}");
        r.host_name = host_name().to_string();
        let line = r.format_line(false);
        assert!(line.ends_with(" [p:t] ERROR app: boom"), "{line}");
        assert!(r.format_line(true).starts_with("\x1b[1;31m"));
    }

    #[test]
    fn non_zmq_addresses_are_refused() {
        assert!(matches!(
            LogSender::connect("unix:///tmp/x"),
            Err(Error::Address(..))
        ));
        assert!(LogReceiver::bind("tcp+native://127.0.0.1:*").is_err());
    }
}
