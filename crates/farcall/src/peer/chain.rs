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
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
    static INBOX: Arc<Inbox> = Arc::new(Inbox {
        jobs: Mutex::new(VecDeque::new()),
        signal: Signal::current(),
        holds: Mutex::new(0),
    });
}

/// The chain a request sent from this thread belongs to.
pub(crate) fn current() -> u64 {
    CONTEXT
        .with(|c| c.borrow().as_ref().map(|c| c.chain))
        .unwrap_or_else(|| OWN_CHAIN.with(|c| *c))
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
    jobs: Mutex<VecDeque<Job>>,
    signal: Arc<Signal>,
    /// How many [`Waiting`]s hold it registered (counted under the lock
    /// of the registry).
    holds: Mutex<usize>,
}

impl Inbox {
    /// The next request for this thread, if any.
    pub(crate) fn pop(&self) -> Option<Job> {
        lock(&self.jobs).pop_front()
    }

    /// Drops the request `req_id` of `link` if it has not started; true
    /// when it was there.
    fn cancel(&self, link: u64, req_id: i64) -> bool {
        let mut jobs = lock(&self.jobs);
        let before = jobs.len();
        jobs.retain(|j| !(j.link.id() == link && j.request.req_id == req_id));
        jobs.len() != before
    }
}

/// A waiting thread's inbox and the link it waits on.
type Waiter = (Arc<Inbox>, u64);

/// Waiting threads by chain. A request of a chain goes to the thread that
/// waits on the link it came by (the caller it answers to), else to the
/// latest waiter of the chain (the deepest point of the chain).
fn waiting() -> &'static Mutex<HashMap<u64, Vec<Waiter>>> {
    static WAITING: OnceLock<Mutex<HashMap<u64, Vec<Waiter>>>> = OnceLock::new();
    WAITING.get_or_init(Default::default)
}

/// A thread waiting for a reply: requests of its chain come to its inbox
/// until dropped. Nested waits of one thread register once. A sync call
/// registers before its request is sent (a callback can be quicker than
/// the caller's next step) and holds the registration until it is
/// answered, so the guard may travel with the call's future.
pub(crate) struct Waiting {
    chain: u64,
    inbox: Arc<Inbox>,
    link: u64,
}

impl Waiting {
    /// Registers the calling thread under its current chain, as waiting
    /// on link `link`.
    pub(crate) fn here(link: u64) -> Waiting {
        let chain = current();
        let inbox = INBOX.with(Arc::clone);
        let mut all = lock(waiting());
        all.entry(chain).or_default().push((inbox.clone(), link));
        *lock(&inbox.holds) += 1;
        drop(all);
        Waiting { chain, inbox, link }
    }

    /// The next request of this thread's chain, if any.
    pub(crate) fn next_job(&self) -> Option<Job> {
        self.inbox.pop()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut all = lock(waiting());
        if let Some(list) = all.get_mut(&self.chain) {
            let mine = |(i, l): &Waiter| Arc::ptr_eq(i, &self.inbox) && *l == self.link;
            if let Some(at) = list.iter().rposition(mine) {
                list.remove(at);
            }
            if list.is_empty() {
                all.remove(&self.chain);
            }
        }
        let mut holds = lock(&self.inbox.holds);
        *holds -= 1;
        if *holds > 0 {
            return;
        }
        drop(holds);
        drop(all);
        // Requests that came too late for this wait run on the pool.
        while let Some(job) = self.inbox.pop() {
            super::executor::pool_push(job);
        }
    }
}

/// Hands `job` to the thread waiting in its chain; gives it back when
/// no thread of this process waits in that chain.
pub(crate) fn offer(job: Job) -> Option<Job> {
    let chain = job.request.chain;
    if chain == 0 {
        return Some(job);
    }
    // Pushed under the map's lock: once a wait has unregistered (under
    // that lock too), nothing more lands in its inbox.
    let all = lock(waiting());
    let Some(list) = all.get(&chain) else {
        return Some(job);
    };
    let link = job.link.id();
    let Some((inbox, _)) = list.iter().rev().find(|(_, l)| *l == link).or(list.last()) else {
        return Some(job);
    };
    lock(&inbox.jobs).push_back(job);
    inbox.signal.notify();
    None
}

/// Drops request `req_id` of `link` from whichever inbox holds it.
pub(crate) fn cancel(link: u64, req_id: i64) -> bool {
    let inboxes: Vec<Arc<Inbox>> = lock(waiting())
        .values()
        .flatten()
        .map(|(i, _)| i.clone())
        .collect();
    inboxes.iter().any(|i| i.cancel(link, req_id))
}
