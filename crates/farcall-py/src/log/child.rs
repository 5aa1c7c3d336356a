//! Logging of spawned children: what a child is told when spawned here,
//! and the set-up and shutdown of a Python child's forwarding (the engine
//! does both; `farcall.log` adds only what must be Python).

use farcall::log as flog;
use pyo3::prelude::*;
use serde_json::Value as Json;

use super::seconds;
use crate::errors::IntoPyResult;

/// What a new child is told about logging: the caller's `log_addr` and
/// `log_level`, else this process's defaults (its log server, or the one
/// it sends to, and the receiving logger's level; the root logger's for a
/// server elsewhere), as pyacq's ProcessSpawner did. `log_level` is a
/// number or a level name (ValueError otherwise). Without `defaults`,
/// only what the caller gave.
pub fn child_log_options(
    py: Python<'_>,
    log_addr: Option<String>,
    log_level: Option<&Bound<'_, PyAny>>,
    defaults: bool,
) -> PyResult<(Option<String>, Option<Json>)> {
    let log_level = log_level.map(level_json).transpose()?;
    if !defaults {
        return Ok((log_addr, log_level));
    }
    let (address, level) = py.detach(|| flog::child_options(log_addr, log_level));
    let level = match (level, &address) {
        (None, Some(_)) => {
            let root = PyModule::import(py, "logging")?.call_method0("getLogger")?;
            Some(
                root.call_method0("getEffectiveLevel")?
                    .extract::<i64>()?
                    .into(),
            )
        }
        (level, _) => level,
    };
    Ok((address, level))
}

/// A level as the engine reads it: a number, or a name in any case
/// (`"INFO"`, `"debug"`); ValueError for anything else, so that a typo
/// fails in the parent, not in the child.
fn level_json(level: &Bound<'_, PyAny>) -> PyResult<Json> {
    let json: Json = match level.extract::<i64>() {
        Ok(n) => n.into(),
        Err(_) => level.extract::<String>()?.into(),
    };
    if flog::parse_level(&json).is_none() {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "unknown log level {}",
            level.repr()?
        )));
    }
    Ok(json)
}

/// Sets up a spawned child: takes `name`, and with `log_addr` sends the
/// engine's records at `log_level` (default INFO) and every line of fds 1
/// and 2 there (unless `log_stdio` is false). Returns the level and a copy of the original stderr
/// descriptor (for crash dumps) when forwarding, else None.
#[pyfunction]
#[pyo3(signature = (name, log_addr, log_level=None, log_stdio=true))]
fn _log_start_child(
    py: Python<'_>,
    name: Option<String>,
    log_addr: Option<String>,
    log_level: Option<Bound<'_, PyAny>>,
    log_stdio: bool,
) -> PyResult<Option<(i64, Option<i32>)>> {
    let mut extra = serde_json::Map::new();
    extra.insert("log_stdio".into(), log_stdio.into());
    if let Some(address) = log_addr {
        extra.insert("log_addr".into(), address.into());
    }
    if let Some(level) = log_level {
        extra.insert("log_level".into(), level_json(&level)?);
    }
    let levelno = flog::init_forwarding(name.as_deref(), &Json::Object(extra)).py(py)?;
    Ok(levelno.map(|l| (l, flog::saved_stderr())))
}

/// Puts fds 1 and 2 back and lets the last lines and records leave, for
/// at most `timeout` seconds.
#[pyfunction]
#[pyo3(signature = (timeout=1.0))]
fn _log_shutdown(py: Python<'_>, timeout: f64) {
    let timeout = seconds(timeout);
    crate::gil::released(py, || flog::shutdown(timeout));
}

/// Registers the functions of this module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_log_start_child, m)?)?;
    m.add_function(wrap_pyfunction!(_log_shutdown, m)?)?;
    Ok(())
}
