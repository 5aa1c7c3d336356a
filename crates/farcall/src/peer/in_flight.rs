//! The in-flight table of a link: every call sent and not yet answered,
//! with its deadline and whoever waits for it.
//!
//! The engine enforces deadlines whether or not anybody waits (the I/O
//! thread expires them); a call that is cancelled or whose future is
//! dropped is removed (the peer is told separately); a link that dies
//! fails every pending call at once. Nothing here runs a waker or wakes a
//! thread: the table hands back [`Wakeups`] for the caller to run once
//! it holds no lock and no role.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use super::signal::Signal;
use crate::error::{Error, Result};
use crate::value::Value;

/// One pending call.
struct Slot {
    outcome: Option<Result<Value>>,
    /// A thread blocked waiting for this call.
    waiter: Option<Arc<Signal>>,
    /// An async task waiting for it.
    waker: Option<Waker>,
    /// When the call times out, if the table enforces it.
    deadline: Option<Instant>,
    /// The call's timeout, for the error.
    timeout: Duration,
}

/// Who to wake once no lock or role is held. The first thread is kept
/// inline: a sync call's own reply wakes one, and allocating for it on
/// every call would cost more than the rest of the bookkeeping.
#[derive(Default)]
pub(crate) struct Wakeups {
    first: Option<Arc<Signal>>,
    signals: Vec<Arc<Signal>>,
    wakers: Vec<Waker>,
}

impl Wakeups {
    fn add(&mut self, waiter: Option<Arc<Signal>>, waker: Option<Waker>) {
        if let Some(s) = waiter {
            self.signal(s);
        }
        self.wakers.extend(waker);
    }

    /// Adds a thread to wake.
    pub(crate) fn signal(&mut self, signal: Arc<Signal>) {
        match self.first {
            None => self.first = Some(signal),
            Some(_) => self.signals.push(signal),
        }
    }

    /// True when there is nobody to wake.
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none() && self.wakers.is_empty()
    }

    /// Wakes everyone: threads first (cheap), then tasks (a waker may run
    /// user code). The calling thread is not told: it routed the replies
    /// itself and looks at its calls next, and a notice to itself would
    /// cut its next wait short for nothing.
    pub(crate) fn run(self) {
        self.first
            .iter()
            .chain(&self.signals)
            .filter(|s| !s.is_current())
            .for_each(|s| s.notify());
        self.wakers.into_iter().for_each(Waker::wake);
    }
}

/// What a waiter finds when it looks at its call.
pub(crate) enum Status {
    /// Not answered yet.
    Pending,
    /// Answered (or failed); the outcome is taken out of the table.
    Done(Result<Value>),
    /// Not in the table: already taken, or never sent.
    Unknown,
}

/// The calls of one link.
#[derive(Default)]
pub(crate) struct InFlight {
    slots: HashMap<i64, Slot, BuildHasherDefault<IdHasher>>,
    /// Deadlines to enforce, earliest first; entries of calls that are
    /// gone are skipped when met (and swept when they pile up).
    deadlines: BinaryHeap<Reverse<(Instant, i64)>>,
    /// Threads waiting on this link without the reading role, woken when
    /// the role is free so that one of them reads.
    pub(crate) sleepers: Vec<Arc<Signal>>,
    /// Why the link is dead, once it is.
    dead: Option<String>,
    /// Unanswered calls an async task waits for.
    tasks: usize,
}

impl InFlight {
    /// True when an async task waits for some call.
    pub(crate) fn has_tasks(&self) -> bool {
        self.tasks > 0
    }

    /// Why the link is dead, if it is.
    pub(crate) fn dead(&self) -> Option<&str> {
        self.dead.as_deref()
    }

    /// Registers call `req_id`; with `enforce`, the table fails it at
    /// `now + timeout` (the I/O thread calls [`InFlight::expire`]).
    /// Returns the new deadline when it is the table's earliest.
    pub(crate) fn insert(
        &mut self,
        req_id: i64,
        timeout: Option<Duration>,
        enforce: bool,
    ) -> Result<Option<Instant>> {
        if let Some(why) = &self.dead {
            return Err(Error::Disconnected(why.clone()));
        }
        let deadline = timeout
            .filter(|_| enforce)
            .and_then(|t| Instant::now().checked_add(t));
        self.slots.insert(
            req_id,
            Slot {
                outcome: None,
                waiter: None,
                waker: None,
                deadline,
                timeout: timeout.unwrap_or(Duration::MAX),
            },
        );
        let Some(deadline) = deadline else {
            return Ok(None);
        };
        let earliest = self
            .deadlines
            .peek()
            .is_none_or(|Reverse((d, _))| deadline < *d);
        self.deadlines.push(Reverse((deadline, req_id)));
        if self.deadlines.len() > 1024 && self.deadlines.len() > 2 * self.slots.len() {
            self.sweep();
        }
        Ok(earliest.then_some(deadline))
    }

    /// Stores the outcome of call `req_id`; false when nobody waits for it
    /// any more (it timed out, or was one-way).
    pub(crate) fn complete(
        &mut self,
        req_id: i64,
        outcome: Result<Value>,
        wake: &mut Wakeups,
    ) -> bool {
        let Some(slot) = self.slots.get_mut(&req_id) else {
            return false;
        };
        if slot.outcome.is_some() {
            return false;
        }
        slot.outcome = Some(outcome);
        self.tasks -= usize::from(slot.waker.is_some());
        wake.add(slot.waiter.take(), slot.waker.take());
        true
    }

    /// Looks at call `req_id`, taking its outcome when there is one.
    pub(crate) fn take(&mut self, req_id: i64) -> Status {
        match self.slots.get(&req_id) {
            None => Status::Unknown,
            Some(s) if s.outcome.is_none() => Status::Pending,
            Some(_) => match self.slots.remove(&req_id).and_then(|s| s.outcome) {
                Some(outcome) => Status::Done(outcome),
                None => Status::Unknown,
            },
        }
    }

    /// True when call `req_id` has an outcome waiting (or is unknown).
    pub(crate) fn is_done(&self, req_id: i64) -> bool {
        self.slots.get(&req_id).is_none_or(|s| s.outcome.is_some())
    }

    /// Records the thread that waits for call `req_id`.
    pub(crate) fn set_waiter(&mut self, req_id: i64, waiter: Option<Arc<Signal>>) {
        if let Some(slot) = self.slots.get_mut(&req_id) {
            slot.waiter = waiter;
        }
    }

    /// Records the task that waits for call `req_id`; false when the call
    /// is done already (poll it again).
    pub(crate) fn set_waker(&mut self, req_id: i64, waker: &Waker) -> bool {
        match self.slots.get_mut(&req_id) {
            Some(slot) if slot.outcome.is_none() => {
                if slot.waker.is_none() {
                    self.tasks += 1;
                }
                if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    slot.waker = Some(waker.clone());
                }
                true
            }
            _ => false,
        }
    }

    /// Forgets call `req_id`; true when it was still unanswered (the peer
    /// should be told it need not run it).
    pub(crate) fn forget(&mut self, req_id: i64) -> bool {
        let Some(slot) = self.slots.remove(&req_id) else {
            return false;
        };
        let pending = slot.outcome.is_none();
        self.tasks -= usize::from(pending && slot.waker.is_some());
        pending
    }

    /// Fails the calls whose deadline has passed with a timeout; returns
    /// their ids (to cancel on the peer) and the next deadline.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        wake: &mut Wakeups,
    ) -> (Vec<i64>, Option<Instant>) {
        let mut expired = Vec::new();
        while let Some(Reverse((deadline, req_id))) = self.deadlines.peek().copied() {
            if deadline > now {
                return (expired, Some(deadline));
            }
            self.deadlines.pop();
            let Some(slot) = self.slots.get_mut(&req_id) else {
                continue;
            };
            if slot.outcome.is_some() || slot.deadline != Some(deadline) {
                continue;
            }
            slot.outcome = Some(Err(Error::Timeout(slot.timeout)));
            self.tasks -= usize::from(slot.waker.is_some());
            wake.add(slot.waiter.take(), slot.waker.take());
            expired.push(req_id);
        }
        (expired, None)
    }

    /// Marks the link dead and fails every pending call with
    /// `Disconnected(why)`. Returns false when it was dead already.
    pub(crate) fn fail_all(&mut self, why: &str, wake: &mut Wakeups) -> bool {
        if self.dead.is_some() {
            return false;
        }
        self.dead = Some(why.to_string());
        for slot in self.slots.values_mut() {
            if slot.outcome.is_none() {
                slot.outcome = Some(Err(Error::Disconnected(why.to_string())));
                wake.add(slot.waiter.take(), slot.waker.take());
            }
        }
        self.tasks = 0;
        self.deadlines.clear();
        for s in &self.sleepers {
            wake.signal(s.clone());
        }
        true
    }

    /// Number of calls not yet taken by their caller.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Drops the deadline entries of calls that are gone.
    fn sweep(&mut self) {
        let slots = &self.slots;
        self.deadlines
            .retain(|Reverse((d, id))| slots.get(id).is_some_and(|s| s.deadline == Some(*d)));
    }
}

/// Hashes request ids, which a link numbers itself: SipHash, the default,
/// resists keys chosen by an attacker and costs more than the rest of a
/// lookup; a multiplication spreads sequential ids well enough.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_i64(&mut self, id: i64) {
        self.0 = (id as u64).wrapping_mul(FIBONACCI);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// 2^64 divided by the golden ratio: multiplying by it scatters
/// consecutive integers over all the bits.
const FIBONACCI: u64 = 0x9e37_79b9_7f4a_7c15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_fail_calls_nobody_waits_for() {
        let mut t = InFlight::default();
        let first = t.insert(1, Some(Duration::from_millis(5)), true).unwrap();
        assert!(first.is_some(), "the first deadline is the earliest");
        assert!(t
            .insert(2, Some(Duration::from_secs(60)), true)
            .unwrap()
            .is_none());
        t.insert(3, None, true).unwrap();
        let mut wake = Wakeups::default();
        let (expired, next) = t.expire(Instant::now() + Duration::from_millis(10), &mut wake);
        assert_eq!(expired, vec![1]);
        assert!(next.is_some());
        assert!(matches!(t.take(1), Status::Done(Err(Error::Timeout(_)))));
        assert!(matches!(t.take(2), Status::Pending));
        assert!(t.forget(2));
        assert!(!t.forget(2));
        let mut wake = Wakeups::default();
        assert!(t.fail_all("gone", &mut wake));
        assert!(matches!(
            t.take(3),
            Status::Done(Err(Error::Disconnected(_)))
        ));
        assert!(
            t.insert(4, None, true).is_err(),
            "a dead link takes no calls"
        );
    }

    #[test]
    fn a_late_reply_is_dropped() {
        let mut t = InFlight::default();
        t.insert(1, None, false).unwrap();
        let mut wake = Wakeups::default();
        assert!(t.complete(1, Ok(Value::Int(1)), &mut wake));
        assert!(
            !t.complete(1, Ok(Value::Int(2)), &mut wake),
            "answered once"
        );
        assert!(matches!(t.take(1), Status::Done(Ok(Value::Int(1)))));
        assert!(
            !t.complete(1, Ok(Value::Int(3)), &mut wake),
            "taken: nobody waits"
        );
        assert!(matches!(t.take(1), Status::Unknown));
    }
}
