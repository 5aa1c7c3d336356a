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
        codec::decode_fields(format, body, buffers, |key, value| {
            match key {
                "action" => action = Some(value),
                "req_id" => req_id = value.as_i64(),
                "rval" => rval = value,
                "error" => error = value,
                _ => {} // what a later protocol adds
            }
            Ok(())
        })?;
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

/// Encodes a reply to request `req_id` into frames.
pub fn reply_frames(
    format: Format,
    req_id: i64,
    result: Result<Value>,
    exporter: &mut dyn Exporter,
) -> Result<Frames> {
    let (rval, error) = match result {
        Ok(v) => (v, Value::None),
        Err(e) => (Value::None, error_value(&e)),
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

/// The `error` field of a reply: `[type_name, [traceback lines]]`.
pub fn error_value(e: &Error) -> Value {
    let (type_name, lines) = e.to_wire();
    Value::List(vec![
        Value::Str(type_name),
        Value::List(lines.into_iter().map(Value::Str).collect()),
    ])
}

/// Encodes the disconnect notice a closing server sends to every client.
pub fn disconnect_frames(format: Format) -> Frames {
    let map = Value::map([("action", Value::from("disconnect"))]);
    let body = codec::encode(format, &map, &mut codec::NoExport)
        .map(|e| e.body)
        .unwrap_or_default();
    vec![Bytes::from(body)]
}
