//! Writes the seed corpus (`fuzz/corpus/<target>/seed-*`) from real
//! messages built by the engine itself:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus
//! ```
//!
//! Seeds use the input layouts of `farcall_fuzz` (`split_frames`,
//! `native_input`). Re-running it rewrites the seeds and leaves other
//! corpus files alone.

use std::path::Path;

use bytes::Bytes;
use farcall::channel::frame::{encode_header, Kind};
use farcall::codec::{self, Format, NoExport};
use farcall::error::Error;
use farcall::handshake::{self, Challenge, Hello, ServerProof, MAGIC};
use farcall::protocol::{self, Action, Frames, ReturnType};
use farcall::value::{Array, Date, DateTime, ProxyRef, Value};
use farcall_fuzz::{join_frames, native_input, FORMATS};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut seeds = Seeds::default();
    codec_seeds(&mut seeds);
    request_seeds(&mut seeds);
    handshake_seeds(&mut seeds);
    native_seeds(&mut seeds);
    config_seeds(&mut seeds);
    let mut total = 0;
    for (target, name, bytes) in &seeds.0 {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        // Old seeds go; files the fuzzer added stay.
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if is_seed(&path)
                && !seeds
                    .0
                    .iter()
                    .any(|(t, n, _)| t == target && path.ends_with(format!("seed-{n}")))
            {
                std::fs::remove_file(path).unwrap();
            }
        }
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        total += bytes.len();
    }
    println!(
        "{} seeds, {total} bytes, in {}",
        seeds.0.len(),
        root.display()
    );
}

fn is_seed(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("seed-"))
}

#[derive(Default)]
struct Seeds(Vec<(&'static str, String, Vec<u8>)>);

impl Seeds {
    fn add(&mut self, target: &'static str, name: impl Into<String>, bytes: Vec<u8>) {
        self.0.push((target, name.into(), bytes));
    }
}

// ---- values -------------------------------------------------------------

fn proxy() -> ProxyRef {
    ProxyRef {
        rpc_addr: "tcp://127.0.0.1:5555".into(),
        obj_id: 0,
        ref_id: 3,
        type_str: "<class 'Counter'>".into(),
        attributes: vec!["add".into()],
    }
}

fn sample_values() -> Vec<(&'static str, Value)> {
    let date = Date::new(2024, 2, 29).unwrap();
    let array = Array {
        dtype: "float64".into(),
        shape: vec![2, 3],
        data: Bytes::from((0..48u8).collect::<Vec<_>>()),
        scalar: false,
    };
    let scalar = Array {
        dtype: "<f4".into(),
        shape: vec![],
        data: Bytes::from_static(&[0, 0, 0xc0, 0x3f]),
        scalar: true,
    };
    vec![
        ("none", Value::None),
        ("true", Value::Bool(true)),
        (
            "ints",
            Value::from(vec![
                Value::Int(0),
                Value::Int(-1),
                Value::Int(-33),
                Value::Int(127),
                Value::Int(128),
                Value::Int(65_536),
                Value::Int(-40_000),
                Value::Int(i64::MIN),
                Value::Int(i64::MAX),
                Value::UInt(u64::MAX),
            ]),
        ),
        (
            "floats",
            Value::from(vec![
                Value::Float(0.5),
                Value::Float(-0.0),
                Value::Float(1e300),
                Value::Float(f64::NAN),
                Value::Float(f64::NEG_INFINITY),
                Value::Float(0.1 + 0.2),
            ]),
        ),
        (
            "strings",
            Value::from(vec![
                Value::from(""),
                Value::from("é€😀 \"quoted\" \\ \n\t"),
                Value::from("x".repeat(31)),
                Value::from("y".repeat(300)),
            ]),
        ),
        ("bytes", Value::Bytes(Bytes::from_static(b"\x00\xffbin"))),
        (
            "tuple",
            Value::Tuple(vec![Value::Int(1), Value::Tuple(vec![]), Value::None]),
        ),
        (
            "map",
            Value::Map(vec![
                (Value::from("a"), Value::Int(1)),
                (Value::Int(2), Value::from("two")),
                (Value::None, Value::List(vec![])),
                (Value::from("___type_name___"), Value::from("unknown")),
            ]),
        ),
        ("date", Value::Date(date)),
        (
            "datetime",
            Value::DateTime(DateTime::new(date, 23, 59, 58, 123).unwrap()),
        ),
        ("array", Value::Array(array)),
        ("scalar", Value::Array(scalar)),
        ("proxy", Value::Proxy(proxy())),
        (
            "nested",
            (0..40).fold(Value::Int(7), |v, _| Value::List(vec![v])),
        ),
        ("call_opts", call_opts()),
        // At the nesting limit (512 containers), for the fuzzer to probe it.
        (
            "deep",
            (0..511).fold(Value::map([("k", Value::Int(1))]), |v, _| {
                Value::List(vec![v])
            }),
        ),
    ]
}

fn call_opts() -> Value {
    Value::map([
        ("obj", Value::Proxy(proxy())),
        ("args", Value::from(vec![1i64, 2])),
        ("kwargs", Value::Map(vec![])),
    ])
}

fn encode(format: Format, v: &Value) -> Option<codec::Encoded> {
    codec::encode(format, v, &mut NoExport).ok()
}

fn target(format: Format) -> &'static str {
    match format {
        Format::Msgpack => "decode_msgpack",
        Format::Json => "decode_json",
        Format::Farcall => "decode_farcall",
    }
}

fn codec_seeds(seeds: &mut Seeds) {
    for format in FORMATS {
        for (name, v) in sample_values() {
            let Some(enc) = encode(format, &v) else {
                continue; // a tuple or scalar has no msgpack/json form of its own
            };
            let bytes = if format == Format::Farcall {
                let mut frames = vec![enc.body];
                frames.extend(enc.buffers.iter().map(|b| b.to_vec()));
                join_frames(&frames)
            } else {
                enc.body
            };
            seeds.add(target(format), name, bytes);
        }
    }
    // Python's own spellings, as pyacq's json serializer writes them.
    seeds.add(
        "decode_json",
        "python",
        br#"{"a": NaN, "b": [1.5, -Infinity, 1e+300], "c": "\u00e9\ud83d\ude00", "d": {"___type_name___": "bytes", "data": "AAE="}}"#.to_vec(),
    );
    // farcall out-of-band buffers: bytes and array data by buffer index.
    seeds.add(
        "decode_farcall",
        "buffer",
        join_frames(&[&[0xc7, 1, 6, 0][..], b"out of band"]),
    );
    let mut ndarray = vec![0xc7, 0, 5, 0x93, 0xa5];
    ndarray.extend_from_slice(b"uint8");
    ndarray.extend_from_slice(&[0x91, 4, 1]);
    ndarray[1] = (ndarray.len() - 3) as u8;
    seeds.add(
        "decode_farcall",
        "buffer_array",
        join_frames(&[&ndarray[..], b"zero", b"four"]),
    );
}

// ---- requests and replies ---------------------------------------------------

fn request(format: Format, action: Action, opts: &Value) -> Frames {
    protocol::request_frames(7, action, ReturnType::Auto, format, opts, &mut NoExport).unwrap()
}

fn request_seeds(seeds: &mut Seeds) {
    let identity = Bytes::from_static(&[0x01, 0xa2, 0x5c, 0x11, 0x09]);
    for format in FORMATS {
        let name = format.name();
        let cases = [
            ("call_obj", request(format, Action::CallObj, &call_opts())),
            (
                "get_item",
                request(
                    format,
                    Action::GetItem,
                    &Value::map([("name", Value::from("self"))]),
                ),
            ),
            ("ping", request(format, Action::Ping, &Value::None)),
            (
                "hello",
                request(
                    format,
                    Action::Hello,
                    &Value::map([("nonce", Value::Bytes(Bytes::from(vec![9u8; 32])))]),
                ),
            ),
        ];
        for (what, frames) in cases {
            let mut with_id = vec![identity.clone()];
            with_id.extend(frames.iter().cloned());
            seeds.add(
                "zmq_request",
                format!("{name}-{what}"),
                join_frames(&with_id),
            );
        }
        let replies = [
            (
                "return",
                protocol::reply_frames(format, 7, Ok(Value::from(3i64)), &mut NoExport).unwrap(),
            ),
            (
                "error",
                protocol::reply_frames(
                    format,
                    8,
                    Err(Error::exception("KeyError", "'missing'")),
                    &mut NoExport,
                )
                .unwrap(),
            ),
            ("disconnect", protocol::disconnect_frames(format)),
        ];
        for (what, frames) in replies {
            seeds.add(
                "zmq_request",
                format!("{name}-reply-{what}"),
                join_frames(&frames),
            );
        }
    }
    // pyacq's request with a one-way id and the older action spelling.
    let pyacq = [
        &b"-1"[..],
        b"getitem",
        b"auto",
        b"msgpack",
        b"\x81\xa4name\xa4self",
    ];
    seeds.add("zmq_request", "pyacq-oneway", join_frames(&pyacq));
}

// ---- handshake ------------------------------------------------------------

fn hello_frames() -> Frames {
    vec![
        Bytes::from_static(MAGIC),
        Bytes::from_static(b"hello"),
        Bytes::from(vec![0x11; 32]),
        Bytes::from(vec![0x22; 16]),
    ]
}

fn challenges() -> [Challenge; 2] {
    [
        Challenge {
            address: "unix:///run/user/1000/farcall-1-0.sock".into(),
            process: Some([0x66; 16]),
            auth: None,
        },
        Challenge {
            address: "tcp://127.0.0.1:5555".into(),
            process: Some([0x77; 16]),
            auth: Some(ServerProof {
                nonce: [0x33; 32],
                key_id: Default::default(),
                proof: [0x44; 32],
            }),
        },
    ]
}

fn handshake_seeds(seeds: &mut Seeds) {
    seeds.add("handshake", "hello", join_frames(&hello_frames()));
    let [open, auth] = challenges();
    let messages = [
        ("challenge-open", Hello::Challenge(open.clone())),
        ("challenge-auth", Hello::Challenge(auth.clone())),
        ("proof", Hello::Proof([0x55; 32])),
        ("ok", Hello::Verdict(Ok(()))),
        ("denied", Hello::Verdict(Err("wrong key".into()))),
        ("peer", Hello::Peer([0x88; 16])),
    ];
    for (name, hello) in messages {
        seeds.add("handshake", name, join_frames(&hello.to_frames()));
    }
    for format in FORMATS {
        for (mode, c) in [("open", &open), ("auth", &auth)] {
            let enc = encode(format, &handshake::challenge_value(c)).unwrap();
            seeds.add(
                "handshake",
                format!("value-{}-{mode}", format.name()),
                join_frames(&[enc.body]),
            );
        }
    }
}

// ---- native framing -------------------------------------------------------

fn message(kind: Kind, frames: &[Bytes]) -> Vec<u8> {
    let mut out = encode_header(kind, frames);
    frames.iter().for_each(|f| out.extend_from_slice(f));
    out
}

/// A native request: its call chain, then the request's frames.
fn native_request(chain: u64, frames: Vec<Bytes>) -> Vec<u8> {
    let (kind, frames) = farcall::protocol::message::request(chain, frames);
    message(kind, &frames)
}

fn native_seeds(seeds: &mut Seeds) {
    let hello = message(Kind::Hello, &hello_frames());
    let call = native_request(
        0x0123_4567_89ab_cdef,
        request(Format::Farcall, Action::CallObj, &call_opts()),
    );
    let ping = native_request(0, request(Format::Msgpack, Action::Ping, &Value::None));
    let (cancel_kind, cancel_frames) = farcall::protocol::message::cancel(7);
    let cancel = message(cancel_kind, &cancel_frames);
    let (beat_kind, beat_frames) = farcall::protocol::message::beat(farcall::protocol::Beat::Ping);
    let beat = message(beat_kind, &beat_frames);
    let reply = message(
        Kind::Reply,
        &protocol::reply_frames(Format::Farcall, 7, Ok(Value::from("pong")), &mut NoExport)
            .unwrap(),
    );
    let session = [hello.clone(), call.clone(), ping.clone(), cancel, beat].concat();
    // Limit indices (see LIMITS): 5 = 4 KiB, 12 = 1 MiB, 15 = 16 MiB.
    // Chunk indices (see CHUNKS): 0 = 1 byte, 4 = 64, 6 = 4096.
    seeds.add(
        "native_frames",
        "session-1byte",
        native_input((5, 12), [0, 0], 0, &session),
    );
    seeds.add(
        "native_frames",
        "session-mixed",
        native_input((5, 15), [0o64, 0o21], 0, &session),
    );
    seeds.add(
        "native_frames",
        "reply",
        native_input((12, 12), [6, 6], 0, &[reply.clone(), reply].concat()),
    );
    // One large frame (300 000 bytes, read straight into its own buffer),
    // completed by 37 x 8 KiB of zeros; the zeros after it are a bad header.
    let large = encode_header(
        Kind::Request,
        &[Bytes::from_static(b"1"), Bytes::from(vec![0u8; 299_999])],
    );
    seeds.add(
        "native_frames",
        "large-frame",
        native_input((12, 12), [0o44, 0o66], 37, &[&large[..], b"1"].concat()),
    );
    // A header announcing 65 536 frames; the zero padding is its table.
    let many = [3, 0, 0, 0, 0, 0, 1, 0];
    seeds.add(
        "native_frames",
        "max-frames",
        native_input((15, 15), [6, 6], 65, &many),
    );
    // Errors: a bad kind, too many frames, a message over the limit.
    seeds.add(
        "native_frames",
        "bad-kind",
        native_input(
            (5, 5),
            [4, 4],
            0,
            &[&ping[..], &[9, 0, 0, 0, 0, 0, 0, 0]].concat(),
        ),
    );
    seeds.add(
        "native_frames",
        "too-many-frames",
        native_input((5, 5), [4, 4], 0, &[1, 0, 0, 0, 1, 0, 1, 0]),
    );
    seeds.add(
        "native_frames",
        "over-limit",
        native_input((4, 4), [1, 1], 0, &call),
    );
    // Half a message, then the end of the stream.
    seeds.add(
        "native_frames",
        "truncated",
        native_input((5, 5), [2, 2], 0, &call[..call.len() - 3]),
    );
}

// ---- the spawn configuration ----------------------------------------------

fn config_seeds(seeds: &mut Seeds) {
    let lines: [(&str, &[u8]); 5] = [
        (
            "full",
            br#"{"address": "tcp+native://127.0.0.1:*", "name": "w", "parent_pid": 12, "extra": {"a": [1, 2.5, null]}, "key": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}"#,
        ),
        ("empty", b"{}"),
        ("nulls", br#"{"address": null, "name": null, "parent_pid": null, "extra": null, "key": null}"#),
        ("list", b"[1]"),
        ("bad-key", br#"{"key": "xyz"}"#),
    ];
    for (name, line) in lines {
        seeds.add("spawn_config", name, line.to_vec());
    }
}
