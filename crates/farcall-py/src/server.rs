//! `RPCServer`: hosts Python objects for peers.
//!
//! Requests run in the thread that serves (`run_forever`, or a client
//! waiting in a thread where `run_lazy` was called), one at a time, with
//! the GIL taken only while Python code runs.

use std::cell::RefCell;
use std::time::Duration;

use farcall::{Auth, Server, ServerOptions};
use pyo3::exceptions::{PyKeyError, PyRuntimeError};
use pyo3::prelude::*;

use crate::args;
use crate::client::RPCClient;
use crate::convert::{to_py, Mode, Outgoing, Ownership};
use crate::errors::IntoPyResult;
use crate::gil::SIGNAL_CHECK;
use crate::hosted::PyHost;
use crate::proxy::ObjectProxy;

thread_local! {
    static THREAD_SERVER: RefCell<Option<Py<RPCServer>>> = const { RefCell::new(None) };
}

/// A server that hosts Python objects and answers requests.
///
/// `server["name"] = obj` publishes an object; clients read it with
/// `client["name"]`. The name `"self"` is the server itself.
#[pyclass(module = "farcall", name = "RPCServer", frozen, weakref, subclass)]
pub struct RPCServer {
    server: Server,
    /// Set while a thread runs `run_forever` (two readers would corrupt
    /// the endpoint).
    serving: std::sync::atomic::AtomicBool,
}

impl RPCServer {
    /// The engine server.
    pub fn engine(&self) -> &Server {
        &self.server
    }

    /// A server on the default address (ZeroMQ loopback, a free port),
    /// with this process's key.
    pub fn bind_default(py: Python<'_>) -> PyResult<RPCServer> {
        RPCServer::new(py, None, true, None, false)
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
            Some(a) => args::address(a)?,
            None => "tcp://127.0.0.1:*".to_string(),
        };
        let options = ServerOptions {
            auth: args::auth(py, auth, key)?,
            allow_unauthenticated_public,
            ..ServerOptions::default()
        };
        let open = matches!(options.auth, Auth::Open);
        let server = crate::gil::released(py, || Server::bind_with(&address, options)).py(py)?;
        if open {
            args::warn(
                py,
                &format!(
                    "RPCServer at {} accepts unauthenticated peers (auth=False)",
                    server.address()
                ),
            )?;
        }
        Ok(RPCServer {
            server,
            serving: Default::default(),
        })
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
    /// Raises RuntimeError if another thread already runs it.
    fn run_forever(slf: &Bound<'_, Self>) -> PyResult<()> {
        use std::sync::atomic::Ordering;
        let py = slf.py();
        let me = slf.get();
        if me.serving.swap(true, Ordering::AcqRel) {
            return Err(PyRuntimeError::new_err(format!(
                "{} is already served by run_forever in another thread",
                me.server.address()
            )));
        }
        let served = (|| {
            RPCServer::register(slf)?;
            while me.server.running() {
                crate::gil::released(py, || me.server.poll_once(Some(SIGNAL_CHECK))).py(py)?;
                py.check_signals()?;
            }
            Ok(())
        })();
        me.serving.store(false, Ordering::Release);
        served
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

    /// The descriptor that becomes readable when the server has work, for
    /// an event loop of your own (a Qt socket notifier, asyncio's
    /// `add_reader`): on readable, call `serve_ready()` in the thread that
    /// called `run_lazy()`.
    fn fileno(&self) -> i32 {
        self.server.poll_fd()
    }

    /// Serves what is ready now without waiting, for at most `budget`
    /// seconds (work left over keeps `fileno()` readable); returns the
    /// number of requests handled.
    #[pyo3(signature = (budget=0.02))]
    fn serve_ready(&self, py: Python<'_>, budget: f64) -> PyResult<usize> {
        let budget = Duration::from_secs_f64(budget.max(0.0));
        crate::gil::released(py, || self.server.serve_ready(budget)).py(py)
    }

    /// True until the server is closed.
    fn running(&self) -> bool {
        self.server.running()
    }

    /// Closes the server; every client it has seen is told.
    pub(crate) fn close(&self, py: Python<'_>) {
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
    /// An exception is logged (logger `farcall.server`, with its
    /// traceback) and the timer keeps running.
    fn start_timer(&self, callback: Py<PyAny>, interval: f64) {
        let interval = Duration::from_secs_f64(interval.max(0.001));
        self.server.start_timer(interval, move || {
            Python::attach(|py| {
                if let Err(e) = callback.call0(py) {
                    if let Err(unlogged) = log_timer_failure(py, &callback, e) {
                        unlogged.write_unraisable(py, Some(callback.bind(py)));
                    }
                }
            })
        });
    }

    /// Sets the process's hook around every incoming call: `hook(opts)`,
    /// with the options the caller's provider attached, returns a context
    /// manager the call runs in (its failure is logged inside it too);
    /// None removes it (teleprox's hook).
    #[staticmethod]
    fn set_call_context_hook(hook: Option<Py<PyAny>>) {
        crate::hooks::set_call_context_hook(hook);
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
    fn local_client(py: Python<'_>) -> PyResult<Py<RPCClient>> {
        let server = RPCServer::get_server(py)
            .ok_or_else(|| PyKeyError::new_err("no RPCServer is registered in this thread"))?;
        let address = server.get().server.address().to_string();
        RPCClient::for_address(py, &address)
    }

    fn __repr__(&self) -> String {
        format!("<RPCServer at {}>", self.server.address())
    }
}

/// Removes the socket files of the Unix servers still open (registered
/// with atexit: a server serving in a daemon thread is never closed).
#[pyfunction]
pub fn _remove_socket_files() {
    farcall::transport::stream::remove_socket_files();
}

/// Logs the exception a timer callback raised, with its traceback.
fn log_timer_failure(py: Python<'_>, callback: &Py<PyAny>, e: PyErr) -> PyResult<()> {
    let logger = PyModule::import(py, "logging")?.call_method1("getLogger", ("farcall.server",))?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("exc_info", e.into_value(py))?;
    logger.call_method(
        "error",
        (
            "timer callback %r failed; the timer keeps running",
            callback,
        ),
        Some(&kwargs),
    )?;
    Ok(())
}
