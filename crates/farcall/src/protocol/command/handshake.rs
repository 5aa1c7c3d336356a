//! The handshake over ZeroMQ, as two actions (see `crate::handshake`):
//! `farcall_hello {nonce: bytes}` answers with the server's challenge, and
//! `farcall_auth {proof: bytes}` with `"ok"` or a `PermissionError`.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::value::Value;

/// `farcall_hello`.
#[derive(Debug)]
pub struct Hello {
    /// The client's nonce; `None` when the hello has none (pyacq-style,
    /// which suits only an open server).
    pub nonce: Option<Bytes>,
}

impl Hello {
    /// Reads the options.
    pub fn parse(opts: Value) -> Result<Hello> {
        Ok(Hello {
            nonce: bytes_opt(&opts, "nonce").ok(),
        })
    }

    /// The options.
    pub fn opts(nonce: &[u8]) -> Value {
        super::opts([("nonce", Value::Bytes(Bytes::copy_from_slice(nonce)))])
    }
}

/// `farcall_auth`.
#[derive(Debug)]
pub struct Auth {
    /// The client's proof.
    pub proof: Bytes,
}

impl Auth {
    /// Reads the options.
    pub fn parse(opts: Value) -> Result<Auth> {
        Ok(Auth {
            proof: bytes_opt(&opts, "proof")?,
        })
    }

    /// The options.
    pub fn opts(proof: &[u8]) -> Value {
        super::opts([("proof", Value::Bytes(Bytes::copy_from_slice(proof)))])
    }
}

fn bytes_opt(opts: &Value, key: &str) -> Result<Bytes> {
    match opts.get(key) {
        Some(Value::Bytes(b)) => Ok(b.clone()),
        _ => Err(Error::Protocol(format!("handshake option '{key}' missing"))),
    }
}
