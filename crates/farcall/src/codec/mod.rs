//! Codecs: values to bytes and back.
//!
//! Three formats share one interface:
//!
//! - `msgpack`: pyacq's msgpack serializer, byte for byte (tuples become
//!   lists, non-native types are maps tagged `___type_name___`).
//! - `json`: pyacq's json serializer, byte for byte (bytes and array data
//!   in base64).
//! - `farcall`: msgpack with extension types, spoken between farcall peers
//!   only: tuples stay tuples, and large buffers (bytes, array data) travel
//!   as separate frames instead of being copied into the body.
//!
//! Encoding meets `Value::Object` (a local object that travels by proxy)
//! and asks an [`Exporter`] for the proxy to send in its place.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::value::{ObjectRef, ProxyRef, Value};

mod common;
mod farcall;
mod json;
mod msgpack;

/// A serialization format, named on the wire by [`Format::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// pyacq-compatible msgpack.
    Msgpack,
    /// pyacq-compatible JSON.
    Json,
    /// farcall's own msgpack dialect (tuples, out-of-band buffers).
    Farcall,
}

impl Format {
    /// The name sent in a request's `ser_type` frame.
    pub fn name(self) -> &'static str {
        match self {
            Format::Msgpack => "msgpack",
            Format::Json => "json",
            Format::Farcall => "farcall",
        }
    }

    /// Parses a `ser_type` frame; `None` for an unknown serializer.
    pub fn from_name(name: &[u8]) -> Option<Format> {
        match name {
            b"msgpack" => Some(Format::Msgpack),
            b"json" => Some(Format::Json),
            b"farcall" => Some(Format::Farcall),
            _ => None,
        }
    }
}

/// Turns local objects met during encoding into proxies.
pub trait Exporter {
    /// Registers `obj` (or finds it) and returns the proxy to send.
    fn export(&mut self, obj: &ObjectRef) -> Result<ProxyRef>;
}

/// An exporter for contexts with no server: any local object is an error.
pub struct NoExport;

impl Exporter for NoExport {
    fn export(&mut self, obj: &ObjectRef) -> Result<ProxyRef> {
        Err(Error::Codec(format!(
            "cannot send {} by proxy: no server in this thread",
            obj.type_str()
        )))
    }
}

/// An encoded message: the body plus out-of-band buffers (farcall format
/// only; the other formats always leave `buffers` empty).
#[derive(Debug, Default)]
pub struct Encoded {
    /// The serialized body.
    pub body: Vec<u8>,
    /// Large buffers referenced from the body by index, sent as frames.
    pub buffers: Vec<Bytes>,
}

/// Encodes `value` in `format`.
pub fn encode(format: Format, value: &Value, exporter: &mut dyn Exporter) -> Result<Encoded> {
    match format {
        Format::Msgpack => msgpack::encode(value, exporter),
        Format::Json => json::encode(value, exporter),
        Format::Farcall => farcall::encode(value, exporter),
    }
}

/// Decodes a body (and its out-of-band buffers) in `format`.
pub fn decode(format: Format, body: &Bytes, buffers: &[Bytes]) -> Result<Value> {
    match format {
        Format::Msgpack => msgpack::decode(body),
        Format::Json => json::decode(body),
        Format::Farcall => farcall::decode(body, buffers),
    }
}
