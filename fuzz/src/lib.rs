//! The checks behind farcall's fuzz targets (see docs/fuzzing.md).
//!
//! Each `fuzz_targets/*.rs` is one line calling a function here, so that
//! `cargo test` replays the checked-in corpus (`corpus/<target>/`) on a
//! stable toolchain, and so that `examples/gen_corpus.rs` builds its seeds
//! with the same input layout the checks read.
//!
//! Every check asserts properties, not only the absence of panics:
//! decoded values re-encode and decode to an equal value, encoding is a
//! fixed point after one round, trailing bytes are refused, the native
//! frame reader agrees with a reference model of the framing, and the
//! handshake parsers are canonical (parse, then re-encode, gives the same
//! frames).

use std::io::{ErrorKind, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

use bytes::Bytes;
use farcall::channel::frame::{self as stream, Fill, FrameReader, Kind};
use farcall::channel::FdChannel;
use farcall::codec::{self, Format, NoExport};
use farcall::error::Error;
use farcall::handshake::{self, Auth, Hello};
use farcall::protocol::{self, Action, Frames, Reply, Request};
use farcall::protocol::{Command, Message};
use farcall::value::{Date, DateTime, Value};

/// Most frames [`split_frames`] cuts from one input.
pub const MAX_SPLIT: usize = 64;

/// A fuzz target's check: any input is acceptable.
pub type Check = fn(&[u8]);

/// Every target, by the name of its `fuzz_targets/*.rs` and corpus folder.
pub const TARGETS: [(&str, Check); 7] = [
    ("decode_msgpack", decode_msgpack),
    ("decode_json", decode_json),
    ("decode_farcall", decode_farcall),
    ("native_frames", native_frames),
    ("zmq_request", zmq_request),
    ("handshake", handshake),
    ("spawn_config", spawn_config),
];

/// The three serializers.
pub const FORMATS: [Format; 3] = [Format::Msgpack, Format::Json, Format::Farcall];

// ---- input layout -------------------------------------------------------

/// Cuts fuzz input into frames: each frame is a little-endian `u16`
/// length then that many bytes (fewer when the input ends first), at most
/// [`MAX_SPLIT`] frames. Every input is valid; [`join_frames`] inverts it.
pub fn split_frames(data: &[u8]) -> Frames {
    let mut frames = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && frames.len() < MAX_SPLIT {
        let [a, b, tail @ ..] = rest else {
            frames.push(Bytes::copy_from_slice(rest));
            break;
        };
        let n = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        frames.push(Bytes::copy_from_slice(&tail[..n]));
        rest = &tail[n..];
    }
    frames
}

/// The input [`split_frames`] cuts into `frames` (each under 64 KiB).
pub fn join_frames<F: AsRef<[u8]>>(frames: &[F]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        let f = f.as_ref();
        let n = u16::try_from(f.len()).expect("a seed frame under 64 KiB");
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

// ---- values -------------------------------------------------------------

/// Calls `f` on `v` and every value inside it.
pub fn walk(v: &Value, f: &mut dyn FnMut(&Value)) {
    f(v);
    match v {
        Value::List(items) | Value::Tuple(items) => items.iter().for_each(|i| walk(i, f)),
        Value::Map(entries) => entries.iter().for_each(|(k, v)| {
            walk(k, f);
            walk(v, f);
        }),
        _ => {}
    }
}

/// What every decoded value satisfies, whatever the format.
fn check_decoded(format: Format, value: &Value) {
    walk(value, &mut |v| match v {
        Value::Object(_) => panic!("a decoder produced a local object"),
        Value::UInt(u) => assert!(*u > i64::MAX as u64, "UInt({u}) fits an Int"),
        Value::Tuple(_) => assert_eq!(format, Format::Farcall, "only farcall has tuples"),
        Value::Date(d) => assert!(valid_date(d), "invalid date {d:?}"),
        Value::DateTime(dt) => assert!(
            valid_date(&dt.date)
                && DateTime::new(dt.date, dt.hour, dt.minute, dt.second, dt.microsecond).is_some(),
            "invalid datetime {dt:?}"
        ),
        Value::Array(a) => {
            assert!(!a.scalar || a.shape.is_empty(), "a scalar with a shape");
            assert!(
                format == Format::Farcall || !a.scalar,
                "only farcall has numpy scalars"
            );
        }
        Value::Map(entries) if format == Format::Json => {
            for (k, _) in entries {
                assert!(matches!(k, Value::Str(_)), "a JSON key that is not a str");
            }
        }
        _ => {}
    });
}

/// A value's `Debug` form, cut short for panic messages.
pub fn short(v: &Value) -> String {
    let mut s = format!("{v:?}");
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

fn valid_date(d: &Date) -> bool {
    Date::new(d.year, d.month, d.day).is_some()
}

/// Decodes `body` (with out-of-band `buffers`) and, when that succeeds,
/// checks the value and its round trip. Returns the value.
pub fn check_codec(format: Format, body: &[u8], buffers: &[Bytes]) -> Option<Value> {
    let body = Bytes::copy_from_slice(body);
    let value = codec::decode(format, &body, buffers).ok()?;
    check_decoded(format, &value);

    // The value ends where the body ends: one more byte is refused (nil in
    // msgpack; in JSON, a bracket no value can be followed by).
    let mut longer = body.to_vec();
    longer.push(if format == Format::Json { b']' } else { 0xc0 });
    assert!(
        codec::decode(format, &Bytes::from(longer), buffers).is_err(),
        "trailing bytes accepted after {}",
        short(&value)
    );

    // Round trip: what was decoded encodes, decodes to an equal value, and
    // encodes to the same bytes again.
    let enc = codec::encode(format, &value, &mut NoExport)
        .unwrap_or_else(|e| panic!("a decoded value does not encode ({e}): {}", short(&value)));
    if format == Format::Json {
        assert!(enc.body.is_ascii(), "JSON output is not ASCII");
    }
    let body2 = Bytes::from(enc.body);
    let again = codec::decode(format, &body2, &enc.buffers).unwrap_or_else(|e| {
        panic!(
            "re-encoded value does not decode ({e}): {}\nbody starts {:02x?}",
            short(&value),
            &body2[..body2.len().min(64)]
        )
    });
    assert!(
        again == value,
        "round trip changed the value: {} -> {}",
        short(&value),
        short(&again)
    );
    let enc2 = codec::encode(format, &again, &mut NoExport).expect("encodes once, encodes twice");
    assert!(enc2.body == body2, "encoding is not a fixed point");
    assert_eq!(
        enc2.buffers, enc.buffers,
        "buffers differ on a second encoding"
    );
    check_fields(format, &body, buffers, &value);
    Some(value)
}

/// The field path of requests and replies agrees with the value path: a
/// map with string keys decodes entry by entry to the same entries, and
/// encodes from borrowed fields to the same bytes.
fn check_fields(format: Format, body: &Bytes, buffers: &[Bytes], value: &Value) {
    let mut seen = Vec::new();
    let by_fields = codec::decode_fields(format, body, buffers, |k, v| {
        seen.push((Value::from(k), v));
        Ok(())
    });
    let Value::Map(entries) = value else {
        // Not a map (or, in pyacq's formats, a tagged map standing for a
        // value): fields decode only a tagged map, to its raw entries.
        assert!(
            by_fields.is_err() || format != Format::Farcall,
            "fields decoded from {}",
            short(value)
        );
        return;
    };
    let keys: Option<Vec<&str>> = entries.iter().map(|(k, _)| k.as_str()).collect();
    let Some(keys) = keys else {
        assert!(
            by_fields.is_err(),
            "fields decoded a map with a non-string key"
        );
        return;
    };
    by_fields.unwrap_or_else(|e| panic!("fields refused a string-keyed map ({e})"));
    assert!(
        seen == *entries,
        "fields decoded other entries than the value path"
    );
    let fields: Vec<(&str, codec::Field<'_>)> = keys
        .into_iter()
        .zip(entries)
        .map(|(k, (_, v))| (k, codec::Field::Value(v)))
        .collect();
    let by_fields = codec::encode_fields(format, &fields, &mut NoExport).expect("fields encode");
    let by_value = codec::encode(format, value, &mut NoExport).expect("the value encodes");
    assert!(
        by_fields.body == by_value.body,
        "fields encode to other bytes"
    );
}

// ---- codec targets --------------------------------------------------------

/// `decode_msgpack`: the whole input is a pyacq msgpack body.
pub fn decode_msgpack(data: &[u8]) {
    check_codec(Format::Msgpack, data, &[]);
}

/// `decode_json`: the whole input is a pyacq JSON body.
pub fn decode_json(data: &[u8]) {
    check_codec(Format::Json, data, &[]);
}

/// `decode_farcall`: frame 0 is a farcall body, the rest its out-of-band
/// buffers; the whole input is tried as a body without buffers too.
pub fn decode_farcall(data: &[u8]) {
    let frames = split_frames(data);
    if let Some((body, buffers)) = frames.split_first() {
        check_codec(Format::Farcall, body, buffers);
    }
    check_codec(Format::Farcall, data, &[]);
}

// ---- requests and replies (ZeroMQ multipart messages) ---------------------

/// `zmq_request`: the input split into frames, as a ROUTER hands them to
/// the server (identity first) and as a DEALER hands a reply to a client.
pub fn zmq_request(data: &[u8]) {
    let frames = split_frames(data);
    // The server drops the identity frame, then parses the rest.
    if let Some((_identity, rest)) = frames.split_first() {
        check_request(rest.to_vec());
    }
    check_request(frames.clone());
    for format in FORMATS {
        check_reply(format, &frames);
    }
}

fn parse_req_id(frame: &[u8]) -> Option<i64> {
    std::str::from_utf8(frame).ok()?.trim().parse().ok()
}

/// Request::parse, the name lookups, the options in every format, and the
/// round trip of a request that makes sense.
fn check_request(frames: Frames) {
    let n = frames.len();
    let first = frames.first().cloned();
    let request = match Request::parse(frames.clone()) {
        Ok(r) => r,
        Err(bad) => {
            assert!(matches!(bad.error, Error::Protocol(_)));
            // The id is reported whenever it is readable, so the sender
            // can be told what was wrong.
            if n < 5 {
                assert_eq!(bad.req_id, first.as_deref().and_then(parse_req_id));
            } else {
                assert_eq!(bad.req_id, None);
                assert_eq!(first.as_deref().and_then(parse_req_id), None);
            }
            return;
        }
    };
    assert!(n >= 5);
    assert_eq!(Some(request.req_id), parse_req_id(&frames[0]));
    assert_eq!(request.buffers, frames[5..]);
    assert_eq!(request.wants_reply(), request.req_id >= 0);
    let action = request.action().ok();
    let return_type = request.return_type().ok();
    assert_eq!(action, Action::from_name(&frames[1]));
    assert_eq!(request.format().ok(), Format::from_name(&frames[3]));
    for format in FORMATS {
        let Ok(opts) = request.decode_opts(format) else {
            continue;
        };
        if frames[4].is_empty() {
            assert!(opts.is_none());
        }
        // Every command's options, whatever the value is: parsed, or an
        // error, never a panic.
        if let Ok(mut again) = Request::parse(frames.clone()) {
            let _ = Command::parse(&mut again, format);
        }
        let (Some(action), Some(return_type)) = (action, return_type) else {
            continue;
        };
        let again = protocol::request_frames(
            request.req_id,
            action,
            return_type,
            format,
            &opts,
            &mut NoExport,
        )
        .unwrap_or_else(|e| panic!("decoded opts do not encode ({e}): {}", short(&opts)));
        let parsed = Request::parse(again).expect("a request we built parses");
        assert_eq!(parsed.req_id, request.req_id);
        assert_eq!(parsed.action().ok(), Some(action));
        assert_eq!(parsed.return_type().ok(), Some(return_type));
        assert_eq!(parsed.format().ok(), Some(format));
        let opts2 = parsed
            .decode_opts(format)
            .expect("options we encoded decode");
        assert!(opts2 == opts, "request options changed: {}", short(&opts));
    }
}

/// Reply::parse, and the round trip of a reply that parses.
fn check_reply(format: Format, frames: &[Bytes]) {
    let Ok(reply) = Reply::parse(format, frames) else {
        return;
    };
    let Reply::Return { req_id, result } = reply else {
        return;
    };
    let wire = result.as_ref().map_err(Error::to_wire).cloned();
    let again = protocol::reply_frames(format, req_id, result, &mut NoExport)
        .unwrap_or_else(|e| panic!("a parsed reply does not encode: {e}"));
    let Ok(Reply::Return {
        req_id: id2,
        result: result2,
    }) = Reply::parse(format, &again)
    else {
        panic!("a reply we built does not parse");
    };
    assert_eq!(id2, req_id);
    match (wire, result2) {
        (Ok(v), Ok(v2)) => assert!(v2 == v, "reply value changed: {}", short(&v)),
        (Err(e), Err(e2)) => assert_eq!(e2.to_wire(), e, "remote error changed"),
        (a, b) => panic!(
            "reply outcome changed on a round trip: ok={} -> ok={}",
            a.is_ok(),
            b.is_ok()
        ),
    }
}

// ---- handshake ------------------------------------------------------------

/// `handshake`: native hello frames, the server's and the client's answers
/// to them, and the ZeroMQ `farcall_hello` reply read from decoded values.
pub fn handshake(data: &[u8]) {
    let frames = split_frames(data);
    if let Ok(hello) = Hello::parse(&frames) {
        // Canonical: the frames of what was parsed are the frames parsed.
        assert_eq!(hello.to_frames(), frames, "hello frames are not canonical");
        check_hello(&hello);
    }
    for format in FORMATS {
        for body in frames.iter().chain([&Bytes::copy_from_slice(data)]) {
            if let Ok(v) = codec::decode(format, body, &frames) {
                check_challenge_value(&v);
            }
        }
    }
}

/// The keys both sides use in the handshake checks, made once.
fn keys() -> &'static (farcall::auth::Key, handshake::Gate) {
    static KEYS: std::sync::OnceLock<(farcall::auth::Key, handshake::Gate)> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let key = farcall::auth::Key::from_bytes(&[7; 32]).expect("a 32-byte key");
        let gate = handshake::Gate::new(&Auth::Key(key.clone())).expect("a gate");
        (key, gate)
    })
}

fn check_hello(hello: &Hello) {
    let (key, gate) = keys();
    match hello {
        Hello::Hello(nonce, ..) => {
            // The server challenges any well-formed hello; a proof it did
            // not compute itself never admits.
            let (challenge, state) = gate.challenge("unix:///fuzz", nonce).expect("a challenge");
            assert!(!state.admitted());
            assert!(!gate.admits(&state, nonce));
            let client = handshake::ClientHandshake::new("unix:///fuzz", &Auth::Key(key.clone()))
                .expect("a client");
            // Only a client holding the key that signed its own nonce
            // accepts; this one's nonce is not the fuzzed one.
            assert!(client.answer(&challenge).is_err());
        }
        Hello::Challenge(challenge) => {
            // A forged challenge never satisfies a keyed client; an open
            // one satisfies only a client that opted in.
            let keyed =
                handshake::ClientHandshake::new("a", &Auth::Key(key.clone())).expect("a client");
            assert!(
                keyed.answer(challenge).is_err(),
                "a forged challenge passed"
            );
            let open = handshake::ClientHandshake::new("a", &Auth::Open).expect("a client");
            assert_eq!(open.answer(challenge).is_ok(), challenge.auth.is_none());
            let v = handshake::challenge_value(challenge);
            assert_eq!(
                handshake::challenge_from_value(&v).ok().as_ref(),
                Some(challenge)
            );
        }
        Hello::Proof(proof) => {
            let (_, state) = gate.challenge("a", &[1; 32]).expect("a challenge");
            assert!(
                !gate.admits(&state, proof),
                "a fuzzed proof admitted a peer"
            );
            assert!(!gate.admits(&handshake::PeerState::New, proof));
        }
        Hello::Verdict(_) | Hello::Peer(_) => {}
    }
}

fn check_challenge_value(v: &Value) {
    let _ = farcall::protocol::command::Hello::parse(v.clone());
    let _ = farcall::protocol::command::Auth::parse(v.clone());
    if let Ok(c) = handshake::challenge_from_value(v) {
        let again = handshake::challenge_value(&c);
        assert_eq!(handshake::challenge_from_value(&again).ok(), Some(c));
    }
}

// ---- native stream framing -------------------------------------------------

/// Message size limits the native target picks from (the server starts a
/// connection at 4 KiB and raises the limit once the peer is admitted).
const LIMITS: [u64; 16] = [
    0,
    1,
    7,
    8,
    64,
    4096,
    4097,
    65_536,
    65_537,
    256 * 1024 - 1,
    256 * 1024,
    256 * 1024 + 1,
    1 << 20,
    (1 << 20) + 3,
    4 << 20,
    16 << 20,
];

/// Write sizes the native target cycles through.
const CHUNKS: [usize; 8] = [1, 2, 3, 7, 64, 1000, 4096, 70_000];

/// The configuration bytes at the start of a `native_frames` input.
pub const NATIVE_CONFIG: usize = 4;

/// Builds a `native_frames` input: `stream` written in chunks of the sizes
/// picked by `chunks` (indices into the chunk table), under the limits
/// picked by `limits` (first message, later ones), followed by
/// `pad * 8 KiB` zero bytes when `pad` is not zero.
pub fn native_input(limits: (u8, u8), chunks: [u8; 2], pad: u8, stream: &[u8]) -> Vec<u8> {
    let mut out = vec![(limits.1 << 4) | (limits.0 & 15), chunks[0], chunks[1], pad];
    out.extend_from_slice(stream);
    out
}

/// What the framing spec says a byte stream is: the messages in it, then
/// either an error (a bad header, too many frames, a message over the
/// limit) or the end of the stream (with or without a partial message).
#[derive(Debug, PartialEq)]
struct Expected {
    messages: Vec<(Kind, Frames)>,
    error: bool,
}

/// The reference model of native framing, written from the spec in
/// `transport/stream.rs` and docs/transports.md, not from the reader.
fn model(stream: &[u8], limit: impl Fn(usize) -> u64) -> Expected {
    let mut messages = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        if rest.len() < 8 {
            return Expected {
                messages,
                error: false,
            };
        }
        let kind = match rest[0] {
            1 => Kind::Request,
            2 => Kind::Reply,
            3 => Kind::Hello,
            4 => Kind::Cancel,
            5 => Kind::Heartbeat,
            _ => {
                return Expected {
                    messages,
                    error: true,
                }
            }
        };
        if rest[1..4] != [0, 0, 0] {
            return Expected {
                messages,
                error: true,
            };
        }
        let n = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
        if n > stream::MAX_FRAMES as usize {
            return Expected {
                messages,
                error: true,
            };
        }
        if rest.len() < 8 + 8 * n {
            return Expected {
                messages,
                error: false,
            };
        }
        let lengths: Vec<u64> = rest[8..8 + 8 * n]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let total = lengths.iter().try_fold(0u64, |a, &l| a.checked_add(l));
        if total.is_none_or(|t| t > limit(messages.len())) {
            return Expected {
                messages,
                error: true,
            };
        }
        let mut pos = 8 + 8 * n;
        let mut frames = Vec::with_capacity(n);
        for len in lengths {
            let len = len as usize; // at most the limit, so it fits
            if rest.len() - pos < len {
                return Expected {
                    messages,
                    error: false,
                };
            }
            frames.push(Bytes::copy_from_slice(&rest[pos..pos + len]));
            pos += len;
        }
        messages.push((kind, frames));
        at += pos;
    }
}

/// Drives a reader over a socket pair: reads and takes messages the way
/// the server does, until the socket is drained.
struct Harness {
    reader: FrameReader,
    limits: (u64, u64),
    got: Vec<(Kind, Frames)>,
    error: bool,
    eof: bool,
    reads: usize,
}

impl Harness {
    /// Reads what the socket has (after a readiness "edge").
    fn pump(&mut self, channel: &FdChannel) {
        self.reader.mark_readable();
        while !self.error && !self.eof {
            match self.reader.next_message() {
                Ok(Some(m)) => {
                    let total: usize = m.1.iter().map(Bytes::len).sum();
                    let limit = if self.got.is_empty() {
                        self.limits.0
                    } else {
                        self.limits.1
                    };
                    assert!(
                        total as u64 <= limit,
                        "a message over the limit got through"
                    );
                    assert!(m.1.len() <= stream::MAX_FRAMES as usize);
                    self.got.push(m);
                    if self.got.len() == 1 {
                        self.reader.set_max_message(self.limits.1);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    assert!(matches!(e, Error::Protocol(_)), "unexpected error {e}");
                    self.error = true;
                    break;
                }
            }
            if self.reader.drained() {
                break;
            }
            self.reads += 1;
            assert!(self.reads < 10_000_000, "the reader does not make progress");
            match self.reader.fill(channel).expect("reading a socket pair") {
                Fill::Data => {}
                Fill::WouldBlock => break,
                Fill::Eof => self.eof = true,
            }
        }
    }
}

/// `native_frames`: byte 0 picks the message size limits (low nibble: the
/// first message, high nibble: later ones, as the server raises its limit
/// after the handshake), bytes 1-2 the write sizes, byte 3 how many 8 KiB
/// of zeros follow the stream (to complete large frames); the rest is the
/// stream. It is written in chunks into a socket pair and read by a
/// [`FrameReader`]; the messages it yields, and whether it fails, must
/// match the reference model.
pub fn native_frames(data: &[u8]) {
    run_native(data);
}

/// [`native_frames`], returning how many messages the reader yielded and
/// whether it failed.
pub fn run_native(data: &[u8]) -> Option<(usize, bool)> {
    if data.len() < NATIVE_CONFIG {
        return None;
    }
    let limits = (
        LIMITS[usize::from(data[0] & 15)],
        LIMITS[usize::from(data[0] >> 4)],
    );
    let sizes = [
        CHUNKS[usize::from(data[1] & 7)],
        CHUNKS[usize::from((data[1] >> 3) & 7)],
        CHUNKS[usize::from(data[2] & 7)],
        CHUNKS[usize::from((data[2] >> 3) & 7)],
    ];
    let mut stream = data[NATIVE_CONFIG..].to_vec();
    let literal = stream.len();
    stream.resize(literal + usize::from(data[3]) * 8192, 0);

    let (mut tx, rx) = UnixStream::pair().expect("a socket pair");
    tx.set_nonblocking(true).unwrap();
    let rx = FdChannel::socket(rx.into(), "fuzz").expect("a channel");
    let mut h = Harness {
        reader: FrameReader::new(limits.0),
        limits,
        got: Vec::new(),
        error: false,
        eof: false,
        reads: 0,
    };
    let mut at = 0;
    let mut turn = 0;
    while at < stream.len() && !h.error {
        // Fuzzed sizes for the fuzzed bytes, large writes for the padding.
        let size = if at < literal {
            sizes[turn % 4]
        } else {
            64 * 1024
        };
        turn += 1;
        let chunk = &stream[at..(at + size).min(stream.len())];
        match tx.write(chunk) {
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("writing a socket pair: {e}"),
        }
        h.pump(&rx);
    }
    drop(tx);
    // The hang-up is one more readiness edge; read until the end.
    for _ in 0..1000 {
        if h.error || h.eof {
            break;
        }
        h.pump(&rx);
    }
    assert!(
        h.error || h.eof,
        "the reader never saw the end of the stream"
    );

    let written = &stream[..at];
    let expected = model(written, |i| if i == 0 { limits.0 } else { limits.1 });
    assert_eq!(
        h.error, expected.error,
        "reader and model disagree on failing"
    );
    assert!(
        h.got == expected.messages,
        "reader and model disagree on the messages: {} vs {}",
        h.got.len(),
        expected.messages.len()
    );

    let outcome = (h.got.len(), h.error);
    // What the server and client do next with such messages.
    for (kind, frames) in h.got {
        match kind {
            Kind::Hello => {
                if let Ok(hello) = Hello::parse(&frames) {
                    assert_eq!(hello.to_frames(), frames);
                }
            }
            Kind::Request => {
                // Past the call chain, a request as over ZeroMQ.
                let parsed = Message::parse(kind, frames.clone());
                assert!(
                    matches!(parsed, Ok(Message::Request(_))),
                    "a request is a request"
                );
                if !frames.is_empty() {
                    check_request(frames[1..].to_vec());
                }
            }
            Kind::Reply => {
                for format in FORMATS {
                    check_reply(format, &frames);
                }
            }
            Kind::Cancel | Kind::Heartbeat => {
                // Parsed or refused (the link then drops), never a panic.
                let _ = Message::parse(kind, frames);
            }
        }
    }
    Some(outcome)
}

// ---- the spawn configuration line -----------------------------------------

/// `spawn_config`: the line a spawned child reads from its bootstrap pipe
/// (stdin), through the public `read_child_config` (`parse_config` itself
/// is private). Fd 0 is replaced by a pipe holding the input (cut to fit
/// the pipe) and a newline.
pub fn spawn_config(data: &[u8]) {
    let data = &data[..data.len().min(60_000)];
    let mut fds = [0; 2];
    // SAFETY: pipe, dup2 and close on descriptors this function owns (and
    // fd 0, which no fuzzing code reads).
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let mut w = std::fs::File::from_raw_fd(fds[1]);
        w.write_all(data).expect("the input fits the pipe");
        w.write_all(b"\n").expect("one more byte fits");
        drop(w);
        assert_eq!(libc::dup2(fds[0], 0), 0);
        libc::close(fds[0]);
    }
    let line = &data[..data.iter().position(|&b| b == b'\n').unwrap_or(data.len())];
    match farcall::spawn::read_child_config() {
        // Only a JSON object is a configuration.
        Ok(_) => assert!(line.contains(&b'{') && line.contains(&b'}')),
        Err(e) => assert!(
            matches!(e, Error::Protocol(_)),
            "a bad line is a protocol error, got {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_inverts_join() {
        let frames = [&b"abc"[..], b"", b"\x00\x01", &[9; 300]];
        let joined = join_frames(&frames);
        assert_eq!(split_frames(&joined), frames.map(Bytes::copy_from_slice));
        assert_eq!(split_frames(b"\x05\x00ab"), [Bytes::from_static(b"ab")]);
        assert_eq!(split_frames(b"x"), [Bytes::from_static(b"x")]);
    }

    #[test]
    fn model_reads_real_messages() {
        let frames = vec![
            Bytes::from_static(b"1"),
            Bytes::new(),
            Bytes::from_static(b"xyz"),
        ];
        let mut s = stream::encode_header(Kind::Request, &frames);
        frames.iter().for_each(|f| s.extend_from_slice(f));
        let e = model(&s, |_| 100);
        assert_eq!(e.messages, vec![(Kind::Request, frames.clone())]);
        assert!(!e.error);
        assert!(model(&s, |_| 3).error);
        assert!(!model(&s[..s.len() - 1], |_| 100).error);
        s[0] = 9;
        assert!(model(&s, |_| 100).error);
    }

    fn seed(target: &str, name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target)
            .join(format!("seed-{name}"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
    }

    /// The seeds exercise what they are named for (so a change of the
    /// wire format that makes them useless shows up here).
    #[test]
    fn seeds_do_what_they_say() {
        for (target, format) in [
            ("decode_msgpack", Format::Msgpack),
            ("decode_json", Format::Json),
        ] {
            for name in ["call_opts", "array", "proxy", "date", "floats", "map"] {
                assert!(
                    check_codec(format, &seed(target, name), &[]).is_some(),
                    "{target} {name}"
                );
            }
        }
        for name in ["call_opts", "tuple", "scalar", "buffer", "buffer_array"] {
            let frames = split_frames(&seed("decode_farcall", name));
            assert!(
                check_codec(Format::Farcall, &frames[0], &frames[1..]).is_some(),
                "{name}"
            );
        }
        let native = |name| run_native(&seed("native_frames", name)).unwrap();
        // hello, call, ping, cancel, heartbeat
        assert_eq!(native("session-1byte"), (5, false));
        assert_eq!(native("session-mixed"), (5, false));
        assert_eq!(native("reply"), (2, false));
        assert_eq!(native("large-frame"), (1, true));
        assert_eq!(native("max-frames"), (1, true));
        assert_eq!(native("bad-kind"), (1, true));
        assert_eq!(native("too-many-frames"), (0, true));
        assert_eq!(native("over-limit"), (0, true));
        assert_eq!(native("truncated"), (0, false));
        for name in [
            "hello",
            "challenge-auth",
            "challenge-open",
            "proof",
            "ok",
            "denied",
            "peer",
        ] {
            assert!(
                Hello::parse(&split_frames(&seed("handshake", name))).is_ok(),
                "{name}"
            );
        }
        for name in ["farcall-call_obj", "json-get_item", "msgpack-hello"] {
            let frames = split_frames(&seed("zmq_request", name));
            let request = Request::parse(frames[1..].to_vec()).expect(name);
            assert!(
                request.decode_opts(request.format().unwrap()).is_ok(),
                "{name}"
            );
        }
    }

    /// Replays the checked-in corpus through every check, and names every
    /// file that fails (a known bug's input fails until it is fixed).
    #[test]
    fn corpus_replays() {
        // Inputs nest 512 deep; unoptimized recursion needs more than a
        // test thread's default 2 MiB of stack.
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(replay_corpus)
            .unwrap()
            .join()
            .unwrap();
    }

    fn replay_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let mut failed = Vec::new();
        for (name, check) in TARGETS {
            let dir = root.join(name);
            let mut n = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                if std::panic::catch_unwind(|| check(&data)).is_err() {
                    failed.push(path.display().to_string());
                }
                n += 1;
            }
            assert!(n > 0, "no corpus for {name}");
        }
        assert!(failed.is_empty(), "corpus files that fail: {failed:#?}");
    }
}
