//! The serde bridge: Rust types to `Value` and back, `Value` inside serde
//! types, and the errors of both directions.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use farcall::{from_value, to_value, Array, Date, DateTime, Error, ProxyRef, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reading {
    name: String,
    samples: Vec<Vec<i32>>,
    unit: Option<String>,
    gains: HashMap<String, f64>,
    kind: Kind,
    pair: (u8, bool),
    raw: Raw,
    at: Point,
    tag: char,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Unit,
    Newtype(i64),
    Tuple(i64, String),
    Struct { x: f64, y: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point(i32, i32);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Meters(f64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Marker;

/// Raw bytes through `serialize_bytes` / `deserialize_bytes` (what
/// serde_bytes would do; it is not a dependency).
#[derive(Debug, Clone, PartialEq)]
struct Raw(Vec<u8>);

impl Serialize for Raw {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl serde::de::Visitor<'_> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Raw, E> {
                Ok(Raw(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Raw, E> {
                Ok(Raw(v))
            }
        }
        d.deserialize_byte_buf(RawVisitor)
    }
}

fn reading() -> Reading {
    Reading {
        name: "probe".into(),
        samples: vec![vec![1, 2], vec![], vec![-3]],
        unit: Some("mV".into()),
        gains: HashMap::from([("a".to_string(), 1.5), ("b".to_string(), -2.0)]),
        kind: Kind::Struct { x: 1.0, y: 2.5 },
        pair: (7, true),
        raw: Raw(vec![0, 159, 255]),
        at: Point(3, -4),
        tag: 'µ',
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let value = to_value(v).unwrap();
    let back: T = from_value(value.clone()).unwrap();
    assert_eq!(&back, v, "through {value:?}");
}

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

/// The message of a codec error.
fn codec(err: Error) -> String {
    match err {
        Error::Codec(msg) => msg,
        other => panic!("expected a codec error, got {other:?}"),
    }
}

#[test]
fn struct_round_trips() {
    round_trip(&reading());
    let mut r = reading();
    r.unit = None;
    r.gains.clear();
    r.kind = Kind::Unit;
    round_trip(&r);
}

#[test]
fn struct_becomes_map_in_field_order() {
    let value = to_value(&reading()).unwrap();
    let Value::Map(entries) = &value else {
        panic!("a struct is a map: {value:?}");
    };
    let keys: Vec<Value> = entries.iter().map(|(k, _)| k.clone()).collect();
    let want = [
        "name", "samples", "unit", "gains", "kind", "pair", "raw", "at", "tag",
    ];
    assert_eq!(keys, want.map(s));
    assert_eq!(value.get("name"), Some(&s("probe")));
    assert_eq!(
        value.get("samples"),
        Some(&Value::List(vec![
            Value::List(vec![Value::Int(1), Value::Int(2)]),
            Value::List(vec![]),
            Value::List(vec![Value::Int(-3)]),
        ]))
    );
    assert_eq!(value.get("unit"), Some(&s("mV")));
    assert_eq!(
        value.get("pair"),
        Some(&Value::Tuple(vec![Value::Int(7), Value::Bool(true)]))
    );
    assert_eq!(
        value.get("raw"),
        Some(&Value::Bytes(Bytes::from_static(&[0, 159, 255])))
    );
    assert_eq!(
        value.get("at"),
        Some(&Value::Tuple(vec![Value::Int(3), Value::Int(-4)]))
    );
    assert_eq!(value.get("tag"), Some(&s("µ")));
}

#[test]
fn enum_variants_are_externally_tagged() {
    let cases = [
        (Kind::Unit, s("Unit")),
        (Kind::Newtype(5), Value::map([("Newtype", Value::Int(5))])),
        (
            Kind::Tuple(1, "a".into()),
            Value::map([("Tuple", Value::Tuple(vec![Value::Int(1), s("a")]))]),
        ),
        (
            Kind::Struct { x: 0.5, y: -1.0 },
            Value::map([(
                "Struct",
                Value::map([("x", Value::Float(0.5)), ("y", Value::Float(-1.0))]),
            )]),
        ),
    ];
    for (kind, want) in cases {
        assert_eq!(to_value(&kind).unwrap(), want);
        assert_eq!(from_value::<Kind>(want).unwrap(), kind);
    }
    // A unit variant also reads from `{name: None}`, and a tuple variant
    // from a list (what a Python peer sends).
    let unit = Value::map([("Unit", Value::None)]);
    assert_eq!(from_value::<Kind>(unit).unwrap(), Kind::Unit);
    let tuple = Value::map([("Tuple", Value::List(vec![Value::Int(2), s("b")]))]);
    assert_eq!(
        from_value::<Kind>(tuple).unwrap(),
        Kind::Tuple(2, "b".into())
    );
}

#[test]
fn scalars_and_wrappers() {
    assert_eq!(to_value(&()).unwrap(), Value::None);
    assert_eq!(to_value(&Marker).unwrap(), Value::None);
    assert_eq!(to_value(&Meters(2.5)).unwrap(), Value::Float(2.5));
    assert_eq!(to_value(&None::<i32>).unwrap(), Value::None);
    assert_eq!(to_value(&Some(3u8)).unwrap(), Value::Int(3));
    assert_eq!(to_value(&u64::MAX).unwrap(), Value::UInt(u64::MAX));
    assert_eq!(to_value(&1.5f32).unwrap(), Value::Float(1.5));
    assert_eq!(to_value("hi").unwrap(), s("hi"));
    round_trip(&Marker);
    round_trip(&Meters(2.5));
    round_trip(&(1i8, -2i16, 3u32, 4.0f32, 'x', String::from("y")));
    round_trip(&Some(vec![Some(1u16), None]));
    round_trip(&u64::MAX);
    round_trip(&i64::MIN);
    // Floats accept integers, as Python's do.
    assert_eq!(from_value::<f64>(Value::Int(2)).unwrap(), 2.0);
}

#[test]
fn wide_integers_in_range() {
    assert_eq!(to_value(&-5i128).unwrap(), Value::Int(-5));
    assert_eq!(
        to_value(&(u64::MAX as u128)).unwrap(),
        Value::UInt(u64::MAX)
    );
    assert_eq!(from_value::<i128>(Value::Int(-5)).unwrap(), -5);
    assert_eq!(
        from_value::<u128>(Value::UInt(u64::MAX)).unwrap(),
        u64::MAX as u128
    );
}

#[test]
fn maps_keep_their_key_types() {
    let m = BTreeMap::from([(1i32, "one".to_string()), (2, "two".to_string())]);
    assert_eq!(
        to_value(&m).unwrap(),
        Value::Map(vec![(Value::Int(1), s("one")), (Value::Int(2), s("two"))])
    );
    round_trip(&m);
    round_trip(&HashMap::from([("k".to_string(), vec![1.5f64])]));
}

#[test]
fn bytes_also_read_as_a_byte_vector() {
    let value = Value::Bytes(Bytes::from_static(b"\x01\x02"));
    assert_eq!(from_value::<Vec<u8>>(value.clone()).unwrap(), vec![1, 2]);
    assert_eq!(from_value::<Raw>(value).unwrap(), Raw(vec![1, 2]));
}

#[test]
fn value_inside_serde_types() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Envelope {
        id: u32,
        payload: Value,
    }
    let payload = Value::map([
        (
            "list",
            Value::List(vec![Value::Int(1), Value::None, Value::Bool(false)]),
        ),
        ("bytes", Value::Bytes(Bytes::from_static(b"ab"))),
        ("big", Value::UInt(u64::MAX)),
        ("float", Value::Float(0.25)),
        ("str", s("x")),
    ]);
    let env = Envelope {
        id: 9,
        payload: payload.clone(),
    };
    round_trip(&env);
    // Value -> Value is the identity, but for tuples: serde has no tuples
    // on the way in, so they come back as lists.
    assert_eq!(from_value::<Value>(payload.clone()).unwrap(), payload);
    let tuple = Value::Tuple(vec![Value::Int(1)]);
    assert_eq!(to_value(&tuple).unwrap(), tuple);
    assert_eq!(
        from_value::<Value>(tuple).unwrap(),
        Value::List(vec![Value::Int(1)])
    );
}

#[test]
fn dates_arrays_and_proxies_read_as_strings_and_maps() {
    let date = Date::new(2024, 2, 29).unwrap();
    let dt = DateTime::new(date, 13, 5, 9, 42).unwrap();
    assert_eq!(
        from_value::<String>(Value::Date(date)).unwrap(),
        "2024-02-29"
    );
    assert_eq!(
        from_value::<String>(Value::DateTime(dt)).unwrap(),
        "2024-02-29T13:05:09.000042"
    );
    let whole_second = DateTime::new(date, 0, 0, 1, 0).unwrap();
    assert_eq!(
        to_value(&Value::DateTime(whole_second)).unwrap(),
        s("2024-02-29T00:00:01")
    );

    #[derive(Debug, Deserialize)]
    struct ArrayFields {
        dtype: String,
        shape: Vec<usize>,
        data: Vec<u8>,
    }
    let array = Array {
        dtype: "uint8".into(),
        shape: vec![1, 3],
        data: Bytes::from_static(&[4, 5, 6]),
        scalar: false,
    };
    let a: ArrayFields = from_value(Value::Array(array)).unwrap();
    assert_eq!(
        (a.dtype.as_str(), a.shape, a.data),
        ("uint8", vec![1, 3], vec![4, 5, 6])
    );

    #[derive(Debug, PartialEq, Deserialize)]
    struct ProxyFields {
        rpc_addr: String,
        obj_id: u64,
        ref_id: u64,
        type_str: String,
        attributes: Vec<String>,
    }
    let proxy = ProxyRef {
        rpc_addr: "unix:/tmp/x".into(),
        obj_id: 3,
        ref_id: 4,
        type_str: "<class 'C'>".into(),
        attributes: vec!["a".into()],
    };
    let p: ProxyFields = from_value(Value::Proxy(proxy)).unwrap();
    assert_eq!(
        p,
        ProxyFields {
            rpc_addr: "unix:/tmp/x".into(),
            obj_id: 3,
            ref_id: 4,
            type_str: "<class 'C'>".into(),
            attributes: vec!["a".into()],
        }
    );
}

#[test]
fn deserialize_errors_are_codec_errors() {
    let msg = codec(from_value::<i32>(s("one")).unwrap_err());
    assert!(msg.contains("invalid type"), "{msg}");
    let msg = codec(from_value::<u8>(Value::Int(300)).unwrap_err());
    assert!(msg.contains("300"), "{msg}");
    let msg = codec(from_value::<Reading>(Value::map([("name", s("x"))])).unwrap_err());
    assert!(msg.contains("missing field"), "{msg}");
    let msg = codec(from_value::<(i32, i32)>(Value::List(vec![Value::Int(1)])).unwrap_err());
    assert!(msg.contains("invalid length"), "{msg}");
    let msg =
        codec(from_value::<[i32; 1]>(Value::List(vec![Value::Int(1), Value::Int(2)])).unwrap_err());
    assert!(msg.contains("invalid length"), "{msg}");
    let msg = codec(from_value::<char>(s("ab")).unwrap_err());
    assert!(msg.contains("invalid value"), "{msg}");
}

#[test]
fn enum_errors() {
    let two = Value::map([("Unit", Value::None), ("Newtype", Value::Int(1))]);
    let msg = codec(from_value::<Kind>(two).unwrap_err());
    assert!(msg.contains("single key"), "{msg}");
    let msg = codec(from_value::<Kind>(s("Nope")).unwrap_err());
    assert!(msg.contains("unknown variant"), "{msg}");
    let msg = codec(from_value::<Kind>(s("Newtype")).unwrap_err());
    assert!(msg.contains("newtype variant"), "{msg}");
    let msg = codec(from_value::<Kind>(Value::map([("Unit", Value::Int(1))])).unwrap_err());
    assert!(msg.contains("unit variant"), "{msg}");
    let msg = codec(from_value::<Kind>(Value::Int(1)).unwrap_err());
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn local_objects_have_no_serde_form() {
    #[farcall::remote]
    pub struct Thing {}
    #[farcall::remote]
    impl Thing {}
    let obj = Value::Object(farcall::object(Thing {}));
    let msg = codec(to_value(&obj).unwrap_err());
    assert!(msg.contains("<class 'Thing'>"), "{msg}");
    let msg = codec(from_value::<Value>(obj).unwrap_err());
    assert!(msg.contains("travels by proxy"), "{msg}");
}

#[test]
fn serialize_errors_are_codec_errors() {
    let msg = codec(to_value(&(1i128 << 70)).unwrap_err());
    assert!(msg.contains("64 bits"), "{msg}");
    let msg = codec(to_value(&u128::MAX).unwrap_err());
    assert!(msg.contains("64 bits"), "{msg}");

    /// A type whose `Serialize` fails, like a `Mutex` that is poisoned.
    struct Failing;
    impl Serialize for Failing {
        fn serialize<S: Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refused"))
        }
    }
    assert_eq!(codec(to_value(&vec![Failing]).unwrap_err()), "refused");
}
