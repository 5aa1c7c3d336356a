//! A Rust program with a Python worker: spawn `python -m farcall.bootstrap`
//! and drive Python objects through proxies.
//!
//! Run after `bash scripts/setup.sh`:
//! `FARCALL_PYTHON=.venv/bin/python cargo run -p farcall --example python_worker`

use farcall::{Proxy, SpawnOptions, Value};

fn main() -> farcall::Result<()> {
    let worker = farcall::ProcessSpawner::spawn(SpawnOptions::python().name("worker"))?;
    println!(
        "Python worker: pid {} at {}",
        worker.pid(),
        worker.address()
    );
    let client = worker.client();

    // Modules come back as proxies; calls on them run in the worker.
    let math = Proxy::adopt(client.import("math")?)?;
    let root = math.call_method("sqrt", vec![Value::from(2.0)])?;
    println!("math.sqrt(2) = {root:?}");

    let statistics = Proxy::adopt(client.import("statistics")?)?;
    let samples: Vec<Value> = [2.5, 3.5, 4.0, 6.0].into_iter().map(Value::from).collect();
    let mean = statistics.call_method("mean", vec![Value::List(samples)])?;
    println!("statistics.mean(...) = {mean:?}");

    // A Python object that stays in the worker: a deque, driven by proxy.
    let collections = Proxy::adopt(client.import("collections")?)?;
    let deque = Proxy::adopt(collections.call_method("deque", vec![])?)?;
    for x in 1..=3 {
        deque.call_method("append", vec![Value::from(x)])?;
    }
    deque.call_method("appendleft", vec![Value::from(0)])?;
    // Passed back to the worker, the proxy arrives as the deque itself.
    let builtins = Proxy::adopt(client.import("builtins")?)?;
    let items = builtins.call_method("list", vec![Value::from(&deque)])?;
    println!("deque in the worker: {deque:?}, items {items:?}");
    assert_eq!(
        items,
        Value::List((0..=3).map(Value::from).collect()),
        "the deque holds what we appended"
    );

    let status = worker.stop(std::time::Duration::from_secs(3))?;
    println!("worker stopped: {status}");
    Ok(())
}
