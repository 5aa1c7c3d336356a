//! Codec tests: byte-exact vectors for the pyacq formats, round trips for
//! all three, out-of-band buffers, and robustness against hostile input.
//!
//! The expected bytes were worked out by hand from the format rules in
//! docs/encodings.md; each carries the Python expression pyacq would
//! serialize to the same bytes.

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;
use farcall::codec::{
    decode, decode_fields, encode, encode_fields, Exporter, Field, Format, NoExport,
};
use farcall::{Array, Date, DateTime, ObjectRef, ProxyRef, RemoteObject, Result, Value};

// ---- helpers -----------------------------------------------------------

fn enc(format: Format, value: &Value) -> Vec<u8> {
    let encoded = encode(format, value, &mut NoExport).expect("encode");
    assert!(encoded.buffers.is_empty());
    encoded.body
}

fn dec(format: Format, body: &[u8]) -> Value {
    decode(format, &Bytes::copy_from_slice(body), &[]).expect("decode")
}

/// pyacq formats turn tuples into lists on the way.
fn listified(value: &Value) -> Value {
    match value {
        Value::List(items) | Value::Tuple(items) => {
            Value::List(items.iter().map(listified).collect())
        }
        Value::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (listified(k), listified(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Checks that `value` encodes to exactly `expected` and decodes back.
fn check_msgpack(value: impl Into<Value>, expected: &[u8]) {
    let value = value.into();
    assert_eq!(
        hex(&enc(Format::Msgpack, &value)),
        hex(expected),
        "{value:?}"
    );
    assert_eq!(dec(Format::Msgpack, expected), listified(&value));
}

/// Checks that `value` encodes to exactly `expected` and decodes back.
fn check_json(value: impl Into<Value>, expected: &str) {
    let value = value.into();
    let body = enc(Format::Json, &value);
    assert_eq!(std::str::from_utf8(&body).unwrap(), expected, "{value:?}");
    assert_eq!(dec(Format::Json, expected.as_bytes()), listified(&value));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn list(items: Vec<Value>) -> Value {
    Value::List(items)
}

fn tuple(items: Vec<Value>) -> Value {
    Value::Tuple(items)
}

fn bytes(b: &[u8]) -> Value {
    Value::Bytes(Bytes::copy_from_slice(b))
}

fn datetime() -> Value {
    let date = Date::new(2024, 1, 2).unwrap();
    Value::DateTime(DateTime::new(date, 3, 4, 5, 6).unwrap())
}

fn date() -> Value {
    Value::Date(Date::new(2024, 1, 2).unwrap())
}

fn f64_array() -> Value {
    let data: Vec<u8> = [1.0f64, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    Value::Array(Array {
        dtype: "float64".into(),
        shape: vec![2],
        data: data.into(),
        scalar: false,
    })
}

fn i32_array() -> Value {
    let data: Vec<u8> = [1i32, 2, 3, -1]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    Value::Array(Array {
        dtype: "int32".into(),
        shape: vec![2, 2],
        data: data.into(),
        scalar: false,
    })
}

fn proxy_ref() -> ProxyRef {
    ProxyRef {
        rpc_addr: "tcp://127.0.0.1:5000".into(),
        obj_id: 7,
        ref_id: 3,
        type_str: "<class 'list'>".into(),
        attributes: vec!["append".into()],
    }
}

fn proxy() -> Value {
    Value::Proxy(proxy_ref())
}

fn reply() -> Value {
    Value::map([
        ("action", Value::from("return")),
        ("req_id", Value::Int(3)),
        ("rval", Value::Int(3)),
        ("error", Value::None),
    ])
}

fn request_opts(obj: Value) -> Value {
    Value::map([
        ("obj", obj),
        ("args", list(vec![1.into(), 2.into()])),
        ("kwargs", Value::Map(vec![])),
    ])
}

/// A local object that a test exporter turns into `proxy_ref()`.
struct Counter;

impl RemoteObject for Counter {
    fn type_str(&self) -> String {
        "<class 'Counter'>".into()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Exports every object as `proxy_ref()` with its type, counting calls.
#[derive(Default)]
struct TestExporter {
    exported: usize,
}

impl Exporter for TestExporter {
    fn export(&mut self, obj: &ObjectRef) -> Result<ProxyRef> {
        self.exported += 1;
        Ok(ProxyRef {
            type_str: obj.type_str(),
            ..proxy_ref()
        })
    }
}

// ---- msgpack vectors ---------------------------------------------------

#[test]
fn msgpack_ints() {
    let cases: &[(i64, &[u8])] = &[
        (0, b"\x00"),                                           // 0
        (127, b"\x7f"),                                         // 127
        (128, b"\xcc\x80"),                                     // 128
        (255, b"\xcc\xff"),                                     // 255
        (256, b"\xcd\x01\x00"),                                 // 256
        (65535, b"\xcd\xff\xff"),                               // 2**16-1
        (65536, b"\xce\x00\x01\x00\x00"),                       // 2**16
        (4294967295, b"\xce\xff\xff\xff\xff"),                  // 2**32-1
        (4294967296, b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00"),  // 2**32
        (i64::MAX, b"\xcf\x7f\xff\xff\xff\xff\xff\xff\xff"),    // 2**63-1
        (-1, b"\xff"),                                          // -1
        (-32, b"\xe0"),                                         // -32
        (-33, b"\xd0\xdf"),                                     // -33
        (-128, b"\xd0\x80"),                                    // -128
        (-129, b"\xd1\xff\x7f"),                                // -129
        (-32768, b"\xd1\x80\x00"),                              // -2**15
        (-32769, b"\xd2\xff\xff\x7f\xff"),                      // -2**15-1
        (-2147483648, b"\xd2\x80\x00\x00\x00"),                 // -2**31
        (-2147483649, b"\xd3\xff\xff\xff\xff\x7f\xff\xff\xff"), // -2**31-1
        (i64::MIN, b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00"),    // -2**63
    ];
    for &(n, expected) in cases {
        check_msgpack(n, expected);
    }
    // 2**64-1
    check_msgpack(
        Value::UInt(u64::MAX),
        b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
    );
}

#[test]
fn msgpack_scalars() {
    check_msgpack(Value::None, b"\xc0"); // None
    check_msgpack(true, b"\xc3"); // True
    check_msgpack(false, b"\xc2"); // False
    check_msgpack(1.0, b"\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00"); // 1.0
    check_msgpack(0.1, b"\xcb\x3f\xb9\x99\x99\x99\x99\x99\x9a"); // 0.1
    check_msgpack(-2.5, b"\xcb\xc0\x04\x00\x00\x00\x00\x00\x00"); // -2.5
    check_msgpack(f64::INFINITY, b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00"); // float('inf')
}

#[test]
fn msgpack_strings_and_bytes() {
    check_msgpack("", b"\xa0"); // ''
    check_msgpack("abc", b"\xa3abc"); // 'abc'
    check_msgpack("é€", b"\xa5\xc3\xa9\xe2\x82\xac"); // 'é€'
    let x = |n: usize| "x".repeat(n);
    check_msgpack(x(31), &cat(&[b"\xbf", x(31).as_bytes()])); // 'x'*31
    check_msgpack(x(32), &cat(&[b"\xd9\x20", x(32).as_bytes()])); // 'x'*32
    check_msgpack(x(255), &cat(&[b"\xd9\xff", x(255).as_bytes()])); // 'x'*255
    check_msgpack(x(256), &cat(&[b"\xda\x01\x00", x(256).as_bytes()])); // 'x'*256
    check_msgpack(
        x(65536),
        &cat(&[b"\xdb\x00\x01\x00\x00", x(65536).as_bytes()]),
    ); // 'x'*65536

    check_msgpack(bytes(b""), b"\xc4\x00"); // b''
    check_msgpack(bytes(b"\x01\x02"), b"\xc4\x02\x01\x02"); // b'\x01\x02'
    let b = |n: usize| vec![0xabu8; n];
    check_msgpack(bytes(&b(256)), &cat(&[b"\xc5\x01\x00", &b(256)])); // b'\xab'*256
    check_msgpack(
        bytes(&b(65536)),
        &cat(&[b"\xc6\x00\x01\x00\x00", &b(65536)]),
    ); // b'\xab'*65536
}

#[test]
fn msgpack_containers() {
    check_msgpack(list(vec![]), b"\x90"); // []
                                          // [1, [2, 'a']]
    check_msgpack(
        list(vec![1.into(), list(vec![2.into(), "a".into()])]),
        b"\x92\x01\x92\x02\xa1a",
    );
    // (1, 2) -> a list
    check_msgpack(tuple(vec![1.into(), 2.into()]), b"\x92\x01\x02");
    // list(range(16))
    let sixteen: Vec<Value> = (0..16).map(Value::from).collect();
    let items: Vec<u8> = (0..16).collect();
    check_msgpack(list(sixteen), &cat(&[b"\xdc\x00\x10", &items]));

    check_msgpack(Value::Map(vec![]), b"\x80"); // {}
                                                // {'a': 1, 'b': [True, None]}
    check_msgpack(
        Value::map([
            ("a", Value::Int(1)),
            ("b", list(vec![true.into(), Value::None])),
        ]),
        b"\x82\xa1a\x01\xa1b\x92\xc3\xc0",
    );
    // {1: 'x', -1: 'y'}
    check_msgpack(
        Value::Map(vec![(1.into(), "x".into()), ((-1).into(), "y".into())]),
        b"\x82\x01\xa1x\xff\xa1y",
    );
    // {i: None for i in range(16)}
    let entries: Vec<(Value, Value)> = (0..16).map(|i| (Value::from(i), Value::None)).collect();
    let body: Vec<u8> = (0..16u8).flat_map(|i| [i, 0xc0]).collect();
    check_msgpack(Value::Map(entries), &cat(&[b"\xde\x00\x10", &body]));
}

#[test]
fn msgpack_tagged_types() {
    // datetime.datetime(2024, 1, 2, 3, 4, 5, 6)
    check_msgpack(
        datetime(),
        b"\x82\xaf___type_name___\xa8datetime\xa4data\xba2024-01-02T03:04:05.000006",
    );
    // datetime.date(2024, 1, 2)
    check_msgpack(
        date(),
        b"\x82\xaf___type_name___\xa4date\xa4data\xaa2024-01-02",
    );
    // np.array([1.0, 2.0])
    check_msgpack(
        f64_array(),
        &cat(&[
            b"\x84\xaf___type_name___\xa7ndarray\xa4data\xc4\x10",
            b"\x00\x00\x00\x00\x00\x00\xf0\x3f\x00\x00\x00\x00\x00\x00\x00\x40",
            b"\xa5dtype\xa7float64\xa5shape\x91\x02",
        ]),
    );
    // np.array([[1, 2], [3, -1]], dtype=np.int32)
    check_msgpack(
        i32_array(),
        &cat(&[
            b"\x84\xaf___type_name___\xa7ndarray\xa4data\xc4\x10",
            b"\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\xff\xff\xff\xff",
            b"\xa5dtype\xa5int32\xa5shape\x92\x02\x02",
        ]),
    );
    check_msgpack(proxy(), PROXY_MSGPACK);
}

/// ObjectProxy(rpc_addr=b'tcp://127.0.0.1:5000', obj_id=7, ref_id=3,
/// type_str="<class 'list'>", attributes=('append',))
const PROXY_MSGPACK: &[u8] = b"\x86\xaf___type_name___\xa5proxy\
\xa8rpc_addr\xc4\x14tcp://127.0.0.1:5000\xa6obj_id\x07\xa6ref_id\x03\
\xa8type_str\xae<class 'list'>\xaaattributes\x91\xa6append";

#[test]
fn msgpack_messages() {
    // {'action': 'return', 'req_id': 3, 'rval': 3, 'error': None}
    check_msgpack(
        reply(),
        b"\x84\xa6action\xa6return\xa6req_id\x03\xa4rval\x03\xa5error\xc0",
    );
    // {'obj': <proxy>, 'args': [1, 2], 'kwargs': {}}
    check_msgpack(
        request_opts(proxy()),
        &cat(&[
            b"\x83\xa3obj",
            PROXY_MSGPACK,
            b"\xa4args\x92\x01\x02\xa6kwargs\x80",
        ]),
    );
}

#[test]
fn msgpack_decodes_what_it_does_not_write() {
    // float32, uint8 for small values, bin/str forms a packer may pick
    let cases: &[(&[u8], Value)] = &[
        (b"\xca\x3f\xc0\x00\x00", Value::Float(1.5)),
        (b"\xcc\x01", Value::Int(1)),
        (b"\xd3\x00\x00\x00\x00\x00\x00\x00\x05", Value::Int(5)),
        (b"\xda\x00\x01z", Value::from("z")),
        (b"\xdd\x00\x00\x00\x01\xc0", list(vec![Value::None])),
        // pyacq's old 'none' tag
        (b"\x81\xaf___type_name___\xa4none", Value::None),
        // a bytes-tagged map with base64 data
        (
            b"\x82\xaf___type_name___\xa5bytes\xa4data\xa4AAH/",
            bytes(b"\x00\x01\xff"),
        ),
        // an unknown tag stays a map
        (
            b"\x81\xaf___type_name___\xa3foo",
            Value::map([("___type_name___", Value::from("foo"))]),
        ),
    ];
    for (body, want) in cases {
        assert_eq!(&dec(Format::Msgpack, body), want, "{}", hex(body));
    }
    // rpc_addr as str, optional fields missing
    let body = b"\x83\xaf___type_name___\xa5proxy\xa8rpc_addr\xa1a\xa6obj_id\x01";
    let Value::Proxy(p) = dec(Format::Msgpack, body) else {
        panic!("not a proxy")
    };
    assert_eq!((p.rpc_addr.as_str(), p.obj_id, p.ref_id), ("a", 1, 0));
}

#[test]
fn msgpack_bin_decodes_zero_copy_unless_short() {
    // Long binary data is a slice of the message; short data is copied,
    // so that keeping it does not keep the whole read buffer alive.
    let data: Vec<u8> = (0..1024).flat_map(|x| f64::from(x).to_le_bytes()).collect();
    let long_array = Value::Array(Array {
        dtype: "float64".into(),
        shape: vec![1024],
        data: data.into(),
        scalar: false,
    });
    let body = Bytes::from(enc(
        Format::Msgpack,
        &list(vec![bytes(&[7; 8192]), long_array, bytes(b"hello")]),
    ));
    let value = decode(Format::Msgpack, &body, &[]).unwrap();
    let Value::List(items) = value else { panic!() };
    let (Value::Bytes(long), Value::Array(a), Value::Bytes(short)) =
        (&items[0], &items[1], &items[2])
    else {
        panic!()
    };
    let range = body.as_ptr_range();
    assert!(range.contains(&long.as_ptr()));
    assert!(range.contains(&a.data.as_ptr()));
    assert!(!range.contains(&short.as_ptr()));
    assert_eq!(&short[..], b"hello");
}

// ---- json vectors ------------------------------------------------------

#[test]
fn json_scalars() {
    check_json(Value::None, "null"); // None
    check_json(true, "true"); // True
    check_json(false, "false"); // False
    check_json(0, "0"); // 0
    check_json(-5, "-5"); // -5
    check_json(i64::MIN, "-9223372036854775808"); // -2**63
    check_json(Value::UInt(u64::MAX), "18446744073709551615"); // 2**64-1
}

#[test]
fn json_floats_as_python_repr() {
    let cases: &[(f64, &str)] = &[
        (1.0, "1.0"),
        (0.1, "0.1"),
        (-0.0, "-0.0"),
        (1e-5, "1e-05"),
        (0.0001, "0.0001"),
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (1.5e300, "1.5e+300"),
        (2.5e-300, "2.5e-300"),
        (123456.789, "123456.789"),
        (f64::INFINITY, "Infinity"),
        (f64::NEG_INFINITY, "-Infinity"),
        (f64::NAN, "NaN"),
    ];
    for &(x, repr) in cases {
        check_json(x, repr); // json.dumps(x)
    }
    // [float('nan'), {'k': float('-inf')}]
    check_json(
        list(vec![
            f64::NAN.into(),
            Value::map([("k", f64::NEG_INFINITY.into())]),
        ]),
        r#"[NaN, {"k": -Infinity}]"#,
    );
}

#[test]
fn json_strings() {
    check_json("abc", r#""abc""#); // 'abc'
    check_json("é€", r#""\u00e9\u20ac""#); // 'é€'
    check_json("😀", r#""\ud83d\ude00""#); // '\U0001F600'
                                           // 'a"b\\c\n\r\t\b\f\x01\x7f~'
    check_json(
        "a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{7f}~",
        r#""a\"b\\c\n\r\t\b\f\u0001\u007f~""#,
    );
    let long = "y".repeat(70_000);
    check_json(long.as_str(), &format!("\"{long}\"")); // 'y'*70000
}

#[test]
fn json_containers_and_keys() {
    check_json(list(vec![]), "[]"); // []
    check_json(Value::Map(vec![]), "{}"); // {}
                                          // [1, [2, 'a']]
    check_json(
        list(vec![1.into(), list(vec![2.into(), "a".into()])]),
        r#"[1, [2, "a"]]"#,
    );
    // (1, 2)
    check_json(tuple(vec![1.into(), 2.into()]), "[1, 2]");
    // {'a': 1, 'b': [True, None]}
    check_json(
        Value::map([
            ("a", Value::Int(1)),
            ("b", list(vec![true.into(), Value::None])),
        ]),
        r#"{"a": 1, "b": [true, null]}"#,
    );
    // {1: 'x', 2.5: 'y', None: 'z', False: 'w'}: keys become strings
    let map = Value::Map(vec![
        (1.into(), "x".into()),
        (2.5.into(), "y".into()),
        (Value::None, "z".into()),
        (false.into(), "w".into()),
    ]);
    let body = enc(Format::Json, &map);
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"1": "x", "2.5": "y", "null": "z", "false": "w"}"#
    );
    // {(1, 2): 3} raises TypeError in Python
    let bad = Value::Map(vec![(tuple(vec![1.into(), 2.into()]), 3.into())]);
    assert!(encode(Format::Json, &bad, &mut NoExport).is_err());
    assert!(encode(
        Format::Json,
        &Value::Map(vec![(bytes(b"k"), 1.into())]),
        &mut NoExport
    )
    .is_err());
}

#[test]
fn json_tagged_types() {
    // b'\x00\x01\xff'
    check_json(
        bytes(b"\x00\x01\xff"),
        r#"{"___type_name___": "bytes", "data": "AAH/"}"#,
    );
    // datetime.datetime(2024, 1, 2, 3, 4, 5, 6)
    check_json(
        datetime(),
        r#"{"___type_name___": "datetime", "data": "2024-01-02T03:04:05.000006"}"#,
    );
    // datetime.date(2024, 1, 2)
    check_json(
        date(),
        r#"{"___type_name___": "date", "data": "2024-01-02"}"#,
    );
    // np.array([1.0, 2.0])
    check_json(
        f64_array(),
        r#"{"___type_name___": "ndarray", "data": "AAAAAAAA8D8AAAAAAAAAQA==", "dtype": "float64", "shape": [2]}"#,
    );
    // np.array([[1, 2], [3, -1]], dtype=np.int32)
    check_json(
        i32_array(),
        r#"{"___type_name___": "ndarray", "data": "AQAAAAIAAAADAAAA/////w==", "dtype": "int32", "shape": [2, 2]}"#,
    );
    check_json(proxy(), PROXY_JSON);
}

/// The proxy of `PROXY_MSGPACK`; its bytes address becomes a bytes map.
const PROXY_JSON: &str = concat!(
    r#"{"___type_name___": "proxy", "rpc_addr": {"___type_name___": "bytes", "#,
    r#""data": "dGNwOi8vMTI3LjAuMC4xOjUwMDA="}, "obj_id": 7, "ref_id": 3, "#,
    r#""type_str": "<class 'list'>", "attributes": ["append"]}"#
);

#[test]
fn json_messages() {
    // {'action': 'return', 'req_id': 3, 'rval': 3, 'error': None}
    check_json(
        reply(),
        r#"{"action": "return", "req_id": 3, "rval": 3, "error": null}"#,
    );
    // {'obj': <proxy>, 'args': [1, 2], 'kwargs': {}}
    check_json(
        request_opts(proxy()),
        &format!(r#"{{"obj": {PROXY_JSON}, "args": [1, 2], "kwargs": {{}}}}"#),
    );
}

#[test]
fn json_decodes_loosely_written_documents() {
    let cases: &[(&str, Value)] = &[
        (" [1,2 ,\n3] ", list(vec![1.into(), 2.into(), 3.into()])),
        (r#""\u00E9""#, "é".into()),
        ("1E2", Value::Float(100.0)),
        ("18446744073709551615", Value::UInt(u64::MAX)),
        (
            r#"{"b": 1, "a": 2}"#,
            Value::map([("b", 1.into()), ("a", 2.into())]),
        ),
        (
            r#"["NaN", "-Infinity"]"#,
            list(vec!["NaN".into(), "-Infinity".into()]),
        ),
        (
            r#"{"Infinity": [Infinity, "x"]}"#,
            Value::map([("Infinity", list(vec![f64::INFINITY.into(), "x".into()]))]),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&dec(Format::Json, text.as_bytes()), want, "{text}");
    }
}

// ---- round trips -------------------------------------------------------

fn every_variant() -> Vec<Value> {
    vec![
        Value::None,
        true.into(),
        Value::Int(-42),
        Value::Int(i64::MAX),
        Value::UInt(u64::MAX),
        Value::Float(3.25),
        Value::Float(f64::NAN),
        "naïve ☃ 😀".into(),
        bytes(b"\x00raw\xff"),
        list(vec![1.into(), "two".into(), list(vec![])]),
        tuple(vec![1.into(), tuple(vec![2.into()]), tuple(vec![])]),
        Value::Map(vec![
            ("k".into(), Value::None),
            (7.into(), list(vec![tuple(vec![])])),
        ]),
        Value::map([("___type_name___", Value::from("user data"))]),
        datetime(),
        Value::DateTime(DateTime::new(Date::new(1, 1, 1).unwrap(), 0, 0, 0, 0).unwrap()),
        date(),
        Value::Date(Date::new(9999, 12, 31).unwrap()),
        f64_array(),
        i32_array(),
        Value::Array(Array {
            dtype: "<U2".into(),
            shape: vec![],
            data: Bytes::from_static(&[0; 8]),
            scalar: false,
        }),
        proxy(),
        Value::Proxy(ProxyRef {
            attributes: vec![],
            obj_id: u64::MAX,
            ..proxy_ref()
        }),
        request_opts(proxy()),
        reply(),
    ]
}

/// JSON map keys are strings, so the int key comes back as a string.
fn json_keyed(value: &Value) -> Value {
    match listified(value) {
        Value::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| match k {
                    Value::Int(i) => (Value::Str(i.to_string()), v),
                    k => (k, v),
                })
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn round_trips() {
    for value in every_variant() {
        for format in [Format::Msgpack, Format::Json, Format::Farcall] {
            let encoded = encode(format, &value, &mut NoExport).unwrap();
            let body = Bytes::from(encoded.body);
            let back = decode(format, &body, &encoded.buffers).unwrap();
            let want = match format {
                Format::Farcall => value.clone(),
                Format::Msgpack => listified(&value),
                Format::Json => json_keyed(&value),
            };
            assert_eq!(back, want, "{format:?}");
        }
    }
}

#[test]
fn objects_are_exported_as_proxies() {
    let obj: ObjectRef = Arc::new(Counter);
    let value = request_opts(Value::Object(obj));
    let want = request_opts(Value::Proxy(ProxyRef {
        type_str: "<class 'Counter'>".into(),
        ..proxy_ref()
    }));
    for format in [Format::Msgpack, Format::Json, Format::Farcall] {
        let mut exporter = TestExporter::default();
        let encoded = encode(format, &value, &mut exporter).unwrap();
        assert_eq!(exporter.exported, 1);
        let back = decode(format, &Bytes::from(encoded.body), &[]).unwrap();
        assert_eq!(back, want, "{format:?}");
        assert!(encode(format, &value, &mut NoExport).is_err());
    }
}

#[test]
fn farcall_keeps_user_maps_that_look_tagged() {
    let value = Value::map([
        ("___type_name___", Value::from("bytes")),
        ("data", Value::from("AAH/")),
    ]);
    let body = Bytes::from(encode(Format::Farcall, &value, &mut NoExport).unwrap().body);
    assert_eq!(decode(Format::Farcall, &body, &[]).unwrap(), value);
}

#[test]
fn farcall_ext_layout() {
    // (1, 2): ext32 type 1 around a fixarray
    let body = enc(Format::Farcall, &tuple(vec![1.into(), 2.into()]));
    assert_eq!(body, b"\xc9\x00\x00\x00\x03\x01\x92\x01\x02");
    // date(2024, 1, 2): fixext4 type 3, year << 9 | month << 5 | day
    let bits = (2024u32 << 9 | 1 << 5 | 2).to_be_bytes();
    assert_eq!(enc(Format::Farcall, &date()), cat(&[b"\xd6\x03", &bits]));
    // datetime: fixext8 type 2, the date bits above the time bits
    let bits = (u64::from(2024u32 << 9 | 1 << 5 | 2) << 37 | 3 << 32 | 4 << 26 | 5 << 20 | 6)
        .to_be_bytes();
    assert_eq!(
        enc(Format::Farcall, &datetime()),
        cat(&[b"\xd7\x02", &bits])
    );
}

#[test]
fn out_of_band_buffers_are_zero_copy() {
    let big = Bytes::from(vec![0x5a; 64 << 20]);
    let array = Value::Array(Array {
        dtype: "uint8".into(),
        shape: vec![64 << 20],
        data: big.clone(),
        scalar: false,
    });
    let value = tuple(vec![Value::Bytes(big.clone()), array, bytes(b"small")]);
    let encoded = encode(Format::Farcall, &value, &mut NoExport).unwrap();
    assert!(encoded.body.len() < 100, "the body stays small");
    assert_eq!(encoded.buffers.len(), 2);
    assert!(encoded.buffers.iter().all(|b| b.as_ptr() == big.as_ptr()));

    // What a receiver has: the body and separately received frames.
    let frames = [
        Bytes::from(vec![1u8; 64 << 20]),
        Bytes::from(vec![2u8; 64 << 20]),
    ];
    let back = decode(Format::Farcall, &Bytes::from(encoded.body), &frames).unwrap();
    let Value::Tuple(items) = back else { panic!() };
    let (Value::Bytes(b), Value::Array(a)) = (&items[0], &items[1]) else {
        panic!()
    };
    assert_eq!(b.as_ptr(), frames[0].as_ptr());
    assert_eq!(a.data.as_ptr(), frames[1].as_ptr());
    assert_eq!(items[2], bytes(b"small"));
}

#[test]
fn out_of_band_index_out_of_range_is_an_error() {
    // ext32 type 6 with buffer index 0, no buffers supplied
    let body = Bytes::from_static(b"\xc9\x00\x00\x00\x01\x06\x00");
    assert!(decode(Format::Farcall, &body, &[]).is_err());
    assert!(decode(Format::Farcall, &body, &[Bytes::from_static(b"x")]).is_ok());
}

// ---- robustness --------------------------------------------------------

/// A tiny xorshift generator: reproducible noise without extra crates.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn samples() -> Vec<Value> {
    let mut values = every_variant();
    values.push(list(every_variant()));
    values
}

fn all_decoders(body: &[u8]) {
    let body = Bytes::copy_from_slice(body);
    let buffers = [Bytes::from_static(b"frame")];
    for format in [Format::Msgpack, Format::Json, Format::Farcall] {
        // Any result is fine; a panic fails the test.
        let _ = decode(format, &body, &buffers);
    }
}

#[test]
fn every_prefix_of_valid_encodings_fails_cleanly() {
    for format in [Format::Msgpack, Format::Json, Format::Farcall] {
        for value in samples() {
            let body = encode(format, &value, &mut NoExport).unwrap().body;
            for end in 0..body.len() {
                let prefix = Bytes::copy_from_slice(&body[..end]);
                // A JSON number prefix ("12" of "123") is itself valid.
                let result = decode(format, &prefix, &[]);
                if format != Format::Json {
                    assert!(result.is_err(), "{format:?} prefix {end} of {value:?}");
                }
                all_decoders(&body[..end]);
            }
            let mut trailing = body.clone();
            trailing.push(0xc0);
            assert!(decode(format, &Bytes::from(trailing), &[]).is_err());
        }
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..4000 {
        let len = (rng.next() % 64) as usize;
        all_decoders(&rng.bytes(len));
    }
    // Strings of JSON tokens get past the UTF-8 check into the parser.
    let tokens: Vec<&str> = concat!(
        r#"{|}|[|]|"|,|:|0|7|-|.|e|+| |\|u|d83d|null|true|NaN|Infinity|é|😀|"#,
        "___type_name___|ndarray|data|proxy|date|shape|dtype",
    )
    .split('|')
    .collect();
    for _ in 0..4000 {
        let len = rng.next() % 40;
        let text: String = (0..len)
            .map(|_| tokens[(rng.next() % tokens.len() as u64) as usize])
            .collect();
        all_decoders(text.as_bytes());
    }
    // Flipped bytes in valid messages reach deeper into the decoders.
    for format in [Format::Msgpack, Format::Json, Format::Farcall] {
        for value in samples() {
            let body = encode(format, &value, &mut NoExport).unwrap().body;
            for _ in 0..50 {
                let mut mutated = body.clone();
                for _ in 0..1 + rng.next() % 3 {
                    let at = (rng.next() % mutated.len() as u64) as usize;
                    mutated[at] = rng.next() as u8;
                }
                all_decoders(&mutated);
            }
        }
    }
}

#[test]
fn hostile_lengths_and_nesting_are_refused() {
    let cases: &[&[u8]] = &[
        b"\xdd\xff\xff\xff\xff",                     // array of 4G items in 5 bytes
        b"\xdf\xff\xff\xff\xff\xc0",                 // map of 4G pairs
        b"\xdb\xff\xff\xff\xffabc",                  // str of 4 GiB
        b"\xc6\xff\xff\xff\xff",                     // bin of 4 GiB
        b"\xc9\xff\xff\xff\xff\x01",                 // ext of 4 GiB
        b"\xa2\xff\xfe",                             // invalid UTF-8
        b"\xc1",                                     // never-used marker
        b"\xd7\x02\xff\xff\xff\xff\xff\xff\xff\xff", // datetime out of range
        b"\xd6\x03\x00\x00\x00\x00",                 // date 0000-00-00
        b"\xd4\x63\x00",                             // unknown ext type 99
        b"\xc9\x00\x00\x00\x01\x01\x01",             // tuple whose payload is not a list
    ];
    for body in cases {
        for format in [Format::Msgpack, Format::Farcall] {
            assert!(
                decode(format, &Bytes::copy_from_slice(body), &[]).is_err(),
                "{format:?} {}",
                hex(body)
            );
        }
    }
    let deep_msgpack = Bytes::from(vec![0x91; 100_000]);
    let deep_json = Bytes::from(vec![b'['; 100_000]);
    for format in [Format::Msgpack, Format::Farcall] {
        assert!(decode(format, &deep_msgpack, &[]).is_err());
    }
    assert!(decode(Format::Json, &deep_json, &[]).is_err());

    // 512 levels are fine, 513 are not, both ways.
    let nest = |levels: usize| (0..levels).fold(Value::None, |v, _| list(vec![v]));
    for format in [Format::Msgpack, Format::Farcall] {
        let body = encode(format, &nest(512), &mut NoExport).unwrap().body;
        assert!(decode(format, &Bytes::from(body), &[]).is_ok());
        assert!(encode(format, &nest(513), &mut NoExport).is_err());
        let mut too_deep = vec![0x91; 513];
        too_deep.push(0xc0);
        assert!(decode(format, &Bytes::from(too_deep), &[]).is_err());
    }
    let json = |levels: usize| Bytes::from(format!("{}{}", "[".repeat(levels), "]".repeat(levels)));
    assert!(decode(Format::Json, &json(512), &[]).is_ok());
    assert!(decode(Format::Json, &json(513), &[]).is_err());
    assert!(encode(Format::Json, &nest(513), &mut NoExport).is_err());
}

#[test]
fn bad_tagged_values_are_refused() {
    let cases: &[&str] = &[
        r#"{"___type_name___": "date", "data": "2023-02-29"}"#,
        r#"{"___type_name___": "datetime", "data": "2024-01-01T25:00:00.000000"}"#,
        r#"{"___type_name___": "ndarray", "data": "AAAA", "dtype": "float64", "shape": [1]}"#,
        r#"{"___type_name___": "ndarray", "data": "AAAA", "dtype": "int8", "shape": [-3]}"#,
        r#"{"___type_name___": "ndarray", "data": "AAAA", "dtype": "object", "shape": [3]}"#,
        r#"{"___type_name___": "bytes", "data": "not base64!"}"#,
        r#"{"___type_name___": "proxy", "rpc_addr": "a", "obj_id": -1}"#,
        r#"{"___type_name___": "proxy", "obj_id": 1}"#,
        r#"{NaN: 1}"#,
        "[1] 2",
        "[1,]",
    ];
    for text in cases {
        let result = decode(Format::Json, &Bytes::copy_from_slice(text.as_bytes()), &[]);
        assert!(result.is_err(), "{text}: {result:?}");
    }
    // An unknown dtype is opaque: any length goes.
    let text = r#"{"___type_name___": "ndarray", "data": "AAAA", "dtype": "[('a', '<i4')]", "shape": [2]}"#;
    assert!(decode(Format::Json, &Bytes::copy_from_slice(text.as_bytes()), &[]).is_ok());
}

#[test]
fn invalid_values_are_refused_on_encode() {
    let bad_array = Value::Array(Array {
        dtype: "float64".into(),
        shape: vec![3],
        data: Bytes::from_static(&[0; 8]),
        scalar: false,
    });
    let bad_date = Value::Date(Date {
        year: 2023,
        month: 2,
        day: 30,
    });
    for format in [Format::Msgpack, Format::Json, Format::Farcall] {
        assert!(encode(format, &bad_array, &mut NoExport).is_err());
        assert!(encode(format, &bad_date, &mut NoExport).is_err());
    }
}

#[test]
fn encoding_a_call_is_fast() {
    let value = request_opts(proxy());
    let rounds = 20_000;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(encode(Format::Msgpack, &value, &mut NoExport).unwrap());
    }
    let per_call = start.elapsed() / rounds;
    eprintln!("msgpack encode of a call: {per_call:?}");
    // Generous for unoptimized CI builds; typically well under 1 µs.
    assert!(per_call.as_micros() < 20, "{per_call:?} per encode");
}

// ---- borrowed fields (the call path) -------------------------------------

#[test]
fn fields_encode_exactly_as_the_same_map_built_as_a_value() {
    let reference = proxy_ref();
    let args = vec![
        Value::Int(1),
        tuple(vec![Value::from("x"), bytes(b"\x00\xff")]),
    ];
    let kwargs = vec![("scale".to_string(), Value::Float(2.5))];
    let nested = Value::map([("deep", list(vec![datetime(), date()]))]);
    let fields = [
        (
            "obj",
            Field::Proxy {
                proxy: &reference,
                method: Some("add"),
            },
        ),
        ("args", Field::List(&args)),
        ("kwargs", Field::StrMap(&kwargs)),
        ("action", Field::Str("return")),
        ("req_id", Field::Int(-7)),
        ("rval", Field::Value(&nested)),
    ];
    let mut with_method = reference.clone();
    with_method.attributes.push("add".into());
    let as_value = Value::map([
        ("obj", Value::Proxy(with_method)),
        ("args", Value::List(args.clone())),
        ("kwargs", Value::map([("scale", Value::Float(2.5))])),
        ("action", Value::from("return")),
        ("req_id", Value::Int(-7)),
        ("rval", nested.clone()),
    ]);
    for format in [Format::Msgpack, Format::Json, Format::Farcall] {
        let fast = encode_fields(format, &fields, &mut NoExport).unwrap();
        let slow = encode(format, &as_value, &mut NoExport).unwrap();
        assert_eq!(hex(&fast.body), hex(&slow.body), "{format:?}");

        let mut seen = Vec::new();
        let body = Bytes::from(fast.body);
        decode_fields(format, &body, &fast.buffers, |k, v| {
            seen.push((Value::from(k), v));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            Value::Map(seen),
            decode(format, &body, &fast.buffers).unwrap()
        );
    }
}

#[test]
fn decoding_fields_refuses_what_is_not_a_map_with_string_keys() {
    for format in [Format::Msgpack, Format::Json, Format::Farcall] {
        let not_a_map = Bytes::from(enc(format, &list(vec![Value::Int(1)])));
        let int_key = Bytes::from(enc(format, &Value::Map(vec![(Value::Int(1), Value::None)])));
        let trailing = Bytes::from(cat(&[
            &enc(format, &Value::map([("a", Value::None)])),
            b"\x00",
        ]));
        // JSON writes every key as a string, as Python's json does.
        let bodies = match format {
            Format::Json => vec![not_a_map, trailing, Bytes::new()],
            _ => vec![not_a_map, int_key, trailing, Bytes::new()],
        };
        for body in bodies {
            let r = decode_fields(format, &body, &[], |_, _| Ok(()));
            assert!(r.is_err(), "{format:?} accepted {}", hex(&body));
        }
    }
}
