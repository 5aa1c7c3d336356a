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
        entry::publish();
        // The default timeout bounds the opening exchange only: requests
        // carry their own (none unless asked).
        let options = ClientOptions::default();
        let (client, entry) = gil::released(py, || -> farcall::Result<(Client, Value)> {
            let link = farcall::Link::over_private(channel, &options)?;
            let client = Client::from_link(link);
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

    /// A link over a channel object: `recv(size)`, `send(data)`,
    /// `cancel()`, `close()`.
    #[staticmethod]
    fn over_channel(py: Python<'_>, channel: &Bound<'_, PyAny>) -> PyResult<AcrossLink> {
        let channel = crate::channel::PyChannel::new(channel)?;
        AcrossLink::open(py, Arc::new(channel))
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

/// Adds the across classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AcrossLink>()?;
    m.add_class::<AcrossRef>()?;
    Ok(())
}
