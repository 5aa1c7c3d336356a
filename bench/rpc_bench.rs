//! Round-trip latency and pipelined throughput of farcall, next to raw
//! ping-pong floors, all between two processes and in one run.
//!
//! `cargo run --release -p farcall-bench --bin rpc_bench` (see README.md).
//! The binary re-runs itself as the server process (`rpc_bench serve KIND
//! ADDRESS`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use farcall::protocol::{Action, ReturnType};
use farcall::{Client, ProxyRef, Server, Value};

#[farcall::remote]
pub struct Counter {
    pub count: i64,
}

#[farcall::remote]
impl Counter {
    pub fn add(&mut self, a: i64, b: i64) -> i64 {
        self.count += 1;
        a + b
    }

    /// A new object, returned by proxy (for create/release cycles).
    pub fn make(&self) -> farcall::ObjectRef {
        farcall::object(Counter { count: 0 })
    }
}

const MSG: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "serve" {
        serve(&args[2], &args[3]);
        return;
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let unix_raw = dir.join(format!("farcall-bench-raw-{pid}.sock"));

    println!("rounds per measurement: {rounds}; all figures between two processes\n");
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "round trip", "median", "p99", "vs floor"
    );
    let raw_unix = measure_raw("raw-unix", unix_raw.to_str().unwrap(), rounds);
    let raw_tcp = measure_raw("raw-tcp", "127.0.0.1:0", rounds);
    let raw_zmq = measure_raw("raw-zmq", "tcp://127.0.0.1:*", rounds);
    report("raw Rust Unix socket echo", &raw_unix, None);
    report("raw Rust TCP echo", &raw_tcp, None);
    report("raw Rust libzmq DEALER/ROUTER echo", &raw_zmq, None);
    let native_unix = measure_farcall("unix://*", rounds);
    let native_tcp = measure_farcall("tcp+native://127.0.0.1:*", rounds);
    let zmq_tcp = measure_farcall("tcp://127.0.0.1:*", rounds);
    report(
        "farcall add(1, 2), unix://",
        &native_unix.0,
        Some(&raw_unix),
    );
    report(
        "farcall add(1, 2), tcp+native://",
        &native_tcp.0,
        Some(&raw_tcp),
    );
    report(
        "farcall add(1, 2), ZeroMQ tcp://",
        &zmq_tcp.0,
        Some(&raw_zmq),
    );
    println!("\n{:<34} {:>14}", "pipelined async calls", "calls/s");
    for (name, (_, rate)) in [
        ("farcall unix://", &native_unix),
        ("farcall tcp+native://", &native_tcp),
        ("farcall ZeroMQ tcp://", &zmq_tcp),
    ] {
        println!("{name:<34} {:>14.0}", rate);
    }
    scale(rounds);
}

/// Per-call latency with many live proxies or many clients, next to the
/// same server's baseline; the server's memory over create/release cycles.
fn scale(rounds: usize) {
    let (mut child, address) = spawn("farcall", "unix://*");
    let client = Client::connect(&address).unwrap();
    let Value::Proxy(counter) = client.get_item("counter").unwrap() else {
        panic!("counter is not a proxy")
    };
    let add = ProxyRef {
        attributes: vec!["add".into()],
        ..counter.clone()
    };
    let call = || {
        let r = client
            .call_obj(&add, vec![Value::Int(1), Value::Int(2)], vec![])
            .unwrap();
        assert_eq!(r, Value::Int(3));
    };
    let baseline = time(rounds, call);
    println!(
        "\n{:<34} {:>10} {:>10} {:>12}",
        "scale (unix://)", "median", "p99", "vs baseline"
    );
    report("add(1, 2), baseline", &baseline, None);

    // 100k live proxies held by this client (100k references on the server).
    let proxies: Vec<farcall::Proxy> = (0..100_000)
        .map(|_| farcall::Proxy::adopt(client.get_item("counter").unwrap()).unwrap())
        .collect();
    let with_proxies = time(rounds, call);
    report(
        "add(1, 2), 100k live proxies",
        &with_proxies,
        Some(&baseline),
    );
    drop(proxies);

    // 100 other clients connected to the same server.
    let others: Vec<Client> = (0..100)
        .map(|_| Client::connect(&address).unwrap())
        .collect();
    let with_clients = time(rounds, call);
    report(
        "add(1, 2), 100 more clients",
        &with_clients,
        Some(&baseline),
    );
    drop(others);

    // The server's memory over a million create/release cycles.
    let make = ProxyRef {
        attributes: vec!["make".into()],
        ..counter
    };
    let opts = farcall::client::call_opts(&make, vec![], vec![]);
    let cycle = |n: usize| {
        for _ in 0..n / 1000 {
            let made: Vec<_> = (0..1000)
                .map(|_| {
                    client
                        .send(Action::CallObj, &opts, ReturnType::Auto)
                        .unwrap()
                })
                .collect();
            for f in made {
                let Value::Proxy(p) = f.wait(Some(Duration::from_secs(30))).unwrap() else {
                    panic!("make returns a proxy")
                };
                client.delete_later(&p).unwrap();
            }
        }
        client.ping().unwrap(); // every release before it has run
    };
    cycle(20_000); // warm up the allocator
    let before = rss_kib(child.id());
    let t = Instant::now();
    cycle(1_000_000);
    let after = rss_kib(child.id());
    println!(
        "server RSS over 1M create/release cycles: {before} KiB -> {after} KiB ({:+} KiB), {:.1} s",
        after as i64 - before as i64,
        t.elapsed().as_secs_f64()
    );
    client.close_server().unwrap();
    let _ = child.wait();
}

/// A process's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn report(name: &str, samples: &[Duration], floor: Option<&[Duration]>) {
    let (med, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
    let ratio = floor
        .map(|f| {
            format!(
                "{:.2}x",
                med.as_secs_f64() / percentile(f, 0.5).as_secs_f64()
            )
        })
        .unwrap_or_default();
    println!(
        "{name:<34} {:>8.1}µs {:>8.1}µs {ratio:>12}",
        med.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}

fn percentile(samples: &[Duration], q: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s[((s.len() - 1) as f64 * q) as usize]
}

/// Starts this binary as a server process; returns it and its address.
fn spawn(kind: &str, address: &str) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["serve", kind, address])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_string())
}

fn serve(kind: &str, address: &str) {
    match kind {
        "raw-unix" => {
            let _ = std::fs::remove_file(address);
            let l = UnixListener::bind(address).unwrap();
            println!("{address}");
            let (s, _) = l.accept().unwrap();
            echo(s);
            let _ = std::fs::remove_file(address);
        }
        "raw-tcp" => {
            let l = TcpListener::bind(address).unwrap();
            println!("{}", l.local_addr().unwrap());
            let (s, _) = l.accept().unwrap();
            s.set_nodelay(true).unwrap();
            echo(s);
        }
        "raw-zmq" => {
            let ctx = zmq::Context::new();
            let s = ctx.socket(zmq::ROUTER).unwrap();
            s.bind(address).unwrap();
            println!("{}", s.get_last_endpoint().unwrap().unwrap());
            while let Ok(parts) = s.recv_multipart(0) {
                if parts[1].is_empty() {
                    break;
                }
                s.send_multipart(parts, 0).unwrap();
            }
        }
        "farcall" => {
            let server = Server::bind(address).unwrap();
            server.publish("counter", farcall::object(Counter { count: 0 }));
            println!("{}", server.address());
            server.run_forever().unwrap();
        }
        other => panic!("unknown server kind {other}"),
    }
}

fn echo<S: Read + Write>(mut s: S) {
    let mut buf = [0u8; MSG];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
}

fn measure_raw(kind: &str, address: &str, rounds: usize) -> Vec<Duration> {
    let (mut child, address) = spawn(kind, address);
    let msg = [7u8; MSG];
    let mut buf = [0u8; MSG];
    let samples = match kind {
        "raw-unix" | "raw-tcp" => {
            let mut s: Box<dyn ReadWrite> = if kind == "raw-unix" {
                Box::new(UnixStream::connect(&address).unwrap())
            } else {
                let s = TcpStream::connect(&address).unwrap();
                s.set_nodelay(true).unwrap();
                Box::new(s)
            };
            time(rounds, || {
                s.write_all(&msg).unwrap();
                s.read_exact(&mut buf).unwrap();
            })
        }
        _ => {
            let ctx = zmq::Context::new();
            let s = ctx.socket(zmq::DEALER).unwrap();
            s.connect(&address).unwrap();
            let samples = time(rounds, || {
                s.send(&msg[..], 0).unwrap();
                s.recv_bytes(0).unwrap();
            });
            s.send(&b""[..], 0).unwrap();
            samples
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    samples
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn time(rounds: usize, mut once: impl FnMut()) -> Vec<Duration> {
    for _ in 0..rounds / 10 {
        once(); // warm up
    }
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            once();
            t.elapsed()
        })
        .collect()
}

/// Sync round trips of `counter.add(1, 2)`, then pipelined async calls.
fn measure_farcall(address: &str, rounds: usize) -> (Vec<Duration>, f64) {
    let (mut child, address) = spawn("farcall", address);
    let client = Client::connect(&address).unwrap();
    let Value::Proxy(counter) = client.get_item("counter").unwrap() else {
        panic!("counter is not a proxy")
    };
    let add = ProxyRef {
        attributes: vec!["add".into()],
        ..counter
    };
    let samples = time(rounds, || {
        let r = client
            .call_obj(&add, vec![Value::Int(1), Value::Int(2)], vec![])
            .unwrap();
        assert_eq!(r, Value::Int(3));
    });
    let opts = farcall::client::call_opts(&add, vec![Value::Int(1), Value::Int(2)], vec![]);
    let batch = 1000;
    let batches = (rounds / batch).max(20);
    let t = Instant::now();
    for _ in 0..batches {
        let futures: Vec<_> = (0..batch)
            .map(|_| {
                client
                    .send(Action::CallObj, &opts, ReturnType::Auto)
                    .unwrap()
            })
            .collect();
        for f in futures {
            f.wait(Some(Duration::from_secs(30))).unwrap();
        }
    }
    let rate = (batches * batch) as f64 / t.elapsed().as_secs_f64();
    client.close_server().unwrap();
    let _ = child.wait();
    (samples, rate)
}
