//! Hosted objects: what a server can call into.
//!
//! A server does not know whether it hosts Rust structs or Python objects;
//! it talks to them through [`RemoteObject`]. The `#[farcall::remote]`
//! attribute implements it for Rust `impl` blocks; the Python bindings
//! implement it for any Python object.
//!
//! Results are plain [`Value`]s: a result that must stay remote is returned
//! as `Value::Object`, and the server turns it into a proxy.

use std::any::Any;
use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, Result};
use crate::value::{ObjectRef, Value};

/// Keyword arguments, in call order.
pub type Kwargs = Vec<(String, Value)>;

/// An object that a server can host and peers can drive through proxies.
///
/// Every method has a default that raises the Python exception a missing
/// capability would raise, so an implementation only writes what it has.
/// Methods run in the server's thread, one request at a time.
pub trait RemoteObject: Send + Sync + 'static {
    /// Python-style `str(type(obj))`, e.g. `"<class 'Counter'>"`.
    fn type_str(&self) -> String;

    /// Calls the object itself: `obj(*args, **kwargs)`.
    fn call(&self, args: Vec<Value>, kwargs: Kwargs) -> Result<Value> {
        let _ = (args, kwargs);
        Err(Error::type_error(format!(
            "{} object is not callable",
            self.type_str()
        )))
    }

    /// Reads an attribute: `obj.name`.
    fn get_attr(&self, name: &str) -> Result<Value> {
        Err(Error::attribute_error(format!(
            "{} object has no attribute '{name}'",
            self.type_str()
        )))
    }

    /// Calls a method: `obj.name(*args, **kwargs)`. The default reads the
    /// attribute and calls it; implementations override it to skip
    /// building a bound-method object on every call.
    fn call_method(&self, name: &str, mut args: Vec<Value>, kwargs: Kwargs) -> Result<Value> {
        if let Some(r) = call_special(self, name, &mut args) {
            return r;
        }
        match self.get_attr(name)? {
            Value::Object(method) => method.call(args, kwargs),
            other => Err(Error::type_error(format!(
                "'{}' object is not callable",
                other.kind()
            ))),
        }
    }

    /// Calls the object and keeps the result as an object, for
    /// `return_type="proxy"`: the default hosts a plain result; languages
    /// whose results are objects (Python) return the very object.
    fn call_object(&self, args: Vec<Value>, kwargs: Kwargs) -> Result<ObjectRef> {
        self.call(args, kwargs).map(into_object)
    }

    /// Calls a method and keeps the result as an object (see
    /// [`RemoteObject::call_object`]).
    fn call_method_object(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Kwargs,
    ) -> Result<ObjectRef> {
        self.call_method(name, args, kwargs).map(into_object)
    }

    /// Reads an attribute as an object, for walking a proxy's attribute
    /// path (`proxy.a.b.method()`): the default hosts a plain value so its
    /// items stay reachable; implementations override it to skip the
    /// conversion to a value.
    fn get_attr_object(&self, name: &str) -> Result<ObjectRef> {
        self.get_attr(name).map(into_object)
    }

    /// Writes an attribute: `obj.name = value`.
    fn set_attr(&self, name: &str, value: Value) -> Result<()> {
        let _ = value;
        Err(Error::attribute_error(format!(
            "cannot set attribute '{name}' of {}",
            self.type_str()
        )))
    }

    /// Reads an item: `obj[key]`.
    fn get_item(&self, key: Value) -> Result<Value> {
        let _ = key;
        Err(Error::type_error(format!(
            "{} object is not subscriptable",
            self.type_str()
        )))
    }

    /// Writes an item: `obj[key] = value`.
    fn set_item(&self, key: Value, value: Value) -> Result<()> {
        let _ = (key, value);
        Err(Error::type_error(format!(
            "{} object does not support item assignment",
            self.type_str()
        )))
    }

    /// The object as `return_type="auto"` sends it when fetched itself
    /// (`client.get_obj(proxy)`): `Some` copy when it is a plain value,
    /// `None` (the default) to send a proxy.
    fn auto_value(&self) -> Option<Result<Value>> {
        None
    }

    /// A copy of the object as a value, for `return_type="value"`.
    fn to_value(&self) -> Result<Value> {
        Err(Error::type_error(format!(
            "{} object cannot be sent by value",
            self.type_str()
        )))
    }

    /// A stable identity: two handles to the same underlying object return
    /// the same number, so the server gives them one object id.
    fn identity(&self) -> usize {
        self as *const Self as *const () as usize
    }

    /// For downcasting to the concrete type.
    fn as_any(&self) -> &dyn Any;
}

/// A result as an object: an object stays itself, a plain value is hosted.
fn into_object(value: Value) -> ObjectRef {
    match value {
        Value::Object(o) => o,
        other => ValueObject::new_ref(other),
    }
}

/// Routes the special methods a proxy uses for attribute and item access
/// (`__getattr__`, `__setattr__`, `__getitem__`, `__setitem__`) to the
/// matching trait methods. `None` when `name` is not one of them.
pub fn call_special<O: RemoteObject + ?Sized>(
    obj: &O,
    name: &str,
    args: &mut Vec<Value>,
) -> Option<Result<Value>> {
    let arity = match name {
        "__getattr__" | "__getattribute__" | "__getitem__" => 1,
        "__setattr__" | "__setitem__" => 2,
        _ => return None,
    };
    if args.len() != arity {
        return Some(Err(Error::type_error(format!(
            "{name}() takes {arity} arguments ({} given)",
            args.len()
        ))));
    }
    let mut it = std::mem::take(args).into_iter();
    let mut arg = || it.next().expect("arity checked");
    Some(match name {
        "__getitem__" => obj.get_item(arg()),
        "__setitem__" => obj.set_item(arg(), arg()).map(|()| Value::None),
        other => match arg() {
            Value::Str(attr) if other == "__setattr__" => {
                obj.set_attr(&attr, arg()).map(|()| Value::None)
            }
            Value::Str(attr) => obj.get_attr(&attr),
            v => Err(Error::type_error(format!(
                "attribute name must be a string, not {}",
                v.kind()
            ))),
        },
    })
}

/// Wraps a `T: Remote` (what `#[farcall::remote]` implements) so it can be
/// hosted: the lock gives methods `&mut self`, and a call that re-enters
/// the same object (A -> B -> A on one object) gets an error instead of a
/// deadlock.
pub struct Hosted<T> {
    inner: Mutex<T>,
    this: Weak<Hosted<T>>,
}

/// Implemented by `#[farcall::remote]` for a Rust type: method dispatch by
/// name and attribute access, with `&mut self`.
pub trait Remote: Send + 'static {
    /// The type name shown to peers (`<class 'Name'>`).
    const TYPE_NAME: &'static str;

    /// Calls method `name`.
    fn remote_call(&mut self, name: &str, args: Vec<Value>, kwargs: Kwargs) -> Result<Value>;

    /// True when `name` is a remotely callable method.
    fn remote_has_method(name: &str) -> bool;
}

/// Implemented by `#[farcall::remote]` on a struct: its public fields
/// become remote attributes that peers can read and write.
pub trait RemoteFields {
    /// Reads field `name`; `None` when there is no such public field.
    fn get_field(&self, name: &str) -> Option<Value>;

    /// Writes field `name`; `Ok(false)` when there is no such public field,
    /// a `TypeError` when the value does not fit the field's type.
    fn set_field(&mut self, name: &str, value: Value) -> Result<bool>;
}

impl<T: Remote + RemoteFields> Hosted<T> {
    /// Wraps `value` for hosting.
    pub fn new(value: T) -> Arc<Self> {
        Arc::new_cyclic(|this| Hosted {
            inner: Mutex::new(value),
            this: this.clone(),
        })
    }

    /// Runs `f` with exclusive access to the wrapped value.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let mut guard = self.inner.try_lock().map_err(|_| {
            Error::exception(
                "RuntimeError",
                format!(
                    "{} is busy: re-entrant call on the same object",
                    T::TYPE_NAME
                ),
            )
        })?;
        Ok(f(&mut guard))
    }
}

/// Makes a Rust value hostable: `farcall::object(Counter::default())`.
pub fn object<T: Remote + RemoteFields>(value: T) -> ObjectRef {
    Hosted::new(value)
}

impl<T: Remote + RemoteFields> RemoteObject for Hosted<T> {
    fn type_str(&self) -> String {
        format!("<class '{}'>", T::TYPE_NAME)
    }

    fn call_method(&self, name: &str, mut args: Vec<Value>, kwargs: Kwargs) -> Result<Value> {
        if let Some(r) = call_special(self, name, &mut args) {
            return r;
        }
        self.with(|t| t.remote_call(name, args, kwargs))?
    }

    fn get_attr(&self, name: &str) -> Result<Value> {
        if T::remote_has_method(name) {
            if let Some(this) = self.this.upgrade() {
                return Ok(Value::Object(BoundMethod::new_ref(this, name)));
            }
        }
        if let Some(v) = self.with(|t| t.get_field(name))? {
            return Ok(v);
        }
        Err(Error::attribute_error(format!(
            "'{}' object has no attribute '{name}'",
            T::TYPE_NAME
        )))
    }

    fn set_attr(&self, name: &str, value: Value) -> Result<()> {
        if self.with(|t| t.set_field(name, value))?? {
            return Ok(());
        }
        Err(Error::attribute_error(format!(
            "'{}' object has no attribute '{name}'",
            T::TYPE_NAME
        )))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A method of a hosted object, bound to it: what `proxy.method` returns
/// when read as an attribute rather than called.
pub struct BoundMethod {
    target: ObjectRef,
    name: String,
}

impl BoundMethod {
    /// Binds method `name` of `target`, as a hostable object.
    pub fn new_ref(target: ObjectRef, name: impl Into<String>) -> ObjectRef {
        Arc::new(BoundMethod {
            target,
            name: name.into(),
        })
    }
}

impl RemoteObject for BoundMethod {
    fn type_str(&self) -> String {
        "<class 'method'>".into()
    }

    fn call(&self, args: Vec<Value>, kwargs: Kwargs) -> Result<Value> {
        self.target.call_method(&self.name, args, kwargs)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A plain value hosted as an object: what `return_type="proxy"` makes of
/// a result that could have been copied. Items can be read and written.
pub struct ValueObject {
    value: Mutex<Value>,
}

impl ValueObject {
    /// Hosts `value`, as a hostable object.
    pub fn new_ref(value: Value) -> ObjectRef {
        Arc::new(ValueObject {
            value: Mutex::new(value),
        })
    }
}

impl RemoteObject for ValueObject {
    fn type_str(&self) -> String {
        self.value.lock().unwrap().type_str()
    }

    fn get_item(&self, key: Value) -> Result<Value> {
        let value = self.value.lock().unwrap();
        match (&*value, &key) {
            (Value::List(v) | Value::Tuple(v), Value::Int(i)) => {
                let at = if *i < 0 { v.len() as i64 + i } else { *i };
                usize::try_from(at)
                    .ok()
                    .and_then(|at| v.get(at))
                    .cloned()
                    .ok_or_else(|| Error::exception("IndexError", "index out of range"))
            }
            (Value::Map(m), _) => m
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| Error::key_error(format!("{key:?}"))),
            _ => Err(Error::type_error(format!(
                "'{}' object is not subscriptable",
                value.kind()
            ))),
        }
    }

    fn set_item(&self, key: Value, item: Value) -> Result<()> {
        let mut value = self.value.lock().unwrap();
        match (&mut *value, &key) {
            (Value::List(v), Value::Int(i)) => {
                let at = if *i < 0 { v.len() as i64 + i } else { *i };
                let slot = usize::try_from(at)
                    .ok()
                    .and_then(|at| v.get_mut(at))
                    .ok_or_else(|| Error::exception("IndexError", "index out of range"))?;
                *slot = item;
                Ok(())
            }
            (Value::Map(m), _) => {
                match m.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => *v = item,
                    None => m.push((key, item)),
                }
                Ok(())
            }
            (other, _) => Err(Error::type_error(format!(
                "'{}' object does not support item assignment",
                other.kind()
            ))),
        }
    }

    fn to_value(&self) -> Result<Value> {
        Ok(self.value.lock().unwrap().clone())
    }

    fn auto_value(&self) -> Option<Result<Value>> {
        Some(self.to_value())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
