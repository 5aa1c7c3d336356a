//! `RPCClient`: a connection to one server, one per thread and address.

use std::time::{Duration, Instant};

use farcall::client::ClientOptions;
use farcall::codec::Format;
use farcall::protocol::Action;
use farcall::{Client, ReturnType, SyncMode, Value};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::convert::{to_py, Mode, Outgoing, Ownership};
use crate::errors::IntoPyResult;
use crate::future::PyFuture;
use crate::proxy::{self, ObjectProxy};
use crate::server::address_arg;

/// A connection to the server at `address`.
///
/// There is one client per thread and address: `RPCClient.get_client`
/// returns it, and constructing a second one raises KeyError. Proxies use
/// the client of the thread they are used in.
#[pyclass(module = "farcall", name = "RPCClient", frozen, weakref)]
pub struct RPCClient {
    client: Client,
}

impl RPCClient {
    /// This thread's client for `address`, connecting on first use.
    pub fn for_address(py: Python<'_>, address: &str) -> PyResult<RPCClient> {
        let client = crate::gil::released(py, || Client::get(address)).py(py)?;
        Ok(RPCClient { client })
    }

    /// Wraps an engine client (registered for this thread).
    pub fn wrap(client: Client) -> RPCClient {
        client.register_for_thread();
        RPCClient { client }
    }

    /// Sends a request and returns its result, a future, or None, per
    /// `sync`.
    fn request(
        &self,
        py: Python<'_>,
        action: Action,
        opts: Value,
        return_type: ReturnType,
        sync: SyncMode,
        timeout: Option<Duration>,
    ) -> PyResult<Py<PyAny>> {
        let client = &self.client;
        match sync {
            SyncMode::Sync => {
                let v =
                    crate::gil::released(py, || client.call(action, &opts, return_type, timeout))
                        .py(py)?;
                to_py(py, v, Ownership::Reply(self.client.address()))
            }
            SyncMode::Async => {
                let f =
                    crate::gil::released(py, || client.send(action, &opts, return_type)).py(py)?;
                Ok(Py::new(py, PyFuture::new(f))?.into_any())
            }
            SyncMode::Off => {
                crate::gil::released(py, || client.send_off(action, &opts, return_type)).py(py)?;
                Ok(py.None())
            }
        }
    }

    /// `request` with pyacq's `return_type=`, `sync=`, `timeout=` keywords.
    fn request_kw(
        &self,
        py: Python<'_>,
        action: Action,
        opts: Value,
        kwds: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let mut return_type = ReturnType::Auto;
        let mut sync = SyncMode::Sync;
        let mut timeout = Some(self.client.timeout());
        if let Some(kwds) = kwds {
            for (k, v) in kwds.iter() {
                match k.extract::<String>()?.as_str() {
                    "return_type" => return_type = proxy::return_type(&v)?,
                    "sync" => sync = proxy::sync_mode(&v)?,
                    "timeout" => timeout = proxy::timeout(&v)?,
                    other => return Err(PyKeyError::new_err(format!("unknown option '{other}'"))),
                }
            }
        }
        self.request(py, action, opts, return_type, sync, timeout)
    }
}

fn value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    Outgoing::new(Mode::Auto).value(obj)
}

#[pymethods]
impl RPCClient {
    /// Connects to `address`. `serializer`: None negotiates (farcall's own
    /// format with farcall servers, pyacq's msgpack otherwise); "msgpack"
    /// or "json" force pyacq's formats. The client proves it holds `key`
    /// (default: this process's key or the per-user key file's);
    /// `auth=False` talks to a server that cannot authenticate (pyacq).
    #[new]
    #[pyo3(signature = (address, reentrant=true, serializer=None, auth=true, key=None))]
    fn new(
        py: Python<'_>,
        address: &Bound<'_, PyAny>,
        reentrant: bool,
        serializer: Option<&str>,
        auth: bool,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let _ = reentrant; // waiting clients always serve their thread's server
        let address = address_arg(address)?;
        if Client::existing(&address).is_some_and(|c| c.disconnected().is_none()) {
            return Err(PyKeyError::new_err(format!(
                "an RPCClient for {address} already exists in this thread; use RPCClient.get_client"
            )));
        }
        let format = match serializer {
            None => None,
            Some(name) => Some(
                Format::from_name(name.as_bytes())
                    .ok_or_else(|| PyValueError::new_err(format!("unknown serializer {name:?}")))?,
            ),
        };
        let options = ClientOptions {
            format,
            auth: crate::server::auth_arg(py, auth, key)?,
            ..ClientOptions::default()
        };
        let open = matches!(options.auth, farcall::Auth::Open);
        let client = crate::gil::released(py, || Client::connect_with(&address, options)).py(py)?;
        if open {
            crate::server::warn(
                py,
                &format!("RPCClient for {address} does not authenticate (auth=False)"),
            )?;
        }
        Ok(RPCClient::wrap(client))
    }

    /// This thread's client for `address`, connecting on first use.
    #[staticmethod]
    fn get_client(py: Python<'_>, address: &Bound<'_, PyAny>) -> PyResult<RPCClient> {
        RPCClient::for_address(py, &address_arg(address)?)
    }

    /// The server address.
    #[getter]
    fn address(&self) -> &str {
        self.client.address()
    }

    /// The serializer in use (`.type` is its name).
    #[getter]
    fn serializer(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let module = PyModule::import(py, "farcall.serializer")?;
        let class = module
            .getattr("all_serializers")?
            .get_item(self.client.format().name())?;
        Ok(class.call0()?.unbind())
    }

    /// Sends any action: `opts` is a dict; returns the result, a Future
    /// (`sync="async"`) or None (`sync="off"`).
    #[pyo3(signature = (action, opts=None, return_type="auto", sync="sync", timeout=Some(10.0)))]
    fn send(
        &self,
        py: Python<'_>,
        action: &str,
        opts: Option<&Bound<'_, PyAny>>,
        return_type: &str,
        sync: &str,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let action = Action::from_name(action.as_bytes())
            .ok_or_else(|| PyValueError::new_err(format!("unknown action {action:?}")))?;
        let opts = match opts {
            Some(o) => value(o)?,
            None => Value::None,
        };
        let return_type = ReturnType::from_name(return_type.as_bytes())
            .ok_or_else(|| PyValueError::new_err(format!("bad return_type {return_type:?}")))?;
        let sync = SyncMode::from_name(sync)
            .ok_or_else(|| PyValueError::new_err(format!("bad sync {sync:?}")))?;
        let timeout = timeout.map(Duration::from_secs_f64);
        self.request(py, action, opts, return_type, sync, timeout)
    }

    /// Calls `obj(*args, **kwargs)` on the server (`obj` is a proxy).
    #[pyo3(signature = (obj, args=None, kwargs=None, **kwds))]
    fn call_obj(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, ObjectProxy>,
        args: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
        kwds: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let conv = Outgoing::new(Mode::Auto);
        let args = match args {
            Some(a) => conv.values(&PyTuple::new(
                py,
                a.try_iter()?.collect::<PyResult<Vec<_>>>()?,
            )?)?,
            None => Vec::new(),
        };
        let kwargs = conv.kwargs(kwargs)?;
        let opts = farcall::protocol::command::CallObj::opts(obj.get().reference(), args, kwargs);
        self.request_kw(py, Action::CallObj, opts, kwds)
    }

    /// Returns the object a proxy refers to, by value or proxy.
    #[pyo3(signature = (obj, **kwds))]
    fn get_obj(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        kwds: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let opts = Value::map([("obj", value(obj)?)]);
        self.request_kw(py, Action::GetObj, opts, kwds)
    }

    /// Sends a copy of `obj` to the server and returns a proxy to it.
    #[pyo3(signature = (obj, **kwds))]
    fn transfer(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        kwds: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let opts = Value::map([("obj", Outgoing::new(Mode::Copy).value(obj)?)]);
        let kw = PyDict::new(py);
        if let Some(kwds) = kwds {
            kw.update(kwds.as_mapping())?;
        }
        if !kw.contains("return_type")? {
            kw.set_item("return_type", "proxy")?;
        }
        self.request_kw(py, Action::GetObj, opts, Some(&kw))
    }

    /// Imports `module` on the server and returns it (by proxy).
    #[pyo3(signature = (module, **kwds))]
    fn _import(
        &self,
        py: Python<'_>,
        module: &str,
        kwds: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let opts = Value::map([("module", Value::from(module))]);
        self.request_kw(py, Action::Import, opts, kwds)
    }

    /// Releases the server-side reference behind `proxy`.
    fn delete(&self, py: Python<'_>, proxy: &Bound<'_, ObjectProxy>) -> PyResult<()> {
        // An owning proxy is marked released, so collecting it later sends
        // nothing more.
        if proxy.get().release(py)? {
            return Ok(());
        }
        let reference = proxy.get().reference().clone();
        let client = &self.client;
        crate::gil::released(py, || client.delete(&reference)).py(py)
    }

    /// The object published on the server as `name`.
    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let client = &self.client;
        let v = crate::gil::released(py, || client.get_item(name)).py(py)?;
        to_py(py, v, Ownership::Reply(self.client.address()))
    }

    /// Publishes `obj` on the server as `name`.
    fn __setitem__(&self, py: Python<'_>, name: &str, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = value(obj)?;
        let client = &self.client;
        crate::gil::released(py, || client.set_item(name, v)).py(py)
    }

    /// Answers "pong" if the server is there.
    fn ping(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let client = &self.client;
        let v = crate::gil::released(py, || client.ping()).py(py)?;
        to_py(py, v, Ownership::Reply(self.client.address()))
    }

    /// Pings until the server answers or `timeout` seconds pass.
    #[pyo3(signature = (timeout=3.0))]
    fn ensure_connection(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let client = &self.client;
        let deadline = Instant::now() + Duration::from_secs_f64(timeout);
        let r = crate::gil::released(py, || {
            let left = deadline.saturating_duration_since(Instant::now());
            client.call(Action::Ping, &Value::None, ReturnType::Auto, Some(left))
        });
        r.py(py).map(drop)
    }

    /// Closes this client's connection (the server keeps running).
    fn close(&self) {
        self.client.close();
    }

    /// Asks the server to close; every client it knows is told.
    fn close_server(&self, py: Python<'_>) -> PyResult<()> {
        let client = &self.client;
        crate::gil::released(py, || client.close_server()).py(py)
    }

    /// True once the server is known to be gone.
    fn disconnected(&self) -> bool {
        self.client.disconnected().is_some()
    }

    /// The remote clock minus the local one (`time.time()`), in seconds,
    /// from the quickest of ten round trips.
    fn measure_clock_diff(&self, py: Python<'_>) -> PyResult<f64> {
        let time = PyModule::import(py, "time")?;
        let remote_time = self._import(py, "time", None)?;
        let remote_time = remote_time.bind(py).getattr("time")?;
        let mut best: Option<(f64, f64)> = None;
        for _ in 0..10 {
            let before: f64 = time.call_method0("time")?.extract()?;
            let remote: f64 = remote_time.call0()?.extract()?;
            let after: f64 = time.call_method0("time")?.extract()?;
            let rtt = after - before;
            let offset = remote - (before + after) / 2.0;
            if best.is_none_or(|(r, _)| rtt < r) {
                best = Some((rtt, offset));
            }
        }
        Ok(best.map_or(0.0, |(_, o)| o))
    }

    /// Default options of new proxies to this server's objects.
    #[getter]
    fn default_proxy_options<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        proxy::defaults(py, self.client.address()).to_dict(py)
    }

    /// Changes the default options of new proxies to this server's objects.
    #[pyo3(signature = (**kwds))]
    fn set_proxy_options(&self, py: Python<'_>, kwds: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        match kwds {
            Some(k) => proxy::set_defaults(py, self.client.address(), k),
            None => Ok(()),
        }
    }

    fn __repr__(&self) -> String {
        format!("<RPCClient for {}>", self.client.address())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<RPCClient>()
            .is_ok_and(|o| o.get().client.same_as(&self.client))
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.client.address().hash(&mut h);
        h.finish()
    }
}
