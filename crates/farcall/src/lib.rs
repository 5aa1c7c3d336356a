//! farcall: control other processes through object proxies.
//!
//! The engine behind the `farcall` Python package, usable directly from
//! Rust. One module per concern:
//!
//! - [`value`]: the dynamic [`Value`] that travels between peers.
//! - [`codec`]: values to bytes (pyacq's msgpack and json, farcall's own).
//! - [`protocol`]: messages, requests, replies and one typed command per
//!   action, parsed and built in one place.
//! - [`channel`]: byte channels (sockets, pipes, anything with read and
//!   write) and the framing on top of them.
//! - [`transport`]: addresses, native sockets, ZeroMQ.
//! - [`handshake`]: admitting a peer before any request runs, and
//!   [`auth`]: the keys and proofs it uses.
//! - [`host`]: the objects a process serves (no I/O).
//! - [`peer`]: links that carry calls both ways, their in-flight calls,
//!   who reads them, who runs their requests.
//! - [`server`]: a listener whose links' requests run in its thread.
//! - [`client`]: pyacq's client, a view on one link.
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
pub mod channel;
pub mod client;
pub mod codec;
pub mod convert;
pub mod error;
pub mod handshake;
pub mod hooks;
pub mod host;
pub mod log;
pub mod object;
pub mod peer;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod spawn;
mod sync;
mod table;
pub mod transport;
pub mod value;
pub mod value_serde;

pub use client::{Client, ClientOptions, Future};
pub use convert::{Args, FromValue};
pub use error::{Error, Result};
pub use farcall_macros::remote;
pub use handshake::Auth;
pub use host::{Host, Runtime};
pub use log::{LogSender, LogServer};
pub use object::{object, BoundMethod, Hosted, Kwargs, Remote, RemoteFields, RemoteObject};
pub use peer::{Heartbeat, Link, LinkOptions};
pub use protocol::{ReturnType, SyncMode};
pub use proxy::{Invoked, Proxy};
pub use server::peers::PeerListener;
pub use server::{Server, ServerOptions};
pub use spawn::{ProcessSpawner, SpawnOptions};
pub use value::{Array, Date, DateTime, ObjectRef, ProxyRef, Value};
pub use value_serde::{from_value, to_value};

/// The crate version, reported by the Python package too.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
