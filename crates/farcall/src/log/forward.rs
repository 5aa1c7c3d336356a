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
use crate::error::Result;
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
