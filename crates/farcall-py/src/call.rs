//! Waiting for a call the way Python waits: with the GIL released, and
//! in the main thread interruptible by Ctrl-C (the call is then
//! cancelled on the peer).

use std::time::{Duration, Instant};

use farcall::{Client, Future, Value};
use pyo3::exceptions::PyTimeoutError;
use pyo3::prelude::*;

use crate::errors::IntoPyResult;
use crate::gil;

/// Runs a sync call: `start` sends it (see `farcall::Client::start`),
/// then its reply is awaited until `timeout` (`None`: no limit). Returns
/// the value and the client it came through (which owns the proxies in
/// it). A timeout or a `KeyboardInterrupt` cancels the call.
pub fn sync(
    py: Python<'_>,
    timeout: Option<Duration>,
    start: impl Send + FnOnce() -> farcall::Result<Future>,
) -> PyResult<(Value, Client)> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut start = Some(start);
    let mut future: Option<Future> = None;
    let got = gil::wait(py, deadline, |until| {
        if let Some(start) = start.take() {
            match start() {
                Ok(f) => future = Some(f),
                Err(e) => return Some(Err(e)),
            }
        }
        let f = future.as_mut().expect("started above");
        match f.wait_until(until) {
            Ok(Some(outcome)) => Some(outcome),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    });
    let outcome = match got {
        Ok(Some(outcome)) => outcome,
        Ok(None) => {
            future.as_mut().map(Future::cancel);
            let waited = timeout.unwrap_or_default().as_secs_f64();
            return Err(PyTimeoutError::new_err(format!(
                "timed out after {waited:.3} s waiting for a reply"
            )));
        }
        Err(interrupted) => {
            future.as_mut().map(Future::cancel);
            return Err(interrupted);
        }
    };
    let value = outcome.py(py)?;
    let client = future.expect("a reply came, so it was sent").client();
    Ok((value, client))
}
