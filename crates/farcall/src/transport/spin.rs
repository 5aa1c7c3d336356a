//! Polling briefly before sleeping, when an answer is due soon.
//!
//! A thread that sleeps in `poll(2)` pays for its wake-up: on virtual
//! machines an idle vCPU woken from another CPU takes 10 to 90 µs to come
//! back, several times the cost of the call itself, and even on one CPU
//! sleeping and being woken costs more than handing the CPU over. A waiter
//! that expects an answer soon (a client that just sent a request, a
//! server that just replied) therefore first polls without sleeping for a
//! short budget, yielding the CPU between polls so that a peer on the same
//! CPU runs at once. When the budget passes it sleeps as before, so an idle
//! process burns nothing; a busy one spends at most the budget per wait.
//!
//! The budget is [`DEFAULT_BUDGET`], or `FARCALL_SPIN_US` microseconds
//! from the environment, or [`set_budget`]; zero turns spinning off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::Result;

/// How long a waiter polls before it sleeps, unless `FARCALL_SPIN_US` says
/// otherwise: longer than a short call's round trip on another CPU, short
/// enough to be lost in the noise when no answer comes.
pub const DEFAULT_BUDGET: Duration = Duration::from_micros(50);

/// The budget for a wait that may last until `deadline`, or `None` when
/// spinning is off or the deadline is already here.
pub fn budget(deadline: Option<Instant>) -> Option<Duration> {
    let budget = configured()?;
    let budget = match deadline {
        Some(d) => budget.min(d.saturating_duration_since(Instant::now())),
        None => budget,
    };
    (!budget.is_zero()).then_some(budget)
}

/// Calls `ready` (a poll that does not sleep) until it returns true or
/// `budget` passes, yielding the CPU in between; true when it became ready.
/// With no budget it does nothing and says false: the caller sleeps.
pub fn until(budget: Option<Duration>, mut ready: impl FnMut() -> Result<bool>) -> Result<bool> {
    let Some(budget) = budget else {
        return Ok(false);
    };
    let start = Instant::now();
    loop {
        if ready()? {
            return Ok(true);
        }
        if start.elapsed() >= budget {
            return Ok(false);
        }
        std::thread::yield_now();
    }
}

/// The budget in microseconds; `UNSET` until read from the environment.
static BUDGET_US: AtomicU64 = AtomicU64::new(UNSET);
const UNSET: u64 = u64::MAX;

/// Sets how long waiters poll before they sleep, for the whole process
/// (`Duration::ZERO` turns spinning off), overriding `FARCALL_SPIN_US`.
pub fn set_budget(budget: Duration) {
    BUDGET_US.store(microseconds(budget.as_micros()), Ordering::Relaxed);
}

/// A budget in microseconds as stored: anything but `UNSET`.
fn microseconds(us: u128) -> u64 {
    us.min(u128::from(UNSET - 1)) as u64
}

/// The configured budget; `None` when spinning is off.
fn configured() -> Option<Duration> {
    let mut us = BUDGET_US.load(Ordering::Relaxed);
    if us == UNSET {
        us = from_environment();
        // A concurrent set_budget wins over the environment.
        let _ = BUDGET_US.compare_exchange(UNSET, us, Ordering::Relaxed, Ordering::Relaxed);
        us = BUDGET_US.load(Ordering::Relaxed);
    }
    (us > 0).then(|| Duration::from_micros(us))
}

/// `FARCALL_SPIN_US`, or the default budget.
fn from_environment() -> u64 {
    let default = DEFAULT_BUDGET.as_micros() as u64;
    match std::env::var("FARCALL_SPIN_US") {
        // Set but empty counts as unset, as shells make it easy to do.
        Ok(v) if v.trim().is_empty() => default,
        Ok(v) => v
            .trim()
            .parse::<u128>()
            .map(microseconds)
            .unwrap_or_else(|_| {
                log::warn!(
                    "FARCALL_SPIN_US={v:?} is not a number of microseconds; using {default}"
                );
                default
            }),
        Err(_) => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_stops_when_ready_or_after_the_budget() {
        let mut calls = 0;
        assert!(until(Some(Duration::from_secs(5)), || {
            calls += 1;
            Ok(calls == 3)
        })
        .unwrap());
        assert_eq!(calls, 3);
        let t = Instant::now();
        assert!(!until(Some(Duration::from_millis(2)), || Ok(false)).unwrap());
        assert!(!until(None, || panic!("no budget, no poll")).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(2));
    }

    #[test]
    fn a_deadline_bounds_the_budget() {
        assert_eq!(budget(Some(Instant::now())), None);
        if let Some(b) = budget(Some(Instant::now() + Duration::from_micros(10))) {
            assert!(b <= Duration::from_micros(10));
        }
    }
}
