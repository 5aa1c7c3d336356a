//! pyacq's msgpack serializer, byte for byte.
//!
//! Encoding produces what `msgpack.dumps(obj, use_bin_type=True,
//! default=pyacq_encode)` produces: shortest int, str, bin, array and map
//! headers, floats always as float64, tuples as arrays, and the types
//! msgpack lacks as maps tagged `___type_name___` (see docs/encodings.md).
//! Decoding accepts any standard msgpack without ext types and turns the
//! tagged maps back into values.

use bytes::Bytes;

use super::common::{
    check_array, check_date, check_datetime, format_date, format_datetime, untag, write_array_len,
    write_attributes, write_bin, write_bool, write_f64, write_int, write_map_len, write_nil,
    write_str, write_uint, Dialect, EncodeValue, Reader, TYPE_KEY,
};
use super::{Encoded, Exporter, Field};
use crate::error::{Error, Result};
use crate::value::{Array, ProxyRef, Value};

/// Encodes `value` as pyacq's msgpack serializer would.
pub fn encode(value: &Value, exporter: &mut dyn Exporter) -> Result<Encoded> {
    let mut enc = Encoder {
        out: Vec::with_capacity(128),
        exporter,
    };
    enc.value(value, 0)?;
    Ok(Encoded {
        body: enc.out,
        buffers: Vec::new(),
    })
}

/// Encodes the map `{key: field, ...}` (see `codec::encode_fields`).
pub fn encode_fields(fields: &[(&str, Field<'_>)], exporter: &mut dyn Exporter) -> Result<Encoded> {
    let mut enc = Encoder {
        out: Vec::with_capacity(128),
        exporter,
    };
    enc.fields(fields)?;
    Ok(Encoded {
        body: enc.out,
        buffers: Vec::new(),
    })
}

/// Decodes a top-level map entry by entry (see `codec::decode_fields`).
pub fn decode_fields(body: &Bytes, field: &mut dyn FnMut(&str, Value) -> Result<()>) -> Result<()> {
    Reader::new(body).fields(&mut Pyacq, field)
}

/// Decodes one msgpack value that must span all of `body`.
pub fn decode(body: &Bytes) -> Result<Value> {
    let mut r = Reader::new(body);
    let value = r.value(&mut Pyacq, 0)?;
    r.finish()?;
    Ok(value)
}

/// The decoding rules of pyacq's format: no ext types, tagged maps.
struct Pyacq;

impl Dialect for Pyacq {
    fn ext(&mut self, _: &mut Reader<'_>, ty: i8, _: usize, _: usize) -> Result<Value> {
        Err(Error::Codec(format!(
            "msgpack ext type {ty} is not used by the msgpack format"
        )))
    }

    fn map(&mut self, entries: Vec<(Value, Value)>, depth: usize) -> Result<Value> {
        untag(entries, depth)
    }
}

struct Encoder<'e> {
    out: Vec<u8>,
    exporter: &'e mut dyn Exporter,
}

impl EncodeValue for Encoder<'_> {
    fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    fn value(&mut self, value: &Value, depth: usize) -> Result<()> {
        let out = &mut self.out;
        match value {
            Value::None => write_nil(out),
            Value::Bool(b) => write_bool(out, *b),
            Value::Int(i) => write_int(out, *i),
            Value::UInt(u) => write_uint(out, *u),
            Value::Float(x) => write_f64(out, *x),
            Value::Str(s) => write_str(out, s)?,
            Value::Bytes(b) => write_bin(out, b)?,
            Value::List(items) | Value::Tuple(items) => self.seq(items, depth)?,
            Value::Map(entries) => self.map(entries, depth)?,
            Value::DateTime(dt) => {
                check_datetime(dt)?;
                self.text_tagged("datetime", &format_datetime(dt))?;
            }
            Value::Date(d) => {
                check_date(d)?;
                self.text_tagged("date", &format_date(d))?;
            }
            Value::Array(a) => self.array(a)?,
            Value::Proxy(p) => self.proxy(p, None)?,
            Value::Object(obj) => {
                let proxy = self.exporter.export(obj)?;
                self.proxy(&proxy, None)?;
            }
        }
        Ok(())
    }

    fn proxy(&mut self, p: &ProxyRef, method: Option<&str>) -> Result<()> {
        self.tagged("proxy", 5)?;
        let out = &mut self.out;
        // pyacq's addresses are bytes, so rpc_addr travels as bin.
        write_str(out, "rpc_addr")?;
        write_bin(out, p.rpc_addr.as_bytes())?;
        write_str(out, "obj_id")?;
        write_uint(out, p.obj_id);
        write_str(out, "ref_id")?;
        write_uint(out, p.ref_id);
        write_str(out, "type_str")?;
        write_str(out, &p.type_str)?;
        write_str(out, "attributes")?;
        write_attributes(out, &p.attributes, method)
    }
}

impl Encoder<'_> {
    /// Starts a map tagged `tag` that has `fields` more entries.
    fn tagged(&mut self, tag: &str, fields: usize) -> Result<()> {
        write_map_len(&mut self.out, fields + 1)?;
        write_str(&mut self.out, TYPE_KEY)?;
        write_str(&mut self.out, tag)
    }

    /// A tagged map whose only field is `'data': text` (dates).
    fn text_tagged(&mut self, tag: &str, text: &str) -> Result<()> {
        self.tagged(tag, 1)?;
        write_str(&mut self.out, "data")?;
        write_str(&mut self.out, text)
    }

    fn array(&mut self, a: &Array) -> Result<()> {
        check_array(&a.dtype, &a.shape, a.data.len())?;
        self.tagged("ndarray", 3)?;
        let out = &mut self.out;
        write_str(out, "data")?;
        write_bin(out, &a.data)?;
        write_str(out, "dtype")?;
        write_str(out, &a.dtype)?;
        write_str(out, "shape")?;
        write_array_len(out, a.shape.len())?;
        a.shape.iter().for_each(|&n| write_uint(out, n as u64));
        Ok(())
    }
}
