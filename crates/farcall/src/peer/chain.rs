//! Call chains: where a request runs when its caller is waiting.
//!
//! Every request on a native link names the call chain it belongs to: the
//! chain of the request its sender is running, or, outside any request,
//! the sending thread's own (a random number per thread). When A calls B
//! and B, while running that call, calls A back, the callback carries A's
//! chain, and A runs it in the thread that waits for B's answer (that
//! thread registered itself as [`Waiting`]) instead of on a pool thread:
//! A -> B -> A completes in the right thread, however deep it goes.
//!
//! The chain and link of the request a thread runs are its [`Context`],
//! which is also what `get_connection()` answers.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::executor::Job;
use super::signal::Signal;
use super::Link;
use crate::sync::lock;

/// The request a thread is running: its chain and the link it came by.
#[derive(Clone)]
pub(crate) struct Context {
    chain: u64,
    link: Arc<Link>,
}

thread_local! {
    static OWN_CHAIN: u64 = crate::auth::random::<8>()
        .map(u64::from_le_bytes)
        .unwrap_or(1)
        .max(1);
    /// The frame naming [`OWN_CHAIN`], made once.
    static OWN_FRAME: bytes::Bytes = OWN_CHAIN.with(|c| crate::protocol::message::chain_frame(*c));
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
    static INBOX: Arc<Inbox> = Arc::new(Inbox {
        state: Mutex::new(InboxState::default()),
        queued: AtomicUsize::new(0),
        signal: Signal::current(),
    });
    /// The chains this thread's inbox is registered under, with how many
    /// waits hold each (its own chain stays registered for good).
    static REGISTERED: RefCell<Registrations> = RefCell::new(Registrations::default());
}

/// The chain a request sent from this thread belongs to.
pub(crate) fn current() -> u64 {
    CONTEXT
        .with(|c| c.borrow().as_ref().map(|c| c.chain))
        .unwrap_or_else(|| OWN_CHAIN.with(|c| *c))
}

/// The frame naming [`current`], as a request carries it.
pub(crate) fn current_frame() -> bytes::Bytes {
    match CONTEXT.with(|c| c.borrow().as_ref().map(|c| c.chain)) {
        Some(chain) => crate::protocol::message::chain_frame(chain),
        None => OWN_FRAME.with(bytes::Bytes::clone),
    }
}

/// The link of the request this thread is running, if any.
pub(crate) fn current_link() -> Option<Arc<Link>> {
    CONTEXT.with(|c| c.borrow().as_ref().map(|c| c.link.clone()))
}

/// Marks the thread as running a request of `chain` that came by `link`,
/// until dropped.
pub(crate) struct Running {
    previous: Option<Context>,
}

impl Running {
    /// Enters the context.
    pub(crate) fn enter(link: &Arc<Link>, chain: u64) -> Running {
        let chain = if chain == 0 { current() } else { chain };
        let context = Context {
            chain,
            link: link.clone(),
        };
        Running {
            previous: CONTEXT.with(|c| c.replace(Some(context))),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CONTEXT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Requests of a waiting thread's chain, for it to run.
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    /// How many jobs `state` holds: a waiter looks for one at every turn,
    /// and almost always finds none, without taking the lock.
    queued: AtomicUsize,
    signal: Arc<Signal>,
}

#[derive(Default)]
struct InboxState {
    jobs: VecDeque<Job>,
    /// The links the thread waits on, innermost wait last; empty when it
    /// does not wait (then it takes no requests).
    waits: Vec<u64>,
}

impl Inbox {
    /// The next request for this thread, if any.
    fn pop(&self) -> Option<Job> {
        if self.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let job = lock(&self.state).jobs.pop_front();
        if job.is_some() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        job
    }

    /// Takes every job left (the thread stops waiting).
    fn take_all(&self, st: &mut InboxState) -> Vec<Job> {
        self.queued.store(0, Ordering::Release);
        st.jobs.drain(..).collect()
    }

    /// Takes `job` if the thread waits (on `link`, when `on_link`), else
    /// gives it back.
    fn offer(&self, job: Job, on_link: bool) -> Option<Job> {
        let mut st = lock(&self.state);
        let link = job.link.id();
        let fits = if on_link {
            st.waits.contains(&link)
        } else {
            !st.waits.is_empty()
        };
        if !fits {
            return Some(job);
        }
        st.jobs.push_back(job);
        self.queued.fetch_add(1, Ordering::AcqRel);
        drop(st);
        self.signal.notify();
        None
    }

    /// Drops the request `req_id` of `link` if it has not started; true
    /// when it was there.
    fn cancel(&self, link: u64, req_id: i64) -> bool {
        let mut st = lock(&self.state);
        let before = st.jobs.len();
        st.jobs
            .retain(|j| !(j.link.id() == link && j.request.req_id == req_id));
        self.queued.store(st.jobs.len(), Ordering::Release);
        st.jobs.len() != before
    }
}

/// Inboxes by chain. A request of a chain goes to the thread that waits
/// on the link it came by (the caller it answers to), else to the latest
/// waiting thread of the chain (the deepest point of the chain).
fn waiting() -> &'static Mutex<HashMap<u64, Vec<Arc<Inbox>>>> {
    static WAITING: OnceLock<Mutex<HashMap<u64, Vec<Arc<Inbox>>>>> = OnceLock::new();
    WAITING.get_or_init(Default::default)
}

/// A thread's registrations in [`waiting`]; its own chain's is removed
/// when the thread ends.
#[derive(Default)]
struct Registrations {
    own: Option<(u64, Arc<Inbox>)>,
    /// Other chains (of requests the thread runs), with their holds.
    others: Vec<(u64, usize)>,
}

impl Registrations {
    /// Registers the inbox under `chain` (once), holding it.
    fn hold(&mut self, chain: u64, own: u64, inbox: &Arc<Inbox>) {
        if chain == own {
            if self.own.is_none() {
                register(chain, inbox);
                self.own = Some((chain, inbox.clone()));
            }
            return;
        }
        match self.others.iter_mut().find(|(c, _)| *c == chain) {
            Some((_, holds)) => *holds += 1,
            None => {
                register(chain, inbox);
                self.others.push((chain, 1));
            }
        }
    }

    /// Lets a hold of `chain` go; a chain not its own is unregistered
    /// with its last hold.
    fn release(&mut self, chain: u64, inbox: &Arc<Inbox>) {
        let Some(at) = self.others.iter().position(|(c, _)| *c == chain) else {
            return;
        };
        self.others[at].1 -= 1;
        if self.others[at].1 == 0 {
            self.others.swap_remove(at);
            unregister(chain, inbox);
        }
    }
}

impl Drop for Registrations {
    fn drop(&mut self) {
        if let Some((chain, inbox)) = self.own.take() {
            unregister(chain, &inbox);
        }
    }
}

fn register(chain: u64, inbox: &Arc<Inbox>) {
    lock(waiting())
        .entry(chain)
        .or_default()
        .push(inbox.clone());
}

fn unregister(chain: u64, inbox: &Arc<Inbox>) {
    let mut all = lock(waiting());
    if let Some(list) = all.get_mut(&chain) {
        if let Some(at) = list.iter().rposition(|i| Arc::ptr_eq(i, inbox)) {
            list.remove(at);
        }
        if list.is_empty() {
            all.remove(&chain);
        }
    }
}

/// A thread waiting for a reply on a link: requests of its chain come to
/// its inbox until dropped. A sync call registers before its request is
/// sent (a callback can be quicker than the caller's next step) and holds
/// the registration until it is answered, so the guard may travel with the
/// call's future (it must be dropped in the thread that made it).
pub(crate) struct Waiting {
    chain: u64,
    inbox: Arc<Inbox>,
}

impl Waiting {
    /// Registers the calling thread under its current chain, as waiting
    /// on link `link`. Cheap: the thread's own chain is registered once
    /// for its life; a wait only marks the inbox.
    pub(crate) fn here(link: u64) -> Waiting {
        let chain = current();
        let inbox = INBOX.with(Arc::clone);
        let own = OWN_CHAIN.with(|c| *c);
        REGISTERED.with(|r| r.borrow_mut().hold(chain, own, &inbox));
        lock(&inbox.state).waits.push(link);
        Waiting { chain, inbox }
    }

    /// The next request of this thread's chain, if any.
    pub(crate) fn next_job(&self) -> Option<Job> {
        self.inbox.pop()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let leftovers: Vec<Job> = {
            let mut st = lock(&self.inbox.state);
            st.waits.pop();
            if st.waits.is_empty() {
                self.inbox.take_all(&mut st)
            } else {
                Vec::new()
            }
        };
        // Requests that came too late for this wait run on the pool.
        leftovers.into_iter().for_each(super::executor::pool_push);
        let _ = REGISTERED.try_with(|r| r.borrow_mut().release(self.chain, &self.inbox));
    }
}

/// Hands `job` to the thread waiting in its chain; gives it back when
/// no thread of this process waits in that chain.
pub(crate) fn offer(job: Job) -> Option<Job> {
    let chain = job.request.chain;
    if chain == 0 {
        return Some(job);
    }
    let inboxes: Vec<Arc<Inbox>> = match lock(waiting()).get(&chain) {
        Some(list) => list.clone(),
        None => return Some(job),
    };
    let mut job = job;
    for on_link in [true, false] {
        for inbox in inboxes.iter().rev() {
            match inbox.offer(job, on_link) {
                None => return None,
                Some(back) => job = back,
            }
        }
    }
    Some(job)
}

/// Drops request `req_id` of `link` from whichever inbox holds it.
pub(crate) fn cancel(link: u64, req_id: i64) -> bool {
    let inboxes: Vec<Arc<Inbox>> = lock(waiting()).values().flatten().cloned().collect();
    inboxes.iter().any(|i| i.cancel(link, req_id))
}
