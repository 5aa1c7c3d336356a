//! The system calls of the hot path, made directly.
//!
//! glibc's `read`, `writev` and `poll` are thread-cancellation points:
//! once a process has a second thread (farcall's I/O thread, always),
//! each of them costs two atomic read-modify-writes around the system
//! call, to let `pthread_cancel` interrupt it. Nothing in farcall cancels
//! threads, so every read, write and poll of a link goes through
//! `syscall(2)` instead, which is the same call without that bookkeeping.
//! Errors come back the usual way: -1 and `errno`.

/// `read(2)`.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes.
pub(crate) unsafe fn read(fd: libc::c_int, buf: *mut libc::c_void, len: usize) -> isize {
    // SAFETY: the caller's promise; the arguments are read(2)'s.
    unsafe { libc::syscall(libc::SYS_read, fd, buf, len) as isize }
}

/// `writev(2)`.
///
/// # Safety
/// `iov` must point to `count` valid `iovec`s describing readable memory.
pub(crate) unsafe fn writev(fd: libc::c_int, iov: *const libc::iovec, count: libc::c_int) -> isize {
    // SAFETY: the caller's promise; the arguments are writev(2)'s.
    unsafe { libc::syscall(libc::SYS_writev, fd, iov, count) as isize }
}

/// `poll(2)` on `fds` for up to `timeout_ms` milliseconds (negative: no
/// limit). Where the architecture has `poll(2)` (x86-64) it is used: it
/// takes the timeout as a number, where `ppoll(2)` copies a timespec in
/// and the time left back out on every call.
#[cfg(target_arch = "x86_64")]
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> libc::c_int {
    // SAFETY: fds is a valid, exclusively borrowed pollfd array.
    unsafe {
        libc::syscall(
            libc::SYS_poll,
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout_ms,
        ) as libc::c_int
    }
}

/// `poll(2)` on `fds` for up to `timeout_ms` milliseconds (negative: no
/// limit), made as `ppoll(2)`, which every other architecture has.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> libc::c_int {
    let timeout = (timeout_ms >= 0).then(|| libc::timespec {
        tv_sec: libc::time_t::from(timeout_ms / 1000),
        tv_nsec: libc::c_long::from(timeout_ms % 1000) * 1_000_000,
    });
    let timeout_ptr = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: fds is a valid, exclusively borrowed pollfd array; the
    // timeout, if any, lives until the call returns; no signal mask.
    unsafe {
        libc::syscall(
            libc::SYS_ppoll,
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout_ptr,
            std::ptr::null::<libc::sigset_t>(),
            0usize,
        ) as libc::c_int
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn read_write_and_poll_behave_as_libc_does() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut fds = [libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut fds, 0), 0, "nothing to read yet");
        let data = *b"hello";
        let iov = [libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        }];
        assert_eq!(unsafe { writev(a.as_raw_fd(), iov.as_ptr(), 1) }, 5);
        assert_eq!(poll(&mut fds, 1000), 1);
        let mut buf = [0u8; 8];
        let n = unsafe { read(b.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(&buf[..n as usize], b"hello");
        // A bad descriptor reports its errno.
        assert_eq!(unsafe { read(-1, buf.as_mut_ptr().cast(), 1) }, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EBADF)
        );
    }
}
