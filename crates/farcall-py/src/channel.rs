//! A Python object with `recv(size)`, `send(data)`, `cancel()` and
//! `close()` as an engine channel: a peer link runs over it like over a
//! socket. It has no descriptor to poll, so a thread of its own reads it
//! (blocking in `recv`); writes call `send` in the writing thread.

use std::io::{self, IoSlice};

use farcall::channel::Channel;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::gil;

/// The largest write handed to `send` at once.
const MAX_SEND: usize = 1 << 20;

/// A channel object of the user's.
pub struct PyChannel {
    obj: Py<PyAny>,
    name: String,
}

impl PyChannel {
    /// Wraps `obj`, checking that it has the four methods.
    pub fn new(obj: &Bound<'_, PyAny>) -> PyResult<PyChannel> {
        for method in ["recv", "send", "cancel", "close"] {
            if !obj.hasattr(method)? {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "a channel needs recv(size), send(data), cancel() and close(); {} has no {method}",
                    obj.get_type().name()?
                )));
            }
        }
        Ok(PyChannel {
            name: format!("channel {}", obj.get_type().name()?),
            obj: obj.clone().unbind(),
        })
    }

    /// Calls `f` with the GIL, unless the interpreter is going away (then
    /// the channel reads as ended).
    fn with<T>(&self, ended: T, f: impl FnOnce(Python<'_>) -> PyResult<T>) -> io::Result<T> {
        if gil::exiting() {
            return Ok(ended);
        }
        Python::attach(|py| f(py).map_err(|e| io::Error::other(e.to_string())))
    }
}

impl Channel for PyChannel {
    fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.with(Some(0), |py| {
            let data = self.obj.call_method1(py, "recv", (buf.len(),))?;
            let data = data.bind(py);
            let bytes: &[u8] = match data.cast::<PyBytes>() {
                Ok(b) => b.as_bytes(),
                Err(_) => {
                    return Err(pyo3::exceptions::PyTypeError::new_err(
                        "a channel's recv() must return bytes",
                    ))
                }
            };
            if bytes.len() > buf.len() {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "recv({}) returned {} bytes",
                    buf.len(),
                    bytes.len()
                )));
            }
            buf[..bytes.len()].copy_from_slice(bytes);
            Ok(Some(bytes.len()))
        })
    }

    fn write(&self, bufs: &[IoSlice<'_>]) -> io::Result<Option<usize>> {
        let mut data = Vec::new();
        for b in bufs {
            let room = MAX_SEND.saturating_sub(data.len());
            if room == 0 {
                break;
            }
            data.extend_from_slice(&b[..b.len().min(room)]);
        }
        self.with(Some(data.len()), |py| {
            let sent = self
                .obj
                .call_method1(py, "send", (PyBytes::new(py, &data),))?;
            let sent: usize = sent.extract(py)?;
            Ok(Some(sent.min(data.len())))
        })
    }

    fn read_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    fn cancel(&self) {
        let _ = self.with((), |py| self.obj.call_method0(py, "cancel").map(drop));
    }

    fn close(&self) {
        let _ = self.with((), |py| self.obj.call_method0(py, "close").map(drop));
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
