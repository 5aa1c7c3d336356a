//! `Future`: the pending result of an async call.
//!
//! It has the API of `concurrent.futures.Future` (`done`, `result`,
//! `exception`, `add_done_callback`, ...) and is awaitable from asyncio,
//! but is a native object: creating one costs a few hundred nanoseconds,
//! which pipelined calls need. Waiting releases the GIL.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use farcall::Value;
use pyo3::exceptions::PyTimeoutError;
use pyo3::prelude::*;

use crate::convert::{to_py, Ownership};
use crate::errors::to_py as error_to_py;

enum State {
    /// Waiting; `None` while a thread waits on the engine future.
    Pending(Option<farcall::Future>),
    /// The converted outcome.
    Done(Result<Py<PyAny>, PyErr>),
}

/// The result of a call made with `_sync="async"`.
#[pyclass(module = "farcall", name = "Future", frozen, weakref)]
pub struct PyFuture {
    state: Mutex<State>,
    /// Signalled when the outcome is stored.
    finished: Condvar,
    callbacks: Mutex<Vec<Py<PyAny>>>,
}

impl PyFuture {
    /// Wraps an engine future.
    pub fn new(f: farcall::Future) -> Self {
        PyFuture {
            state: Mutex::new(State::Pending(Some(f))),
            finished: Condvar::new(),
            callbacks: Mutex::new(Vec::new()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the outcome of a call to `server` (which owns what the reply
    /// refers to) and runs the callbacks.
    fn finish(slf: &Bound<'_, Self>, server: &str, outcome: farcall::Result<Value>) {
        let py = slf.py();
        let converted = match outcome {
            Ok(v) => to_py(py, v, Ownership::Reply(server)),
            Err(e) => Err(error_to_py(py, e)),
        };
        *slf.get().state() = State::Done(converted);
        slf.get().finished.notify_all();
        let callbacks = std::mem::take(&mut *slf.get().callbacks.lock().unwrap());
        for cb in callbacks {
            if let Err(e) = cb.call1(py, (slf,)) {
                e.write_unraisable(py, Some(cb.bind(py)));
            }
        }
    }

    /// Waits up to `timeout` for the outcome (`None`: no limit). Returns
    /// false on timeout.
    fn wait(slf: &Bound<'_, Self>, timeout: Option<Duration>) -> PyResult<bool> {
        let py = slf.py();
        let me = slf.get();
        let engine = match &mut *me.state() {
            State::Done(_) => return Ok(true),
            State::Pending(f) => f.take(),
        };
        let Some(mut engine) = engine else {
            // Another thread waits on the engine; wait for it to finish.
            let done = crate::gil::released(py, || {
                let st = me.state();
                let (st, _) = me
                    .finished
                    .wait_timeout_while(st, timeout.unwrap_or(Duration::MAX), |s| {
                        matches!(s, State::Pending(None))
                    })
                    .unwrap_or_else(|p| p.into_inner());
                !matches!(*st, State::Pending(_))
            });
            if !done && matches!(*me.state(), State::Pending(Some(_))) {
                // The other waiter timed out and gave the future back.
                return PyFuture::wait(slf, timeout);
            }
            return Ok(done);
        };
        let got = crate::gil::released(py, || engine.wait_for(timeout));
        match got {
            Ok(Some(outcome)) => {
                PyFuture::finish(slf, engine.client().address(), outcome);
                Ok(true)
            }
            Ok(None) => {
                *me.state() = State::Pending(Some(engine));
                me.finished.notify_all();
                Ok(false)
            }
            Err(e) => {
                PyFuture::finish(slf, engine.client().address(), Err(e));
                Ok(true)
            }
        }
    }

    fn outcome(&self, py: Python<'_>) -> Option<Result<Py<PyAny>, PyErr>> {
        match &*self.state() {
            State::Done(Ok(v)) => Some(Ok(v.clone_ref(py))),
            State::Done(Err(e)) => Some(Err(e.clone_ref(py))),
            State::Pending(_) => None,
        }
    }
}

/// Completes a future from whichever thread delivers its reply.
struct Completer(Py<PyFuture>);

impl Wake for Completer {
    fn wake(self: Arc<Self>) {
        Python::attach(|py| {
            let _ = PyFuture::wait(self.0.bind(py), Some(Duration::ZERO));
        });
    }
}

#[pymethods]
impl PyFuture {
    /// True once the result (or exception) is in.
    fn done(slf: &Bound<'_, Self>) -> PyResult<bool> {
        PyFuture::wait(slf, Some(Duration::ZERO))
    }

    /// Waits for the result and returns it, or raises the remote exception.
    /// Raises TimeoutError if `timeout` seconds pass first; the call stays
    /// pending.
    #[pyo3(signature = (timeout=None))]
    fn result(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let timeout = timeout.map(Duration::from_secs_f64);
        if !PyFuture::wait(slf, timeout)? {
            return Err(PyTimeoutError::new_err("the call has not finished yet"));
        }
        slf.get().outcome(slf.py()).expect("done")
    }

    /// Waits like `result` and returns the exception, or None on success.
    #[pyo3(signature = (timeout=None))]
    fn exception(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let timeout = timeout.map(Duration::from_secs_f64);
        if !PyFuture::wait(slf, timeout)? {
            return Err(PyTimeoutError::new_err("the call has not finished yet"));
        }
        let py = slf.py();
        Ok(match slf.get().outcome(py).expect("done") {
            Ok(_) => None,
            Err(e) => Some(e.into_value(py).into_any()),
        })
    }

    /// Calls `fn(future)` once the future is done (at once if it is).
    fn add_done_callback(slf: &Bound<'_, Self>, r#fn: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let waker = {
            let mut st = me.state();
            match &mut *st {
                State::Done(_) => None,
                State::Pending(engine) => {
                    me.callbacks.lock().unwrap().push(r#fn.clone_ref(py));
                    engine.as_mut().map(|_| ())
                }
            }
        };
        match waker {
            None if matches!(*me.state(), State::Done(_)) => {
                r#fn.call1(py, (slf,))?;
            }
            None => {} // a waiting thread will run the callbacks
            Some(()) => {
                let waker = Waker::from(Arc::new(Completer(slf.clone().unbind())));
                let mut cx = Context::from_waker(&waker);
                let ready = {
                    let mut st = me.state();
                    match &mut *st {
                        State::Pending(Some(engine)) => {
                            std::pin::Pin::new(engine).poll(&mut cx).is_ready()
                        }
                        _ => false,
                    }
                };
                if ready {
                    PyFuture::wait(slf, Some(Duration::ZERO))?;
                }
            }
        }
        Ok(())
    }

    /// Calls cannot be cancelled once sent: always False.
    fn cancel(&self) -> bool {
        false
    }

    /// Always False (see `cancel`).
    fn cancelled(&self) -> bool {
        false
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
            State::Pending(_) => "<farcall.Future pending>".into(),
        }
    }
}

use std::future::Future as _;
