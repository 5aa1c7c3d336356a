//! pyacq's json serializer, byte for byte.
//!
//! Encoding produces what `json.dumps(obj, cls=EnhancedJSONEncoder)
//! .encode()` produces with Python's standard library: `", "` and `": "`
//! separators, ASCII-only output (`\uXXXX` escapes, surrogate pairs for
//! astral characters), floats as Python's `repr`, `NaN`/`Infinity`
//! literals, keys converted to strings as `json` does, and the types JSON
//! lacks as maps tagged `___type_name___` with base64 for binary data.
//!
//! Decoding is a small parser of our own rather than `serde_json`, because
//! Python's output needs four things `serde_json` (as configured here) does
//! not give: the `NaN`/`Infinity`/`-Infinity` literals, correctly rounded
//! floats (`serde_json`'s default float parser can be one ulp off, which
//! would change a Python float on a round trip), an error instead of a
//! silent float for integers beyond 64 bits, and the same nesting limit as
//! the msgpack codecs. Map order is kept.

use std::fmt::{self, Write as _};
use std::io::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;

use super::common::{
    check_array, check_date, check_datetime, check_depth, err, format_date, format_datetime, untag,
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
    let Ok(text) = std::str::from_utf8(body) else {
        return err("invalid JSON: not UTF-8");
    };
    let mut parser = Parser { text, pos: 0 };
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != text.len() {
        return parser.fail("trailing characters after the value");
    }
    Ok(value)
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
/// trip, in positional notation when the decimal exponent is in -4..16,
/// in exponent notation otherwise.
fn write_float_repr(out: &mut Vec<u8>, x: f64) {
    // `{:e}` finds how many digits are needed, but breaks ties between two
    // equally short candidates upwards where Python picks the one nearest
    // to x (half to even). Formatting again at that precision is exact
    // and rounds half to even, as Python does.
    let mut shortest = StackStr::default();
    let _ = write!(shortest, "{x:e}");
    let (mantissa, _) = shortest.as_str().split_once('e').unwrap_or(("0", "0"));
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    let mut sci = StackStr::default();
    let _ = write!(sci, "{x:.prec$e}", prec = digits.saturating_sub(1));
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
#[derive(Default)]
struct StackStr {
    buf: [u8; 32],
    len: usize,
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
    out.resize(
        start + base64::encoded_len(data.len(), true).unwrap_or(0),
        0,
    );
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
    write_list(out, a.shape.iter(), write_display);
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

/// A recursive-descent parser for RFC 8259 JSON plus Python's `NaN`,
/// `Infinity` and `-Infinity`. The input is checked to be UTF-8 once up
/// front; every position the parser slices at is an ASCII byte, hence a
/// character boundary.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn fail<T>(&self, what: &str) -> Result<T> {
        err(format!("invalid JSON at byte {}: {what}", self.pos))
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `lit` if the input continues with it.
    fn eat(&mut self, lit: &str) -> bool {
        let found = self.text[self.pos..].starts_with(lit);
        if found {
            self.pos += lit.len();
        }
        found
    }

    /// Consumes `lit` (after whitespace) or fails.
    fn expect(&mut self, lit: &str) -> Result<()> {
        self.skip_ws();
        if self.eat(lit) {
            Ok(())
        } else {
            self.fail(&format!("expected '{lit}'"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::Str),
            Some(b'-' | b'0'..=b'9') => self.number(),
            None => self.fail("unexpected end of input"),
            Some(_) => self.literal(),
        }
    }

    fn literal(&mut self) -> Result<Value> {
        const LITERALS: [(&str, Value); 5] = [
            ("null", Value::None),
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("NaN", Value::Float(f64::NAN)),
            ("Infinity", Value::Float(f64::INFINITY)),
        ];
        for (lit, value) in LITERALS {
            if self.eat(lit) {
                return Ok(value);
            }
        }
        self.fail("unexpected character")
    }

    /// Runs `item` for each comma-separated item up to `close`.
    fn items(&mut self, close: &str, mut item: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.pos += 1; // the opening bracket
        self.skip_ws();
        if self.eat(close) {
            return Ok(());
        }
        loop {
            item(self)?;
            self.skip_ws();
            if self.eat(close) {
                return Ok(());
            }
            self.expect(",")?;
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value> {
        check_depth(depth + 1)?;
        let mut items = Vec::new();
        self.items("]", |p| {
            items.push(p.value(depth + 1)?);
            Ok(())
        })?;
        Ok(Value::List(items))
    }

    fn object(&mut self, depth: usize) -> Result<Value> {
        check_depth(depth + 1)?;
        let mut entries = Vec::new();
        self.items("}", |p| {
            p.skip_ws();
            if p.peek() != Some(b'"') {
                return p.fail("expected a string key");
            }
            let key = p.string()?;
            p.expect(":")?;
            entries.push((Value::Str(key), p.value(depth + 1)?));
            Ok(())
        })?;
        // Like Python's object_hook: inner maps are untagged first.
        untag(entries, depth)
    }

    fn string(&mut self) -> Result<String> {
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => return self.fail("control character in string"),
                None => return self.fail("unterminated string"),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<()> {
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                return self.unicode_escape(out);
            }
            _ => return self.fail("bad escape"),
        };
        self.pos += 1;
        out.push(c);
        Ok(())
    }

    /// `\uXXXX`, or a surrogate pair of two; lone surrogates cannot live
    /// in a Rust string and are refused.
    fn unicode_escape(&mut self, out: &mut String) -> Result<()> {
        let high = self.hex4()?;
        let code = if (0xd800..0xdc00).contains(&high) {
            if !self.eat("\\u") {
                return self.fail("lone surrogate");
            }
            let low = self.hex4()?;
            if !(0xdc00..0xe000).contains(&low) {
                return self.fail("lone surrogate");
            }
            0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
        } else {
            high
        };
        match char::from_u32(code) {
            Some(c) => {
                out.push(c);
                Ok(())
            }
            None => self.fail("lone surrogate"),
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self.text.as_bytes().get(self.pos..self.pos + 4);
        let Some(digits) = digits.filter(|d| d.iter().all(u8::is_ascii_hexdigit)) else {
            return self.fail("bad \\u escape");
        };
        self.pos += 4;
        Ok(digits.iter().fold(0, |acc, &d| {
            acc * 16 + (d as char).to_digit(16).unwrap_or(0)
        }))
    }

    /// Counts and consumes ASCII digits.
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value> {
        if self.eat("-Infinity") {
            return Ok(Value::Float(f64::NEG_INFINITY));
        }
        let start = self.pos;
        self.eat("-");
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.fail("bad number"),
        }
        let fraction = self.eat(".");
        if fraction && self.digits() == 0 {
            return self.fail("bad number");
        }
        let exponent = self.eat("e") || self.eat("E");
        if exponent {
            let _ = self.eat("+") || self.eat("-");
            if self.digits() == 0 {
                return self.fail("bad number");
            }
        }
        let text = &self.text[start..self.pos];
        if fraction || exponent {
            // Rust's parser rounds correctly, as Python's does; a huge
            // exponent gives an infinity, as in Python.
            return text
                .parse()
                .map(Value::Float)
                .or_else(|_| self.fail("bad number"));
        }
        match (text.parse::<i64>(), text.parse::<u64>()) {
            (Ok(i), _) => Ok(Value::Int(i)),
            (_, Ok(u)) => Ok(Value::UInt(u)),
            _ => self.fail("integer out of range"),
        }
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
    #[allow(clippy::excessive_precision)] // exact halfway cases, on purpose
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
            // exactly halfway between ...121.2 and ...121.3: Python rounds to even
            (-713678672770121.25, "-713678672770121.2"),
            (89689177472664.625, "89689177472664.62"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ];
        for &(x, want) in cases {
            assert_eq!(repr(x), want, "{x:e}");
        }
    }

    fn parse(text: &str) -> Result<Value> {
        decode(&Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn parses_python_output() {
        let value = parse(
            r#" {"a": [NaN, -Infinity, Infinity, -0, 1e400], "\u00e9\ud83d\ude00": "\/\b"} "#,
        )
        .unwrap();
        let want = Value::map([
            (
                "a",
                Value::List(vec![
                    Value::Float(f64::NAN),
                    Value::Float(f64::NEG_INFINITY),
                    Value::Float(f64::INFINITY),
                    Value::Int(0),
                    Value::Float(f64::INFINITY),
                ]),
            ),
            ("é😀", Value::from("/\u{8}")),
        ]);
        assert_eq!(value, want);
        // serde_json's default float parser is one ulp off here.
        assert_eq!(
            parse("-9.849038828782277e+276").unwrap(),
            Value::Float(-9.849038828782277e276)
        );
    }

    #[test]
    fn refuses_what_python_refuses() {
        for bad in [
            "",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "[1,]",
            "{\"a\" 1}",
            "{1: 2}",
            "\"\t\"",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\u12\"",
            "nul",
            "[1] x",
            "18446744073709551616",
            "-9223372036854775809",
            "\"abc",
            "[",
            "Nan",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
