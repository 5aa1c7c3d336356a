//! `farcall._native._LogReceiver`: the bound PULL socket of a
//! `farcall.log.LogServer`, which may be this process's log server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use farcall::log as flog;
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::record::record_dict;
use super::seconds;
use crate::errors::IntoPyResult;

/// A bound ZeroMQ PULL socket that receives log records (the socket of a
/// `farcall.log.LogServer`).
#[pyclass(module = "farcall._native", name = "_LogReceiver", frozen)]
pub struct LogReceiver {
    inner: Mutex<Option<flog::LogReceiver>>,
    address: String,
    /// Registered as this process's log server.
    serving: AtomicBool,
}

impl LogReceiver {
    fn forget(&self) {
        if self.serving.swap(false, Ordering::AcqRel) {
            flog::clear_process_server(&self.address);
        }
    }
}

impl Drop for LogReceiver {
    fn drop(&mut self) {
        self.forget();
    }
}

#[pymethods]
impl LogReceiver {
    /// Binds `address` (default: loopback, a free port).
    #[new]
    #[pyo3(signature = (address=None))]
    fn new(py: Python<'_>, address: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let address = match address {
            Some(a) => crate::args::address(a)?,
            None => flog::DEFAULT_ADDRESS.to_string(),
        };
        let inner = flog::LogReceiver::bind(&address).py(py)?;
        Ok(LogReceiver {
            address: inner.address().to_string(),
            inner: Mutex::new(Some(inner)),
            serving: AtomicBool::new(false),
        })
    }

    /// Makes this receiver this process's log server until it closes:
    /// children spawned meanwhile send here, at the effective level of
    /// `logger` (the one records are handed to). RuntimeError if another
    /// one is.
    fn serve_process(&self, py: Python<'_>, logger: Py<PyAny>) -> PyResult<()> {
        let level = move || {
            crate::gil::attach(|py| {
                logger
                    .call_method0(py, "getEffectiveLevel")
                    .and_then(|l| l.extract::<i64>(py))
                    .unwrap_or(flog::level::INFO)
            })
        };
        flog::set_process_server(flog::ProcessServer {
            address: self.address.clone(),
            level: Arc::new(level),
        })
        .py(py)?;
        self.serving.store(true, Ordering::Release);
        Ok(())
    }

    /// The address senders connect to.
    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    /// Messages that were not log records, dropped so far.
    #[getter]
    fn rejected(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |r| r.rejected())
    }

    /// Waits at most `timeout` seconds (None: no limit) for records and
    /// returns the ones there (at most `max`), each a dict of LogRecord
    /// attributes. Empty after a timeout or once closed.
    #[pyo3(signature = (timeout=None, max=1000))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
        max: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let records = crate::gil::released(py, || {
            let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            match guard.as_mut() {
                Some(r) => r.recv(timeout.map(seconds), max),
                None => Ok(Vec::new()),
            }
        });
        let records = records.py(py)?;
        let out = PyList::empty(py);
        for r in &records {
            out.append(record_dict(py, r)?)?;
        }
        Ok(out)
    }

    /// Unbinds the socket (after a `recv` in progress returns); no longer
    /// this process's log server.
    fn close(&self, py: Python<'_>) {
        self.forget();
        crate::gil::released(py, || {
            self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        });
    }
}
