//! What an `ObjectProxy` does when used.
//!
//! Everything a sync call does on the client runs here in Rust: reading
//! the deferred attribute, parsing the `_sync`/`_return_type`/`_timeout`
//! keywords, converting arguments, sending and waiting with the GIL
//! released, converting the result. No Python-level function of ours runs.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use farcall::{Invoked, ReturnType, SyncMode, Value};
use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::args;
use crate::call;
use crate::convert::{to_py, Mode, Outgoing, Ownership};
use crate::errors::{error_class, IntoPyResult};
use crate::future::PyFuture;
use crate::proxy::ObjectProxy;

impl ObjectProxy {
    /// Runs a call on the remote object (or its method `method`) with the
    /// proxy's options, overridden by `sync`/`return_type`/`timeout`.
    fn invoke(
        &self,
        py: Python<'_>,
        method: Option<&str>,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        overrides: Overrides,
    ) -> PyResult<Py<PyAny>> {
        let (sync, return_type, timeout) = {
            let o = self.options();
            (
                overrides.sync.unwrap_or(o.sync),
                overrides.return_type.unwrap_or(o.return_type),
                overrides.timeout.unwrap_or(o.timeout),
            )
        };
        let proxy = &self.proxy;
        if sync == SyncMode::Sync {
            let (v, client) = call::sync(py, timeout, || {
                proxy.start(method, args, kwargs, return_type, timeout)
            })?;
            return to_py(py, v, Ownership::Reply(&client));
        }
        let timeout = Some(args::limit(timeout));
        let out = crate::gil::released(py, || {
            proxy.invoke(method, args, kwargs, sync, return_type, timeout)
        })
        .py(py)?;
        match out {
            Invoked::Future(f) => PyFuture::create(py, f),
            Invoked::Value(_) | Invoked::Sent => Ok(py.None()),
        }
    }

    /// Calls special method `name` with one converted argument per item.
    fn special(
        &self,
        py: Python<'_>,
        name: &str,
        args: &[&Bound<'_, PyAny>],
        force_sync: bool,
    ) -> PyResult<Py<PyAny>> {
        let overrides = Overrides {
            sync: force_sync.then_some(SyncMode::Sync),
            ..Overrides::default()
        };
        self.special_with(py, name, args, overrides)
    }

    /// [`ObjectProxy::special`] with the call's options overridden.
    fn special_with(
        &self,
        py: Python<'_>,
        name: &str,
        args: &[&Bound<'_, PyAny>],
        overrides: Overrides,
    ) -> PyResult<Py<PyAny>> {
        let values = {
            let o = self.options();
            let conv = Outgoing {
                mode: Mode::Auto,
                no_proxy: o.no_proxy_types.as_ref().map(|t| t.bind(py)),
                result: false,
            };
            args.iter()
                .map(|a| conv.value(a))
                .collect::<PyResult<Vec<_>>>()?
        };
        self.invoke(py, Some(name), values, Vec::new(), overrides)
    }

    /// Fetches attribute `name` now, as the options' `return_type`; a
    /// remote AttributeError is raised as an AttributeError (for hasattr).
    fn attribute(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let derived = self.derived(py, name);
        let return_type = derived.options().return_type;
        derived.fetch(py, return_type).map_err(|e| {
            localized(py, e, "AttributeError", |_| {
                PyAttributeError::new_err(name.to_string())
            })
        })
    }

    /// Fetches the object (its attribute path followed) as `return_type`.
    pub(crate) fn fetch(&self, py: Python<'_>, return_type: ReturnType) -> PyResult<Py<PyAny>> {
        let timeout = self.options().timeout;
        let proxy = &self.proxy;
        let (v, client) = call::sync(py, timeout, || proxy.start_fetch(return_type, timeout))?;
        to_py(py, v, Ownership::Reply(&client))
    }

    /// Releases the reference now if this proxy owns it (true); false for
    /// a borrowed proxy.
    pub fn release(&self, py: Python<'_>) -> PyResult<bool> {
        if !self.proxy.owns() {
            return Ok(false);
        }
        let proxy = &self.proxy;
        crate::gil::released(py, || proxy.release()).py(py)?;
        Ok(true)
    }

    /// `__pow__`/`__rpow__`: three-argument pow is not forwarded.
    fn pow(
        &self,
        py: Python<'_>,
        name: &str,
        other: &Bound<'_, PyAny>,
        modulo: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if modulo.is_some() {
            return Err(PyTypeError::new_err("pow() with a modulo is not forwarded"));
        }
        self.special(py, name, &[other], false)
    }

    fn identity(&self) -> (&str, u64, &[String]) {
        let r = self.proxy.reference();
        (&r.rpc_addr, r.obj_id, &r.attributes)
    }
}

/// `e`, or `local(&e)` when `e` is a RemoteCallException for a remote
/// exception of type `remote`: the special methods Python's protocols call
/// (`hasattr`, `list()`, `next()`) need the built-in exception.
fn localized(py: Python<'_>, e: PyErr, remote: &str, local: impl FnOnce(&PyErr) -> PyErr) -> PyErr {
    let matches = error_class(py, "RemoteCallException")
        .ok()
        .filter(|cls| e.is_instance(py, cls))
        .and_then(|_| e.value(py).getattr("type_str").ok())
        .and_then(|t| t.extract::<String>().ok())
        .is_some_and(|t| t == remote);
    match matches {
        true => local(&e),
        false => e,
    }
}

/// Per-call overrides of a proxy's options.
#[derive(Default)]
struct Overrides {
    sync: Option<SyncMode>,
    return_type: Option<ReturnType>,
    timeout: Option<Option<Duration>>,
}

impl Overrides {
    /// Takes `_sync`, `_return_type` and `_timeout` (and pyacq's older
    /// `_callSync`, `_returnType`) out of a call's keywords, in one pass
    /// over them (this runs on every call that has keywords).
    fn take(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Overrides> {
        let mut o = Overrides::default();
        let Some(kwargs) = kwargs else {
            return Ok(o);
        };
        let mut taken = Vec::new();
        for (key, value) in kwargs.iter() {
            let key = key.cast_into::<PyString>()?;
            let name = key.to_str()?;
            if !name.starts_with('_') {
                continue;
            }
            match name {
                "_sync" | "_callSync" => o.sync = Some(args::sync_mode(&value)?),
                "_return_type" | "_returnType" => o.return_type = Some(args::return_type(&value)?),
                "_timeout" => o.timeout = Some(args::timeout(&value)?),
                _ => continue,
            }
            taken.push(key);
        }
        for key in taken {
            kwargs.del_item(key)?;
        }
        Ok(o)
    }
}

#[pymethods]
impl ObjectProxy {
    /// Calls the remote object: `proxy(*args, _sync=, _return_type=,
    /// _timeout=, **kwargs)`. Returns the result, a `Future` (`"async"`),
    /// or None (`"off"`).
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let overrides = Overrides::take(kwargs)?;
        let (args, kwargs) = {
            let o = self.options();
            let conv = Outgoing {
                mode: Mode::Auto,
                no_proxy: o.no_proxy_types.as_ref().map(|t| t.bind(py)),
                result: false,
            };
            (conv.values(args)?, conv.kwargs(kwargs)?)
        };
        self.invoke(py, None, args, kwargs, overrides)
    }

    /// A deferred proxy to attribute `name` (or, with `defer_getattr` off
    /// or for names starting with `_`, the attribute fetched now). The
    /// proxy's own names (`_get_value`, `__class__`, ...) all start with
    /// `_`; other names skip the class lookup, which `proxy.method(...)`
    /// would otherwise pay for with an AttributeError on every call.
    fn __getattribute__(slf: &Bound<'_, Self>, name: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let text = name.to_str()?;
        let private = text.starts_with('_');
        if private {
            // SAFETY: both pointers are valid, borrowed objects.
            let own = unsafe { ffi::PyObject_GenericGetAttr(slf.as_ptr(), name.as_ptr()) };
            if !own.is_null() {
                // SAFETY: GenericGetAttr returned a new reference.
                return Ok(unsafe { Bound::from_owned_ptr(py, own) }.unbind());
            }
            let err = PyErr::fetch(py);
            if !err.is_instance_of::<PyAttributeError>(py) {
                return Err(err);
            }
        }
        if text == "__getattr__" {
            // pyacq documents `proxy.__getattr__(name)` as API.
            return Ok(slf.getattr(pyo3::intern!(py, "_remote_getattr"))?.unbind());
        }
        match private {
            // Private names are fetched at once, never deferred.
            true => me.attribute(py, text),
            false => me._remote_getattr(py, text),
        }
    }

    /// `proxy.__getattr__(name)`: the attribute `name` of the remote
    /// object, deferred or fetched as the options say (as `proxy.name`).
    fn _remote_getattr(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        if self.options().defer_getattr {
            return self.child(py, name);
        }
        self.attribute(py, name)
    }

    /// Sets an attribute on the remote object.
    fn __setattr__(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let name = PyString::new(py, name);
        self.special(py, "__setattr__", &[name.as_any(), value], false)
            .map(drop)
    }

    /// Deletes an attribute of the remote object.
    fn __delattr__(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let name = PyString::new(py, name);
        self.special(py, "__delattr__", &[name.as_any()], false)
            .map(drop)
    }

    /// The remote object itself: fetched by proxy or value per the options.
    /// A proxy without deferred attributes is returned as it is.
    fn _undefer(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let me = slf.get();
        if me.proxy.reference().attributes.is_empty() {
            return Ok(slf.clone().into_any().unbind());
        }
        let return_type = me.options().return_type;
        me.fetch(slf.py(), return_type)
    }

    /// A copy of the remote object (an error if it cannot be copied).
    fn _get_value(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.fetch(py, ReturnType::Value)
    }

    /// Releases the remote reference now; the proxy is unusable after.
    fn _delete(&self, py: Python<'_>) -> PyResult<()> {
        let proxy = &self.proxy;
        crate::gil::released(py, || proxy.release()).py(py)
    }

    /// Changes this proxy's options: `sync`, `return_type`, `timeout`,
    /// `defer_getattr`, `no_proxy_types`, `auto_delete`.
    #[pyo3(signature = (**kwargs))]
    fn _set_proxy_options(&self, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let Some(kwargs) = kwargs else {
            return Ok(());
        };
        let mut o = self.options();
        o.update(kwargs)?;
        self.proxy.keep_alive(!o.auto_delete);
        drop(o);
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    /// This proxy's options, as a dict.
    #[getter]
    fn _proxy_options<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.options().to_dict(py)
    }

    /// The object's id in its server's table.
    #[getter]
    fn _obj_id(&self) -> u64 {
        self.proxy.reference().obj_id
    }

    /// This reference's id (one per proxy sent).
    #[getter]
    fn _ref_id(&self) -> u64 {
        self.proxy.reference().ref_id
    }

    /// The remote type, as `str(type(obj))`, e.g. `"<class 'list'>"`.
    #[getter]
    fn _type_str(&self) -> &str {
        self.proxy.type_str()
    }

    /// The deferred attribute path below the object.
    #[getter]
    fn _attributes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.proxy.reference().attributes)
    }

    /// The address of the server that owns the object.
    #[getter]
    fn _rpc_addr(&self) -> &str {
        self.proxy.address()
    }

    /// Pickles as a proxy to the same remote object: unpickled (in any
    /// process), it refers to the object while the proxy that was pickled
    /// (or another owner) keeps it alive; it holds no reference itself.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let restore = PyModule::import(py, "farcall._native")?.getattr("_proxy_from_state")?;
        let r = self.proxy.reference();
        let state = (
            r.rpc_addr.as_str(),
            r.obj_id,
            r.ref_id,
            r.type_str.as_str(),
            PyTuple::new(py, &r.attributes)?,
        )
            .into_pyobject(py)?;
        Ok((restore, state))
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.proxy)
    }

    fn __hash__(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.identity().hash(&mut h);
        h.finish()
    }

    /// Two proxies are equal when they refer to the same remote object;
    /// other comparisons run remotely.
    fn __richcmp__(
        &self,
        py: Python<'_>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        if let (Ok(other), CompareOp::Eq | CompareOp::Ne) = (other.cast::<ObjectProxy>(), op) {
            let same = self.identity() == other.get().identity();
            let equal = same == matches!(op, CompareOp::Eq);
            return Ok(equal.into_pyobject(py)?.to_owned().into_any().unbind());
        }
        let name = match op {
            CompareOp::Lt => "__lt__",
            CompareOp::Le => "__le__",
            CompareOp::Eq => "__eq__",
            CompareOp::Ne => "__ne__",
            CompareOp::Gt => "__gt__",
            CompareOp::Ge => "__ge__",
        };
        self.special(py, name, &[other], false)
    }

    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__getitem__", &[key], false)
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.special(py, "__setitem__", &[key, value], false)
            .map(drop)
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__delitem__", &[key], false).map(drop)
    }

    /// `len()` of the remote object; a remote TypeError (no length) is a
    /// TypeError here, so `list(proxy)` falls back to iterating.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let n = self.special(py, "__len__", &[], true).map_err(|e| {
            localized(py, e, "TypeError", |e| {
                PyTypeError::new_err(e.value(py).to_string())
            })
        })?;
        n.extract(py)
    }

    fn __contains__(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.special(py, "__contains__", &[item], true)?
            .bind(py)
            .is_truthy()
    }

    fn __bool__(&self, py: Python<'_>) -> PyResult<bool> {
        self.special(py, "__bool__", &[], true)?
            .bind(py)
            .is_truthy()
    }

    /// A proxy to the remote iterator (`iter(obj)` run remotely): items
    /// come one per `next()`, so an endless generator works.
    fn __iter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let overrides = Overrides {
            sync: Some(SyncMode::Sync),
            return_type: Some(ReturnType::Proxy),
            ..Overrides::default()
        };
        self.special_with(py, "__iter__", &[], overrides)
    }

    /// The next item of the remote iterator (StopIteration at its end).
    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.special(py, "__next__", &[], true).map_err(|e| {
            localized(py, e, "StopIteration", |_| {
                pyo3::exceptions::PyStopIteration::new_err(())
            })
        })
    }

    fn __neg__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.special(py, "__neg__", &[], false)
    }
    fn __pos__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.special(py, "__pos__", &[], false)
    }
    fn __abs__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.special(py, "__abs__", &[], false)
    }
    fn __invert__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.special(py, "__invert__", &[], false)
    }

    // Binary operators run remotely (through `operator`, so reflected
    // operands work as in Python).
    fn __add__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__add__", &[other], false)
    }
    fn __sub__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__sub__", &[other], false)
    }
    fn __mul__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__mul__", &[other], false)
    }
    fn __matmul__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__matmul__", &[other], false)
    }
    fn __truediv__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__truediv__", &[other], false)
    }
    fn __floordiv__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__floordiv__", &[other], false)
    }
    fn __mod__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__mod__", &[other], false)
    }
    fn __lshift__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__lshift__", &[other], false)
    }
    fn __rshift__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__rshift__", &[other], false)
    }
    fn __and__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__and__", &[other], false)
    }
    fn __or__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__or__", &[other], false)
    }
    fn __xor__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__xor__", &[other], false)
    }
    fn __radd__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__radd__", &[other], false)
    }
    fn __rsub__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__rsub__", &[other], false)
    }
    fn __rmul__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__rmul__", &[other], false)
    }
    fn __rmatmul__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__rmatmul__", &[other], false)
    }
    fn __rtruediv__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__rtruediv__", &[other], false)
    }
    fn __rfloordiv__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__rfloordiv__", &[other], false)
    }
    fn __rmod__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__rmod__", &[other], false)
    }
    fn __rlshift__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__rlshift__", &[other], false)
    }
    fn __rrshift__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__rrshift__", &[other], false)
    }
    fn __rand__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__rand__", &[other], false)
    }
    fn __ror__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__ror__", &[other], false)
    }
    fn __rxor__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.special(py, "__rxor__", &[other], false)
    }
    // In-place operators act on the remote object; the proxy stays bound
    // to it.
    fn __iadd__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__iadd__", &[other], true).map(drop)
    }
    fn __isub__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__isub__", &[other], true).map(drop)
    }
    fn __imul__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__imul__", &[other], true).map(drop)
    }
    fn __imatmul__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__imatmul__", &[other], true).map(drop)
    }
    fn __itruediv__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__itruediv__", &[other], true).map(drop)
    }
    fn __ifloordiv__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__ifloordiv__", &[other], true).map(drop)
    }
    fn __imod__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__imod__", &[other], true).map(drop)
    }
    fn __ilshift__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__ilshift__", &[other], true).map(drop)
    }
    fn __irshift__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__irshift__", &[other], true).map(drop)
    }
    fn __iand__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__iand__", &[other], true).map(drop)
    }
    fn __ior__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__ior__", &[other], true).map(drop)
    }
    fn __ixor__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.special(py, "__ixor__", &[other], true).map(drop)
    }
    fn __pow__(
        &self,
        py: Python<'_>,
        other: &Bound<'_, PyAny>,
        modulo: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.pow(py, "__pow__", other, modulo)
    }

    fn __rpow__(
        &self,
        py: Python<'_>,
        other: &Bound<'_, PyAny>,
        modulo: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.pow(py, "__rpow__", other, modulo)
    }

    fn __ipow__(
        &self,
        py: Python<'_>,
        other: &Bound<'_, PyAny>,
        _modulo: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.special(py, "__ipow__", &[other], true).map(drop)
    }
}
