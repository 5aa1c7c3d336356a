//! `ObjectProxy`, the type: a remote object used almost like a local
//! one, and its options. What it does when used (calls, attributes,
//! operators) is in `proxy_methods`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use farcall::{ProxyRef, ReturnType, SyncMode};
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::args;

/// A proxy's options (`_set_proxy_options`).
pub struct Options {
    /// How calls wait: `"sync"`, `"async"` or `"off"`.
    pub sync: SyncMode,
    /// How results come back: `"auto"`, `"proxy"` or `"value"`.
    pub return_type: ReturnType,
    /// Per-call timeout; `None` waits forever.
    pub timeout: Option<Duration>,
    /// Attribute reads make a new proxy without a round trip.
    pub defer_getattr: bool,
    /// Types always sent by copy, never by proxy.
    pub no_proxy_types: Option<Py<PyAny>>,
    /// Release the remote reference when the last proxy is collected.
    pub auto_delete: bool,
}

impl Options {
    fn clone_ref(&self, py: Python<'_>) -> Options {
        Options {
            no_proxy_types: self.no_proxy_types.as_ref().map(|t| t.clone_ref(py)),
            ..*self
        }
    }

    /// Applies `_set_proxy_options` keywords.
    pub fn update(&mut self, kwargs: &Bound<'_, PyDict>) -> PyResult<()> {
        for (key, value) in kwargs.iter() {
            let key: String = key.extract()?;
            match key.as_str() {
                "sync" | "_sync" | "callSync" => self.sync = args::sync_mode(&value)?,
                "return_type" | "_return_type" | "returnType" => {
                    self.return_type = args::return_type(&value)?
                }
                "timeout" | "_timeout" => self.timeout = args::timeout(&value)?,
                "defer_getattr" | "deferGetattr" => self.defer_getattr = value.is_truthy()?,
                "no_proxy_types" | "noProxyTypes" => {
                    self.no_proxy_types = if value.is_none() {
                        None
                    } else {
                        let types = value.try_iter()?.collect::<PyResult<Vec<_>>>()?;
                        let types = PyTuple::new(value.py(), types)?;
                        Some(types.into_any().unbind())
                    }
                }
                "auto_delete" | "autoDelete" => self.auto_delete = value.is_truthy()?,
                other => {
                    return Err(PyKeyError::new_err(format!(
                        "unknown proxy option '{other}'"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The options as a dict, with pyacq's names.
    pub fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("sync", self.sync.name())?;
        d.set_item("return_type", self.return_type.name())?;
        d.set_item("timeout", self.timeout.map(|t| t.as_secs_f64()))?;
        d.set_item("defer_getattr", self.defer_getattr)?;
        d.set_item("no_proxy_types", self.no_proxy_types.as_ref())?;
        d.set_item("auto_delete", self.auto_delete)?;
        Ok(d)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncMode::Sync,
            return_type: ReturnType::Auto,
            timeout: Some(farcall::client::DEFAULT_TIMEOUT),
            defer_getattr: true,
            no_proxy_types: None,
            auto_delete: true,
        }
    }
}

/// `RPCClient.default_proxy_options`: the live dict new proxies to a
/// server's objects take their options from. A change is checked when made
/// (a bad value raises, the dict stays as it was) and parsed once.
#[pyclass(module = "farcall", name = "ProxyOptions", extends = PyDict, frozen)]
pub struct ProxyOptions {
    parsed: Mutex<Options>,
}

impl ProxyOptions {
    fn parsed(&self) -> std::sync::MutexGuard<'_, Options> {
        self.parsed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `changes` against the current options, then applies them to
    /// the dict and the parsed options.
    fn apply(slf: &Bound<'_, Self>, changes: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = slf.py();
        let mut trial = slf.get().parsed().clone_ref(py);
        trial.update(changes)?;
        for (k, v) in changes.iter() {
            slf.as_super().set_item(k, v)?;
        }
        *slf.get().parsed() = trial;
        Ok(())
    }

    /// Parses the dict again after a key was removed (removed keys take
    /// their default).
    fn reparse(slf: &Bound<'_, Self>) -> PyResult<()> {
        let mut fresh = Options::default();
        fresh.update(slf.as_super())?;
        *slf.get().parsed() = fresh;
        Ok(())
    }

    /// Calls dict's own method `name` on the dict, then parses it again.
    fn dict_method(
        slf: &Bound<'_, Self>,
        name: &str,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let method = py.get_type::<PyDict>().getattr(name)?;
        let mut all = vec![slf.clone().into_any()];
        all.extend(args.iter());
        let out = method.call1(PyTuple::new(py, all)?)?;
        ProxyOptions::reparse(slf)?;
        Ok(out.unbind())
    }
}

#[pymethods]
impl ProxyOptions {
    fn __setitem__(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let change = PyDict::new(slf.py());
        change.set_item(key, value)?;
        ProxyOptions::apply(slf, &change)
    }

    fn __delitem__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        slf.as_super().del_item(key)?;
        ProxyOptions::reparse(slf)
    }

    /// Updates options from a mapping and/or keywords, checked first.
    #[pyo3(signature = (other=None, **kwargs))]
    fn update(
        slf: &Bound<'_, Self>,
        other: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let changes = PyDict::new(slf.py());
        if let Some(other) = other {
            changes.call_method1("update", (other,))?;
        }
        if let Some(kwargs) = kwargs {
            changes.update(kwargs.as_mapping())?;
        }
        ProxyOptions::apply(slf, &changes)
    }

    /// Sets `key` if absent (checked), returning its value.
    #[pyo3(signature = (key, default=None))]
    fn setdefault(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        default: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if let Some(v) = slf.as_super().get_item(key)? {
            return Ok(v.unbind());
        }
        let py = slf.py();
        let value = default.cloned().unwrap_or_else(|| py.None().into_bound(py));
        ProxyOptions::__setitem__(slf, key, &value)?;
        Ok(value.unbind())
    }

    /// Removes `key` (its option goes back to the default).
    #[pyo3(signature = (*args))]
    fn pop(slf: &Bound<'_, Self>, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        ProxyOptions::dict_method(slf, "pop", args)
    }

    /// Removes an item (its option goes back to the default).
    fn popitem(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        ProxyOptions::dict_method(slf, "popitem", &PyTuple::empty(slf.py()))
    }

    /// Removes every item: all options go back to their defaults.
    fn clear(slf: &Bound<'_, Self>) -> PyResult<()> {
        ProxyOptions::dict_method(slf, "clear", &PyTuple::empty(slf.py())).map(drop)
    }
}

/// The live default options per server address (shared by the clients of
/// every thread).
static DEFAULTS: Mutex<Option<HashMap<String, Py<ProxyOptions>>>> = Mutex::new(None);

/// The live default-options dict of `address`, made on first use.
pub fn defaults_dict(py: Python<'_>, address: &str) -> PyResult<Py<ProxyOptions>> {
    let found = |py| {
        let map = DEFAULTS.lock().unwrap_or_else(|e| e.into_inner());
        map.as_ref()
            .and_then(|m| m.get(address))
            .map(|d| d.clone_ref(py))
    };
    if let Some(d) = found(py) {
        return Ok(d);
    }
    // Made outside the lock: allocating may run a finalizer that asks for
    // the defaults again.
    let options = Options::default();
    let made = Bound::new(
        py,
        PyClassInitializer::from(ProxyOptions {
            parsed: Mutex::new(Options::default()),
        }),
    )?;
    for (k, v) in options.to_dict(py)?.iter() {
        made.as_super().set_item(k, v)?;
    }
    let made = made.unbind();
    let mut map = DEFAULTS.lock().unwrap_or_else(|e| e.into_inner());
    let d = map
        .get_or_insert_with(HashMap::new)
        .entry(address.to_string())
        .or_insert(made);
    Ok(d.clone_ref(py))
}

/// Replaces the contents of the default options of `address` (checked
/// first: a bad dict changes nothing).
pub fn replace_defaults(py: Python<'_>, address: &str, new: &Bound<'_, PyDict>) -> PyResult<()> {
    let mut fresh = Options::default();
    fresh.update(new)?;
    let d = defaults_dict(py, address)?;
    let d = d.bind(py);
    d.as_super().clear();
    for (k, v) in new.iter() {
        d.as_super().set_item(k, v)?;
    }
    *d.get().parsed() = fresh;
    Ok(())
}

/// Sets the default options of new proxies to objects of `address`.
pub fn set_defaults(py: Python<'_>, address: &str, kwargs: &Bound<'_, PyDict>) -> PyResult<()> {
    let d = defaults_dict(py, address)?;
    ProxyOptions::apply(d.bind(py), kwargs)
}

/// The default options of new proxies to objects of `address`.
pub fn defaults(py: Python<'_>, address: &str) -> Options {
    let map = DEFAULTS.lock().unwrap_or_else(|e| e.into_inner());
    match map.as_ref().and_then(|m| m.get(address)) {
        Some(d) => d.get().parsed().clone_ref(py),
        None => Options::default(),
    }
}

/// A proxy to an object that lives in a server, maybe in another process.
///
/// Attribute reads are deferred (a new proxy, no round trip), calls go
/// remote, and items, operators, `len`, `in` and iteration are forwarded.
/// `repr()` never calls the remote side.
#[pyclass(module = "farcall", name = "ObjectProxy", frozen, weakref)]
pub struct ObjectProxy {
    pub(crate) proxy: farcall::Proxy,
    options: Mutex<Options>,
    /// Proxies to attributes read before: `proxy.method(...)` in a loop
    /// reuses one instead of building a new proxy per call. Cleared when
    /// the options change (children copy them).
    pub(crate) children: Mutex<Vec<(String, Py<ObjectProxy>)>>,
}

/// Most attribute proxies one proxy remembers.
const MAX_CHILDREN: usize = 16;

impl ObjectProxy {
    /// A proxy with the default options for its server.
    pub fn new(py: Python<'_>, proxy: farcall::Proxy) -> Self {
        let options = defaults(py, proxy.address());
        if !options.auto_delete {
            proxy.keep_alive(true);
        }
        ObjectProxy {
            proxy,
            options: Mutex::new(options),
            children: Mutex::new(Vec::new()),
        }
    }

    /// What the proxy refers to.
    pub fn reference(&self) -> &ProxyRef {
        self.proxy.reference()
    }

    /// The proxy's options, locked.
    pub(crate) fn options(&self) -> std::sync::MutexGuard<'_, Options> {
        self.options.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A proxy to attribute `name`, with the same options.
    pub(crate) fn derived(&self, py: Python<'_>, name: &str) -> ObjectProxy {
        ObjectProxy {
            proxy: self.proxy.attr(name),
            options: Mutex::new(self.options().clone_ref(py)),
            children: Mutex::new(Vec::new()),
        }
    }

    /// The deferred proxy to attribute `name`, reused when it was read
    /// before.
    pub(crate) fn child(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, child)) = children.iter().find(|(n, _)| n == name) {
            return Ok(child.clone_ref(py).into_any());
        }
        let child = Py::new(py, self.derived(py, name))?;
        if children.len() >= MAX_CHILDREN {
            children.clear();
        }
        children.push((name.to_string(), child.clone_ref(py)));
        Ok(child.into_any())
    }
}

/// Proxy identity, as in teleprox: while a proxy to a remote object is
/// alive, receiving that object again gives the same `ObjectProxy`, so
/// `client['x'] is client['x']`. Root proxies only (a deferred attribute
/// is a proxy of its own), kept in a `weakref.WeakValueDictionary` keyed
/// by the object's server and id.
pub(crate) mod identity {
    use pyo3::prelude::*;
    use pyo3::sync::PyOnceLock;
    use pyo3::types::PyTuple;

    use super::ObjectProxy;
    use farcall::ProxyRef;

    static PROXIES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

    fn proxies(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
        Ok(PROXIES
            .get_or_try_init(py, || {
                PyModule::import(py, "weakref")?
                    .getattr("WeakValueDictionary")?
                    .call0()
                    .map(Bound::unbind)
            })?
            .bind(py))
    }

    fn key<'py>(py: Python<'py>, reference: &ProxyRef) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(
            py,
            [
                reference.rpc_addr.clone().into_pyobject(py)?.into_any(),
                reference.obj_id.into_pyobject(py)?.into_any(),
            ],
        )
    }

    /// The live proxy to the object `reference` names, if there is one
    /// and its options are still the defaults a new proxy would get (a
    /// proxy whose options were changed, or made before the client's
    /// `default_proxy_options` changed, is not handed out again).
    pub(crate) fn lookup(py: Python<'_>, reference: &ProxyRef) -> PyResult<Option<Py<PyAny>>> {
        let found = proxies(py)?.call_method1("get", (key(py, reference)?,))?;
        let Ok(proxy) = found.cast::<ObjectProxy>() else {
            return Ok(None);
        };
        // A proxy whose connection was closed or lost serves no more.
        let live = proxy
            .get()
            .proxy
            .live_link()
            .is_some_and(|link| link.dead().is_none());
        if !live {
            return Ok(None);
        }
        let current = proxy.get().options().to_dict(py)?;
        let fresh = super::defaults(py, &reference.rpc_addr).to_dict(py)?;
        Ok(current.eq(fresh)?.then(|| found.unbind()))
    }

    /// Makes `proxy` (an `ObjectProxy`) the one for its object.
    pub(crate) fn remember(py: Python<'_>, proxy: &Py<PyAny>) -> PyResult<()> {
        let bound = proxy.bind(py);
        let reference = bound.cast::<ObjectProxy>()?.get().reference().clone();
        proxies(py)?.set_item(key(py, &reference)?, bound)
    }
}

/// A proxy made from a pickled one's state (`ObjectProxy.__reduce__`): a
/// borrowed reference to the same remote object (the object itself, in
/// the process that serves it).
#[pyfunction]
pub fn _proxy_from_state(
    py: Python<'_>,
    rpc_addr: String,
    obj_id: u64,
    ref_id: u64,
    type_str: String,
    attributes: Vec<String>,
) -> PyResult<Py<PyAny>> {
    let reference = ProxyRef {
        rpc_addr,
        obj_id,
        ref_id,
        type_str,
        attributes,
    };
    crate::convert::to_py(
        py,
        farcall::Value::Proxy(reference),
        crate::convert::Ownership::Borrowed,
    )
}
