//! Call hooks from Python (teleprox 2.2.1): a provider of extra options
//! for every outgoing call, and a hook returning a context manager that
//! every incoming call runs in. The engine keeps and applies both
//! (`farcall::hooks`); this module only turns Python callables into them.

use std::sync::Arc;

use farcall::hooks::{self, CallHook};
use farcall::object::Kwargs;
use farcall::{Error, Value};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{to_py, Mode, Outgoing, Ownership};
use crate::errors;

/// Calls the Python provider: its dict (or None) as the call's options.
fn provided(provider: &Py<PyAny>) -> farcall::Result<Kwargs> {
    crate::gil::attach(|py| {
        // A local error, raised to the caller as what it is.
        let local = |e: PyErr| {
            let type_name = e
                .get_type(py)
                .name()
                .map_or_else(|_| "Exception".into(), |n| n.to_string());
            Error::exception(
                type_name,
                format!("in the call opts provider: {}", e.value(py)),
            )
        };
        let opts = provider.call0(py).map_err(local)?;
        let opts = opts.bind(py);
        if opts.is_none() {
            return Ok(Vec::new());
        }
        let Ok(opts) = opts.cast::<PyDict>() else {
            return Err(Error::type_error(format!(
                "the call opts provider must return a dict or None, not {}",
                opts.get_type()
                    .name()
                    .map_or_else(|_| "?".into(), |n| n.to_string())
            )));
        };
        Outgoing::new(Mode::Auto).kwargs(Some(opts)).map_err(local)
    })
}

/// A Python hook: `hook(opts)` returns a context manager the call runs in.
struct PyHook(Py<PyAny>);

impl CallHook for PyHook {
    fn around(
        &self,
        context: &Kwargs,
        call: Box<dyn FnOnce() -> farcall::Result<Value> + '_>,
    ) -> farcall::Result<Value> {
        crate::gil::attach(|py| {
            let fail = |e: PyErr| errors::from_py(py, e);
            let opts = PyDict::new(py);
            for (name, value) in context {
                opts.set_item(
                    name,
                    to_py(py, value.clone(), Ownership::Borrowed).map_err(fail)?,
                )
                .map_err(fail)?;
            }
            let manager = self.0.call1(py, (opts,)).map_err(fail)?;
            let manager = manager.bind(py);
            manager.call_method0("__enter__").map_err(fail)?;
            // The failure of a call is logged inside it: synchronously here,
            // so the record is made while the context is current.
            let result = crate::log::inline(call);
            let (kind, value) = match &result {
                Ok(_) => (py.None(), py.None()),
                Err(e) => {
                    let exc = exception_of(py, e);
                    (
                        exc.get_type(py).into_any().unbind(),
                        exc.into_value(py).into_any(),
                    )
                }
            };
            manager
                .call_method1("__exit__", (kind, value, py.None()))
                .map_err(fail)?;
            result
        })
    }
}

/// The Python exception an engine error of a call would raise (for
/// `__exit__`; the engine keeps the error itself).
fn exception_of(py: Python<'_>, e: &Error) -> PyErr {
    match e {
        Error::Remote {
            type_name,
            traceback,
        } => errors::to_py(
            py,
            Error::Remote {
                type_name: type_name.clone(),
                traceback: traceback.clone(),
            },
        ),
        other => pyo3::exceptions::PyRuntimeError::new_err(other.to_string()),
    }
}

/// Sets the process's provider of extra options for every outgoing call
/// (`fn() -> dict | None`; None removes it).
pub fn set_call_opts_provider(provider: Option<Py<PyAny>>) {
    hooks::set_call_opts_provider(
        provider.map(|p| -> hooks::OptsProvider { Arc::new(move || provided(&p)) }),
    );
}

/// Sets the process's hook around every incoming call (`hook(opts)`
/// returns a context manager; None removes it).
pub fn set_call_context_hook(hook: Option<Py<PyAny>>) {
    hooks::set_call_context_hook(hook.map(|h| -> Arc<dyn CallHook> { Arc::new(PyHook(h)) }));
}
