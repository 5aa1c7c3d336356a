//! Peer links: calls both ways over one link, call chains, dead and
//! stopped peers, deadlines, cancellation, many threads through one link.
//! Native links and ZeroMQ endpoints alike, wherever the behaviour applies.

use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Wake, Waker};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use farcall::object::Kwargs;
use farcall::protocol::{Action, ReturnType};
use farcall::{
    Client, ClientOptions, Error, Heartbeat, Proxy, RemoteObject, Server, ServerOptions, Value,
};

mod support;

use support::{serve, serve_with, spawn_server};

const NATIVE: [&str; 2] = ["unix://*", "tcp+native://127.0.0.1:*"];

fn every_transport() -> Vec<String> {
    vec![
        "unix://*".into(),
        "tcp+native://127.0.0.1:*".into(),
        "tcp://127.0.0.1:*".into(),
    ]
}

/// A callback hosted by the calling side: records the threads it ran in,
/// and can call a proxy back (to build chains).
#[derive(Default)]
struct Recorder {
    threads: Mutex<Vec<ThreadId>>,
}

impl RemoteObject for Recorder {
    fn type_str(&self) -> String {
        "<class 'Recorder'>".into()
    }

    fn call(&self, args: Vec<Value>, _kwargs: Kwargs) -> farcall::Result<Value> {
        self.threads.lock().unwrap().push(thread::current().id());
        Ok(args.into_iter().next().unwrap_or_default())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Calls what it is given, in the server's thread.
#[farcall::remote]
pub struct Caller {}

#[farcall::remote]
impl Caller {
    /// Calls `f(x)` and returns what it returned.
    pub fn call_back(&self, f: Proxy, x: i64) -> farcall::Result<Value> {
        f.call(vec![Value::Int(x)])
    }

    /// Sleeps, then returns.
    pub fn sleep_ms(&self, ms: u64) -> u64 {
        thread::sleep(Duration::from_millis(ms));
        ms
    }
}

#[test]
fn the_server_calls_back_over_the_link_into_the_waiting_thread() {
    for address in NATIVE {
        let server = Server::bind(address).unwrap();
        server.publish("caller", farcall::object(Caller {}));
        let running = server.clone();
        let serving = thread::spawn(move || running.run_forever());
        let client = Client::connect(server.address()).unwrap();
        let caller = client.proxy(client.get_item("caller").unwrap()).unwrap();
        let recorder = Arc::new(Recorder::default());
        let callback = Value::Object(recorder.clone());
        // This thread has no server: the callback is hosted by the link
        // and the server reaches it over the same link.
        let got = caller
            .call_method("call_back", vec![callback, Value::Int(7)])
            .unwrap();
        assert_eq!(got, Value::Int(7), "{address}");
        assert_eq!(
            *recorder.threads.lock().unwrap(),
            vec![thread::current().id()],
            "{address}: the callback ran in the thread that waited for it"
        );
        server.close();
        serving.join().unwrap().unwrap();
    }
}

/// Calls `other.bounce(me, other, n - 1)` until `n` is 0, then answers
/// the depth. Re-entrant (no lock held while it calls out), as a Python
/// object would be.
struct Bouncer;

impl RemoteObject for Bouncer {
    fn type_str(&self) -> String {
        "<class 'Bouncer'>".into()
    }

    fn call_method(&self, name: &str, args: Vec<Value>, _kwargs: Kwargs) -> farcall::Result<Value> {
        assert_eq!(name, "bounce");
        let mut args = args.into_iter();
        let other: Proxy = farcall::FromValue::from_value(args.next().unwrap_or_default())?;
        let me: Proxy = farcall::FromValue::from_value(args.next().unwrap_or_default())?;
        let n = args.next().and_then(|v| v.as_i64()).unwrap_or(0);
        if n == 0 {
            return Ok(Value::Int(0));
        }
        let depth = other.call_method(
            "bounce",
            vec![me.into(), other.clone().into(), Value::Int(n - 1)],
        )?;
        Ok(Value::Int(depth.as_i64().unwrap_or(-1) + 1))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[test]
fn a_b_a_between_two_servers_in_threads_of_one_process() {
    for address in every_transport() {
        let servers: Vec<Server> = (0..2)
            .map(|_| {
                let s = Server::bind(&address).unwrap();
                s.publish("b", Value::Object(Arc::new(Bouncer)));
                s
            })
            .collect();
        let threads: Vec<_> = servers
            .iter()
            .map(|s| {
                let s = s.clone();
                thread::spawn(move || s.run_forever())
            })
            .collect();
        let p1 = Proxy::adopt(
            Client::connect(servers[0].address())
                .unwrap()
                .get_item("b")
                .unwrap(),
        )
        .unwrap();
        let p2 = Proxy::adopt(
            Client::connect(servers[1].address())
                .unwrap()
                .get_item("b")
                .unwrap(),
        )
        .unwrap();
        let started = Instant::now();
        let depth = p1
            .call_method(
                "bounce",
                vec![p2.clone().into(), p1.clone().into(), Value::Int(5)],
            )
            .unwrap_or_else(|e| panic!("{address}: {e}"));
        assert_eq!(depth, Value::Int(5), "{address}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{address}: {:?}",
            started.elapsed()
        );
        for s in &servers {
            s.close();
        }
        for t in threads {
            t.join().unwrap().unwrap();
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we own.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

#[test]
fn a_killed_child_fails_every_pending_call_at_once() {
    for address in every_transport() {
        let server = spawn_server(&address);
        let client = Client::connect(&server.address).unwrap();
        let counter = client.proxy(client.get_item("counter").unwrap()).unwrap();
        let sleep = counter.attr("sleep_ms");
        let pending: Vec<_> = (0..5)
            .map(|_| sleep.call_async(vec![Value::Int(30_000)], vec![]).unwrap())
            .collect();
        let waiting = {
            let sleep = sleep.clone();
            thread::spawn(move || {
                let r = sleep.call(vec![Value::Int(30_000)]);
                (r, Instant::now())
            })
        };
        thread::sleep(Duration::from_millis(200));
        signal(&server.child, libc::SIGKILL);
        let killed = Instant::now();
        for f in pending {
            let r = f.wait(Some(Duration::from_secs(10)));
            assert!(matches!(r, Err(Error::Disconnected(_))), "{address}: {r:?}");
        }
        let (r, failed_at) = waiting.join().unwrap();
        assert!(matches!(r, Err(Error::Disconnected(_))), "{address}: {r:?}");
        assert!(
            failed_at.duration_since(killed) < Duration::from_secs(1),
            "{address}: {:?}",
            failed_at.duration_since(killed)
        );
        // Later calls fail at once too, and the link says why.
        let started = Instant::now();
        assert!(
            matches!(client.ping(), Err(Error::Disconnected(_))),
            "{address}"
        );
        assert!(
            counter
                .call_method("add", vec![Value::Int(1)])
                .is_err_and(|e| e.is_disconnect()),
            "{address}"
        );
        assert!(started.elapsed() < Duration::from_millis(500), "{address}");
        assert!(client.disconnected().is_some(), "{address}");
    }
}

#[test]
fn a_dead_zeromq_server_is_seen_without_a_call() {
    let server = spawn_server("tcp://127.0.0.1:*");
    let client = Client::connect(&server.address).unwrap();
    assert_eq!(client.ping().unwrap(), Value::from("pong"));
    signal(&server.child, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(3);
    while client.disconnected().is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(client.disconnected().is_some(), "the monitor saw the drop");
    let started = Instant::now();
    assert!(client
        .send_off(Action::Ping, &Value::None, ReturnType::Auto)
        .is_err());
    assert!(client
        .send(Action::Ping, &Value::None, ReturnType::Auto)
        .is_err());
    assert!(started.elapsed() < Duration::from_millis(100));
}

/// Each link's monitor was armed before the I/O thread knew the link: an
/// event that fired at once was dropped, and with it (one-shot) every
/// later one, so now and then a client never saw its server die.
#[test]
fn every_client_of_a_dead_zeromq_server_sees_it_without_a_call() {
    let server = spawn_server("tcp://127.0.0.1:*");
    let clients: Vec<Client> = (0..150)
        .map(|_| Client::connect(&server.address).unwrap())
        .collect();
    for c in &clients {
        assert_eq!(c.ping().unwrap(), Value::from("pong"));
    }
    signal(&server.child, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(3);
    let unaware = || {
        clients
            .iter()
            .filter(|c| c.disconnected().is_none())
            .count()
    };
    while unaware() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(unaware(), 0, "clients that did not see the server die");
}

/// A call made while libzmq has already dropped the dead peer, but before
/// the monitor's news is read, found no room to send: it used to block in
/// the send (holding the socket, so the news could not be read either)
/// for the whole send timeout.
#[test]
fn a_call_made_as_a_zeromq_server_dies_fails_fast() {
    for trial in 0..30u64 {
        let server = spawn_server("tcp://127.0.0.1:*");
        let client = Client::connect(&server.address).unwrap();
        assert_eq!(client.ping().unwrap(), Value::from("pong"));
        signal(&server.child, libc::SIGKILL);
        thread::sleep(Duration::from_micros(trial * 100));
        let started = Instant::now();
        let r = client.ping();
        assert!(
            matches!(r, Err(Error::Disconnected(_))),
            "trial {trial}: {r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "trial {trial}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn closing_the_server_from_another_client_is_seen_by_all() {
    for address in every_transport() {
        let running = serve(&address);
        let watcher = Client::connect(&running.address()).unwrap();
        let closer = Client::connect_with(&running.address(), ClientOptions::default()).unwrap();
        assert!(!watcher.same_as(&closer));
        assert_eq!(watcher.ping().unwrap(), Value::from("pong"));
        closer.close_server().unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while watcher.disconnected().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(
            watcher.disconnected().is_some(),
            "{address}: the notice was read"
        );
        assert!(
            watcher.ping().is_err_and(|e| e.is_disconnect()),
            "{address}"
        );
    }
}

fn quick_heartbeat() -> ClientOptions {
    ClientOptions {
        heartbeat: Heartbeat::with_timeout(Duration::from_millis(600)),
        ..ClientOptions::default()
    }
}

#[test]
fn a_stopped_peer_is_found_by_the_heartbeat() {
    for address in NATIVE {
        let server = spawn_server(address);
        let client = Client::connect_with(&server.address, quick_heartbeat()).unwrap();
        let counter = client.proxy(client.get_item("counter").unwrap()).unwrap();
        signal(&server.child, libc::SIGSTOP);
        let started = Instant::now();
        let r = counter.call_method("add", vec![Value::Int(1)]);
        let took = started.elapsed();
        signal(&server.child, libc::SIGCONT);
        assert!(
            matches!(&r, Err(Error::Disconnected(why)) if why.contains("heartbeat")),
            "{address}: {r:?}"
        );
        assert!(took < Duration::from_secs(3), "{address}: {took:?}");
    }
}

#[test]
fn a_long_call_is_not_a_dead_peer() {
    for address in NATIVE {
        let server = spawn_server(address);
        let client = Client::connect_with(&server.address, quick_heartbeat()).unwrap();
        let counter = client.proxy(client.get_item("counter").unwrap()).unwrap();
        // Four heartbeat timeouts of one busy call: the child's I/O thread
        // answers the pings while its server thread sleeps.
        let r = counter.call_method("sleep_ms", vec![Value::Int(2400)]);
        assert_eq!(r.unwrap(), Value::Int(2400), "{address}");
        assert_eq!(client.ping().unwrap(), Value::from("pong"));
    }
}

/// A waker that records that it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn an_async_timeout_is_enforced_with_nobody_waiting() {
    for address in every_transport() {
        let running = serve(&address);
        let client = Client::connect(&running.address()).unwrap();
        let counter = client.proxy(client.get_item("counter").unwrap()).unwrap();
        let fields = farcall::protocol::command::CallObj::fields(
            counter.reference(),
            Some("sleep_ms"),
            &[Value::Int(1500)],
            &[],
        );
        let started = Instant::now();
        let future = client
            .send_with_timeout(
                Action::CallObj,
                &fields[..],
                ReturnType::Auto,
                Some(Duration::from_millis(150)),
            )
            .unwrap();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        assert!(!future.notify_when_done(&Waker::from(flag.clone())));
        while !flag.0.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(5));
        }
        let woken = started.elapsed();
        assert!(
            flag.0.load(Ordering::SeqCst),
            "{address}: the waker never ran"
        );
        assert!(
            woken < Duration::from_secs(1),
            "{address}: woken after {woken:?}"
        );
        let r = future.wait(Some(Duration::ZERO));
        assert!(matches!(r, Err(Error::Timeout(_))), "{address}: {r:?}");
        // The link goes on serving.
        assert_eq!(client.ping().unwrap(), Value::from("pong"), "{address}");
    }
}

#[test]
fn a_cancelled_call_is_skipped_if_it_has_not_started() {
    for address in every_transport() {
        let running = serve(&address);
        let client = Client::connect(&running.address()).unwrap();
        let counter = client.proxy(client.get_item("counter").unwrap()).unwrap();
        let busy = counter
            .attr("sleep_ms")
            .call_async(vec![Value::Int(400)], vec![])
            .unwrap();
        let mut queued = counter
            .attr("add")
            .call_async(vec![Value::Int(1)], vec![])
            .unwrap();
        thread::sleep(Duration::from_millis(100));
        assert!(queued.cancel(), "{address}: it was pending");
        // Dropping an unanswered future cancels it too.
        drop(
            counter
                .attr("add")
                .call_async(vec![Value::Int(10)], vec![])
                .unwrap(),
        );
        busy.wait(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            counter.call_method("add", vec![Value::Int(100)]).unwrap(),
            Value::Int(100),
            "{address}: neither cancelled add ran"
        );
    }
}

#[test]
fn a_hundred_threads_call_through_one_link() {
    for address in every_transport() {
        let running = serve(&address);
        let client = Client::connect(&running.address()).unwrap();
        let counter = client.proxy(client.get_item("counter").unwrap()).unwrap();
        let start = Arc::new(Barrier::new(100));
        let done = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..100)
            .map(|_| {
                let (counter, start, done) = (counter.clone(), start.clone(), done.clone());
                thread::spawn(move || {
                    start.wait();
                    for _ in 0..20 {
                        counter.call_method("add", vec![Value::Int(1)]).unwrap();
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 100);
        assert_eq!(
            counter.get_attr("count").unwrap(),
            Value::Int(2000),
            "{address}"
        );
        assert_eq!(client.pending(), 0, "{address}: nothing left in flight");
    }
}

#[test]
fn a_private_channel_carries_calls_both_ways() {
    // Two links over one socket pair, in one process: each side calls the
    // other's host. (Both ends share this process's link host, so each
    // publishes under its own name.)
    let (a, b) = farcall::channel::FdChannel::pair().unwrap();
    let opened = thread::spawn(move || {
        farcall::Link::over_private(Arc::new(b), &Default::default()).unwrap()
    });
    let left = farcall::Link::over_private(Arc::new(a), &Default::default()).unwrap();
    let right = opened.join().unwrap();
    farcall::Host::local().publish("caller", farcall::object(Caller {}));
    let from_left = Client::from_link(left.clone());
    let from_right = Client::from_link(right);
    for client in [&from_left, &from_right] {
        let got = client.get_item("caller").unwrap();
        assert!(matches!(got, Value::Proxy(_)), "{got:?}");
        let caller = client.proxy(got).unwrap();
        assert_eq!(
            caller.call_method("sleep_ms", vec![Value::Int(1)]).unwrap(),
            Value::Int(1)
        );
    }
    left.close("done");
    assert!(from_right.ping().is_err_and(|e| e.is_disconnect()));
}

/// Opens `Link::over_channel` on both ends of a socket pair, one end
/// with each key.
fn keyed_ends(
    left: farcall::auth::Key,
    right: farcall::auth::Key,
) -> (
    farcall::Result<Arc<farcall::Link>>,
    farcall::Result<Arc<farcall::Link>>,
) {
    let (a, b) = farcall::channel::FdChannel::pair().unwrap();
    let with = |key| ClientOptions {
        auth: farcall::Auth::Key(key),
        ..ClientOptions::default()
    };
    let (left, right) = (with(left), with(right));
    let opened = thread::spawn(move || farcall::Link::over_channel(Arc::new(b), &right));
    let mine = farcall::Link::over_channel(Arc::new(a), &left);
    (mine, opened.join().unwrap())
}

#[test]
fn a_shared_channel_admits_a_peer_with_the_key_and_refuses_one_without() {
    let key = farcall::auth::Key::generate().unwrap();
    let (left, right) = keyed_ends(key.clone(), key);
    let (left, right) = (left.unwrap(), right.unwrap());
    farcall::Host::local().publish("keyed-caller", farcall::object(Caller {}));
    let caller = Client::from_link(right).get_item("keyed-caller").unwrap();
    assert!(matches!(caller, Value::Proxy(_)), "{caller:?}");
    left.close("done");

    let started = Instant::now();
    let (left, right) = keyed_ends(
        farcall::auth::Key::generate().unwrap(),
        farcall::auth::Key::generate().unwrap(),
    );
    for end in [left, right] {
        let e = end.expect_err("a wrong key is refused");
        assert!(e.to_string().contains("key"), "{e}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
}

#[test]
fn what_a_link_held_is_released_when_it_goes() {
    let options = ServerOptions {
        heartbeat: Heartbeat::with_timeout(Duration::from_millis(500)),
        ..ServerOptions::default()
    };
    let running = serve_with("unix://*", options);
    let client = Client::connect(&running.address()).unwrap();
    let counter = client.proxy(client.get_item("counter").unwrap()).unwrap();
    let child = counter.call_method("spawn_child", vec![]).unwrap();
    let before = running.server.object_count();
    assert!(matches!(child, Value::Proxy(_)));
    client.close();
    let deadline = Instant::now() + Duration::from_secs(3);
    while running.server.object_count() >= before && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        running.server.object_count() < before,
        "released when the link went"
    );
}

#[test]
fn a_peer_listener_admits_keyed_links_both_ways_and_drops_the_rest() {
    use std::io::Write;
    for address in ["tcp+native://127.0.0.1:*", "unix://*"] {
        let listener = farcall::PeerListener::bind(address, &farcall::Auth::ProcessKey).unwrap();
        let within = || Some(Instant::now() + Duration::from_secs(5));
        // Garbage instead of a handshake is dropped; the listener goes on.
        if let Some(hostport) = listener.address().strip_prefix("tcp+native://") {
            let mut raw = std::net::TcpStream::connect(hostport).unwrap();
            raw.write_all(&[0xff; 4096]).unwrap();
        }
        let client = Client::connect(listener.address()).unwrap();
        let accepted = listener.accept(within()).unwrap().expect("admitted");
        // Symmetric: each end calls the other over the one link.
        assert_eq!(client.ping().unwrap(), Value::from("pong"));
        assert_eq!(
            Client::from_link(accepted.clone()).ping().unwrap(),
            Value::from("pong")
        );
        // Another key is refused before any request.
        let key = farcall::auth::Key::from_bytes(&[7; 32]).unwrap();
        let options = farcall::ClientOptions {
            auth: farcall::Auth::Key(key),
            ..Default::default()
        };
        assert!(Client::connect_with(listener.address(), options).is_err());
        assert!(listener
            .accept(Some(Instant::now() + Duration::from_millis(200)))
            .unwrap()
            .is_none());
        listener.close();
        assert!(listener.accept(within()).is_err());
        assert_eq!(
            client.ping().unwrap(),
            Value::from("pong"),
            "admitted links go on"
        );
    }
}

/// Set in the environment of the child that
/// `a_child_over_its_pipes_and_its_parent_call_each_other` starts (this
/// test binary again, running `as_the_child_over_its_pipes` only).
const PIPE_CHILD: &str = "FARCALL_TEST_PIPE_CHILD";
/// What that child writes to its stdout just before the link takes it
/// over: the test harness has written there already.
const PIPE_CHILD_READY: &[u8] = b"<farcall pipe child ready>\n";

/// The child's side of the test below (does nothing in a normal run):
/// serves its parent over stdin and stdout, calls it once on its own, and
/// returns when the parent closes the link.
#[test]
fn as_the_child_over_its_pipes() {
    use std::io::Write;
    if std::env::var_os(PIPE_CHILD).is_none() {
        return;
    }
    let mut stdout = std::io::stdout();
    stdout.write_all(PIPE_CHILD_READY).unwrap();
    stdout.flush().unwrap();
    let channel = farcall::channel::FdChannel::stdio().unwrap();
    println!("a stray print goes to stderr, not into the link");
    farcall::Host::local().publish("pipe child", farcall::object(Caller {}));
    let link = farcall::Link::over_private(Arc::new(channel), &Default::default()).unwrap();
    let parent = Client::from_link(link.clone());
    let recorder = parent
        .proxy(parent.get_item("pipe parent").unwrap())
        .unwrap();
    assert_eq!(recorder.call(vec![Value::Int(42)]).unwrap(), Value::Int(42));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !link.is_dead() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(link.peer_said_goodbye(), "{:?}", link.dead());
}

#[test]
fn a_child_over_its_pipes_and_its_parent_call_each_other() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let on_its_own = Arc::new(Recorder::default());
    farcall::Host::local().publish("pipe parent", Value::Object(on_its_own.clone()));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "as_the_child_over_its_pipes", "--nocapture"])
        .env(PIPE_CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Skip what the child's test harness printed, one byte at a time so
    // as not to read into the link.
    let mut skipped = Vec::new();
    while !skipped.ends_with(PIPE_CHILD_READY) {
        let mut byte = [0u8];
        let n = stdout.read(&mut byte).unwrap();
        assert_eq!(
            n,
            1,
            "the child ended first: {:?}",
            String::from_utf8_lossy(&skipped)
        );
        skipped.push(byte[0]);
    }
    let channel =
        farcall::channel::FdChannel::pipes(stdout.into(), child.stdin.take().unwrap().into())
            .unwrap();
    let link = farcall::Link::over_private(Arc::new(channel), &Default::default()).unwrap();
    let client = Client::from_link(link.clone());
    let caller = client
        .proxy(client.get_item("pipe child").unwrap())
        .unwrap();
    // A -> B -> A: the child calls our callback while we wait for it, and
    // the callback runs in this (waiting) thread.
    let callback = Arc::new(Recorder::default());
    let got = caller
        .call_method(
            "call_back",
            vec![Value::Object(callback.clone()), Value::Int(7)],
        )
        .unwrap();
    assert_eq!(got, Value::Int(7));
    assert_eq!(
        *callback.threads.lock().unwrap(),
        vec![thread::current().id()]
    );
    // The child's own call ran on our link pool.
    let deadline = Instant::now() + Duration::from_secs(5);
    while on_its_own.threads.lock().unwrap().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let threads = on_its_own.threads.lock().unwrap().clone();
    assert_eq!(threads.len(), 1, "the child called us once on its own");
    assert_ne!(threads[0], thread::current().id());
    // Closing ends the child's side too, and it exits.
    link.close_notifying("done");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the child did not exit after the link closed");
        }
        thread::sleep(Duration::from_millis(5));
    };
    // Small enough to wait for the exit before reading it.
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("a stray print goes to stderr"), "{stderr}");
}
