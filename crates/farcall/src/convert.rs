//! Typed views of values: `FromValue` for arguments of Rust methods.
//!
//! Results go the other way through `Into<Value>` (see `value.rs`).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::value::{Array, Date, DateTime, ObjectRef, ProxyRef, Value};

/// Converts a received value into a Rust type, or explains why not.
pub trait FromValue: Sized {
    /// Takes `v` apart into `Self`; a `TypeError` when it does not fit.
    fn from_value(v: Value) -> Result<Self>;
}

fn mismatch<T>(want: &str, got: &Value) -> Result<T> {
    Err(Error::type_error(format!(
        "expected {want}, got {}",
        got.kind()
    )))
}

impl FromValue for Value {
    fn from_value(v: Value) -> Result<Self> {
        Ok(v)
    }
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: Value) -> Result<Self> {
                let n: Option<$t> = match v {
                    Value::Int(i) => <$t>::try_from(i).ok(),
                    Value::UInt(u) => <$t>::try_from(u).ok(),
                    Value::Bool(b) => Some(b as $t),
                    ref other => return mismatch("int", other),
                };
                n.ok_or_else(|| Error::exception(
                    "OverflowError",
                    concat!("integer out of range for ", stringify!($t)),
                ))
            }
        }
    )*};
}
int_from_value!(i8, i16, i32, i64, u8, u16, u32, u64, isize, usize);

impl FromValue for f64 {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Float(x) => Ok(x),
            Value::Int(i) => Ok(i as f64),
            Value::UInt(u) => Ok(u as f64),
            ref other => mismatch("float", other),
        }
    }
}

impl FromValue for f32 {
    fn from_value(v: Value) -> Result<Self> {
        f64::from_value(v).map(|x| x as f32)
    }
}

impl FromValue for bool {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Bool(b) => Ok(b),
            ref other => mismatch("bool", other),
        }
    }
}

impl FromValue for String {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Str(s) => Ok(s),
            ref other => mismatch("str", other),
        }
    }
}

impl FromValue for Bytes {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Bytes(b) => Ok(b),
            ref other => mismatch("bytes", other),
        }
    }
}

impl FromValue for () {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::None => Ok(()),
            ref other => mismatch("None", other),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::None => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::List(items) | Value::Tuple(items) => {
                items.into_iter().map(T::from_value).collect()
            }
            ref other => mismatch("list", other),
        }
    }
}

fn map_entries<K: FromValue, V: FromValue>(v: Value) -> Result<Vec<(K, V)>> {
    match v {
        Value::Map(entries) => entries
            .into_iter()
            .map(|(k, v)| Ok((K::from_value(k)?, V::from_value(v)?)))
            .collect(),
        ref other => mismatch("dict", other),
    }
}

impl<K, V> FromValue for HashMap<K, V>
where
    K: FromValue + std::hash::Hash + Eq,
    V: FromValue,
{
    fn from_value(v: Value) -> Result<Self> {
        map_entries(v).map(|e| e.into_iter().collect())
    }
}

impl<K: FromValue + Ord, V: FromValue> FromValue for BTreeMap<K, V> {
    fn from_value(v: Value) -> Result<Self> {
        map_entries(v).map(|e| e.into_iter().collect())
    }
}

macro_rules! simple_from_value {
    ($($t:ty => $variant:ident, $name:literal;)*) => {$(
        impl FromValue for $t {
            fn from_value(v: Value) -> Result<Self> {
                match v {
                    Value::$variant(x) => Ok(x),
                    ref other => mismatch($name, other),
                }
            }
        }
    )*};
}
simple_from_value! {
    Array => Array, "ndarray";
    Date => Date, "date";
    DateTime => DateTime, "datetime";
    ProxyRef => Proxy, "proxy";
    ObjectRef => Object, "object";
}

macro_rules! tuple_from_value {
    ($n:literal; $($t:ident),*) => {
        impl<$($t: FromValue),*> FromValue for ($($t,)*) {
            fn from_value(v: Value) -> Result<Self> {
                match v {
                    Value::List(items) | Value::Tuple(items) if items.len() == $n => {
                        let mut it = items.into_iter();
                        Ok(($($t::from_value(it.next().unwrap())?,)*))
                    }
                    ref other => mismatch(concat!("a sequence of ", $n), other),
                }
            }
        }
        impl<$($t: Into<Value>),*> From<($($t,)*)> for Value {
            #[allow(non_snake_case)]
            fn from(t: ($($t,)*)) -> Value {
                let ($($t,)*) = t;
                Value::Tuple(vec![$($t.into()),*])
            }
        }
    };
}
tuple_from_value!(1; A);
tuple_from_value!(2; A, B);
tuple_from_value!(3; A, B, C);
tuple_from_value!(4; A, B, C, D);

/// Takes the arguments of a call apart for a method with fixed parameters:
/// positional first, then by keyword; missing or unknown ones are a
/// `TypeError`, as in Python.
pub struct Args {
    method: &'static str,
    positional: std::vec::IntoIter<Value>,
    kwargs: Vec<(String, Value)>,
}

impl Args {
    /// Starts taking apart the arguments of a call to `method`.
    pub fn new(method: &'static str, args: Vec<Value>, kwargs: Vec<(String, Value)>) -> Self {
        Args {
            method,
            positional: args.into_iter(),
            kwargs,
        }
    }

    /// The next parameter, `name`, by position or by keyword.
    pub fn next<T: FromValue>(&mut self, name: &str) -> Result<T> {
        let value = match self.positional.next() {
            Some(v) => v,
            None => {
                let at = self.kwargs.iter().position(|(k, _)| k == name);
                match at {
                    Some(at) => self.kwargs.swap_remove(at).1,
                    None => {
                        return Err(Error::type_error(format!(
                            "{}() missing required argument: '{name}'",
                            self.method
                        )))
                    }
                }
            }
        };
        T::from_value(value).map_err(|e| match e {
            Error::Exception { type_name, message } => Error::Exception {
                type_name,
                message: format!("{}() argument '{name}': {message}", self.method),
            },
            other => other,
        })
    }

    /// Checks that no argument was left over.
    pub fn finish(mut self) -> Result<()> {
        let extra = self.positional.len();
        if extra > 0 {
            return Err(Error::type_error(format!(
                "{}() got {extra} too many positional arguments",
                self.method
            )));
        }
        if let Some((k, _)) = self.kwargs.pop() {
            return Err(Error::type_error(format!(
                "{}() got an unexpected keyword argument '{k}'",
                self.method
            )));
        }
        Ok(())
    }
}
