//! Waking a thread that waits in farcall: each waiting thread has one
//! [`Signal`], an eventfd it polls next to whatever else it waits on
//! (its link's socket, its server). Whoever has news for it (its reply
//! landed, a request of its call chain arrived, the reading role is free)
//! notifies the signal; the write costs a system call only while the
//! thread is actually waiting.

use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A thread's wake-up descriptor.
#[derive(Debug)]
pub(crate) struct Signal {
    fd: OwnedFd,
    /// The thread is in (or entering) a wait that polls `fd`.
    waiting: AtomicBool,
    /// Something happened since the thread last looked.
    notified: AtomicBool,
    /// The descriptor was written to (and must be emptied).
    written: AtomicBool,
}

thread_local! {
    static CURRENT: Arc<Signal> = Arc::new(Signal::new());
    /// `CURRENT`'s address once made (null before): asking whether a
    /// signal is this thread's must not make one.
    static MINE: Cell<*const Signal> = const { Cell::new(std::ptr::null()) };
}

impl Signal {
    fn new() -> Signal {
        // SAFETY: eventfd(2) returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(
            fd >= 0,
            "eventfd failed: {}",
            std::io::Error::last_os_error()
        );
        Signal {
            // SAFETY: a fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            waiting: AtomicBool::new(false),
            notified: AtomicBool::new(false),
            written: AtomicBool::new(false),
        }
    }

    /// The calling thread's signal.
    pub(crate) fn current() -> Arc<Signal> {
        CURRENT.with(|s| {
            MINE.set(Arc::as_ptr(s));
            s.clone()
        })
    }

    /// True when this is the calling thread's own signal.
    pub(crate) fn is_current(&self) -> bool {
        MINE.try_with(|m| std::ptr::eq(m.get(), self))
            .unwrap_or(false)
    }

    /// Tells the thread something happened.
    pub(crate) fn notify(&self) {
        self.notified.store(true, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) && !self.written.swap(true, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
            unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    &one as *const u64 as *const libc::c_void,
                    8,
                )
            };
        }
    }

    /// True (once) when the thread was notified since it last looked: a
    /// look that costs no system call, for a thread that polls before it
    /// waits.
    pub(crate) fn take(&self) -> bool {
        self.notified.swap(false, Ordering::SeqCst)
    }

    /// Enters a wait: from now on a notification wakes the descriptor.
    /// Returns true when the thread was notified already (it should look
    /// before sleeping).
    pub(crate) fn begin_wait(&self) -> bool {
        self.waiting.store(true, Ordering::SeqCst);
        self.notified.swap(false, Ordering::SeqCst)
    }

    /// Leaves a wait, emptying the descriptor if it was written to (a
    /// wait nobody disturbed costs no system call).
    pub(crate) fn end_wait(&self) {
        self.waiting.store(false, Ordering::SeqCst);
        if self.written.swap(false, Ordering::SeqCst) {
            let mut count: u64 = 0;
            // SAFETY: reads 8 bytes into a valid u64 from our (non-blocking)
            // eventfd; EAGAIN when it is empty.
            unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    &mut count as *mut u64 as *mut libc::c_void,
                    8,
                )
            };
        }
        self.notified.store(false, Ordering::SeqCst);
    }

    /// The descriptor to poll (readable once notified during a wait).
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::poll::wait_fd;
    use std::time::{Duration, Instant};

    #[test]
    fn a_notification_during_a_wait_wakes_the_descriptor() {
        let s = Signal::current();
        assert!(!s.begin_wait());
        let other = s.clone();
        let t = std::thread::spawn(move || other.notify());
        let woke = wait_fd(
            s.fd(),
            libc::POLLIN,
            Some(Instant::now() + Duration::from_secs(5)),
        )
        .unwrap();
        t.join().unwrap();
        assert!(woke);
        s.end_wait();
        // A notification outside a wait is remembered, not written.
        s.notify();
        assert!(s.begin_wait(), "seen at the next wait");
        s.end_wait();
    }

    #[test]
    fn a_thread_knows_its_own_signal_only() {
        let mine = Signal::current();
        assert!(mine.is_current());
        let theirs = std::thread::spawn(Signal::current).join().unwrap();
        assert!(!theirs.is_current());
        let seen_there = std::thread::spawn(move || mine.is_current())
            .join()
            .unwrap();
        assert!(!seen_there, "a thread that never made a signal owns none");
    }
}
