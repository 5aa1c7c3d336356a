//! Spinning before sleeping (transport/spin.rs): waits still end on time,
//! and a process with nothing to do burns no CPU.
//!
//! A single test: its CPU-time check reads the whole process's usage, so
//! nothing else may run in this binary meanwhile.

mod support;

use std::time::{Duration, Instant};

use farcall::transport::spin;
use farcall::{Client, Error, Proxy, Value};

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[test]
fn spinning_ends_at_the_deadline_and_idle_ends_spinning() {
    let running = support::serve("unix://*");
    let client = Client::connect(&running.address()).unwrap();
    let counter = Proxy::adopt(client.get_item("counter").unwrap()).unwrap();

    // A budget far longer than the call's timeout: the timeout still wins.
    spin::set_budget(Duration::from_secs(5));
    let slow = counter.with_timeout(Duration::from_millis(100));
    let t = Instant::now();
    let err = slow
        .call_method("sleep_ms", vec![Value::Int(700)])
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );

    // With the default budget, a burst of calls, then nothing: once both
    // sides have found nothing to wait for, they sleep.
    spin::set_budget(spin::DEFAULT_BUDGET);
    std::thread::sleep(Duration::from_millis(800)); // the slow call ends
    for i in 0..200 {
        assert_eq!(
            counter.call_method("add", vec![Value::Int(1)]).unwrap(),
            Value::Int(i + 1)
        );
    }
    let before = cpu_time();
    std::thread::sleep(Duration::from_millis(500));
    let burnt = cpu_time() - before;
    assert!(
        burnt < Duration::from_millis(50),
        "idle for 500 ms burnt {burnt:?}"
    );

    // Spinning off: calls work as before.
    spin::set_budget(Duration::ZERO);
    assert_eq!(
        counter.call_method("add", vec![Value::Int(1)]).unwrap(),
        Value::Int(201)
    );
}
