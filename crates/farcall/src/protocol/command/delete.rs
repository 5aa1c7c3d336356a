//! `delete {obj_id: int, ref_id: int}`: release one reference (every
//! reference of the object when `ref_id` is missing, as older pyacq
//! clients send).

use crate::error::{Error, Result};
use crate::value::{ProxyRef, Value};

/// The reference to release.
#[derive(Debug)]
pub struct Delete {
    /// The object's id in the host's table.
    pub obj_id: u64,
    /// The reference's id; `None`: all of them.
    pub ref_id: Option<u64>,
}

impl Delete {
    /// Reads the options.
    pub fn parse(opts: Value) -> Result<Delete> {
        let id = |k| opts.get(k).and_then(Value::as_i64).map(|v| v as u64);
        Ok(Delete {
            obj_id: id("obj_id").ok_or_else(|| Error::type_error("delete needs obj_id"))?,
            ref_id: id("ref_id"),
        })
    }

    /// The options releasing the reference `proxy` carries.
    pub fn opts(proxy: &ProxyRef) -> Value {
        super::opts([
            ("obj_id", Value::from(proxy.obj_id)),
            ("ref_id", Value::from(proxy.ref_id)),
        ])
    }
}
