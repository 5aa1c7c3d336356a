//! The serving side of an across connection: one object per process,
//! published on the process's link host, that runs what the peer asks
//! (`farcall.across._wire.serve` unpickles, runs, pickles the outcome).
//!
//! A request runs in the thread the engine picks: the thread waiting in
//! the same call chain (a callback), else the link pool, so many callers
//! through one connection really run at once.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use farcall::{Host, Kwargs, ObjectRef, RemoteObject, Result, Value};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

use super::payload::{self, Owner};
use crate::errors::from_py;

/// The name the entry is published under.
pub const NAME: &str = "farcall.across";

static SERVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Publishes the entry on this process's link host (once).
pub fn publish() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let entry: ObjectRef = Arc::new(Entry);
        Host::local().publish(NAME, Value::Object(entry));
    });
}

struct Entry;

impl RemoteObject for Entry {
    fn type_str(&self) -> String {
        "<class 'farcall.across.Entry'>".into()
    }

    /// `entry(op, payload)`: runs `op` ("call", "call_ref", "method").
    fn call(&self, args: Vec<Value>, _kwargs: Kwargs) -> Result<Value> {
        let link = farcall::peer::current_link().map_or(0, |l| l.id());
        let mut args = args.into_iter();
        let (Some(Value::Str(op)), Some(body), None) = (args.next(), args.next(), args.next())
        else {
            return Err(farcall::Error::type_error(
                "an across request is (op, payload)",
            ));
        };
        crate::gil::attach(|py| {
            let serve = SERVE.get_or_try_init(py, || {
                PyModule::import(py, "farcall.across._wire")?
                    .getattr("serve")
                    .map(Bound::unbind)
            })?;
            let body = payload::from_value(py, body, Owner::Request)?;
            // (ok, payload): a raised exception is an outcome like a value.
            let out = serve.bind(py).call1((link, PyString::new(py, &op), body))?;
            let ok: bool = out.get_item(0)?.extract()?;
            Ok(Value::Tuple(vec![
                Value::Bool(ok),
                payload::to_value(&out.get_item(1)?)?,
            ]))
        })
        .map_err(|e: PyErr| Python::attach(|py| from_py(py, e)))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
