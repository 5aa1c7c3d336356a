//! The engine side of `farcall.log`: a non-blocking sender (records are
//! queued and sent by a Rust thread), a receiver that hands records to
//! Python as dicts, the process-wide names, stdio capture, and the
//! forwarder that sends the engine's own `log` records.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use farcall::log::{self as flog, Record};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Value as Json};

use crate::errors::IntoPyResult;

/// Sends log records to a log server from a background thread; `send`
/// never blocks (a full queue drops the record and counts it).
#[pyclass(module = "farcall._native", name = "_LogSender", frozen)]
pub struct LogSender {
    inner: Arc<flog::LogSender>,
}

fn seconds(timeout: f64) -> Duration {
    Duration::from_secs_f64(timeout.max(0.0))
}

fn text(v: &Bound<'_, PyAny>) -> String {
    match v.cast::<PyString>() {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => v
            .str()
            .map_or_else(|_| String::new(), |s| s.to_string_lossy().into_owned()),
    }
}

fn opt_text(v: &Bound<'_, PyAny>) -> Option<String> {
    (!v.is_none()).then(|| text(v))
}

/// A JSON value for an `extra` attribute: JSON's own types as they are,
/// anything else as its `str()`.
fn to_json(v: &Bound<'_, PyAny>, depth: usize) -> Json {
    if v.is_none() {
        Json::Null
    } else if let Ok(b) = v.cast::<PyBool>() {
        Json::Bool(b.is_true())
    } else if v.is_instance_of::<PyInt>() {
        match v.extract::<i64>() {
            Ok(i) => i.into(),
            Err(_) => Json::String(text(v)),
        }
    } else if let Ok(f) = v.cast::<PyFloat>() {
        serde_json::Number::from_f64(f.value()).map_or(Json::Null, Json::Number)
    } else if let Ok(s) = v.cast::<PyString>() {
        Json::String(s.to_string_lossy().into_owned())
    } else if depth < 8 && (v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>()) {
        match v.try_iter() {
            Ok(items) => Json::Array(items.flatten().map(|i| to_json(&i, depth + 1)).collect()),
            Err(_) => Json::String(text(v)),
        }
    } else if let (true, Ok(d)) = (depth < 8, v.cast::<PyDict>()) {
        Json::Object(
            d.iter()
                .map(|(k, v)| (text(&k), to_json(&v, depth + 1)))
                .collect(),
        )
    } else {
        Json::String(text(v))
    }
}

/// The engine record for a Python `logging.LogRecord` (`msg` already
/// formatted, `exc_text` the formatted traceback if any). Names the record
/// already carries (a record relayed from another process) are kept.
fn record_of(record: &Bound<'_, PyAny>, msg: String, exc_text: Option<String>) -> PyResult<Record> {
    let py = record.py();
    let dict = record.getattr(intern!(py, "__dict__"))?;
    let dict = dict.cast::<PyDict>()?;
    let mut r = Record {
        name: "root".into(),
        msg,
        levelno: flog::level::INFO,
        levelname: String::new(),
        created: 0.0,
        relative_created: 0.0,
        pathname: String::new(),
        filename: String::new(),
        module: String::new(),
        lineno: 0,
        func_name: String::new(),
        thread: 0,
        py_thread_name: String::new(),
        process: std::process::id(),
        py_process_name: String::new(),
        exc_text,
        stack_info: None,
        host_name: String::new(),
        process_name: String::new(),
        thread_name: String::new(),
        extra: Map::new(),
    };
    for (k, v) in dict.iter() {
        let Ok(key) = k.cast::<PyString>() else {
            continue;
        };
        let key = key.to_str()?;
        match key {
            "msg" | "args" | "exc_info" | "exc_text" | "message" | "asctime" | "msecs" => {}
            "name" => r.name = text(&v),
            "levelno" => r.levelno = v.extract().unwrap_or(flog::level::INFO),
            "levelname" => r.levelname = text(&v),
            "created" => r.created = v.extract().unwrap_or(0.0),
            "relativeCreated" => r.relative_created = v.extract().unwrap_or(0.0),
            "pathname" => r.pathname = text(&v),
            "filename" => r.filename = text(&v),
            "module" => r.module = text(&v),
            "lineno" => r.lineno = v.extract().unwrap_or(0),
            "funcName" => r.func_name = opt_text(&v).unwrap_or_default(),
            "thread" => r.thread = v.extract().unwrap_or(0),
            "threadName" => r.py_thread_name = opt_text(&v).unwrap_or_default(),
            "process" => r.process = v.extract().unwrap_or(0),
            "processName" => r.py_process_name = opt_text(&v).unwrap_or_default(),
            "stack_info" => r.stack_info = opt_text(&v),
            "host_name" => r.host_name = text(&v),
            "process_name" => r.process_name = text(&v),
            "thread_name" => r.thread_name = text(&v),
            k if k.starts_with("_farcall") => {}
            k => {
                r.extra.insert(k.to_string(), to_json(&v, 0));
            }
        }
    }
    if r.levelname.is_empty() {
        r.levelname = flog::level_name(r.levelno);
    }
    if r.host_name.is_empty() {
        r.host_name = flog::host_name().to_string();
    }
    if r.process_name.is_empty() {
        r.process_name = flog::process_name().to_string();
    }
    if r.thread_name.is_empty() {
        r.thread_name = match flog::registered_thread_name(r.thread) {
            Some(name) => name.to_string(),
            None => r.py_thread_name.clone(),
        };
    }
    Ok(r)
}

#[pymethods]
impl LogSender {
    /// Connects to the log server at `address` (a ZeroMQ endpoint) with a
    /// queue of `capacity` records.
    #[new]
    #[pyo3(signature = (address, capacity=10000))]
    fn new(py: Python<'_>, address: &Bound<'_, PyAny>, capacity: usize) -> PyResult<Self> {
        let address = crate::args::address(address)?;
        let inner = flog::LogSender::with_capacity(&address, capacity).py(py)?;
        Ok(LogSender {
            inner: Arc::new(inner),
        })
    }

    /// The log server's address.
    #[getter]
    fn address(&self) -> &str {
        self.inner.address()
    }

    /// Records handed to ZeroMQ so far.
    #[getter]
    fn sent(&self) -> u64 {
        self.inner.sent()
    }

    /// Records dropped so far (queue full, sender closed).
    #[getter]
    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    /// Records waiting to be sent.
    #[getter]
    fn queued(&self) -> u64 {
        self.inner.queued()
    }

    /// Queues a `logging.LogRecord` whose message is `msg` (formatted) and
    /// traceback `exc_text`; never blocks. False if it was dropped.
    #[pyo3(signature = (record, msg, exc_text=None))]
    fn send(
        &self,
        record: &Bound<'_, PyAny>,
        msg: String,
        exc_text: Option<String>,
    ) -> PyResult<bool> {
        Ok(self.inner.send(record_of(record, msg, exc_text)?))
    }

    /// Queues a record made of a logger name, a level and a message, with
    /// this process's names; never blocks.
    fn send_message(&self, name: &str, levelno: i64, msg: &str) -> bool {
        self.inner.send(Record::new(name, levelno, msg))
    }

    /// Waits at most `timeout` seconds until what was queued is sent;
    /// True if it all went.
    #[pyo3(signature = (timeout=1.0))]
    fn flush(&self, py: Python<'_>, timeout: f64) -> bool {
        let inner = &self.inner;
        crate::gil::released(py, || inner.flush(seconds(timeout)))
    }

    /// Stops accepting records and lets the queued ones go for at most
    /// `timeout` seconds. True if the sender finished in time.
    #[pyo3(signature = (timeout=1.0))]
    fn close(&self, py: Python<'_>, timeout: f64) -> bool {
        let inner = &self.inner;
        crate::gil::released(py, || inner.close(seconds(timeout)))
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn __repr__(&self) -> String {
        format!(
            "<_LogSender to {} sent={} dropped={}>",
            self.inner.address(),
            self.inner.sent(),
            self.inner.dropped()
        )
    }
}

fn json_to_py(py: Python<'_>, v: &Json) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Json::Null => py.None(),
        Json::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any().unbind(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any().unbind(),
            _ => n
                .as_f64()
                .unwrap_or(0.0)
                .into_pyobject(py)?
                .into_any()
                .unbind(),
        },
        Json::String(s) => s.into_pyobject(py)?.into_any().unbind(),
        Json::Array(items) => {
            let items = items
                .iter()
                .map(|i| json_to_py(py, i))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any().unbind()
        }
        Json::Object(m) => {
            let d = PyDict::new(py);
            for (k, v) in m {
                d.set_item(k, json_to_py(py, v)?)?;
            }
            d.into_any().unbind()
        }
    })
}

/// The attributes of a `logging.LogRecord` for a received record (for
/// `logging.makeLogRecord`).
pub(crate) fn record_dict<'py>(py: Python<'py>, r: &Record) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in &r.extra {
        d.set_item(k, json_to_py(py, v)?)?;
    }
    d.set_item(intern!(py, "name"), &r.name)?;
    d.set_item(intern!(py, "msg"), &r.msg)?;
    d.set_item(intern!(py, "args"), py.None())?;
    d.set_item(intern!(py, "levelno"), r.levelno)?;
    d.set_item(intern!(py, "levelname"), &r.levelname)?;
    d.set_item(intern!(py, "created"), r.created)?;
    d.set_item(intern!(py, "msecs"), r.msecs())?;
    d.set_item(intern!(py, "relativeCreated"), r.relative_created)?;
    d.set_item(intern!(py, "pathname"), &r.pathname)?;
    d.set_item(intern!(py, "filename"), &r.filename)?;
    d.set_item(intern!(py, "module"), &r.module)?;
    d.set_item(intern!(py, "lineno"), r.lineno)?;
    d.set_item(intern!(py, "funcName"), &r.func_name)?;
    d.set_item(intern!(py, "thread"), r.thread)?;
    d.set_item(intern!(py, "threadName"), &r.py_thread_name)?;
    d.set_item(intern!(py, "process"), r.process)?;
    d.set_item(intern!(py, "processName"), &r.py_process_name)?;
    d.set_item(intern!(py, "exc_info"), py.None())?;
    d.set_item(intern!(py, "exc_text"), &r.exc_text)?;
    d.set_item(intern!(py, "stack_info"), &r.stack_info)?;
    d.set_item(intern!(py, "host_name"), &r.host_name)?;
    d.set_item(intern!(py, "process_name"), &r.process_name)?;
    d.set_item(intern!(py, "thread_name"), &r.thread_name)?;
    Ok(d)
}

/// A bound ZeroMQ PULL socket that receives log records (the socket of a
/// `farcall.log.LogServer`).
#[pyclass(module = "farcall._native", name = "_LogReceiver", frozen)]
pub struct LogReceiver {
    inner: Mutex<Option<flog::LogReceiver>>,
    address: String,
}

#[pymethods]
impl LogReceiver {
    /// Binds `address` (default: loopback, a free port).
    #[new]
    #[pyo3(signature = (address=None))]
    fn new(py: Python<'_>, address: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let address = match address {
            Some(a) => crate::args::address(a)?,
            None => flog::DEFAULT_ADDRESS.to_string(),
        };
        let inner = flog::LogReceiver::bind(&address).py(py)?;
        Ok(LogReceiver {
            address: inner.address().to_string(),
            inner: Mutex::new(Some(inner)),
        })
    }

    /// The address senders connect to.
    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    /// Messages that were not log records, dropped so far.
    #[getter]
    fn rejected(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |r| r.rejected())
    }

    /// Waits at most `timeout` seconds (None: no limit) for records and
    /// returns the ones there (at most `max`), each a dict of LogRecord
    /// attributes. Empty after a timeout or once closed.
    #[pyo3(signature = (timeout=None, max=1000))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
        max: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let records = crate::gil::released(py, || {
            let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            match guard.as_mut() {
                Some(r) => r.recv(timeout.map(seconds), max),
                None => Ok(Vec::new()),
            }
        });
        let records = records.py(py)?;
        let out = PyList::empty(py);
        for r in &records {
            out.append(record_dict(py, r)?)?;
        }
        Ok(out)
    }

    /// Unbinds the socket (after a `recv` in progress returns).
    fn close(&self, py: Python<'_>) {
        crate::gil::released(py, || {
            self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        });
    }
}

/// File descriptors 1 and 2 redirected into log records; `finish` puts
/// the originals back.
#[pyclass(module = "farcall._native", name = "_StdioCapture", frozen)]
pub struct StdioCapture {
    inner: Mutex<Option<flog::StdioCapture>>,
}

#[pymethods]
impl StdioCapture {
    /// A copy of the original descriptor behind `fd` (1 or 2), or None.
    fn saved_fd(&self, fd: i32) -> Option<i32> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|c| c.saved_fd(fd))
    }

    /// Restores the descriptors and waits at most `timeout` seconds for
    /// what was written before to be queued.
    #[pyo3(signature = (timeout=1.0))]
    fn finish(&self, py: Python<'_>, timeout: f64) {
        let capture = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(capture) = capture {
            crate::gil::released(py, || capture.finish(seconds(timeout)));
        }
    }
}

/// Captures fds 1 and 2: each line becomes a record (logger `stdout` at
/// INFO, `stderr` at WARNING) sent through `sender`.
#[pyfunction]
fn _log_capture_stdio(py: Python<'_>, sender: &LogSender) -> PyResult<StdioCapture> {
    let capture = flog::capture_stdio(sender.inner.clone()).py(py)?;
    Ok(StdioCapture {
        inner: Mutex::new(Some(capture)),
    })
}

/// Makes `sender` (or None) the destination of the engine's own log
/// records; without one they go to stderr.
#[pyfunction]
#[pyo3(signature = (sender))]
fn _log_set_engine_sender(sender: Option<&LogSender>) {
    flog::set_global_sender(sender.map(|s| s.inner.clone()));
}

/// Sets the lowest level of the engine's own records that are kept
/// (default WARNING).
#[pyfunction]
fn _log_set_engine_level(levelno: i64) {
    ::log::set_max_level(flog::level_filter(levelno));
}

/// Sets this host's name in log records.
#[pyfunction]
fn _log_set_host_name(name: &str) {
    flog::set_host_name(name);
}

/// This host's name in log records.
#[pyfunction]
fn _log_get_host_name() -> String {
    flog::host_name().to_string()
}

/// Sets this process's name in log records.
#[pyfunction]
fn _log_set_process_name(name: &str) {
    flog::set_process_name(name);
}

/// This process's name in log records.
#[pyfunction]
fn _log_get_process_name() -> String {
    flog::process_name().to_string()
}

/// Names thread `tid` (default: the calling thread) in log records.
#[pyfunction]
#[pyo3(signature = (name, tid=None))]
fn _log_set_thread_name(name: &str, tid: Option<u64>) {
    flog::set_thread_name(name, tid);
}

/// The name set for thread `tid` (default: the calling thread), or None.
#[pyfunction]
#[pyo3(signature = (tid=None))]
fn _log_get_thread_name(tid: Option<u64>) -> Option<String> {
    let tid = tid.unwrap_or_else(flog::current_thread_id);
    flog::registered_thread_name(tid).map(|n| n.to_string())
}

/// What a new child is told about logging: the caller's `log_addr` and
/// `log_level`, else this process's defaults (its log server or the one it
/// sends to, and the receiving logger's level), as pyacq's ProcessSpawner
/// did. Defaults exist only once `farcall.log` has been imported.
pub fn child_log_options<'py>(
    py: Python<'py>,
    log_addr: Option<String>,
    log_level: Option<Bound<'py, PyAny>>,
) -> PyResult<(Option<String>, Option<Bound<'py, PyAny>>)> {
    let modules = PyModule::import(py, "sys")?.getattr(intern!(py, "modules"))?;
    let Ok(module) = modules.get_item("farcall.log") else {
        return Ok((log_addr, log_level));
    };
    let (addr, level): (Option<String>, Option<Bound<'py, PyAny>>) = module
        .call_method1(intern!(py, "_child_log_options"), (log_addr, log_level))?
        .extract()?;
    Ok((addr, level))
}

/// Registers the log classes and functions, and installs the forwarder
/// of the engine's own `log` records (WARNING and above, to stderr until
/// a sender is set).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LogSender>()?;
    m.add_class::<LogReceiver>()?;
    m.add_class::<StdioCapture>()?;
    m.add_function(wrap_pyfunction!(_log_capture_stdio, m)?)?;
    m.add_function(wrap_pyfunction!(_log_set_engine_sender, m)?)?;
    m.add_function(wrap_pyfunction!(_log_set_engine_level, m)?)?;
    m.add_function(wrap_pyfunction!(_log_set_host_name, m)?)?;
    m.add_function(wrap_pyfunction!(_log_get_host_name, m)?)?;
    m.add_function(wrap_pyfunction!(_log_set_process_name, m)?)?;
    m.add_function(wrap_pyfunction!(_log_get_process_name, m)?)?;
    m.add_function(wrap_pyfunction!(_log_set_thread_name, m)?)?;
    m.add_function(wrap_pyfunction!(_log_get_thread_name, m)?)?;
    // Fails only if a logger is already installed: keep that one. The
    // engine keeps what the `farcall` logger would (WARNING by default).
    let level: i64 = PyModule::import(m.py(), "logging")?
        .call_method1("getLogger", ("farcall",))?
        .call_method0("getEffectiveLevel")?
        .extract()?;
    flog::install(flog::level_filter(level));
    flog::set_local_sink(Some(Arc::new(crate::log_bridge::to_python_logging)));
    Ok(())
}
