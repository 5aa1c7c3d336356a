//! Python bindings for the farcall engine, built as `farcall._native`.
//!
//! One module per concern: `convert` (Python objects <-> values), `host`
//! (Python objects served by the engine), `proxy`, `future`, `client`,
//! `server`, `spawn`, `buffer` (zero-copy memory), `errors`, `gil`
//! (releasing it, safely at exit) and `log`. The `farcall` package
//! re-exports what users need.

use bytes::Bytes;
use farcall::codec::{self, Format};
use farcall::server::ThreadExporter;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

mod buffer;
mod client;
mod convert;
mod errors;
mod future;
mod gil;
mod host;
mod log;
mod proxy;
mod server;
mod spawn;

use convert::{Mode, Outgoing, Ownership};
use errors::IntoPyResult;

fn format(name: &str) -> PyResult<Format> {
    Format::from_name(name.as_bytes())
        .ok_or_else(|| PyValueError::new_err(format!("unknown serializer {name:?}")))
}

/// Serializes `obj` in format `name`: the message body, then out-of-band
/// buffers (only the `farcall` format has any).
#[pyfunction]
fn encode<'py>(
    py: Python<'py>,
    name: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let value = Outgoing::new(Mode::Auto).value(obj)?;
    let encoded = codec::encode(format(name)?, &value, &mut ThreadExporter).py(py)?;
    let mut frames = vec![PyBytes::new(py, &encoded.body)];
    frames.extend(encoded.buffers.iter().map(|b| PyBytes::new(py, b)));
    PyList::new(py, frames)
}

/// Deserializes a body (and out-of-band buffers) in format `name`.
#[pyfunction]
#[pyo3(signature = (name, body, buffers=Vec::new()))]
fn decode(py: Python<'_>, name: &str, body: &[u8], buffers: Vec<Vec<u8>>) -> PyResult<Py<PyAny>> {
    let buffers: Vec<Bytes> = buffers.into_iter().map(Bytes::from).collect();
    let value = codec::decode(format(name)?, &Bytes::copy_from_slice(body), &buffers).py(py)?;
    // Decoded outside any call: nobody handed us these references.
    convert::to_py(py, value, Ownership::Borrowed)
}

/// The `farcall._native` extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", farcall::VERSION)?;
    gil::init();
    m.add_function(wrap_pyfunction!(gil::_exiting, m)?)?;
    m.add_class::<server::RPCServer>()?;
    m.add_class::<client::RPCClient>()?;
    m.add_class::<proxy::ObjectProxy>()?;
    m.add_class::<future::PyFuture>()?;
    m.add_class::<buffer::RecvBuffer>()?;
    m.add_class::<spawn::ProcessSpawner>()?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    spawn::add_functions(m)?;
    log::register(m)?;
    Ok(())
}
