//! A Rust program and a Python child logging to one place: the Rust
//! program runs a log server that prints every record, forwards its own
//! `log` records there, and spawns a Python worker whose records, prints
//! and stderr arrive there too (docs/logging.md).
//!
//! Run after `bash scripts/setup.sh`:
//! `FARCALL_PYTHON=.venv/bin/python cargo run -p farcall --example logs`

use std::time::Duration;

use farcall::log::{self as flog, LogServer};
use farcall::{Proxy, SpawnOptions, Value};

fn main() -> farcall::Result<()> {
    flog::set_process_name("rust-main");
    // SAFETY: isatty only inspects the descriptor.
    let color = unsafe { libc::isatty(2) } == 1;
    let style = flog::LineStyle::new();
    let server = LogServer::bind(flog::DEFAULT_ADDRESS, move |record| {
        eprintln!("{}", style.record_line(&record, color));
    })?;
    // This program's own `log` records go to the same server.
    flog::install(log::LevelFilter::Info);
    flog::set_logger_address(server.address())?;
    log::info!("log server at {}", server.address());

    let worker = farcall::ProcessSpawner::spawn(
        SpawnOptions::python()
            .name("py-worker")
            .extra(serde_json::json!({"log_addr": server.address(), "log_level": "INFO"})),
    )?;
    let client = worker.client();
    let logging = Proxy::adopt(client.import("logging")?)?;
    let logger = Proxy::adopt(logging.call_method("getLogger", vec![Value::from("worker")])?)?;
    logger.call_method(
        "warning",
        vec![Value::from("queue at %d%%"), Value::from(93)],
    )?;
    let builtins = Proxy::adopt(client.import("builtins")?)?;
    builtins.call_method("print", vec![Value::from("hello from Python's print()")])?;
    log::warn!(target: "device", "over temperature: {:.1} C", 41.5);

    worker.stop(Duration::from_secs(3))?;
    // Let the last records of both processes arrive and print.
    flog::shutdown(Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}
