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

/// One value of a map encoded by [`encode_fields`], borrowed from wherever
/// it lives: the messages of every call are maps with string keys, and
/// building them as [`Value`]s would allocate each key and clone each
/// part only to drop them after encoding.
#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    /// A string.
    Str(&'a str),
    /// An integer.
    Int(i64),
    /// Any value.
    Value(&'a Value),
    /// A list of values.
    List(&'a [Value]),
    /// A map with string keys (keyword arguments).
    StrMap(&'a [(String, Value)]),
    /// A proxy reference, with `method` appended to its attribute path.
    Proxy {
        /// The reference.
        proxy: &'a ProxyRef,
        /// One more attribute, if any.
        method: Option<&'a str>,
    },
}

impl Field<'_> {
    /// The field as an owned value (for the formats without a fast path).
    pub fn to_value(&self) -> Value {
        match *self {
            Field::Str(s) => Value::from(s),
            Field::Int(i) => Value::Int(i),
            Field::Value(v) => v.clone(),
            Field::List(items) => Value::List(items.to_vec()),
            Field::StrMap(pairs) => Value::Map(
                pairs
                    .iter()
                    .map(|(k, v)| (Value::Str(k.clone()), v.clone()))
                    .collect(),
            ),
            Field::Proxy { proxy, method } => {
                let mut proxy = proxy.clone();
                proxy.attributes.extend(method.map(str::to_owned));
                Value::Proxy(proxy)
            }
        }
    }
}

/// Encodes the map `{key: field, ...}` in `format`, exactly as the same
/// map built as a [`Value`] would be encoded.
pub fn encode_fields(
    format: Format,
    fields: &[(&str, Field<'_>)],
    exporter: &mut dyn Exporter,
) -> Result<Encoded> {
    match format {
        Format::Msgpack => msgpack::encode_fields(fields, exporter),
        Format::Farcall => farcall::encode_fields(fields, exporter),
        Format::Json => {
            let map = Value::map(fields.iter().map(|(k, f)| (*k, f.to_value())));
            json::encode(&map, exporter)
        }
    }
}

/// Decodes a body whose top level is a map with string keys, handing each
/// entry to `field` in order, without building the map.
pub fn decode_fields(
    format: Format,
    body: &Bytes,
    buffers: &[Bytes],
    mut field: impl FnMut(&str, Value) -> Result<()>,
) -> Result<()> {
    match format {
        Format::Msgpack => msgpack::decode_fields(body, &mut field),
        Format::Farcall => farcall::decode_fields(body, buffers, &mut field),
        Format::Json => match json::decode(body)? {
            Value::Map(entries) => entries.into_iter().try_for_each(|(k, v)| match k {
                Value::Str(k) => field(&k, v),
                other => Err(Error::Codec(format!(
                    "expected a map with string keys, found a {} key",
                    other.kind()
                ))),
            }),
            other => Err(Error::Codec(format!(
                "expected a map, found {}",
                other.kind()
            ))),
        },
    }
}
