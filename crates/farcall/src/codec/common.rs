//! Pieces the three codecs share: msgpack primitives (both msgpack
//! dialects write and read through them), pyacq's tagged maps, numpy dtype
//! sizes and the text form of dates.
//!
//! The reader is written for hostile input: every length is checked
//! against the bytes that remain before anything is sliced or allocated,
//! and nesting is bounded, so a peer cannot crash or exhaust us.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;

use super::Field;
use crate::error::{Error, Result};
use crate::value::{Array, Date, DateTime, ProxyRef, Value};

/// Deepest nesting of containers a decoder accepts (and an encoder emits).
pub(super) const MAX_DEPTH: usize = 512;

/// The key that marks pyacq's maps standing for non-native types.
pub(super) const TYPE_KEY: &str = "___type_name___";

/// Shorthand for a codec error.
pub(super) fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Codec(msg.into()))
}

/// Fails when `depth` is past [`MAX_DEPTH`]. Containers check the depth
/// of their items, so at most `MAX_DEPTH` containers nest.
pub(super) fn check_depth(depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return err(format!("nesting deeper than {MAX_DEPTH}"));
    }
    Ok(())
}

// ---- msgpack writing ---------------------------------------------------

/// Marker bytes of one length-prefixed msgpack family.
struct Family {
    name: &'static str,
    /// The "fix" form: marker base and exclusive length limit.
    fix: Option<(u8, usize)>,
    /// The 8-bit length form, when the family has one.
    m8: Option<u8>,
    m16: u8,
    m32: u8,
}

const STR: Family = Family {
    name: "str",
    fix: Some((0xa0, 32)),
    m8: Some(0xd9),
    m16: 0xda,
    m32: 0xdb,
};
const BIN: Family = Family {
    name: "bytes",
    fix: None,
    m8: Some(0xc4),
    m16: 0xc5,
    m32: 0xc6,
};
const ARRAY: Family = Family {
    name: "list",
    fix: Some((0x90, 16)),
    m8: None,
    m16: 0xdc,
    m32: 0xdd,
};
const MAP: Family = Family {
    name: "dict",
    fix: Some((0x80, 16)),
    m8: None,
    m16: 0xde,
    m32: 0xdf,
};

/// Writes the shortest header of `family` for `len`, as msgpack-python does.
fn write_header(out: &mut Vec<u8>, family: &Family, len: usize) -> Result<()> {
    match (family.fix, family.m8) {
        (Some((base, limit)), _) if len < limit => out.push(base | len as u8),
        (_, Some(m8)) if len <= 0xff => out.extend_from_slice(&[m8, len as u8]),
        _ if len <= 0xffff => {
            out.push(family.m16);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            let len = u32::try_from(len)
                .or_else(|_| err(format!("{} too long for msgpack: {len}", family.name)))?;
            out.push(family.m32);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    Ok(())
}

/// Writes `nil`.
pub(super) fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// Writes `true` or `false`.
pub(super) fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { 0xc3 } else { 0xc2 });
}

/// Writes a non-negative integer in its shortest (unsigned) form.
pub(super) fn write_uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if v <= 0xff {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Writes an integer in its shortest form (unsigned forms for `v >= 0`).
pub(super) fn write_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_uint(out, v as u64);
    } else if v >= -32 {
        out.push(v as u8);
    } else if v >= i8::MIN.into() {
        out.extend_from_slice(&[0xd0, v as u8]);
    } else if v >= i16::MIN.into() {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i32::MIN.into() {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Writes a float64 (msgpack-python never shortens floats to float32).
pub(super) fn write_f64(out: &mut Vec<u8>, v: f64) {
    out.push(0xcb);
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes a str.
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    write_header(out, &STR, s.len())?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Writes a bin.
pub(super) fn write_bin(out: &mut Vec<u8>, b: &[u8]) -> Result<()> {
    write_header(out, &BIN, b.len())?;
    out.extend_from_slice(b);
    Ok(())
}

/// Writes an array header for `len` items.
pub(super) fn write_array_len(out: &mut Vec<u8>, len: usize) -> Result<()> {
    write_header(out, &ARRAY, len)
}

/// Writes a map header for `len` pairs.
pub(super) fn write_map_len(out: &mut Vec<u8>, len: usize) -> Result<()> {
    write_header(out, &MAP, len)
}

// ---- msgpack reading ---------------------------------------------------

/// What differs between the two msgpack dialects on the way in.
/// The part of encoding the two msgpack formats share: containers, with
/// the nesting limit checked in one place. Each format writes its own
/// scalars and non-native types in `value`.
pub(super) trait EncodeValue {
    /// The output buffer.
    fn out(&mut self) -> &mut Vec<u8>;

    /// Writes one value at nesting `depth`.
    fn value(&mut self, value: &Value, depth: usize) -> Result<()>;

    /// Writes a list (tuples too, where the format has no tuple type).
    fn seq(&mut self, items: &[Value], depth: usize) -> Result<()> {
        check_depth(depth + 1)?;
        write_array_len(self.out(), items.len())?;
        items.iter().try_for_each(|v| self.value(v, depth + 1))
    }

    /// Writes a map, keys of any type.
    fn map(&mut self, entries: &[(Value, Value)], depth: usize) -> Result<()> {
        check_depth(depth + 1)?;
        write_map_len(self.out(), entries.len())?;
        entries.iter().try_for_each(|(k, v)| {
            self.value(k, depth + 1)?;
            self.value(v, depth + 1)
        })
    }

    /// Writes a proxy reference with `method` appended to its attributes.
    fn proxy(&mut self, proxy: &ProxyRef, method: Option<&str>) -> Result<()>;

    /// Writes the top-level map `{key: field, ...}`: the same bytes as
    /// that map built as a value, at the same nesting depths.
    fn fields(&mut self, fields: &[(&str, Field<'_>)]) -> Result<()> {
        check_depth(1)?;
        write_map_len(self.out(), fields.len())?;
        for (key, field) in fields {
            write_str(self.out(), key)?;
            match *field {
                Field::Str(s) => write_str(self.out(), s)?,
                Field::Int(i) => write_int(self.out(), i),
                Field::Value(v) => self.value(v, 1)?,
                Field::List(items) => self.seq(items, 1)?,
                Field::StrMap(pairs) => {
                    check_depth(2)?;
                    write_map_len(self.out(), pairs.len())?;
                    for (k, v) in pairs {
                        write_str(self.out(), k)?;
                        self.value(v, 2)?;
                    }
                }
                Field::Proxy { proxy, method } => self.proxy(proxy, method)?,
            }
        }
        Ok(())
    }
}

/// Writes the attribute path of a proxy, `method` last.
pub(super) fn write_attributes(
    out: &mut Vec<u8>,
    attributes: &[String],
    method: Option<&str>,
) -> Result<()> {
    write_array_len(out, attributes.len() + usize::from(method.is_some()))?;
    attributes
        .iter()
        .map(String::as_str)
        .chain(method)
        .try_for_each(|a| write_str(out, a))
}

pub(super) trait Dialect {
    /// Decodes an ext value of type `ty` whose `len`-byte payload is next
    /// in `r` (the length is already checked against the input).
    fn ext(&mut self, r: &mut Reader<'_>, ty: i8, len: usize, depth: usize) -> Result<Value>;

    /// Turns a decoded map at nesting `depth` into a value (pyacq's
    /// tagged maps, or as is).
    fn map(&mut self, entries: Vec<(Value, Value)>, depth: usize) -> Result<Value>;
}

/// Binary values shorter than this are copied out of their message (see
/// [`Reader::take_bytes`]): cheap at that size, and what stays alive is
/// then at most a few times the value.
const COPY_BELOW: usize = 4096;

/// A bounds-checked cursor over a message; slices share the message.
pub(super) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over all of `buf`.
    pub(super) fn new(buf: &'a Bytes) -> Self {
        Reader {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// Fails unless the input is used up (no trailing garbage).
    pub(super) fn finish(&self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => err(format!("{n} trailing bytes after the value")),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return err(format!(
                "truncated input: {n} bytes needed, {} left",
                self.remaining()
            ));
        }
        let buf: &'a Bytes = self.buf;
        let out = &buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// The next `n` bytes as a slice of the message, without copying;
    /// short ones are copied, so that a small value kept long does not
    /// keep alive the read buffer its message was cut from.
    pub(super) fn take_bytes(&mut self, n: usize) -> Result<Bytes> {
        let start = self.pos;
        let taken = self.take(n)?;
        if n < COPY_BELOW {
            return Ok(Bytes::copy_from_slice(taken));
        }
        Ok(self.buf.slice(start..start + n))
    }

    /// The next `n` bytes, as a fixed-size array.
    pub(super) fn take_fixed<const N: usize>(&mut self, n: usize) -> Result<[u8; N]> {
        if n != N {
            return err(format!("ext payload of {n} bytes, expected {N}"));
        }
        self.take_array()
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<usize> {
        Ok(u16::from_be_bytes(self.take_array()?).into())
    }

    fn u32(&mut self) -> Result<usize> {
        let n = u32::from_be_bytes(self.take_array()?);
        usize::try_from(n).or_else(|_| err("length does not fit in memory"))
    }

    /// Runs `f` on the next `len` bytes only, and checks it used them all.
    pub(super) fn within<T>(
        &mut self,
        len: usize,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        if len > self.remaining() {
            return err("truncated ext payload");
        }
        let end = self.pos + len;
        let outer = std::mem::replace(&mut self.end, end);
        let out = f(self);
        self.end = outer;
        let out = out?;
        if self.pos != end {
            return err("ext payload has trailing bytes");
        }
        Ok(out)
    }

    /// Decodes a top-level map with string keys, handing each entry to
    /// `field` (see `codec::decode_fields`), and checks nothing follows.
    pub(super) fn fields<D: Dialect>(
        &mut self,
        d: &mut D,
        field: &mut dyn FnMut(&str, Value) -> Result<()>,
    ) -> Result<()> {
        let n = match self.u8()? {
            m @ 0x80..=0x8f => usize::from(m & 0x0f),
            0xde => self.u16()?,
            0xdf => self.u32()?,
            m => return err(format!("expected a map, found marker {m:#04x}")),
        };
        check_depth(1)?;
        if n > self.remaining() / 2 {
            return err(format!("dict of {n} pairs in {} bytes", self.remaining()));
        }
        for _ in 0..n {
            let key = self.key()?;
            let value = self.value(d, 1)?;
            field(key, value)?;
        }
        self.finish()
    }

    /// A map key that must be a string, borrowed from the message.
    fn key(&mut self) -> Result<&'a str> {
        let n = match self.u8()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.u8()?.into(),
            0xda => self.u16()?,
            0xdb => self.u32()?,
            m => return err(format!("expected a string key, found marker {m:#04x}")),
        };
        std::str::from_utf8(self.take(n)?).or_else(|e| err(format!("invalid UTF-8 in str: {e}")))
    }

    /// Decodes one value.
    pub(super) fn value<D: Dialect>(&mut self, d: &mut D, depth: usize) -> Result<Value> {
        let m = self.u8()?;
        Ok(match m {
            0x00..=0x7f => Value::Int(m.into()),
            0x80..=0x8f => return self.map(d, usize::from(m & 0x0f), depth),
            0x90..=0x9f => return self.array(d, usize::from(m & 0x0f), depth),
            0xa0..=0xbf => return self.str(usize::from(m & 0x1f)),
            0xc0 => Value::None,
            0xc1 => return err("invalid msgpack marker 0xc1"),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 => Value::Bytes(self.u8().and_then(|n| self.take_bytes(n.into()))?),
            0xc5 => Value::Bytes(self.u16().and_then(|n| self.take_bytes(n))?),
            0xc6 => Value::Bytes(self.u32().and_then(|n| self.take_bytes(n))?),
            0xc7 => return self.u8().and_then(|n| self.ext(d, n.into(), depth)),
            0xc8 => return self.u16().and_then(|n| self.ext(d, n, depth)),
            0xc9 => return self.u32().and_then(|n| self.ext(d, n, depth)),
            0xca => Value::Float(f32::from_be_bytes(self.take_array()?).into()),
            0xcb => Value::Float(f64::from_be_bytes(self.take_array()?)),
            0xcc => Value::Int(self.u8()?.into()),
            0xcd => Value::Int(u16::from_be_bytes(self.take_array()?).into()),
            0xce => Value::Int(u32::from_be_bytes(self.take_array()?).into()),
            0xcf => Value::from(u64::from_be_bytes(self.take_array()?)),
            0xd0 => Value::Int(i8::from_be_bytes(self.take_array()?).into()),
            0xd1 => Value::Int(i16::from_be_bytes(self.take_array()?).into()),
            0xd2 => Value::Int(i32::from_be_bytes(self.take_array()?).into()),
            0xd3 => Value::Int(i64::from_be_bytes(self.take_array()?)),
            0xd4..=0xd8 => return self.ext(d, 1 << (m - 0xd4), depth),
            0xd9 => return self.u8().and_then(|n| self.str(n.into())),
            0xda => return self.u16().and_then(|n| self.str(n)),
            0xdb => return self.u32().and_then(|n| self.str(n)),
            0xdc => return self.u16().and_then(|n| self.array(d, n, depth)),
            0xdd => return self.u32().and_then(|n| self.array(d, n, depth)),
            0xde => return self.u16().and_then(|n| self.map(d, n, depth)),
            0xdf => return self.u32().and_then(|n| self.map(d, n, depth)),
            0xe0..=0xff => Value::Int((m as i8).into()),
        })
    }

    /// The length of the list that comes next.
    pub(super) fn list_len(&mut self) -> Result<usize> {
        let n = match self.u8()? {
            m @ 0x90..=0x9f => usize::from(m & 0x0f),
            0xdc => self.u16()?,
            0xdd => self.u32()?,
            m => return err(format!("expected a list, found marker {m:#04x}")),
        };
        // Every item takes at least one byte (see `array`).
        if n > self.remaining() {
            return err(format!("list of {n} items in {} bytes", self.remaining()));
        }
        Ok(n)
    }

    /// The string that comes next, owned.
    pub(super) fn string(&mut self) -> Result<String> {
        match self.u8()? {
            m @ 0xa0..=0xbf => self.utf8(usize::from(m & 0x1f)),
            0xd9 => self.u8().and_then(|n| self.utf8(n.into())),
            0xda => self.u16().and_then(|n| self.utf8(n)),
            0xdb => self.u32().and_then(|n| self.utf8(n)),
            m => err(format!("expected str, found marker {m:#04x}")),
        }
    }

    /// The non-negative integer that comes next (an object or reference
    /// id).
    pub(super) fn id(&mut self) -> Result<u64> {
        let signed: i64 = match self.u8()? {
            m @ 0x00..=0x7f => m.into(),
            0xcc => self.u8()?.into(),
            0xcd => u16::from_be_bytes(self.take_array()?).into(),
            0xce => u32::from_be_bytes(self.take_array()?).into(),
            0xcf => return Ok(u64::from_be_bytes(self.take_array()?)),
            0xd0 => i8::from_be_bytes(self.take_array()?).into(),
            0xd1 => i16::from_be_bytes(self.take_array()?).into(),
            0xd2 => i32::from_be_bytes(self.take_array()?).into(),
            0xd3 => i64::from_be_bytes(self.take_array()?),
            m @ 0xe0..=0xff => (m as i8).into(),
            m => return err(format!("id has marker {m:#04x}, expected int")),
        };
        u64::try_from(signed).or_else(|_| err(format!("negative id {signed}")))
    }

    fn utf8(&mut self, n: usize) -> Result<String> {
        match std::str::from_utf8(self.take(n)?) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => err(format!("invalid UTF-8 in str: {e}")),
        }
    }

    fn str(&mut self, n: usize) -> Result<Value> {
        self.utf8(n).map(Value::Str)
    }

    fn array<D: Dialect>(&mut self, d: &mut D, n: usize, depth: usize) -> Result<Value> {
        check_depth(depth + 1)?;
        // Every item takes at least one byte: a larger count is a lie, and
        // trusting it would let a 5-byte message reserve gigabytes.
        if n > self.remaining() {
            return err(format!("list of {n} items in {} bytes", self.remaining()));
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(d, depth + 1)?);
        }
        Ok(Value::List(items))
    }

    fn map<D: Dialect>(&mut self, d: &mut D, n: usize, depth: usize) -> Result<Value> {
        check_depth(depth + 1)?;
        if n > self.remaining() / 2 {
            return err(format!("dict of {n} pairs in {} bytes", self.remaining()));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value(d, depth + 1)?;
            entries.push((k, self.value(d, depth + 1)?));
        }
        d.map(entries, depth)
    }

    fn ext<D: Dialect>(&mut self, d: &mut D, len: usize, depth: usize) -> Result<Value> {
        let ty = self.u8()? as i8;
        if len > self.remaining() {
            return err(format!("ext of {len} bytes in {} bytes", self.remaining()));
        }
        d.ext(self, ty, len, depth)
    }
}

// ---- pyacq's tagged maps -----------------------------------------------

/// Turns a map tagged `___type_name___` back into the value it stands
/// for; other maps (and unknown tags) stay maps.
/// The value a map at nesting `depth` stands for: a tagged map becomes
/// the value it tags. A proxy or an array is written back as a tagged map
/// holding a list one level deeper, so it must leave room for that level:
/// whatever decodes must encode and decode again.
pub(super) fn untag(entries: Vec<(Value, Value)>, depth: usize) -> Result<Value> {
    let value = untag_at(entries)?;
    if matches!(value, Value::Proxy(_) | Value::Array(_)) {
        check_depth(depth + 2)?;
    }
    Ok(value)
}

fn untag_at(entries: Vec<(Value, Value)>) -> Result<Value> {
    let tag = entries.iter().find_map(|(k, v)| match (k, v) {
        (Value::Str(k), Value::Str(v)) if k == TYPE_KEY => Some(v.as_str()),
        _ => None,
    });
    let tag = match tag {
        Some("ndarray") => Tag::Array,
        Some("datetime") => Tag::DateTime,
        Some("date") => Tag::Date,
        Some("proxy") => Tag::Proxy,
        Some("bytes") => Tag::Bytes,
        Some("tuple") => Tag::Tuple,
        Some("none") => return Ok(Value::None),
        _ => return Ok(Value::Map(entries)),
    };
    let mut fields = Fields(entries);
    match tag {
        Tag::Array => untag_array(&mut fields),
        Tag::DateTime => Ok(Value::DateTime(parse_datetime(&fields.str("data")?)?)),
        Tag::Date => Ok(Value::Date(parse_date(&fields.str("data")?)?)),
        Tag::Proxy => untag_proxy(&mut fields),
        Tag::Bytes => Ok(Value::Bytes(fields.binary("data")?)),
        // teleprox's msgpack tags every tuple (`strict_types`).
        Tag::Tuple => match fields.required("data")? {
            Value::List(items) | Value::Tuple(items) => Ok(Value::Tuple(items)),
            other => err(format!("tuple data is {}, expected a list", other.kind())),
        },
    }
}

/// The tagged types this codec turns back into values.
enum Tag {
    Array,
    DateTime,
    Date,
    Proxy,
    Bytes,
    Tuple,
}

/// The entries of a tagged map, taken out by name.
struct Fields(Vec<(Value, Value)>);

impl Fields {
    fn take(&mut self, name: &str) -> Option<Value> {
        self.0
            .iter_mut()
            .find(|(k, _)| matches!(k, Value::Str(k) if k == name))
            .map(|(_, v)| std::mem::take(v))
    }

    fn required(&mut self, name: &str) -> Result<Value> {
        self.take(name)
            .map_or_else(|| err(format!("tagged map without '{name}'")), Ok)
    }

    fn str(&mut self, name: &str) -> Result<String> {
        match self.required(name)? {
            Value::Str(s) => Ok(s),
            other => err(format!("'{name}' is {}, expected str", other.kind())),
        }
    }

    /// Binary data sent as bin, as base64 text, or as a bytes-tagged map.
    fn binary(&mut self, name: &str) -> Result<Bytes> {
        match self.required(name)? {
            Value::Bytes(b) => Ok(b),
            Value::Str(s) => match BASE64.decode(s) {
                Ok(b) => Ok(b.into()),
                Err(e) => err(format!("bad base64 in '{name}': {e}")),
            },
            other => err(format!("'{name}' is {}, expected bytes", other.kind())),
        }
    }
}

fn untag_array(fields: &mut Fields) -> Result<Value> {
    let data = fields.binary("data")?;
    let dtype = fields.str("dtype")?;
    let shape = shape_from(&fields.required("shape")?)?;
    array(dtype, shape, data).map(Value::Array)
}

fn untag_proxy(fields: &mut Fields) -> Result<Value> {
    let rpc_addr = match fields.required("rpc_addr")? {
        Value::Str(s) => s,
        Value::Bytes(b) => match String::from_utf8(b.to_vec()) {
            Ok(s) => s,
            Err(_) => return err("proxy rpc_addr is not UTF-8"),
        },
        other => return err(format!("proxy rpc_addr is {}", other.kind())),
    };
    // pyacq proxies always carry every field; be lenient with the optional
    // ones so older peers still work.
    let obj_id = id_from(&fields.required("obj_id")?)?;
    let ref_id = fields.take("ref_id").map_or(Ok(0), |v| id_from(&v))?;
    let type_str = match fields.take("type_str") {
        None => String::new(),
        Some(Value::Str(s)) => s,
        Some(other) => return err(format!("proxy type_str is {}", other.kind())),
    };
    let attributes = fields
        .take("attributes")
        .map_or(Ok(Vec::new()), |v| strings_from(&v))?;
    Ok(Value::Proxy(ProxyRef {
        rpc_addr,
        obj_id,
        ref_id,
        type_str,
        attributes,
    }))
}

/// A non-negative integer id (object or reference id).
pub(super) fn id_from(v: &Value) -> Result<u64> {
    match *v {
        Value::Int(i) => u64::try_from(i).or_else(|_| err(format!("negative id {i}"))),
        Value::UInt(u) => Ok(u),
        ref other => err(format!("id is {}, expected int", other.kind())),
    }
}

/// A list of strings (a proxy's attribute path).
pub(super) fn strings_from(v: &Value) -> Result<Vec<String>> {
    let Some(items) = v.as_seq() else {
        return err(format!("expected a list of str, got {}", v.kind()));
    };
    items
        .iter()
        .map(|item| match item {
            Value::Str(s) => Ok(s.clone()),
            other => err(format!("expected str, got {}", other.kind())),
        })
        .collect()
}

/// An array shape: a list of non-negative integers.
pub(super) fn shape_from(v: &Value) -> Result<Vec<usize>> {
    let Some(items) = v.as_seq() else {
        return err(format!("array shape is {}, expected a list", v.kind()));
    };
    items
        .iter()
        .map(|dim| match dim.as_i64().map(usize::try_from) {
            Some(Ok(n)) => Ok(n),
            _ => err(format!("bad array dimension {dim:?}")),
        })
        .collect()
}

// ---- arrays ------------------------------------------------------------

/// Builds an array, checking the data length against dtype and shape.
pub(super) fn array(dtype: String, shape: Vec<usize>, data: Bytes) -> Result<Array> {
    check_array(&dtype, &shape, data.len())?;
    Ok(Array {
        dtype,
        shape,
        data,
        scalar: false,
    })
}

/// Fails when `len` bytes cannot hold `shape` elements of `dtype`
/// (unknown dtypes are opaque: only the shape is checked).
pub(super) fn check_array(dtype: &str, shape: &[usize], len: usize) -> Result<()> {
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .map_or_else(|| err(format!("array shape {shape:?} overflows")), Ok)?;
    let Some(itemsize) = itemsize(dtype)? else {
        return Ok(());
    };
    match count.checked_mul(itemsize) {
        Some(n) if n == len => Ok(()),
        _ => err(format!(
            "array of {dtype} with shape {shape:?} cannot hold {len} bytes"
        )),
    }
}

/// Bytes per element of a numpy dtype string (`str(dtype)`), `None` for
/// dtypes this codec does not know. Object arrays are refused: their
/// bytes are pointers into the sender's memory.
pub(super) fn itemsize(dtype: &str) -> Result<Option<usize>> {
    let named = match dtype {
        "bool" | "int8" | "uint8" => Some(1),
        "int16" | "uint16" | "float16" => Some(2),
        "int32" | "uint32" | "float32" => Some(4),
        "int64" | "uint64" | "float64" | "complex64" => Some(8),
        "complex128" | "float128" => Some(16),
        "complex256" => Some(32),
        "object" => return err("object arrays cannot travel by value"),
        _ if dtype.starts_with("datetime64") || dtype.starts_with("timedelta64") => Some(8),
        _ => None,
    };
    match named {
        Some(n) => Ok(Some(n)),
        None => typestr_itemsize(dtype),
    }
}

/// Item size from numpy's array-protocol form: `<f8`, `|S3`, `<U5`,
/// `<M8[ns]`. Anything else (structured dtypes, ...) is unknown.
fn typestr_itemsize(dtype: &str) -> Result<Option<usize>> {
    let body = dtype.strip_prefix(['<', '>', '|', '=']).unwrap_or(dtype);
    let mut chars = body.chars();
    let Some(kind) = chars.next() else {
        return Ok(None);
    };
    let rest = chars.as_str();
    // datetime64/timedelta64 carry a unit suffix: `<M8[ns]`.
    let digits = match kind {
        'M' | 'm' => rest.split_once('[').map_or(rest, |(d, _)| d),
        _ => rest,
    };
    if kind == 'O' {
        return err("object arrays cannot travel by value");
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let Ok(n) = digits.parse::<usize>() else {
        return err(format!("bad dtype {dtype:?}"));
    };
    Ok(match kind {
        'b' | 'i' | 'u' | 'f' | 'c' | 'S' | 'a' | 'V' | 'M' | 'm' => Some(n),
        'U' => Some(n.checked_mul(4).map_or_else(|| err("bad dtype"), Ok)?),
        _ => None,
    })
}

// ---- dates as text (pyacq's strftime formats) --------------------------

/// Fails for a date out of range (its fields are public, so unchecked).
pub(super) fn check_date(d: &Date) -> Result<()> {
    match Date::new(d.year, d.month, d.day) {
        Some(_) => Ok(()),
        None => err(format!("invalid date {d:?}")),
    }
}

/// Fails for a date and time out of range.
pub(super) fn check_datetime(dt: &DateTime) -> Result<()> {
    check_date(&dt.date)?;
    match DateTime::new(dt.date, dt.hour, dt.minute, dt.second, dt.microsecond) {
        Some(_) => Ok(()),
        None => err(format!("invalid datetime {dt:?}")),
    }
}

/// `date.strftime('%Y-%m-%d')` of a checked date.
pub(super) fn format_date(d: &Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
}

/// `datetime.strftime('%Y-%m-%dT%H:%M:%S.%f')` of a checked datetime.
pub(super) fn format_datetime(dt: &DateTime) -> String {
    format!(
        "{}T{:02}:{:02}:{:02}.{:06}",
        format_date(&dt.date),
        dt.hour,
        dt.minute,
        dt.second,
        dt.microsecond
    )
}

/// Parses `%Y-%m-%d` like Python's `strptime`, one or two digits for
/// month and day, and one to four for the year.
pub(super) fn parse_date(s: &str) -> Result<Date> {
    let mut t = Text(s.as_bytes());
    let date = t.date()?;
    t.end(s)?;
    Ok(date)
}

/// Parses `%Y-%m-%dT%H:%M:%S.%f` as Python's `strptime` does (the
/// fraction has one to six digits; it may also be left out).
pub(super) fn parse_datetime(s: &str) -> Result<DateTime> {
    let mut t = Text(s.as_bytes());
    let date = t.date()?;
    t.expect(b'T')?;
    let hour = t.num(1, 2)?;
    t.expect(b':')?;
    let minute = t.num(1, 2)?;
    t.expect(b':')?;
    let second = t.num(1, 2)?;
    let microsecond = match t.0.first() {
        Some(b'.') => {
            t.expect(b'.')?;
            let before = t.0.len();
            let frac = t.num(1, 6)?;
            // "%f" reads "5" as 500000 microseconds.
            frac * 10u32.pow((6 - (before - t.0.len())) as u32)
        }
        _ => 0,
    };
    t.end(s)?;
    let fields = (
        u8::try_from(hour),
        u8::try_from(minute),
        u8::try_from(second),
    );
    match fields {
        (Ok(h), Ok(m), Ok(sec)) => DateTime::new(date, h, m, sec, microsecond),
        _ => None,
    }
    .map_or_else(|| err(format!("invalid datetime {s:?}")), Ok)
}

/// A tiny scanner for the date formats.
struct Text<'a>(&'a [u8]);

impl Text<'_> {
    fn num(&mut self, min: usize, max: usize) -> Result<u32> {
        let n = self
            .0
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if n < min {
            return err("malformed date");
        }
        let (digits, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(digits
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        match self.0.split_first() {
            Some((&first, rest)) if first == c => {
                self.0 = rest;
                Ok(())
            }
            _ => err("malformed date"),
        }
    }

    fn end(&self, s: &str) -> Result<()> {
        match self.0 {
            [] => Ok(()),
            _ => err(format!("trailing text in date {s:?}")),
        }
    }

    fn date(&mut self) -> Result<Date> {
        // Python before 3.13 writes years below 1000 unpadded on Linux
        // ("529-07-19"), so accept one to four digits.
        let year = self.num(1, 4)?;
        self.expect(b'-')?;
        let month = self.num(1, 2)?;
        self.expect(b'-')?;
        let day = self.num(1, 2)?;
        // Every field has at most 4 digits, so the casts cannot truncate.
        Date::new(year as i32, month as u8, day as u8).map_or_else(|| err("invalid date"), Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itemsizes() {
        let cases = [
            ("float64", Some(8)),
            ("bool", Some(1)),
            ("<U5", Some(20)),
            ("|S3", Some(3)),
            (">i2", Some(2)),
            ("<M8[ns]", Some(8)),
            ("datetime64[ms]", Some(8)),
            ("[('a', '<i4')]", None),
            ("weird", None),
        ];
        for (dtype, size) in cases {
            assert_eq!(itemsize(dtype).unwrap(), size, "{dtype}");
        }
        assert!(itemsize("object").is_err());
        assert!(itemsize("|O").is_err());
        assert!(itemsize("<U99999999999999999999999").is_err());
    }

    #[test]
    fn teleprox_tuple_tag() {
        let tag = |data: Value| {
            untag_at(vec![
                (Value::from(TYPE_KEY), Value::from("tuple")),
                (Value::from("data"), data),
            ])
        };
        let items = vec![Value::from(1i64), Value::from("a")];
        assert_eq!(
            tag(Value::List(items.clone())).unwrap(),
            Value::Tuple(items)
        );
        assert!(tag(Value::from(3i64)).is_err());
    }

    #[test]
    fn array_checks() {
        assert!(check_array("float64", &[2, 3], 48).is_ok());
        assert!(check_array("float64", &[2, 3], 47).is_err());
        assert!(check_array("mystery", &[2, 3], 5).is_ok());
        assert!(check_array("int8", &[usize::MAX, 2], 0).is_err());
        assert!(check_array("int8", &[], 1).is_ok());
    }

    #[test]
    fn date_text() {
        let dt = parse_datetime("2024-02-29T23:59:58.000123").unwrap();
        assert_eq!(format_datetime(&dt), "2024-02-29T23:59:58.000123");
        assert_eq!(
            parse_datetime("2024-2-9T3:4:5.5").unwrap().microsecond,
            500_000
        );
        assert_eq!(
            parse_datetime("2024-02-09T03:04:05").unwrap().microsecond,
            0
        );
        assert_eq!(
            format_date(&parse_date("0001-01-01").unwrap()),
            "0001-01-01"
        );
        for bad in [
            "2023-02-29",
            "12345-01-01",
            "2024--01-01",
            "2024-01-01x",
            "2024-13-01",
            "",
            "2024-01-32",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        for bad in [
            "2024-01-01T24:00:00.0",
            "2024-01-01T00:00:00.1234567",
            "2024-01-01T00:00",
            "2024-01-01 00:00:00.0",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }
}
