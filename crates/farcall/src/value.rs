//! The dynamic value that travels between peers.
//!
//! `Value` is the common currency of the engine: codecs turn bytes into
//! values and back, servers hand values to hosted objects, clients return
//! them to callers. It covers every type DESIGN.md lists as travelling by
//! copy, plus proxy references, plus `Object`: a local object that travels
//! by proxy (the codec exports it when it meets it).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::object::RemoteObject;

/// A shared handle to a hosted object.
pub type ObjectRef = Arc<dyn RemoteObject>;

/// A dynamically typed value.
#[derive(Clone, Default)]
pub enum Value {
    /// Python's `None`, msgpack `nil`, JSON `null`.
    #[default]
    None,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer above `i64::MAX` (smaller ones are `Int`).
    UInt(u64),
    /// A double-precision float.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// Raw bytes (shares the receive buffer when it can).
    Bytes(Bytes),
    /// A list.
    List(Vec<Value>),
    /// A tuple (kept distinct from lists between farcall peers).
    Tuple(Vec<Value>),
    /// A map with keys of any type, in insertion order.
    Map(Vec<(Value, Value)>),
    /// A naive date and time, microsecond resolution.
    DateTime(DateTime),
    /// A calendar date.
    Date(Date),
    /// An n-dimensional array (numpy's model).
    Array(Array),
    /// A reference to an object hosted by some server.
    Proxy(ProxyRef),
    /// An object of this process that travels by proxy.
    Object(ObjectRef),
}

/// A naive (timezone-less) date and time, like Python's `datetime.datetime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateTime {
    /// The date part.
    pub date: Date,
    /// Hour, 0-23.
    pub hour: u8,
    /// Minute, 0-59.
    pub minute: u8,
    /// Second, 0-59.
    pub second: u8,
    /// Microsecond, 0-999999.
    pub microsecond: u32,
}

/// A calendar date, like Python's `datetime.date`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, 1-9999.
    pub year: i32,
    /// Month, 1-12.
    pub month: u8,
    /// Day of month, 1-31.
    pub day: u8,
}

/// An n-dimensional array: element type, shape and a C-ordered buffer.
#[derive(Clone, PartialEq)]
pub struct Array {
    /// numpy's `str(dtype)`, e.g. `"float64"`, `"<U5"`, `"datetime64[ns]"`.
    pub dtype: String,
    /// Extent of each dimension.
    pub shape: Vec<usize>,
    /// The elements, C order, `shape.product() * itemsize` bytes.
    pub data: Bytes,
    /// A numpy scalar (`np.float32(1.5)`) rather than an array; its shape
    /// is empty. A 0-d array has an empty shape too, and this false.
    pub scalar: bool,
}

/// What a proxy carries: where the object lives and which one it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProxyRef {
    /// Address of the server that owns the object.
    pub rpc_addr: String,
    /// The object's id in that server's table.
    pub obj_id: u64,
    /// This reference's id (one per proxy sent, for reference counting).
    pub ref_id: u64,
    /// The object's type, as Python's `str(type(obj))`.
    pub type_str: String,
    /// Deferred attribute path below the object (`proxy.a.b` -> `["a", "b"]`).
    pub attributes: Vec<String>,
}

impl ProxyRef {
    /// True for a reference a forwarder made for its receiver
    /// (`farcall_share`, see [`crate::protocol::command::FORWARDED_REF`]):
    /// the receiver of the reply owns it.
    pub fn forwarded(&self) -> bool {
        self.ref_id & crate::protocol::command::FORWARDED_REF != 0
    }
}

impl Date {
    /// A date, checked for range.
    pub fn new(year: i32, month: u8, day: u8) -> Option<Self> {
        let valid = (1..=9999).contains(&year)
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month);
        valid.then_some(Date { year, month, day })
    }
}

impl DateTime {
    /// A date and time, checked for range.
    pub fn new(date: Date, hour: u8, minute: u8, second: u8, microsecond: u32) -> Option<Self> {
        let valid = hour < 24 && minute < 60 && second < 60 && microsecond < 1_000_000;
        valid.then_some(DateTime {
            date,
            hour,
            minute,
            second,
            microsecond,
        })
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

impl Value {
    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Map(_) => "dict",
            Value::DateTime(_) => "datetime",
            Value::Date(_) => "date",
            Value::Array(_) => "ndarray",
            Value::Proxy(_) => "proxy",
            Value::Object(_) => "object",
        }
    }

    /// Python's `str(type(v))` for the type this value stands for.
    pub fn type_str(&self) -> String {
        match self {
            Value::None => "<class 'NoneType'>".into(),
            Value::DateTime(_) => "<class 'datetime.datetime'>".into(),
            Value::Date(_) => "<class 'datetime.date'>".into(),
            Value::Array(_) => "<class 'numpy.ndarray'>".into(),
            Value::Proxy(p) => p.type_str.clone(),
            Value::Object(o) => o.type_str(),
            other => format!("<class '{}'>", other.kind()),
        }
    }

    /// Looks up `key` in a map value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Removes and returns `key` from a map value.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        match self {
            Value::Map(entries) => {
                let at = entries
                    .iter()
                    .position(|(k, _)| matches!(k, Value::Str(s) if s == key))?;
                Some(entries.remove(at).1)
            }
            _ => None,
        }
    }

    /// The string inside a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer inside an `Int` (or a small enough `UInt`).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// The elements of a `List` or `Tuple`.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// True for `Value::None`.
    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    /// Builds a map value from string keys.
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Str(k.into()), v))
                .collect(),
        )
    }

    /// Calls `f` on every proxy reference inside this value, mutably.
    pub fn visit_proxies_mut(&mut self, f: &mut dyn FnMut(&mut Value)) {
        match self {
            Value::Proxy(_) => f(self),
            Value::List(items) | Value::Tuple(items) => {
                items.iter_mut().for_each(|v| v.visit_proxies_mut(f))
            }
            Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.visit_proxies_mut(f);
                v.visit_proxies_mut(f);
            }),
            _ => {}
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (None, None) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Float(a), Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (List(a), List(b)) | (Tuple(a), Tuple(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            (DateTime(a), DateTime(b)) => a == b,
            (Date(a), Date(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            (Proxy(a), Proxy(b)) => a == b,
            (Object(a), Object(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "b{:?}", b),
            Value::List(v) => f.debug_list().entries(v).finish(),
            Value::Tuple(v) => {
                let mut t = f.debug_tuple("");
                v.iter().for_each(|x| {
                    t.field(x);
                });
                t.finish()
            }
            Value::Map(m) => f
                .debug_map()
                .entries(m.iter().map(|(k, v)| (k, v)))
                .finish(),
            Value::DateTime(d) => write!(f, "{d:?}"),
            Value::Date(d) => write!(f, "{d:?}"),
            Value::Array(a) => write!(f, "{a:?}"),
            Value::Proxy(p) => write!(f, "<proxy {} {}#{}>", p.type_str, p.rpc_addr, p.obj_id),
            Value::Object(o) => write!(f, "<local {}>", o.type_str()),
        }
    }
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "array(dtype={}, shape={:?}, {} bytes)",
            self.dtype,
            self.shape,
            self.data.len()
        )
    }
}

// ---- conversions from Rust types --------------------------------------

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::Int(v as i64) }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32, isize);

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(v),
        }
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::from(v as u64)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(v as f64)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

impl From<Bytes> for Value {
    fn from(v: Bytes) -> Self {
        Value::Bytes(v)
    }
}

impl From<()> for Value {
    fn from(_: ()) -> Self {
        Value::None
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::None, Into::into)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

impl From<ProxyRef> for Value {
    fn from(v: ProxyRef) -> Self {
        Value::Proxy(v)
    }
}

impl From<ObjectRef> for Value {
    fn from(v: ObjectRef) -> Self {
        Value::Object(v)
    }
}

impl From<Array> for Value {
    fn from(v: Array) -> Self {
        Value::Array(v)
    }
}

impl From<DateTime> for Value {
    fn from(v: DateTime) -> Self {
        Value::DateTime(v)
    }
}

impl From<Date> for Value {
    fn from(v: Date) -> Self {
        Value::Date(v)
    }
}
