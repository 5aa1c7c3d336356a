//! The parent side: [`ProcessSpawner`] starts a child, waits for its
//! address and controls it; `Starting` cleans up a child that fails.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use super::options::SpawnOptions;
use super::plumbing::{is_peer_gone, remove_socket_file, send_all, socket_path};
use super::stderr::StderrTail;
#[cfg(doc)]
use super::STDERR_TAIL_LINES;
use super::{DROP_STOP_TIMEOUT, EXIT_GRACE, MAX_REPLY};
use crate::auth;
use crate::channel::poll::wait_fd;
use crate::client::{Client, ClientOptions};
use crate::error::{Error, Result};
use crate::handshake::Auth;
use crate::protocol::{Action, ReturnType};
use crate::sync::lock;
use crate::value::Value;

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
    /// A daemon: not a child of this process (it was started through a
    /// double fork), so it is waited for through its pidfd and never
    /// stopped on drop.
    daemon: bool,
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
            .stdin(Stdio::from(OwnedFd::from(child_end)));
        let given = |fd: &Option<Arc<OwnedFd>>| -> io::Result<Option<Stdio>> {
            fd.as_ref()
                .map(|fd| fd.try_clone().map(Stdio::from))
                .transpose()
        };
        let (stdout, stderr) = (given(&options.stdout)?, given(&options.stderr)?);
        if options.daemon {
            command
                .stdout(stdout.unwrap_or_else(Stdio::null))
                .stderr(stderr.unwrap_or_else(Stdio::null));
            detach(&mut command);
        } else {
            command
                .stdout(stdout.unwrap_or_else(Stdio::inherit))
                .stderr(stderr.unwrap_or_else(Stdio::piped));
        }
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
        let stderr = match child.stderr.take() {
            Some(pipe) => StderrTail::forward(pipe),
            None => StderrTail::none(),
        };
        if options.daemon {
            // The first fork's child: it exits as soon as it has forked.
            let _ = child.wait();
        }
        let mut starting = Starting {
            child: Some(child),
            program: program.clone(),
            pid,
            stderr: stderr.clone(),
            daemon: options.daemon,
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
            "daemon": options.daemon,
            "exit_on_parent_death": options.exit_on_parent_death && !options.daemon,
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
        let (address, reported_pid) = match parse_reply(&reply) {
            Ok(Reply::Address(a, pid)) => (a, pid),
            Ok(Reply::Error(text)) => return Err(starting.fail_reported(&text)),
            Err(e) => return Err(starting.fail(e)),
        };
        // A daemon is the grandchild: its own id is the one it reported.
        let pid = match (options.daemon, reported_pid) {
            (true, Some(pid)) => pid,
            (true, None) => {
                let e = Error::Protocol("a daemon did not report its process id".into());
                return Err(starting.fail(e));
            }
            (false, _) => pid,
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
            // A daemon let go of its end once it reported.
            lifeline: Mutex::new((!options.daemon).then_some(lifeline)),
            stderr,
            daemon: options.daemon,
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

    /// True for a daemon ([`SpawnOptions::daemon`]).
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// The exit status if the child has exited (reaping it), else `None`.
    /// A daemon is not this process's child: once it is gone its status
    /// reads as 0, whatever it was.
    pub fn poll(&self) -> Result<Option<ExitStatus>> {
        if self.daemon {
            use std::os::unix::process::ExitStatusExt;
            return Ok(self.daemon_exited().then(|| ExitStatus::from_raw(0)));
        }
        Ok(lock(&self.child).try_wait()?)
    }

    /// Waits for the child to exit, at most `timeout` (`None`: no limit);
    /// `Ok(None)` if it is still running when the time is up.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Option<ExitStatus>> {
        self.wait_until(timeout.map(|t| Instant::now() + t))
    }

    /// Sends SIGKILL to the child and reaps it, as pyacq's `kill()` does:
    /// once it returns, `poll` reports the exit. Killing a child that has
    /// exited does nothing.
    pub fn kill(&self) -> Result<()> {
        if self.daemon {
            // SAFETY: a plain system call on the daemon's id.
            if !self.daemon_exited()
                && unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) } < 0
            {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(e.into());
                }
            }
            return self.wait_until(Some(Instant::now() + EXIT_GRACE)).map(drop);
        }
        let mut child = lock(&self.child);
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        child.kill()?;
        // SIGKILL cannot be caught: the wait is as short as the kernel's
        // teardown of the process.
        child.wait()?;
        Ok(())
    }

    /// True once the daemon has exited: its pidfd (which names that very
    /// process, whatever reuses the id later) is readable, or, without
    /// one, the id is gone or a zombie.
    fn daemon_exited(&self) -> bool {
        match &self.pidfd {
            Some(fd) => {
                wait_fd(fd.as_raw_fd(), libc::POLLIN, Some(Instant::now())).unwrap_or(false)
            }
            None => !process_alive(self.pid),
        }
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
                match self.daemon {
                    true => self.poll()?.unwrap_or_default(),
                    false => lock(&self.child).wait()?,
                }
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
        if self.daemon {
            return; // it outlives us: that is what it is for
        }
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
    /// The child was the first of a double fork and has exited already.
    daemon: bool,
}

enum Reply {
    /// The address, and the process id when the child says it.
    Address(String, Option<u32>),
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
            let exited = !self.daemon && self.child_mut().try_wait()?.is_some();
            if eof || exited {
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
    let pid = json
        .get("pid")
        .and_then(Json::as_u64)
        .and_then(|p| u32::try_from(p).ok());
    match json.get("address") {
        Some(Json::String(a)) => Ok(Reply::Address(a.clone(), pid)),
        _ => Err(bad("no address and no error".into())),
    }
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

/// A descriptor that becomes readable when process `pid` exits (Linux 5.3
/// and later); `None` elsewhere. Only valid while the child is not reaped,
/// which holds: the spawner owns the child.
/// Makes `command` start a daemon: a new session (no controlling
/// terminal, no signals of ours), then a second fork whose first child
/// exits at once, so the daemon is nobody's child here and no zombie is
/// left when it exits.
fn detach(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (setsid, fork, _exit) run
    // between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => Ok(()),
                _ => libc::_exit(0),
            }
        });
    }
}

/// True while process `pid` runs: signal 0 reaches it (or is refused),
/// and it is not a zombie waiting for its parent.
fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 checks for the process without sending anything.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    let exists = r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
    });
    exists && !zombie
}

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
    fn reply_parsing() {
        assert!(matches!(
            parse_reply(br#"{"address": "unix:///x"}"#),
            Ok(Reply::Address(a, _)) if a == "unix:///x"
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
