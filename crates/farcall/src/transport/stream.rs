//! Native sockets: connecting to and listening on `unix://` and
//! `tcp+native://` addresses (the framing on top is `channel::frame`).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Mutex;

use super::Address;
use crate::channel::FdChannel;
use crate::error::{Error, Result};
use crate::sync::lock;

const UNIX_SOCKET: &str = "unix socket";
const TCP_SOCKET: &str = "tcp socket";

/// Connects to a native address; the socket is left non-blocking.
pub fn connect(address: &Address) -> Result<FdChannel> {
    Ok(match address {
        Address::Unix(path) => FdChannel::socket(UnixStream::connect(path)?.into(), UNIX_SOCKET)?,
        Address::Tcp(hostport) => {
            let s = TcpStream::connect(hostport.as_str())?;
            s.set_nodelay(true)?;
            keep_alive(s.as_raw_fd());
            FdChannel::socket(s.into(), TCP_SOCKET)?
        }
        Address::Zmq(a) => return Err(not_native(a)),
    })
}

/// Turns on TCP keepalive probes, so that a peer whose host died or
/// vanished from the network is noticed in about 16 s (10 s idle, then 3
/// probes 2 s apart) and its pending calls fail. The kernel sends them:
/// nothing on the call path, nothing user code can block. (Unix sockets
/// need none: the kernel knows when the peer process is gone.)
fn keep_alive(fd: RawFd) {
    let set = |level, name, value: libc::c_int| {
        // SAFETY: setsockopt reads one c_int from a valid pointer.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 2);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
}

fn not_native(address: &str) -> Error {
    Error::Address(address.to_string(), "not a native address".into())
}

/// A listening native socket.
#[derive(Debug)]
pub enum Listener {
    /// Listening on a Unix socket path (removed again on drop).
    Unix(UnixListener, std::path::PathBuf),
    /// Listening on a TCP port.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `address`; returns the listener and the address peers use to
    /// reach it (the real port when `*` was asked for).
    pub fn bind(address: &Address) -> Result<(Listener, Address)> {
        let listener = match address {
            Address::Unix(path) => {
                let l = UnixListener::bind(path)?;
                l.set_nonblocking(true)?;
                lock(&SOCKET_FILES).push(path.clone());
                Listener::Unix(l, path.clone())
            }
            Address::Tcp(hostport) => {
                let l = TcpListener::bind(hostport.as_str())?;
                l.set_nonblocking(true)?;
                Listener::Tcp(l)
            }
            Address::Zmq(a) => return Err(not_native(a)),
        };
        let bound = match &listener {
            Listener::Unix(_, p) => Address::Unix(p.clone()),
            Listener::Tcp(l) => Address::Tcp(l.local_addr()?.to_string()),
        };
        Ok((listener, bound))
    }

    /// Accepts one pending connection, if any.
    pub fn accept(&self) -> io::Result<Option<FdChannel>> {
        let accepted = match self {
            Listener::Unix(l, _) => l
                .accept()
                .and_then(|(s, _)| FdChannel::socket(s.into(), UNIX_SOCKET)),
            Listener::Tcp(l) => l.accept().and_then(|(s, _)| {
                let _ = s.set_nodelay(true);
                keep_alive(s.as_raw_fd());
                FdChannel::socket(s.into(), TCP_SOCKET)
            }),
        };
        match accepted {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Unix(l, _) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(&*path);
            lock(&SOCKET_FILES).retain(|p| p != path);
        }
    }
}

/// The socket files of this process's live Unix listeners.
static SOCKET_FILES: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());

/// Removes the socket files of the Unix listeners still open: for the
/// interpreter's exit, when a server serving in a daemon thread is never
/// dropped. Its listener stops accepting (the path is gone).
pub fn remove_socket_files() {
    for path in std::mem::take(&mut *lock(&SOCKET_FILES)) {
        let _ = std::fs::remove_file(path);
    }
}
