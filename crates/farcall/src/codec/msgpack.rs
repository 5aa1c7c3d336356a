//! (being written by the codec helper)
use bytes::Bytes;
use crate::error::{Error, Result};
use crate::value::Value;
use super::{Encoded, Exporter};
pub fn encode(_v: &Value, _e: &mut dyn Exporter) -> Result<Encoded> { Err(Error::Codec("todo".into())) }
pub fn decode(_b: &Bytes) -> Result<Value> { Err(Error::Codec("todo".into())) }
