//! A request's frames, parsed and built in one place.
//!
//! This is pyacq's request: five frames, `[req_id, action, return_type,
//! ser_type, opts]` (ASCII decimal request id, `-1` when no reply is
//! wanted; action, return type and serializer names in ASCII; opts
//! serialized, or empty). In the farcall format, out-of-band buffers
//! follow as extra frames. On a native link a request also names its call
//! chain (see [`super::message`]).

use bytes::Bytes;

use super::{Action, Frames, ReturnType};
use crate::codec::{self, Encoded, Exporter, Field, Format};
use crate::error::{Error, Result};
use crate::value::Value;

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
    /// The call chain the request belongs to (native links; 0: none). A
    /// request of a chain whose caller waits in this process runs in the
    /// waiting thread.
    pub chain: u64,
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
    pub fn parse(frames: Frames) -> std::result::Result<Request, BadRequest> {
        Request::parse_after(frames, 0)
    }

    /// Parses the request that starts at frame `skip` (the frames before
    /// it are the caller's: a native link's call chain).
    pub fn parse_after(
        mut frames: Frames,
        skip: usize,
    ) -> std::result::Result<Request, BadRequest> {
        if frames.len() < skip + 5 {
            let req_id = frames.get(skip).and_then(|f| parse_req_id(f));
            return Err(BadRequest {
                req_id,
                error: Error::Protocol(format!(
                    "a request has at least 5 frames, got {}",
                    frames.len().saturating_sub(skip)
                )),
            });
        }
        let buffers = frames.split_off(skip + 5);
        let mut it = frames.into_iter().skip(skip);
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
            chain: 0,
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

    /// Only the farcall format has frames after the options (its
    /// buffers): a msgpack or json request with more than five frames is
    /// malformed.
    pub fn check_frames(&self, format: Format) -> Result<()> {
        if format == Format::Farcall || self.buffers.is_empty() {
            return Ok(());
        }
        Err(Error::Protocol(format!(
            "a {} request has 5 frames, got {}",
            format.name(),
            5 + self.buffers.len()
        )))
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

    /// Decodes the options entry by entry, handing each to `field`,
    /// building no map (the hot path of `call_obj`); the out-of-band
    /// buffers are handed over as by [`Request::take_opts`].
    pub fn take_fields(
        &mut self,
        format: Format,
        field: impl FnMut(&str, Value) -> Result<()>,
    ) -> Result<()> {
        if !self.opts.is_empty() {
            codec::decode_fields(format, &self.opts, &self.buffers, field)?;
        }
        self.buffers = Vec::new();
        Ok(())
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
    // Room for one more in front: a native link's call chain.
    let mut frames = Vec::with_capacity(6 + buffers.len());
    frames.push(Bytes::from(req_id.to_string()));
    frames.push(Bytes::from_static(action.name().as_bytes()));
    frames.push(Bytes::from_static(return_type.name().as_bytes()));
    frames.push(Bytes::from_static(format.name().as_bytes()));
    frames.push(Bytes::from(body));
    frames.extend(buffers);
    Ok(frames)
}
