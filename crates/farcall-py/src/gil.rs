//! Releasing the GIL around engine waits, safely at interpreter exit.
//!
//! CPython 3.11 to 3.13 end a thread that takes the GIL back during
//! finalization with `pthread_exit`; PyO3 (0.29 and later) hangs such a
//! thread instead, so the forced unwind never crosses Rust frames. That
//! still lets a daemon thread that wakes between farcall's atexit hook and
//! finalization run Python code against a half-torn-down interpreter (the
//! atexit hook stops children, which wakes every thread waiting on them).
//! So once the hook has run, a thread other than the main one that comes
//! back from a wait parks without taking the GIL, as CPython 3.14 does
//! with daemon threads itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::ThreadId;

use pyo3::prelude::*;

static EXITING: AtomicBool = AtomicBool::new(false);
static MAIN_THREAD: OnceLock<ThreadId> = OnceLock::new();

/// Records the thread that imports farcall as the main one.
pub fn init() {
    let _ = MAIN_THREAD.set(std::thread::current().id());
}

/// Runs `f` with the GIL released.
pub fn released<T: Send>(py: Python<'_>, f: impl Send + FnOnce() -> T) -> T {
    py.detach(|| {
        let out = f();
        if EXITING.load(Ordering::Acquire)
            && MAIN_THREAD.get() != Some(&std::thread::current().id())
        {
            loop {
                std::thread::park();
            }
        }
        out
    })
}

/// Called at interpreter exit (atexit), before children are stopped: waits
/// that end from now on, in threads other than the main one, park instead
/// of taking the GIL.
#[pyfunction]
pub fn _exiting() {
    EXITING.store(true, Ordering::Release);
}
