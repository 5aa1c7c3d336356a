//! Arguments as Python passes them, parsed in one place: sync modes,
//! return types, timeouts, addresses, serializers, keys. A timeout of
//! `None` means "no limit" everywhere.

use std::time::Duration;

use farcall::auth::Key;
use farcall::codec::Format;
use farcall::{Auth, ReturnType, SyncMode};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::IntoPyResult;

/// How long "no timeout" waits: long enough to never matter, short enough
/// that deadline arithmetic cannot overflow.
pub const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A timeout for the engine: `None` (no limit) as [`FOREVER`].
pub fn limit(timeout: Option<Duration>) -> Duration {
    timeout.unwrap_or(FOREVER)
}

/// Parses a `sync` option: `"sync"`, `"async"` or `"off"`.
pub fn sync_mode(v: &Bound<'_, PyAny>) -> PyResult<SyncMode> {
    let name: &str = v.extract()?;
    SyncMode::from_name(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "sync must be 'sync', 'async' or 'off', not {name:?}"
        ))
    })
}

/// Parses a `return_type` option: `"auto"`, `"proxy"` or `"value"`.
pub fn return_type(v: &Bound<'_, PyAny>) -> PyResult<ReturnType> {
    let name: &str = v.extract()?;
    ReturnType::from_name(name.as_bytes()).ok_or_else(|| {
        PyValueError::new_err(format!(
            "return_type must be 'auto', 'proxy' or 'value', not {name:?}"
        ))
    })
}

/// Parses a timeout in seconds (`None`: no limit).
pub fn timeout(v: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    if v.is_none() {
        return Ok(None);
    }
    let secs: f64 = v.extract()?;
    seconds(Some(secs))
}

/// A timeout given as `Option<f64>` seconds (`None`: no limit).
pub fn seconds(secs: Option<f64>) -> PyResult<Option<Duration>> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s).min(FOREVER))),
        Some(s) => Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds, not {s}"
        ))),
    }
}

/// An address given as `str` or (pyacq style) `bytes`.
pub fn address(address: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(b) = address.cast::<PyBytes>() {
        return Ok(String::from_utf8_lossy(b.as_bytes()).into_owned());
    }
    address
        .extract::<String>()
        .map_err(|_| PyTypeError::new_err("an address is a str (or bytes)"))
}

/// A serializer name: `"msgpack"`, `"json"` or `"farcall"`.
pub fn format(name: &str) -> PyResult<Format> {
    Format::from_name(name.as_bytes())
        .ok_or_else(|| PyValueError::new_err(format!("unknown serializer {name:?}")))
}

/// How to authenticate, from Python's `auth=` and `key=` (32 bytes, or
/// 64 hex digits).
pub fn auth(py: Python<'_>, auth: bool, key: Option<&Bound<'_, PyAny>>) -> PyResult<Auth> {
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
