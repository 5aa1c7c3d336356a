//! farcall: control other processes through object proxies.
//!
//! The engine behind the `farcall` Python package, usable directly from
//! Rust. One module per concern:
//!
//! - [`value`]: the dynamic [`Value`] that travels between peers.
//! - [`codec`]: values to bytes (pyacq's msgpack and json, farcall's own).
//! - [`protocol`]: requests and replies, parsed from frames in one place.
//! - [`transport`]: moving frames (native Unix/TCP streams, ZeroMQ).
//! - [`handshake`]: admitting a peer before any request runs, and
//!   [`auth`]: the keys and proofs it uses.
//! - [`server`]: hosts objects and answers requests.
//! - [`client`]: sends requests and waits for replies.
//! - [`proxy`]: a handle to a remote object.
//! - [`object`]: what a server can host ([`RemoteObject`]).
//! - [`spawn`]: starting a child process that serves ([`ProcessSpawner`]).
//! - [`log`]: log records of many processes in one place ([`LogServer`], [`LogSender`]).

pub mod auth;
pub mod client;
pub mod codec;
pub mod convert;
pub mod error;
pub mod handshake;
pub mod log;
pub mod object;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod spawn;
mod table;
pub mod transport;
pub mod value;
pub mod value_serde;

pub use client::{Client, ClientOptions, Future};
pub use convert::{Args, FromValue};
pub use error::{Error, Result};
pub use farcall_macros::remote;
pub use handshake::Auth;
pub use log::{LogSender, LogServer};
pub use object::{object, BoundMethod, Hosted, Kwargs, Remote, RemoteFields, RemoteObject};
pub use protocol::{ReturnType, SyncMode};
pub use proxy::{Invoked, Proxy};
pub use server::{Runtime, Server, ServerOptions};
pub use spawn::{ProcessSpawner, SpawnOptions};
pub use value::{Array, Date, DateTime, ObjectRef, ProxyRef, Value};
pub use value_serde::{from_value, to_value};

/// The crate version, reported by the Python package too.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
