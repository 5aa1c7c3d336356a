//! Round-trip latency and pipelined throughput of farcall, next to raw
//! ping-pong floors, all between two processes and in one run.
//!
//! `cargo run --release -p farcall-bench --bin rpc_bench` (see README.md).
//! The binary re-runs itself as the server process (`rpc_bench serve KIND
//! ADDRESS`). `SECTIONS=latency,pipelined,across,scale,death` (the default)
//! picks what runs, e.g. `SECTIONS=pipelined` under a profiler;
//! `TRANSPORTS=unix,tcp+native,tcp` (the default) which transports;
//! `EXTRA_THREAD=1` starts one idle thread in each process (a control).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use farcall::protocol::{Action, ReturnType};
use farcall::transport::spin;
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

    /// Sleeps, for calls still pending when the process dies.
    pub fn sleep_ms(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }

    /// A new object, returned by proxy (for create/release cycles).
    pub fn make(&self) -> farcall::ObjectRef {
        farcall::object(Counter { count: 0 })
    }
}

const MSG: usize = 64;

fn main() {
    if std::env::var_os("EXTRA_THREAD").is_some() {
        // A control: one idle thread in each process (this one and the
        // servers it starts), to see what a second thread costs by itself
        // (the kernel's per-call file references, see bench/README.md).
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(3600));
        });
    }
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "serve" {
        serve(&args[2], &args[3]);
        return;
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let sections =
        std::env::var("SECTIONS").unwrap_or_else(|_| "latency,pipelined,across,scale,death".into());
    let wants = |name: &str| sections.split(',').any(|s| s.trim() == name);
    // `TRANSPORTS=unix,tcp+native,tcp` (the default) picks the transports
    // of the latency and pipelined sections.
    let transports = std::env::var("TRANSPORTS").unwrap_or_else(|_| "unix,tcp+native,tcp".into());
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let unix_raw = dir.join(format!("farcall-bench-raw-{pid}.sock"));

    println!("rounds per measurement: {rounds}; all figures between two processes");
    println!("each floor and its farcall line are measured interleaved (blocks of {BLOCK})");
    println!("round trips: both processes on CPU 0 (but across CPUs: one each);");
    println!("pipelined: the client on any CPU; waits spin up to 50µs unless noted (spin.rs)");
    if wants("latency") {
        println!(
            "\n{:<34} {:>10} {:>10} {:>12}",
            "round trip", "median", "p99", "vs floor"
        );
    }
    let pairs = [
        (
            "Unix socket",
            "raw-unix",
            unix_raw.to_str().unwrap(),
            "unix://*",
        ),
        ("TCP", "raw-tcp", "127.0.0.1:0", "tcp+native://127.0.0.1:*"),
        (
            "libzmq DEALER/ROUTER",
            "raw-zmq",
            "tcp://127.0.0.1:*",
            "tcp://127.0.0.1:*",
        ),
    ];
    let mut rates = Vec::new();
    let all_cpus = affinity();
    for (floor_name, raw_kind, raw_address, address) in pairs {
        let name = scheme(address).trim_end_matches("://");
        if !transports.split(',').any(|t| t.trim() == name) {
            continue;
        }
        if wants("latency") {
            // One CPU for both ends: on this VM a wake-up across CPUs costs
            // 10-90 µs depending on whether the other vCPU was idle, which
            // swamps what is measured. Children inherit the affinity.
            set_affinity(&[0]);
            let mut raw = RawEcho::start(raw_kind, raw_address);
            let mut far = FarcallEcho::start(address);
            let [raw_samples, far_samples] =
                interleave(rounds, [&mut || raw.once(), &mut || far.once()]);
            set_affinity(&all_cpus);
            report(&format!("raw Rust {floor_name} echo"), &raw_samples, None);
            report(
                &format!("farcall add(1, 2), {}", scheme(address)),
                &far_samples,
                Some(&raw_samples),
            );
        }
        if wants("pipelined") {
            // Client and server free to run on both CPUs at once.
            rates.push((
                scheme(address),
                FarcallEcho::start(address).pipelined(rounds),
            ));
        }
    }
    if wants("pipelined") {
        println!("\n{:<34} {:>14}", "pipelined async calls", "calls/s");
        for (name, rate) in rates {
            println!("{:<34} {:>14.0}", format!("farcall {name}"), rate);
        }
    }
    if wants("across") {
        across_cpus(rounds, &unix_raw, &all_cpus);
    }
    if wants("scale") {
        scale(rounds);
    }
    if wants("death") {
        death(&unix_raw);
    }
}

/// Round trips with the client and the server on two different CPUs,
/// where each sleeping side pays a cross-CPU wake-up: farcall with its
/// spin-before-sleep wait (the default) and without it (spin budget 0 on
/// both sides), next to the raw Unix echo.
fn across_cpus(rounds: usize, raw_path: &std::path::Path, all_cpus: &[usize]) {
    let [client_cpu, server_cpu, ..] = all_cpus[..] else {
        println!("\n(one CPU: no round trips across CPUs)");
        return;
    };
    println!(
        "\n{:<34} {:>10} {:>10} {:>12}",
        format!("across CPUs ({client_cpu} -> {server_cpu})"),
        "median",
        "p99",
        "vs floor"
    );
    set_affinity(&[server_cpu]);
    let mut raw = RawEcho::start("raw-unix", raw_path.to_str().unwrap());
    let mut sleeping = FarcallEcho::start_with("unix://*", &[("FARCALL_SPIN_US", "0")]);
    let mut spinning = FarcallEcho::start("unix://*");
    set_affinity(&[client_cpu]);
    let [raw_samples, sleeping_samples, spinning_samples] = interleave(
        rounds,
        [
            &mut || raw.once(),
            &mut || {
                spin::set_budget(Duration::ZERO);
                sleeping.once()
            },
            &mut || {
                spin::set_budget(spin::DEFAULT_BUDGET);
                spinning.once()
            },
        ],
    );
    set_affinity(all_cpus);
    report("raw Rust Unix socket echo", &raw_samples, None);
    report(
        "farcall unix://, no spinning",
        &sleeping_samples,
        Some(&raw_samples),
    );
    report(
        "farcall unix://, spin 50µs",
        &spinning_samples,
        Some(&raw_samples),
    );
}

/// Per-call latency with many live proxies or many clients, next to the
/// same server's baseline; the server's memory over create/release cycles.
fn scale(rounds: usize) {
    // Pinned like the round trips above (see there), so the three latency
    // lines compare like with like.
    set_affinity(&[0]);
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
    let opts = farcall::protocol::command::CallObj::opts(&make, vec![], vec![]);
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

/// Times from a SIGKILL of the server process to the moment every call
/// pending on it has failed (five async calls nobody waits on, and one sync
/// call waiting in another thread), per transport, next to the time a raw
/// blocked read of a Unix or TCP socket takes to see the same death.
fn death(unix_raw: &std::path::Path) {
    const RUNS: usize = 20;
    println!(
        "\n{:<34} {:>10} {:>10} {:>12}",
        "SIGKILL -> every pending call failed", "median", "max", "vs floor"
    );
    let kill = |child: &Child| {
        // SAFETY: kill(2) on a child we own.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    };
    let raw = |kind: &str, address: &str| -> Vec<Duration> {
        (0..RUNS)
            .map(|_| {
                let (mut child, address) = spawn(kind, address);
                let mut conn: Box<dyn ReadWrite + Send> = match kind {
                    "raw-unix" => Box::new(UnixStream::connect(&address).unwrap()),
                    _ => Box::new(TcpStream::connect(&address).unwrap()),
                };
                let reader = std::thread::spawn(move || {
                    let mut buf = [0u8; 1];
                    let _ = conn.read(&mut buf);
                    Instant::now()
                });
                std::thread::sleep(Duration::from_millis(50));
                let killed = Instant::now();
                kill(&child);
                let seen = reader.join().unwrap();
                let _ = child.wait();
                seen.saturating_duration_since(killed)
            })
            .collect()
    };
    let floors = [
        ("unix", raw("raw-unix", unix_raw.to_str().unwrap())),
        ("tcp", raw("raw-tcp", "127.0.0.1:0")),
    ];
    for (floor, samples) in &floors {
        report_max(
            &format!("raw {floor} socket: blocked read sees it"),
            samples,
            None,
        );
    }
    for (address, floor) in [
        ("unix://*", 0),
        ("tcp+native://127.0.0.1:*", 1),
        ("tcp://127.0.0.1:*", 1),
    ] {
        let samples: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let (mut child, address) = spawn("farcall", address);
                let client = Client::connect(&address).unwrap();
                let counter = client.proxy(client.get_item("counter").unwrap()).unwrap();
                let sleep = counter.attr("sleep_ms");
                let pending: Vec<_> = (0..5)
                    .map(|_| sleep.call_async(vec![Value::Int(60_000)], vec![]).unwrap())
                    .collect();
                let waiting = std::thread::spawn(move || {
                    let r = sleep.call(vec![Value::Int(60_000)]);
                    assert!(r.is_err());
                    Instant::now()
                });
                std::thread::sleep(Duration::from_millis(50));
                let killed = Instant::now();
                kill(&child);
                let mut last = killed;
                for f in pending {
                    assert!(f.wait(Some(Duration::from_secs(30))).is_err());
                    last = last.max(Instant::now());
                }
                last = last.max(waiting.join().unwrap());
                let _ = child.wait();
                last.saturating_duration_since(killed)
            })
            .collect();
        report_max(
            &format!("farcall {}", scheme(address)),
            &samples,
            Some(&floors[floor].1),
        );
    }
}

/// [`report`], with the largest sample instead of the 99th percentile.
fn report_max(name: &str, samples: &[Duration], floor: Option<&[Duration]>) {
    let med = percentile(samples, 0.5);
    let max = percentile(samples, 1.0);
    let ratio = floor
        .map(|f| {
            format!(
                "{:.2}x",
                med.as_secs_f64() / percentile(f, 0.5).as_secs_f64().max(1e-9)
            )
        })
        .unwrap_or_default();
    println!(
        "{name:<34} {:>8.2}ms {:>8.2}ms {ratio:>12}",
        med.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
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
    spawn_with(kind, address, &[])
}

/// [`spawn`] with extra environment variables.
fn spawn_with(kind: &str, address: &str, env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["serve", kind, address])
        .envs(env.iter().copied())
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

/// A raw echo server in another process and a connection to it.
struct RawEcho {
    child: Child,
    conn: RawConn,
}

enum RawConn {
    Stream(Box<dyn ReadWrite>),
    Zmq(zmq::Socket),
}

impl RawEcho {
    fn start(kind: &str, address: &str) -> RawEcho {
        let (child, address) = spawn(kind, address);
        let conn = match kind {
            "raw-unix" => RawConn::Stream(Box::new(UnixStream::connect(&address).unwrap())),
            "raw-tcp" => {
                let s = TcpStream::connect(&address).unwrap();
                s.set_nodelay(true).unwrap();
                RawConn::Stream(Box::new(s))
            }
            _ => {
                let s = zmq::Context::new().socket(zmq::DEALER).unwrap();
                s.connect(&address).unwrap();
                RawConn::Zmq(s)
            }
        };
        RawEcho { child, conn }
    }

    /// One round trip of a 64-byte message.
    fn once(&mut self) {
        let msg = [7u8; MSG];
        let mut buf = [0u8; MSG];
        match &mut self.conn {
            RawConn::Stream(s) => {
                s.write_all(&msg).unwrap();
                s.read_exact(&mut buf).unwrap();
            }
            RawConn::Zmq(s) => {
                s.send(&msg[..], 0).unwrap();
                s.recv_bytes(0).unwrap();
            }
        }
    }
}

impl Drop for RawEcho {
    fn drop(&mut self) {
        if let RawConn::Zmq(s) = &self.conn {
            let _ = s.send(&b""[..], 0);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A farcall server in another process and a client calling `add(1, 2)`.
struct FarcallEcho {
    child: Child,
    client: Client,
    add: ProxyRef,
}

impl FarcallEcho {
    fn start(address: &str) -> FarcallEcho {
        FarcallEcho::start_with(address, &[])
    }

    /// A server started with extra environment variables.
    fn start_with(address: &str, env: &[(&str, &str)]) -> FarcallEcho {
        let (child, address) = spawn_with("farcall", address, env);
        let client = Client::connect(&address).unwrap();
        let Value::Proxy(counter) = client.get_item("counter").unwrap() else {
            panic!("counter is not a proxy")
        };
        let add = ProxyRef {
            attributes: vec!["add".into()],
            ..counter
        };
        FarcallEcho { child, client, add }
    }

    /// One sync call.
    fn once(&mut self) {
        let r = self
            .client
            .call_obj(&self.add, vec![Value::Int(1), Value::Int(2)], vec![])
            .unwrap();
        assert_eq!(r, Value::Int(3));
    }

    /// Async calls through a proxy, in batches of 1000, all waited for:
    /// calls per second.
    fn pipelined(&self, rounds: usize) -> f64 {
        let add = farcall::Proxy::borrowed(self.add.clone());
        let batch = 1000;
        // At least 200k calls (about 0.4 s): shorter runs mostly measure
        // where the scheduler happened to put the two processes.
        let batches = (rounds / batch).max(200);
        let t = Instant::now();
        for _ in 0..batches {
            let futures: Vec<_> = (0..batch)
                .map(|_| {
                    add.call_async(vec![Value::Int(1), Value::Int(2)], vec![])
                        .unwrap()
                })
                .collect();
            for f in futures {
                assert_eq!(
                    f.wait(Some(Duration::from_secs(30))).unwrap(),
                    Value::Int(3)
                );
            }
        }
        (batches * batch) as f64 / t.elapsed().as_secs_f64()
    }
}

impl Drop for FarcallEcho {
    fn drop(&mut self) {
        let _ = self.client.close_server();
        let _ = self.child.wait();
    }
}

/// Round trips per block when two systems are measured interleaved.
const BLOCK: usize = 500;

/// Times each of `systems` in alternating blocks, after a warm-up of
/// each, so all see the same machine (this one drifts a lot: idle vCPUs
/// wake slowly, and other work comes and goes).
fn interleave<const N: usize>(
    rounds: usize,
    mut systems: [&mut dyn FnMut(); N],
) -> [Vec<Duration>; N] {
    for _ in 0..rounds / 10 {
        systems.iter_mut().for_each(|once| once());
    }
    let mut samples: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    while samples[0].len() < rounds {
        for (once, out) in systems.iter_mut().zip(&mut samples) {
            for _ in 0..BLOCK {
                let t = Instant::now();
                once();
                out.push(t.elapsed());
            }
        }
    }
    samples
}

/// The CPUs this process may run on.
fn affinity() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Restricts this process (and the children it starts from now on) to
/// `cpus`.
fn set_affinity(cpus: &[usize]) {
    // SAFETY: as above; sched_setaffinity reads the set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

fn scheme(address: &str) -> &str {
    &address[..address.find("://").map_or(0, |i| i + 3)]
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
