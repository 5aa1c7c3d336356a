//! Who runs a request that arrived on a link.
//!
//! A link hands every request to its [`Executor`]. An RPCServer's links
//! have the server's queue, run in the server's thread in order (pyacq's
//! rule; see `crate::server`). Other links have the [`LocalExecutor`]: a
//! request of a call chain whose caller waits in this process runs in
//! that waiting thread (see [`super::chain`]); any other runs on a
//! bounded pool, so that many callers through one link really run at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::signal::Signal;
use super::{chain, Link};
use crate::codec::Format;
use crate::error::{Error, Result};
use crate::host::Caller;
use crate::protocol::{Command, Request};
use crate::sync::lock;
use crate::value::Value;

/// A request and the link it came by.
pub struct Job {
    pub(crate) link: Arc<Link>,
    pub(crate) request: Request,
}

/// Runs the requests of some links.
pub trait Executor: Send + Sync {
    /// Takes a request that arrived on a link (never runs it in place:
    /// this is called by whoever reads the link, which runs no user code).
    fn push(&self, job: Job);

    /// The caller gave up on request `req_id` of link `link`: drop it if it
    /// has not started.
    fn cancel(&self, link: u64, req_id: i64);

    /// True while a thread of the executor reads its links itself (the
    /// I/O thread then stays away from them).
    fn attended(&self) -> bool {
        false
    }
}

/// What a job's request turned out to be, once run.
pub(crate) struct Outcome {
    /// The request asked to close (a server: itself; a link: the link).
    pub(crate) close: bool,
}

impl Job {
    /// The link the request came by.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// The request id.
    pub fn req_id(&self) -> i64 {
        self.request.req_id
    }

    /// Runs the request on its link's host, in this thread, and queues the
    /// reply (written at once with `flush`, else by the executor later).
    pub(crate) fn run(self, flush: bool) -> Outcome {
        let Job { link, mut request } = self;
        let _context = chain::Running::enter(&link, request.chain);
        let (format, result, close) = execute(&link, &mut request);
        if request.wants_reply() {
            link.reply(format, request.req_id, result, flush);
        } else if let Err(e) = result {
            // One that raised was logged by the host; anything else is news.
            if !matches!(e, Error::Remote { .. }) {
                log::error!(
                    "one-way '{}' from {} failed: {e}",
                    String::from_utf8_lossy(&request.action),
                    link.describe()
                );
            }
        }
        Outcome { close }
    }
}

/// Runs one request: its serializer, action and options checked, then
/// the command on the link's host. An unknown serializer is answered in
/// msgpack, pyacq's default.
fn execute(link: &Arc<Link>, request: &mut Request) -> (Format, Result<Value>, bool) {
    let format = match request.format() {
        Ok(f) => f,
        Err(e) => return (Format::Msgpack, Err(e), false),
    };
    let command = Command::parse(request, format);
    let return_type = request.return_type();
    let result = match (command, return_type) {
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(Command::Close(_)), Ok(_)) => return (format, Ok(Value::Bool(true)), true),
        (Ok(Command::Hello(_) | Command::Auth(_) | Command::Cancel(_)), Ok(_)) => {
            Err(Error::Protocol(
                "handshake actions are for ZeroMQ peers; native connections say hello first".into(),
            ))
        }
        (Ok(command), Ok(return_type)) => {
            let caller = Caller {
                describe: &|| link.describe().to_string(),
                wants_reply: request.wants_reply(),
            };
            link.host().run(command, return_type, &caller)
        }
    };
    (format, result, false)
}

/// The executor of links no server owns: chain, else pool.
pub struct LocalExecutor;

impl LocalExecutor {
    /// The one instance.
    pub fn shared() -> Arc<dyn Executor> {
        static SHARED: OnceLock<Arc<dyn Executor>> = OnceLock::new();
        SHARED.get_or_init(|| Arc::new(LocalExecutor)).clone()
    }
}

impl Executor for LocalExecutor {
    fn push(&self, job: Job) {
        if let Some(job) = chain::offer(job) {
            pool_push(job);
        }
    }

    fn cancel(&self, link: u64, req_id: i64) {
        if !chain::cancel(link, req_id) {
            pool().cancel(link, req_id);
        }
    }
}

/// Runs a job where nothing else waits for it: closing on `close` means
/// closing the link.
pub(crate) fn run_detached(job: Job) {
    let link = job.link.clone();
    if job.run(true).close {
        link.close("the peer asked to close");
    }
}

// ---- the pool -------------------------------------------------------------

/// Most threads the pool runs at once; requests beyond wait their turn.
pub const MAX_POOL_THREADS: usize = 64;
/// How long a pool thread reads the link of its last job, for the next
/// request, before it waits on the pool like any idle thread.
const LINGER: Duration = Duration::from_secs(1);
/// A pool thread with nothing to do for this long exits.
const POOL_IDLE: Duration = Duration::from_secs(10);

struct Pool {
    state: Mutex<PoolState>,
    ready: Condvar,
    /// How many jobs wait (looked at without the lock while spinning).
    queued: AtomicUsize,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    idle: usize,
    /// Idle threads already told to wake (not yet counted out of `idle`):
    /// a burst of jobs must wake that many distinct threads, or start new
    /// ones, not notify the same sleeper again.
    woken: usize,
    /// Threads that just ran a job and look for the next one awake (see
    /// `Pool::linger`).
    spinning: usize,
    /// The signals of those threads, which may sleep on their link.
    lingering: Vec<Arc<Signal>>,
    threads: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(PoolState::default()),
        ready: Condvar::new(),
        queued: AtomicUsize::new(0),
    })
}

/// Queues `job` for a pool thread, starting one if none is idle.
pub(crate) fn pool_push(job: Job) {
    let shared = pool();
    let mut st = lock(&shared.state);
    st.jobs.push_back(job);
    shared.queued.store(st.jobs.len(), Ordering::Release);
    if st.jobs.len() <= st.spinning {
        // A thread awake takes it (each takes one): no wake-up, no new
        // thread. Enough of those reading a link asleep are told (not the
        // one pushing, if it is one: it takes a job next).
        let pushing = usize::from(st.lingering.iter().any(|s| s.is_current()));
        let wanted = st.jobs.len().saturating_sub(pushing);
        for s in st.lingering.iter().filter(|s| !s.is_current()).take(wanted) {
            s.notify();
        }
        return;
    }
    if st.idle > st.woken {
        st.woken += 1;
        drop(st);
        shared.ready.notify_one();
        return;
    }
    if st.threads >= MAX_POOL_THREADS {
        return;
    }
    st.threads += 1;
    drop(st);
    let spawned = std::thread::Builder::new()
        .name("farcall-pool".into())
        .spawn(|| pool().work());
    if spawned.is_err() {
        lock(&shared.state).threads -= 1;
        log::error!("cannot start a farcall pool thread");
    }
}

impl Pool {
    fn work(&self) {
        // The link this thread looks after (runs jobs of, reads for the
        // next one), which the I/O thread then leaves alone.
        let mut attending: Option<Arc<Link>> = None;
        let mut st = lock(&self.state);
        loop {
            if let Some(job) = st.jobs.pop_front() {
                self.queued.store(st.jobs.len(), Ordering::Release);
                drop(st);
                let link = job.link.clone();
                link.attend();
                if !attending.as_ref().is_some_and(|a| Arc::ptr_eq(a, &link)) {
                    if let Some(previous) = attending.replace(link.clone()) {
                        Pool::leave(&previous);
                    }
                    super::io::leave_to_pool(&link);
                }
                run_detached(job);
                self.linger(&link);
                st = lock(&self.state);
                continue;
            }
            if let Some(previous) = attending.take() {
                drop(st);
                Pool::leave(&previous);
                st = lock(&self.state);
                continue; // a job may have come meanwhile
            }
            st.idle += 1;
            let (guard, timeout) = self
                .ready
                .wait_timeout(st, POOL_IDLE)
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
            st.idle -= 1;
            // Woken or not (a timeout), this thread looks at the queue now.
            st.woken = st.woken.saturating_sub(1);
            if timeout.timed_out() && st.jobs.is_empty() {
                st.threads -= 1;
                return;
            }
        }
    }

    /// This thread stops looking after `link`: the I/O thread, which
    /// stayed away meanwhile, watches it again from now on.
    fn leave(link: &Link) {
        link.unattend();
        super::io::wanted(link);
    }

    /// After a job of `link`: the caller's next request is often on its
    /// way (a loop of calls), so for up to [`LINGER`] this thread reads
    /// the link itself (spinning briefly, then asleep on the channel) and
    /// takes what it routes, instead of going to sleep on the pool and
    /// being woken (two wake-ups per call: the I/O thread's and ours). It
    /// counts as awake meanwhile: a job of another link wakes it.
    fn linger(&self, link: &Arc<Link>) {
        if link.is_dead() || self.queued.load(Ordering::Acquire) > 0 {
            return;
        }
        let signal = Signal::current();
        {
            let mut st = lock(&self.state);
            st.spinning += 1;
            st.lingering.push(signal.clone());
        }
        link.read_while_idle(Instant::now() + LINGER, || {
            self.queued.load(Ordering::Acquire) > 0
        });
        // Whatever came meanwhile, this thread looks at the queue next.
        let mut st = lock(&self.state);
        st.spinning -= 1;
        st.lingering.retain(|s| !Arc::ptr_eq(s, &signal));
    }

    fn cancel(&self, link: u64, req_id: i64) {
        let mut st = lock(&self.state);
        st.jobs
            .retain(|j| !(j.link.id() == link && j.request.req_id == req_id));
        self.queued.store(st.jobs.len(), Ordering::Release);
    }
}
