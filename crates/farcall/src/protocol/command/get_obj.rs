//! `get_obj {obj: any}`: return an object, by value or by proxy (the
//! request's return type). A proxy of the host's own arrives as the object.

use crate::error::Result;
use crate::value::Value;

/// The object to return.
#[derive(Debug)]
pub struct GetObj {
    /// A proxy (or any value, which comes back as it is).
    pub obj: Value,
}

impl GetObj {
    /// Reads the options.
    pub fn parse(mut opts: Value) -> Result<GetObj> {
        Ok(GetObj {
            obj: opts.take("obj").unwrap_or_default(),
        })
    }

    /// The options.
    pub fn opts(obj: Value) -> Value {
        super::opts([("obj", obj)])
    }
}
