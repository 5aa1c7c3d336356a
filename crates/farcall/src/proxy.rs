//! A handle to a remote object.
//!
//! `Proxy` is cheap to clone and usable from any thread: it holds the link
//! it came by (a proxy to a third process's object finds or opens the
//! process's link to that object's home on first use). Reading an
//! attribute is deferred (`proxy.attr("x")` makes a new proxy without a
//! round trip); `get_attr` fetches it.
//!
//! Ownership: a proxy that a call returned owns its server-side reference
//! and releases it when its last clone is dropped. The release is queued
//! and sent by a background thread, never by `Drop` itself (a finalizer
//! that waits on the network can deadlock). A proxy received as an
//! argument is borrowed: the sender owns that reference.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::client::{Client, Future};
use crate::convert::FromValue;
use crate::error::{Error, Result};
use crate::object::Kwargs;
use crate::peer::{self, Link};
use crate::protocol::command::{CallObj, GetObj};
use crate::protocol::{Action, ReturnType, SyncMode};
use crate::value::{ProxyRef, Value};

/// A handle to an object that lives in a server (maybe in another process).
#[derive(Clone)]
pub struct Proxy {
    reference: ProxyRef,
    /// The link to the object's home, once known (found at the first call
    /// when the proxy was made without it).
    link: OnceLock<Arc<Link>>,
    /// Shared by every proxy derived from one reference; releases it on drop.
    owner: Option<Arc<Owner>>,
    return_type: ReturnType,
    timeout: Option<Duration>,
}

/// The server-side reference a proxy family owns.
struct Owner {
    reference: ProxyRef,
    /// The link to release it through.
    link: Option<Weak<Link>>,
    /// Set once the reference is released (or must never be).
    released: AtomicBool,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let key = (self.reference.rpc_addr.clone(), self.reference.ref_id);
        let mut owners = lock_owners();
        if owners.get(&key).is_some_and(|w| w.strong_count() == 0) {
            owners.remove(&key);
        }
        drop(owners);
        if !self.released.swap(true, Ordering::AcqRel) {
            // Queued on the link first, so the next request sent on it
            // carries the release ahead of it.
            let release = match self.link.as_ref().and_then(Weak::upgrade) {
                // The link goes to the release thread, which sends what no
                // request took with it (and drops the link there, never in
                // this drop).
                Some(link) => {
                    link.release_later(self.reference.clone());
                    Release::Queued(link)
                }
                None => Release::Direct(self.reference.clone()),
            };
            queue_release(release);
        }
    }
}

/// The references this process owns, so that one that comes back (a
/// proxy echoed by another process) shares its owner instead of getting a
/// second one that would release it twice.
type Owners = HashMap<(String, u64), Weak<Owner>>;

fn lock_owners() -> std::sync::MutexGuard<'static, Owners> {
    static OWNERS: OnceLock<Mutex<Owners>> = OnceLock::new();
    OWNERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// The proxy for a reference this client's peer sent in a reply
    /// (owned, and called over this client's link when it is the peer's).
    pub fn proxy(&self, value: Value) -> Result<Proxy> {
        match value {
            Value::Proxy(r) => Ok(Proxy::from_reply(r, self)),
            other => Err(Error::type_error(format!(
                "expected a proxy, got {}",
                other.kind()
            ))),
        }
    }
}

/// A cell holding `link`, if known.
fn known(link: Option<Arc<Link>>) -> OnceLock<Arc<Link>> {
    let cell = OnceLock::new();
    if let Some(link) = link {
        let _ = cell.set(link);
    }
    cell
}

/// What [`Proxy::invoke`] gives back, by sync mode.
pub enum Invoked {
    /// The result of a sync call.
    Value(Value),
    /// The pending result of an async call.
    Future(Future),
    /// A one-way call was sent.
    Sent,
}

impl Proxy {
    /// A proxy that owns `reference` (released when the last clone drops).
    /// If this process owns the reference already, the owner is shared.
    pub fn owning(reference: ProxyRef) -> Proxy {
        let link = Link::find(&reference.rpc_addr);
        Proxy::owning_via(reference, link)
    }

    fn owning_via(reference: ProxyRef, link: Option<Arc<Link>>) -> Proxy {
        let key = (reference.rpc_addr.clone(), reference.ref_id);
        let mut owners = lock_owners();
        let owner = match owners.get(&key).and_then(Weak::upgrade) {
            Some(owner) => owner,
            None => {
                let owner = Arc::new(Owner {
                    reference: reference.clone(),
                    link: link.as_ref().map(Arc::downgrade),
                    released: AtomicBool::new(false),
                });
                owners.insert(key, Arc::downgrade(&owner));
                owner
            }
        };
        drop(owners);
        Proxy {
            reference,
            link: known(link),
            owner: Some(owner),
            return_type: ReturnType::Auto,
            timeout: None,
        }
    }

    /// A proxy that does not release its reference (the sender owns it).
    pub fn borrowed(reference: ProxyRef) -> Proxy {
        Proxy {
            reference,
            link: OnceLock::new(),
            owner: None,
            return_type: ReturnType::Auto,
            timeout: None,
        }
    }

    /// The proxy for a reference that a reply on `via` carried. A
    /// reference to an object of the peer's was made for us: we own it,
    /// and call it over `via`. A reference to a third process's object was
    /// passed along: we borrow it (the process that got it from its owner
    /// releases it), unless we own it already (it came back to us).
    pub fn from_reply(reference: ProxyRef, via: &Client) -> Proxy {
        let link = via.link();
        let known = lock_owners()
            .get(&(reference.rpc_addr.clone(), reference.ref_id))
            .is_some_and(|w| w.strong_count() > 0);
        let home = reference.rpc_addr == link.peer_home();
        if reference.forwarded() {
            return Proxy::owning(reference);
        }
        let link = home.then(|| link.clone());
        if known || home {
            Proxy::owning_via(reference, link)
        } else {
            Proxy::borrowed(reference)
        }
    }

    /// The proxy for a reference that a request carried as an argument:
    /// borrowed (the sender owns it), and called over the link of the
    /// request this thread runs when that is the object's home.
    pub fn received(reference: ProxyRef) -> Proxy {
        let link = peer::current_link()
            .filter(|l| l.peer_home() == reference.rpc_addr)
            .or_else(|| Link::find(&reference.rpc_addr));
        Proxy {
            link: known(link),
            ..Proxy::borrowed(reference)
        }
    }

    /// Takes ownership of a proxy value that a call returned.
    pub fn adopt(value: Value) -> Result<Proxy> {
        match value {
            Value::Proxy(r) => Ok(Proxy::owning(r)),
            other => Err(Error::type_error(format!(
                "expected a proxy, got {}",
                other.kind()
            ))),
        }
    }

    /// What the proxy refers to.
    pub fn reference(&self) -> &ProxyRef {
        &self.reference
    }

    /// The address of the server that owns the object.
    pub fn address(&self) -> &str {
        &self.reference.rpc_addr
    }

    /// The remote type, as Python's `str(type(obj))`.
    pub fn type_str(&self) -> &str {
        &self.reference.type_str
    }

    /// The same proxy with results returned as `return_type`.
    pub fn with_return_type(&self, return_type: ReturnType) -> Proxy {
        Proxy {
            return_type,
            ..self.clone()
        }
    }

    /// The same proxy with another call timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Proxy {
        Proxy {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// A proxy to attribute `name`, without a round trip.
    pub fn attr(&self, name: &str) -> Proxy {
        let mut derived = self.clone();
        derived.reference.attributes.push(name.to_string());
        derived
    }

    /// The link this proxy calls through, if it has one yet (none is
    /// opened).
    pub fn live_link(&self) -> Option<&Arc<Link>> {
        self.link.get()
    }

    /// The client to call the object through: the proxy's link, else the
    /// process's link to the object's home (opened on first use).
    pub fn client(&self) -> Result<Client> {
        if let Some(link) = self.link.get() {
            return Ok(Client::from_link(link.clone()));
        }
        let client = Client::get(&self.reference.rpc_addr)?;
        let _ = self.link.set(client.link().clone());
        Ok(client)
    }

    /// Calls the object with positional arguments.
    pub fn call(&self, args: Vec<Value>) -> Result<Value> {
        self.call_kw(args, Vec::new())
    }

    /// Calls the object with positional and keyword arguments.
    pub fn call_kw(&self, args: Vec<Value>, kwargs: Kwargs) -> Result<Value> {
        let fields = CallObj::fields(&self.reference, None, &args, &kwargs);
        self.client()?
            .call(Action::CallObj, &fields[..], self.return_type, self.timeout)
    }

    /// Calls method `name` (same as `attr(name).call(args)`).
    pub fn call_method(&self, name: &str, args: Vec<Value>) -> Result<Value> {
        let fields = CallObj::fields(&self.reference, Some(name), &args, &[]);
        self.client()?
            .call(Action::CallObj, &fields[..], self.return_type, self.timeout)
    }

    /// Calls without waiting; the future resolves to the result.
    pub fn call_async(&self, args: Vec<Value>, kwargs: Kwargs) -> Result<Future> {
        let fields = CallObj::fields(&self.reference, None, &args, &kwargs);
        self.client()?
            .send(Action::CallObj, &fields[..], self.return_type)
    }

    /// Calls and asks for no reply (a failure is logged by the server).
    pub fn call_off(&self, args: Vec<Value>, kwargs: Kwargs) -> Result<()> {
        let fields = CallObj::fields(&self.reference, None, &args, &kwargs);
        self.client()?
            .send_off(Action::CallObj, &fields[..], self.return_type)
    }

    /// Fetches attribute `name` now.
    pub fn get_attr(&self, name: &str) -> Result<Value> {
        self.attr(name).fetch(self.return_type)
    }

    /// Sets attribute `name` on the remote object.
    pub fn set_attr(&self, name: &str, value: impl Into<Value>) -> Result<()> {
        self.call_method("__setattr__", vec![Value::from(name), value.into()])
            .map(drop)
    }

    /// Reads `obj[key]`.
    pub fn get_item(&self, key: impl Into<Value>) -> Result<Value> {
        self.call_method("__getitem__", vec![key.into()])
    }

    /// Writes `obj[key] = value`.
    pub fn set_item(&self, key: impl Into<Value>, value: impl Into<Value>) -> Result<()> {
        self.call_method("__setitem__", vec![key.into(), value.into()])
            .map(drop)
    }

    /// A copy of the remote object (an error if it cannot be copied).
    pub fn get_value(&self) -> Result<Value> {
        self.fetch(ReturnType::Value)
    }

    fn fetch(&self, return_type: ReturnType) -> Result<Value> {
        self.fetch_as(return_type, self.timeout)
    }

    /// Releases the server-side reference now instead of at drop, for
    /// this proxy and every proxy derived from it. Borrowed proxies and
    /// references already released do nothing.
    pub fn release(&self) -> Result<()> {
        match &self.owner {
            Some(owner) if !owner.released.swap(true, Ordering::AcqRel) => {
                self.client()?.delete(&owner.reference)
            }
            _ => Ok(()),
        }
    }

    /// Keeps the reference alive past the last proxy (`false`), as pyacq
    /// did without `auto_delete`; [`Proxy::release`] still releases it.
    pub fn keep_alive(&self, keep: bool) {
        if let Some(owner) = &self.owner {
            owner.released.store(keep, Ordering::Release);
        }
    }

    /// True when this proxy owns its reference (it was not borrowed).
    pub fn owns(&self) -> bool {
        self.owner.is_some()
    }

    /// True when this proxy owns a reference that has been released.
    pub fn is_released(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|o| o.released.load(Ordering::Acquire))
    }

    /// Calls the object (or `method` of it) in the given sync mode, with
    /// explicit return type and timeout (`None`: the client's default).
    pub fn invoke(
        &self,
        method: Option<&str>,
        args: Vec<Value>,
        kwargs: Kwargs,
        sync: SyncMode,
        return_type: ReturnType,
        timeout: Option<Duration>,
    ) -> Result<Invoked> {
        let client = self.client()?;
        let fields = CallObj::fields(&self.reference, method, &args, &kwargs);
        let opts = &fields[..];
        Ok(match sync {
            SyncMode::Sync => {
                Invoked::Value(client.call(Action::CallObj, opts, return_type, timeout)?)
            }
            SyncMode::Async => {
                let timeout = Some(timeout.unwrap_or(client.timeout()));
                let future =
                    client.send_with_timeout(Action::CallObj, opts, return_type, timeout)?;
                Invoked::Future(future)
            }
            SyncMode::Off => {
                client.send_off(Action::CallObj, opts, return_type)?;
                Invoked::Sent
            }
        })
    }

    /// Starts a sync call of the object (or `method` of it): the request
    /// is written at once and the caller waits on the future, enforcing
    /// `timeout` itself (see [`Client::start`]).
    pub fn start(
        &self,
        method: Option<&str>,
        args: Vec<Value>,
        kwargs: Kwargs,
        return_type: ReturnType,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        let fields = CallObj::fields(&self.reference, method, &args, &kwargs);
        self.client()?
            .start(Action::CallObj, &fields[..], return_type, timeout)
    }

    /// Starts fetching the object the proxy refers to, as
    /// [`Proxy::start`] starts a call.
    pub fn start_fetch(
        &self,
        return_type: ReturnType,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        let opts = GetObj::opts(Value::Proxy(self.reference.clone()));
        self.client()?
            .start(Action::GetObj, &opts, return_type, timeout)
    }

    /// Fetches the object the proxy refers to (its attribute path
    /// followed), returned as `return_type`.
    pub fn fetch_as(&self, return_type: ReturnType, timeout: Option<Duration>) -> Result<Value> {
        let opts = GetObj::opts(Value::Proxy(self.reference.clone()));
        self.client()?
            .call(Action::GetObj, &opts, return_type, timeout)
    }
}

impl PartialEq for Proxy {
    /// Two proxies are equal when they refer to the same remote object.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.reference, &other.reference);
        a.rpc_addr == b.rpc_addr && a.obj_id == b.obj_id && a.attributes == b.attributes
    }
}

impl Eq for Proxy {}

impl std::hash::Hash for Proxy {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let r = &self.reference;
        (&r.rpc_addr, r.obj_id, &r.attributes).hash(state);
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.reference;
        write!(
            f,
            "<ObjectProxy for {}[{}] {}",
            r.rpc_addr, r.obj_id, r.type_str
        )?;
        for a in &r.attributes {
            write!(f, ".{a}")?;
        }
        f.write_str(">")
    }
}

impl From<Proxy> for Value {
    fn from(p: Proxy) -> Value {
        Value::Proxy(p.reference.clone())
    }
}

impl From<&Proxy> for Value {
    fn from(p: &Proxy) -> Value {
        Value::Proxy(p.reference.clone())
    }
}

impl FromValue for Proxy {
    /// A proxy received as an argument is borrowed (the sender owns it),
    /// and called over the link the request came by when that is its
    /// home. A proxy that came home arrives as the object itself; it is
    /// proxied again through the host of the request being run.
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Proxy(r) => Ok(Proxy::received(r)),
            Value::Object(obj) => {
                let host = peer::thread_service()
                    .map(|s| s.host())
                    .or_else(|| peer::current_link().map(|l| l.host().clone()));
                match host {
                    Some(host) => Ok(Proxy::owning(host.export(&obj, None))),
                    None => Err(Error::type_error("a local object is not a proxy")),
                }
            }
            other => Err(Error::type_error(format!(
                "expected a proxy, got {}",
                other.kind()
            ))),
        }
    }
}

/// Gives up this process's ownership of `reference` (passed on to a
/// process that owns it now): its proxies here never release it.
pub(crate) fn hand_over(reference: &ProxyRef) {
    let key = (reference.rpc_addr.clone(), reference.ref_id);
    let owner = lock_owners().get(&key).and_then(Weak::upgrade);
    if let Some(owner) = owner {
        owner.released.store(true, Ordering::Release);
    }
}

// ---- releases -----------------------------------------------------------

/// A release for the release thread.
enum Release {
    /// Queued on this link: send what is still queued there.
    Queued(Arc<Link>),
    /// Through any link this process has to the reference's host.
    Direct(ProxyRef),
}

/// Hands a release to the release thread.
fn queue_release(release: Release) {
    static RELEASER: OnceLock<Sender<Release>> = OnceLock::new();
    let sender = RELEASER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Release>();
        std::thread::Builder::new()
            .name("farcall-release".into())
            .spawn(move || {
                for release in rx {
                    match release {
                        Release::Queued(link) => link.send_releases(),
                        Release::Direct(reference) => send_release(&reference),
                    }
                }
            })
            .expect("spawning the release thread");
        tx
    });
    let _ = sender.send(release);
}

fn send_release(reference: &ProxyRef) {
    // Through any link this process still has to that host. With none,
    // there is nothing to do: a host releases what a link held when the
    // link goes, and connecting to a dead server just to say so would
    // stall the queue.
    let client = Client::any_connected(&reference.rpc_addr);
    let Some(client) = client else {
        return;
    };
    if let Err(e) = client.delete_later(reference) {
        log::debug!("could not release {reference:?}: {e}");
    }
}
