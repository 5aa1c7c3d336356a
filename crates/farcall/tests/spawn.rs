//! Process spawning: a Rust child (`farcall-child`) started by
//! `ProcessSpawner`, its startup failures, stopping, killing, and the
//! lifeline that keeps a child from outliving its parent.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use farcall::{Error, ProcessSpawner, Proxy, SpawnOptions, Value};
use serde_json::json;

const CHILD: &str = env!("CARGO_BIN_EXE_farcall-child");

fn child_options() -> SpawnOptions {
    SpawnOptions::program(CHILD)
}

/// The socket file of a `unix://` address.
fn socket_file(address: &str) -> std::path::PathBuf {
    address
        .strip_prefix("unix://")
        .expect("a unix:// address")
        .into()
}

fn counter(spawner: &ProcessSpawner) -> Proxy {
    Proxy::adopt(spawner.client().get_item("counter").unwrap()).unwrap()
}

/// True once process `pid` is gone or a zombie (an orphan's zombie may
/// linger when init does not reap it).
fn process_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            state.starts_with('Z') || state.starts_with('X')
        }
    }
}

fn wait_ended(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if process_ended(pid) {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    process_ended(pid)
}

#[test]
fn spawn_call_and_stop() {
    let started = Instant::now();
    let child = ProcessSpawner::spawn(child_options().name("worker-1")).unwrap();
    let startup = started.elapsed();
    assert_ne!(child.pid(), std::process::id());
    assert_eq!(child.name(), Some("worker-1"));
    assert!(
        child.address().starts_with("unix://"),
        "{}",
        child.address()
    );

    let counter = counter(&child);
    assert_eq!(
        counter.call_method("add", vec![Value::Int(2)]).unwrap(),
        Value::Int(2)
    );
    assert_eq!(
        counter.call_method("add", vec![Value::Int(3)]).unwrap(),
        Value::Int(5)
    );
    let pid = counter.call_method("pid", vec![]).unwrap();
    assert_eq!(pid.as_i64(), Some(child.pid() as i64));

    // What the child was told.
    let config = child.client().get_item("config").unwrap();
    assert_eq!(config.get("name").and_then(Value::as_str), Some("worker-1"));
    assert_eq!(
        config.get("parent_pid").and_then(Value::as_i64),
        Some(std::process::id() as i64)
    );
    assert_eq!(config.get("extra").and_then(Value::as_str), Some("{}"));
    assert_eq!(child.poll().unwrap(), None);

    let stopping = Instant::now();
    let status = child.stop(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "{status}");
    assert!(stopping.elapsed() < Duration::from_secs(2));
    assert!(!socket_file(child.address()).exists());
    assert_eq!(child.poll().unwrap(), Some(status));
    // stop() again just reports the status.
    assert_eq!(child.stop(Duration::from_secs(1)).unwrap(), status);
    assert!(matches!(
        counter.call_method("add", vec![Value::Int(1)]),
        Err(Error::Disconnected(_))
    ));
    eprintln!("spawn to ready: {startup:?}");
}

#[test]
fn extra_and_address_reach_the_child() {
    let options = child_options()
        .address("tcp+native://127.0.0.1:*")
        .extra(json!({"device": "dev0", "rate": 1000}));
    let child = ProcessSpawner::spawn(options).unwrap();
    assert!(child.address().starts_with("tcp+native://127.0.0.1:"));
    let config = child.client().get_item("config").unwrap();
    let extra: serde_json::Value =
        serde_json::from_str(config.get("extra").and_then(Value::as_str).unwrap()).unwrap();
    assert_eq!(extra, json!({"device": "dev0", "rate": 1000}));
    assert_eq!(config.get("name"), Some(&Value::None));
    assert!(child.stop(Duration::from_secs(5)).unwrap().success());
}

#[test]
fn kill_fails_calls_at_once() {
    let child = ProcessSpawner::spawn(child_options()).unwrap();
    let address = child.address().to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let caller = thread::spawn(move || {
        // Another thread: its own connection to the child.
        let client = farcall::Client::get(&address).unwrap();
        let counter = Proxy::adopt(client.get_item("counter").unwrap()).unwrap();
        counter.call_method("add", vec![Value::Int(1)]).unwrap();
        ready_tx.send(()).unwrap();
        let started = Instant::now();
        let result = counter.call_method("sleep_ms", vec![Value::Int(5000)]);
        (result, started.elapsed())
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    thread::sleep(Duration::from_millis(50)); // let the long call reach the child
    let killed = Instant::now();
    child.kill().unwrap();
    let (result, _) = caller.join().unwrap();
    assert!(matches!(result, Err(Error::Disconnected(_))), "{result:?}");
    assert!(killed.elapsed() < Duration::from_secs(1));

    // The next call fails at once too.
    let next = Instant::now();
    let r = child.client().get_item("counter");
    assert!(matches!(r, Err(Error::Disconnected(_))), "{r:?}");
    assert!(next.elapsed() < Duration::from_secs(1));

    let status = child.wait(Some(Duration::from_secs(2))).unwrap().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(child.poll().unwrap(), Some(status));
    // Killing or stopping a dead child is harmless.
    child.kill().unwrap();
    let socket = socket_file(child.address());
    assert!(socket.exists(), "a killed child cannot clean up");
    assert_eq!(child.stop(Duration::from_millis(100)).unwrap(), status);
    assert!(!socket.exists(), "stop() removes the dead child's socket");
}

#[test]
fn kill_then_poll_reports_exit() {
    let child = ProcessSpawner::spawn(child_options()).unwrap();
    child.kill().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let status = loop {
        if let Some(status) = child.poll().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "poll never saw the exit");
        thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn wait_honours_its_timeout() {
    let child = ProcessSpawner::spawn(child_options()).unwrap();
    let started = Instant::now();
    assert_eq!(child.wait(Some(Duration::from_millis(200))).unwrap(), None);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_millis(700), "{waited:?}");
    assert_eq!(child.wait(Some(Duration::ZERO)).unwrap(), None);
    // wait() from another thread returns when the child exits.
    thread::scope(|s| {
        let waiter = s.spawn(|| child.wait(None));
        thread::sleep(Duration::from_millis(20));
        child.kill().unwrap();
        let status = waiter.join().unwrap().unwrap().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    });
}

#[test]
fn a_child_that_reports_an_error() {
    let started = Instant::now();
    let err = ProcessSpawner::spawn(child_options().extra(json!({"fail": true}))).unwrap_err();
    match &err {
        Error::Exception { type_name, message } => {
            assert_eq!(type_name, "RuntimeError");
            assert!(message.contains("told to fail at startup"), "{message}");
        }
        other => panic!("expected a RuntimeError, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_child_that_dies_before_answering() {
    let err = ProcessSpawner::spawn(child_options().extra(json!({"die": "the device is on fire"})))
        .unwrap_err();
    let Error::Disconnected(message) = &err else {
        panic!("expected Disconnected, got {err:?}");
    };
    assert!(message.contains("exit status: 7"), "{message}");
    assert!(message.contains("the device is on fire"), "{message}");
}

#[test]
fn a_program_that_exits_at_once() {
    let started = Instant::now();
    let err = ProcessSpawner::spawn(SpawnOptions::program("false")).unwrap_err();
    let Error::Disconnected(message) = &err else {
        panic!("expected Disconnected, got {err:?}");
    };
    assert!(message.contains("exit status: 1"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_program_that_does_not_exist() {
    let err =
        ProcessSpawner::spawn(SpawnOptions::program("/nonexistent/farcall-child")).unwrap_err();
    let Error::Io(e) = &err else {
        panic!("expected Io, got {err:?}");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("/nonexistent/farcall-child"));
}

#[test]
fn extra_must_be_an_object() {
    let err = ProcessSpawner::spawn(child_options().extra(json!([1, 2]))).unwrap_err();
    assert!(matches!(err, Error::Exception { ref type_name, .. } if type_name == "TypeError"));
}

/// Children of this process whose command line is `args`.
fn children_with_args(args: &[&str]) -> Vec<u32> {
    let me = std::process::id();
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit(')').next().and_then(|rest| {
                rest.split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<u32>().ok())
            });
            ppid == Some(me)
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .ok()
                    .as_deref()
                    == Some(&wanted[..])
        })
        .collect()
}

#[test]
fn start_timeout_is_honoured() {
    // `sleep` never reads its stdin, so it never answers.
    let options = SpawnOptions::program("sleep")
        .arg("31.5")
        .start_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = ProcessSpawner::spawn(options).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, Error::Timeout(t) if t == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // The silent child was killed and reaped.
    assert_eq!(children_with_args(&["sleep", "31.5"]), Vec::<u32>::new());
}

#[test]
fn closing_the_lifeline_ends_the_child() {
    let child = ProcessSpawner::spawn(child_options()).unwrap();
    counter(&child)
        .call_method("add", vec![Value::Int(1)])
        .unwrap();
    child.close_lifeline();
    let status = child.wait(Some(Duration::from_secs(3))).unwrap();
    let status = status.expect("the child outlived its lifeline");
    assert!(status.success(), "{status}");
    assert!(!socket_file(child.address()).exists());
}

#[test]
fn dropping_the_spawner_stops_the_child() {
    let child = ProcessSpawner::spawn(child_options()).unwrap();
    let pid = child.pid();
    let started = Instant::now();
    drop(child);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Reaped by the spawner, so the pid is gone at once.
    assert!(process_ended(pid));
}

#[test]
fn a_child_does_not_outlive_its_parent() {
    // farcall-child --parent spawns a child of its own and prints its pid
    // and address;
    // killing the parent outright (no destructor runs) must end the child.
    let mut parent = Command::new(CHILD)
        .arg("--parent")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (pid, address) = line.trim().split_once(' ').expect("pid and address");
    let grandchild: u32 = pid.parse().expect("a pid");
    let socket = socket_file(address);
    assert!(socket.exists());
    assert!(!process_ended(grandchild));
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(
        wait_ended(grandchild, Duration::from_secs(3)),
        "child {grandchild} outlived its parent"
    );
    assert!(
        !socket.exists(),
        "the child removes its socket on the way out"
    );
}

#[test]
fn several_children_at_once() {
    let children: Vec<ProcessSpawner> = thread::scope(|s| {
        let spawning: Vec<_> = (0..3)
            .map(|_| s.spawn(|| ProcessSpawner::spawn(child_options()).unwrap()))
            .collect();
        spawning.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, child) in children.iter().enumerate() {
        let c = counter(child);
        assert_eq!(
            c.call_method("add", vec![Value::Int(i as i64)]).unwrap(),
            Value::Int(i as i64)
        );
    }
    let pids: std::collections::HashSet<u32> = children.iter().map(|c| c.pid()).collect();
    assert_eq!(pids.len(), 3);
    for child in &children {
        assert!(child.stop(Duration::from_secs(5)).unwrap().success());
    }
}

#[test]
fn stop_after_the_client_was_closed() {
    let child = ProcessSpawner::spawn(child_options()).unwrap();
    child.client().close();
    let started = Instant::now();
    let status = child.stop(Duration::from_secs(5)).unwrap();
    // The close request cannot go out, so the lifeline ends the child.
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn stop_kills_a_busy_child_after_the_timeout() {
    let child = ProcessSpawner::spawn(child_options()).unwrap();
    counter(&child)
        .attr("sleep_ms")
        .call_off(vec![Value::Int(5000)], vec![])
        .unwrap();
    let started = Instant::now();
    let status = child.stop(Duration::from_millis(300)).unwrap();
    let took = started.elapsed();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}
