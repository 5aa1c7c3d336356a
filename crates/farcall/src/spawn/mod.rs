//! Process spawning: start a child that serves farcall, and control it.
//!
//! The parent side is [`ProcessSpawner`]; the child side is
//! [`read_child_config`], [`report_ready`] / [`report_error`] and
//! [`watch_parent`] (or [`serve_as_child`], which does all of it for a Rust
//! child). The protocol between them (see `docs/spawning.md`):
//!
//! 1. The parent creates a Unix socket pair. One end becomes the child's
//!    stdin; the parent keeps the other for the child's whole life (the
//!    *lifeline*). The child's stdout is inherited; its stderr is piped and
//!    forwarded line by line to the parent's stderr, keeping a tail for
//!    error messages.
//! 2. The parent writes one line of JSON on the lifeline:
//!    `{"address", "name", "parent_pid", "extra"}`.
//! 3. The child binds a server on `address` and answers one line of JSON:
//!    `{"address": "<bound address>"}` or `{"error": "<text>"}`.
//! 4. The parent waits for that line (bounded by `start_timeout`, and
//!    noticing early when the child exits), then connects a [`Client`].
//! 5. The child reads its stdin until end of stream: when the parent dies
//!    or drops the lifeline, the child exits at once.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::auth::{self, Key};
use crate::client::{Client, ClientOptions};
use crate::error::{Error, Result};
use crate::handshake::Auth;
use crate::protocol::{Action, ReturnType};
use crate::server::{Server, ServerOptions};
use crate::sync::lock;
use crate::transport::stream::wait_fd;
use crate::value::Value;

/// Default bound on the wait for a child's first reply.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `Drop` lets a child close politely before killing it.
pub const DROP_STOP_TIMEOUT: Duration = Duration::from_secs(1);
/// How many lines of a child's stderr are kept for error messages.
pub const STDERR_TAIL_LINES: usize = 64;
/// How long the child waits for its configuration line on stdin.
pub const CONFIG_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest reply line accepted from a child (a traceback fits easily).
const MAX_REPLY: usize = 1 << 20;
/// Longest configuration line accepted by a child.
const MAX_CONFIG: usize = 64 << 20;
/// A stderr "line" longer than this is forwarded in pieces.
const MAX_STDERR_LINE: usize = 64 << 10;
/// Grace given to a child that failed to start before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(500);

// ---- options ------------------------------------------------------------

/// What to start and how: program, arguments, environment, and what the
/// child is told on its lifeline.
#[derive(Clone, Debug)]
pub struct SpawnOptions {
    /// The program to run (looked up in `PATH` when it has no slash).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// A name for the child (sent to it; used for its logs).
    pub name: Option<String>,
    /// The address the child binds (default `unix://*`, a fresh socket).
    pub address: String,
    /// Any JSON object, passed to the child as `extra`.
    pub extra: Json,
    /// How long the child may take to report its address (default 10 s).
    pub start_timeout: Duration,
    /// Environment variables set for the child, on top of ours.
    pub env: Vec<(OsString, OsString)>,
    /// The key the child's server requires (default: this process's key,
    /// sent on the lifeline, never in arguments or the environment);
    /// [`Auth::Open`] starts it without authentication.
    pub auth: Auth,
}

impl SpawnOptions {
    /// A Python child: `$FARCALL_PYTHON` (or `python3`) `-m farcall.bootstrap`.
    pub fn python() -> SpawnOptions {
        let python = std::env::var_os("FARCALL_PYTHON").unwrap_or_else(|| "python3".into());
        let mut options = SpawnOptions::program(python);
        options.args = vec!["-m".into(), "farcall.bootstrap".into()];
        options
    }

    /// Any program that speaks the child side of the protocol (for instance
    /// a Rust binary calling [`serve_as_child`]).
    pub fn program(program: impl Into<PathBuf>) -> SpawnOptions {
        SpawnOptions {
            program: program.into(),
            args: Vec::new(),
            name: None,
            address: "unix://*".into(),
            extra: Json::Object(Default::default()),
            start_timeout: DEFAULT_START_TIMEOUT,
            env: Vec::new(),
            auth: Auth::ProcessKey,
        }
    }

    /// Sets how the child's server authenticates.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the child's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the address the child binds.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// Sets the `extra` object passed to the child (must be a JSON object).
    pub fn extra(mut self, extra: Json) -> Self {
        self.extra = extra;
        self
    }

    /// Sets how long the child may take to report its address.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Sets one environment variable for the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

impl Default for SpawnOptions {
    /// Same as [`SpawnOptions::python`].
    fn default() -> Self {
        SpawnOptions::python()
    }
}

// ---- the parent side ----------------------------------------------------

/// A child process serving farcall, with a [`Client`] connected to it.
///
/// Dropping it stops the child (politely, then by force after
/// [`DROP_STOP_TIMEOUT`]); if this process dies, the child notices on its
/// lifeline and exits. Every method takes `&self`: the type is `Send + Sync`.
pub struct ProcessSpawner {
    client: Client,
    address: String,
    name: Option<String>,
    program: String,
    pid: u32,
    child: Mutex<Child>,
    /// Readable when the child exits (Linux), so waits need no polling.
    pidfd: Option<OwnedFd>,
    lifeline: Mutex<Option<UnixStream>>,
    stderr: Arc<StderrTail>,
}

impl ProcessSpawner {
    /// Starts the child, waits for it to report its address and connects.
    ///
    /// Errors: `Io` if the program cannot be started; `Disconnected` if the
    /// child exits or closes its stdin before answering (with its exit
    /// status and the tail of its stderr); an `Exception` of type
    /// `RuntimeError` carrying the child's text if it answers
    /// `{"error": ...}`; `Timeout` if no answer comes within
    /// `start_timeout`; `Protocol` if the answer is not what the protocol
    /// says. In every error case the child is killed and reaped.
    pub fn spawn(options: SpawnOptions) -> Result<ProcessSpawner> {
        let extra = match &options.extra {
            Json::Null => Json::Object(Default::default()),
            obj @ Json::Object(_) => obj.clone(),
            other => {
                return Err(Error::type_error(format!(
                    "extra must be a JSON object, not {other}"
                )))
            }
        };
        let program = options.program.display().to_string();
        let (lifeline, child_end) = UnixStream::pair()?;
        let mut command = Command::new(&options.program);
        command
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::from(OwnedFd::from(child_end)))
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped());
        let spawned = command.spawn();
        // The command holds our copy of the child's end: close it now, or
        // the child's exit would not show as end of stream on the lifeline.
        drop(command);
        let mut child = spawned.map_err(|e| {
            Error::Io(io::Error::new(
                e.kind(),
                format!("cannot start {program}: {e}"),
            ))
        })?;
        let pid = child.id();
        let stderr = StderrTail::forward(child.stderr.take().expect("stderr is piped"));
        let mut starting = Starting {
            child: Some(child),
            program: program.clone(),
            pid,
            stderr: stderr.clone(),
        };

        let key = match &options.auth {
            Auth::ProcessKey => Some(auth::process_key()?),
            Auth::Key(k) => Some(k.clone()),
            Auth::Open => None,
        };
        let config = json!({
            "address": options.address,
            "name": options.name,
            "parent_pid": std::process::id(),
            "key": key.as_ref().map(|k| auth::encode_hex(k.as_bytes())),
            "extra": extra,
        });
        let mut line = serde_json::to_vec(&config)
            .map_err(|e| Error::Codec(format!("spawn configuration: {e}")))?;
        line.push(b'\n');
        let deadline = Instant::now() + options.start_timeout;
        lifeline.set_nonblocking(true)?;
        match send_all(lifeline.as_raw_fd(), &line, Some(deadline)) {
            Ok(true) => {}
            // The child is not reading; the timeout below says so.
            Ok(false) => return Err(starting.fail_timeout(options.start_timeout)),
            // A child that is gone already: reading says how it ended.
            Err(e) if is_peer_gone(&e) => {}
            Err(e) => return Err(starting.fail(e.into())),
        }

        let reply = match starting.read_reply(&lifeline, deadline) {
            Ok(Some(reply)) => reply,
            Ok(None) => return Err(starting.fail_timeout(options.start_timeout)),
            Err(e) => return Err(starting.fail(e)),
        };
        let address = match parse_reply(&reply) {
            Ok(Reply::Address(a)) => a,
            Ok(Reply::Error(text)) => return Err(starting.fail_reported(&text)),
            Err(e) => return Err(starting.fail(e)),
        };
        let client_options = ClientOptions {
            auth: key.map_or(Auth::Open, Auth::Key),
            ..ClientOptions::default()
        };
        let client = match Client::connect_with(&address, client_options) {
            Ok(c) => c,
            Err(e) => return Err(starting.fail(e)),
        };
        let child = starting.child.take().expect("still starting");
        Ok(ProcessSpawner {
            client,
            address,
            name: options.name,
            program,
            pid,
            child: Mutex::new(child),
            pidfd: pidfd_open(pid),
            lifeline: Mutex::new(Some(lifeline)),
            stderr,
        })
    }

    /// The client connected to the child's server.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The address the child's server is bound to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The name given in [`SpawnOptions::name`], if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The last lines the child wrote to its stderr (at most
    /// [`STDERR_TAIL_LINES`]).
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr.lines()
    }

    /// The exit status if the child has exited (reaping it), else `None`.
    pub fn poll(&self) -> Result<Option<ExitStatus>> {
        Ok(lock(&self.child).try_wait()?)
    }

    /// Waits for the child to exit, at most `timeout` (`None`: no limit);
    /// `Ok(None)` if it is still running when the time is up.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Option<ExitStatus>> {
        self.wait_until(timeout.map(|t| Instant::now() + t))
    }

    /// Sends SIGKILL to the child (it is reaped by the next `poll`, `wait`,
    /// `stop` or drop). Killing a child that has exited does nothing.
    pub fn kill(&self) -> Result<()> {
        let mut child = lock(&self.child);
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        Ok(child.kill()?)
    }

    /// Stops the child: asks its server to close, waits up to `timeout`
    /// for it to exit, then kills it; returns how it ended. The client is
    /// closed too. If the close request cannot be answered (the client was
    /// closed, the connection is gone), the lifeline is closed instead,
    /// which makes the child exit at once.
    pub fn stop(&self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        if self.poll()?.is_none() {
            // Polite first. A busy child runs out the timeout below.
            let closed = self
                .client
                .send(Action::Close, &Value::None, ReturnType::Auto)
                .and_then(|closing| closing.wait(Some(timeout)));
            if let Err(e) = closed {
                if !matches!(e, Error::Timeout(_)) {
                    self.close_lifeline();
                }
            }
        }
        let status = match self.wait_until(Some(deadline))? {
            Some(status) => status,
            None => {
                log::warn!(
                    "child {} (pid {}) did not exit within {timeout:?}; killing it",
                    self.program,
                    self.pid
                );
                self.kill()?;
                lock(&self.child).wait()?
            }
        };
        self.client.close();
        // A child that was killed (or left through its lifeline) could not
        // remove its socket file.
        if let Some(path) = socket_path(&self.address) {
            remove_socket_file(&path);
        }
        Ok(status)
    }

    /// Closes this side of the lifeline: the child exits at once, as if
    /// this process had died. `poll` or `wait` then reap it.
    pub fn close_lifeline(&self) {
        lock(&self.lifeline).take();
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<Option<ExitStatus>> {
        let mut nap = Duration::from_millis(1);
        loop {
            if let Some(status) = self.poll()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            // Slices keep a missed wake-up (or an odd kernel) from hanging.
            let slice = now + Duration::from_millis(100);
            match &self.pidfd {
                Some(fd) => {
                    wait_fd(
                        fd.as_raw_fd(),
                        libc::POLLIN,
                        Some(deadline.map_or(slice, |d| d.min(slice))),
                    )?;
                }
                None => {
                    let left = deadline.map_or(nap, |d| d.saturating_duration_since(now));
                    std::thread::sleep(nap.min(left));
                    nap = (nap * 2).min(Duration::from_millis(20));
                }
            }
        }
    }
}

impl Drop for ProcessSpawner {
    fn drop(&mut self) {
        if let Err(e) = self.stop(DROP_STOP_TIMEOUT) {
            log::warn!("stopping child {} (pid {}): {e}", self.program, self.pid);
        }
    }
}

impl std::fmt::Debug for ProcessSpawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessSpawner")
            .field("program", &self.program)
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("address", &self.address)
            .finish()
    }
}

/// A child between spawn and its reply; kills and reaps it on failure.
struct Starting {
    child: Option<Child>,
    program: String,
    pid: u32,
    stderr: Arc<StderrTail>,
}

enum Reply {
    Address(String),
    Error(String),
}

impl Starting {
    /// Reads the reply line until `deadline` (`None`: time is up). The
    /// child's exit or end of stream is an error saying how it ended.
    fn read_reply(&mut self, lifeline: &UnixStream, deadline: Instant) -> Result<Option<Vec<u8>>> {
        let fd = lifeline.as_raw_fd();
        let mut buf = Vec::new();
        loop {
            let eof = match read_available(fd, &mut buf, MAX_REPLY) {
                Ok(eof) => eof,
                Err(e) if is_peer_gone(&e) => true,
                Err(e) => return Err(e.into()),
            };
            if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                buf.truncate(end);
                return Ok(Some(buf));
            }
            if buf.len() >= MAX_REPLY {
                return Err(Error::Protocol(format!(
                    "child {} (pid {}) sent a reply line longer than {MAX_REPLY} bytes",
                    self.program, self.pid
                )));
            }
            // A child whose stdin is still held by a descendant exits
            // without end of stream: watch the process too.
            let exited = self.child_mut().try_wait()?;
            if eof || exited.is_some() {
                return Err(self.ended_early(eof));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let slice = Instant::now() + Duration::from_millis(50);
            wait_fd(fd, libc::POLLIN, Some(deadline.min(slice)))?;
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("still starting")
    }

    /// The error for a child that exited or closed its stdin early.
    fn ended_early(&mut self, eof: bool) -> Error {
        let status = self.finish(EXIT_GRACE);
        let how = match status {
            Some(s) => format!("exited with {s}"),
            None if eof => "closed its stdin (the lifeline)".to_string(),
            None => "ended".to_string(),
        };
        Error::Disconnected(format!(
            "child {} (pid {}) {how} before reporting its address{}",
            self.program,
            self.pid,
            self.stderr.describe()
        ))
    }

    fn fail_reported(&mut self, text: &str) -> Error {
        let status = self.finish(EXIT_GRACE);
        let status = status.map_or(String::new(), |s| format!(" ({s})"));
        Error::exception(
            "RuntimeError",
            format!(
                "child {} (pid {}) failed to start{status}:\n{}",
                self.program,
                self.pid,
                text.trim_end()
            ),
        )
    }

    fn fail_timeout(&mut self, timeout: Duration) -> Error {
        self.finish(Duration::ZERO);
        log::warn!(
            "child {} (pid {}) did not report its address within {timeout:?}; killed it{}",
            self.program,
            self.pid,
            self.stderr.describe()
        );
        Error::Timeout(timeout)
    }

    fn fail(&mut self, error: Error) -> Error {
        self.finish(Duration::ZERO);
        error
    }

    /// Gives the child `grace` to exit on its own, then kills it; reaps it
    /// and lets the stderr forwarder catch up. Returns the exit status
    /// when the child ended by itself.
    fn finish(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + grace;
        let mut status = None;
        loop {
            match child.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                _ => break,
            }
        }
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The tail is wanted in error messages: give the forwarder a moment
        // to read what the child wrote last (a grandchild may keep the
        // pipe open, hence the bound).
        self.stderr.wait_done(Duration::from_millis(500));
        status
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn parse_reply(line: &[u8]) -> Result<Reply> {
    let bad = |why: String| {
        Error::Protocol(format!(
            "bad reply from a spawned child ({why}): {:?}",
            String::from_utf8_lossy(&line[..line.len().min(200)])
        ))
    };
    let json: Json = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
    if let Some(error) = json.get("error").filter(|e| !e.is_null()) {
        return Ok(Reply::Error(match error {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        }));
    }
    match json.get("address") {
        Some(Json::String(a)) => Ok(Reply::Address(a.clone())),
        _ => Err(bad("no address and no error".into())),
    }
}

// ---- stderr forwarding ----------------------------------------------------

/// The last lines of a child's stderr, filled by a forwarding thread.
struct StderrTail {
    state: Mutex<TailState>,
    done: Condvar,
}

#[derive(Default)]
struct TailState {
    lines: VecDeque<String>,
    done: bool,
}

impl StderrTail {
    /// Starts a thread that copies `pipe` to our stderr line by line.
    fn forward(pipe: ChildStderr) -> Arc<StderrTail> {
        let tail = Arc::new(StderrTail {
            state: Mutex::new(TailState::default()),
            done: Condvar::new(),
        });
        let writer = tail.clone();
        let started = std::thread::Builder::new()
            .name("farcall-stderr".into())
            .spawn(move || writer.run(pipe));
        if let Err(e) = started {
            log::warn!("cannot forward a child's stderr: {e}");
            tail.finish();
        }
        tail
    }

    fn run(&self, mut pipe: ChildStderr) {
        let mut chunk = [0u8; 8192];
        let mut line = Vec::new();
        loop {
            let n = match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let mut rest = &chunk[..n];
            while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&rest[..=end]);
                self.emit(&mut line);
                rest = &rest[end + 1..];
            }
            line.extend_from_slice(rest);
            if line.len() >= MAX_STDERR_LINE {
                self.emit(&mut line);
            }
        }
        if !line.is_empty() {
            self.emit(&mut line);
        }
        self.finish();
    }

    fn emit(&self, line: &mut Vec<u8>) {
        let _ = io::stderr().lock().write_all(line);
        let text = String::from_utf8_lossy(line).trim_end().to_string();
        line.clear();
        let mut st = lock(&self.state);
        if st.lines.len() == STDERR_TAIL_LINES {
            st.lines.pop_front();
        }
        st.lines.push_back(text);
    }

    fn finish(&self) {
        lock(&self.state).done = true;
        self.done.notify_all();
    }

    fn wait_done(&self, timeout: Duration) {
        let st = lock(&self.state);
        let _ = self
            .done
            .wait_timeout_while(st, timeout, |st| !st.done)
            .unwrap_or_else(|p| p.into_inner());
    }

    fn lines(&self) -> Vec<String> {
        lock(&self.state).lines.iter().cloned().collect()
    }

    /// `"; its stderr ends with:\n..."`, or nothing when it wrote nothing.
    fn describe(&self) -> String {
        let lines = self.lines();
        if lines.is_empty() {
            String::new()
        } else {
            format!("; its stderr ends with:\n{}", lines.join("\n"))
        }
    }
}

// ---- the child side -------------------------------------------------------

/// What a spawned child is told by its parent on stdin.
#[derive(Clone, Debug, PartialEq)]
pub struct ChildConfig {
    /// The address to bind (`unix://*` unless the parent said otherwise).
    pub address: String,
    /// The name the parent gave the child, if any.
    pub name: Option<String>,
    /// The parent's process id.
    pub parent_pid: u32,
    /// The JSON object the parent passed as `extra` (`{}` by default).
    pub extra: Json,
    /// The key to require, if the parent wants authentication (it is
    /// also made this process's key by [`read_child_config`]).
    pub key: Option<Key>,
}

impl ChildConfig {
    /// How the child's server authenticates: with the parent's key, or not
    /// at all if the parent asked for an open server.
    pub fn server_auth(&self) -> Auth {
        match &self.key {
            Some(_) => Auth::ProcessKey,
            None => Auth::Open,
        }
    }
}

/// True when stdin is a socket, as it is in a child started by a
/// [`ProcessSpawner`].
pub fn is_spawned_child() -> bool {
    // SAFETY: fstat fills a plain struct; fd 0 may be closed (then it fails).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::fstat(0, &mut st) } == 0;
    ok && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}

/// Reads the parent's configuration line from stdin (fd 0), waiting at
/// most [`CONFIG_TIMEOUT`].
pub fn read_child_config() -> Result<ChildConfig> {
    let deadline = Instant::now() + CONFIG_TIMEOUT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            break end;
        }
        if buf.len() > MAX_CONFIG {
            return Err(Error::Protocol(
                "the spawn configuration line is too long".into(),
            ));
        }
        if !wait_fd(0, libc::POLLIN, Some(deadline))? {
            return Err(Error::Timeout(CONFIG_TIMEOUT));
        }
        // SAFETY: reading into a local buffer of the given length.
        let n = unsafe { libc::read(0, chunk.as_mut_ptr().cast(), chunk.len()) };
        match n {
            0 => {
                return Err(Error::Disconnected(
                    "stdin ended before the spawn configuration (was this process \
                     started by a ProcessSpawner?)"
                        .into(),
                ))
            }
            n if n > 0 => buf.extend_from_slice(&chunk[..n as usize]),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted && e.kind() != io::ErrorKind::WouldBlock {
                    return Err(e.into());
                }
            }
        }
    };
    let config = parse_config(&buf[..end])?;
    if let Some(key) = &config.key {
        auth::set_process_key(key.clone());
    }
    Ok(config)
}

fn parse_config(line: &[u8]) -> Result<ChildConfig> {
    let bad = |why: &str| Error::Protocol(format!("bad spawn configuration: {why}"));
    let json: Json = serde_json::from_slice(line).map_err(|e| bad(&e.to_string()))?;
    let Json::Object(map) = json else {
        return Err(bad("not a JSON object"));
    };
    let address = match map.get("address") {
        None | Some(Json::Null) => "unix://*".to_string(),
        Some(Json::String(a)) => a.clone(),
        Some(_) => return Err(bad("address is not a string")),
    };
    let name = match map.get("name") {
        None | Some(Json::Null) => None,
        Some(Json::String(n)) => Some(n.clone()),
        Some(_) => return Err(bad("name is not a string")),
    };
    let parent_pid = match map.get("parent_pid") {
        None | Some(Json::Null) => 0,
        Some(p) => p
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| bad("parent_pid is not a process id"))?,
    };
    let extra = match map.get("extra") {
        None | Some(Json::Null) => Json::Object(Default::default()),
        Some(e @ Json::Object(_)) => e.clone(),
        Some(_) => return Err(bad("extra is not an object")),
    };
    let key = match map.get("key") {
        None | Some(Json::Null) => None,
        Some(Json::String(hex)) => Some(
            auth::decode_hex(hex)
                .and_then(|raw| Key::from_bytes(&raw).ok())
                .ok_or_else(|| bad("key is not 64 hex digits"))?,
        ),
        Some(_) => return Err(bad("key is not a string")),
    };
    Ok(ChildConfig {
        address,
        name,
        parent_pid,
        extra,
        key,
    })
}

/// Tells the parent the server is ready at `address` (one JSON line on
/// stdin, which is a socket).
pub fn report_ready(address: &str) -> Result<()> {
    // Removed by the lifeline thread if the parent goes away.
    *lock(&BOUND_SOCKET) = socket_path(address);
    report(&json!({ "address": address }))
}

/// The socket file of the server this child reported, if any.
static BOUND_SOCKET: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Tells the parent the child failed to start; `message` (a traceback, for
/// instance) becomes part of the parent's error.
pub fn report_error(message: &str) -> Result<()> {
    report(&json!({ "error": message }))
}

fn report(reply: &Json) -> Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(|e| Error::Codec(e.to_string()))?;
    line.push(b'\n');
    let deadline = Instant::now() + CONFIG_TIMEOUT;
    match send_all(0, &line, Some(deadline)) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::Timeout(CONFIG_TIMEOUT)),
        Err(e) if is_peer_gone(&e) => Err(Error::Disconnected(format!("the parent is gone: {e}"))),
        Err(e) => Err(e.into()),
    }
}

/// Starts the lifeline thread: it reads stdin until end of stream (the
/// parent died or closed its end) and then exits this process with status 0.
/// Call it after [`read_child_config`]: it discards whatever it reads.
/// Calling it again does nothing.
pub fn watch_parent() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let started = std::thread::Builder::new()
            .name("farcall-lifeline".into())
            .spawn(|| {
                let mut chunk = [0u8; 512];
                loop {
                    // SAFETY: reading into a local buffer of the given length.
                    let n = unsafe { libc::read(0, chunk.as_mut_ptr().cast(), chunk.len()) };
                    if n > 0 {
                        continue; // nothing is expected after the configuration
                    }
                    if n < 0 {
                        match io::Error::last_os_error().kind() {
                            io::ErrorKind::Interrupted => continue,
                            io::ErrorKind::WouldBlock => {
                                let _ = wait_fd(0, libc::POLLIN, None);
                                continue;
                            }
                            _ => {}
                        }
                    }
                    log::debug!("the parent closed the lifeline; exiting");
                    // exit() runs no destructors: remove the socket file here.
                    if let Some(path) = lock(&BOUND_SOCKET).take() {
                        remove_socket_file(&path);
                    }
                    std::process::exit(0);
                }
            });
        if let Err(e) = started {
            log::error!("cannot start the lifeline thread: {e}");
        }
    });
}

/// Runs a Rust child: reads the configuration, binds a server, lets
/// `setup` publish objects, reports the address, watches the parent and
/// serves until the server is closed. A failure before the report is
/// reported to the parent (then returned).
pub fn serve_as_child(setup: impl FnOnce(&Server, &ChildConfig) -> Result<()>) -> Result<()> {
    let config = match read_child_config() {
        Ok(c) => c,
        Err(e) => {
            let _ = report_error(&e.to_string());
            return Err(e);
        }
    };
    let options = ServerOptions {
        auth: config.server_auth(),
        ..ServerOptions::default()
    };
    let server = match Server::bind_with(&config.address, options).and_then(|server| {
        setup(&server, &config)?;
        Ok(server)
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ = report_error(&e.to_string());
            return Err(e);
        }
    };
    watch_parent();
    report_ready(server.address())?;
    server.run_forever()
}

// ---- plumbing -------------------------------------------------------------

/// True for the errors a write or read gets when the other end is gone.
fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Writes all of `data` to `fd` without raising SIGPIPE, waiting for room
/// until `deadline`; `Ok(false)` if the time ran out. Works on a
/// non-socket descriptor too.
fn send_all(fd: RawFd, mut data: &[u8], deadline: Option<Instant>) -> io::Result<bool> {
    let mut socket = true;
    while !data.is_empty() {
        // SAFETY: writing from a live slice of the given length.
        let n = unsafe {
            if socket {
                libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL)
            } else {
                libc::write(fd, data.as_ptr().cast(), data.len())
            }
        };
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                if !wait_fd(fd, libc::POLLOUT, deadline).map_err(to_io)? {
                    return Ok(false);
                }
            }
            _ if e.raw_os_error() == Some(libc::ENOTSOCK) => socket = false,
            _ => return Err(e),
        }
    }
    Ok(true)
}

/// Appends what can be read from the non-blocking `fd` now (up to `max`
/// bytes in `buf`); true at end of stream.
fn read_available(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    // SAFETY: `fd` stays open for the call; ManuallyDrop keeps it open after.
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let mut chunk = [0u8; 8192];
    while buf.len() < max {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// The socket file behind a `unix://` or `ipc://` address.
fn socket_path(address: &str) -> Option<PathBuf> {
    let path = address
        .strip_prefix(crate::transport::UNIX)
        .or_else(|| address.strip_prefix("ipc://"))?;
    (!path.is_empty() && path != "*").then(|| PathBuf::from(path))
}

/// Removes `path` if it is a socket (never any other kind of file).
fn remove_socket_file(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

fn to_io(e: Error) -> io::Error {
    match e {
        Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// A descriptor that becomes readable when process `pid` exits (Linux 5.3
/// and later); `None` elsewhere. Only valid while the child is not reaped,
/// which holds: the spawner owns the child.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a plain system call; a non-negative result is a new fd
        // that we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd >= 0 {
            return Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        None
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parsing() {
        let c = parse_config(br#"{"address": "tcp+native://127.0.0.1:*", "name": "w", "parent_pid": 12, "extra": {"a": 1}}"#).unwrap();
        assert_eq!(c.address, "tcp+native://127.0.0.1:*");
        assert_eq!(c.name.as_deref(), Some("w"));
        assert_eq!(c.parent_pid, 12);
        assert_eq!(c.extra, json!({"a": 1}));
        let c = parse_config(b"{}").unwrap();
        assert_eq!(c.address, "unix://*");
        assert_eq!(c.extra, json!({}));
        assert!(parse_config(b"[1]").is_err());
        assert!(parse_config(br#"{"extra": 3}"#).is_err());
        assert!(parse_config(b"nope").is_err());
    }

    #[test]
    fn reply_parsing() {
        assert!(matches!(
            parse_reply(br#"{"address": "unix:///x"}"#),
            Ok(Reply::Address(a)) if a == "unix:///x"
        ));
        assert!(matches!(
            parse_reply(br#"{"error": "Traceback"}"#),
            Ok(Reply::Error(t)) if t == "Traceback"
        ));
        assert!(matches!(parse_reply(b"{}"), Err(Error::Protocol(_))));
        assert!(matches!(parse_reply(b"hello"), Err(Error::Protocol(_))));
    }

    #[test]
    fn spawner_is_send_sync() {
        fn is<T: Send + Sync>() {}
        is::<ProcessSpawner>();
    }
}
