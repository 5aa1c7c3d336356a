//! A stand-alone farcall server hosting a `Counter`, for tests and demos.
//!
//! Usage: `farcall-counter ADDRESS`. Prints the bound address on its first
//! line of output, then serves until a client closes it.

use farcall::{Server, Value};

/// A counter that peers can drive remotely.
#[farcall::remote]
pub struct Counter {
    /// The current count.
    pub count: i64,
}

#[farcall::remote]
impl Counter {
    /// Adds `x` and returns the new count.
    pub fn add(&mut self, x: i64) -> i64 {
        self.count += x;
        self.count
    }

    /// The process id of the server, to prove it is another process.
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Sleeps `ms` milliseconds, then returns them (a long call).
    pub fn sleep_ms(&self, ms: u64) -> u64 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        ms
    }

    /// Exits the process at once, without a goodbye (for fault tests).
    pub fn crash(&self) {
        std::process::exit(3);
    }
}

fn main() -> farcall::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "unix://*".to_string());
    let server = Server::bind(&address)?;
    server.publish(
        "counter",
        Value::Object(farcall::object(Counter { count: 0 })),
    );
    println!("{}", server.address());
    server.run_forever()
}
