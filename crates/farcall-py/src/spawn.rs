//! `ProcessSpawner`: a child Python process serving farcall, and the
//! child's side of the bootstrap (used by `farcall.bootstrap`).

use std::process::ExitStatus;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use farcall::spawn::{self as engine, SpawnOptions};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::client::RPCClient;
use crate::convert::{to_py, Ownership};
use crate::errors::IntoPyResult;

/// Live children, stopped at interpreter exit (`farcall` registers
/// `_stop_children` with atexit).
static CHILDREN: Mutex<Vec<Weak<engine::ProcessSpawner>>> = Mutex::new(Vec::new());

/// How long `stop()` and interpreter exit wait before killing a child.
const STOP_TIMEOUT: f64 = 3.0;

/// Starts a child Python process running a farcall server and connects to
/// it: `proc.client._import('numpy')`. The child exits if this process
/// dies; children still running at interpreter exit are stopped.
#[pyclass(module = "farcall", name = "ProcessSpawner", frozen, weakref)]
pub struct ProcessSpawner {
    child: Arc<engine::ProcessSpawner>,
    /// `proc.client`, one object (it keeps the child running too).
    client: Py<RPCClient>,
    /// The child runs a QApplication with a QtRPCServer.
    qt: bool,
}

/// A descriptor for a child's stdout or stderr: an int, an object with
/// `fileno()`, or `subprocess.DEVNULL`; duplicated, so the caller's stays
/// the caller's.
fn output_fd(py: Python<'_>, target: &Bound<'_, PyAny>) -> PyResult<std::os::fd::OwnedFd> {
    use std::os::fd::{BorrowedFd, RawFd};
    let devnull: i64 = PyModule::import(py, "subprocess")?
        .getattr("DEVNULL")?
        .extract()?;
    let fd: RawFd = match target.extract::<i64>() {
        Ok(n) if n == devnull => {
            return Ok(std::fs::OpenOptions::new().write(true).open("/dev/null")?.into())
        }
        Ok(n) if n >= 0 => n as RawFd,
        Ok(_) => {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "stdout/stderr: a file, a descriptor or subprocess.DEVNULL (subprocess.PIPE is not supported)",
            ))
        }
        Err(_) => target.call_method0("fileno")?.extract()?,
    };
    // SAFETY: the descriptor is valid for this call (the caller's); we
    // keep a duplicate of our own.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(borrowed.try_clone_to_owned()?)
}

/// A Python dict as a JSON object (through `json.dumps`: what the child
/// reads back is what JSON can say).
fn json_object(
    py: Python<'_>,
    d: &Bound<'_, PyDict>,
) -> PyResult<serde_json::Map<String, serde_json::Value>> {
    let text: String = PyModule::import(py, "json")?
        .call_method1("dumps", (d,))?
        .extract()?;
    serde_json::from_str(&text)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("extra: {e}")))
}

fn returncode(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| -status.signal().unwrap_or(0))
}

#[pymethods]
impl ProcessSpawner {
    /// Starts `executable -m farcall.bootstrap` (default: this Python) with
    /// a server on `address` (default: a fresh native Unix socket).
    ///
    /// Also: `daemon` (a process that outlives this one, docs/spawning.md),
    /// `exit_on_parent_death` (default: not for daemons), `command` (the
    /// whole command line instead of `executable -m farcall.bootstrap`,
    /// for wrappers such as `conda run`), `stdout`/`stderr` (a file, a
    /// descriptor or `subprocess.DEVNULL`), `extra` (more of the child's
    /// configuration: `log_stdio`, `log_send_level`).
    #[new]
    #[pyo3(signature = (name=None, address=None, log_addr=None, log_level=None, executable=None, qt=false, start_timeout=10.0, daemon=false, exit_on_parent_death=None, command=None, stdout=None, stderr=None, extra=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: Option<String>,
        address: Option<&Bound<'_, PyAny>>,
        log_addr: Option<&Bound<'_, PyAny>>,
        log_level: Option<&Bound<'_, PyAny>>,
        executable: Option<String>,
        qt: bool,
        start_timeout: f64,
        daemon: bool,
        exit_on_parent_death: Option<bool>,
        command: Option<Vec<String>>,
        stdout: Option<&Bound<'_, PyAny>>,
        stderr: Option<&Bound<'_, PyAny>>,
        extra: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let executable = match executable {
            Some(e) => e,
            None => PyModule::import(py, "sys")?
                .getattr("executable")?
                .extract()?,
        };
        let exit_on_parent_death = exit_on_parent_death.unwrap_or(!daemon);
        if daemon && exit_on_parent_death {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "a daemon outlives its parent: exit_on_parent_death=True cannot apply",
            ));
        }
        let mut options = SpawnOptions::python()
            .start_timeout(Duration::from_secs_f64(start_timeout))
            .daemon(daemon)
            .exit_on_parent_death(exit_on_parent_death);
        options.program = executable.into();
        if let Some(command) = command {
            let Some((program, args)) = command.split_first() else {
                return Err(pyo3::exceptions::PyValueError::new_err("command is empty"));
            };
            options.program = program.into();
            options.args = args.iter().map(Into::into).collect();
        }
        if let Some(out) = stdout {
            options = options.stdout(output_fd(py, out)?);
        }
        if let Some(err) = stderr {
            options = options.stderr(output_fd(py, err)?);
        }
        if let Some(name) = name {
            options = options.name(name);
        }
        if let Some(address) = address {
            options = options.address(crate::args::address(address)?);
        }
        // Without log_addr/log_level, the children log to this process's
        // log server (if farcall.log runs one), as in pyacq.
        let log_addr = log_addr.map(crate::args::address).transpose()?;
        // A daemon outlives this process's log server: no defaults.
        let (log_addr, log_level) =
            crate::log::child_log_options(py, log_addr, log_level, !daemon)?;
        let mut extra = match extra {
            Some(more) => json_object(py, more)?,
            None => serde_json::Map::new(),
        };
        if let Some(log_addr) = log_addr {
            extra.insert("log_addr".into(), log_addr.into());
        }
        if let Some(level) = log_level {
            extra.insert("log_level".into(), level);
        }
        if qt {
            // The child runs a QApplication with a QtRPCServer (farcall.qt).
            extra.insert("qt".into(), true.into());
        }
        options = options.extra(serde_json::Value::Object(extra));
        let child = crate::gil::released(py, || engine::ProcessSpawner::spawn(options)).py(py)?;
        let child = Arc::new(child);
        if !daemon {
            // A daemon outlives this process; the others stop at its exit.
            let mut children = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
            children.retain(|c| c.strong_count() > 0);
            children.push(Arc::downgrade(&child));
        }
        let client = RPCClient::wrap(
            py,
            child.address(),
            child.client().clone(),
            Some(child.clone()),
        )?;
        Ok(ProcessSpawner { child, client, qt })
    }

    /// The client of the child's server (the link the spawner opened, even
    /// once disconnected, so that `proc.client.disconnected()` says so
    /// after the child died).
    #[getter]
    fn client(&self, py: Python<'_>) -> Py<RPCClient> {
        self.client.clone_ref(py)
    }

    /// The address of the child's server.
    #[getter]
    fn address(&self) -> &str {
        self.child.address()
    }

    /// The child's process id.
    #[getter]
    fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The name given at start, or None.
    #[getter]
    fn name(&self) -> Option<&str> {
        self.child.name()
    }

    /// The process handle (`poll`, `wait`, `kill`, `pid`), like a Popen.
    #[getter]
    fn proc<'py>(slf: &Bound<'py, Self>) -> Bound<'py, Self> {
        slf.clone()
    }

    /// The exit code if the child has exited (negative: killed by that
    /// signal), else None.
    fn poll(&self, py: Python<'_>) -> PyResult<Option<i32>> {
        Ok(self.child.poll().py(py)?.map(returncode))
    }

    /// Waits for the child to exit and returns its exit code; raises
    /// `ProcessTimeoutError` (a `subprocess.TimeoutExpired` and a
    /// `TimeoutError`) after `timeout` seconds.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<i32> {
        let child = &self.child;
        let status =
            crate::gil::released(py, || child.wait(timeout.map(Duration::from_secs_f64))).py(py)?;
        match status {
            Some(s) => Ok(returncode(s)),
            None => {
                let expired = crate::errors::error_class(py, "ProcessTimeoutError")?;
                Err(PyErr::from_value(expired.call1((
                    format!("farcall child {}", child.pid()),
                    timeout,
                ))?))
            }
        }
    }

    /// Kills the child at once (SIGKILL) and reaps it.
    fn kill(&self, py: Python<'_>) -> PyResult<()> {
        self.child.kill().py(py)
    }

    /// Asks the child's server to close, waits up to `timeout` seconds for
    /// the child to exit, then kills it. Returns the exit code.
    #[pyo3(signature = (timeout=STOP_TIMEOUT))]
    fn stop(&self, py: Python<'_>, timeout: f64) -> PyResult<i32> {
        let child = &self.child;
        let status =
            crate::gil::released(py, || child.stop(Duration::from_secs_f64(timeout))).py(py)?;
        Ok(returncode(status))
    }

    /// True when the child runs a Qt event loop (`qt=True`).
    #[getter]
    fn qt(&self) -> bool {
        self.qt
    }

    /// True for a daemon (started with `daemon=True`).
    #[getter]
    fn daemon(&self) -> bool {
        self.child.is_daemon()
    }

    /// `with ProcessSpawner() as proc:` stops the child at the end.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Stops the child (a daemon too: it was started for this block).
    fn __exit__(
        &self,
        py: Python<'_>,
        _kind: &Bound<'_, PyAny>,
        _value: &Bound<'_, PyAny>,
        _traceback: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.stop(py, STOP_TIMEOUT)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<ProcessSpawner {}pid {} at {}>",
            self.child
                .name()
                .map(|n| format!("{n:?} "))
                .unwrap_or_default(),
            self.child.pid(),
            self.child.address()
        )
    }
}

/// Stops every child still running (registered with atexit).
#[pyfunction]
fn _stop_children(py: Python<'_>) {
    let children: Vec<_> = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|p| p.into_inner()));
    crate::gil::released(py, || {
        for child in children.iter().filter_map(Weak::upgrade) {
            if let Ok(None) = child.poll() {
                let _ = child.stop(Duration::from_secs_f64(STOP_TIMEOUT));
            }
        }
    });
}

/// The spawn configuration, read from the bootstrap pipe (child side).
#[pyfunction]
fn _child_config(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let config = crate::gil::released(py, engine::read_child_config).py(py)?;
    let d = PyDict::new(py);
    d.set_item("address", config.address)?;
    d.set_item("name", config.name)?;
    d.set_item("parent_pid", config.parent_pid)?;
    // The key itself never reaches Python: it is already the process key.
    d.set_item("auth", config.key.is_some())?;
    let extra = farcall::to_value(&config.extra).py(py)?;
    d.set_item("extra", to_py(py, extra, Ownership::Borrowed)?)?;
    Ok(d)
}

/// Tells the parent the server is up at `address` (child side).
#[pyfunction]
fn _report_ready(py: Python<'_>, address: &str) -> PyResult<()> {
    engine::report_ready(address).py(py)
}

/// Tells the parent the child could not start (child side).
#[pyfunction]
fn _report_error(py: Python<'_>, message: &str) -> PyResult<()> {
    engine::report_error(message).py(py)
}

/// Exits this process when the parent dies (child side).
#[pyfunction]
fn _watch_parent() {
    engine::watch_parent();
}

/// Registers the module-level functions.
pub fn add_functions(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_stop_children, m)?)?;
    m.add_function(wrap_pyfunction!(_child_config, m)?)?;
    m.add_function(wrap_pyfunction!(_report_ready, m)?)?;
    m.add_function(wrap_pyfunction!(_report_error, m)?)?;
    m.add_function(wrap_pyfunction!(_watch_parent, m)?)?;
    Ok(())
}
