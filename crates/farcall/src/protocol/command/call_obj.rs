//! `call_obj {obj: proxy, args: list, kwargs: map}`: call the object a
//! proxy refers to. The proxy's attribute path names the method: all but
//! the last attribute are read, the last is called.

use super::super::Request;
use crate::codec::{Field, Format};
use crate::error::{Error, Result};
use crate::object::Kwargs;
use crate::value::{ProxyRef, Value};

/// A call, its arguments checked.
#[derive(Debug)]
pub struct CallObj {
    /// The object to call.
    pub target: ProxyRef,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments, in call order.
    pub kwargs: Kwargs,
    /// Any other entries of the options: what the caller's call opts
    /// provider attached (crate::hooks), for the server's call hook.
    pub context: Kwargs,
}

impl CallObj {
    /// Reads the options entry by entry, building no map (the hot path);
    /// other entries are the call's context (pyacq ignores them).
    pub fn parse(request: &mut Request, format: Format) -> Result<CallObj> {
        let (mut obj, mut args, mut kwargs) = (Value::None, Value::None, Value::None);
        let mut context = Vec::new();
        request.take_fields(format, |key, value| {
            match key {
                "obj" => obj = value,
                "args" => args = value,
                "kwargs" => kwargs = value,
                other => context.push((other.to_string(), value)),
            }
            Ok(())
        })?;
        let Value::Proxy(target) = obj else {
            return Err(Error::type_error(format!(
                "call_obj needs a proxy to an object of this server, got {}",
                obj.kind()
            )));
        };
        let args = match args {
            Value::List(v) | Value::Tuple(v) => v,
            Value::None => Vec::new(),
            other => {
                return Err(Error::type_error(format!(
                    "args must be a list, not {}",
                    other.kind()
                )))
            }
        };
        Ok(CallObj {
            target,
            args,
            kwargs: kwargs_of(kwargs)?,
            context,
        })
    }

    /// The options as borrowed fields, with `method` appended to the
    /// proxy's attribute path, encoded without copying any of it.
    pub fn fields<'a>(
        proxy: &'a ProxyRef,
        method: Option<&'a str>,
        args: &'a [Value],
        kwargs: &'a [(String, Value)],
    ) -> [(&'static str, Field<'a>); 3] {
        [
            ("obj", Field::Proxy { proxy, method }),
            ("args", Field::List(args)),
            ("kwargs", Field::StrMap(kwargs)),
        ]
    }

    /// The options as a value (what [`CallObj::fields`] encodes).
    pub fn opts(proxy: &ProxyRef, args: Vec<Value>, kwargs: Kwargs) -> Value {
        let kwargs = kwargs.into_iter().map(|(k, v)| (Value::Str(k), v));
        super::opts([
            ("obj", Value::Proxy(proxy.clone())),
            ("args", Value::List(args)),
            ("kwargs", Value::Map(kwargs.collect())),
        ])
    }
}

fn kwargs_of(v: Value) -> Result<Kwargs> {
    match v {
        Value::None => Ok(Vec::new()),
        Value::Map(entries) => entries
            .into_iter()
            .map(|(k, v)| match k {
                Value::Str(k) => Ok((k, v)),
                other => Err(Error::type_error(format!(
                    "keywords must be strings, not {}",
                    other.kind()
                ))),
            })
            .collect(),
        other => Err(Error::type_error(format!(
            "kwargs must be a dict, not {}",
            other.kind()
        ))),
    }
}
