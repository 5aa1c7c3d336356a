//! pyacq's json serializer, byte for byte.
//!
//! Encoding produces what `json.dumps(obj, cls=EnhancedJSONEncoder)
//! .encode()` produces with Python's standard library: `", "` and `": "`
//! separators, ASCII-only output (`\uXXXX` escapes, surrogate pairs for
//! astral characters), floats as Python's `repr`, `NaN`/`Infinity`
//! literals, keys converted to strings as `json` does, and the types JSON
//! lacks as maps tagged `___type_name___` with base64 for binary data.
//!
//! Decoding goes through serde_json with a visitor that keeps map order.
//! serde_json rejects Python's `NaN`/`Infinity`/`-Infinity` literals, so a
//! document that fails to parse is scanned for them and parsed again with
//! them rewritten into marked strings (see [`mark_specials`]).

use std::fmt::{self, Write as _};
use std::io::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::common::{
    check_array, check_date, check_datetime, check_depth, format_date, format_datetime, untag,
    TYPE_KEY,
};
use super::{Encoded, Exporter};
use crate::error::{Error, Result};
use crate::value::{Array, ProxyRef, Value};

/// Encodes `value` as pyacq's json serializer would.
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

/// Decodes one JSON document (Python's `NaN`/`Infinity` literals included).
pub fn decode(body: &Bytes) -> Result<Value> {
    match parse(body, Mode::Plain) {
        Ok(value) => Ok(value),
        Err(plain_err) => match mark_specials(body) {
            Some(marked) => parse(&marked, Mode::Marked),
            None => Err(plain_err),
        },
    }
}

// ---- encoding ----------------------------------------------------------

struct Encoder<'e> {
    out: Vec<u8>,
    exporter: &'e mut dyn Exporter,
}

impl Encoder<'_> {
    fn value(&mut self, value: &Value, depth: usize) -> Result<()> {
        let out = &mut self.out;
        match value {
            Value::None => out.extend_from_slice(b"null"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Int(i) => write_display(out, i),
            Value::UInt(u) => write_display(out, u),
            Value::Float(x) => write_float(out, *x),
            Value::Str(s) => write_str(out, s),
            Value::Bytes(b) => write_bytes(out, b),
            Value::List(items) | Value::Tuple(items) => self.seq(items, depth)?,
            Value::Map(entries) => self.map(entries, depth)?,
            Value::DateTime(dt) => {
                check_datetime(dt)?;
                write_text_tagged(out, "datetime", &format_datetime(dt));
            }
            Value::Date(d) => {
                check_date(d)?;
                write_text_tagged(out, "date", &format_date(d));
            }
            Value::Array(a) => write_array(out, a)?,
            Value::Proxy(p) => write_proxy(out, p),
            Value::Object(obj) => {
                let proxy = self.exporter.export(obj)?;
                write_proxy(out, &proxy);
            }
        }
        Ok(())
    }

    fn seq(&mut self, items: &[Value], depth: usize) -> Result<()> {
        check_depth(depth + 1)?;
        self.out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.extend_from_slice(b", ");
            }
            self.value(item, depth + 1)?;
        }
        self.out.push(b']');
        Ok(())
    }

    fn map(&mut self, entries: &[(Value, Value)], depth: usize) -> Result<()> {
        check_depth(depth + 1)?;
        self.out.push(b'{');
        for (i, (k, v)) in entries.iter().enumerate() {
            if i > 0 {
                self.out.extend_from_slice(b", ");
            }
            write_key(&mut self.out, k)?;
            self.out.extend_from_slice(b": ");
            self.value(v, depth + 1)?;
        }
        self.out.push(b'}');
        Ok(())
    }
}

fn write_display(out: &mut Vec<u8>, v: impl fmt::Display) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{v}");
}

/// A map key, converted to a string as Python's `json` does.
fn write_key(out: &mut Vec<u8>, key: &Value) -> Result<()> {
    out.push(b'"');
    match key {
        Value::Str(s) => {
            out.pop();
            write_str(out, s);
            return Ok(());
        }
        Value::Int(i) => write_display(out, i),
        Value::UInt(u) => write_display(out, u),
        Value::Float(x) => write_float(out, *x),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::None => out.extend_from_slice(b"null"),
        other => {
            return Err(Error::Codec(format!(
                "keys must be str, int, float, bool or None, not {}",
                other.kind()
            )))
        }
    }
    out.push(b'"');
    Ok(())
}

/// A string as `json.dumps(s, ensure_ascii=True)` writes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut plain_from = 0;
    for (i, c) in s.char_indices() {
        let escape: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            '\u{8}' => b"\\b",
            '\u{c}' => b"\\f",
            ' '..='~' => continue,
            _ => b"",
        };
        out.extend_from_slice(&s.as_bytes()[plain_from..i]);
        plain_from = i + c.len_utf8();
        if escape.is_empty() {
            // Control characters, DEL and everything beyond ASCII, as
            // UTF-16 code units in lowercase hex.
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&s.as_bytes()[plain_from..]);
    out.push(b'"');
}

/// A float as Python's `json` writes it: `repr`, or its special literals.
fn write_float(out: &mut Vec<u8>, x: f64) {
    if x.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if x.is_infinite() {
        out.extend_from_slice(if x > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        write_float_repr(out, x);
    }
}

/// Python's `repr(x)` for a finite float: the shortest digits that round
/// trip (Rust's `{:e}` finds the same ones), in positional notation when
/// the decimal exponent is in -4..16, in exponent notation otherwise.
fn write_float_repr(out: &mut Vec<u8>, x: f64) {
    let mut sci = StackStr::default();
    let _ = write!(sci, "{x:e}");
    let (mantissa, exp) = sci.as_str().split_once('e').unwrap_or(("0", "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let (lead, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    out.extend_from_slice(sign.as_bytes());
    if !(-4..16).contains(&exp) {
        let dot = if frac.is_empty() { "" } else { "." };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "{lead}{dot}{frac}e{exp_sign}{:02}", exp.unsigned_abs());
    } else if exp < 0 {
        let zeros = (-exp - 1) as usize;
        let _ = write!(out, "0.{:0<zeros$}{lead}{frac}", "");
    } else {
        // `lead` is one digit; `exp` more digits belong before the point.
        let int_digits = exp as usize;
        if frac.len() > int_digits {
            let (int_part, frac_part) = frac.split_at(int_digits);
            let _ = write!(out, "{lead}{int_part}.{frac_part}");
        } else {
            let pad = int_digits - frac.len();
            let _ = write!(out, "{lead}{frac}{:0<pad$}.0", "");
        }
    }
}

/// A small stack buffer for formatting a float without allocating.
struct StackStr {
    buf: [u8; 32],
    len: usize,
}

impl Default for StackStr {
    fn default() -> Self {
        StackStr {
            buf: [0; 32],
            len: 0,
        }
    }
}

impl StackStr {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Opens a tagged map: `{"___type_name___": "tag"`.
fn open_tagged(out: &mut Vec<u8>, tag: &str) {
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(TYPE_KEY.as_bytes());
    out.extend_from_slice(b"\": \"");
    out.extend_from_slice(tag.as_bytes());
    out.push(b'"');
}

/// Writes `, "name": ` inside a tagged map.
fn field(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b", \"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\": ");
}

fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'"');
    let start = out.len();
    out.resize(start + base64::encoded_len(data.len(), true).unwrap_or(0), 0);
    // The buffer was sized by base64 itself, so this cannot fail.
    let _ = BASE64.encode_slice(data, &mut out[start..]);
    out.push(b'"');
}

fn write_text_tagged(out: &mut Vec<u8>, tag: &str, text: &str) {
    open_tagged(out, tag);
    field(out, "data");
    write_str(out, text);
    out.push(b'}');
}

fn write_bytes(out: &mut Vec<u8>, data: &[u8]) {
    open_tagged(out, "bytes");
    field(out, "data");
    write_base64(out, data);
    out.push(b'}');
}

fn write_array(out: &mut Vec<u8>, a: &Array) -> Result<()> {
    check_array(&a.dtype, &a.shape, a.data.len())?;
    open_tagged(out, "ndarray");
    field(out, "data");
    write_base64(out, &a.data);
    field(out, "dtype");
    write_str(out, &a.dtype);
    field(out, "shape");
    write_list(out, a.shape.iter(), |out, n| write_display(out, n));
    out.push(b'}');
    Ok(())
}

fn write_proxy(out: &mut Vec<u8>, p: &ProxyRef) {
    open_tagged(out, "proxy");
    // pyacq's addresses are bytes, which json writes as a tagged map.
    field(out, "rpc_addr");
    write_bytes(out, p.rpc_addr.as_bytes());
    field(out, "obj_id");
    write_display(out, p.obj_id);
    field(out, "ref_id");
    write_display(out, p.ref_id);
    field(out, "type_str");
    write_str(out, &p.type_str);
    field(out, "attributes");
    write_list(out, p.attributes.iter(), |out, a| write_str(out, a));
    out.push(b'}');
}

fn write_list<T>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        write(out, item);
    }
    out.push(b']');
}

// ---- decoding ----------------------------------------------------------

fn parse(input: &[u8], mode: Mode) -> Result<Value> {
    let invalid = |e: serde_json::Error| Error::Codec(format!("invalid JSON: {e}"));
    let mut de = serde_json::Deserializer::from_slice(input);
    let value = ValueSeed { mode, depth: 0 }
        .deserialize(&mut de)
        .map_err(invalid)?;
    de.end().map_err(invalid)?;
    Ok(value)
}

/// Rewrites Python's non-standard float literals outside strings into
/// strings serde_json accepts: `"n"` for `NaN`, `"p"` for `Infinity`,
/// `"m"` for `-Infinity`. To keep them apart from real strings, every
/// real string gets an `s` prefix. `None` when there is nothing to rewrite.
fn mark_specials(input: &[u8]) -> Option<Vec<u8>> {
    const SPECIALS: [(&[u8], &[u8]); 3] = [
        (b"NaN", b"\"n\""),
        (b"Infinity", b"\"p\""),
        (b"-Infinity", b"\"m\""),
    ];
    let mut out = Vec::with_capacity(input.len() + 64);
    let mut found = false;
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'"' {
            out.extend_from_slice(b"\"s");
            i += 1 + copy_string_rest(&input[i + 1..], &mut out);
        } else if let Some((token, marked)) = SPECIALS.iter().find(|(t, _)| input[i..].starts_with(t))
        {
            out.extend_from_slice(marked);
            i += token.len();
            found = true;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    found.then_some(out)
}

/// Copies a string's body and closing quote; returns the bytes consumed.
fn copy_string_rest(input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        i += 1;
        if b == b'\\' && i < input.len() {
            // The escaped byte cannot close the string.
            out.extend_from_slice(&[b, input[i]]);
            i += 1;
            continue;
        }
        out.push(b);
        if b == b'"' {
            break;
        }
    }
    i
}

/// How strings read: as they are, or with [`mark_specials`]' prefixes.
#[derive(Clone, Copy)]
enum Mode {
    Plain,
    Marked,
}

impl Mode {
    fn value(self, s: &str) -> Result<Value, String> {
        match self {
            Mode::Plain => Ok(Value::Str(s.to_owned())),
            Mode::Marked => match s {
                "n" => Ok(Value::Float(f64::NAN)),
                "p" => Ok(Value::Float(f64::INFINITY)),
                "m" => Ok(Value::Float(f64::NEG_INFINITY)),
                _ => self.key(s).map(Value::Str),
            },
        }
    }

    fn key(self, s: &str) -> Result<String, String> {
        match self {
            Mode::Plain => Ok(s.to_owned()),
            Mode::Marked => match s.strip_prefix('s') {
                Some(s) => Ok(s.to_owned()),
                None => Err("NaN or Infinity used as a key".into()),
            },
        }
    }
}

fn codec_message(e: Error) -> String {
    match e {
        Error::Codec(m) => m,
        other => other.to_string(),
    }
}

/// Builds a [`Value`] from serde_json's events, keeping map order.
#[derive(Clone, Copy)]
struct ValueSeed {
    mode: Mode,
    depth: usize,
}

impl ValueSeed {
    fn nested<E: de::Error>(self) -> Result<Self, E> {
        check_depth(self.depth + 1).map_err(|e| E::custom(codec_message(e)))?;
        Ok(ValueSeed {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::None)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        Ok(Value::from(u))
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Value, E> {
        Ok(Value::Float(x))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.mode.value(s).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed(self.mode))? {
            let value = map.next_value_seed(inner)?;
            entries.push((Value::Str(key), value));
        }
        untag(entries).map_err(|e| de::Error::custom(codec_message(e)))
    }
}

/// Reads a map key (always a string in JSON).
struct KeySeed(Mode);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<String, E> {
        self.0.key(s).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(x: f64) -> String {
        let mut out = Vec::new();
        write_float(&mut out, x);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn float_repr_matches_python() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (123.456, "123.456"),
            (1.0 / 3.0, "0.3333333333333333"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ];
        for &(x, want) in cases {
            assert_eq!(repr(x), want, "{x:e}");
        }
    }

    #[test]
    fn specials_are_marked_outside_strings_only() {
        let marked = mark_specials(br#"{"NaN \"x": [NaN, -Infinity, Infinity]}"#).unwrap();
        assert_eq!(
            std::str::from_utf8(&marked).unwrap(),
            r#"{"sNaN \"x": ["n", "m", "p"]}"#
        );
        assert!(mark_specials(br#"["NaN", "Infinity"]"#).is_none());
    }
}
