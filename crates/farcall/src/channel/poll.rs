//! Waiting on descriptors: the `poll(2)` helpers every waiter uses.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::error::Result;

/// Waits until `fd` is ready for `events` or `deadline` passes. Returns
/// false on timeout. Hang-up and errors count as ready (the next read or
/// write reports them).
pub fn wait_fd(fd: RawFd, events: libc::c_short, deadline: Option<Instant>) -> Result<bool> {
    let mut fds = [libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    Ok(poll_fds(&mut fds, deadline)? > 0)
}

/// `poll(2)` on several descriptors until `deadline`; retries on EINTR.
pub fn poll_fds(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> Result<usize> {
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so that we never spin on a sub-millisecond rest.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
        };
        let n = super::sys::poll(fds, timeout_ms);
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err.into());
        }
    }
}

/// `poll(2)` on several descriptors without sleeping: true when any is
/// ready.
pub fn poll_now(fds: &mut [libc::pollfd]) -> Result<bool> {
    let n = super::sys::poll(fds, 0);
    match n {
        0 => Ok(false),
        n if n > 0 => Ok(true),
        _ => match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            e => Err(e.into()),
        },
    }
}
