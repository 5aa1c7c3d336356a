//! `Future`: the pending result of an async call.
//!
//! It has the API of `concurrent.futures.Future` (`done`, `result`,
//! `exception`, `add_done_callback`, `cancel`, ...) and is awaitable from
//! asyncio, but is a native object: creating one costs a few hundred
//! nanoseconds, which pipelined calls need. Waiting releases the GIL and,
//! in the main thread, lets Ctrl-C through. The engine enforces the
//! call's timeout whether or not anybody waits.
//!
//! Done-callbacks never run in the engine's threads: the thread that
//! completes a future with callbacks (the I/O thread, or a caller reading
//! for others) hands it to the callback thread, so a callback may make
//! sync calls on the same client, and a slow callback stalls nothing but
//! other callbacks.

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use farcall::{Client, Value};
use pyo3::exceptions::{PyTimeoutError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};

use crate::convert::{to_py, Ownership};
use crate::errors::to_py as error_to_py;
use crate::gil;

enum State {
    /// Waiting; `None` while a thread waits on the engine future.
    Pending(Option<farcall::Future>),
    /// The converted outcome.
    Done(Result<Py<PyAny>, PyErr>),
    /// Cancelled before it finished.
    Cancelled,
}

/// The result of a call made with `_sync="async"`: the native base of
/// `farcall.Future`, which adds `concurrent.futures.Future` as a base.
#[pyclass(module = "farcall", name = "Future", frozen, weakref, subclass)]
pub struct PyFuture {
    state: Mutex<State>,
    /// Signalled when the outcome is stored.
    finished: Condvar,
    callbacks: Mutex<Vec<Py<PyAny>>>,
}

/// The class async calls return (`farcall.Future`, registered when the
/// package is imported); this type itself until then.
static FUTURE_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Registers `cls` (a subclass of this type) as the class of the futures
/// async calls return.
#[pyfunction]
pub fn _set_future_class(cls: &Bound<'_, PyType>) -> PyResult<()> {
    if !cls.is_subclass_of::<PyFuture>()? {
        return Err(PyTypeError::new_err(
            "the future class must subclass farcall._native.Future",
        ));
    }
    FUTURE_CLASS
        .set(cls.py(), cls.clone().unbind())
        .map_err(|_| PyTypeError::new_err("the future class is already set"))
}

impl PyFuture {
    fn with_state(state: State) -> Self {
        PyFuture {
            state: Mutex::new(state),
            finished: Condvar::new(),
            callbacks: Mutex::new(Vec::new()),
        }
    }

    /// A Python future for an engine future, of the registered class.
    pub fn create(py: Python<'_>, f: farcall::Future) -> PyResult<Py<PyAny>> {
        let Some(cls) = FUTURE_CLASS.get(py) else {
            return Ok(Py::new(py, PyFuture::with_state(State::Pending(Some(f))))?.into_any());
        };
        let tp = cls.bind(py).as_type_ptr();
        // The subclass inherits our tp_new; calling it directly skips
        // `__init__` (concurrent.futures.Future's state is made only when
        // something reads it: see farcall/_future.py), which keeps a
        // pipelined call's future as cheap as the native one.
        // SAFETY: `tp` is a live type object (held by FUTURE_CLASS), its
        // tp_new is called with an empty argument tuple as Python would.
        let obj = unsafe {
            let new = (*tp)
                .tp_new
                .ok_or_else(|| PyTypeError::new_err("no tp_new"))?;
            Bound::from_owned_ptr_or_err(
                py,
                new(tp, PyTuple::empty(py).as_ptr(), std::ptr::null_mut()),
            )?
        };
        *obj.cast::<PyFuture>()?.get().state() = State::Pending(Some(f));
        Ok(obj.unbind())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `state` (an outcome) and runs the callbacks, in this thread.
    fn settle(slf: &Bound<'_, Self>, state: State) {
        let py = slf.py();
        *slf.get().state() = state;
        slf.get().finished.notify_all();
        let callbacks = std::mem::take(&mut *slf.get().callbacks.lock().unwrap());
        for cb in callbacks {
            if let Err(e) = cb.call1(py, (slf,)) {
                e.write_unraisable(py, Some(cb.bind(py)));
            }
        }
    }

    /// Stores the outcome of a call through `client` (which owns what the
    /// reply refers to) and runs the callbacks.
    fn finish(slf: &Bound<'_, Self>, client: &Client, outcome: farcall::Result<Value>) {
        let py = slf.py();
        let converted = match outcome {
            Ok(v) => to_py(py, v, Ownership::Reply(client)),
            Err(e) => Err(error_to_py(py, e)),
        };
        PyFuture::settle(slf, State::Done(converted));
    }

    /// Waits up to `timeout` for the outcome (`None`: no limit). Returns
    /// false on timeout. A `KeyboardInterrupt` in the main thread ends the
    /// wait with that error (the call stays pending).
    fn wait(slf: &Bound<'_, Self>, timeout: Option<Duration>) -> PyResult<bool> {
        let py = slf.py();
        let me = slf.get();
        let engine = match &mut *me.state() {
            State::Done(_) | State::Cancelled => return Ok(true),
            State::Pending(f) => f.take(),
        };
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let Some(mut engine) = engine else {
            // Another thread waits on the engine; wait for it to finish.
            let done = gil::wait(py, deadline, |until| {
                let st = me.state();
                let wait = until.map_or(Duration::MAX, |u| {
                    u.saturating_duration_since(Instant::now())
                });
                let (st, _) = me
                    .finished
                    .wait_timeout_while(st, wait, |s| matches!(s, State::Pending(None)))
                    .unwrap_or_else(|p| p.into_inner());
                (!matches!(*st, State::Pending(None))).then_some(())
            })?;
            if matches!(*me.state(), State::Pending(Some(_))) {
                // The other waiter timed out and gave the future back.
                return PyFuture::wait(slf, timeout);
            }
            return Ok(done.is_some());
        };
        if let Some(outcome) = engine.take_ready() {
            let client = engine.client();
            PyFuture::finish(slf, &client, outcome);
            return Ok(true);
        }
        let got = gil::wait(py, deadline, |until| match engine.wait_until(until) {
            Ok(Some(outcome)) => Some(Ok(outcome)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        });
        let client = engine.client();
        match got {
            Ok(Some(Ok(outcome))) => {
                PyFuture::finish(slf, &client, outcome);
                Ok(true)
            }
            Ok(Some(Err(e))) => {
                PyFuture::finish(slf, &client, Err(e));
                Ok(true)
            }
            Ok(None) | Err(_) => {
                *me.state() = State::Pending(Some(engine));
                me.finished.notify_all();
                got.map(|_| false)
            }
        }
    }

    fn outcome(&self, py: Python<'_>) -> Option<PyResult<Py<PyAny>>> {
        match &*self.state() {
            State::Done(Ok(v)) => Some(Ok(v.clone_ref(py))),
            State::Done(Err(e)) => Some(Err(e.clone_ref(py))),
            State::Cancelled => Some(Err(cancelled_error(py))),
            State::Pending(_) => None,
        }
    }
}

fn cancelled_error(py: Python<'_>) -> PyErr {
    match PyModule::import(py, "concurrent.futures").and_then(|m| m.getattr("CancelledError")) {
        Ok(class) => match class.call0() {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// Completes a future from whichever thread delivers its reply, by
/// handing it to the callback thread (without taking the GIL: that
/// thread may be the engine's I/O thread).
struct Completer(Mutex<Option<Py<PyFuture>>>);

impl Wake for Completer {
    fn wake(self: Arc<Self>) {
        let future = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(future) = future {
            complete_later(future);
        }
    }
}

/// Queues `future` for the callback thread, which completes it (converts
/// the outcome) and runs its callbacks.
fn complete_later(future: Py<PyFuture>) {
    static RUNNER: OnceLock<Sender<Py<PyFuture>>> = OnceLock::new();
    let runner = RUNNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Py<PyFuture>>();
        std::thread::Builder::new()
            .name("farcall-callbacks".into())
            .spawn(move || {
                for future in rx {
                    if gil::exiting() {
                        // Leaked on purpose: no Python code runs any more.
                        std::mem::forget(future);
                        continue;
                    }
                    Python::attach(|py| {
                        if let Err(e) = PyFuture::wait(future.bind(py), Some(Duration::ZERO)) {
                            e.write_unraisable(py, None);
                        }
                    });
                }
            })
            .expect("spawning the callback thread");
        tx
    });
    let _ = runner.send(future);
}

#[pymethods]
impl PyFuture {
    /// A future no call made: it is cancelled. Async calls make the
    /// futures they return (through this constructor, then bound).
    #[new]
    fn py_new() -> Self {
        PyFuture::with_state(State::Cancelled)
    }

    /// True once the result (or exception) is in, or the call was cancelled.
    fn done(slf: &Bound<'_, Self>) -> PyResult<bool> {
        PyFuture::wait(slf, Some(Duration::ZERO))
    }

    /// Waits for the result and returns it, or raises the remote exception.
    /// Raises TimeoutError if `timeout` seconds pass first; the call stays
    /// pending.
    #[pyo3(signature = (timeout=None))]
    fn result(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let timeout = crate::args::seconds(timeout)?;
        if !PyFuture::wait(slf, timeout)? {
            return Err(PyTimeoutError::new_err("the call has not finished yet"));
        }
        slf.get().outcome(slf.py()).expect("done")
    }

    /// Waits like `result` and returns the exception, or None on success.
    #[pyo3(signature = (timeout=None))]
    fn exception(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let timeout = crate::args::seconds(timeout)?;
        if !PyFuture::wait(slf, timeout)? {
            return Err(PyTimeoutError::new_err("the call has not finished yet"));
        }
        let py = slf.py();
        match slf.get().outcome(py).expect("done") {
            Ok(_) => Ok(None),
            Err(e) if matches!(*slf.get().state(), State::Cancelled) => Err(e),
            Err(e) => Ok(Some(e.into_value(py).into_any())),
        }
    }

    /// Calls `fn(future)` once the future is done (at once if it is), in
    /// farcall's callback thread.
    fn add_done_callback(slf: &Bound<'_, Self>, r#fn: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let waits = {
            let mut st = me.state();
            match &mut *st {
                State::Done(_) | State::Cancelled => None,
                State::Pending(engine) => {
                    me.callbacks.lock().unwrap().push(r#fn.clone_ref(py));
                    Some(engine.is_some())
                }
            }
        };
        match waits {
            None => {
                r#fn.call1(py, (slf,))?;
            }
            Some(false) => {} // a waiting thread will run the callbacks
            Some(true) => {
                let completer = Completer(Mutex::new(Some(slf.clone().unbind())));
                let waker = Waker::from(Arc::new(completer));
                let ready = match &*me.state() {
                    State::Pending(Some(engine)) => engine.notify_when_done(&waker),
                    _ => false,
                };
                if ready {
                    complete_later(slf.clone().unbind());
                }
            }
        }
        Ok(())
    }

    /// Cancels the call if it has not finished: the peer skips it if it
    /// has not started, and the future raises `CancelledError`. True when
    /// it was cancelled.
    fn cancel(slf: &Bound<'_, Self>) -> bool {
        let me = slf.get();
        let cancelled = match &mut *me.state() {
            State::Pending(Some(engine)) => engine.cancel(),
            _ => false,
        };
        if cancelled {
            PyFuture::settle(slf, State::Cancelled);
        }
        cancelled
    }

    /// True when the call was cancelled.
    fn cancelled(&self) -> bool {
        matches!(*self.state(), State::Cancelled)
    }

    /// True while the call has not finished.
    fn running(slf: &Bound<'_, Self>) -> PyResult<bool> {
        Ok(!PyFuture::done(slf)?)
    }

    /// Makes the future awaitable from asyncio.
    fn __await__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let wrapped = PyModule::import(py, "farcall._aio")?
            .getattr("wrap")?
            .call1((slf,))?;
        Ok(wrapped.call_method0("__await__")?.unbind())
    }

    fn __repr__(&self) -> String {
        match &*self.state() {
            State::Done(Ok(_)) => "<farcall.Future finished>".into(),
            State::Done(Err(_)) => "<farcall.Future finished with an exception>".into(),
            State::Cancelled => "<farcall.Future cancelled>".into(),
            State::Pending(_) => "<farcall.Future pending>".into(),
        }
    }
}
