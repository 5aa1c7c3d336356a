//! Replies, parsed and built in one place.
//!
//! A reply is one serialized map, `{action: "return", req_id, rval,
//! error}` or `{action: "disconnect"}`, followed by its out-of-band
//! buffers (farcall format). `error` is `[type_name, [traceback lines]]`.

use bytes::Bytes;

use super::Frames;
use crate::codec::{self, Encoded, Exporter, Field, Format};
use crate::error::{Error, Result};
use crate::value::Value;

/// A reply as received by a client.
#[derive(Debug)]
pub enum Reply {
    /// The outcome of request `req_id`.
    Return {
        /// The request this answers.
        req_id: i64,
        /// The value, or the remote exception.
        result: Result<Value>,
    },
    /// The server is closing; every pending call fails.
    Disconnect,
}

impl Reply {
    /// Parses reply frames (body plus out-of-band buffers).
    pub fn parse(format: Format, frames: &[Bytes]) -> Result<Reply> {
        let (body, buffers) = frames
            .split_first()
            .ok_or_else(|| Error::Protocol("empty reply".into()))?;
        let (mut action, mut req_id, mut rval, mut error) = (None, None, Value::None, Value::None);
        let decoded = codec::decode_fields(format, body, buffers, |key, value| {
            match key {
                "action" => action = Some(value),
                "req_id" => req_id = value.as_i64(),
                "rval" => rval = value,
                "error" => error = value,
                _ => {} // what a later protocol adds
            }
            Ok(())
        });
        if let Err(e) = decoded {
            // A reply whose id can be read though its value cannot fails
            // its call now, instead of leaving it to its timeout. The
            // streaming decoders saw the id already; json is read again
            // without pyacq's tags.
            if format == Format::Json {
                if let Ok(raw) = serde_json::from_slice::<serde_json::Value>(body) {
                    action = raw.get("action").and_then(|a| a.as_str()).map(Value::from);
                    req_id = raw.get("req_id").and_then(serde_json::Value::as_i64);
                }
            }
            return match (action.as_ref().and_then(Value::as_str), req_id) {
                (Some("return"), Some(req_id)) => Ok(Reply::Return {
                    req_id,
                    result: Err(Error::Protocol(format!("unreadable reply: {e}"))),
                }),
                _ => Err(e),
            };
        }
        match action.as_ref().and_then(Value::as_str) {
            Some("disconnect") => Ok(Reply::Disconnect),
            Some("return") => {
                let req_id =
                    req_id.ok_or_else(|| Error::Protocol("reply without req_id".into()))?;
                let result = match error {
                    Value::None => Ok(rval),
                    error => Err(parse_error(error)),
                };
                Ok(Reply::Return { req_id, result })
            }
            other => Err(Error::Protocol(format!("unknown reply action {other:?}"))),
        }
    }
}

/// Reads a reply's `error` field: `[type_name, [lines]]` (pyacq), or the
/// map form of later pyacq versions (`{type, traceback}`).
fn parse_error(error: Value) -> Error {
    let (type_name, lines) = match &error {
        Value::List(v) | Value::Tuple(v) if v.len() == 2 => (v[0].clone(), v[1].clone()),
        Value::Map(_) => (
            error.get("type").cloned().unwrap_or_default(),
            error.get("traceback").cloned().unwrap_or_default(),
        ),
        _ => (Value::None, Value::None),
    };
    let traceback = match lines {
        Value::List(v) | Value::Tuple(v) => v
            .iter()
            .map(|l| l.as_str().map_or_else(|| format!("{l:?}"), str::to_owned))
            .collect(),
        Value::Str(s) => vec![s],
        _ => vec![format!("{error:?}")],
    };
    Error::Remote {
        type_name: type_name.as_str().unwrap_or("Exception").to_string(),
        traceback,
    }
}

/// How a reply's `error` field is laid out for the peer that reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorShape {
    /// `[type_name, [traceback lines]]`: pyacq, and farcall peers.
    #[default]
    Pair,
    /// `{type, traceback, remote_stack_info, remote_exc_traceback}`:
    /// teleprox 2.x, which reads only this one.
    Map,
}

impl ErrorShape {
    /// The shape a ZeroMQ peer reads, told by its routing id: teleprox
    /// clients name themselves `host.process.thread:ADDRESS`, with the
    /// server's address (a `://` in it); pyacq's and farcall's ids have
    /// none.
    pub fn for_routing_id(id: &[u8]) -> ErrorShape {
        match id.windows(3).any(|w| w == b"://") {
            true => ErrorShape::Map,
            false => ErrorShape::Pair,
        }
    }
}

/// Encodes a reply to request `req_id` into frames.
pub fn reply_frames(
    format: Format,
    req_id: i64,
    result: Result<Value>,
    exporter: &mut dyn Exporter,
) -> Result<Frames> {
    reply_frames_shaped(format, ErrorShape::Pair, req_id, result, exporter)
}

/// [`reply_frames`] with the error laid out as `shape`.
pub fn reply_frames_shaped(
    format: Format,
    shape: ErrorShape,
    req_id: i64,
    result: Result<Value>,
    exporter: &mut dyn Exporter,
) -> Result<Frames> {
    let (rval, error) = match result {
        Ok(v) => (v, Value::None),
        Err(e) => (Value::None, error_value(&e, shape)),
    };
    let fields = [
        ("action", Field::Str("return")),
        ("req_id", Field::Int(req_id)),
        ("rval", Field::Value(&rval)),
        ("error", Field::Value(&error)),
    ];
    let Encoded { body, buffers } = codec::encode_fields(format, &fields, exporter)?;
    let mut frames = Vec::with_capacity(1 + buffers.len());
    frames.push(Bytes::from(body));
    frames.extend(buffers);
    Ok(frames)
}

/// The `error` field of a reply, laid out as `shape`.
pub fn error_value(e: &Error, shape: ErrorShape) -> Value {
    let (type_name, lines) = e.to_wire();
    match shape {
        ErrorShape::Pair => Value::List(vec![
            Value::Str(type_name),
            Value::List(lines.into_iter().map(Value::Str).collect()),
        ]),
        ErrorShape::Map => {
            let text = lines.concat();
            Value::map([
                ("type", Value::Str(type_name)),
                (
                    "traceback",
                    Value::List(lines.into_iter().map(Value::Str).collect()),
                ),
                ("remote_stack_info", Value::Str(String::new())),
                ("remote_exc_traceback", Value::Str(text)),
            ])
        }
    }
}

/// Encodes the disconnect notice a closing server sends to every client.
pub fn disconnect_frames(format: Format) -> Frames {
    let map = Value::map([("action", Value::from("disconnect"))]);
    let body = codec::encode(format, &map, &mut codec::NoExport)
        .map(|e| e.body)
        .unwrap_or_default();
    vec![Bytes::from(body)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_with_an_unreadable_value_fails_its_call() {
        // {"action": "return", "req_id": 7, "rval": <a bad tagged map>}
        let body = br#"{"action": "return", "req_id": 7, "rval": {"___type_name___": "ndarray", "dtype": "float64", "shape": "x", "data": ""}, "error": null}"#;
        let frames = vec![Bytes::from_static(body)];
        match Reply::parse(Format::Json, &frames).unwrap() {
            Reply::Return {
                req_id: 7,
                result: Err(Error::Protocol(why)),
            } => {
                assert!(why.contains("unreadable reply"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_shape_follows_the_routing_id() {
        let teleprox = b"host.proc.MainThread:tcp://127.0.0.1:5000";
        assert_eq!(ErrorShape::for_routing_id(teleprox), ErrorShape::Map);
        assert_eq!(
            ErrorShape::for_routing_id(b"farcall-0a1b"),
            ErrorShape::Pair
        );
        assert_eq!(ErrorShape::for_routing_id(&[0, 1, 2, 3]), ErrorShape::Pair);
    }

    #[test]
    fn both_error_shapes_read_back() {
        let e = Error::Remote {
            type_name: "ZeroDivisionError".into(),
            traceback: vec!["line one\n".into(), "line two\n".into()],
        };
        for shape in [ErrorShape::Pair, ErrorShape::Map] {
            match parse_error(error_value(&e, shape)) {
                Error::Remote {
                    type_name,
                    traceback,
                } => {
                    assert_eq!(type_name, "ZeroDivisionError");
                    assert_eq!(traceback, ["line one\n", "line two\n"]);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
