//! What a native link carries, by message kind (the framing's `kind`
//! byte, see [`crate::channel::frame`]):
//!
//! ```text
//! 1 request    chain (8 bytes LE, or empty) | req_id | action | return_type | ser_type | opts | buffers...
//! 2 reply      reply map | buffers...          (see `reply`)
//! 3 hello      farcall/1 | step | ...          (see `crate::handshake`)
//! 4 cancel     req_id                          the sender gave up on that request
//! 5 heartbeat  "ping" | "pong"                 answered by the I/O side
//! ```
//!
//! Requests and replies travel both ways on one link: either end may call
//! the other.

use bytes::Bytes;

use super::{BadRequest, Frames, Request};
use crate::channel::frame::Kind;
use crate::error::{Error, Result};

/// A heartbeat: a ping asks the other side to show it is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Answer with a pong.
    Ping,
    /// The answer.
    Pong,
}

/// One message received on a native link.
#[derive(Debug)]
pub enum Message {
    /// A request (or frames that did not form one, with what was wrong).
    Request(std::result::Result<Request, BadRequest>),
    /// A reply or a disconnect notice, still encoded (its format is the
    /// one of the request it answers).
    Reply(Frames),
    /// A handshake step, parsed by `handshake::Hello`.
    Hello(Frames),
    /// The peer no longer waits for the reply to this request.
    Cancel(i64),
    /// A heartbeat.
    Beat(Beat),
}

impl Message {
    /// Parses a message. A malformed cancel or heartbeat is a protocol
    /// error; a malformed request is reported inside `Message::Request` so
    /// that its sender can be answered.
    pub fn parse(kind: Kind, frames: Frames) -> Result<Message> {
        Ok(match kind {
            Kind::Request => {
                if frames.is_empty() {
                    return Ok(Message::Request(Err(BadRequest {
                        req_id: None,
                        error: Error::Protocol("a request without frames".into()),
                    })));
                }
                let chain = match frames[0].len() {
                    0 => Ok(0),
                    8 => Ok(u64::from_le_bytes(
                        frames[0][..].try_into().expect("8 bytes"),
                    )),
                    n => Err(Error::Protocol(format!("a call chain of {n} bytes"))),
                };
                Message::Request(match (chain, Request::parse_after(frames, 1)) {
                    (Ok(chain), Ok(mut r)) => {
                        r.chain = chain;
                        Ok(r)
                    }
                    (Err(error), Ok(r)) => Err(BadRequest {
                        req_id: Some(r.req_id),
                        error,
                    }),
                    (_, Err(bad)) => Err(bad),
                })
            }
            Kind::Reply => Message::Reply(frames),
            Kind::Hello => Message::Hello(frames),
            Kind::Cancel => match &frames[..] {
                [id] => Message::Cancel(
                    std::str::from_utf8(id)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| Error::Protocol("a cancel with a bad request id".into()))?,
                ),
                _ => return Err(Error::Protocol("a cancel has one frame".into())),
            },
            Kind::Heartbeat => match &frames[..] {
                [b] if &b[..] == b"ping" => Message::Beat(Beat::Ping),
                [b] if &b[..] == b"pong" => Message::Beat(Beat::Pong),
                _ => return Err(Error::Protocol("a bad heartbeat".into())),
            },
        })
    }
}

/// The native frames of request `frames` (as [`super::request_frames`]
/// builds them) in call chain `chain` (0: none).
pub fn request(chain: u64, frames: Frames) -> (Kind, Frames) {
    request_in(chain_frame(chain), frames)
}

/// [`request`] with the chain's frame made already ([`chain_frame`]).
pub fn request_in(chain: Bytes, mut frames: Frames) -> (Kind, Frames) {
    frames.insert(0, chain);
    (Kind::Request, frames)
}

/// The frame naming call chain `chain` (empty for none).
pub fn chain_frame(chain: u64) -> Bytes {
    if chain == 0 {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&chain.to_le_bytes())
    }
}

/// The frames telling the peer that request `req_id` is no longer awaited.
pub fn cancel(req_id: i64) -> (Kind, Frames) {
    (Kind::Cancel, vec![Bytes::from(req_id.to_string())])
}

/// The frames of a heartbeat.
pub fn beat(beat: Beat) -> (Kind, Frames) {
    let word: &'static [u8] = match beat {
        Beat::Ping => b"ping",
        Beat::Pong => b"pong",
    };
    (Kind::Heartbeat, vec![Bytes::from_static(word)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Format, NoExport};
    use crate::protocol::{request_frames, Action, ReturnType};
    use crate::value::Value;

    #[test]
    fn requests_carry_their_chain() {
        let frames = request_frames(
            7,
            Action::Ping,
            ReturnType::Auto,
            Format::Farcall,
            &Value::None,
            &mut NoExport,
        )
        .unwrap();
        let (kind, native) = request(0xfeed, frames);
        let Message::Request(Ok(r)) = Message::parse(kind, native).unwrap() else {
            panic!("not a request");
        };
        assert_eq!((r.req_id, r.chain), (7, 0xfeed));
        let (kind, native) = request(0, vec![]);
        assert!(matches!(
            Message::parse(kind, native).unwrap(),
            Message::Request(Err(_))
        ));
    }

    #[test]
    fn control_messages_round_trip() {
        let (k, f) = cancel(42);
        assert!(matches!(Message::parse(k, f).unwrap(), Message::Cancel(42)));
        for b in [Beat::Ping, Beat::Pong] {
            let (k, f) = beat(b);
            assert!(matches!(Message::parse(k, f).unwrap(), Message::Beat(x) if x == b));
        }
        assert!(Message::parse(Kind::Cancel, vec![Bytes::from_static(b"x")]).is_err());
        assert!(Message::parse(Kind::Heartbeat, vec![]).is_err());
    }
}
