//! `RPCClient`: pyacq's view on the link to one server, one per thread
//! and address.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farcall::client::ClientOptions;
use farcall::protocol::command::{CallObj, GetObj, Import};
use farcall::protocol::Action;
use farcall::{Client, ReturnType, SyncMode, Value};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyWeakrefMethods, PyWeakrefReference};

use crate::args;
use crate::call;
use crate::convert::{to_py, Mode, Outgoing, Ownership};
use crate::errors::IntoPyResult;
use crate::future::PyFuture;
use crate::proxy::{self, ObjectProxy};
use crate::server::RPCServer;

/// A connection to the server at `address`.
///
/// There is one client per thread and address: `RPCClient.get_client`
/// returns it, and constructing a second one raises KeyError. The
/// clients of all threads (and the proxies of that server) share the
/// process's one link to it, usable from any thread at once.
#[pyclass(module = "farcall", name = "RPCClient", frozen, weakref)]
pub struct RPCClient {
    client: Client,
    /// The spawned child this client talks to, kept running while the
    /// client lives (`ProcessSpawner().client` outlives its spawner).
    _child: Option<Arc<farcall::spawn::ProcessSpawner>>,
    /// The server that serves the objects this client sends (teleprox's
    /// `local_server`), and whether the client made it (then it closes it).
    local_server: Mutex<Option<(Py<RPCServer>, bool)>>,
}

/// One address's client in one thread: the engine client (kept, so the
/// connection is reused) and the Python object last handed out (weakly,
/// so `get_client(a) is get_client(a)` while anybody holds it).
struct ThreadClient {
    client: Client,
    view: Option<Py<PyWeakrefReference>>,
}

thread_local! {
    /// This thread's clients, by the address they were asked for.
    static CLIENTS: RefCell<HashMap<String, ThreadClient>> = RefCell::new(HashMap::new());
}

/// This thread's live client for `address`, if any.
fn existing(address: &str) -> Option<Client> {
    CLIENTS
        .with(|c| c.borrow().get(address).map(|t| t.client.clone()))
        .filter(|c| c.disconnected().is_none())
}

/// This thread's RPCClient object for `address`, while one is alive and
/// connected.
fn existing_view(py: Python<'_>, address: &str) -> Option<Py<RPCClient>> {
    let view = CLIENTS.with(|c| {
        c.borrow()
            .get(address)
            .and_then(|t| t.view.as_ref().map(|v| v.clone_ref(py)))
    })?;
    let obj = view.bind(py).upgrade_as::<RPCClient>().ok()??;
    (obj.get().client.disconnected().is_none()).then(|| obj.unbind())
}

impl RPCClient {
    /// This thread's client for `address`, connecting on first use.
    pub fn for_address(py: Python<'_>, address: &str) -> PyResult<Py<RPCClient>> {
        if let Some(view) = existing_view(py, address) {
            return Ok(view);
        }
        let client = match existing(address) {
            Some(client) => client,
            None => crate::gil::released(py, || Client::get(address)).py(py)?,
        };
        RPCClient::wrap(py, address, client, None)
    }

    /// Wraps an engine client as this thread's client for `address`
    /// (keeping `child` running while it lives).
    pub fn wrap(
        py: Python<'_>,
        address: &str,
        client: Client,
        child: Option<Arc<farcall::spawn::ProcessSpawner>>,
    ) -> PyResult<Py<RPCClient>> {
        let obj = Bound::new(
            py,
            RPCClient {
                client: client.clone(),
                _child: child,
                local_server: Mutex::new(None),
            },
        )?;
        let view = PyWeakrefReference::new(&obj)?.unbind();
        CLIENTS.with(|c| {
            c.borrow_mut().insert(
                address.to_string(),
                ThreadClient {
                    client,
                    view: Some(view),
                },
            )
        });
        Ok(obj.unbind())
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
                let (v, client) = call::sync(py, timeout, || {
                    client.start(action, &opts, return_type, timeout)
                })?;
                to_py(py, v, Ownership::Reply(&client))
            }
            SyncMode::Async => {
                let timeout = Some(args::limit(timeout));
                let f = crate::gil::released(py, || {
                    client.send_with_timeout(action, &opts, return_type, timeout)
                })
                .py(py)?;
                PyFuture::create(py, f)
            }
            SyncMode::Off => {
                crate::gil::released(py, || client.send_off(action, &opts, return_type)).py(py)?;
                Ok(py.None())
            }
        }
    }

    /// A sync ping, waiting up to `timeout`.
    fn ping_within(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Py<PyAny>> {
        let (sync, ret) = (SyncMode::Sync, ReturnType::Auto);
        self.request(py, Action::Ping, Value::None, ret, sync, timeout)
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
                    "return_type" => return_type = args::return_type(&v)?,
                    "sync" => sync = args::sync_mode(&v)?,
                    "timeout" => timeout = args::timeout(&v)?,
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
    #[pyo3(signature = (address, reentrant=true, serializer=None, auth=true, key=None, local_server=None))]
    fn new(
        py: Python<'_>,
        address: &Bound<'_, PyAny>,
        reentrant: bool,
        serializer: Option<&str>,
        auth: bool,
        key: Option<&Bound<'_, PyAny>>,
        local_server: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let _ = reentrant; // waiting clients always serve their thread's server
        let address = args::address(address)?;
        if existing(&address).is_some() {
            return Err(PyKeyError::new_err(format!(
                "an RPCClient for {address} already exists in this thread; use RPCClient.get_client"
            )));
        }
        let format = serializer.map(args::format).transpose()?;
        let options = ClientOptions {
            format,
            auth: args::auth(py, auth, key)?,
            ..ClientOptions::default()
        };
        let open = matches!(options.auth, farcall::Auth::Open);
        let custom = format.is_some() || !matches!(options.auth, farcall::Auth::ProcessKey);
        // The process's link to that server serves, unless this client
        // asks for something of its own (a serializer, a key, no auth).
        let client = crate::gil::released(py, || match Client::any_connected(&address) {
            Some(shared) if !custom => Ok(shared),
            _ => Client::connect_with(&address, options),
        })
        .py(py)?;
        if open {
            args::warn(
                py,
                &format!("RPCClient for {address} does not authenticate (auth=False)"),
            )?;
        }
        CLIENTS.with(|c| {
            c.borrow_mut().insert(
                address.clone(),
                ThreadClient {
                    client: client.clone(),
                    view: None,
                },
            )
        });
        let me = RPCClient {
            client,
            _child: None,
            local_server: Mutex::new(None),
        };
        if let Some(spec) = local_server {
            me._set_local_server(py, spec)?;
        }
        Ok(me)
    }

    /// Chooses who serves the objects this client sends, so the server can
    /// call them back (teleprox's `local_server`): `"lazy"` (a new ZeroMQ
    /// server of this thread, serving while the thread waits on a call),
    /// `"threaded"` (a new one serving from a thread of its own), an
    /// `RPCServer`, or None (this thread's server, else the link itself on
    /// native transports: pyacq's rule).
    fn _set_local_server(&self, py: Python<'_>, spec: &Bound<'_, PyAny>) -> PyResult<()> {
        let chosen: Option<(Py<RPCServer>, bool)> = if spec.is_none() {
            None
        } else if let Ok(server) = spec.cast::<RPCServer>() {
            Some((server.clone().unbind(), false))
        } else {
            let server = match spec.extract::<String>().ok().as_deref() {
                Some(kind @ ("lazy" | "threaded")) => {
                    let server = Bound::new(py, RPCServer::bind_default(py)?)?;
                    if kind == "lazy" {
                        server.call_method0("run_lazy")?;
                    } else {
                        let kwargs = PyDict::new(py);
                        kwargs.set_item("target", server.getattr("run_forever")?)?;
                        kwargs.set_item("daemon", true)?;
                        kwargs.set_item("name", "farcall-local-server")?;
                        PyModule::import(py, "threading")?
                            .getattr("Thread")?
                            .call((), Some(&kwargs))?
                            .call_method0("start")?;
                    }
                    server
                }
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "local_server must be 'lazy', 'threaded', an RPCServer or None, not {}",
                        spec.repr()?
                    )))
                }
            };
            Some((server.unbind(), true))
        };
        let host = chosen
            .as_ref()
            .map(|(s, _)| s.get().engine().host().clone());
        self.client.link().set_local_host(host.as_ref());
        let old = std::mem::replace(
            &mut *self.local_server.lock().unwrap_or_else(|p| p.into_inner()),
            chosen,
        );
        if let Some((server, true)) = old {
            server.get().close(py);
        }
        Ok(())
    }

    /// The server chosen with `local_server`, or None.
    #[getter]
    fn local_server(&self, py: Python<'_>) -> Option<Py<RPCServer>> {
        self.local_server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(s, _)| s.clone_ref(py))
    }

    /// A client on a link over `channel`, any object with `recv(size)`
    /// (bytes; `b''` at the end of the stream or after `cancel()`),
    /// `send(data)` (the count sent), `cancel()` and `close()`. The link is
    /// symmetric and private (no handshake): both ends serve this
    /// process's objects to the other. The other end opens it the same way.
    #[staticmethod]
    #[pyo3(signature = (channel, timeout=Some(10.0)))]
    fn over_channel(
        py: Python<'_>,
        channel: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<RPCClient> {
        let channel: Arc<dyn farcall::channel::Channel> =
            Arc::new(crate::channel::PyChannel::new(channel)?);
        let options = ClientOptions {
            timeout: args::limit(args::seconds(timeout)?),
            ..ClientOptions::default()
        };
        let link =
            crate::gil::released(py, || farcall::Link::over_private(channel, &options)).py(py)?;
        Ok(RPCClient {
            client: Client::from_link(link),
            _child: None,
            local_server: Mutex::new(None),
        })
    }

    /// Sets the process's provider of extra options for every outgoing
    /// call: `fn()` returns a dict (say, a tracing context) or None,
    /// called in the calling thread; None removes it (teleprox's hook).
    #[staticmethod]
    fn set_call_opts_provider(provider: Option<Py<PyAny>>) {
        crate::hooks::set_call_opts_provider(provider);
    }

    /// This thread's client for `address`, connecting on first use.
    #[staticmethod]
    fn get_client(py: Python<'_>, address: &Bound<'_, PyAny>) -> PyResult<Py<RPCClient>> {
        RPCClient::for_address(py, &args::address(address)?)
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
    /// `timeout` is in seconds; None waits without limit.
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
        let timeout = args::seconds(timeout)?;
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
        let opts = CallObj::opts(obj.get().reference(), args, kwargs);
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
        let opts = GetObj::opts(value(obj)?);
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
        let opts = GetObj::opts(Outgoing::new(Mode::Copy).value(obj)?);
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
        self.request_kw(py, Action::Import, Import::opts(module), kwds)
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
        let opts = farcall::protocol::command::GetItem::opts(name);
        self.request(
            py,
            Action::GetItem,
            opts,
            ReturnType::Auto,
            SyncMode::Sync,
            Some(self.client.timeout()),
        )
    }

    /// Publishes `obj` on the server as `name`.
    fn __setitem__(&self, py: Python<'_>, name: &str, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = value(obj)?;
        let client = &self.client;
        crate::gil::released(py, || client.set_item(name, v)).py(py)
    }

    /// Answers "pong" if the server is there.
    fn ping(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.ping_within(py, Some(self.client.timeout()))
    }

    /// Pings until the server answers or `timeout` seconds pass.
    #[pyo3(signature = (timeout=3.0))]
    fn ensure_connection(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        self.ping_within(py, args::seconds(Some(timeout))?)
            .map(drop)
    }

    /// Closes this process's link to the server (the server keeps
    /// running); pending calls fail with DisconnectError.
    fn close(&self, py: Python<'_>) {
        let local = self
            .local_server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((server, true)) = local {
            server.get().close(py);
        }
        CLIENTS.with(|c| {
            c.borrow_mut()
                .retain(|_, v| !v.client.same_as(&self.client))
        });
        let client = &self.client;
        crate::gil::released(py, || client.close());
    }

    /// Asks the server to close; every client it knows is told.
    fn close_server(&self, py: Python<'_>) -> PyResult<bool> {
        let client = &self.client;
        crate::gil::released(py, || client.close_server()).py(py)?;
        Ok(true)
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
    fn default_proxy_options(&self, py: Python<'_>) -> PyResult<Py<proxy::ProxyOptions>> {
        proxy::defaults_dict(py, self.client.address())
    }

    /// Replaces the default options of new proxies (a bad value raises and
    /// changes nothing).
    #[setter]
    fn set_default_proxy_options(
        &self,
        py: Python<'_>,
        options: &Bound<'_, PyDict>,
    ) -> PyResult<()> {
        proxy::replace_defaults(py, self.client.address(), options)
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
        self.client.link().id().hash(&mut h);
        h.finish()
    }
}
