//! Safety: authentication on every transport, the pyacq opt-in, public
//! addresses, handshake deadlines, slow clients, and what a departed
//! client held.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use farcall::auth::Key;
use farcall::channel::frame::{encode_header, Kind};
use farcall::client::ClientOptions;
use farcall::{Auth, Client, Error, Proxy, Server, ServerOptions, Value};

mod support;

use support::serve_with as serve;

fn keyed(key: &Key) -> ServerOptions {
    ServerOptions {
        auth: Auth::Key(key.clone()),
        ..ServerOptions::default()
    }
}

fn client(address: &str, auth: Auth) -> farcall::Result<Client> {
    Client::connect_with(
        address,
        ClientOptions {
            auth,
            ..ClientOptions::default()
        },
    )
}

fn every_transport() -> Vec<String> {
    let n = std::process::id();
    vec![
        "unix://*".into(),
        "tcp+native://127.0.0.1:*".into(),
        "tcp://127.0.0.1:*".into(),
        format!("ipc:///tmp/farcall-safety-{n}-{}.ipc", unique()),
        format!("inproc://farcall-safety-{}", unique()),
    ]
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The next reply on a raw ZeroMQ socket, decoded as pyacq's msgpack.
fn msgpack_reply(socket: &zmq::Socket) -> Value {
    let reply = socket.recv_multipart(0).expect("a reply");
    farcall::codec::decode(
        farcall::codec::Format::Msgpack,
        &Bytes::from(reply[0].clone()),
        &[],
    )
    .unwrap()
}

fn is_permission_error(e: &Error) -> bool {
    matches!(e, Error::Exception { type_name, .. } if type_name == "PermissionError")
}

#[test]
fn the_right_key_is_admitted_and_a_wrong_one_refused_on_every_transport() {
    let key = Key::generate().unwrap();
    for address in every_transport() {
        let running = serve(&address, keyed(&key));
        let addr = running.address();
        let good = client(&addr, Auth::Key(key.clone())).expect("the right key");
        let counter = Proxy::adopt(good.get_item("counter").unwrap()).unwrap();
        assert_eq!(
            counter.call_method("add", vec![Value::Int(2)]).unwrap(),
            Value::Int(2)
        );

        let stranger = client(&addr, Auth::Key(Key::generate().unwrap()));
        let err = stranger.expect_err("a wrong key must be refused");
        assert!(is_permission_error(&err), "{address}: {err:?}");
        // An open client cannot talk to an authenticating server either.
        let open = client(&addr, Auth::Open).expect_err("no key");
        assert!(is_permission_error(&open), "{address}: {open:?}");
        // The server kept serving, and nothing ran for the refused peers.
        assert_eq!(good.ping().unwrap(), Value::from("pong"));
        assert_eq!(running.count(), 2);
    }
}

#[test]
fn a_server_without_the_key_cannot_fool_a_client() {
    // A client holding key A meets a server holding key B: the server's
    // proof (or key id) does not match, and the client refuses it.
    let running = serve("unix://*", keyed(&Key::generate().unwrap()));
    let err = client(&running.address(), Auth::Key(Key::generate().unwrap())).unwrap_err();
    assert!(is_permission_error(&err), "{err:?}");
}

#[test]
fn unauthenticated_zeromq_requests_get_an_error_and_never_run() {
    let running = serve("tcp://127.0.0.1:*", keyed(&Key::generate().unwrap()));
    let ctx = farcall::transport::zmq::context();
    let socket = ctx.socket(zmq::DEALER).unwrap();
    socket.set_rcvtimeo(2000).unwrap();
    socket.set_linger(0).unwrap();
    socket.connect(&running.address()).unwrap();
    // A pyacq-style ping and a pyacq-style call with no handshake.
    let ping: [&[u8]; 5] = [b"1", b"ping", b"auto", b"msgpack", b""];
    socket.send_multipart(ping, 0).unwrap();
    let v = msgpack_reply(&socket);
    let error = format!("{:?}", v.get("error").unwrap());
    assert!(error.contains("PermissionError"), "{error}");
    assert!(error.contains("requires authentication"), "{error}");
    // A forged proof is refused too.
    let opts = farcall::codec::encode(
        farcall::codec::Format::Msgpack,
        &Value::map([("proof", Value::Bytes(Bytes::from(vec![0u8; 32])))]),
        &mut farcall::codec::NoExport,
    )
    .unwrap();
    let auth: [&[u8]; 5] = [b"2", b"farcall_auth", b"auto", b"msgpack", &opts.body];
    socket.send_multipart(auth, 0).unwrap();
    let v = msgpack_reply(&socket);
    assert!(format!("{:?}", v.get("error").unwrap()).contains("wrong key"));
    assert_eq!(running.count(), 0);
}

#[test]
fn a_native_peer_that_skips_the_proof_is_dropped() {
    let running = serve("unix://*", keyed(&Key::generate().unwrap()));
    let path = running.address().trim_start_matches("unix://").to_string();
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A hello, then a request instead of the proof.
    let hello = farcall::handshake::Hello::Hello([1; 32], [2; 16]).to_frames();
    let request: Vec<Bytes> = ["1", "ping", "auto", "farcall", ""]
        .into_iter()
        .map(Bytes::from)
        .collect();
    for (kind, frames) in [(Kind::Hello, hello), (Kind::Request, request)] {
        s.write_all(&encode_header(kind, &frames)).unwrap();
        frames.iter().for_each(|f| s.write_all(f).unwrap());
    }
    // We get the challenge, then the connection closes: no pong.
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(!got.windows(4).any(|w| w == b"pong"), "the request ran");
    // A client of this process finds the server's key by itself.
    let c = Client::connect(&running.address()).unwrap();
    assert_eq!(c.ping().unwrap(), Value::from("pong"));
}

#[test]
fn an_open_server_needs_the_opt_in_on_both_sides() {
    let open = ServerOptions {
        auth: Auth::Open,
        ..ServerOptions::default()
    };
    let running = serve("tcp://127.0.0.1:*", open);
    let refused = client(&running.address(), Auth::ProcessKey).unwrap_err();
    assert!(is_permission_error(&refused), "{refused:?}");
    let c = client(&running.address(), Auth::Open).unwrap();
    assert_eq!(c.ping().unwrap(), Value::from("pong"));
}

#[test]
fn public_addresses_are_not_served_without_authentication() {
    for address in ["tcp+native://0.0.0.0:*", "tcp://0.0.0.0:*", "tcp://*:*"] {
        let open = ServerOptions {
            auth: Auth::Open,
            ..ServerOptions::default()
        };
        let err = match Server::bind_with(address, open) {
            Ok(_) => panic!("{address} bound without authentication"),
            Err(e) => e,
        };
        assert!(is_permission_error(&err), "{address}: {err:?}");
    }
    let insist = ServerOptions {
        auth: Auth::Open,
        allow_unauthenticated_public: true,
        ..ServerOptions::default()
    };
    let server = Server::bind_with("tcp+native://0.0.0.0:*", insist).expect("insisted by name");
    server.close();
    // With authentication, public addresses are fine.
    let server = Server::bind_with("tcp+native://0.0.0.0:*", ServerOptions::default()).unwrap();
    server.close();
}

#[test]
fn a_peer_that_never_says_hello_is_dropped_after_the_deadline() {
    let options = ServerOptions {
        handshake_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let running = serve("unix://*", options);
    let path = running.address().trim_start_matches("unix://").to_string();
    let mut silent = UnixStream::connect(&path).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server closes the silent connection");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // A half handshake (a header, then nothing) is dropped the same way.
    let mut half = UnixStream::connect(&path).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    half.write_all(&[3, 0, 0, 0, 3, 0, 0, 0]).unwrap();
    assert_eq!(half.read(&mut buf).unwrap_or(0), 0);
    let c = Client::connect(&running.address()).unwrap();
    assert_eq!(c.ping().unwrap(), Value::from("pong"));
}

#[test]
fn what_a_departed_client_held_is_released() {
    let running = serve("unix://*", ServerOptions::default());
    let baseline = running.server.object_count();
    let leaver = Client::connect(&running.address()).unwrap();
    let held: Vec<Value> = (0..5)
        .map(|_| leaver.get_item("counter").unwrap())
        .collect();
    assert_eq!(held.len(), 5);
    assert_eq!(
        running.server.object_count(),
        baseline + 1,
        "one object, five refs"
    );
    leaver.close();
    let deadline = Instant::now() + Duration::from_secs(5);
    while running.server.object_count() > baseline && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(running.server.object_count(), baseline);
}

#[test]
fn a_client_that_never_reads_does_not_stall_the_others() {
    let running = serve("unix://*", ServerOptions::default());
    let greedy = Client::connect(&running.address()).unwrap();
    let counter = Proxy::adopt(greedy.get_item("counter").unwrap()).unwrap();
    // 400 MiB of replies asked for, none read: the server stops reading
    // this client's requests once 64 MiB of its replies are queued.
    let futures: Vec<_> = (0..400)
        .map(|_| {
            counter
                .attr("blob")
                .call_async(vec![Value::from(1usize << 20)], vec![])
                .unwrap()
        })
        .collect();
    let other = Client::connect(&running.address()).unwrap();
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(other.ping().unwrap(), Value::from("pong"));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // The greedy client still gets every reply once it reads.
    for f in futures {
        let Value::Bytes(b) = f.wait(Some(Duration::from_secs(30))).unwrap() else {
            panic!("bytes")
        };
        assert_eq!(b.len(), 1 << 20);
    }
}
