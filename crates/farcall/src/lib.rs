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
//! - [`object`](mod@object): what a server can host ([`RemoteObject`]).
//! - [`spawn`]: starting a child process that serves ([`ProcessSpawner`]).
//! - [`log`]: log records of many processes in one place ([`LogServer`], [`LogSender`]).
//!
//! Hosting a Rust object and calling it through a proxy:
//!
//! ```
//! #[farcall::remote]
//! pub struct Counter {
//!     pub count: i64,
//! }
//!
//! #[farcall::remote]
//! impl Counter {
//!     pub fn add(&mut self, x: i64) -> i64 {
//!         self.count += x;
//!         self.count
//!     }
//!     #[farcall(name = "value")]
//!     pub fn current(&self) -> i64 {
//!         self.count
//!     }
//!     #[farcall(skip)]
//!     pub fn local_only(&self) {}
//! }
//!
//! # fn main() -> farcall::Result<()> {
//! let server = farcall::Server::bind("unix://*")?;
//! server.publish("counter", farcall::object(Counter { count: 0 }));
//! let serving = server.clone();
//! let thread = std::thread::spawn(move || serving.run_forever());
//!
//! let client = farcall::Client::connect(server.address())?;
//! let counter = farcall::Proxy::adopt(client.get_item("counter")?)?;
//! counter.call_method("add", vec![2.into()])?;
//! assert_eq!(counter.call_method("value", vec![])?, farcall::Value::Int(2));
//! assert_eq!(counter.get_attr("count")?, farcall::Value::Int(2));
//! assert!(counter.call_method("local_only", vec![]).is_err());
//!
//! server.close();
//! thread.join().unwrap()?;
//! # Ok(())
//! # }
//! ```

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
