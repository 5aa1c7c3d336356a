//! Engine errors as Python exceptions, and Python exceptions as engine
//! errors.
//!
//! The exception classes with behaviour of their own (`RemoteCallException`,
//! the `OperationError` family) are defined in `farcall/errors.py`, so they
//! are ordinary Python classes users can subclass and pickle; this module
//! looks them up once.

use farcall::Error;
use pyo3::exceptions::{
    PyAttributeError, PyIndexError, PyKeyError, PyOSError, PyOverflowError, PyPermissionError,
    PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyType};

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The class `name` of `farcall.errors`.
pub fn error_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    let module = ERRORS.get_or_try_init(py, || {
        PyModule::import(py, "farcall.errors").map(Bound::unbind)
    })?;
    Ok(module.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

/// Turns an engine error into the Python exception DESIGN.md names.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let make = |class: &str, args: (String, String)| match error_class(py, class) {
        Ok(cls) => match cls.call1(args) {
            Ok(exc) => PyErr::from_value(exc),
            Err(err) => err,
        },
        Err(err) => err,
    };
    match e {
        Error::Remote {
            type_name,
            traceback,
        } => make("RemoteCallException", (type_name, traceback.concat())),
        Error::Timeout(d) => PyTimeoutError::new_err(format!(
            "timed out after {:.3} s waiting for a reply",
            d.as_secs_f64()
        )),
        Error::Disconnected(why) => make_one(py, "DisconnectError", why),
        Error::Protocol(why) => make_one(py, "ProtocolError", why),
        Error::Exception { type_name, message } => builtin(&type_name, message),
        Error::Codec(why) => PyTypeError::new_err(why),
        Error::Address(address, why) => {
            PyValueError::new_err(format!("bad address {address:?}: {why}"))
        }
        Error::Io(io) => PyOSError::new_err(io.to_string()),
        Error::Zmq(z) => PyOSError::new_err(format!("ZeroMQ: {z}")),
    }
}

fn make_one(py: Python<'_>, class: &str, message: String) -> PyErr {
    match error_class(py, class).and_then(|cls| cls.call1((message,))) {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

/// A local exception raised by the engine, by its Python type name.
fn builtin(type_name: &str, message: String) -> PyErr {
    match type_name {
        "TypeError" => PyTypeError::new_err(message),
        "ValueError" => PyValueError::new_err(message),
        "KeyError" => PyKeyError::new_err(message),
        "AttributeError" => PyAttributeError::new_err(message),
        "IndexError" => PyIndexError::new_err(message),
        "OverflowError" => PyOverflowError::new_err(message),
        "PermissionError" => PyPermissionError::new_err(message),
        "RuntimeError" => PyRuntimeError::new_err(message),
        _ => PyRuntimeError::new_err(format!("{type_name}: {message}")),
    }
}

/// Extension trait: `result.py(py)?` converts an engine result.
pub trait IntoPyResult<T> {
    /// The result with its error turned into a Python exception.
    fn py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for farcall::Result<T> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}

/// A Python exception as the engine sends it: the exception's type name
/// and its formatted traceback (pyacq's `[type, lines]`).
pub fn from_py(py: Python<'_>, err: PyErr) -> Error {
    let type_name = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let traceback = format_exception(py, &err).unwrap_or_else(|_| vec![format!("{err}\n")]);
    Error::Remote {
        type_name,
        traceback,
    }
}

fn format_exception(py: Python<'_>, err: &PyErr) -> PyResult<Vec<String>> {
    let tb = PyModule::import(py, "traceback")?;
    let lines = tb.getattr("format_exception")?.call1((
        err.get_type(py),
        err.value(py),
        err.traceback(py),
    ))?;
    lines.cast::<PyList>()?.extract()
}
