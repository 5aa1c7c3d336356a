//! A log record between Python and the engine: a `logging.LogRecord`'s
//! attributes to an engine [`Record`] and back. The field names live in
//! the engine (`Record::to_map`, `Record::from_local_map`); this module
//! only converts values.

use farcall::log::Record;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Value as Json};

/// `str(v)`, or "" if that raises.
pub(super) fn text(v: &Bound<'_, PyAny>) -> String {
    match v.cast::<PyString>() {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => v
            .str()
            .map_or_else(|_| String::new(), |s| s.to_string_lossy().into_owned()),
    }
}

/// A JSON value of an attribute: JSON's own types as they are, anything
/// else as its `str()`.
fn to_json(v: &Bound<'_, PyAny>, depth: usize) -> Json {
    if v.is_none() {
        Json::Null
    } else if let Ok(b) = v.cast::<PyBool>() {
        Json::Bool(b.is_true())
    } else if v.is_instance_of::<PyInt>() {
        match v.extract::<i64>() {
            Ok(i) => i.into(),
            Err(_) => match v.extract::<u64>() {
                Ok(u) => u.into(),
                Err(_) => Json::String(text(v)),
            },
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

/// The engine record of a `logging.LogRecord` logged here, whose message
/// is `msg` (formatted) and traceback `exc_text`. The attributes the
/// record carries win (a record relayed from another process keeps its
/// names); farcall's own private ones (`_farcall...`) stay behind.
pub(super) fn record_of(
    record: &Bound<'_, PyAny>,
    msg: String,
    exc_text: Option<String>,
) -> PyResult<Record> {
    let py = record.py();
    let dict = record.getattr(intern!(py, "__dict__"))?;
    let dict = dict.cast::<PyDict>()?;
    let mut fields = Map::with_capacity(dict.len() + 2);
    for (k, v) in dict.iter() {
        let Ok(key) = k.cast::<PyString>() else {
            continue;
        };
        let key = key.to_str()?;
        if !key.starts_with("_farcall") {
            fields.insert(key.to_string(), to_json(&v, 0));
        }
    }
    fields.insert("msg".into(), msg.into());
    fields.insert("exc_text".into(), exc_text.into());
    Ok(Record::from_local_map(fields))
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
        Json::Object(m) => json_dict(py, m)?.into_any().unbind(),
    })
}

fn json_dict<'py>(py: Python<'py>, m: &Map<String, Json>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in m {
        d.set_item(k, json_to_py(py, v)?)?;
    }
    Ok(d)
}

/// The attributes of a `logging.LogRecord` for `r` (for
/// `logging.makeLogRecord`).
pub(super) fn record_dict<'py>(py: Python<'py>, r: &Record) -> PyResult<Bound<'py, PyDict>> {
    json_dict(py, &r.to_map())
}
