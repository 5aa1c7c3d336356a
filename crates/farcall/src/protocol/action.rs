//! The names a request carries on the wire: its action, how the result
//! comes back, and (on the caller's side only) how the caller waits.

/// What a request asks the other side to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Call an object (or a method, through the proxy's attribute path).
    CallObj,
    /// Return an object (by value or by proxy).
    GetObj,
    /// Read a published name.
    GetItem,
    /// Publish a name.
    SetItem,
    /// Release one proxy reference.
    Delete,
    /// Import a module and return it.
    Import,
    /// Answer `"pong"`.
    Ping,
    /// Close the server.
    Close,
    /// farcall's connection handshake over ZeroMQ: format negotiation and
    /// the server's challenge.
    Hello,
    /// farcall's handshake over ZeroMQ: the client's proof.
    Auth,
    /// farcall over ZeroMQ: the caller gave up on a request (one-way).
    Cancel,
    /// farcall: a reference of its own for the receiver of a forwarded
    /// proxy (one-way).
    Share,
}

impl Action {
    /// The action's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Action::CallObj => "call_obj",
            Action::GetObj => "get_obj",
            Action::GetItem => "get_item",
            Action::SetItem => "set_item",
            Action::Delete => "delete",
            Action::Import => "import",
            Action::Ping => "ping",
            Action::Close => "close",
            Action::Hello => "farcall_hello",
            Action::Auth => "farcall_auth",
            Action::Cancel => "farcall_cancel",
            Action::Share => "farcall_share",
        }
    }

    /// Parses an action name; `None` for an unknown action.
    pub fn from_name(name: &[u8]) -> Option<Action> {
        Some(match name {
            b"call_obj" => Action::CallObj,
            b"get_obj" => Action::GetObj,
            b"get_item" | b"getitem" => Action::GetItem,
            b"set_item" | b"setitem" => Action::SetItem,
            b"delete" => Action::Delete,
            b"import" => Action::Import,
            b"ping" => Action::Ping,
            b"close" => Action::Close,
            b"farcall_hello" => Action::Hello,
            b"farcall_auth" => Action::Auth,
            b"farcall_cancel" => Action::Cancel,
            b"farcall_share" => Action::Share,
            _ => return None,
        })
    }
}

/// How the server returns a result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReturnType {
    /// By copy when the value's type travels natively, else by proxy.
    #[default]
    Auto,
    /// Always by proxy.
    Proxy,
    /// Always by copy (an error if the object cannot be copied).
    Value,
}

impl ReturnType {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ReturnType::Auto => "auto",
            ReturnType::Proxy => "proxy",
            ReturnType::Value => "value",
        }
    }

    /// Parses a return type name.
    pub fn from_name(name: &[u8]) -> Option<ReturnType> {
        match name {
            b"auto" => Some(ReturnType::Auto),
            b"proxy" => Some(ReturnType::Proxy),
            b"value" => Some(ReturnType::Value),
            _ => None,
        }
    }
}

/// How a caller waits for a call (never sent: a one-way call is a request
/// with id `-1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Block until the reply arrives (or the timeout passes).
    #[default]
    Sync,
    /// Return a future at once.
    Async,
    /// Ask for no reply at all.
    Off,
}

impl SyncMode {
    /// Parses `"sync"`, `"async"` or `"off"`.
    pub fn from_name(name: &str) -> Option<SyncMode> {
        match name {
            "sync" => Some(SyncMode::Sync),
            "async" => Some(SyncMode::Async),
            "off" => Some(SyncMode::Off),
            _ => None,
        }
    }

    /// The name, as `from_name` reads it.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Sync => "sync",
            SyncMode::Async => "async",
            SyncMode::Off => "off",
        }
    }
}
