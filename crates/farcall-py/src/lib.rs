//! Python bindings for the farcall engine, built as `farcall._native`.
//!
//! It converts and delegates: the engine does the work. One module per
//! concern, layered without cycles (each uses only those above it):
//!
//! - `args` (Python arguments parsed once), `errors`, `gil` (releasing it,
//!   interruptible waits), `buffer` (zero-copy memory), `channel` (a
//!   Python object as a byte channel);
//! - `hosted` (the Python object type the engine hosts), `proxy` (the
//!   `ObjectProxy` type), then `convert` (Python objects <-> values);
//! - `host` (how hosted objects answer), `call` (waiting for a call),
//!   `future`, `proxy_methods`, `client`, `server`, `log`, `spawn`,
//!   `across` (across's connections).
//!
//! The `farcall` package re-exports what users need.

use std::sync::Arc;

use bytes::Bytes;
use farcall::codec::{self, Exporter, NoExport};
use farcall::host::HostExporter;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

mod across;
mod added_types;
mod args;
mod buffer;
mod call;
mod channel;
mod client;
mod convert;
mod errors;
mod future;
mod gil;
mod hooks;
mod host;
mod hosted;
mod log;
mod proxy;
mod proxy_methods;
mod server;
mod spawn;

use convert::{Mode, Outgoing, Ownership};
use errors::IntoPyResult;

/// Serializes `obj` in format `name`: the message body, then out-of-band
/// buffers (only the `farcall` format has any).
#[pyfunction]
fn encode<'py>(
    py: Python<'py>,
    name: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let value = Outgoing::new(Mode::Auto).value(obj)?;
    // Objects by proxy need a server in this thread, as in pyacq.
    let host = farcall::peer::thread_service().map(|s| s.host());
    let mut exporter: Box<dyn Exporter> = match &host {
        Some(host) => Box::new(HostExporter { host, holder: None }),
        None => Box::new(NoExport),
    };
    let encoded = codec::encode(args::format(name)?, &value, exporter.as_mut()).py(py)?;
    let mut frames = vec![PyBytes::new(py, &encoded.body)];
    frames.extend(encoded.buffers.iter().map(|b| PyBytes::new(py, b)));
    PyList::new(py, frames)
}

/// Deserializes a body (and out-of-band buffers) in format `name`.
#[pyfunction]
#[pyo3(signature = (name, body, buffers=Vec::new()))]
fn decode(py: Python<'_>, name: &str, body: &[u8], buffers: Vec<Vec<u8>>) -> PyResult<Py<PyAny>> {
    let buffers: Vec<Bytes> = buffers.into_iter().map(Bytes::from).collect();
    let value =
        codec::decode(args::format(name)?, &Bytes::copy_from_slice(body), &buffers).py(py)?;
    // Decoded outside any call: nobody handed us these references.
    convert::to_py(py, value, Ownership::Borrowed)
}

/// The `farcall._native` extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", farcall::VERSION)?;
    gil::init();
    // Imports and values by proxy give real Python objects, on every host
    // of the process (servers and the link host alike).
    farcall::Host::set_default_runtime(Arc::new(host::PyRuntime));
    m.add_function(wrap_pyfunction!(gil::_exiting, m)?)?;
    m.add_class::<server::RPCServer>()?;
    m.add_function(wrap_pyfunction!(server::_remove_socket_files, m)?)?;
    m.add_class::<client::RPCClient>()?;
    m.add_class::<proxy::ObjectProxy>()?;
    m.add_function(wrap_pyfunction!(proxy::_proxy_from_state, m)?)?;
    m.add_class::<future::PyFuture>()?;
    m.add_function(wrap_pyfunction!(future::_set_future_class, m)?)?;
    m.add_class::<buffer::RecvBuffer>()?;
    m.add_class::<spawn::ProcessSpawner>()?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    spawn::add_functions(m)?;
    log::register(m)?;
    across::register(m)?;
    Ok(())
}
