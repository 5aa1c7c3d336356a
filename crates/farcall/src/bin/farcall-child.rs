//! A Rust child for `ProcessSpawner`, for tests and as an example.
//!
//! Started by a spawner, it serves a `Counter` (published as `"counter"`)
//! through `farcall::spawn::serve_as_child`. Its behaviour at startup is
//! steered by the spawner's `extra` object:
//!
//! - `{"fail": true}`: reports an error instead of its address;
//! - `{"die": "text"}`: writes `text` to stderr and exits with status 7
//!   without answering.
//!
//! `farcall-child --parent` instead spawns a copy of itself, prints the
//! copy's pid and address on stdout and sleeps (up to 60 s): killing it shows that the
//! copy does not outlive its parent.

use std::io::Write;
use std::time::Duration;

use farcall::spawn::{serve_as_child, ChildConfig};
use farcall::{Error, ProcessSpawner, Server, SpawnOptions, Value};

/// A counter that the parent drives remotely.
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

    /// The process id of the child.
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Sleeps `ms` milliseconds, then returns the count (a long call).
    pub fn sleep_ms(&self, ms: u64) -> i64 {
        std::thread::sleep(Duration::from_millis(ms));
        self.count
    }
}

fn setup(server: &Server, config: &ChildConfig) -> farcall::Result<()> {
    if config.extra.get("fail").and_then(|v| v.as_bool()) == Some(true) {
        return Err(Error::exception("RuntimeError", "told to fail at startup"));
    }
    if let Some(text) = config.extra.get("die").and_then(|v| v.as_str()) {
        eprintln!("{text}");
        // exit() skips the server's cleanup: remove its socket file here.
        if let Some(path) = server.address().strip_prefix("unix://") {
            let _ = std::fs::remove_file(path);
        }
        std::process::exit(7);
    }
    server.publish(
        "counter",
        Value::Object(farcall::object(Counter { count: 0 })),
    );
    server.publish(
        "config",
        Value::map([
            ("name", config.name.clone().map_or(Value::None, Value::from)),
            ("parent_pid", Value::from(config.parent_pid)),
            ("extra", Value::from(config.extra.to_string())),
        ]),
    );
    Ok(())
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--parent") {
        let exe = std::env::current_exe().expect("current_exe");
        let child = ProcessSpawner::spawn(SpawnOptions::program(exe)).expect("spawn");
        println!("{} {}", child.pid(), child.address());
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    if let Err(e) = serve_as_child(setup) {
        eprintln!("farcall-child: {e}");
        std::process::exit(1);
    }
}
