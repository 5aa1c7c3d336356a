//! Two Rust processes calling each other over one symmetric link: this
//! program starts itself as a child with piped stdin and stdout, and each
//! side publishes an object the other calls. The parent calls the child's
//! `Calculator`, which calls back into the parent's `Logger` while the
//! parent still waits for that call (A -> B -> A over the one link); the
//! child also calls the parent on its own.
//!
//! Run with `cargo run -p farcall --example peer_pipes`.
//!
//! What travels is farcall's own format, not pickle: a Rust peer can
//! neither make nor answer the pickled calls of a Python
//! `farcall.across.Connection` (see docs/across.md, "From Rust").

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use farcall::channel::FdChannel;
use farcall::{Client, Error, Host, Link, LinkOptions, Proxy, Value};

/// Bounds every wait below: a broken peer makes this fail, never hang.
const PATIENCE: Duration = Duration::from_secs(10);

/// The parent's object: prints what the child tells it, naming the
/// thread the call runs in, and passes it on to `main`.
#[farcall::remote]
pub struct Logger {
    heard: Sender<String>,
}

#[farcall::remote]
impl Logger {
    pub fn log(&self, line: String) {
        let thread = thread::current();
        println!(
            "parent [{}]: the child says {line:?}",
            thread.name().unwrap_or("?")
        );
        let _ = self.heard.send(line);
    }
}

/// The child's object; it reports to the parent's logger.
#[farcall::remote]
pub struct Calculator {
    logger: Proxy,
}

#[farcall::remote]
impl Calculator {
    /// Logs in the parent while the parent waits for this very call: the
    /// engine runs the log call in the parent's waiting thread.
    pub fn add(&self, a: i64, b: i64) -> farcall::Result<i64> {
        let line = format!("adding {a} + {b}");
        self.logger.call_method("log", vec![line.into()])?;
        Ok(a + b)
    }
}

fn main() -> farcall::Result<()> {
    if std::env::args().any(|arg| arg == "--child") {
        child()
    } else {
        parent()
    }
}

fn parent() -> farcall::Result<()> {
    let (heard, hearing) = mpsc::channel();
    // Published before the link opens: the child asks for it at once.
    Host::local().publish("logger", farcall::object(Logger { heard }));
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    // Read what the child writes to its stdout, write to its stdin.
    let stdout = child.stdout.take().expect("piped");
    let stdin = child.stdin.take().expect("piped");
    let channel = FdChannel::pipes(stdout.into(), stdin.into())?;
    let link = Link::over_private(Arc::new(channel), &LinkOptions::default())?;
    let peer = Client::from_link(link.clone());
    println!("parent: linked to child {} over its pipes", child.id());

    // The child greets us on its own (a pool thread runs that call); it
    // publishes its calculator first, so once greeted we may ask for it.
    hearing
        .recv_timeout(PATIENCE)
        .map_err(|_| Error::Timeout(PATIENCE))?;
    let calculator = peer.proxy(peer.get_item("calculator")?)?;
    let sum = calculator.call_method("add", vec![Value::Int(2), Value::Int(3)])?;
    println!("parent [main]: calculator.add(2, 3) = {sum:?}");

    // Saying goodbye ends the child's side of the link too: it exits.
    link.close_notifying("the parent is done");
    let status = wait_for(&mut child)?;
    println!("parent: the child exited ({status})");
    Ok(())
}

fn child() -> farcall::Result<()> {
    // stdin and stdout carry the link; prints go to stderr from now on.
    let channel = FdChannel::stdio()?;
    let link = Link::over_private(Arc::new(channel), &LinkOptions::default())?;
    let parent = Client::from_link(link.clone());
    let logger = parent.proxy(parent.get_item("logger")?)?;
    Host::local().publish(
        "calculator",
        farcall::object(Calculator {
            logger: logger.clone(),
        }),
    );
    let hello = format!("hello from process {}", std::process::id());
    logger.call_method("log", vec![hello.into()])?;

    // Serve until the parent closes (or vanishes: its pipes end).
    let deadline = Instant::now() + 3 * PATIENCE;
    while !link.is_dead() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let why = link.dead().unwrap_or_else(|| "gave up waiting".into());
    eprintln!("child: the link ended ({why}); exiting");
    Ok(())
}

/// Waits for the child to exit, killing it if it takes too long.
fn wait_for(child: &mut Child) -> farcall::Result<ExitStatus> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.kill()?;
    Err(Error::Timeout(PATIENCE))
}
