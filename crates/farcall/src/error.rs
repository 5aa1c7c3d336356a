//! The one error type of the engine.
//!
//! Errors that cross the wire are exceptions: a type name in Python's
//! vocabulary (`KeyError`, `TypeError`, ...) plus a traceback (a list of
//! lines). Everything else (I/O, timeouts, a peer that went away, bytes
//! that do not parse) has its own variant so callers can match on it.

use std::time::Duration;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in farcall.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The remote side raised an exception while running the request.
    #[error("remote {type_name}: {}", .traceback.concat().trim_end())]
    Remote {
        /// The remote exception's type name, e.g. `"ZeroDivisionError"`.
        type_name: String,
        /// The remote traceback, one string per line (pyacq's format).
        traceback: Vec<String>,
    },
    /// An exception raised here, in this process (bad argument, missing
    /// attribute, ...). Sent to a caller it becomes its `Remote` error.
    #[error("{type_name}: {message}")]
    Exception {
        /// Python-style exception type name (`TypeError`, `KeyError`, ...).
        type_name: String,
        /// Human-readable description.
        message: String,
    },
    /// No reply arrived within the call's timeout.
    #[error("timed out after {0:?} waiting for a reply")]
    Timeout(Duration),
    /// The peer is gone (closed, said goodbye, or its process died).
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// A peer sent something that does not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A value could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
    /// An address that cannot be parsed or bound.
    #[error("bad address {0:?}: {1}")]
    Address(String, String),
    /// Operating-system I/O failure.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// libzmq failure.
    #[error("ZeroMQ error: {0}")]
    Zmq(#[from] zmq::Error),
}

impl Error {
    /// An exception with a Python-style type name, raised locally.
    pub fn exception(type_name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Exception {
            type_name: type_name.into(),
            message: message.into(),
        }
    }

    /// A `TypeError` (wrong argument type or count).
    pub fn type_error(message: impl Into<String>) -> Self {
        Self::exception("TypeError", message)
    }

    /// A `ValueError` (right type, wrong value).
    pub fn value_error(message: impl Into<String>) -> Self {
        Self::exception("ValueError", message)
    }

    /// A `KeyError` (missing name, object id or item).
    pub fn key_error(message: impl Into<String>) -> Self {
        Self::exception("KeyError", message)
    }

    /// An `AttributeError` (no such attribute or method).
    pub fn attribute_error(message: impl Into<String>) -> Self {
        Self::exception("AttributeError", message)
    }

    /// The exception type name and traceback lines this error is sent as
    /// in a reply's `error` field.
    pub fn to_wire(&self) -> (String, Vec<String>) {
        match self {
            Error::Remote {
                type_name,
                traceback,
            } => (type_name.clone(), traceback.clone()),
            Error::Exception { type_name, message } => {
                (type_name.clone(), vec![format!("{type_name}: {message}\n")])
            }
            other => {
                let name = match other {
                    Error::Timeout(_) => "TimeoutError",
                    Error::Disconnected(_) => "DisconnectError",
                    Error::Protocol(_) => "ProtocolError",
                    Error::Codec(_) => "TypeError",
                    Error::Address(..) => "ValueError",
                    _ => "OSError",
                };
                (name.to_string(), vec![format!("{name}: {other}\n")])
            }
        }
    }

    /// True when the error means the peer is gone for good.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, Error::Disconnected(_))
    }
}
