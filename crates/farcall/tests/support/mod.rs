//! What the engine and safety tests share: a remote `Counter` and
//! `Pinger`, and servers running in a thread.

#![allow(dead_code)] // each test crate uses part of it

use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use farcall::{Error, Proxy, Server, ServerOptions, Value};

#[farcall::remote]
pub struct Counter {
    pub count: i64,
}

#[farcall::remote]
impl Counter {
    pub fn add(&mut self, x: i64) -> i64 {
        self.count += x;
        self.count
    }

    pub fn sleep_ms(&self, ms: u64) -> i64 {
        thread::sleep(Duration::from_millis(ms));
        self.count
    }

    pub fn fail(&self) -> farcall::Result<i64> {
        Err(Error::exception("ZeroDivisionError", "division by zero"))
    }

    /// Returns a new counter, which stays remote (by proxy).
    pub fn spawn_child(&self) -> Value {
        Value::Object(farcall::object(Counter { count: 100 }))
    }

    /// Calls `value()` on whatever proxy it is given (a third server).
    pub fn call_value(&self, other: Proxy) -> farcall::Result<Value> {
        other.call_method("value", vec![])
    }

    /// Asks `relayer` (on another server) to call `ping` (back here).
    pub fn bounce(&self, relayer: Proxy, ping: Proxy) -> farcall::Result<Value> {
        relayer.call_method("relay", vec![ping.into()])
    }

    /// True when the argument arrived as a local object (a proxy that
    /// came home).
    pub fn is_local(&self, v: Value) -> bool {
        matches!(v, Value::Object(_))
    }

    /// A reply of `n` bytes.
    pub fn blob(&self, n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }
}

#[farcall::remote]
pub struct Pinger {}

#[farcall::remote]
impl Pinger {
    pub fn value(&self) -> i64 {
        42
    }

    pub fn relay(&self, ping: Proxy) -> farcall::Result<Value> {
        ping.call_method("value", vec![])
    }
}

/// A server in its own thread, serving until closed.
pub struct Running {
    pub server: Server,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// The address clients connect to.
    pub fn address(&self) -> String {
        self.server.address().to_string()
    }

    /// The published counter's count, read in this process.
    pub fn count(&self) -> i64 {
        let Some(Value::Object(counter)) = self.server.published("counter") else {
            panic!("counter is published")
        };
        counter.get_attr("count").unwrap().as_i64().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A server on `address` with default options.
pub fn serve(address: &str) -> Running {
    serve_with(address, ServerOptions::default())
}

/// A server on `address` publishing `counter`, `ping`, `numbers` and a
/// `math` module.
pub fn serve_with(address: &str, options: ServerOptions) -> Running {
    let server = Server::bind_with(address, options).expect("bind");
    server.publish("counter", farcall::object(Counter { count: 0 }));
    server.publish("ping", farcall::object(Pinger {}));
    server.publish("numbers", Value::List(vec![Value::Int(1), Value::Int(2)]));
    server.add_module("math", farcall::object(Pinger {}));
    let s = server.clone();
    let thread = thread::spawn(move || s.run_forever().expect("serve"));
    Running {
        server,
        thread: Some(thread),
    }
}

/// A `farcall-counter` child process serving on an address, killed when
/// dropped.
pub struct ChildServer {
    pub child: std::process::Child,
    pub address: String,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `farcall-counter ADDRESS` and reads the address it bound.
pub fn spawn_server(address: &str) -> ChildServer {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_farcall-counter"))
        .arg(address)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn farcall-counter");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    ChildServer {
        child,
        address: line.trim().to_string(),
    }
}
