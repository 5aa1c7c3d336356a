//! A server's queue: the executor of its links. Requests run in the
//! server's thread, in the order they arrived (pyacq's rule), whoever
//! read them: the server thread itself, a caller waiting on one of its
//! links, or the I/O thread while the server thread is busy.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::peer::{Executor, Job};
use crate::protocol::Request;
use crate::sync::lock;

/// How long the server thread may run requests before the I/O thread
/// reads its links (and answers their heartbeats) in its place.
const GRACE: Duration = Duration::from_millis(200);

/// One request for the server.
pub(crate) enum ServerJob {
    /// From a native link.
    Link(Job),
    /// From a ZeroMQ peer (its routing id).
    Zmq { identity: Bytes, request: Request },
}

/// The requests waiting for the server's thread.
pub(crate) struct Queue {
    jobs: Mutex<VecDeque<ServerJob>>,
    len: AtomicUsize,
    waker: Arc<mio::Waker>,
    /// The server thread is in its poll (it reads its links itself).
    polling: AtomicBool,
    /// When the server thread last left its poll (`coarse_nanos`).
    left: AtomicU64,
}

thread_local! {
    /// The queue whose server this thread is serving now: pushing to it
    /// needs no wake-up, the thread runs the queue next.
    static SERVING: Cell<usize> = const { Cell::new(0) };
}

impl Queue {
    /// A queue whose pushes wake `waker`'s poll.
    pub(crate) fn new(waker: Arc<mio::Waker>) -> Arc<Queue> {
        Arc::new(Queue {
            jobs: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            waker,
            polling: AtomicBool::new(false),
            left: AtomicU64::new(crate::peer::coarse_nanos()),
        })
    }

    /// Adds a request.
    pub(crate) fn push_job(&self, job: ServerJob) {
        {
            // Counted under the lock: a pop never sees a job uncounted.
            let mut jobs = lock(&self.jobs);
            jobs.push_back(job);
            self.len.fetch_add(1, Ordering::Release);
        }
        if SERVING.with(Cell::get) != self as *const Queue as usize {
            let _ = self.waker.wake();
        }
    }

    /// Puts a request back at the head of the queue.
    pub(crate) fn push_front(&self, job: ServerJob) {
        let mut jobs = lock(&self.jobs);
        jobs.push_front(job);
        self.len.fetch_add(1, Ordering::Release);
    }

    /// The next request, in arrival order.
    pub(crate) fn pop(&self) -> Option<ServerJob> {
        // The server looks after every poll, mostly to find nothing.
        if !self.has_jobs() {
            return None;
        }
        let mut jobs = lock(&self.jobs);
        let job = jobs.pop_front();
        if job.is_some() {
            self.len.fetch_sub(1, Ordering::Release);
        }
        job
    }

    /// True when requests wait.
    pub(crate) fn has_jobs(&self) -> bool {
        self.len.load(Ordering::Acquire) > 0
    }

    /// Drops every queued request matching `matches` (a cancelled one).
    pub(crate) fn drop_where(&self, matches: impl Fn(&ServerJob) -> bool) {
        let mut jobs = lock(&self.jobs);
        let before = jobs.len();
        jobs.retain(|j| !matches(j));
        self.len.fetch_sub(before - jobs.len(), Ordering::Release);
    }

    /// Marks the calling thread as the one serving this queue (until the
    /// guard drops), and as polling (reading its links) or not.
    pub(crate) fn serving(&self) -> Serving<'_> {
        let previous = SERVING.with(|s| s.replace(self as *const Queue as usize));
        Serving {
            queue: self,
            previous,
        }
    }

    /// The server thread enters (`true`) or leaves its poll.
    pub(crate) fn set_polling(&self, polling: bool) {
        if !polling {
            self.left
                .store(crate::peer::coarse_nanos(), Ordering::Relaxed);
        }
        self.polling.store(polling, Ordering::SeqCst);
    }
}

/// While alive, the calling thread serves the queue.
pub(crate) struct Serving<'a> {
    queue: &'a Queue,
    previous: usize,
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        SERVING.with(|s| s.set(self.previous));
        self.queue.set_polling(false);
    }
}

impl Executor for Queue {
    fn push(&self, job: Job) {
        self.push_job(ServerJob::Link(job));
    }

    fn cancel(&self, link: u64, req_id: i64) {
        self.drop_where(|j| {
            matches!(j, ServerJob::Link(job) if job.link().id() == link && job.req_id() == req_id)
        });
    }

    fn attended(&self) -> bool {
        if self.polling.load(Ordering::SeqCst) {
            return true;
        }
        let busy = crate::peer::coarse_nanos().saturating_sub(self.left.load(Ordering::Relaxed));
        Duration::from_nanos(busy) < GRACE
    }
}
