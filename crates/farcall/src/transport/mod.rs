//! Moving frames between peers.
//!
//! Two kinds of transport share the protocol (see docs/transports.md):
//!
//! - native streams (`unix://PATH`, `tcp+native://HOST:PORT`): peer links
//!   (`crate::peer`) on a Unix or TCP socket, read and written by the
//!   thread that needs the data (the I/O thread reads only what nobody
//!   else does);
//! - ZeroMQ (`tcp://`, `ipc://`, `inproc://`): a ROUTER socket on the
//!   server and a DEALER per client, as pyacq does, through libzmq.

pub mod spin;
pub mod stream;
pub mod zmq;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A parsed endpoint address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A ZeroMQ endpoint, kept as written (`tcp://`, `ipc://`, `inproc://`).
    Zmq(String),
    /// A native Unix-socket endpoint.
    Unix(PathBuf),
    /// A native TCP endpoint, `host:port` (port `*` or `0`: any free port).
    Tcp(String),
}

/// The scheme of native TCP addresses.
pub const NATIVE_TCP: &str = "tcp+native://";
/// The scheme of native Unix-socket addresses.
pub const UNIX: &str = "unix://";

impl Address {
    /// Parses an address string.
    pub fn parse(s: &str) -> Result<Address> {
        let bad = |why: &str| Error::Address(s.to_string(), why.to_string());
        if let Some(rest) = s.strip_prefix(UNIX) {
            return match rest {
                "" => Err(bad("empty path")),
                "*" => Ok(Address::Unix(auto_socket_path())),
                // Absolute, so the proxies it hands out work from any
                // directory.
                path => std::path::absolute(path)
                    .map(Address::Unix)
                    .map_err(|e| bad(&format!("cannot make the path absolute: {e}"))),
            };
        }
        if let Some(rest) = s.strip_prefix(NATIVE_TCP) {
            if !rest.contains(':') {
                return Err(bad("expected host:port"));
            }
            return Ok(Address::Tcp(rest.replace(":*", ":0")));
        }
        if let Some(rest) = s.strip_prefix("tcp://localhost:") {
            // libzmq binds interfaces or addresses, not host names.
            return Ok(Address::Zmq(format!("tcp://127.0.0.1:{rest}")));
        }
        for scheme in ["tcp://", "ipc://", "inproc://"] {
            if s.starts_with(scheme) {
                return Ok(Address::Zmq(s.to_string()));
            }
        }
        Err(bad(
            "unknown scheme; use unix://, tcp+native://, or ZeroMQ's tcp://, ipc://, inproc://",
        ))
    }

    /// True for ZeroMQ endpoints.
    pub fn is_zmq(&self) -> bool {
        matches!(self, Address::Zmq(_))
    }

    /// True when only this machine can reach the address: Unix sockets,
    /// `ipc://`, `inproc://`, and TCP on a loopback host.
    pub fn is_local(&self) -> bool {
        match self {
            Address::Unix(_) => true,
            Address::Tcp(hostport) => is_loopback_host(hostport),
            Address::Zmq(ep) => match ep.strip_prefix("tcp://") {
                Some(hostport) => is_loopback_host(hostport),
                None => true,
            },
        }
    }

    /// The address as a string, in the syntax `parse` reads.
    pub fn to_url(&self) -> String {
        match self {
            Address::Zmq(s) => s.clone(),
            Address::Unix(p) => format!("{UNIX}{}", p.display()),
            Address::Tcp(hp) => format!("{NATIVE_TCP}{hp}"),
        }
    }
}

/// True when `host:port` names a loopback host.
fn is_loopback_host(hostport: &str) -> bool {
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A fresh socket path in the per-user runtime directory (or the temp
/// directory), unique within this process.
fn auto_socket_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Random too: a killed process leaves its socket file behind, and a
    // later process may get the same pid.
    let salt = crate::auth::random::<4>().map_or(0, u32::from_le_bytes);
    dir.join(format!(
        "farcall-{}-{n}-{salt:08x}.sock",
        std::process::id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            Address::parse("unix:///tmp/a.sock").unwrap(),
            Address::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            Address::parse("tcp+native://127.0.0.1:*").unwrap(),
            Address::Tcp("127.0.0.1:0".into())
        );
        assert!(Address::parse("tcp://127.0.0.1:*").unwrap().is_zmq());
        assert!(Address::parse("inproc://x").unwrap().is_zmq());
        assert!(Address::parse("http://x").is_err());
        assert!(Address::parse("unix://").is_err());
        let auto = Address::parse("unix://*").unwrap();
        assert!(matches!(auto, Address::Unix(p) if p.to_string_lossy().ends_with(".sock")));
    }
}
