//! An across payload between Python and the engine: a pickle, its
//! out-of-band buffers, and the objects it refers to by proxy.
//!
//! As a value it is `(pickle, [buffer, ...], [(ref, [method, ...]), ...])`:
//! the pickle and each buffer are bytes (large ones travel as frames of
//! their own, read and written in place), each `ref` is an object of the
//! sender's (a proxy on the wire, with the names of the methods its proxy
//! forwards) or a proxy of the receiver's own object going home. The
//! pickling itself is `farcall.across._wire`'s; this module converts.

use bytes::Bytes;
use farcall::{Client, Proxy, Value};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::buffer::{pinned_bytes, pinned_memory, RecvBuffer};
use crate::hosted::PyHost;

/// Below this, received bytes are handed to Python as `bytes` (a copy
/// costs less than a buffer object).
const SMALL: usize = 4096;

/// A proxy to an object of the peer's, as the across facade holds it:
/// released when the last Python reference goes.
#[pyclass(module = "farcall._native", name = "AcrossRef", frozen)]
pub struct AcrossRef {
    pub(crate) proxy: Proxy,
}

#[pymethods]
impl AcrossRef {
    /// The remote type, as `str(type(obj))` there.
    #[getter]
    fn type_str(&self) -> &str {
        self.proxy.type_str()
    }

    fn __repr__(&self) -> String {
        format!("<AcrossRef {}>", self.proxy.type_str())
    }
}

/// A result of one of the plain types (exactly `None`, `bool`, an `int`
/// that fits 64 bits, `float`, `str`) travels as itself, not pickled:
/// `_wire.serve` sends such results so, which saves a pickle and an
/// unpickle (about a microsecond) on the commonest round trips; the
/// receiver cannot tell the difference. Anything else: `None` here.
fn plain(obj: &Bound<'_, PyAny>) -> PyResult<Option<Value>> {
    Ok(Some(if obj.is_none() {
        Value::None
    } else if obj.is_exact_instance_of::<PyBool>() {
        Value::Bool(obj.extract()?)
    } else if obj.is_exact_instance_of::<PyInt>() {
        match obj.extract::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => return Ok(None),
        }
    } else if obj.is_exact_instance_of::<PyFloat>() {
        Value::Float(obj.extract()?)
    } else if let Ok(s) = obj.cast_exact::<PyString>() {
        Value::Str(s.to_str()?.to_owned())
    } else {
        return Ok(None);
    }))
}

/// Who owns the proxies a received payload carries.
#[derive(Clone, Copy)]
pub enum Owner<'a> {
    /// A reply on this client's link: we own them.
    Reply(&'a Client),
    /// A request's arguments: the sender owns them.
    Request,
}

/// A payload to send: `(pickle, buffers, refs)` from `_wire.dumps`, or a
/// plain result (see [`plain`]).
pub fn to_value(payload: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Some(value) = plain(payload)? {
        return Ok(value);
    }
    let payload = payload.cast::<PyTuple>()?;
    if payload.len() != 3 {
        return Err(PyTypeError::new_err(
            "an across payload is (pickle, buffers, refs)",
        ));
    }
    let pickle = payload.get_item(0)?;
    let pickle = pinned_bytes(pickle.cast::<PyBytes>()?);
    let buffers = payload
        .get_item(1)?
        .cast::<PyList>()?
        .iter()
        .map(|b| buffer(&b))
        .collect::<PyResult<Vec<_>>>()?;
    let refs = payload
        .get_item(2)?
        .cast::<PyList>()?
        .iter()
        .map(|r| reference(&r))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(Value::Tuple(vec![
        Value::Bytes(pickle),
        Value::List(buffers),
        Value::List(refs),
    ]))
}

/// An out-of-band buffer (a `PickleBuffer`), shared without a copy when
/// it is contiguous.
fn buffer(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    match obj.call_method0("raw") {
        // A contiguous byte view that keeps the exporter alive.
        Ok(view) => Ok(Value::Bytes(pinned_memory(&view)?)),
        Err(_) => {
            let buf = PyBuffer::<u8>::get(obj)?;
            Ok(Value::Bytes(Bytes::from(buf.to_vec(obj.py())?)))
        }
    }
}

/// `(obj, methods)`: an object of ours to send by proxy, or the
/// [`AcrossRef`] of a proxy going back to its home.
fn reference(entry: &Bound<'_, PyAny>) -> PyResult<Value> {
    let entry = entry.cast::<PyTuple>()?;
    let obj = entry.get_item(0)?;
    let target = match obj.cast::<AcrossRef>() {
        Ok(r) => Value::Proxy(r.get().proxy.reference().clone()),
        Err(_) => Value::Object(PyHost::new_ref(&obj)?),
    };
    let methods = entry
        .get_item(1)?
        .try_iter()?
        .map(|m| Ok(Value::Str(m?.extract::<String>()?)))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(Value::Tuple(vec![target, Value::List(methods)]))
}

/// A received payload as `(pickle, buffers, refs)` for `_wire.loads`:
/// each ref is `(AcrossRef, methods)` for a proxy to the sender's object,
/// or `(obj, ())` for an object of ours that came home. A plain result
/// (see [`plain`]) comes as itself, never a tuple.
pub fn from_value<'py>(
    py: Python<'py>,
    value: Value,
    owner: Owner<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    let bad = || PyTypeError::new_err("malformed across payload");
    let mut parts = match value {
        Value::Tuple(parts) => parts,
        Value::None => return Ok(py.None().into_bound(py)),
        Value::Bool(b) => return Ok(PyBool::new(py, b).to_owned().into_any()),
        Value::Int(i) => return Ok(i.into_pyobject(py)?.into_any()),
        Value::Float(f) => return Ok(f.into_pyobject(py)?.into_any()),
        Value::Str(s) => return Ok(PyString::new(py, &s).into_any()),
        _ => return Err(bad()),
    };
    if parts.len() != 3 {
        return Err(bad());
    }
    let refs = parts.pop().unwrap_or_default();
    let buffers = parts.pop().unwrap_or_default();
    let pickle = parts.pop().unwrap_or_default();
    let Value::Bytes(pickle) = pickle else {
        return Err(bad());
    };
    let Value::List(buffers) = buffers else {
        return Err(bad());
    };
    let Value::List(refs) = refs else {
        return Err(bad());
    };
    let buffers = buffers
        .into_iter()
        .map(|b| match b {
            Value::Bytes(b) => Ok(Py::new(py, RecvBuffer::new(b))?.into_any()),
            _ => Err(bad()),
        })
        .collect::<PyResult<Vec<_>>>()?;
    let refs = refs
        .into_iter()
        .map(|r| received_ref(py, r, owner))
        .collect::<PyResult<Vec<_>>>()?;
    let pickle = if pickle.len() < SMALL {
        PyBytes::new(py, &pickle).into_any().unbind()
    } else {
        Py::new(py, RecvBuffer::new(pickle))?.into_any()
    };
    Ok(PyTuple::new(
        py,
        [
            pickle,
            PyList::new(py, buffers)?.into_any().unbind(),
            PyList::new(py, refs)?.into_any().unbind(),
        ],
    )?
    .into_any())
}

fn received_ref(py: Python<'_>, r: Value, owner: Owner<'_>) -> PyResult<Py<PyAny>> {
    let bad = || PyTypeError::new_err("malformed across reference");
    let Value::Tuple(mut parts) = r else {
        return Err(bad());
    };
    let methods = match parts.pop() {
        Some(Value::List(names)) => names
            .into_iter()
            .map(|n| match n {
                Value::Str(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect::<PyResult<Vec<String>>>()?,
        _ => return Err(bad()),
    };
    let methods = PyTuple::new(py, methods)?;
    let target = match parts.pop() {
        // One of ours, home again (the engine resolved it).
        Some(Value::Object(obj)) => match obj.as_any().downcast_ref::<PyHost>() {
            Some(host) => host.object().clone_ref(py),
            None => {
                return Err(PyTypeError::new_err(
                    "a Rust object cannot be used from Python here",
                ))
            }
        },
        Some(Value::Proxy(reference)) if reference.rpc_addr == farcall::Host::local().address() => {
            let local = farcall::Host::local()
                .unwrap_proxy(&reference)
                .map_err(|e| crate::errors::to_py(py, e))?;
            match local {
                Value::Object(obj) => match obj.as_any().downcast_ref::<PyHost>() {
                    Some(host) => host.object().clone_ref(py),
                    None => return Err(bad()),
                },
                _ => return Err(bad()),
            }
        }
        Some(Value::Proxy(reference)) => {
            let proxy = match owner {
                Owner::Reply(client) => Proxy::from_reply(reference, client),
                Owner::Request => Proxy::received(reference),
            };
            Py::new(py, AcrossRef { proxy })?.into_any()
        }
        _ => return Err(bad()),
    };
    Ok(PyTuple::new(py, [target, methods.into_any().unbind()])?
        .into_any()
        .unbind())
}
