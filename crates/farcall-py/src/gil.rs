//! Releasing the GIL around engine waits, safely at interpreter exit.
//!
//! CPython ends a daemon thread that takes the GIL back during
//! finalization with `pthread_exit`; inside a PyO3 call that forced unwind
//! meets `catch_unwind` and the process aborts. So once `farcall`'s atexit
//! hook has run (before finalization starts), a thread other than the
//! main one that comes back from a wait does not take the GIL back: it
//! parks until the process is gone, as CPython 3.14 does with daemon
//! threads itself.

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
    py.allow_threads(|| {
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

/// Called at interpreter exit (atexit): waits that end from now on, in
/// threads other than the main one, park instead of taking the GIL.
#[pyfunction]
pub fn _exiting() {
    EXITING.store(true, Ordering::Release);
}
