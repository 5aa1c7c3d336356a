//! `import {module: str}`: import a module and return it (by proxy).

use crate::error::Result;
use crate::value::Value;

/// The module to import.
#[derive(Debug)]
pub struct Import {
    /// Its dotted name.
    pub module: String,
}

impl Import {
    /// Reads the options.
    pub fn parse(opts: Value) -> Result<Import> {
        Ok(Import {
            module: super::str_opt(&opts, "module")?,
        })
    }

    /// The options.
    pub fn opts(module: &str) -> Value {
        super::opts([("module", Value::from(module))])
    }
}
