//! `RPCServer`: hosts Python objects for peers.
//!
//! Requests run in the thread that serves (`run_forever`, or a client
//! waiting in a thread where `run_lazy` was called), one at a time, with
//! the GIL taken only while Python code runs.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use farcall::auth::Key;
use farcall::{Auth, Server, ServerOptions};
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::client::RPCClient;
use crate::convert::{to_py, Mode, Outgoing, Ownership};
use crate::errors::IntoPyResult;
use crate::host::{PyHost, PyRuntime};
use crate::proxy::ObjectProxy;

/// How often `run_forever` looks up from the socket to let Python handle
/// signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

thread_local! {
    static THREAD_SERVER: RefCell<Option<Py<RPCServer>>> = const { RefCell::new(None) };
}

/// How to authenticate, from Python's `auth=` and `key=` (32 bytes, or
/// 64 hex digits).
pub fn auth_arg(py: Python<'_>, auth: bool, key: Option<&Bound<'_, PyAny>>) -> PyResult<Auth> {
    let key = match key {
        None => None,
        Some(k) => {
            let raw = match k.cast::<PyBytes>() {
                Ok(b) => b.as_bytes().to_vec(),
                Err(_) => {
                    let text: String = k.extract()?;
                    farcall::auth::decode_hex(text.trim()).ok_or_else(|| {
                        PyValueError::new_err("a key is 32 bytes or 64 hex digits")
                    })?
                }
            };
            Some(Key::from_bytes(&raw).py(py)?)
        }
    };
    Ok(match (auth, key) {
        (false, Some(_)) => {
            return Err(PyValueError::new_err("auth=False takes no key"));
        }
        (false, None) => Auth::Open,
        (true, Some(k)) => Auth::Key(k),
        (true, None) => Auth::ProcessKey,
    })
}

/// Logs `message` as a warning on the `farcall` logger.
pub fn warn(py: Python<'_>, message: &str) -> PyResult<()> {
    PyModule::import(py, "logging")?
        .call_method1("getLogger", ("farcall",))?
        .call_method1("warning", (message,))?;
    Ok(())
}

/// An address given as `str` or (pyacq style) `bytes`.
pub fn address_arg(address: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(b) = address.cast::<PyBytes>() {
        return Ok(String::from_utf8_lossy(b.as_bytes()).into_owned());
    }
    address
        .extract::<String>()
        .map_err(|_| PyTypeError::new_err("an address is a str (or bytes)"))
}

/// A server that hosts Python objects and answers requests.
///
/// `server["name"] = obj` publishes an object; clients read it with
/// `client["name"]`. The name `"self"` is the server itself.
#[pyclass(module = "farcall", name = "RPCServer", frozen, weakref)]
pub struct RPCServer {
    server: Server,
}

impl RPCServer {
    /// The engine server.
    pub fn engine(&self) -> &Server {
        &self.server
    }

    fn register(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        slf.get().server.run_lazy().py(py)?;
        THREAD_SERVER.with(|s| *s.borrow_mut() = Some(slf.clone().unbind()));
        Ok(())
    }
}

#[pymethods]
impl RPCServer {
    /// Binds `address` (native `unix://`, `tcp+native://`, or ZeroMQ
    /// `tcp://`, `ipc://`, `inproc://`; `*` picks a free port or path).
    /// Peers must prove they hold `key` (default: this process's key);
    /// `auth=False` admits anyone, for pyacq clients.
    #[new]
    #[pyo3(signature = (address=None, auth=true, key=None, allow_unauthenticated_public=false))]
    fn new(
        py: Python<'_>,
        address: Option<&Bound<'_, PyAny>>,
        auth: bool,
        key: Option<&Bound<'_, PyAny>>,
        allow_unauthenticated_public: bool,
    ) -> PyResult<Self> {
        let address = match address {
            Some(a) => address_arg(a)?,
            None => "tcp://127.0.0.1:*".to_string(),
        };
        let options = ServerOptions {
            auth: auth_arg(py, auth, key)?,
            allow_unauthenticated_public,
            ..ServerOptions::default()
        };
        let open = matches!(options.auth, Auth::Open);
        let server = crate::gil::released(py, || Server::bind_with(&address, options)).py(py)?;
        if open {
            warn(
                py,
                &format!(
                    "RPCServer at {} accepts unauthenticated peers (auth=False)",
                    server.address()
                ),
            )?;
        }
        server.set_runtime(Arc::new(PyRuntime));
        Ok(RPCServer { server })
    }

    /// The address clients connect to.
    #[getter]
    fn address(&self) -> &str {
        self.server.address()
    }

    /// Publishes `obj` as `name`.
    fn __setitem__(&self, name: String, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        self.server
            .publish(name, Outgoing::new(Mode::Auto).value(obj)?);
        Ok(())
    }

    /// The object published as `name`.
    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        match self.server.published(name) {
            Some(v) => to_py(py, v, Ownership::Borrowed),
            None => Err(PyKeyError::new_err(name.to_string())),
        }
    }

    /// Serves requests in this thread until the server is closed.
    fn run_forever(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        RPCServer::register(slf)?;
        let server = &slf.get().server;
        while server.running() {
            crate::gil::released(py, || server.poll_once(Some(SIGNAL_CHECK))).py(py)?;
            py.check_signals()?;
        }
        Ok(())
    }

    /// Registers the server with this thread without blocking: requests
    /// are served whenever a client in this thread waits for a reply.
    fn run_lazy(slf: &Bound<'_, Self>) -> PyResult<()> {
        RPCServer::register(slf)
    }

    /// Serves what arrives within `timeout` seconds; returns the number of
    /// requests handled.
    #[pyo3(signature = (timeout=0.0))]
    fn process(&self, py: Python<'_>, timeout: f64) -> PyResult<usize> {
        let timeout = Duration::from_secs_f64(timeout.max(0.0));
        crate::gil::released(py, || self.server.poll_once(Some(timeout))).py(py)
    }

    /// True until the server is closed.
    fn running(&self) -> bool {
        self.server.running()
    }

    /// Closes the server; every client it has seen is told.
    fn close(&self, py: Python<'_>) {
        crate::gil::released(py, || self.server.close());
    }

    /// A proxy to local object `obj`, registered with this server.
    fn get_proxy(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<ObjectProxy> {
        let object = PyHost::new_ref(obj)?;
        let reference = self.server.get_proxy(&object);
        Ok(ObjectProxy::new(py, farcall::Proxy::owning(reference)))
    }

    /// The local object behind a proxy of this server.
    fn unwrap_proxy(&self, py: Python<'_>, proxy: &Bound<'_, ObjectProxy>) -> PyResult<Py<PyAny>> {
        let v = self.server.unwrap_proxy(proxy.get().reference()).py(py)?;
        to_py(py, v, Ownership::Borrowed)
    }

    /// Calls `callback()` every `interval` seconds in the serving thread.
    fn start_timer(&self, callback: Py<PyAny>, interval: f64) {
        let interval = Duration::from_secs_f64(interval.max(0.001));
        self.server.start_timer(interval, move || {
            Python::attach(|py| {
                if let Err(e) = callback.call0(py) {
                    e.write_unraisable(py, Some(callback.bind(py)));
                }
            })
        });
    }

    /// The server registered with this thread (by `run_forever` or
    /// `run_lazy`), or None.
    #[staticmethod]
    fn get_server(py: Python<'_>) -> Option<Py<RPCServer>> {
        THREAD_SERVER.with(|s| {
            let mut s = s.borrow_mut();
            if s.as_ref().is_some_and(|srv| !srv.get().server.running()) {
                *s = None;
            }
            s.as_ref().map(|srv| srv.clone_ref(py))
        })
    }

    /// A client of this thread's server, for talking to it from here.
    #[staticmethod]
    fn local_client(py: Python<'_>) -> PyResult<RPCClient> {
        let server = RPCServer::get_server(py)
            .ok_or_else(|| PyKeyError::new_err("no RPCServer is registered in this thread"))?;
        let address = server.get().server.address().to_string();
        RPCClient::for_address(py, &address)
    }

    fn __repr__(&self) -> String {
        format!("<RPCServer at {}>", self.server.address())
    }
}
