//! The process-wide forwarder: the `log` crate's logger, the global
//! sender, and the setup and shutdown of a spawned child's forwarding.

use std::cell::Cell;
use std::io::Write;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::level;
use super::names::set_process_name;
use super::record::{level_filter, level_name, parse_level, python_level, Record};
use super::sender::{LogSender, IN_LOG};
use super::stdio::{capture_stdio, StdioCapture};
use crate::error::{Error, Result};
use crate::spawn::ChildConfig;
use crate::sync::{lock, read, write};

static GLOBAL_SENDER: RwLock<Option<Arc<LogSender>>> = RwLock::new(None);

/// Where records go while no sender is set, when the host language has a
/// logging system of its own (the Python binding hands them to Python's
/// `logging`). It is called in the thread that logs, so it must not block.
pub type LocalSink = Arc<dyn Fn(Record) + Send + Sync>;

static LOCAL_SINK: RwLock<Option<LocalSink>> = RwLock::new(None);

/// Sets (or, with `None`, removes) the [`LocalSink`].
pub fn set_local_sink(sink: Option<LocalSink>) {
    write(&LOCAL_SINK, sink);
}

/// The `log` logger [`install`] sets: forwards to the global sender, else
/// to the local sink, else writes to stderr.
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
            None if !IN_LOG.with(Cell::get) => match read(&LOCAL_SINK) {
                Some(sink) => {
                    IN_LOG.with(|f| f.set(true));
                    sink(Record::from_log(record));
                    IN_LOG.with(|f| f.set(false));
                }
                None => write_stderr(record),
            },
            _ => write_stderr(record),
        }
    }

    fn flush(&self) {}
}

/// Where a record goes with no sender and no sink (or from inside one).
fn write_stderr(record: &log::Record<'_>) {
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

/// Connects the process-wide sender to the log server at `address` and
/// returns it: the one already connected there, if any, else a new one
/// (the previous one then closes in the background).
pub fn set_logger_address(address: &str) -> Result<Arc<LogSender>> {
    let mut global = GLOBAL_SENDER.write().unwrap_or_else(|p| p.into_inner());
    if let Some(sender) = global.as_ref() {
        if sender.address() == address && !sender.is_closed() {
            return Ok(sender.clone());
        }
    }
    let sender = Arc::new(LogSender::connect(address)?);
    *global = Some(sender.clone());
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

/// The log server of this process, as [`set_process_server`] registers it.
#[derive(Clone)]
pub struct ProcessServer {
    /// The address its senders connect to.
    pub address: String,
    /// The level below which its records are not wanted, asked when a
    /// child is spawned (a Python logger's effective level can change).
    pub level: Arc<dyn Fn() -> i64 + Send + Sync>,
}

static PROCESS_SERVER: RwLock<Option<ProcessServer>> = RwLock::new(None);

/// Makes `server` this process's log server, the one children spawned
/// here send to by default. An error if one is registered already.
pub fn set_process_server(server: ProcessServer) -> Result<()> {
    let mut current = PROCESS_SERVER.write().unwrap_or_else(|p| p.into_inner());
    if let Some(running) = current.as_ref() {
        return Err(Error::exception(
            "RuntimeError",
            format!(
                "a log server is already running in this process (at {})",
                running.address
            ),
        ));
    }
    *current = Some(server);
    Ok(())
}

/// Forgets this process's log server if it is the one at `address` (it
/// closed).
pub fn clear_process_server(address: &str) {
    let mut current = PROCESS_SERVER.write().unwrap_or_else(|p| p.into_inner());
    if current.as_ref().is_some_and(|s| s.address == address) {
        *current = None;
    }
}

/// This process's log server, if one is registered.
pub fn process_server() -> Option<ProcessServer> {
    read(&PROCESS_SERVER)
}

/// Where this process's records go: its own log server's address, else
/// that of the process-wide sender, if either is set.
pub fn logger_address() -> Option<String> {
    process_server()
        .map(|s| s.address)
        .or_else(|| global_sender().map(|s| s.address().to_string()))
}

/// What a child spawned now is told, given what the caller asked for:
/// `log_addr`, else [`logger_address`]; `log_level`, else, when the
/// records go to this process's log server, the level it wants (the
/// caller picks one for other servers). The level is asked outside every
/// lock, so it may take a language runtime's own lock.
pub fn child_options(
    log_addr: Option<String>,
    log_level: Option<Json>,
) -> (Option<String>, Option<Json>) {
    let address = log_addr.or_else(logger_address);
    let level = log_level.or_else(|| {
        let server = process_server()?;
        (address.as_deref() == Some(server.address.as_str())).then(|| (server.level)().into())
    });
    (address, level)
}

static CAPTURE: Mutex<Option<StdioCapture>> = Mutex::new(None);

/// Sets up a Rust child started by a `ProcessSpawner`: takes the name its
/// parent gave it, and when the parent passed `log_addr` (and maybe
/// `log_level`) in `extra`, installs the forwarder, connects it, and
/// captures stdout and stderr. True when logs are forwarded. Call
/// [`shutdown`] before the process exits so the last records leave.
pub fn init_child(config: &ChildConfig) -> Result<bool> {
    Ok(init_forwarding(config.name.as_deref(), &config.extra)?.is_some())
}

/// [`init_child`] from its parts: the child's name and the `extra` object
/// (`log_addr`, `log_level`, `log_stdio`) of its spawn configuration. Returns the
/// level records are kept at when they are forwarded, else `None`.
pub fn init_forwarding(name: Option<&str>, extra: &Json) -> Result<Option<i64>> {
    if let Some(name) = name {
        set_process_name(name);
    }
    let Some(address) = extra.get("log_addr").and_then(Json::as_str) else {
        return Ok(None);
    };
    let levelno = extra
        .get("log_level")
        .and_then(parse_level)
        .unwrap_or(level::INFO);
    install(level_filter(levelno));
    let sender = set_logger_address(address)?;
    // `log_stdio: false` keeps fds 1 and 2 as they are (teleprox's option).
    if extra
        .get("log_stdio")
        .and_then(Json::as_bool)
        .unwrap_or(true)
    {
        *lock(&CAPTURE) = Some(capture_stdio(sender)?);
    }
    Ok(Some(levelno))
}

/// A copy of the stderr this process had before [`init_child`] captured
/// it (for crash dumps that must not go through the capture), if it did.
pub fn saved_stderr() -> Option<std::os::fd::RawFd> {
    lock(&CAPTURE).as_ref().and_then(|c| c.saved_fd(2))
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
