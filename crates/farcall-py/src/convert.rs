//! Python objects to engine values and back, written once, here.
//!
//! Outgoing, an object travels by copy when its *exact* type is one the
//! wire carries (None, bool, int, float, str, bytes, list, tuple, dict,
//! datetime, date, numpy arrays and scalars, proxies) and by proxy
//! otherwise (`Value::Object`, exported by the sending server). A subclass
//! such as `OrderedDict` stays remote; [`Mode::Copy`] copies it instead
//! (what `return_type="value"` and `_get_value()` ask for).
//!
//! Incoming, values become the matching Python objects; proxies become
//! `ObjectProxy`s, except a proxy to an object of this thread's server or
//! of this process's own link host, which comes home as the object itself.

use bytes::Bytes;
use farcall::{Array, Client, Date, DateTime, Host, ObjectRef, Value};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDate, PyDateAccess, PyDateTime, PyDict, PyFloat, PyInt, PyList,
    PySlice, PyString, PyTimeAccess, PyTuple, PyType, PyTzInfoAccess,
};

use crate::buffer::{pinned_bytes, RecvBuffer};
use crate::hosted::PyHost;
use crate::proxy::ObjectProxy;

/// How an object that is not of a natively carried type travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// By proxy (`return_type="auto"`, arguments).
    Auto,
    /// By copy where at all possible: subclasses of carried types are
    /// copied as their base type (`return_type="value"`).
    Copy,
}

/// Deepest nesting converted; deeper (or self-referencing) containers are
/// refused instead of overflowing the stack.
const MAX_DEPTH: usize = 256;

/// Converts outgoing Python objects.
pub struct Outgoing<'a, 'py> {
    /// The mode for objects of other types.
    pub mode: Mode,
    /// Types that always go by copy (`no_proxy_types`), if any.
    pub no_proxy: Option<&'a Bound<'py, PyAny>>,
    /// Converting the result of a request (a reply), not arguments: third
    /// processes' proxies get references of the receiver's own.
    pub result: bool,
}

impl<'py> Outgoing<'_, 'py> {
    /// Converts with `mode` and no `no_proxy_types`.
    pub fn new(mode: Mode) -> Self {
        Outgoing {
            mode,
            no_proxy: None,
            result: false,
        }
    }

    /// Converts the result of a request (see [`farcall::Link::forward`]).
    pub fn result(mode: Mode) -> Self {
        Outgoing {
            result: true,
            ..Outgoing::new(mode)
        }
    }

    /// Converts `obj` to a value.
    pub fn value(&self, obj: &Bound<'py, PyAny>) -> PyResult<Value> {
        self.convert(obj, 0)
    }

    /// Converts a sequence of arguments.
    pub fn values(&self, items: &Bound<'py, PyTuple>) -> PyResult<Vec<Value>> {
        items.iter().map(|o| self.convert(&o, 0)).collect()
    }

    /// Converts keyword arguments.
    pub fn kwargs(&self, kwargs: Option<&Bound<'py, PyDict>>) -> PyResult<Vec<(String, Value)>> {
        let Some(kwargs) = kwargs else {
            return Ok(Vec::new());
        };
        kwargs
            .iter()
            .map(|(k, v)| Ok((k.extract::<String>()?, self.convert(&v, 0)?)))
            .collect()
    }

    fn convert(&self, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<Value> {
        if depth > MAX_DEPTH {
            return Err(PyValueError::new_err(format!(
                "cannot send a value nested deeper than {MAX_DEPTH} levels (or containing itself)"
            )));
        }
        if let Some(v) = self.exact(obj, depth)? {
            return Ok(v);
        }
        if let Some((name, data)) = crate::added_types::encode(obj)? {
            return Ok(Value::map([
                (TYPE_TAG, Value::from(name)),
                ("data", self.convert(&data, depth + 1)?),
            ]));
        }
        let never_proxy = match self.no_proxy {
            Some(types) => obj.is_instance(types)?,
            None => false,
        };
        if self.mode == Mode::Copy || never_proxy {
            if let Some(v) = self.subclass(obj, depth)? {
                return Ok(v);
            }
            let why = match never_proxy {
                true => " (its type is in no_proxy_types, and it cannot be copied)",
                false => "",
            };
            return Err(PyTypeError::new_err(format!(
                "cannot send {} by value{why}",
                obj.get_type().str()?
            )));
        }
        Ok(Value::Object(PyHost::new_ref(obj)?))
    }

    /// Objects whose exact type the wire carries.
    fn exact(&self, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<Option<Value>> {
        Ok(Some(if obj.is_exact_instance_of::<PyInt>() {
            int_value(obj)?
        } else if obj.is_exact_instance_of::<PyString>() {
            Value::Str(obj.cast::<PyString>()?.to_str()?.to_owned())
        } else if obj.is_exact_instance_of::<PyFloat>() {
            Value::Float(obj.cast::<PyFloat>()?.value())
        } else if obj.is_none() {
            Value::None
        } else if obj.is_exact_instance_of::<PyBool>() {
            Value::Bool(obj.is_truthy()?)
        } else if obj.is_exact_instance_of::<PyList>() {
            Value::List(self.items(obj, depth)?)
        } else if obj.is_exact_instance_of::<PyTuple>() {
            Value::Tuple(self.items(obj, depth)?)
        } else if obj.is_exact_instance_of::<PyDict>() {
            self.dict(obj.cast::<PyDict>()?, depth)?
        } else if obj.is_exact_instance_of::<PyBytes>() {
            Value::Bytes(pinned_bytes(obj.cast::<PyBytes>()?))
        } else if let Ok(proxy) = obj.cast::<ObjectProxy>() {
            let reference = proxy.get().reference();
            // A result that passes a third process's proxy on gets a
            // reference of the receiver's own while ours is still held.
            let own = match self.result {
                true => farcall::Link::forward(reference),
                false => None,
            };
            Value::Proxy(own.unwrap_or_else(|| reference.clone()))
        } else if let Ok(slice) = obj.cast::<PySlice>() {
            // `remote_list[1:3]`: slices are small and travel by copy, as
            // a tagged map (the convention pyacq's formats use for types
            // msgpack lacks).
            let part = |name| -> PyResult<Value> { self.convert(&slice.getattr(name)?, depth + 1) };
            Value::map([
                (TYPE_TAG, Value::from("slice")),
                ("start", part("start")?),
                ("stop", part("stop")?),
                ("step", part("step")?),
            ])
        } else if obj.is_exact_instance_of::<PyDateTime>() {
            match datetime_value(obj.cast::<PyDateTime>()?)? {
                Some(v) => v,
                None => return Ok(None),
            }
        } else if obj.is_exact_instance_of::<PyDate>() {
            date_value(obj.cast::<PyDate>()?)?
        } else if let Some(np) = numpy_if_loaded(obj.py())? {
            if obj.get_type().is(np.ndarray(obj.py())) {
                match array_value(obj, false)? {
                    Some(v) => v,
                    None => return Ok(None),
                }
            } else if obj.is_instance(np.generic(obj.py()))? {
                let arr = np.module(obj.py()).call_method1("asarray", (obj,))?;
                match array_value(&arr, true)? {
                    Some(v) => v,
                    None => return Ok(None),
                }
            } else {
                return Ok(None);
            }
        } else {
            return Ok(None);
        }))
    }

    /// Instances of subclasses of carried types, copied as the base type.
    fn subclass(&self, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<Option<Value>> {
        Ok(Some(if let Ok(d) = obj.cast::<PyDict>() {
            self.dict(d, depth)?
        } else if obj.is_instance_of::<PyList>() {
            Value::List(self.items(obj, depth)?)
        } else if obj.is_instance_of::<PyTuple>() {
            Value::Tuple(self.items(obj, depth)?)
        } else if obj.is_instance_of::<PyBool>() {
            Value::Bool(obj.is_truthy()?)
        } else if obj.is_instance_of::<PyInt>() {
            int_value(obj)?
        } else if let Ok(f) = obj.cast::<PyFloat>() {
            Value::Float(f.value())
        } else if let Ok(s) = obj.cast::<PyString>() {
            Value::Str(s.to_str()?.to_owned())
        } else if let Ok(b) = obj.cast::<PyBytes>() {
            Value::Bytes(Bytes::copy_from_slice(b.as_bytes()))
        } else if let Ok(b) = obj.cast::<PyByteArray>() {
            Value::Bytes(Bytes::from(b.to_vec()))
        } else if let Ok(dt) = obj.cast::<PyDateTime>() {
            match datetime_value(dt)? {
                Some(v) => v,
                None => return Ok(None),
            }
        } else if let Ok(d) = obj.cast::<PyDate>() {
            date_value(d)?
        } else if let Some(np) = numpy_if_loaded(obj.py())? {
            if !obj.is_instance(np.ndarray(obj.py()))? {
                return Ok(None);
            }
            match array_value(obj, false)? {
                Some(v) => v,
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        }))
    }

    fn items(&self, seq: &Bound<'py, PyAny>, depth: usize) -> PyResult<Vec<Value>> {
        seq.try_iter()?
            .map(|item| self.convert(&item?, depth + 1))
            .collect()
    }

    fn dict(&self, dict: &Bound<'py, PyDict>, depth: usize) -> PyResult<Value> {
        let mut entries = Vec::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            entries.push((self.convert(&k, depth + 1)?, self.convert(&v, depth + 1)?));
        }
        Ok(Value::Map(entries))
    }
}

fn int_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Ok(i) = obj.extract::<i64>() {
        return Ok(Value::Int(i));
    }
    match obj.extract::<u64>() {
        Ok(u) => Ok(Value::UInt(u)),
        Err(_) => Err(pyo3::exceptions::PyOverflowError::new_err(
            "int too large to send (at most 64 bits travel)",
        )),
    }
}

/// A naive datetime; `None` for an aware one (it travels by proxy rather
/// than silently losing its time zone).
fn datetime_value(dt: &Bound<'_, PyDateTime>) -> PyResult<Option<Value>> {
    if dt.get_tzinfo().is_some() {
        return Ok(None);
    }
    let date = Date::new(dt.get_year(), dt.get_month(), dt.get_day())
        .ok_or_else(|| PyValueError::new_err("date out of range"))?;
    let v = DateTime::new(
        date,
        dt.get_hour(),
        dt.get_minute(),
        dt.get_second(),
        dt.get_microsecond(),
    )
    .ok_or_else(|| PyValueError::new_err("time out of range"))?;
    Ok(Some(Value::DateTime(v)))
}

fn date_value(d: &Bound<'_, PyDate>) -> PyResult<Value> {
    Date::new(d.get_year(), d.get_month(), d.get_day())
        .map(Value::Date)
        .ok_or_else(|| PyValueError::new_err("date out of range"))
}

// ---- numpy ---------------------------------------------------------------

/// numpy's module and the types we test against, once numpy is imported.
pub struct Numpy {
    module: Py<PyModule>,
    ndarray: Py<PyType>,
    generic: Py<PyType>,
}

impl Numpy {
    fn module<'py>(&self, py: Python<'py>) -> &Bound<'py, PyModule> {
        self.module.bind(py)
    }
    fn ndarray<'py>(&self, py: Python<'py>) -> &Bound<'py, PyType> {
        self.ndarray.bind(py)
    }
    fn generic<'py>(&self, py: Python<'py>) -> &Bound<'py, PyType> {
        self.generic.bind(py)
    }
}

static NUMPY: PyOnceLock<Numpy> = PyOnceLock::new();

/// numpy, if the program has imported it (an object cannot be an array
/// otherwise, and we never import numpy just to find out).
fn numpy_if_loaded(py: Python<'_>) -> PyResult<Option<&Numpy>> {
    if let Some(np) = NUMPY.get(py) {
        return Ok(Some(np));
    }
    let modules = PyModule::import(py, "sys")?.getattr("modules")?;
    if !modules.contains("numpy")? {
        return Ok(None);
    }
    numpy(py).map(Some)
}

/// numpy, imported if needed (an array arrived).
fn numpy(py: Python<'_>) -> PyResult<&Numpy> {
    NUMPY.get_or_try_init(py, || {
        let module = PyModule::import(py, "numpy")?;
        Ok(Numpy {
            ndarray: module.getattr("ndarray")?.cast_into::<PyType>()?.unbind(),
            generic: module.getattr("generic")?.cast_into::<PyType>()?.unbind(),
            module: module.unbind(),
        })
    })
}

/// Arrays of at least this many bytes are sent from their own memory.
const PINNED_ARRAY_MIN: usize = 64 * 1024;

/// An array by value: dtype, shape and C-ordered data (`scalar`: it
/// stands for a numpy scalar). `None` for object arrays, which can only
/// travel by proxy.
fn array_value(arr: &Bound<'_, PyAny>, scalar: bool) -> PyResult<Option<Value>> {
    let dtype = arr.getattr("dtype")?;
    if dtype.getattr("hasobject")?.is_truthy()? {
        return Ok(None);
    }
    let dtype_str = dtype.str()?.to_str()?.to_owned();
    let shape: Vec<usize> = arr.getattr("shape")?.extract()?;
    let nbytes: usize = arr.getattr("nbytes")?.extract()?;
    let data = if nbytes < PINNED_ARRAY_MIN {
        let bytes = arr.call_method1("tobytes", ())?;
        pinned_bytes(bytes.cast::<PyBytes>()?)
    } else {
        crate::buffer::pinned_array(arr, nbytes)?
    };
    Ok(Some(Value::Array(Array {
        dtype: dtype_str,
        shape,
        data,
        scalar,
    })))
}

/// A received array (or numpy scalar) over its buffer.
/// Longest structured dtype description read (a few hundred fields).
const MAX_DTYPE_TEXT: usize = 16 * 1024;

/// What `np.dtype` is given for a dtype string: the string itself, or for
/// a structured dtype (`str(dtype)` is `"[('x', '<f4'), ('y', '<i2')]"`,
/// as pyacq sends it) the list it spells, read with `ast.literal_eval`,
/// which reads literals only: nothing is ever evaluated.
fn dtype_spec<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    if !text.starts_with(['[', '(', '{']) {
        return Ok(PyString::new(py, text).into_any());
    }
    if text.len() > MAX_DTYPE_TEXT {
        return Err(PyValueError::new_err(format!(
            "a dtype description of {} bytes is longer than {MAX_DTYPE_TEXT}",
            text.len()
        )));
    }
    PyModule::import(py, "ast")?.call_method1("literal_eval", (text,))
}

fn array_object(py: Python<'_>, a: Array) -> PyResult<Py<PyAny>> {
    let np = numpy(py)?.module(py);
    let dtype = np.call_method1("dtype", (dtype_spec(py, &a.dtype)?,))?;
    let itemsize: usize = dtype.getattr("itemsize")?.extract()?;
    let count: usize = a.shape.iter().product();
    if count.checked_mul(itemsize) != Some(a.data.len()) {
        return Err(PyValueError::new_err(format!(
            "array data is {} bytes, expected {count} x {itemsize} for shape {:?}",
            a.data.len(),
            a.shape
        )));
    }
    let shape = PyTuple::new(py, &a.shape)?;
    let arr = if a.data.is_empty() {
        np.call_method1("empty", (shape, dtype))?
    } else {
        let buffer = Py::new(py, RecvBuffer::new(a.data))?;
        np.call_method1("frombuffer", (buffer, dtype))?
            .call_method1("reshape", (shape,))?
    };
    if a.scalar {
        return Ok(arr.get_item(PyTuple::empty(py))?.unbind());
    }
    Ok(arr.unbind())
}

// ---- incoming ----------------------------------------------------------

/// The key that names a tagged map's type.
const TYPE_TAG: &str = "___type_name___";

/// True for a map tagged as `type_name`.
fn is_tagged(entries: &[(Value, Value)], type_name: &str) -> bool {
    entries
        .iter()
        .any(|(k, v)| k.as_str() == Some(TYPE_TAG) && v.as_str() == Some(type_name))
}

/// The name of a map that may stand for an added type: two entries, the
/// type tag (a str) and `data`.
fn added_type(entries: &[(Value, Value)]) -> Option<&str> {
    if entries.len() != 2 || !entries.iter().any(|(k, _)| k.as_str() == Some("data")) {
        return None;
    }
    entries
        .iter()
        .find(|(k, _)| k.as_str() == Some(TYPE_TAG))
        .and_then(|(_, v)| v.as_str())
}

/// Who owns the server-side references of incoming proxies.
#[derive(Clone, Copy, Debug)]
pub enum Ownership<'a> {
    /// A reply that came through this client: a proxy to one of its
    /// peer's objects is ours (and called over its link); one the peer
    /// passed along from elsewhere is borrowed (see
    /// `farcall::Proxy::from_reply`).
    Reply(&'a Client),
    /// A request's argument: the sender owns it (see
    /// `farcall::Proxy::received`).
    Borrowed,
}

/// The host of this process a proxy of `address` comes home to: the
/// thread's server's, or the process's link host.
fn home_host(address: &str) -> Option<std::sync::Arc<Host>> {
    farcall::peer::thread_service()
        .map(|s| s.host())
        .filter(|h| h.address() == address)
        .or_else(|| Some(Host::local()).filter(|h| h.address() == address))
}

/// Converts a received value to a Python object.
pub fn to_py(py: Python<'_>, value: Value, ownership: Ownership) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::None => py.None(),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::UInt(u) => u.into_pyobject(py)?.into_any().unbind(),
        Value::Float(f) => PyFloat::new(py, f).into_any().unbind(),
        Value::Str(s) => PyString::new(py, &s).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any().unbind(),
        Value::List(items) => {
            let items = items
                .into_iter()
                .map(|v| to_py(py, v, ownership))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any().unbind()
        }
        Value::Tuple(items) => {
            let items = items
                .into_iter()
                .map(|v| to_py(py, v, ownership))
                .collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, items)?.into_any().unbind()
        }
        Value::Map(entries) if is_tagged(&entries, "slice") => {
            let get = |key: &str| {
                entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(key))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let start = to_py(py, get("start"), ownership)?;
            let stop = to_py(py, get("stop"), ownership)?;
            let step = to_py(py, get("step"), ownership)?;
            PyModule::import(py, "builtins")?
                .getattr("slice")?
                .call1((start, stop, step))?
                .unbind()
        }
        Value::Map(entries) if added_type(&entries).is_some() => {
            let name = added_type(&entries).unwrap_or_default().to_string();
            let decode = crate::added_types::decoder(py, &name)?;
            let data = entries
                .into_iter()
                .find(|(k, _)| k.as_str() == Some("data"))
                .map(|(_, v)| v)
                .unwrap_or_default();
            let data = to_py(py, data, ownership)?;
            match decode {
                Some(decode) => decode.call1((data,))?.unbind(),
                None => {
                    let dict = PyDict::new(py);
                    dict.set_item(TYPE_TAG, name)?;
                    dict.set_item("data", data)?;
                    dict.into_any().unbind()
                }
            }
        }
        Value::Map(entries) => {
            let dict = PyDict::new(py);
            for (k, v) in entries {
                let key = match k {
                    // msgpack allows list keys; Python needs them hashable.
                    Value::List(items) => to_py(py, Value::Tuple(items), ownership)?,
                    other => to_py(py, other, ownership)?,
                };
                dict.set_item(key, to_py(py, v, ownership)?)?;
            }
            dict.into_any().unbind()
        }
        Value::DateTime(d) => PyDateTime::new(
            py,
            d.date.year,
            d.date.month,
            d.date.day,
            d.hour,
            d.minute,
            d.second,
            d.microsecond,
            None,
        )?
        .into_any()
        .unbind(),
        Value::Date(d) => PyDate::new(py, d.year, d.month, d.day)?.into_any().unbind(),
        Value::Array(a) => array_object(py, a)?,
        Value::Proxy(reference) => {
            if let Some(host) = home_host(&reference.rpc_addr) {
                let local = host
                    .unwrap_proxy(&reference)
                    .map_err(|e| crate::errors::to_py(py, e))?;
                if matches!(ownership, Ownership::Reply(_)) {
                    // A reference a forwarder made for us, to our own
                    // object: we need none.
                    host.release_forwarded(&reference);
                }
                return to_py(py, local, ownership);
            }
            // One proxy per remote object while it lives (teleprox's
            // identity): a second reference to it is released again.
            let root = reference.attributes.is_empty();
            if root {
                if let Some(same) = crate::proxy::identity::lookup(py, &reference)? {
                    if let Ownership::Reply(client) = ownership {
                        drop(farcall::Proxy::from_reply(reference, client));
                    }
                    return Ok(same);
                }
            }
            let proxy = match ownership {
                Ownership::Reply(client) => farcall::Proxy::from_reply(reference, client),
                Ownership::Borrowed => farcall::Proxy::received(reference),
            };
            let owned = proxy.owns();
            let obj = Py::new(py, ObjectProxy::new(py, proxy))?.into_any();
            if root && owned {
                crate::proxy::identity::remember(py, &obj)?;
            }
            obj
        }
        Value::Object(obj) => object_to_py(py, obj)?,
    })
}

/// A local object: the Python object itself, or a proxy to a Rust one.
fn object_to_py(py: Python<'_>, obj: ObjectRef) -> PyResult<Py<PyAny>> {
    if let Some(host) = obj.as_any().downcast_ref::<PyHost>() {
        return Ok(host.object().clone_ref(py));
    }
    // Served where this thread serves (its server, or the link of the
    // request it runs), and reached through a proxy like any remote one.
    let host = farcall::peer::thread_service()
        .map(|s| s.host())
        .or_else(|| farcall::peer::current_link().map(|l| l.host().clone()));
    match host {
        Some(host) => {
            let reference = host.export(&obj, None);
            let proxy = farcall::Proxy::owning(reference);
            Ok(Py::new(py, ObjectProxy::new(py, proxy))?.into_any())
        }
        None => Err(PyTypeError::new_err(format!(
            "{} is a Rust object of this process; serve it with an RPCServer to use it",
            obj.type_str()
        ))),
    }
}
