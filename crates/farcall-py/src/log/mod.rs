//! The engine side of `farcall.log`: the sender, the receiver, the
//! process-wide names, sender and log server, the set-up of a spawned
//! child, the line layout, and the bridge that hands the engine's own
//! records to Python's `logging`.

use std::sync::Arc;
use std::time::Duration;

use farcall::log as flog;
use pyo3::prelude::*;

use crate::errors::IntoPyResult;

mod bridge;
mod child;
mod line;
mod receiver;
mod record;
mod sender;

pub use bridge::inline;
pub use child::child_log_options;

fn seconds(timeout: f64) -> Duration {
    Duration::from_secs_f64(timeout.max(0.0))
}

/// Sends this process's records, the engine's own among them, to the log
/// server at `address` from now on; returns the process-wide sender (the
/// same one while the address stays the same).
#[pyfunction]
fn _log_set_logger_address(
    py: Python<'_>,
    address: &Bound<'_, PyAny>,
) -> PyResult<sender::LogSender> {
    let address = crate::args::address(address)?;
    let sender = py.detach(|| flog::set_logger_address(&address)).py(py)?;
    Ok(sender::LogSender::wrap(sender))
}

/// Where this process's records go: its log server's address, else that
/// of the process-wide sender, else None.
#[pyfunction]
fn _log_logger_address() -> Option<String> {
    flog::logger_address()
}

/// Sets this host's name in log records.
#[pyfunction]
fn _log_set_host_name(name: &str) {
    flog::set_host_name(name);
}

/// This host's name in log records.
#[pyfunction]
fn _log_get_host_name() -> String {
    flog::host_name().to_string()
}

/// Sets this process's name in log records.
#[pyfunction]
fn _log_set_process_name(name: &str) {
    flog::set_process_name(name);
}

/// This process's name in log records.
#[pyfunction]
fn _log_get_process_name() -> String {
    flog::process_name().to_string()
}

/// Names thread `tid` (default: the calling thread) in log records.
#[pyfunction]
#[pyo3(signature = (name, tid=None))]
fn _log_set_thread_name(name: &str, tid: Option<u64>) {
    flog::set_thread_name(name, tid);
}

/// The name set for thread `tid` (default: the calling thread), or None.
#[pyfunction]
#[pyo3(signature = (tid=None))]
fn _log_get_thread_name(tid: Option<u64>) -> Option<String> {
    let tid = tid.unwrap_or_else(flog::current_thread_id);
    flog::registered_thread_name(tid).map(|n| n.to_string())
}

/// Registers the log classes and functions, and installs the forwarder
/// of the engine's own `log` records (WARNING and above, to stderr until
/// a sender is set).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<sender::LogSender>()?;
    m.add_class::<receiver::LogReceiver>()?;
    m.add_class::<line::LineStyle>()?;
    child::register(m)?;
    m.add_function(wrap_pyfunction!(_log_set_logger_address, m)?)?;
    m.add_function(wrap_pyfunction!(_log_logger_address, m)?)?;
    m.add_function(wrap_pyfunction!(_log_set_host_name, m)?)?;
    m.add_function(wrap_pyfunction!(_log_get_host_name, m)?)?;
    m.add_function(wrap_pyfunction!(_log_set_process_name, m)?)?;
    m.add_function(wrap_pyfunction!(_log_get_process_name, m)?)?;
    m.add_function(wrap_pyfunction!(_log_set_thread_name, m)?)?;
    m.add_function(wrap_pyfunction!(_log_get_thread_name, m)?)?;
    // Fails only if a logger is already installed: keep that one. The
    // engine keeps what the `farcall` logger would (WARNING by default).
    let level: i64 = PyModule::import(m.py(), "logging")?
        .call_method1("getLogger", ("farcall",))?
        .call_method0("getEffectiveLevel")?
        .extract()?;
    flog::install(flog::level_filter(level));
    flog::set_local_sink(Some(Arc::new(bridge::to_python_logging)));
    Ok(())
}
