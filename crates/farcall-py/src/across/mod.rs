//! across's symmetric connections: [`AcrossLink`] is the engine side of
//! one `farcall.across.Connection`, a peer link over a child's pipes, this
//! process's stdio or a channel object, with the across entry of each side
//! (see `entry`) answering the other's requests. What travels is a pickle
//! and its buffers (see `payload`).

mod entry;
mod payload;

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use farcall::channel::{Channel, FdChannel};
use farcall::protocol::command::CallObj;
use farcall::protocol::{Action, ReturnType};
use farcall::{Client, ClientOptions, Proxy, Value};
use pyo3::exceptions::{PyOSError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

pub use payload::AcrossRef;

use crate::errors::IntoPyResult;
use crate::{args, call, gil};

/// The engine side of one across connection.
#[pyclass(module = "farcall._native", name = "AcrossLink", frozen)]
pub struct AcrossLink {
    client: Client,
    /// The peer's entry.
    entry: Proxy,
}

impl AcrossLink {
    /// Opens a private link over `channel` and finds the peer's entry.
    fn open(py: Python<'_>, channel: Arc<dyn Channel>) -> PyResult<AcrossLink> {
        // The default timeout bounds the opening exchange only: requests
        // carry their own (none unless asked).
        let options = ClientOptions::default();
        AcrossLink::with(py, move || farcall::Link::over_private(channel, &options))
    }

    /// A link `open` makes (without the GIL), with the peer's entry.
    fn with(
        py: Python<'_>,
        open: impl Send + FnOnce() -> farcall::Result<Arc<farcall::Link>>,
    ) -> PyResult<AcrossLink> {
        entry::publish();
        let (client, entry) = gil::released(py, || -> farcall::Result<(Client, Value)> {
            let client = Client::from_link(open()?);
            let entry = client.get_item(entry::NAME)?;
            Ok((client, entry))
        })
        .py(py)?;
        let Value::Proxy(reference) = entry else {
            return Err(PyTypeError::new_err("the peer is not an across peer"));
        };
        let entry = Proxy::from_reply(reference, &client);
        Ok(AcrossLink { client, entry })
    }
}

/// A descriptor of the caller's, duplicated for the link (the caller
/// keeps and closes its own).
fn dup(fd: RawFd) -> PyResult<OwnedFd> {
    if fd < 0 {
        return Err(PyOSError::new_err(format!("bad file descriptor {fd}")));
    }
    // SAFETY: the caller's descriptor, borrowed only to be duplicated
    // (F_DUPFD_CLOEXEC); a closed one makes that fail with EBADF.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed
        .try_clone_to_owned()
        .map_err(|e| PyOSError::new_err(e.to_string()))
}

#[pymethods]
impl AcrossLink {
    /// A link over a pair of pipes (copies of `read_fd` and `write_fd`
    /// are taken): a child's stdout and stdin, or this process's stdin
    /// and stdout.
    #[staticmethod]
    fn over_pipes(py: Python<'_>, read_fd: RawFd, write_fd: RawFd) -> PyResult<AcrossLink> {
        let channel = FdChannel::pipes(dup(read_fd)?, dup(write_fd)?)
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        AcrossLink::open(py, Arc::new(channel))
    }

    /// A link over a channel object (`recv(size)`, `send(data)`,
    /// `cancel()`, `close()`), both sides proving the key first (`key`,
    /// else this process's key); `auth=False` skips that, for a channel
    /// only the peer can reach.
    #[staticmethod]
    #[pyo3(signature = (channel, key=None, auth=true))]
    fn over_channel(
        py: Python<'_>,
        channel: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        auth: bool,
    ) -> PyResult<AcrossLink> {
        let channel: Arc<dyn Channel> = Arc::new(crate::channel::PyChannel::new(channel)?);
        if !auth {
            return AcrossLink::open(py, channel);
        }
        let options = ClientOptions {
            auth: args::auth(py, true, key)?,
            ..ClientOptions::default()
        };
        AcrossLink::with(py, move || farcall::Link::over_channel(channel, &options))
    }

    /// A link to the across listener at `address` (`unix://PATH`,
    /// `tcp+native://HOST:PORT`), proving the key (`key`, else the
    /// per-user key; `auth=False` skips the handshake's proof).
    #[staticmethod]
    #[pyo3(signature = (address, key=None, auth=true))]
    fn connect(
        py: Python<'_>,
        address: &str,
        key: Option<&Bound<'_, PyAny>>,
        auth: bool,
    ) -> PyResult<AcrossLink> {
        let options = ClientOptions {
            auth: args::auth(py, auth, key)?,
            ..ClientOptions::default()
        };
        let address = address.to_owned();
        AcrossLink::with(py, move || farcall::Link::connect(&address, &options))
    }

    /// A link over a connected socket (a copy of `fd` is taken), running
    /// the key handshake as [`AcrossLink::connect`] does.
    #[staticmethod]
    #[pyo3(signature = (fd, name, key=None, auth=true))]
    fn over_socket(
        py: Python<'_>,
        fd: RawFd,
        name: &str,
        key: Option<&Bound<'_, PyAny>>,
        auth: bool,
    ) -> PyResult<AcrossLink> {
        let options = ClientOptions {
            auth: args::auth(py, auth, key)?,
            ..ClientOptions::default()
        };
        let channel: Arc<dyn Channel> = Arc::new(
            FdChannel::socket(dup(fd)?, "socket").map_err(|e| PyOSError::new_err(e.to_string()))?,
        );
        let name = name.to_owned();
        AcrossLink::with(py, move || {
            farcall::Link::over_socket(channel, &name, &options)
        })
    }

    /// Sends request `op` with `payload` (`(pickle, buffers, refs)`) and
    /// waits for `(ok, payload)`, with the GIL released (Ctrl-C cancels).
    #[pyo3(signature = (op, payload, timeout=None))]
    fn request<'py>(
        &self,
        py: Python<'py>,
        op: &Bound<'py, PyString>,
        payload: &Bound<'py, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let args = [
            Value::Str(op.to_str()?.to_owned()),
            payload::to_value(payload)?,
        ];
        let timeout = args::seconds(timeout)?;
        let reference = self.entry.reference();
        let (reply, client) = call::sync(py, timeout, || {
            let fields = CallObj::fields(reference, None, &args, &[]);
            self.client
                .start(Action::CallObj, &fields[..], ReturnType::Auto, timeout)
        })?;
        let bad = || PyTypeError::new_err("malformed across reply");
        let Value::Tuple(mut parts) = reply else {
            return Err(bad());
        };
        let (Some(body), Some(Value::Bool(ok))) = (parts.pop(), parts.pop()) else {
            return Err(bad());
        };
        let body = payload::from_value(py, body, payload::Owner::Reply(&client))?;
        PyTuple::new(
            py,
            [ok.into_pyobject(py)?.to_owned().into_any(), body.into_any()],
        )
    }

    /// A number naming the link in this process.
    #[getter]
    fn id(&self) -> u64 {
        self.client.link().id()
    }

    /// Why the link ended, or None while it is up.
    fn error(&self) -> Option<String> {
        self.client.disconnected()
    }

    /// Ends the link: pending calls on both sides fail. With `notify`,
    /// the peer is told first, so it knows the end was meant.
    #[pyo3(signature = (why, notify=true))]
    fn close(&self, py: Python<'_>, why: &str, notify: bool) {
        let link = self.client.link();
        gil::released(py, || {
            if notify {
                link.close_notifying(why)
            } else {
                link.close(why)
            }
        });
    }

    /// True when the link ended because the peer closed it (it said so).
    fn peer_closed(&self) -> bool {
        self.client.link().peer_said_goodbye()
    }

    /// Waits until the link ends (`timeout` in seconds; None: no limit);
    /// true when it has.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = args::seconds(timeout)?.and_then(|t| Instant::now().checked_add(t));
        let link = self.client.link();
        let ended = gil::wait(py, deadline, |until| {
            let step = Instant::now() + Duration::from_millis(20);
            let until = until.map_or(step, |u| u.min(step));
            while !link.is_dead() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
            link.is_dead().then_some(())
        })?;
        Ok(ended.is_some())
    }
}

/// Accepts across connections on a native address (the key handshake
/// first): across's socket servers.
#[pyclass(module = "farcall._native", name = "AcrossListener", frozen)]
pub struct AcrossListener {
    listener: farcall::PeerListener,
}

#[pymethods]
impl AcrossListener {
    /// Binds `address`; peers must prove `key` (else the per-user key);
    /// `auth=False` admits anyone.
    #[new]
    #[pyo3(signature = (address, key=None, auth=true))]
    fn new(
        py: Python<'_>,
        address: &str,
        key: Option<&Bound<'_, PyAny>>,
        auth: bool,
    ) -> PyResult<AcrossListener> {
        let auth = args::auth(py, auth, key)?;
        // Before any peer is admitted: its first request (our entry) may
        // come before `accept` takes its link.
        entry::publish();
        let listener = farcall::PeerListener::bind(address, &auth).py(py)?;
        Ok(AcrossListener { listener })
    }

    /// The address peers connect to.
    #[getter]
    fn address(&self) -> &str {
        self.listener.address()
    }

    /// The next connection, once admitted (`timeout` in seconds; None: no
    /// limit); None when the timeout passes. Ctrl-C interrupts the wait.
    #[pyo3(signature = (timeout=None))]
    fn accept(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<AcrossLink>> {
        let deadline = args::seconds(timeout)?.and_then(|t| Instant::now().checked_add(t));
        let listener = &self.listener;
        let got = gil::wait(py, deadline, |until| match listener.accept(until) {
            Ok(Some(link)) => Some(Ok(link)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        })?;
        let Some(link) = got else {
            return Ok(None);
        };
        let link = link.py(py)?;
        AcrossLink::with(py, move || Ok(link)).map(Some)
    }

    /// Stops accepting (connections already made go on).
    fn close(&self) {
        self.listener.close();
    }
}

/// Adds the across classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AcrossListener>()?;
    m.add_class::<AcrossLink>()?;
    m.add_class::<AcrossRef>()?;
    Ok(())
}
