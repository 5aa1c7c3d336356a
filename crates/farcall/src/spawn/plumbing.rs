//! Plumbing shared by both sides: writes that raise no SIGPIPE, and the
//! socket file behind an address.

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Instant;

use crate::channel::poll::wait_fd;
use crate::error::Error;

/// True for the errors a write or read gets when the other end is gone.
pub(super) fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Writes all of `data` to `fd` without raising SIGPIPE, waiting for room
/// until `deadline`; `Ok(false)` if the time ran out. Works on a
/// non-socket descriptor too.
pub(super) fn send_all(fd: RawFd, mut data: &[u8], deadline: Option<Instant>) -> io::Result<bool> {
    let mut socket = true;
    while !data.is_empty() {
        // SAFETY: writing from a live slice of the given length.
        let n = unsafe {
            if socket {
                libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL)
            } else {
                libc::write(fd, data.as_ptr().cast(), data.len())
            }
        };
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                if !wait_fd(fd, libc::POLLOUT, deadline).map_err(to_io)? {
                    return Ok(false);
                }
            }
            _ if e.raw_os_error() == Some(libc::ENOTSOCK) => socket = false,
            _ => return Err(e),
        }
    }
    Ok(true)
}

/// The socket file behind a `unix://` or `ipc://` address.
pub(super) fn socket_path(address: &str) -> Option<PathBuf> {
    let path = address
        .strip_prefix(crate::transport::UNIX)
        .or_else(|| address.strip_prefix("ipc://"))?;
    (!path.is_empty() && path != "*").then(|| PathBuf::from(path))
}

/// Removes `path` if it is a socket (never any other kind of file).
pub(super) fn remove_socket_file(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

fn to_io(e: Error) -> io::Error {
    match e {
        Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}
