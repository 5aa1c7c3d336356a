//! The host: the objects a process serves, with no I/O in it.
//!
//! A host has an address (the `rpc_addr` its proxies carry), a table of
//! the objects peers hold references to, the names it publishes, the
//! modules it can import, and the language runtime that imports them. It
//! runs [`Command`]s; who runs them, and in which thread, is the
//! executor's business (a server's thread, or a link's waiting thread or
//! pool), and how requests arrive is the peer link's.
//!
//! Every [`crate::Server`] has a host of its own. A process also has one
//! [`Host::local`], addressed `link://<process id>`, for objects it sends
//! over links that no server of its owns: a peer reaches those over the
//! link they came by.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::codec::Exporter;
use crate::error::{Error, Result};
use crate::handshake;
use crate::object::{Kwargs, ValueObject};
use crate::protocol::command::{CallObj, Command};
use crate::protocol::ReturnType;
use crate::sync::lock;
use crate::table::ObjectTable;
use crate::value::{ObjectRef, ProxyRef, Value};

/// The scheme of the addresses of [`Host::local`]s.
pub const LINK_SCHEME: &str = "link://";

/// What the language hosting a server's objects provides: module
/// imports, and turning plain values into objects. The Python bindings
/// install one so that imports and `return_type="proxy"` give real Python
/// objects.
pub trait Runtime: Send + Sync {
    /// Returns the module (or any object standing for it) named `module`.
    fn import(&self, module: &str) -> Result<Value>;

    /// Hosts a plain value as an object, for results that must go by proxy.
    fn host_value(&self, value: Value) -> Result<ObjectRef> {
        Ok(ValueObject::new_ref(value))
    }

    /// Drops the last handle to an object a peer released. Python's frees
    /// it at once, with the GIL, instead of leaving the decref for later.
    fn free(&self, obj: ObjectRef) {
        drop(obj);
    }
}

/// Who asked for a command, for the log of its failure.
pub struct Caller<'a> {
    /// Describes the peer (called only to log).
    pub describe: &'a dyn Fn() -> String,
    /// The peer waits for the reply (else the failure is logged as lost).
    pub wants_reply: bool,
}

/// Objects served to peers, and their names.
pub struct Host {
    address: String,
    objects: Mutex<ObjectTable>,
    names: Mutex<HashMap<String, Value>>,
    modules: Mutex<HashMap<String, Value>>,
    runtime: Mutex<Option<Arc<dyn Runtime>>>,
}

/// The hosts of this process by address, so that a proxy that comes home
/// is recognised wherever it arrives.
fn hosts() -> &'static Mutex<HashMap<String, Weak<Host>>> {
    static HOSTS: OnceLock<Mutex<HashMap<String, Weak<Host>>>> = OnceLock::new();
    HOSTS.get_or_init(Default::default)
}

/// The runtime hosts get when none is set (the Python bindings set one).
static DEFAULT_RUNTIME: Mutex<Option<Arc<dyn Runtime>>> = Mutex::new(None);

impl Host {
    /// A host whose proxies carry `address`.
    pub fn new(address: impl Into<String>) -> Arc<Host> {
        let address = address.into();
        let host = Arc::new(Host {
            address: address.clone(),
            objects: Mutex::new(ObjectTable::default()),
            names: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            runtime: Mutex::new(None),
        });
        let mut all = lock(hosts());
        all.retain(|_, h| h.strong_count() > 0);
        all.insert(address, Arc::downgrade(&host));
        host
    }

    /// This process's host for objects sent over links no server owns.
    pub fn local() -> Arc<Host> {
        static LOCAL: OnceLock<Arc<Host>> = OnceLock::new();
        LOCAL
            .get_or_init(|| Host::new(link_address(&handshake::client_id())))
            .clone()
    }

    /// The host of this process with address `address`, if any.
    pub fn find(address: &str) -> Option<Arc<Host>> {
        lock(hosts()).get(address).and_then(Weak::upgrade)
    }

    /// Sets the runtime of every host that has none of its own (the
    /// Python bindings call it once).
    pub fn set_default_runtime(runtime: Arc<dyn Runtime>) {
        *lock(&DEFAULT_RUNTIME) = Some(runtime);
    }

    /// The address its proxies carry.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Publishes `value` under `name` (a peer's `get_item(name)` reads it).
    pub fn publish(&self, name: impl Into<String>, value: impl Into<Value>) {
        lock(&self.names).insert(name.into(), value.into());
    }

    /// Reads a published name.
    pub fn published(&self, name: &str) -> Option<Value> {
        lock(&self.names).get(name).cloned()
    }

    /// Makes `value` importable under `module` (for Rust hosts).
    pub fn add_module(&self, module: impl Into<String>, value: impl Into<Value>) {
        lock(&self.modules).insert(module.into(), value.into());
    }

    /// Installs the language runtime: module lookup for `import` and
    /// hosting of plain values.
    pub fn set_runtime(&self, runtime: Arc<dyn Runtime>) {
        *lock(&self.runtime) = Some(runtime);
    }

    fn runtime(&self) -> Option<Arc<dyn Runtime>> {
        lock(&self.runtime)
            .clone()
            .or_else(|| lock(&DEFAULT_RUNTIME).clone())
    }

    /// Registers one more reference to `obj`, held by `holder` (a link
    /// id: when that link goes, so does the reference).
    pub fn export(&self, obj: &ObjectRef, holder: Option<u64>) -> ProxyRef {
        let (obj_id, ref_id) = lock(&self.objects).register(obj, holder);
        ProxyRef {
            rpc_addr: self.address.clone(),
            obj_id,
            ref_id,
            type_str: obj.type_str(),
            attributes: Vec::new(),
        }
    }

    /// The local object a proxy of this host refers to (its attribute path
    /// followed): the object itself, not a copy, so that a change made
    /// through it shows in its owner. A plain value a Rust object hosted
    /// for the walk comes back as that value.
    pub fn unwrap_proxy(&self, proxy: &ProxyRef) -> Result<Value> {
        let obj = self.proxied_object(proxy)?;
        if obj.as_any().is::<ValueObject>() {
            return obj.to_value();
        }
        Ok(Value::Object(obj))
    }

    /// The object a proxy of this host refers to, its attribute path
    /// followed.
    fn proxied_object(&self, proxy: &ProxyRef) -> Result<ObjectRef> {
        self.walk(proxy, &proxy.attributes)
    }

    /// Proxy `proxy`'s object, with the attributes `path` followed.
    fn walk(&self, proxy: &ProxyRef, path: &[String]) -> Result<ObjectRef> {
        self.check_home(proxy)?;
        let mut obj = self.object(proxy.obj_id)?;
        for attr in path {
            obj = obj.get_attr_object(attr)?;
        }
        Ok(obj)
    }

    /// `get_obj` with `return_type="auto"`: the last attribute of the path
    /// is read as the object chooses to send it (copied when it can be).
    fn fetch_auto(&self, proxy: &ProxyRef) -> Result<Value> {
        let Some((last, path)) = proxy.attributes.split_last() else {
            let obj = self.walk(proxy, &[])?;
            return obj.auto_value().unwrap_or(Ok(Value::Object(obj)));
        };
        self.walk(proxy, path)?.get_attr(last)
    }

    fn check_home(&self, proxy: &ProxyRef) -> Result<()> {
        if proxy.rpc_addr != self.address {
            return Err(Error::value_error(format!(
                "the proxy belongs to {}, not to this server ({})",
                proxy.rpc_addr, self.address
            )));
        }
        Ok(())
    }

    /// Drops `proxy`'s reference if a forwarder made it for its receiver
    /// (`farcall_share`) and the receiver is this host itself: a home
    /// holds its objects without references.
    pub fn release_forwarded(&self, proxy: &ProxyRef) {
        if !proxy.forwarded() {
            return;
        }
        let released = lock(&self.objects).release_forwarded(proxy.obj_id, proxy.ref_id);
        self.free(released);
    }

    /// Drops the last handle to an object peers released (outside the
    /// table's lock: a finalizer may run), through the runtime, so it is
    /// freed now and the next request already sees it gone.
    fn free(&self, released: Option<ObjectRef>) {
        if let Some(obj) = released {
            match self.runtime() {
                Some(runtime) => runtime.free(obj),
                None => drop(obj),
            }
        }
    }

    /// Replaces the proxies of this host inside `value` by the objects
    /// they refer to (a proxy that comes home is unwrapped).
    pub fn resolve_home(&self, value: &mut Value) -> Result<()> {
        let mut failure = None;
        value.visit_proxies_mut(&mut |v| {
            if let Value::Proxy(p) = v {
                if p.rpc_addr == self.address {
                    match self.unwrap_proxy(p) {
                        Ok(resolved) => *v = resolved,
                        Err(e) => failure = Some(e),
                    }
                }
            }
        });
        failure.map_or(Ok(()), Err)
    }

    /// Number of objects held for peers.
    pub fn object_count(&self) -> usize {
        lock(&self.objects).len()
    }

    /// Releases every reference `holder` holds (its link is gone).
    pub fn release_holder(&self, holder: u64) {
        let freed = lock(&self.objects).release_holder(holder);
        if !freed.is_empty() {
            log::debug!(
                "{}: released {} objects of a peer that left",
                self.address,
                freed.len()
            );
        }
        drop(freed); // outside the lock: a finalizer may run
    }

    /// Forgets every object (a closing server).
    pub fn clear(&self) {
        let objects = lock(&self.objects).take_all();
        drop(objects);
    }

    /// Runs an object, name or module command for `caller`. A command that
    /// raised is logged here, as pyacq's side that ran a call says so: at
    /// WARNING, or at ERROR when nobody gets the error (a one-way call); a
    /// `call_obj` runs inside the call hook, if one is set (crate::hooks),
    /// and its failure is logged there. The connection commands (`close`, the handshake,
    /// `farcall_cancel`) belong to whoever runs the link or endpoint and
    /// are refused here.
    pub fn run(
        &self,
        command: Command,
        return_type: ReturnType,
        caller: &Caller<'_>,
    ) -> Result<Value> {
        let action = command.action();
        let reported = |result: Result<Value>| {
            if let Err(e @ Error::Remote { .. }) = &result {
                let (action, who) = (action.name(), (caller.describe)());
                match caller.wants_reply {
                    true => log::warn!("'{action}' from {who} raised {e}"),
                    false => log::error!("one-way '{action}' from {who} failed: {e}"),
                }
            }
            result
        };
        match command {
            Command::CallObj(mut call) => match crate::hooks::call_hook() {
                Some(hook) => {
                    let context = std::mem::take(&mut call.context);
                    let run =
                        move || reported(self.run_command(Command::CallObj(call), return_type));
                    hook.around(&context, Box::new(run))
                }
                None => reported(self.run_command(Command::CallObj(call), return_type)),
            },
            other => reported(self.run_command(other, return_type)),
        }
    }

    fn run_command(&self, command: Command, return_type: ReturnType) -> Result<Value> {
        let result = match command {
            Command::CallObj(call) => self.call(call, return_type)?,
            Command::GetObj(mut get) => match (&get.obj, return_type) {
                // The object itself, so a proxy to it is a proxy to the
                // very object and a value is copied from it once.
                (Value::Proxy(p), ReturnType::Proxy | ReturnType::Value)
                    if p.rpc_addr == self.address =>
                {
                    Value::Object(self.proxied_object(p)?)
                }
                (Value::Proxy(p), ReturnType::Auto) if p.rpc_addr == self.address => {
                    self.fetch_auto(p)?
                }
                _ => {
                    self.resolve_home(&mut get.obj)?;
                    get.obj
                }
            },
            Command::GetItem(get) => self.lookup_name(&get.name)?,
            Command::SetItem(mut set) => {
                self.resolve_home(&mut set.obj)?;
                lock(&self.names).insert(set.name, set.obj);
                Value::None
            }
            Command::Delete(delete) => {
                let released = lock(&self.objects).release(delete.obj_id, delete.ref_id)?;
                self.free(released);
                Value::None
            }
            Command::Share(share) => {
                let mut objects = lock(&self.objects);
                objects.share(share.obj_id, share.ref_id, share.new_ref_id)?;
                Value::None
            }
            Command::Import(import) => self.import(&import.module)?,
            Command::Ping(_) => Value::from("pong"),
            other => {
                return Err(Error::Protocol(format!(
                    "'{}' is not an action for this endpoint",
                    other.action().name()
                )))
            }
        };
        self.apply_return_type(result, return_type)
    }

    /// `call_obj`: proxies of ours among the arguments are resolved to
    /// their objects, then the last attribute of the target's path is
    /// called as a method, so no bound method is built.
    fn call(&self, call: CallObj, return_type: ReturnType) -> Result<Value> {
        let CallObj {
            target,
            mut args,
            mut kwargs,
            ..
        } = call;
        if target.rpc_addr != self.address {
            return Err(Error::value_error(format!(
                "proxy belongs to {}, not to this server ({})",
                target.rpc_addr, self.address
            )));
        }
        args.iter_mut().try_for_each(|a| self.resolve_home(a))?;
        kwargs
            .iter_mut()
            .try_for_each(|(_, v)| self.resolve_home(v))?;
        let mut obj = self.object(target.obj_id)?;
        let by_proxy = return_type == ReturnType::Proxy;
        let Some((method, path)) = target.attributes.split_last() else {
            return match by_proxy {
                true => obj.call_object(args, kwargs).map(Value::Object),
                false => obj.call(args, kwargs),
            };
        };
        for attr in path {
            obj = obj.get_attr_object(attr)?;
        }
        match by_proxy {
            true => obj
                .call_method_object(method, args, kwargs)
                .map(Value::Object),
            false => obj.call_method(method, args, kwargs as Kwargs),
        }
    }

    fn object(&self, obj_id: u64) -> Result<ObjectRef> {
        lock(&self.objects).get(obj_id).ok_or_else(|| {
            Error::key_error(format!(
                "Invalid proxy object ID {obj_id}. The object may have been released already."
            ))
        })
    }

    fn lookup_name(&self, name: &str) -> Result<Value> {
        lock(&self.names)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::key_error(format!("'{name}'")))
    }

    fn import(&self, module: &str) -> Result<Value> {
        if let Some(v) = lock(&self.modules).get(module) {
            return Ok(v.clone());
        }
        match self.runtime() {
            Some(r) => r.import(module),
            None => Err(Error::exception(
                "ModuleNotFoundError",
                format!("No module named '{module}'"),
            )),
        }
    }

    fn apply_return_type(&self, result: Value, return_type: ReturnType) -> Result<Value> {
        match (return_type, result) {
            (ReturnType::Value, Value::Object(o)) => o.to_value(),
            (ReturnType::Proxy, v @ (Value::Object(_) | Value::Proxy(_))) => Ok(v),
            (ReturnType::Proxy, v) => match self.runtime() {
                Some(runtime) => runtime.host_value(v).map(Value::Object),
                None => Ok(Value::Object(ValueObject::new_ref(v))),
            },
            (_, v) => Ok(v),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let mut all = lock(hosts());
        if all
            .get(&self.address)
            .is_some_and(|h| h.strong_count() == 0)
        {
            all.remove(&self.address);
        }
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Host({})", self.address)
    }
}

/// The address of the [`Host::local`] of the process with id `id`.
pub fn link_address(id: &handshake::ClientId) -> String {
    format!("{LINK_SCHEME}{}", crate::auth::encode_hex(id))
}

/// Exports the local objects met while encoding a message, through a host,
/// as held by the link the message goes to.
pub struct HostExporter<'a> {
    /// The host that serves the objects.
    pub host: &'a Host,
    /// The link that will hold the references.
    pub holder: Option<u64>,
}

impl Exporter for HostExporter<'_> {
    fn export(&mut self, obj: &ObjectRef) -> Result<ProxyRef> {
        Ok(self.host.export(obj, self.holder))
    }
}
