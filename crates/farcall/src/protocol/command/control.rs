//! The actions about the connection rather than objects: `ping` (answer
//! `"pong"`), `close` (close the server; answer `True`) and, between
//! farcall peers over ZeroMQ, `farcall_cancel {req_id: int}` (one-way: the
//! caller gave up on that request; a native link sends a cancel message
//! instead).

use crate::error::{Error, Result};
use crate::value::Value;

/// `ping`: no options (any sent must still decode).
#[derive(Debug)]
pub struct Ping;

impl Ping {
    /// Reads the (absent) options.
    pub fn parse(_opts: Value) -> Result<Ping> {
        Ok(Ping)
    }
}

/// `close`: no options (any sent must still decode).
#[derive(Debug)]
pub struct Close;

impl Close {
    /// Reads the (absent) options.
    pub fn parse(_opts: Value) -> Result<Close> {
        Ok(Close)
    }
}

/// `farcall_cancel`: the request the caller gave up on.
#[derive(Debug)]
pub struct Cancel {
    /// Its id.
    pub req_id: i64,
}

impl Cancel {
    /// Reads the options.
    pub fn parse(opts: Value) -> Result<Cancel> {
        let req_id = opts
            .get("req_id")
            .and_then(Value::as_i64)
            .ok_or_else(|| Error::type_error("farcall_cancel needs req_id"))?;
        Ok(Cancel { req_id })
    }

    /// The options.
    pub fn opts(req_id: i64) -> Value {
        super::opts([("req_id", Value::from(req_id))])
    }
}
