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

/// Default proxy options per server address (`RPCClient.set_proxy_options`).
static DEFAULTS: Mutex<Option<HashMap<String, Options>>> = Mutex::new(None);

/// Sets the default options of new proxies to objects of `address`.
pub fn set_defaults(py: Python<'_>, address: &str, kwargs: &Bound<'_, PyDict>) -> PyResult<()> {
    let mut options = defaults(py, address);
    options.update(kwargs)?;
    let mut map = DEFAULTS.lock().unwrap_or_else(|e| e.into_inner());
    map.get_or_insert_with(HashMap::new)
        .insert(address.to_string(), options);
    Ok(())
}

/// The default options of new proxies to objects of `address`.
pub fn defaults(py: Python<'_>, address: &str) -> Options {
    match &*DEFAULTS.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(map) => map
            .get(address)
            .map_or_else(Options::default, |o| o.clone_ref(py)),
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
