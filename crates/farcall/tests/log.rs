//! Log forwarding: senders, servers, the `log` bridge, stdio capture.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use farcall::log::{self as flog, LogReceiver, LogSender, LogServer, Record};

/// Collects records of a server into a channel.
fn server() -> (LogServer, mpsc::Receiver<Record>) {
    let (tx, rx) = mpsc::channel();
    let server = LogServer::bind(flog::DEFAULT_ADDRESS, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    (server, rx)
}

fn collect(rx: &mpsc::Receiver<Record>, n: usize, timeout: Duration) -> Vec<Record> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
    }
    out
}

#[test]
fn records_arrive_in_order_with_names() {
    let (server, rx) = server();
    let sender = LogSender::connect(server.address()).unwrap();
    for i in 0..1000 {
        assert!(sender.send(Record::new("test.order", 20, format!("record {i}"))));
    }
    assert!(sender.flush(Duration::from_secs(5)));
    let got = collect(&rx, 1000, Duration::from_secs(10));
    assert_eq!(got.len(), 1000);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.msg, format!("record {i}"));
        assert_eq!(r.name, "test.order");
        assert_eq!(r.levelname, "INFO");
        assert_eq!(r.process, std::process::id());
        assert_eq!(r.host_name, &*flog::host_name());
        assert_eq!(r.process_name, &*flog::process_name());
    }
    assert_eq!(sender.sent(), 1000);
    assert_eq!(sender.dropped(), 0);
    assert!(sender.close(Duration::from_secs(2)));
    assert!(!sender.send(Record::new("x", 20, "after close")));
}

#[test]
fn log_crate_records_are_forwarded() {
    let (server, rx) = server();
    let sender = LogSender::connect(server.address())
        .unwrap()
        .with_level(log::LevelFilter::Info);
    let record = |level, msg: &'static str| {
        let args = format_args!("{}", msg);
        let r = log::Record::builder()
            .args(args)
            .level(level)
            .target("rust.device")
            .file(Some("src/device.rs"))
            .line(Some(42))
            .module_path(Some("app::device"))
            .build();
        log::Log::log(&sender, &r);
    };
    record(log::Level::Debug, "filtered out");
    record(log::Level::Warn, "over temperature");
    let got = collect(&rx, 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.msg, "over temperature");
    assert_eq!((r.levelno, r.levelname.as_str()), (30, "WARNING"));
    assert_eq!(r.name, "rust.device");
    assert_eq!((r.filename.as_str(), r.lineno), ("device.rs", 42));
    assert_eq!(r.module, "app::device");
    assert!(collect(&rx, 1, Duration::from_millis(300)).is_empty());
}

#[test]
fn many_senders_lose_nothing() {
    let (server, rx) = server();
    let address = server.address().to_string();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let address = address.clone();
            std::thread::spawn(move || {
                let sender = LogSender::connect(&address).unwrap();
                for i in 0..2500 {
                    assert!(sender.send(Record::new(format!("sender{t}"), 20, i.to_string())));
                }
                assert!(sender.close(Duration::from_secs(10)));
                assert_eq!(sender.dropped(), 0);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let got = collect(&rx, 10_000, Duration::from_secs(20));
    assert_eq!(got.len(), 10_000);
    for t in 0..4 {
        let mine: Vec<_> = got
            .iter()
            .filter(|r| r.name == format!("sender{t}"))
            .map(|r| r.msg.parse::<u32>().unwrap())
            .collect();
        assert_eq!(mine, (0..2500).collect::<Vec<_>>(), "sender {t} in order");
    }
}

#[test]
fn a_gone_server_never_blocks_the_sender() {
    // Bind and close a receiver: its port is then (almost surely) free.
    // A path no socket ever listened on: a port freed by a receiver just
    // dropped could still accept (ZeroMQ closes sockets asynchronously) and
    // swallow the early records.
    let dir = std::env::temp_dir().join(format!("farcall-log-late-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let address = format!("ipc://{}", dir.join("log.sock").display());
    let sender = LogSender::with_capacity(&address, 1000).unwrap();
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..100_000 {
        let t = Instant::now();
        sender.send(Record::new("flood", 20, format!("record {i}")));
        slowest = slowest.max(t.elapsed());
    }
    let total = start.elapsed();
    assert!(total < Duration::from_secs(5), "100k sends took {total:?}");
    // Generous: a loaded machine preempts; a send never waits.
    assert!(
        slowest < Duration::from_secs(1),
        "one send took {slowest:?}"
    );
    assert!(sender.dropped() > 90_000, "dropped {}", sender.dropped());
    assert!(sender.queued() <= 1001, "queued {}", sender.queued()); // + the one in flight
    let t = Instant::now();
    sender.close(Duration::from_millis(200));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "close took {:?}",
        t.elapsed()
    );
    assert_eq!(sender.sent() + sender.dropped(), 100_000);
}

#[test]
fn a_sender_started_before_its_server_delivers_later() {
    // A path no socket ever listened on: a port freed by a receiver just
    // dropped could still accept (ZeroMQ closes sockets asynchronously) and
    // swallow the early records.
    let dir = std::env::temp_dir().join(format!("farcall-log-late-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let address = format!("ipc://{}", dir.join("log.sock").display());
    let sender = LogSender::connect(&address).unwrap();
    for i in 0..10 {
        sender.send(Record::new("early", 20, i.to_string()));
    }
    std::thread::sleep(Duration::from_millis(200));
    let (tx, rx) = mpsc::channel();
    let _server = LogServer::bind(&address, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    let got = collect(&rx, 10, Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(got.len(), 10);
}

#[test]
fn pyacq_shaped_records_are_read() {
    let mut receiver = LogReceiver::bind(flog::DEFAULT_ADDRESS).unwrap();
    let push = zmq::Context::new().socket(zmq::PUSH).unwrap();
    push.connect(receiver.address()).unwrap();
    // What pyacq's LogSender sends: record.__dict__ with msg formatted
    // and args removed, plus the three names.
    let msg = br#"{"name": "pyacq.core", "msg": "started 3", "levelname": "INFO", "levelno": 20,
        "pathname": "/x/y.py", "filename": "y.py", "module": "y", "exc_info": null, "exc_text": null,
        "stack_info": null, "lineno": 7, "funcName": "f", "created": 1700000000.25, "msecs": 250.0,
        "relativeCreated": 12.5, "thread": 140000, "threadName": "MainThread",
        "processName": "MainProcess", "process": 99, "process_name": "acq", "thread_name": "main",
        "host_name": "lab1"}"#;
    push.send(&msg[..], 0).unwrap();
    push.send(&b"not json"[..], 0).unwrap();
    push.send(&b"[1, 2]"[..], 0).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.is_empty() || receiver.rejected() < 2 {
        assert!(Instant::now() < deadline, "records did not arrive");
        got.extend(receiver.recv(Some(Duration::from_millis(100)), 10).unwrap());
    }
    let r = &got[0];
    assert_eq!(r.name, "pyacq.core");
    assert_eq!(r.msg, "started 3");
    assert_eq!(
        (
            r.host_name.as_str(),
            r.process_name.as_str(),
            r.thread_name.as_str()
        ),
        ("lab1", "acq", "main")
    );
    assert_eq!(r.created, 1700000000.25);
    assert_eq!((r.process, r.thread, r.lineno), (99, 140000, 7));
    assert!(r.extra.is_empty(), "{:?}", r.extra);
    assert_eq!(receiver.rejected(), 2);
}

/// Runs as a child when `FARCALL_LOG_CHILD` is set: captures its stdio,
/// writes through every path, and shuts down.
#[test]
fn stdio_child() {
    let Ok(address) = std::env::var("FARCALL_LOG_CHILD") else {
        return;
    };
    let extra = serde_json::json!({"log_addr": address, "log_level": "debug"});
    assert!(flog::init_forwarding(Some("rust-child"), &extra)
        .unwrap()
        .is_some());
    println!("println line");
    eprintln!("eprintln line");
    // SAFETY: writing a static buffer to the standard descriptors.
    unsafe {
        libc::write(1, b"raw fd1\n".as_ptr().cast(), 8);
        libc::write(2, b"raw fd2 no newline".as_ptr().cast(), 18);
    }
    log::debug!(target: "child.log", "a debug record");
    flog::shutdown(Duration::from_secs(5));
    println!("after shutdown: not captured");
}

#[test]
fn a_child_forwards_its_stdio_and_log_records() {
    let (server, rx) = server();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "stdio_child", "--nocapture", "--test-threads=1"])
        .env("FARCALL_LOG_CHILD", server.address())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let got = collect(&rx, 5, Duration::from_secs(10));
    let find = |msg: &str| {
        got.iter()
            .find(|r| r.msg == msg)
            .unwrap_or_else(|| panic!("{msg:?} missing from {got:#?}"))
    };
    let r = find("[rust-child.stdout] println line");
    assert_eq!((r.name.as_str(), r.levelno), ("stdout", 20));
    assert_eq!(r.process_name, "rust-child");
    assert_eq!(r.thread_name, "stdout");
    let r = find("[rust-child.stderr] eprintln line");
    assert_eq!((r.name.as_str(), r.levelno), ("stderr", 30));
    find("[rust-child.stdout] raw fd1");
    find("[rust-child.stderr] raw fd2 no newline");
    let r = find("a debug record");
    assert_eq!((r.name.as_str(), r.levelno), ("child.log", 10));
    assert_eq!(r.process_name, "rust-child");
    assert!(collect(&rx, 1, Duration::from_millis(300)).is_empty());
}
