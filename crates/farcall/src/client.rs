//! The client: pyacq's view on a link to a server.
//!
//! A [`Client`] is a handle to one [`Link`]: cheap to clone, usable from
//! any thread at once. It adds pyacq's actions (`get_item`, `import`,
//! `close_server`, ...) to the link's calls, and [`Future`], the pending
//! reply of an async call. The process keeps one link per server
//! address: [`Client::get`] finds it (or connects), so every thread and
//! every proxy of that server share it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::codec::Format;
use crate::error::{Error, Result};
use crate::host::LINK_SCHEME;
use crate::peer::Status;
use crate::peer::{CallMode, Link, LinkOptions, Waiting};
use crate::protocol::command::{CallObj, Delete, GetItem, Import, SetItem};
use crate::protocol::{Action, Opts, ReturnType};
use crate::value::{ProxyRef, Value};

pub use crate::peer::{CONNECT_TIMEOUT, DEFAULT_TIMEOUT};

/// Options for connecting a client (a link's options).
pub type ClientOptions = LinkOptions;

/// A connection to one server (or any peer). Cheap to clone; usable from
/// any thread.
#[derive(Clone)]
pub struct Client {
    link: Arc<Link>,
}

impl Client {
    /// Connects to the server at `address`.
    pub fn connect(address: &str) -> Result<Client> {
        Self::connect_with(address, ClientOptions::default())
    }

    /// Connects with explicit options (a new link, even if the process
    /// has one to that server already).
    pub fn connect_with(address: &str, options: ClientOptions) -> Result<Client> {
        Ok(Client {
            link: Link::connect(address, &options)?,
        })
    }

    /// The process's link to `address` (any live one to the peer whose
    /// objects carry that address), connecting on first use.
    pub fn get(address: &str) -> Result<Client> {
        if let Some(link) = Link::find(address) {
            return Ok(Client { link });
        }
        if address.starts_with(LINK_SCHEME) {
            return Err(Error::Disconnected(format!(
                "no link to {address}: its objects are reachable only over the link they came by"
            )));
        }
        Client::connect(address)
    }

    /// A live link of this process to `address`, if there is one.
    pub fn any_connected(address: &str) -> Option<Client> {
        Link::find(address).map(|link| Client { link })
    }

    /// A client for an open link.
    pub fn from_link(link: Arc<Link>) -> Client {
        Client { link }
    }

    /// The link.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// The address of the peer's objects (the server's address).
    pub fn address(&self) -> &str {
        self.link.peer_home()
    }

    /// The serializer this client speaks.
    pub fn format(&self) -> Format {
        self.link.format()
    }

    /// The default timeout of sync calls.
    pub fn timeout(&self) -> Duration {
        self.link.timeout()
    }

    /// Why the client is disconnected, if it is.
    pub fn disconnected(&self) -> Option<String> {
        self.link.dead()
    }

    /// Sends a request and returns a future for its reply, which the
    /// engine fails with a timeout after the client's default timeout
    /// even if nobody waits. Requests sent in a burst are written
    /// together, soon after (or when waited on). `opts` is a `&Value`, or
    /// a map of borrowed fields ([`Opts`]).
    pub fn send<'a>(
        &self,
        action: Action,
        opts: impl Into<Opts<'a>>,
        return_type: ReturnType,
    ) -> Result<Future> {
        self.send_with_timeout(action, opts, return_type, Some(self.link.timeout()))
    }

    /// [`Client::send`] with the call's own timeout (`None`: no limit).
    pub fn send_with_timeout<'a>(
        &self,
        action: Action,
        opts: impl Into<Opts<'a>>,
        return_type: ReturnType,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        let mode = CallMode::later(timeout);
        let req_id = self.link.send(action, opts.into(), return_type, mode)?;
        Ok(self.future(req_id, None))
    }

    /// Sends a request whose reply the caller waits for next (it is
    /// written at once, and the caller enforces `timeout`, the engine does
    /// not): the first half of a sync call, for callers that wait in
    /// slices (to let Python handle Ctrl-C between them).
    pub fn start<'a>(
        &self,
        action: Action,
        opts: impl Into<Opts<'a>>,
        return_type: ReturnType,
        timeout: Option<Duration>,
    ) -> Result<Future> {
        let mode = CallMode::waited(timeout);
        // The caller waits next, in this thread: requests of its call chain
        // come to it from now on (a callback may be quicker than the wait).
        let waiting = Waiting::here(self.link.id());
        let req_id = self.link.send(action, opts.into(), return_type, mode)?;
        Ok(self.future(req_id, Some(waiting)))
    }

    fn future(&self, req_id: i64, waiting: Option<Waiting>) -> Future {
        Future {
            link: self.link.clone(),
            req_id,
            consumed: false,
            waiting,
        }
    }

    /// Sends a request that wants no reply (`opts` as for [`Client::send`]).
    pub fn send_off<'a>(
        &self,
        action: Action,
        opts: impl Into<Opts<'a>>,
        return_type: ReturnType,
    ) -> Result<()> {
        let mode = CallMode::no_reply(false);
        self.link
            .send(action, opts.into(), return_type, mode)
            .map(drop)
    }

    /// Sends a request and waits for its reply (`timeout`: the client's
    /// default when `None`; `opts` as for [`Client::send`]).
    pub fn call<'a>(
        &self,
        action: Action,
        opts: impl Into<Opts<'a>>,
        return_type: ReturnType,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let timeout = timeout.unwrap_or(self.link.timeout());
        self.link
            .call(action, opts.into(), return_type, Some(timeout))
    }

    /// Calls the object `proxy` refers to (a method, through its path).
    pub fn call_obj(
        &self,
        proxy: &ProxyRef,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value> {
        let fields = CallObj::fields(proxy, None, &args, &kwargs);
        self.call(Action::CallObj, &fields[..], ReturnType::Auto, None)
    }

    /// Answers `"pong"` if the server is there.
    pub fn ping(&self) -> Result<Value> {
        self.call(Action::Ping, &Value::None, ReturnType::Auto, None)
    }

    /// Reads the object the server published as `name`.
    pub fn get_item(&self, name: &str) -> Result<Value> {
        self.call(
            Action::GetItem,
            &GetItem::opts(name),
            ReturnType::Auto,
            None,
        )
    }

    /// Publishes `value` on the server as `name`.
    pub fn set_item(&self, name: &str, value: Value) -> Result<()> {
        let opts = SetItem::opts(name, value);
        self.call(Action::SetItem, &opts, ReturnType::Auto, None)
            .map(drop)
    }

    /// Imports `module` on the server and returns it (by proxy).
    pub fn import(&self, module: &str) -> Result<Value> {
        self.call(
            Action::Import,
            &Import::opts(module),
            ReturnType::Auto,
            None,
        )
    }

    /// Releases the server's object behind `proxy` (one reference).
    pub fn delete(&self, proxy: &ProxyRef) -> Result<()> {
        self.call(Action::Delete, &Delete::opts(proxy), ReturnType::Auto, None)
            .map(drop)
    }

    /// Releases a reference without waiting for the answer.
    pub fn delete_later(&self, proxy: &ProxyRef) -> Result<()> {
        self.send_off(Action::Delete, &Delete::opts(proxy), ReturnType::Auto)
    }

    /// Asks the server to close. Every client it knows is told.
    pub fn close_server(&self) -> Result<()> {
        if self.disconnected().is_some() {
            return Ok(());
        }
        self.call(Action::Close, &Value::None, ReturnType::Auto, None)?;
        self.link.close("the server closed (close_server)");
        Ok(())
    }

    /// Closes this connection (the server keeps running); pending calls
    /// fail with `Disconnected`.
    pub fn close(&self) {
        self.link.close("the client was closed");
    }

    /// True when both handles share one link.
    pub fn same_as(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.link, &other.link)
    }

    /// Number of calls sent and not yet answered.
    pub fn pending(&self) -> usize {
        self.link.pending()
    }
}

/// The pending reply to one request.
///
/// Wait for it with [`Future::wait`] from any thread, or `.await` it
/// (the I/O thread reads on its behalf). Dropping it unanswered cancels
/// the call: the peer skips it if it has not started.
pub struct Future {
    link: Arc<Link>,
    req_id: i64,
    consumed: bool,
    /// A sync call's registration as waiting in its call chain.
    waiting: Option<Waiting>,
}

impl Future {
    /// Waits for the result (`None`: no time limit). On timeout the call
    /// is forgotten (and cancelled on the peer): a late reply is dropped.
    pub fn wait(mut self, timeout: Option<Duration>) -> Result<Value> {
        match self.wait_for(timeout)? {
            Some(result) => result,
            None => Err(Error::Timeout(timeout.unwrap_or(Duration::MAX))),
        }
    }

    /// Waits up to `timeout` (`None`: no limit). `Ok(None)` when the time
    /// passes first; the call then stays pending and can be waited on again.
    /// Once a result has been returned, later calls report an error.
    pub fn wait_for(&mut self, timeout: Option<Duration>) -> Result<Option<Result<Value>>> {
        self.wait_until(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// The outcome if it is here already (no reading, no waiting): what a
    /// pipelining caller finds for most of its futures, and can take
    /// without giving up anything (such as Python's GIL) to wait.
    pub fn take_ready(&mut self) -> Option<Result<Value>> {
        if self.consumed {
            return None;
        }
        match self.link.status(self.req_id) {
            crate::peer::Status::Done(outcome) => {
                self.consumed = true;
                Some(outcome)
            }
            _ => None,
        }
    }

    /// [`Future::wait_for`] until `deadline` (`None`: no limit).
    pub fn wait_until(&mut self, deadline: Option<Instant>) -> Result<Option<Result<Value>>> {
        let got = self
            .link
            .wait(self.req_id, deadline, self.waiting.as_ref())?;
        if got.is_some() {
            self.consumed = true;
        }
        Ok(got)
    }

    /// True when the result has arrived (reads what is available now).
    pub fn is_done(&self) -> bool {
        self.link.is_done(self.req_id)
    }

    /// Wakes `waker` once the call is answered (from whichever thread
    /// reads the reply, with no lock held); true when it is answered
    /// already (the waker is then not kept).
    pub fn notify_when_done(&self, waker: &std::task::Waker) -> bool {
        !self.link.set_waker(self.req_id, waker)
    }

    /// Gives up on the call: it is forgotten, and the peer is told so that
    /// it skips the call if it has not started. True when it was still
    /// pending.
    pub fn cancel(&mut self) -> bool {
        if self.consumed {
            return false;
        }
        self.consumed = true;
        let pending = !self.link.is_done(self.req_id);
        self.link.abandon(self.req_id);
        pending
    }

    /// The request id.
    pub fn req_id(&self) -> i64 {
        self.req_id
    }

    /// The client the request went through.
    pub fn client(&self) -> Client {
        Client {
            link: self.link.clone(),
        }
    }

    /// The link the request went through.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }
}

impl std::future::Future for Future {
    type Output = Result<Value>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.link.status(self.req_id) {
                Status::Done(outcome) => {
                    self.consumed = true;
                    return Poll::Ready(outcome);
                }
                Status::Unknown => {
                    self.consumed = true;
                    let why = format!("no call {} is pending", self.req_id);
                    return Poll::Ready(Err(Error::Protocol(why)));
                }
                Status::Pending => {
                    if self.link.set_waker(self.req_id, cx.waker()) {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl Drop for Future {
    fn drop(&mut self) {
        if !self.consumed {
            // Nobody will read the result: forget the call.
            self.link.abandon(self.req_id);
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.link.describe())
    }
}

impl std::fmt::Debug for Future {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Future({} #{})", self.link.describe(), self.req_id)
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Client>();
    is::<Future>();
}
