//! `farcall_share {obj_id: int, ref_id: int, new_ref_id: int}` (one-way,
//! farcall peers only): a process that passes on a proxy to a third
//! process's object asks the object's home for a reference of the
//! receiver's own, `new_ref_id`, while it still holds `ref_id`. The
//! receiver then owns (and releases) the new one, and the forwarder may
//! drop its own at any time.

use crate::error::{Error, Result};
use crate::value::{ProxyRef, Value};

/// Set in the ids of references a forwarder made with `farcall_share`, so
/// that the receiver knows it owns them (host-made ids never reach it).
pub const FORWARDED_REF: u64 = 1 << 62;

/// The reference to add.
#[derive(Debug)]
pub struct Share {
    /// The object's id in the host's table.
    pub obj_id: u64,
    /// The reference the forwarder holds.
    pub ref_id: u64,
    /// The reference to add, for the receiver.
    pub new_ref_id: u64,
}

impl Share {
    /// Reads the options.
    pub fn parse(opts: Value) -> Result<Share> {
        let id = |k: &str| {
            opts.get(k)
                .and_then(Value::as_i64)
                .map(|v| v as u64)
                .ok_or_else(|| Error::type_error(format!("farcall_share needs {k}")))
        };
        Ok(Share {
            obj_id: id("obj_id")?,
            ref_id: id("ref_id")?,
            new_ref_id: id("new_ref_id")?,
        })
    }

    /// The options that give the holder of `proxy` a second reference,
    /// `new_ref_id`, to hand on.
    pub fn opts(proxy: &ProxyRef, new_ref_id: u64) -> Value {
        super::opts([
            ("obj_id", Value::from(proxy.obj_id)),
            ("ref_id", Value::from(proxy.ref_id)),
            ("new_ref_id", Value::from(new_ref_id)),
        ])
    }
}
