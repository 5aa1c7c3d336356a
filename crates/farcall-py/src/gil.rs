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
//!
//! [`wait`] is how every blocking wait of the bindings runs: with the GIL
//! released and, in the main thread, cut into slices so that Ctrl-C is
//! raised within [`SIGNAL_CHECK`] however long the wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

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

/// Runs `f` with the GIL, as `Python::attach`, on a thread that keeps its
/// Python thread state from one call to the next. A thread Python did not
/// start (an engine pool thread) otherwise gets a new thread state each
/// time and frees it after: tens of syscalls and page faults per request
/// served.
pub fn attach<T>(f: impl for<'py> FnOnce(Python<'py>) -> T) -> T {
    keep_thread_state();
    Python::attach(f)
}

/// Gives this thread a Python thread state that outlives each attach, if
/// Python does not know the thread yet; freed when the thread ends
/// (unless the interpreter is exiting by then: it is left alone).
fn keep_thread_state() {
    struct Kept {
        state: *mut pyo3::ffi::PyThreadState,
        gil: pyo3::ffi::PyGILState_STATE,
    }
    impl Drop for Kept {
        fn drop(&mut self) {
            // SAFETY: the state this thread made in `keep_thread_state`,
            // released there; taken back and released for good, as
            // PyGILState_Release expects, while the interpreter lives.
            unsafe {
                if exiting() || pyo3::ffi::Py_IsInitialized() == 0 {
                    return;
                }
                pyo3::ffi::PyEval_RestoreThread(self.state);
                pyo3::ffi::PyGILState_Release(self.gil);
            }
        }
    }
    thread_local! {
        static KEPT: std::cell::RefCell<Option<Kept>> = const { std::cell::RefCell::new(None) };
    }
    let _ = KEPT.try_with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.is_some() || exiting() {
            return;
        }
        // SAFETY: only on a thread without a Python thread state (so it
        // cannot hold the GIL): PyGILState_Ensure makes one and takes the
        // GIL, PyEval_SaveThread releases the GIL and keeps the state, with
        // the Ensure count at one, so later attaches reuse it.
        unsafe {
            if pyo3::ffi::Py_IsInitialized() == 0
                || !pyo3::ffi::PyGILState_GetThisThreadState().is_null()
            {
                return;
            }
            let gil = pyo3::ffi::PyGILState_Ensure();
            let state = pyo3::ffi::PyEval_SaveThread();
            *kept = Some(Kept { state, gil });
        }
    });
}

/// True once the interpreter is exiting (see [`_exiting`]).
pub fn exiting() -> bool {
    EXITING.load(Ordering::Acquire)
}

/// Called at interpreter exit (atexit), before children are stopped: waits
/// that end from now on, in threads other than the main one, park instead
/// of taking the GIL.
#[pyfunction]
pub fn _exiting() {
    EXITING.store(true, Ordering::Release);
}

/// How often a wait of the main thread looks up to let Python handle
/// signals (Ctrl-C).
pub const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Waits with the GIL released until `step` is done or `deadline` passes
/// (`Ok(None)`). `step(until)` waits at most until `until` and returns
/// `Some` once done. In the main thread the wait is cut into slices of
/// [`SIGNAL_CHECK`] with a check for signals in between: a
/// `KeyboardInterrupt` ends the wait with that error, and the caller
/// cancels what it waited for.
pub fn wait<T: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    mut step: impl Send + FnMut(Option<Instant>) -> Option<T>,
) -> PyResult<Option<T>> {
    let main = MAIN_THREAD.get() == Some(&std::thread::current().id());
    loop {
        let until = if main {
            let slice = Instant::now() + SIGNAL_CHECK;
            Some(deadline.map_or(slice, |d| d.min(slice)))
        } else {
            deadline
        };
        if let Some(done) = released(py, || step(until)) {
            return Ok(Some(done));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        py.check_signals()?;
    }
}
