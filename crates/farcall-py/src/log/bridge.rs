//! The engine's own log records in a Python process: handed to Python's
//! `logging` (see docs/logging.md), never by the engine thread that logs.

use farcall::log::Record;
use pyo3::prelude::*;

/// Most engine records waiting for Python's `logging`; more are dropped
/// (and counted) rather than stall the engine thread that logs.
const BRIDGE_QUEUE: usize = 4096;

/// Hands an engine record to Python's `logging` (as logger `farcall.server`
/// for target `farcall::server`). The engine thread that logs only queues
/// it: a thread of its own takes the GIL and calls the handlers, so an
/// engine thread never waits for the GIL to log (which is why this is not
/// pyo3-log, which calls Python in the logging thread).
pub fn to_python_logging(record: Record) {
    if INLINE.with(std::cell::Cell::get) {
        // A call hook's thread, which holds the GIL: the record is made
        // now, in the hook's context (a tracing span, say).
        Python::attach(|py| {
            if let Err(e) = handle_in_python(py, &record) {
                e.write_unraisable(py, None);
            }
        });
        return;
    }
    static QUEUE: std::sync::OnceLock<std::sync::mpsc::SyncSender<Record>> =
        std::sync::OnceLock::new();
    static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Record>(BRIDGE_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("farcall-log-bridge".into())
            .spawn(move || {
                for record in rx {
                    if crate::gil::exiting() {
                        continue;
                    }
                    Python::attach(|py| {
                        if let Err(e) = handle_in_python(py, &record) {
                            e.write_unraisable(py, None);
                        }
                    });
                }
            });
        if let Err(e) = spawned {
            eprintln!("farcall: no thread for engine log records ({e}); they go nowhere");
        }
        tx
    });
    if queue.try_send(record).is_err() {
        DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

thread_local! {
    static INLINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the engine's records of this thread handed to Python's
/// `logging` at once, in this thread, rather than queued (for code that
/// holds the GIL and wants its records made in its own context).
pub fn inline<T>(f: impl FnOnce() -> T) -> T {
    let before = INLINE.with(|i| i.replace(true));
    let out = f();
    INLINE.with(|i| i.set(before));
    out
}

/// Runs `record` through the Python logger its target names.
fn handle_in_python(py: Python<'_>, record: &Record) -> PyResult<()> {
    let logging = PyModule::import(py, "logging")?;
    let name = record.name.replace("::", ".");
    let logger = logging.call_method1("getLogger", (&name,))?;
    if !logger
        .call_method1("isEnabledFor", (record.levelno,))?
        .is_truthy()?
    {
        return Ok(());
    }
    let attrs = super::record::record_dict(py, record)?;
    attrs.set_item("name", name)?;
    let made = logging.call_method1("makeLogRecord", (attrs,))?;
    logger.call_method1("handle", (made,))?;
    Ok(())
}
