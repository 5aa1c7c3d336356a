//! `set_item {name: str, obj: any}`: publish `obj` under `name`.

use crate::error::Result;
use crate::value::Value;

/// What to publish.
#[derive(Debug)]
pub struct SetItem {
    /// The name.
    pub name: String,
    /// The value (a proxy of the host's own arrives as the object).
    pub obj: Value,
}

impl SetItem {
    /// Reads the options.
    pub fn parse(mut opts: Value) -> Result<SetItem> {
        let name = super::str_opt(&opts, "name")?;
        let obj = opts.take("obj").unwrap_or_default();
        Ok(SetItem { name, obj })
    }

    /// The options.
    pub fn opts(name: &str, obj: Value) -> Value {
        super::opts([("name", Value::from(name)), ("obj", obj)])
    }
}
