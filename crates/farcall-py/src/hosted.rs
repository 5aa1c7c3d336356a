//! `PyHost`: a Python object as the engine sees it (the type; how it
//! answers requests is in `host`).

use std::sync::Arc;

use farcall::{ObjectRef, Result};
use pyo3::prelude::*;

use crate::errors::from_py;

/// A Python object that peers drive through proxies.
pub struct PyHost {
    pub(crate) obj: Py<PyAny>,
    pub(crate) type_str: String,
}

impl PyHost {
    /// Wraps `obj` for hosting.
    pub fn new_ref(obj: &Bound<'_, PyAny>) -> PyResult<ObjectRef> {
        Ok(Arc::new(PyHost {
            type_str: obj.get_type().str()?.to_string(),
            obj: obj.clone().unbind(),
        }))
    }

    /// The hosted Python object.
    pub fn object(&self) -> &Py<PyAny> {
        &self.obj
    }

    /// Runs `f` with the GIL and the object, turning a Python exception
    /// into the error sent back to the caller.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<T>) -> Result<T> {
        crate::gil::attach(|py| f(self.obj.bind(py)).map_err(|e| from_py(py, e)))
    }
}
