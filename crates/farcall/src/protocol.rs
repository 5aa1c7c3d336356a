//! Requests and replies, and how they map to frames.
//!
//! This is pyacq's protocol. A request is five frames:
//! `[req_id, action, return_type, ser_type, opts]` (ASCII decimal request
//! id, `-1` when no reply is wanted; action, return type and serializer
//! names in ASCII; opts serialized, or empty). In the farcall format,
//! out-of-band buffers follow as extra frames. A reply is one serialized
//! map, `{action: "return", req_id, rval, error}` or
//! `{action: "disconnect"}`, followed by its out-of-band buffers.
//!
//! Frames are parsed here and nowhere else; see docs/protocol.md.

use bytes::Bytes;

use crate::codec::{self, Encoded, Exporter, Field, Format};
use crate::error::{Error, Result};
use crate::value::Value;

/// A message as moved by a transport: a list of frames.
pub type Frames = Vec<Bytes>;

/// What a request asks the server to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Call an object (or a method, through the proxy's attribute path).
    CallObj,
    /// Return an object (by value or by proxy).
    GetObj,
    /// Read a published name.
    GetItem,
    /// Publish a name.
    SetItem,
    /// Release one proxy reference.
    Delete,
    /// Import a module and return it.
    Import,
    /// Answer `"pong"`.
    Ping,
    /// Close the server.
    Close,
    /// farcall's connection handshake over ZeroMQ: format negotiation and
    /// the server's challenge.
    Hello,
    /// farcall's handshake over ZeroMQ: the client's proof.
    Auth,
}

impl Action {
    /// The action's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Action::CallObj => "call_obj",
            Action::GetObj => "get_obj",
            Action::GetItem => "get_item",
            Action::SetItem => "set_item",
            Action::Delete => "delete",
            Action::Import => "import",
            Action::Ping => "ping",
            Action::Close => "close",
            Action::Hello => "farcall_hello",
            Action::Auth => "farcall_auth",
        }
    }

    /// Parses an action name; `None` for an unknown action.
    pub fn from_name(name: &[u8]) -> Option<Action> {
        Some(match name {
            b"call_obj" => Action::CallObj,
            b"get_obj" => Action::GetObj,
            b"get_item" | b"getitem" => Action::GetItem,
            b"set_item" | b"setitem" => Action::SetItem,
            b"delete" => Action::Delete,
            b"import" => Action::Import,
            b"ping" => Action::Ping,
            b"close" => Action::Close,
            b"farcall_hello" => Action::Hello,
            b"farcall_auth" => Action::Auth,
            _ => return None,
        })
    }
}

/// How the server returns a result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReturnType {
    /// By copy when the value's type travels natively, else by proxy.
    #[default]
    Auto,
    /// Always by proxy.
    Proxy,
    /// Always by copy (an error if the object cannot be copied).
    Value,
}

impl ReturnType {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ReturnType::Auto => "auto",
            ReturnType::Proxy => "proxy",
            ReturnType::Value => "value",
        }
    }

    /// Parses a return type name.
    pub fn from_name(name: &[u8]) -> Option<ReturnType> {
        match name {
            b"auto" => Some(ReturnType::Auto),
            b"proxy" => Some(ReturnType::Proxy),
            b"value" => Some(ReturnType::Value),
            _ => None,
        }
    }
}

/// How a client waits for a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Block until the reply arrives (or the timeout passes).
    #[default]
    Sync,
    /// Return a future at once.
    Async,
    /// Ask for no reply at all.
    Off,
}

impl SyncMode {
    /// Parses `"sync"`, `"async"` or `"off"`.
    pub fn from_name(name: &str) -> Option<SyncMode> {
        match name {
            "sync" => Some(SyncMode::Sync),
            "async" => Some(SyncMode::Async),
            "off" => Some(SyncMode::Off),
            _ => None,
        }
    }
}

/// A request as received: names still raw so that an unknown action or
/// serializer can be answered with an error naming it.
#[derive(Debug)]
pub struct Request {
    /// The request id; negative when the caller wants no reply.
    pub req_id: i64,
    /// The raw action name.
    pub action: Bytes,
    /// The raw return type name.
    pub return_type: Bytes,
    /// The raw serializer name.
    pub ser_type: Bytes,
    /// The serialized options (empty for none).
    pub opts: Bytes,
    /// Out-of-band buffers (farcall format).
    pub buffers: Vec<Bytes>,
}

/// Frames that did not form a request. `req_id` is set when it could be
/// read, so the sender can still be told what was wrong.
#[derive(Debug)]
pub struct BadRequest {
    /// The request id, if it could be parsed.
    pub req_id: Option<i64>,
    /// What was wrong.
    pub error: Error,
}

impl Request {
    /// Parses request frames.
    pub fn parse(mut frames: Frames) -> std::result::Result<Request, BadRequest> {
        if frames.len() < 5 {
            let req_id = frames.first().and_then(|f| parse_req_id(f));
            return Err(BadRequest {
                req_id,
                error: Error::Protocol(format!(
                    "a request has at least 5 frames, got {}",
                    frames.len()
                )),
            });
        }
        let buffers = frames.split_off(5);
        let mut it = frames.into_iter();
        let mut next = || it.next().unwrap_or_default();
        let id_frame = next();
        let req_id = parse_req_id(&id_frame).ok_or_else(|| BadRequest {
            req_id: None,
            error: Error::Protocol(format!(
                "bad request id {:?}",
                String::from_utf8_lossy(&id_frame)
            )),
        })?;
        Ok(Request {
            req_id,
            action: next(),
            return_type: next(),
            ser_type: next(),
            opts: next(),
            buffers,
        })
    }

    /// The action, or a `ValueError` naming the unknown one.
    pub fn action(&self) -> Result<Action> {
        Action::from_name(&self.action).ok_or_else(|| {
            Error::value_error(format!(
                "Invalid RPC action '{}'",
                String::from_utf8_lossy(&self.action)
            ))
        })
    }

    /// The serializer, or a `ValueError` naming the unknown one.
    pub fn format(&self) -> Result<Format> {
        Format::from_name(&self.ser_type).ok_or_else(|| {
            Error::value_error(format!(
                "Unsupported serializer '{}'",
                String::from_utf8_lossy(&self.ser_type)
            ))
        })
    }

    /// The return type, or a `ValueError`.
    pub fn return_type(&self) -> Result<ReturnType> {
        ReturnType::from_name(&self.return_type).ok_or_else(|| {
            Error::value_error(format!(
                "Invalid return type '{}'",
                String::from_utf8_lossy(&self.return_type)
            ))
        })
    }

    /// Decodes the options (`None` when the frame is empty).
    pub fn decode_opts(&self, format: Format) -> Result<Value> {
        if self.opts.is_empty() {
            return Ok(Value::None);
        }
        codec::decode(format, &self.opts, &self.buffers)
    }

    /// Decodes the options, handing the out-of-band buffers over to the
    /// value: with no other reference left, a receiver may reuse a buffer's
    /// memory in place (a numpy array over the received bytes, no copy).
    pub fn take_opts(&mut self, format: Format) -> Result<Value> {
        let value = self.decode_opts(format);
        self.buffers = Vec::new();
        value
    }

    /// Decodes the options of a `call_obj` entry by entry, building no
    /// map (the hot path); the out-of-band buffers are handed over as by
    /// [`Request::take_opts`]. Unknown entries are ignored, as pyacq does.
    pub fn take_call_opts(&mut self, format: Format) -> Result<CallOpts> {
        let mut call = CallOpts::default();
        if !self.opts.is_empty() {
            codec::decode_fields(format, &self.opts, &self.buffers, |key, value| {
                match key {
                    "obj" => call.obj = value,
                    "args" => call.args = value,
                    "kwargs" => call.kwargs = value,
                    _ => {}
                }
                Ok(())
            })?;
        }
        self.buffers = Vec::new();
        Ok(call)
    }

    /// True when the caller waits for a reply.
    pub fn wants_reply(&self) -> bool {
        self.req_id >= 0
    }
}

fn parse_req_id(frame: &[u8]) -> Option<i64> {
    std::str::from_utf8(frame).ok()?.trim().parse().ok()
}

/// The options of a request: a value, or a map of borrowed fields (how
/// calls are sent, without building the map; see [`Field`]).
#[derive(Clone, Copy, Debug)]
pub enum Opts<'a> {
    /// Options as a value (`None`: an empty frame).
    Value(&'a Value),
    /// The map `{key: field, ...}`.
    Fields(&'a [(&'a str, Field<'a>)]),
}

impl<'a> From<&'a Value> for Opts<'a> {
    fn from(v: &'a Value) -> Self {
        Opts::Value(v)
    }
}

impl<'a> From<&'a [(&'a str, Field<'a>)]> for Opts<'a> {
    fn from(fields: &'a [(&'a str, Field<'a>)]) -> Self {
        Opts::Fields(fields)
    }
}

/// The options of a `call_obj` request: the target, as sent.
#[derive(Debug, Default)]
pub struct CallOpts {
    /// The proxy to call (its attribute path names the method).
    pub obj: Value,
    /// Positional arguments: a list (or tuple), or None.
    pub args: Value,
    /// Keyword arguments: a map with string keys, or None.
    pub kwargs: Value,
}

/// Encodes a request into frames.
pub fn request_frames<'a>(
    req_id: i64,
    action: Action,
    return_type: ReturnType,
    format: Format,
    opts: impl Into<Opts<'a>>,
    exporter: &mut dyn Exporter,
) -> Result<Frames> {
    let Encoded { body, buffers } = match opts.into() {
        Opts::Value(Value::None) => Encoded::default(),
        Opts::Value(v) => codec::encode(format, v, exporter)?,
        Opts::Fields(fields) => codec::encode_fields(format, fields, exporter)?,
    };
    let mut frames = Vec::with_capacity(5 + buffers.len());
    frames.push(Bytes::from(req_id.to_string()));
    frames.push(Bytes::from_static(action.name().as_bytes()));
    frames.push(Bytes::from_static(return_type.name().as_bytes()));
    frames.push(Bytes::from_static(format.name().as_bytes()));
    frames.push(Bytes::from(body));
    frames.extend(buffers);
    Ok(frames)
}

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
