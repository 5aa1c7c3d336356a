//! Bridge between [`Value`] and serde: any `Serialize` type becomes a
//! `Value`, any `Deserialize` type can be read back out of one, and
//! `Value` itself can sit inside serde structs.
//!
//! The mapping follows serde's data model with serde_json's conventions,
//! so a type's `Value` looks like its JSON (what a Python peer expects):
//!
//! | serde                              | `Value`                               |
//! |------------------------------------|---------------------------------------|
//! | struct, map                        | `Map` (struct keys are `Str`, in order)|
//! | seq                                | `List`                                |
//! | tuple, tuple struct                | `Tuple`                               |
//! | bytes                              | `Bytes`                               |
//! | unit, unit struct, `None`          | `None`                                |
//! | unit variant                       | `Str(variant)`                        |
//! | newtype / tuple / struct variant   | `Map` with one entry `{variant: ..}`  |
//! | char                               | `Str`                                 |
//! | i128 / u128                        | `Int` / `UInt` when in range          |
//!
//! Reading back, `List` and `Tuple` are both sequences, `Bytes` also reads
//! as a sequence of integers (for `Vec<u8>`), `DateTime` and `Date` read as
//! their ISO 8601 strings, `Array` and `Proxy` as maps of their fields. A
//! local `Object` travels by proxy only and has no serde form.
//!
//! Errors become [`Error::Codec`].

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};
use serde::ser::{self, Serialize};

use crate::error::{Error, Result};
use crate::value::{Array, Date, DateTime, ProxyRef, Value};

/// Converts any serde-serializable value into a [`Value`].
///
/// Fails with [`Error::Codec`] when the value has no `Value` form: an
/// integer beyond 64 bits, a local `Object`, or an error raised by the
/// type's own `Serialize`.
pub fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Value> {
    v.serialize(ValueSerializer).map_err(Into::into)
}

/// Converts a [`Value`] into any deserializable type.
///
/// Fails with [`Error::Codec`] when the value does not have the shape the
/// type expects (wrong kind, missing field, integer out of range, ...).
pub fn from_value<T: de::DeserializeOwned>(v: Value) -> Result<T> {
    T::deserialize(ValueDeserializer(v)).map_err(Into::into)
}

/// The error serde's traits need; private so the public API only ever
/// shows [`Error`] (error.rs is not serde-aware).
#[derive(Debug)]
struct SerdeError(String);

impl fmt::Display for SerdeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SerdeError {}

impl ser::Error for SerdeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerdeError(msg.to_string())
    }
}

impl de::Error for SerdeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerdeError(msg.to_string())
    }
}

impl From<SerdeError> for Error {
    fn from(e: SerdeError) -> Self {
        Error::Codec(e.0)
    }
}

// ---- ISO 8601 forms of dates ------------------------------------------

/// Python's `date.isoformat()`: `YYYY-MM-DD`.
fn date_iso(d: &Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
}

/// Python's `datetime.isoformat()`: microseconds only when not zero.
fn datetime_iso(d: &DateTime) -> String {
    let mut s = format!(
        "{}T{:02}:{:02}:{:02}",
        date_iso(&d.date),
        d.hour,
        d.minute,
        d.second
    );
    if d.microsecond != 0 {
        s.push_str(&format!(".{:06}", d.microsecond));
    }
    s
}

/// An array as the map a serde type sees: `{dtype, shape, data}`.
fn array_map(a: Array) -> Value {
    let shape = a.shape.into_iter().map(Value::from).collect();
    Value::map([
        ("dtype", Value::Str(a.dtype)),
        ("shape", Value::List(shape)),
        ("data", Value::Bytes(a.data)),
    ])
}

/// A proxy reference as the map a serde type sees: one entry per field.
fn proxy_map(p: ProxyRef) -> Value {
    let attributes = p.attributes.into_iter().map(Value::Str).collect();
    Value::map([
        ("rpc_addr", Value::Str(p.rpc_addr)),
        ("obj_id", Value::from(p.obj_id)),
        ("ref_id", Value::from(p.ref_id)),
        ("type_str", Value::Str(p.type_str)),
        ("attributes", Value::List(attributes)),
    ])
}

// ---- Serialize / Deserialize for Value ----------------------------------

/// Lets `Value` sit inside serde types. `DateTime` and `Date` serialize as
/// ISO strings, `Array` and `Proxy` as maps of their fields (serde's data
/// model has nothing closer); `Object` cannot be serialized.
impl Serialize for Value {
    fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use ser::{SerializeMap, SerializeSeq, SerializeTuple};
        match self {
            Value::None => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(x) => s.serialize_f64(*x),
            Value::Str(x) => s.serialize_str(x),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                items.iter().try_for_each(|v| seq.serialize_element(v))?;
                seq.end()
            }
            Value::Tuple(items) => {
                let mut tuple = s.serialize_tuple(items.len())?;
                items.iter().try_for_each(|v| tuple.serialize_element(v))?;
                tuple.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                entries
                    .iter()
                    .try_for_each(|(k, v)| map.serialize_entry(k, v))?;
                map.end()
            }
            Value::DateTime(d) => s.serialize_str(&datetime_iso(d)),
            Value::Date(d) => s.serialize_str(&date_iso(d)),
            Value::Array(a) => array_map(a.clone()).serialize(s),
            Value::Proxy(p) => proxy_map(p.clone()).serialize(s),
            Value::Object(o) => Err(ser::Error::custom(format!(
                "cannot serialize local object {}: it travels by proxy only",
                o.type_str()
            ))),
        }
    }
}

/// Builds `None`, `Bool`, `Int`, `UInt`, `Float`, `Str`, `Bytes`, `List`
/// and `Map`; serde does not tell tuples from lists, so no `Tuple`.
impl<'de> de::Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> std::result::Result<Value, E> {
        int128(v).map_err(E::custom)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> std::result::Result<Value, E> {
        int128(v).map_err(E::custom)
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<Value, E> {
        Ok(Value::Bytes(bytes::Bytes::copy_from_slice(v)))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> std::result::Result<Value, E> {
        Ok(Value::Bytes(v.into()))
    }

    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::None)
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::None)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        // The hint comes from the peer's data: cap it rather than trust it.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

/// A 128-bit integer as `Int` or `UInt`, if it fits in one of them.
fn int128<N: TryInto<i64> + TryInto<u64> + Copy + fmt::Display>(
    n: N,
) -> std::result::Result<Value, SerdeError> {
    if let Ok(i) = TryInto::<i64>::try_into(n) {
        return Ok(Value::Int(i));
    }
    TryInto::<u64>::try_into(n)
        .map(Value::UInt)
        .map_err(|_| SerdeError(format!("integer {n} does not fit in 64 bits")))
}

// ---- Serializer: Rust -> Value ------------------------------------------

/// Serializes into a `Value`.
struct ValueSerializer;

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = SerdeError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = Variant<SeqBuilder>;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = Variant<MapBuilder>;

    fn serialize_bool(self, v: bool) -> Result<Value, SerdeError> {
        Ok(Value::Bool(v))
    }

    fn serialize_i8(self, v: i8) -> Result<Value, SerdeError> {
        Ok(Value::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<Value, SerdeError> {
        Ok(Value::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<Value, SerdeError> {
        Ok(Value::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result<Value, SerdeError> {
        Ok(Value::Int(v))
    }

    fn serialize_i128(self, v: i128) -> Result<Value, SerdeError> {
        int128(v)
    }

    fn serialize_u8(self, v: u8) -> Result<Value, SerdeError> {
        Ok(Value::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<Value, SerdeError> {
        Ok(Value::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<Value, SerdeError> {
        Ok(Value::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<Value, SerdeError> {
        Ok(Value::from(v))
    }

    fn serialize_u128(self, v: u128) -> Result<Value, SerdeError> {
        int128(v)
    }

    fn serialize_f32(self, v: f32) -> Result<Value, SerdeError> {
        Ok(Value::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<Value, SerdeError> {
        Ok(Value::Float(v))
    }

    fn serialize_char(self, v: char) -> Result<Value, SerdeError> {
        Ok(Value::Str(v.to_string()))
    }

    fn serialize_str(self, v: &str) -> Result<Value, SerdeError> {
        Ok(Value::Str(v.to_owned()))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<Value, SerdeError> {
        Ok(Value::Bytes(bytes::Bytes::copy_from_slice(v)))
    }

    fn serialize_none(self) -> Result<Value, SerdeError> {
        Ok(Value::None)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Value, SerdeError> {
        v.serialize(self)
    }

    fn serialize_unit(self) -> Result<Value, SerdeError> {
        Ok(Value::None)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, SerdeError> {
        Ok(Value::None)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, SerdeError> {
        Ok(Value::Str(variant.to_owned()))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<Value, SerdeError> {
        v.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Value, SerdeError> {
        Ok(Value::map([(variant, v.serialize(self)?)]))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, SerdeError> {
        Ok(SeqBuilder::new(len.unwrap_or(0), false))
    }

    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, SerdeError> {
        Ok(SeqBuilder::new(len, true))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, SerdeError> {
        Ok(SeqBuilder::new(len, true))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Variant<SeqBuilder>, SerdeError> {
        Ok(Variant {
            name: variant,
            body: SeqBuilder::new(len, true),
        })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder, SerdeError> {
        Ok(MapBuilder::new(len.unwrap_or(0)))
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapBuilder, SerdeError> {
        Ok(MapBuilder::new(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Variant<MapBuilder>, SerdeError> {
        Ok(Variant {
            name: variant,
            body: MapBuilder::new(len),
        })
    }
}

/// Collects the elements of a seq (`List`) or tuple (`Tuple`).
struct SeqBuilder {
    items: Vec<Value>,
    tuple: bool,
}

impl SeqBuilder {
    fn new(len: usize, tuple: bool) -> Self {
        SeqBuilder {
            items: Vec::with_capacity(len),
            tuple,
        }
    }

    fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerdeError> {
        self.items.push(v.serialize(ValueSerializer)?);
        Ok(())
    }

    fn build(self) -> Value {
        match self.tuple {
            true => Value::Tuple(self.items),
            false => Value::List(self.items),
        }
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = SerdeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerdeError> {
        self.push(v)
    }

    fn end(self) -> Result<Value, SerdeError> {
        Ok(self.build())
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Value;
    type Error = SerdeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerdeError> {
        self.push(v)
    }

    fn end(self) -> Result<Value, SerdeError> {
        Ok(self.build())
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Value;
    type Error = SerdeError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerdeError> {
        self.push(v)
    }

    fn end(self) -> Result<Value, SerdeError> {
        Ok(self.build())
    }
}

/// Collects the entries of a map or struct.
struct MapBuilder {
    entries: Vec<(Value, Value)>,
    /// A key given by `serialize_key`, waiting for its value.
    key: Option<Value>,
}

impl MapBuilder {
    fn new(len: usize) -> Self {
        MapBuilder {
            entries: Vec::with_capacity(len),
            key: None,
        }
    }

    fn push_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), SerdeError> {
        let v = v.serialize(ValueSerializer)?;
        self.entries.push((Value::Str(key.to_owned()), v));
        Ok(())
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = SerdeError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), SerdeError> {
        // Keys of any kind are kept: `Value::Map` is not limited to strings.
        self.key = Some(key.serialize(ValueSerializer)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerdeError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| SerdeError("map value serialized before its key".into()))?;
        self.entries.push((key, v.serialize(ValueSerializer)?));
        Ok(())
    }

    fn end(self) -> Result<Value, SerdeError> {
        Ok(Value::Map(self.entries))
    }
}

impl ser::SerializeStruct for MapBuilder {
    type Ok = Value;
    type Error = SerdeError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), SerdeError> {
        self.push_field(key, v)
    }

    fn end(self) -> Result<Value, SerdeError> {
        Ok(Value::Map(self.entries))
    }
}

/// A tuple or struct variant: its body, wrapped as `{variant: body}` at
/// the end (serde's externally tagged form).
struct Variant<B> {
    name: &'static str,
    body: B,
}

impl ser::SerializeTupleVariant for Variant<SeqBuilder> {
    type Ok = Value;
    type Error = SerdeError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerdeError> {
        self.body.push(v)
    }

    fn end(self) -> Result<Value, SerdeError> {
        Ok(Value::map([(self.name, self.body.build())]))
    }
}

impl ser::SerializeStructVariant for Variant<MapBuilder> {
    type Ok = Value;
    type Error = SerdeError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), SerdeError> {
        self.body.push_field(key, v)
    }

    fn end(self) -> Result<Value, SerdeError> {
        Ok(Value::map([(self.name, Value::Map(self.body.entries))]))
    }
}

// ---- Deserializer: Value -> Rust ----------------------------------------

/// Deserializes out of an owned `Value`. A wrapper rather than an impl on
/// `Value` so the private error type stays out of `Value`'s public impls.
struct ValueDeserializer(Value);

impl<'de> IntoDeserializer<'de, SerdeError> for ValueDeserializer {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// What a value is, in the words of serde's "invalid type" errors.
fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::None => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Int(i) => Unexpected::Signed(*i),
        Value::UInt(u) => Unexpected::Unsigned(*u),
        Value::Float(x) => Unexpected::Float(*x),
        Value::Str(s) => Unexpected::Str(s),
        Value::Bytes(b) => Unexpected::Bytes(b),
        Value::List(_) | Value::Tuple(_) => Unexpected::Seq,
        Value::Map(_) => Unexpected::Map,
        other => Unexpected::Other(other.kind()),
    }
}

/// Visits the elements of a sequence, checking that all were consumed.
fn visit_seq<'de, V, I>(items: I, visitor: V) -> Result<V::Value, SerdeError>
where
    V: Visitor<'de>,
    I: Iterator,
    I::Item: IntoDeserializer<'de, SerdeError>,
{
    let mut seq = de::value::SeqDeserializer::new(items);
    let out = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(out)
}

/// Visits the entries of a map, checking that all were consumed.
fn visit_map<'de, V: Visitor<'de>>(
    entries: Vec<(Value, Value)>,
    visitor: V,
) -> Result<V::Value, SerdeError> {
    let pairs = entries
        .into_iter()
        .map(|(k, v)| (ValueDeserializer(k), ValueDeserializer(v)));
    let mut map = de::value::MapDeserializer::new(pairs);
    let out = visitor.visit_map(&mut map)?;
    map.end()?;
    Ok(out)
}

impl<'de> de::Deserializer<'de> for ValueDeserializer {
    type Error = SerdeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        match self.0 {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => visitor.visit_i64(i),
            Value::UInt(u) => visitor.visit_u64(u),
            Value::Float(x) => visitor.visit_f64(x),
            Value::Str(s) => visitor.visit_string(s),
            Value::Bytes(b) => visitor.visit_byte_buf(b.into()),
            Value::List(items) | Value::Tuple(items) => {
                visit_seq(items.into_iter().map(ValueDeserializer), visitor)
            }
            Value::Map(entries) => visit_map(entries, visitor),
            Value::DateTime(d) => visitor.visit_string(datetime_iso(&d)),
            Value::Date(d) => visitor.visit_string(date_iso(&d)),
            Value::Array(a) => ValueDeserializer(array_map(a)).deserialize_any(visitor),
            Value::Proxy(p) => ValueDeserializer(proxy_map(p)).deserialize_any(visitor),
            Value::Object(o) => Err(de::Error::custom(format!(
                "cannot deserialize local object {}: it travels by proxy only",
                o.type_str()
            ))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        match self.0 {
            Value::None => visitor.visit_none(),
            other => visitor.visit_some(ValueDeserializer(other)),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        match self.0 {
            // `Vec<u8>` asks for a seq; Python peers send `bytes`.
            Value::Bytes(b) => visit_seq(b.into_iter(), visitor),
            other => ValueDeserializer(other).deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        match self.0 {
            Value::Str(s) => visitor.visit_enum(EnumAccess {
                tag: Value::Str(s),
                content: None,
            }),
            Value::Map(entries) if entries.len() == 1 => {
                let (tag, content) = entries.into_iter().next().expect("one entry");
                visitor.visit_enum(EnumAccess {
                    tag,
                    content: Some(content),
                })
            }
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a variant name or a map with a single key",
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeError> {
        // Nothing to walk: the value is already in memory.
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct map struct identifier
    }
}

/// An enum in externally tagged form: the variant's tag, and its content
/// unless it was written as a bare name.
struct EnumAccess {
    tag: Value,
    content: Option<Value>,
}

impl<'de> de::EnumAccess<'de> for EnumAccess {
    type Error = SerdeError;
    type Variant = VariantAccess;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, VariantAccess), SerdeError> {
        let tag = seed.deserialize(ValueDeserializer(self.tag))?;
        Ok((tag, VariantAccess(self.content)))
    }
}

/// The content of one variant.
struct VariantAccess(Option<Value>);

impl VariantAccess {
    /// The content, or an error naming the kind of variant that needed it.
    fn content(self, kind: &'static str) -> Result<ValueDeserializer, SerdeError> {
        self.0
            .map(ValueDeserializer)
            .ok_or_else(|| de::Error::invalid_type(Unexpected::UnitVariant, &kind))
    }
}

impl<'de> de::VariantAccess<'de> for VariantAccess {
    type Error = SerdeError;

    fn unit_variant(self) -> Result<(), SerdeError> {
        match self.0 {
            None | Some(Value::None) => Ok(()),
            Some(other) => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a unit variant",
            )),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, SerdeError> {
        seed.deserialize(self.content("a newtype variant")?)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        de::Deserializer::deserialize_seq(self.content("a tuple variant")?, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SerdeError> {
        de::Deserializer::deserialize_map(self.content("a struct variant")?, visitor)
    }
}
