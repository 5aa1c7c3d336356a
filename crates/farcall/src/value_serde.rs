//! (being written) serde bridge
use crate::{Result, Value, Error};
/// Converts any serde-serializable value into a `Value`.
pub fn to_value<T: serde::Serialize>(_v: &T) -> Result<Value> { Err(Error::Codec("todo".into())) }
/// Converts a `Value` into any deserializable type.
pub fn from_value<T: serde::de::DeserializeOwned>(_v: Value) -> Result<T> { Err(Error::Codec("todo".into())) }
