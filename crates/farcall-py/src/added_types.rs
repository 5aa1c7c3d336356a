//! Types added with `farcall.serializer.add_type`, in calls too: an object
//! of such a type travels as the tagged map `{"___type_name___": name,
//! "data": encode(obj)}` and a received one is decoded back. The table
//! lives in `farcall.serializer`; until that module is imported no type is
//! added and nothing here runs Python code.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

/// `farcall.serializer`, once some code imported it.
fn serializer(py: Python<'_>) -> PyResult<Option<Bound<'_, PyModule>>> {
    static MODULES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    let modules = MODULES.get_or_try_init(py, || -> PyResult<_> {
        Ok(PyModule::import(py, "sys")?
            .getattr("modules")?
            .cast_into::<PyDict>()?
            .unbind())
    })?;
    match modules.bind(py).get_item("farcall.serializer")? {
        Some(m) => Ok(Some(m.cast_into::<PyModule>()?)),
        None => Ok(None),
    }
}

/// `(name, data)` when `obj` is of an added type.
pub fn encode<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<(String, Bound<'py, PyAny>)>> {
    let Some(module) = serializer(obj.py())? else {
        return Ok(None);
    };
    let found = module.call_method1("_wire_encoding", (obj,))?;
    if found.is_none() {
        return Ok(None);
    }
    let (name, data): (String, Bound<'py, PyAny>) = found.extract()?;
    Ok(Some((name, data)))
}

/// The decode function of the type added as `name`, if there is one.
pub fn decoder<'py>(py: Python<'py>, name: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Some(module) = serializer(py)? else {
        return Ok(None);
    };
    let found = module.call_method1("_wire_decoder", (name,))?;
    Ok((!found.is_none()).then_some(found))
}
