//! The engine end to end: servers and clients in threads and processes,
//! over every transport.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use farcall::client::ClientOptions;
use farcall::protocol::{Action, Frames, ReturnType};
use farcall::{Auth, Client, Error, Proxy, ProxyRef, ServerOptions, Value};

mod support;

use support::{serve, serve_with, spawn_server};

/// One address per transport: native Unix, native TCP, ZeroMQ tcp and ipc.
fn addresses() -> Vec<String> {
    vec![
        "unix://*".into(),
        "tcp+native://127.0.0.1:*".into(),
        "tcp://127.0.0.1:*".into(),
        format!("ipc:///tmp/farcall-test-{}.ipc", unique()),
    ]
}

/// `n` async calls of `counter.add(1)`, all sent before any is waited on.
fn add_one_async(counter: &Proxy, n: usize) -> Vec<farcall::Future> {
    let add = counter.attr("add");
    (0..n)
        .map(|_| add.call_async(vec![Value::Int(1)], vec![]).unwrap())
        .collect()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::process::id() as u64 * 1000 + N.fetch_add(1, Ordering::Relaxed)
}

fn proxy_of(v: Value) -> Proxy {
    Proxy::adopt(v).expect("a proxy")
}

#[test]
fn every_action_on_every_transport() {
    for address in addresses() {
        let running = serve(&address);
        let client = Client::connect(&running.address()).expect("connect");
        assert_eq!(client.ping().unwrap(), Value::from("pong"), "{address}");

        // get_item + call_obj through a method path.
        let counter = proxy_of(client.get_item("counter").unwrap());
        assert_eq!(counter.type_str(), "<class 'Counter'>");
        assert_eq!(
            counter.call_method("add", vec![Value::Int(2)]).unwrap(),
            Value::Int(2)
        );
        assert_eq!(
            counter
                .attr("add")
                .call_kw(vec![], vec![("x".into(), Value::Int(3))])
                .unwrap(),
            Value::Int(5)
        );

        // Attributes and items.
        assert_eq!(counter.get_attr("count").unwrap(), Value::Int(5));
        counter.set_attr("count", 10).unwrap();
        assert_eq!(counter.get_attr("count").unwrap(), Value::Int(10));
        let numbers = client.get_item("numbers").unwrap();
        assert_eq!(numbers, Value::List(vec![Value::Int(1), Value::Int(2)]));

        // set_item publishes; a proxy of the server's own object comes home.
        client.set_item("again", counter.clone().into()).unwrap();
        let again = proxy_of(client.get_item("again").unwrap());
        assert_eq!(again, counter, "same remote object, same proxy identity");

        // A result that is an object stays remote; return_type value copies.
        let child = proxy_of(counter.call_method("spawn_child", vec![]).unwrap());
        assert_eq!(
            child.call_method("add", vec![Value::Int(1)]).unwrap(),
            Value::Int(101)
        );
        let copy = counter
            .with_return_type(ReturnType::Proxy)
            .call_method("add", vec![Value::Int(0)])
            .unwrap();
        assert!(
            matches!(copy, Value::Proxy(_)),
            "return_type proxy wraps a value"
        );
        assert_eq!(proxy_of(copy).get_value().unwrap(), Value::Int(10));

        // import.
        let math = proxy_of(client.import("math").unwrap());
        assert_eq!(math.call_method("value", vec![]).unwrap(), Value::Int(42));
        match client.import("no_such_module") {
            Err(Error::Remote { type_name, .. }) => assert_eq!(type_name, "ModuleNotFoundError"),
            other => panic!("{other:?}"),
        }

        // delete releases the object: the table shrinks.
        let before = running.server.object_count();
        let extra = client.call(
            Action::CallObj,
            &farcall::protocol::command::CallObj::opts(counter.reference(), vec![], vec![]),
            ReturnType::Auto,
            None,
        );
        assert!(extra.is_err(), "a Counter is not callable itself");
        let child_ref = child.reference().clone();
        client.delete(&child_ref).unwrap();
        assert!(running.server.object_count() < before);
        std::mem::forget(child); // already released by hand

        // close.
        client.close_server().unwrap();
        assert!(matches!(client.ping(), Err(Error::Disconnected(_))));
    }
}

#[test]
fn remote_errors_carry_type_and_traceback() {
    let running = serve("unix://*");
    let client = Client::connect(&running.address()).unwrap();
    let counter = proxy_of(client.get_item("counter").unwrap());
    match counter.call_method("fail", vec![]) {
        Err(Error::Remote {
            type_name,
            traceback,
        }) => {
            assert_eq!(type_name, "ZeroDivisionError");
            assert!(traceback.concat().contains("division by zero"));
        }
        other => panic!("{other:?}"),
    }
    for (method, args, want) in [
        ("add", vec![], "TypeError"),
        ("add", vec![Value::from("x")], "TypeError"),
        ("nope", vec![], "AttributeError"),
    ] {
        match counter.call_method(method, args) {
            Err(Error::Remote { type_name, .. }) => assert_eq!(type_name, want, "{method}"),
            other => panic!("{method}: {other:?}"),
        }
    }
    match client.get_item("missing") {
        Err(Error::Remote { type_name, .. }) => assert_eq!(type_name, "KeyError"),
        other => panic!("{other:?}"),
    }
    // The server still serves after every error.
    assert_eq!(
        counter.call_method("add", vec![Value::Int(1)]).unwrap(),
        Value::Int(1)
    );
}

#[test]
fn unknown_and_released_object_ids_are_key_errors() {
    let running = serve("unix://*");
    let client = Client::connect(&running.address()).unwrap();
    let forged = ProxyRef {
        rpc_addr: running.address(),
        obj_id: 9999,
        ref_id: 0,
        type_str: "x".into(),
        attributes: vec!["add".into()],
    };
    match client.call_obj(&forged, vec![Value::Int(1)], vec![]) {
        Err(Error::Remote { type_name, .. }) => assert_eq!(type_name, "KeyError"),
        other => panic!("{other:?}"),
    }
    let counter = client.get_item("counter").unwrap();
    let Value::Proxy(r) = counter else { panic!() };
    client.delete(&r).unwrap();
    match client.delete(&r) {
        Err(Error::Remote { type_name, .. }) => assert_eq!(type_name, "KeyError"),
        other => panic!("{other:?}"),
    }
    match client.call_obj(
        &ProxyRef {
            attributes: vec!["add".into()],
            ..r
        },
        vec![Value::Int(1)],
        vec![],
    ) {
        Err(Error::Remote { type_name, .. }) => assert_eq!(type_name, "KeyError"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn timeouts_leave_the_client_usable() {
    let running = serve("unix://*");
    let client = Client::connect(&running.address()).unwrap();
    let counter = proxy_of(client.get_item("counter").unwrap());
    let slow = counter.with_timeout(Duration::from_millis(50));
    let started = Instant::now();
    match slow.call_method("sleep_ms", vec![Value::Int(300)]) {
        Err(Error::Timeout(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(250));
    // The late reply is dropped; the next call gets its own answer.
    assert_eq!(
        counter.call_method("add", vec![Value::Int(7)]).unwrap(),
        Value::Int(7)
    );
}

#[test]
fn async_and_one_way_calls() {
    let running = serve("tcp+native://127.0.0.1:*");
    let client = Client::connect(&running.address()).unwrap();
    let counter = proxy_of(client.get_item("counter").unwrap());
    let futures = add_one_async(&counter, 100);
    let results: Vec<i64> = futures
        .into_iter()
        .map(|f| {
            f.wait(Some(Duration::from_secs(5)))
                .unwrap()
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        results,
        (1..=100).collect::<Vec<_>>(),
        "in order, each once"
    );
    counter
        .attr("add")
        .call_off(vec![Value::Int(1000)], vec![])
        .unwrap();
    assert_eq!(counter.get_attr("count").unwrap(), Value::Int(1100));
}

#[test]
fn futures_can_be_awaited() {
    let running = serve("unix://*");
    let client = Client::connect(&running.address()).unwrap();
    let counter = proxy_of(client.get_item("counter").unwrap());
    let fut = counter
        .attr("add")
        .call_async(vec![Value::Int(5)], vec![])
        .unwrap();
    let value = block_on(fut).unwrap();
    assert_eq!(value, Value::Int(5));
}

/// A minimal executor: polls on the current thread, parks between polls.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake};
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "future never resolved");
        thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn threads_share_one_client() {
    let running = serve("unix://*");
    let client = Client::connect(&running.address()).unwrap();
    let counter = client.get_item("counter").unwrap();
    let Value::Proxy(counter) = counter else {
        panic!()
    };
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let counter = counter.clone();
            thread::spawn(move || {
                (0..200)
                    .map(|_| {
                        client
                            .call_obj(
                                &ProxyRef {
                                    attributes: vec!["add".into()],
                                    ..counter.clone()
                                },
                                vec![Value::Int(1)],
                                vec![],
                            )
                            .unwrap()
                            .as_i64()
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    assert_eq!(
        all,
        (1..=1600).collect::<Vec<_>>(),
        "nothing lost or duplicated"
    );
}

#[test]
fn reentrant_a_b_a_calls_complete() {
    let a = serve("unix://*");
    let b = serve("unix://*");
    let client_a = Client::connect(&a.address()).unwrap();
    let client_b = Client::connect(&b.address()).unwrap();
    let a_counter = proxy_of(client_a.get_item("counter").unwrap());
    let a_ping = client_a.get_item("ping").unwrap();
    let b_ping = client_b.get_item("ping").unwrap();
    // A's counter asks B's pinger to call A's pinger while A waits.
    let got = a_counter
        .with_timeout(Duration::from_secs(5))
        .call_method("bounce", vec![b_ping, a_ping])
        .unwrap();
    assert_eq!(got, Value::Int(42));
}

#[test]
fn proxies_travel_between_three_servers() {
    let s1 = serve("unix://*");
    let s2 = serve("tcp://127.0.0.1:*");
    let s3 = serve("tcp+native://127.0.0.1:*");
    let c1 = Client::connect(&s1.address()).unwrap();
    let c3 = Client::connect(&s3.address()).unwrap();
    let on_s1 = proxy_of(c1.get_item("counter").unwrap());
    // A proxy to S3's pinger, handed to S1: S1 connects to S3 itself.
    let s3_ping = c3.get_item("ping").unwrap();
    assert_eq!(
        on_s1.call_method("call_value", vec![s3_ping]).unwrap(),
        Value::Int(42)
    );
    // Through S2 as well (ZeroMQ), then a proxy that comes home.
    let c2 = Client::connect(&s2.address()).unwrap();
    let on_s2 = proxy_of(c2.get_item("counter").unwrap());
    let s1_ping = c1.get_item("ping").unwrap();
    assert_eq!(
        on_s2
            .call_method("call_value", vec![s1_ping.clone()])
            .unwrap(),
        Value::Int(42)
    );
    assert_eq!(
        on_s1
            .call_method("is_local", vec![s1_ping.clone()])
            .unwrap(),
        Value::Bool(true)
    );
    assert_eq!(
        on_s2.call_method("is_local", vec![s1_ping]).unwrap(),
        Value::Bool(false)
    );
}

#[test]
fn a_hundred_clients_on_one_server() {
    let running = serve("unix://*");
    let clients: Vec<Client> = (0..100)
        .map(|_| Client::connect(&running.address()).unwrap())
        .collect();
    let Value::Proxy(counter) = clients[0].get_item("counter").unwrap() else {
        panic!()
    };
    let add = ProxyRef {
        attributes: vec!["add".into()],
        ..counter
    };
    let mut seen: Vec<i64> = clients
        .iter()
        .map(|c| {
            c.call_obj(&add, vec![Value::Int(1)], vec![])
                .unwrap()
                .as_i64()
                .unwrap()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (1..=100).collect::<Vec<_>>());
}

#[test]
fn closing_a_server_fails_pending_calls_at_once() {
    let running = serve("unix://*");
    let busy = Client::connect(&running.address()).unwrap();
    let waiting = Client::connect(&running.address()).unwrap();
    let Value::Proxy(counter) = busy.get_item("counter").unwrap() else {
        panic!()
    };
    let sleep = ProxyRef {
        attributes: vec!["sleep_ms".into()],
        ..counter.clone()
    };
    let add = ProxyRef {
        attributes: vec!["add".into()],
        ..counter
    };
    // The server thread is busy for 1 s; a second call queues behind it.
    let slow = busy
        .send(
            Action::CallObj,
            &farcall::protocol::command::CallObj::opts(&sleep, vec![Value::Int(1000)], vec![]),
            ReturnType::Auto,
        )
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    let queued = waiting
        .send(
            Action::CallObj,
            &farcall::protocol::command::CallObj::opts(&add, vec![Value::Int(1)], vec![]),
            ReturnType::Auto,
        )
        .unwrap();
    let started = Instant::now();
    running.server.close();
    match queued.wait(Some(Duration::from_secs(10))) {
        Err(Error::Disconnected(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        slow.wait(Some(Duration::from_secs(10))),
        Err(Error::Disconnected(_))
    ));
}

// ---- malformed input ------------------------------------------------------

/// Raw frames to a ZeroMQ server, as a hostile or buggy peer would send.
fn raw_zmq(address: &str, frames: &[&[u8]]) -> Option<Frames> {
    let ctx = farcall::transport::zmq::context();
    let socket = ctx.socket(zmq::DEALER).unwrap();
    socket.set_rcvtimeo(1000).unwrap();
    socket.set_linger(0).unwrap();
    socket.connect(address).unwrap();
    socket.send_multipart(frames.iter().copied(), 0).unwrap();
    socket
        .recv_multipart(0)
        .ok()
        .map(|parts| parts.into_iter().map(Bytes::from).collect())
}

fn reply_error(frames: &Frames) -> String {
    let v = farcall::codec::decode(farcall::codec::Format::Msgpack, &frames[0], &[]).unwrap();
    format!("{:?}", v.get("error").unwrap())
}

#[test]
fn bad_requests_get_error_replies_over_zeromq() {
    // An open server (as for pyacq peers), so raw frames reach dispatch.
    let open = ServerOptions {
        auth: Auth::Open,
        ..ServerOptions::default()
    };
    let running = serve_with("tcp://127.0.0.1:*", open);
    let addr = running.address();
    let reply = raw_zmq(&addr, &[b"1", b"explode", b"auto", b"msgpack", b""]).unwrap();
    assert!(reply_error(&reply).contains("Invalid RPC action 'explode'"));
    let reply = raw_zmq(&addr, &[b"2", b"ping", b"auto", b"pickle9", b""]).unwrap();
    assert!(reply_error(&reply).contains("Unsupported serializer 'pickle9'"));
    let reply = raw_zmq(
        &addr,
        &[b"3", b"get_item", b"auto", b"msgpack", b"\xc1\xc1"],
    )
    .unwrap();
    assert!(reply_error(&reply).contains("TypeError") || reply_error(&reply).contains("codec"));
    let reply = raw_zmq(&addr, &[b"4", b"ping"]).unwrap();
    assert!(reply_error(&reply).contains("5 frames"));
    assert!(
        raw_zmq(&addr, &[b"garbage"]).is_none(),
        "no id: dropped, not answered"
    );
    let options = ClientOptions {
        auth: Auth::Open,
        ..ClientOptions::default()
    };
    let client = Client::connect_with(&addr, options).unwrap();
    assert_eq!(client.ping().unwrap(), Value::from("pong"));
}

#[test]
fn malformed_and_truncated_native_streams_do_not_hurt_the_server() {
    let running = serve("unix://*");
    let path = running.address().trim_start_matches("unix://").to_string();
    let garbage: &[&[u8]] = &[
        b"\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x03\x00\x00\x00\x01\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00nope!",
        b"\x01\x00\x00\x00\x05\x00\x00\x00",
        b"\x03\x00\x00",
        b"",
    ];
    for bytes in garbage {
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(bytes).unwrap();
        drop(s);
    }
    // A request before the handshake is refused by closing the connection.
    let mut s = UnixStream::connect(&path).unwrap();
    let frames = vec![
        Bytes::from_static(b"1"),
        Bytes::from_static(b"ping"),
        Bytes::from_static(b"auto"),
        Bytes::from_static(b"msgpack"),
        Bytes::new(),
    ];
    let mut msg =
        farcall::channel::frame::encode_header(farcall::channel::frame::Kind::Request, &frames);
    frames.iter().for_each(|f| msg.extend_from_slice(f));
    s.write_all(&msg).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        std::io::Read::read(&mut s, &mut buf).unwrap_or(0),
        0,
        "closed, no answer"
    );
    // A peer that says half a header and stalls does not block others.
    let mut stalled = UnixStream::connect(&path).unwrap();
    stalled.write_all(b"\x03\x00").unwrap();
    let client = Client::connect(&running.address()).unwrap();
    assert_eq!(client.ping().unwrap(), Value::from("pong"));
    drop(stalled);
}

#[test]
fn oversized_messages_are_refused() {
    let running = serve_with(
        "unix://*",
        ServerOptions {
            max_message: 1 << 20,
            ..ServerOptions::default()
        },
    );
    let big = Client::connect(&running.address()).unwrap();
    let payload = Value::Bytes(Bytes::from(vec![0u8; 2 << 20]));
    match big.set_item("blob", payload) {
        Err(Error::Disconnected(_)) => {}
        other => panic!("{other:?}"),
    }
    let other = Client::connect(&running.address()).unwrap();
    assert_eq!(other.ping().unwrap(), Value::from("pong"));
}

// ---- across processes -------------------------------------------------

#[test]
fn a_server_in_another_process() {
    for address in ["unix://*", "tcp://127.0.0.1:*"] {
        let server = spawn_server(address);
        let client = Client::connect(&server.address).unwrap();
        let counter = proxy_of(client.get_item("counter").unwrap());
        assert_eq!(
            counter.call_method("add", vec![Value::Int(4)]).unwrap(),
            Value::Int(4)
        );
        let pid = counter.call_method("pid", vec![]).unwrap();
        assert_eq!(pid.as_i64(), Some(server.child.id() as i64));
    }
}

#[test]
fn a_dead_server_process_fails_calls_at_once() {
    // Over ZeroMQ too: the DEALER's monitor reports the dropped connection
    // (libzmq alone would reconnect and leave the call to its timeout).
    for address in ["unix://*", "tcp+native://127.0.0.1:*", "tcp://127.0.0.1:*"] {
        let mut server = spawn_server(address);
        let client = Client::connect(&server.address).unwrap();
        let counter = proxy_of(client.get_item("counter").unwrap());
        let started = Instant::now();
        let crashed = counter.call_method("crash", vec![]);
        assert!(
            matches!(crashed, Err(Error::Disconnected(_))),
            "{address}: {crashed:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{address}: {:?}",
            started.elapsed()
        );
        assert!(matches!(client.ping(), Err(Error::Disconnected(_))));
        server.child.wait().unwrap();
    }
}

#[test]
fn closing_a_server_process_always_answers() {
    // The close reply must reach the client even though the server process
    // exits right after sending it (over ZeroMQ, a background thread sends).
    for address in ["tcp://127.0.0.1:*", "unix://*"] {
        for _ in 0..15 {
            let mut server = spawn_server(address);
            let client = Client::connect(&server.address).unwrap();
            let started = Instant::now();
            client
                .close_server()
                .unwrap_or_else(|e| panic!("{address}: {e}"));
            assert!(started.elapsed() < Duration::from_secs(2));
            assert!(server.child.wait().unwrap().success());
        }
    }
}

#[test]
fn ten_thousand_calls_in_flight_all_come_back_on_every_transport() {
    // More than libzmq's default high-water mark (1000), past which a
    // ROUTER drops replies unless told not to.
    for address in addresses() {
        let running = serve(&address);
        let client = Client::connect(&running.address()).unwrap();
        let counter = proxy_of(client.get_item("counter").unwrap());
        let futures = add_one_async(&counter, 10_000);
        for (i, f) in futures.into_iter().enumerate() {
            let got = f.wait(Some(Duration::from_secs(30)));
            assert_eq!(
                got.unwrap(),
                Value::Int(i as i64 + 1),
                "{address}: call {i}"
            );
        }
    }
}

/// A server driven by an event loop of the caller's: `poll(2)` on
/// `poll_fd`, then `serve_ready` (as a QtRPCServer's socket notifier does),
/// on every transport; the close wakes the descriptor too.
#[test]
fn a_foreign_event_loop_serves_through_the_poll_fd() {
    for address in addresses() {
        let server = farcall::Server::bind(&address).expect("bind");
        server.publish("numbers", Value::List(vec![Value::Int(7)]));
        let target = server.address().to_string();
        let caller = thread::spawn(move || {
            let client = Client::connect(&target).expect("connect");
            for _ in 0..200 {
                assert_eq!(
                    client.get_item("numbers").unwrap(),
                    Value::List(vec![Value::Int(7)])
                );
            }
            client.close_server().expect("close_server");
        });
        server.run_lazy().expect("run_lazy");
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut wakeups, mut served) = (0, 0);
        while server.running() && Instant::now() < deadline {
            let mut fd = libc::pollfd {
                fd: server.poll_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut fd, 1, 100) };
            if n > 0 {
                wakeups += 1;
                served += server.serve_ready(Duration::from_millis(20)).unwrap();
            }
        }
        caller.join().unwrap();
        assert!(!server.running(), "{address}: the close reached the loop");
        assert!(
            served >= 200,
            "{address}: {served} requests in {wakeups} wake-ups"
        );
    }
}
