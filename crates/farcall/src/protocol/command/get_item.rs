//! `get_item {name: str}`: read a published name (`"self"`: the server).

use crate::error::Result;
use crate::value::Value;

/// The name to read.
#[derive(Debug)]
pub struct GetItem {
    /// A published name.
    pub name: String,
}

impl GetItem {
    /// Reads the options.
    pub fn parse(opts: Value) -> Result<GetItem> {
        Ok(GetItem {
            name: super::str_opt(&opts, "name")?,
        })
    }

    /// The options.
    pub fn opts(name: &str) -> Value {
        super::opts([("name", Value::from(name))])
    }
}
