//! Python objects hosted by the engine's server.
//!
//! [`PyHost`] is the engine's view of a Python object: each request takes
//! the GIL only while Python code runs. [`PyRuntime`] gives the server
//! real imports and real Python objects for values returned by proxy.

use std::any::Any;

use farcall::{Kwargs, ObjectRef, RemoteObject, Result, Runtime, Value};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::convert::{to_py, Mode, Outgoing, Ownership};
use crate::errors::from_py;
use crate::hosted::PyHost;

/// Arguments of a request as Python objects (proxies borrowed: the caller
/// owns their references).
fn py_args<'py>(
    py: Python<'py>,
    args: Vec<Value>,
    kwargs: Kwargs,
) -> PyResult<(Bound<'py, PyTuple>, Option<Bound<'py, PyDict>>)> {
    let args = args
        .into_iter()
        .map(|v| to_py(py, v, Ownership::Borrowed))
        .collect::<PyResult<Vec<_>>>()?;
    let args = PyTuple::new(py, args)?;
    if kwargs.is_empty() {
        return Ok((args, None));
    }
    let dict = PyDict::new(py);
    for (k, v) in kwargs {
        dict.set_item(k, to_py(py, v, Ownership::Borrowed)?)?;
    }
    Ok((args, Some(dict)))
}

fn result(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    Outgoing::result(Mode::Auto).value(obj)
}

/// Special methods a proxy forwards, run through the `operator` module (or
/// a builtin) so that Python's operand rules apply on the remote side:
/// (module, function, operands reversed).
fn operator_function(name: &str) -> Option<(&'static str, &'static str, bool)> {
    let (func, reflected) = match name {
        "__add__" => ("add", false),
        "__sub__" => ("sub", false),
        "__mul__" => ("mul", false),
        "__matmul__" => ("matmul", false),
        "__truediv__" => ("truediv", false),
        "__floordiv__" => ("floordiv", false),
        "__mod__" => ("mod", false),
        "__pow__" => ("pow", false),
        "__lshift__" => ("lshift", false),
        "__rshift__" => ("rshift", false),
        "__and__" => ("and_", false),
        "__or__" => ("or_", false),
        "__xor__" => ("xor", false),
        "__radd__" => ("add", true),
        "__rsub__" => ("sub", true),
        "__rmul__" => ("mul", true),
        "__rmatmul__" => ("matmul", true),
        "__rtruediv__" => ("truediv", true),
        "__rfloordiv__" => ("floordiv", true),
        "__rmod__" => ("mod", true),
        "__rpow__" => ("pow", true),
        "__rlshift__" => ("lshift", true),
        "__rrshift__" => ("rshift", true),
        "__rand__" => ("and_", true),
        "__ror__" => ("or_", true),
        "__rxor__" => ("xor", true),
        "__iadd__" => ("iadd", false),
        "__isub__" => ("isub", false),
        "__imul__" => ("imul", false),
        "__imatmul__" => ("imatmul", false),
        "__itruediv__" => ("itruediv", false),
        "__ifloordiv__" => ("ifloordiv", false),
        "__imod__" => ("imod", false),
        "__ipow__" => ("ipow", false),
        "__ilshift__" => ("ilshift", false),
        "__irshift__" => ("irshift", false),
        "__iand__" => ("iand", false),
        "__ior__" => ("ior", false),
        "__ixor__" => ("ixor", false),
        "__eq__" => ("eq", false),
        "__ne__" => ("ne", false),
        "__lt__" => ("lt", false),
        "__le__" => ("le", false),
        "__gt__" => ("gt", false),
        "__ge__" => ("ge", false),
        "__neg__" => ("neg", false),
        "__pos__" => ("pos", false),
        "__abs__" => ("abs", false),
        "__invert__" => ("invert", false),
        "__contains__" => ("contains", false),
        "__bool__" => ("truth", false),
        "__len__" => return Some(("builtins", "len", false)),
        "__iter__" => return Some(("builtins", "iter", false)),
        "__next__" => return Some(("builtins", "next", false)),
        _ => return None,
    };
    Some(("operator", func, reflected))
}

/// `obj(*args, **kwargs)`.
fn call_py<'py>(
    obj: &Bound<'py, PyAny>,
    args: Vec<Value>,
    kwargs: Kwargs,
) -> PyResult<Bound<'py, PyAny>> {
    let (args, kwargs) = py_args(obj.py(), args, kwargs)?;
    obj.call(args, kwargs.as_ref())
}

/// `obj.name(*args, **kwargs)`, the special methods a proxy forwards run
/// as [`operator_function`] says.
fn call_method_py<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    args: Vec<Value>,
    kwargs: Kwargs,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let (args, kwargs) = py_args(py, args, kwargs)?;
    if let Some((module, func, reflected)) = operator_function(name) {
        let op = PyModule::import(py, module)?.getattr(func)?;
        let mut operands = vec![obj.clone()];
        operands.extend(args.iter());
        if reflected {
            operands.reverse();
        }
        return op.call1(PyTuple::new(py, operands)?);
    }
    obj.getattr(name)?.call(args, kwargs.as_ref())
}

impl RemoteObject for PyHost {
    fn type_str(&self) -> String {
        self.type_str.clone()
    }

    fn call(&self, args: Vec<Value>, kwargs: Kwargs) -> Result<Value> {
        self.with(|obj| result(&call_py(obj, args, kwargs)?))
    }

    fn call_object(&self, args: Vec<Value>, kwargs: Kwargs) -> Result<ObjectRef> {
        self.with(|obj| PyHost::new_ref(&call_py(obj, args, kwargs)?))
    }

    fn call_method(&self, name: &str, mut args: Vec<Value>, kwargs: Kwargs) -> Result<Value> {
        if let Some(r) = farcall::object::call_special(self, name, &mut args) {
            return r;
        }
        self.with(|obj| result(&call_method_py(obj, name, args, kwargs)?))
    }

    fn call_method_object(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Kwargs,
    ) -> Result<ObjectRef> {
        // The attribute and item lookups a proxy sends, kept as the very
        // objects they find.
        if let ("__getattr__" | "__getattribute__", [Value::Str(attr)]) = (name, args.as_slice()) {
            return self.get_attr_object(attr);
        }
        self.with(|obj| {
            let py = obj.py();
            let raw = match (name, args.as_slice()) {
                ("__getitem__", [_]) => {
                    let key = args.into_iter().next().expect("one argument");
                    obj.get_item(to_py(py, key, Ownership::Borrowed)?)?
                }
                _ => call_method_py(obj, name, args, kwargs)?,
            };
            PyHost::new_ref(&raw)
        })
    }

    fn get_attr(&self, name: &str) -> Result<Value> {
        self.with(|obj| result(&obj.getattr(name)?))
    }

    fn get_attr_object(&self, name: &str) -> Result<ObjectRef> {
        self.with(|obj| PyHost::new_ref(&obj.getattr(name)?))
    }

    fn set_attr(&self, name: &str, value: Value) -> Result<()> {
        self.with(|obj| obj.setattr(name, to_py(obj.py(), value, Ownership::Borrowed)?))
    }

    fn get_item(&self, key: Value) -> Result<Value> {
        self.with(|obj| result(&obj.get_item(to_py(obj.py(), key, Ownership::Borrowed)?)?))
    }

    fn set_item(&self, key: Value, value: Value) -> Result<()> {
        self.with(|obj| {
            let py = obj.py();
            obj.set_item(
                to_py(py, key, Ownership::Borrowed)?,
                to_py(py, value, Ownership::Borrowed)?,
            )
        })
    }

    fn to_value(&self) -> Result<Value> {
        self.with(|obj| Outgoing::new(Mode::Copy).value(obj))
    }

    fn auto_value(&self) -> Option<Result<Value>> {
        Some(self.with(result))
    }

    fn identity(&self) -> usize {
        self.obj.as_ptr() as usize
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Python as the server's runtime: real imports, real objects.
pub struct PyRuntime;

impl Runtime for PyRuntime {
    fn import(&self, module: &str) -> Result<Value> {
        Python::attach(|py| {
            let m = PyModule::import(py, "importlib")?
                .getattr("import_module")?
                .call1((module,))?;
            Ok(Value::Object(PyHost::new_ref(&m)?))
        })
        .map_err(|e: PyErr| Python::attach(|py| from_py(py, e)))
    }

    fn free(&self, obj: ObjectRef) {
        crate::gil::attach(|_py| drop(obj));
    }

    fn host_value(&self, value: Value) -> Result<ObjectRef> {
        Python::attach(|py| {
            let obj = to_py(py, value, Ownership::Borrowed)?;
            PyHost::new_ref(obj.bind(py))
        })
        .map_err(|e: PyErr| Python::attach(|py| from_py(py, e)))
    }
}
