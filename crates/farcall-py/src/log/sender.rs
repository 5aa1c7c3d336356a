//! `farcall._native._LogSender`: the engine's non-blocking sender, as
//! `farcall.log.LogSender` (a `logging.Handler`) uses it.

use std::sync::Arc;

use farcall::log::{self as flog, Record};
use pyo3::prelude::*;

use super::record::record_of;
use super::seconds;
use crate::errors::IntoPyResult;

/// Sends log records to a log server from a background thread; `send`
/// never blocks (a full queue drops the record and counts it).
#[pyclass(module = "farcall._native", name = "_LogSender", frozen)]
pub struct LogSender {
    pub(super) inner: Arc<flog::LogSender>,
}

impl LogSender {
    /// The Python face of an engine sender.
    pub(super) fn wrap(inner: Arc<flog::LogSender>) -> LogSender {
        LogSender { inner }
    }
}

#[pymethods]
impl LogSender {
    /// Connects to the log server at `address` (a ZeroMQ endpoint) with a
    /// queue of `capacity` records.
    #[new]
    #[pyo3(signature = (address, capacity=10000))]
    fn new(py: Python<'_>, address: &Bound<'_, PyAny>, capacity: usize) -> PyResult<Self> {
        let address = crate::args::address(address)?;
        let inner = flog::LogSender::with_capacity(&address, capacity).py(py)?;
        Ok(LogSender {
            inner: Arc::new(inner),
        })
    }

    /// The log server's address.
    #[getter]
    fn address(&self) -> &str {
        self.inner.address()
    }

    /// Records handed to ZeroMQ so far.
    #[getter]
    fn sent(&self) -> u64 {
        self.inner.sent()
    }

    /// Records dropped so far (queue full, sender closed).
    #[getter]
    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    /// Records waiting to be sent.
    #[getter]
    fn queued(&self) -> u64 {
        self.inner.queued()
    }

    /// Queues a `logging.LogRecord` whose message is `msg` (formatted) and
    /// traceback `exc_text`; never blocks. False if it was dropped.
    #[pyo3(signature = (record, msg, exc_text=None))]
    fn send(
        &self,
        record: &Bound<'_, PyAny>,
        msg: String,
        exc_text: Option<String>,
    ) -> PyResult<bool> {
        Ok(self.inner.send(record_of(record, msg, exc_text)?))
    }

    /// Queues a record made of a logger name, a level and a message, with
    /// this process's names; never blocks.
    fn send_message(&self, name: &str, levelno: i64, msg: &str) -> bool {
        self.inner.send(Record::new(name, levelno, msg))
    }

    /// Waits at most `timeout` seconds until what was queued is sent;
    /// True if it all went.
    #[pyo3(signature = (timeout=1.0))]
    fn flush(&self, py: Python<'_>, timeout: f64) -> bool {
        let inner = &self.inner;
        crate::gil::released(py, || inner.flush(seconds(timeout)))
    }

    /// Stops accepting records and lets the queued ones go for at most
    /// `timeout` seconds. True if the sender finished in time.
    #[pyo3(signature = (timeout=1.0))]
    fn close(&self, py: Python<'_>, timeout: f64) -> bool {
        let inner = &self.inner;
        crate::gil::released(py, || inner.close(seconds(timeout)))
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn __repr__(&self) -> String {
        format!(
            "<_LogSender to {} sent={} dropped={}>",
            self.inner.address(),
            self.inner.sent(),
            self.inner.dropped()
        )
    }
}
