//! A server's timers (pyacq's `start_timer`, and its own sweeps), run by
//! its thread between requests.
//!
//! The server asks after every poll whether one is due; the answer is
//! kept in an atomic so that asking costs a clock read, not a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::sync::lock;

struct Timer {
    interval: Duration,
    due: Instant,
    callback: Box<dyn FnMut() + Send>,
}

/// Callbacks to run every so often.
#[derive(Default)]
pub(crate) struct Timers {
    list: Mutex<Vec<Timer>>,
    /// When the earliest is due, in nanoseconds since [`base`]; 0 when
    /// there is none.
    next_due: AtomicU64,
}

/// The instant timer dues are counted from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn nanos(at: Instant) -> u64 {
    // +1: never 0 (which means "none"); saturating: far dues stay far.
    u64::try_from(at.saturating_duration_since(base()).as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

impl Timers {
    /// Runs `callback` every `interval`, first `interval` from now.
    pub(crate) fn add(&self, interval: Duration, callback: Box<dyn FnMut() + Send>) {
        let mut list = lock(&self.list);
        list.push(Timer {
            interval,
            due: Instant::now() + interval,
            callback,
        });
        self.note_next(&list);
    }

    /// Shortens a poll timeout so that it ends when the next timer is due.
    pub(crate) fn bound(&self, timeout: Option<Duration>) -> Option<Duration> {
        let next = self.next_due.load(Ordering::Acquire);
        if next == 0 {
            return timeout;
        }
        let until = Duration::from_nanos(next.saturating_sub(nanos(Instant::now())));
        Some(timeout.map_or(until, |t| t.min(until)))
    }

    /// Runs the timers that are due. Callbacks run without the lock, so
    /// one may start another timer.
    pub(crate) fn run_due(&self) {
        let next = self.next_due.load(Ordering::Acquire);
        let now = Instant::now();
        if next == 0 || nanos(now) < next {
            return;
        }
        let due: Vec<Timer> = {
            let mut list = lock(&self.list);
            let (due, waiting) = std::mem::take(&mut *list)
                .into_iter()
                .partition(|t| t.due <= now);
            *list = waiting;
            self.note_next(&list);
            due
        };
        for mut timer in due {
            (timer.callback)();
            timer.due = now + timer.interval;
            let mut list = lock(&self.list);
            list.push(timer);
            self.note_next(&list);
        }
    }

    fn note_next(&self, list: &[Timer]) {
        let next = list.iter().map(|t| nanos(t.due)).min().unwrap_or(0);
        self.next_due.store(next, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn a_timer_runs_when_due_and_bounds_the_poll() {
        let timers = Timers::default();
        assert_eq!(timers.bound(None), None, "no timer, no bound");
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let interval = Duration::from_millis(20);
        timers.add(
            interval,
            Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let bound = timers.bound(Some(Duration::from_secs(5))).unwrap();
        assert!(bound <= interval, "the poll ends when the timer is due");
        timers.run_due();
        assert_eq!(runs.load(Ordering::SeqCst), 0, "not due yet");
        std::thread::sleep(interval + Duration::from_millis(5));
        timers.run_due();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(
            timers.bound(None).unwrap() > Duration::from_millis(10),
            "due again later"
        );
    }
}
