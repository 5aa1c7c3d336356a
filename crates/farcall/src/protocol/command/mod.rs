//! One typed description per action: each file parses the action's
//! options from a request and builds them for one, side by side, the way
//! docs/protocol.md ("Actions and their options") lists them. A host runs
//! a [`Command`]; nothing else reads options.

pub mod call_obj;
pub mod control;
pub mod delete;
pub mod get_item;
pub mod get_obj;
pub mod handshake;
pub mod import;
pub mod set_item;
pub mod share;

pub use call_obj::CallObj;
pub use control::{Cancel, Close, Ping};
pub use delete::Delete;
pub use get_item::GetItem;
pub use get_obj::GetObj;
pub use handshake::{Auth, Hello};
pub use import::Import;
pub use set_item::SetItem;
pub use share::{Share, FORWARDED_REF};

use super::{Action, Request};
use crate::codec::Format;
use crate::error::{Error, Result};
use crate::value::Value;

/// A request's action with its options decoded and checked.
#[derive(Debug)]
pub enum Command {
    /// `call_obj`.
    CallObj(CallObj),
    /// `get_obj`.
    GetObj(GetObj),
    /// `get_item`.
    GetItem(GetItem),
    /// `set_item`.
    SetItem(SetItem),
    /// `delete`.
    Delete(Delete),
    /// `import`.
    Import(Import),
    /// `ping`.
    Ping(Ping),
    /// `close`.
    Close(Close),
    /// `farcall_hello` (ZeroMQ handshake).
    Hello(Hello),
    /// `farcall_auth` (ZeroMQ handshake).
    Auth(Auth),
    /// `farcall_cancel` (ZeroMQ).
    Cancel(Cancel),
    /// `farcall_share` (a forwarded proxy's own reference).
    Share(Share),
}

impl Command {
    /// Decodes `request`'s options (in `format`) for its action. The
    /// out-of-band buffers are handed over to the decoded values.
    pub fn parse(request: &mut Request, format: Format) -> Result<Command> {
        request.check_frames(format)?;
        Ok(match request.action()? {
            Action::CallObj => Command::CallObj(CallObj::parse(request, format)?),
            Action::GetObj => Command::GetObj(GetObj::parse(request.take_opts(format)?)?),
            Action::GetItem => Command::GetItem(GetItem::parse(request.take_opts(format)?)?),
            Action::SetItem => Command::SetItem(SetItem::parse(request.take_opts(format)?)?),
            Action::Delete => Command::Delete(Delete::parse(request.take_opts(format)?)?),
            Action::Import => Command::Import(Import::parse(request.take_opts(format)?)?),
            Action::Ping => Command::Ping(Ping::parse(request.take_opts(format)?)?),
            Action::Close => Command::Close(Close::parse(request.take_opts(format)?)?),
            Action::Hello => Command::Hello(Hello::parse(request.take_opts(format)?)?),
            Action::Auth => Command::Auth(Auth::parse(request.take_opts(format)?)?),
            Action::Cancel => Command::Cancel(Cancel::parse(request.take_opts(format)?)?),
            Action::Share => Command::Share(Share::parse(request.take_opts(format)?)?),
        })
    }

    /// The action this command runs.
    pub fn action(&self) -> Action {
        match self {
            Command::CallObj(_) => Action::CallObj,
            Command::GetObj(_) => Action::GetObj,
            Command::GetItem(_) => Action::GetItem,
            Command::SetItem(_) => Action::SetItem,
            Command::Delete(_) => Action::Delete,
            Command::Import(_) => Action::Import,
            Command::Ping(_) => Action::Ping,
            Command::Close(_) => Action::Close,
            Command::Hello(_) => Action::Hello,
            Command::Auth(_) => Action::Auth,
            Command::Cancel(_) => Action::Cancel,
            Command::Share(_) => Action::Share,
        }
    }
}

/// The string option `key` of `opts`.
fn str_opt(opts: &Value, key: &str) -> Result<String> {
    opts.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::type_error(format!("option '{key}' must be a string")))
}

/// The map `{key: value, ...}` of string keys, as options.
fn opts<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::map(entries)
}
