//! farcall's own msgpack dialect, spoken between farcall peers only.
//!
//! Standard msgpack plus ext types for what plain msgpack lacks, so nothing
//! needs pyacq's tagged maps (a user's map with a `___type_name___` key
//! stays a map):
//!
//! | ext | type     | payload                                                  |
//! |-----|----------|----------------------------------------------------------|
//! | 1   | tuple    | a msgpack array of the items                             |
//! | 2   | datetime | 8 bytes, big-endian bit fields (see [`pack_datetime`])   |
//! | 3   | date     | 4 bytes, big-endian bit fields (see [`pack_date`])       |
//! | 4   | proxy    | `[rpc_addr, obj_id, ref_id, type_str, [attributes...]]`  |
//! | 5   | ndarray  | `[dtype, [shape...], data]`, data a bin or buffer index  |
//! | 6   | bytes    | a buffer index (an unsigned int)                         |
//! | 7   | scalar   | a numpy scalar: as ndarray, with an empty shape          |
//!
//! Bytes and array data of [`OUT_OF_BAND_MIN`] bytes or more are not copied
//! into the body: the `Bytes` is pushed to [`Encoded::buffers`] (sharing
//! its memory) and the body names it by index; the transport sends each
//! buffer as a frame of its own.

use bytes::Bytes;

use super::common::{
    array, check_array, check_date, check_datetime, check_depth, err, id_from, shape_from,
    write_array_len, write_attributes, write_bin, write_bool, write_f64, write_int, write_nil,
    write_str, write_uint, Dialect, EncodeValue, Reader,
};
use super::{Encoded, Exporter, Field};
use crate::error::Result;
use crate::value::{Array, Date, DateTime, ProxyRef, Value};

/// Bytes and array data at least this long travel as out-of-band buffers.
pub const OUT_OF_BAND_MIN: usize = 64 * 1024;

const EXT_TUPLE: i8 = 1;
const EXT_DATETIME: i8 = 2;
const EXT_DATE: i8 = 3;
const EXT_PROXY: i8 = 4;
const EXT_NDARRAY: i8 = 5;
const EXT_BUFFER: i8 = 6;
const EXT_SCALAR: i8 = 7;

/// Encodes `value`; large buffers go to [`Encoded::buffers`] uncopied.
pub fn encode(value: &Value, exporter: &mut dyn Exporter) -> Result<Encoded> {
    let mut enc = Encoder {
        out: Vec::with_capacity(128),
        buffers: Vec::new(),
        exporter,
    };
    enc.value(value, 0)?;
    Ok(Encoded {
        body: enc.out,
        buffers: enc.buffers,
    })
}

/// Encodes the map `{key: field, ...}` (see `codec::encode_fields`).
pub fn encode_fields(fields: &[(&str, Field<'_>)], exporter: &mut dyn Exporter) -> Result<Encoded> {
    let mut enc = Encoder {
        out: Vec::with_capacity(128),
        buffers: Vec::new(),
        exporter,
    };
    enc.fields(fields)?;
    Ok(Encoded {
        body: enc.out,
        buffers: enc.buffers,
    })
}

/// Decodes a top-level map entry by entry (see `codec::decode_fields`).
pub fn decode_fields(
    body: &Bytes,
    buffers: &[Bytes],
    field: &mut dyn FnMut(&str, Value) -> Result<()>,
) -> Result<()> {
    Reader::new(body).fields(&mut Farcall { buffers }, field)
}

/// Decodes a body whose buffer indices refer to `buffers`.
pub fn decode(body: &Bytes, buffers: &[Bytes]) -> Result<Value> {
    let mut r = Reader::new(body);
    let value = r.value(&mut Farcall { buffers }, 0)?;
    r.finish()?;
    Ok(value)
}

// ---- encoding ----------------------------------------------------------

struct Encoder<'e> {
    out: Vec<u8>,
    buffers: Vec<Bytes>,
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
            Value::Bytes(b) if b.len() >= OUT_OF_BAND_MIN => {
                self.ext(EXT_BUFFER, |e| e.data(b))?;
            }
            Value::Bytes(b) => write_bin(out, b)?,
            Value::List(items) => self.seq(items, depth)?,
            Value::Tuple(items) => self.ext(EXT_TUPLE, |e| e.seq(items, depth))?,
            Value::Map(entries) => self.map(entries, depth)?,
            Value::DateTime(dt) => {
                check_datetime(dt)?;
                out.extend_from_slice(&[0xd7, EXT_DATETIME as u8]);
                out.extend_from_slice(&pack_datetime(dt).to_be_bytes());
            }
            Value::Date(d) => {
                check_date(d)?;
                out.extend_from_slice(&[0xd6, EXT_DATE as u8]);
                out.extend_from_slice(&pack_date(d).to_be_bytes());
            }
            Value::Array(a) if a.scalar => self.ext(EXT_SCALAR, |e| e.array(a))?,
            Value::Array(a) => self.ext(EXT_NDARRAY, |e| e.array(a))?,
            Value::Proxy(p) => self.proxy(p, None)?,
            Value::Object(obj) => {
                let proxy = self.exporter.export(obj)?;
                self.proxy(&proxy, None)?;
            }
        }
        Ok(())
    }

    fn proxy(&mut self, p: &ProxyRef, method: Option<&str>) -> Result<()> {
        self.ext(EXT_PROXY, |e| {
            let out = &mut e.out;
            write_array_len(out, 5)?;
            write_str(out, &p.rpc_addr)?;
            write_uint(out, p.obj_id);
            write_uint(out, p.ref_id);
            write_str(out, &p.type_str)?;
            write_attributes(out, &p.attributes, method)
        })
    }
}

impl Encoder<'_> {
    /// Writes an ext of type `ty` whose payload `payload` writes. The
    /// length is unknown until then, so an ext32 header is written first
    /// and patched after: one pass, no second buffer.
    fn ext(&mut self, ty: i8, payload: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        self.out.extend_from_slice(&[0xc9, 0, 0, 0, 0, ty as u8]);
        let start = self.out.len();
        payload(self)?;
        let Ok(len) = u32::try_from(self.out.len() - start) else {
            return err("ext payload longer than 4 GiB");
        };
        self.out[start - 5..start - 1].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Binary data: inline bin when small, else a buffer index.
    fn data(&mut self, data: &Bytes) -> Result<()> {
        if data.len() < OUT_OF_BAND_MIN {
            return write_bin(&mut self.out, data);
        }
        write_uint(&mut self.out, self.buffers.len() as u64);
        self.buffers.push(data.clone());
        Ok(())
    }

    fn array(&mut self, a: &Array) -> Result<()> {
        check_array(&a.dtype, &a.shape, a.data.len())?;
        write_array_len(&mut self.out, 3)?;
        write_str(&mut self.out, &a.dtype)?;
        write_array_len(&mut self.out, a.shape.len())?;
        for &n in &a.shape {
            write_uint(&mut self.out, n as u64);
        }
        self.data(&a.data)
    }
}

/// A datetime in 60 bits: year (14) | month (4) | day (5) | hour (5) |
/// minute (6) | second (6) | microsecond (20), most significant first.
fn pack_datetime(dt: &DateTime) -> u64 {
    (u64::from(pack_date(&dt.date)) << 37)
        | u64::from(dt.hour) << 32
        | u64::from(dt.minute) << 26
        | u64::from(dt.second) << 20
        | u64::from(dt.microsecond)
}

/// A date in 23 bits: year (14) | month (4) | day (5).
fn pack_date(d: &Date) -> u32 {
    (d.year as u32) << 9 | u32::from(d.month) << 5 | u32::from(d.day)
}

fn unpack_date(bits: u32) -> Result<Date> {
    let (year, month, day) = (bits >> 9, (bits >> 5) & 0xf, bits & 0x1f);
    // The masks keep month and day small, and a year above 9999 (or
    // stray high bits) fails the range check.
    match i32::try_from(year)
        .ok()
        .and_then(|y| Date::new(y, month as u8, day as u8))
    {
        Some(d) => Ok(d),
        None => err(format!("invalid date in ext payload: {bits:#x}")),
    }
}

fn unpack_datetime(bits: u64) -> Result<DateTime> {
    let Ok(date_bits) = u32::try_from(bits >> 37) else {
        return err("invalid datetime in ext payload");
    };
    let date = unpack_date(date_bits)?;
    let field = |shift: u32, width: u32| ((bits >> shift) & ((1 << width) - 1)) as u32;
    let (hour, minute, second) = (field(32, 5), field(26, 6), field(20, 6));
    match DateTime::new(date, hour as u8, minute as u8, second as u8, field(0, 20)) {
        Some(dt) => Ok(dt),
        None => err(format!("invalid datetime in ext payload: {bits:#x}")),
    }
}

// ---- decoding ----------------------------------------------------------

/// The decoding rules of the farcall dialect: ext types, plain maps.
struct Farcall<'b> {
    buffers: &'b [Bytes],
}

impl Dialect for Farcall<'_> {
    fn ext(&mut self, r: &mut Reader<'_>, ty: i8, len: usize, depth: usize) -> Result<Value> {
        match ty {
            EXT_DATETIME => {
                let bits = u64::from_be_bytes(r.take_fixed(len)?);
                unpack_datetime(bits).map(Value::DateTime)
            }
            EXT_DATE => unpack_date(u32::from_be_bytes(r.take_fixed(len)?)).map(Value::Date),
            // The hot one (every call names its object): read straight
            // into its fields, no values in between.
            EXT_PROXY => r.within(len, |r| proxy(r, depth)).map(Value::Proxy),
            EXT_TUPLE | EXT_NDARRAY | EXT_SCALAR | EXT_BUFFER => {
                // The payload is a wrapper, not a level of nesting: a
                // tuple's items sit one level below the tuple.
                let payload = r.within(len, |r| r.value(self, depth))?;
                match ty {
                    EXT_TUPLE => tuple(payload),
                    EXT_NDARRAY => self.array(payload),
                    EXT_SCALAR => self.array(payload).and_then(scalar),
                    _ => self.data(&payload).map(Value::Bytes),
                }
            }
            _ => err(format!("unknown farcall ext type {ty}")),
        }
    }

    fn map(&mut self, entries: Vec<(Value, Value)>, _depth: usize) -> Result<Value> {
        Ok(Value::Map(entries))
    }
}

impl Farcall<'_> {
    /// Binary data: inline bin, or the out-of-band buffer it indexes.
    fn data(&self, v: &Value) -> Result<Bytes> {
        match v {
            Value::Bytes(b) => Ok(b.clone()),
            Value::Int(_) | Value::UInt(_) => {
                let index = id_from(v)?;
                usize::try_from(index)
                    .ok()
                    .and_then(|i| self.buffers.get(i))
                    .cloned()
                    .map_or_else(
                        || {
                            err(format!(
                                "buffer index {index} out of range ({} buffers)",
                                self.buffers.len()
                            ))
                        },
                        Ok,
                    )
            }
            other => err(format!("array data is {}, expected bytes", other.kind())),
        }
    }

    fn array(&self, payload: Value) -> Result<Value> {
        let [dtype, shape, data] = fields(payload, "ndarray")?;
        let Value::Str(dtype) = dtype else {
            return err(format!("ndarray dtype is {}", dtype.kind()));
        };
        let data = self.data(&data)?;
        array(dtype, shape_from(&shape)?, data).map(Value::Array)
    }
}

/// Marks a decoded array as a numpy scalar (which has no dimensions).
fn scalar(v: Value) -> Result<Value> {
    match v {
        Value::Array(a) if a.shape.is_empty() => Ok(Value::Array(Array { scalar: true, ..a })),
        _ => err("a numpy scalar with dimensions"),
    }
}

/// The items of an ext payload that must be a list of exactly `N`.
fn fields<const N: usize>(payload: Value, what: &str) -> Result<[Value; N]> {
    match payload {
        Value::List(items) => items
            .try_into()
            .or_else(|items: Vec<Value>| err(format!("{what} of {} fields", items.len()))),
        other => err(format!(
            "{what} payload is {}, expected a list",
            other.kind()
        )),
    }
}

fn tuple(payload: Value) -> Result<Value> {
    match payload {
        Value::List(items) => Ok(Value::Tuple(items)),
        other => err(format!(
            "tuple payload is {}, expected a list",
            other.kind()
        )),
    }
}

/// A proxy's payload, `[rpc_addr, obj_id, ref_id, type_str, attributes]`,
/// at nesting `depth` (its attribute list sits two levels below, as when
/// decoded as a value).
fn proxy(r: &mut Reader<'_>, depth: usize) -> Result<ProxyRef> {
    match r.list_len()? {
        5 => {}
        n => return err(format!("proxy of {n} fields")),
    }
    let rpc_addr = r.string()?;
    let obj_id = r.id()?;
    let ref_id = r.id()?;
    let type_str = r.string()?;
    let attributes = r.list_len()?;
    check_depth(depth + 2)?;
    let attributes = (0..attributes).map(|_| r.string()).collect::<Result<_>>()?;
    Ok(ProxyRef {
        rpc_addr,
        obj_id,
        ref_id,
        type_str,
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::NoExport;

    #[test]
    fn date_bits_round_trip() {
        let date = Date::new(9999, 12, 31).unwrap();
        let dt = DateTime::new(date, 23, 59, 59, 999_999).unwrap();
        assert_eq!(unpack_datetime(pack_datetime(&dt)).unwrap(), dt);
        assert_eq!(unpack_date(pack_date(&date)).unwrap(), date);
        assert!(unpack_date(0).is_err());
        assert!(unpack_datetime(u64::MAX).is_err());
    }

    #[test]
    fn out_of_band_threshold() {
        let small = Value::Bytes(Bytes::from(vec![7; OUT_OF_BAND_MIN - 1]));
        let big = Value::Bytes(Bytes::from(vec![7; OUT_OF_BAND_MIN]));
        assert!(encode(&small, &mut NoExport).unwrap().buffers.is_empty());
        let enc = encode(&big, &mut NoExport).unwrap();
        assert_eq!(enc.buffers.len(), 1);
        assert_eq!(enc.body, [0xc9, 0, 0, 0, 1, 6, 0]);
        let body = Bytes::from(enc.body);
        assert_eq!(decode(&body, &enc.buffers).unwrap(), big);
        assert!(decode(&body, &[]).is_err());
    }
}
