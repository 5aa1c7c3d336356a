//! The child side: [`ChildConfig`] and [`read_child_config`],
//! [`report_ready`] / [`report_error`], [`watch_parent`] and
//! [`serve_as_child`].

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value as Json};

use super::plumbing::{is_peer_gone, remove_socket_file, send_all, socket_path};
#[cfg(doc)]
use super::ProcessSpawner;
use super::{CONFIG_TIMEOUT, MAX_CONFIG};
use crate::auth::{self, Key};
use crate::channel::poll::wait_fd;
use crate::error::{Error, Result};
use crate::handshake::Auth;
use crate::server::{Server, ServerOptions};
use crate::sync::lock;

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
    /// Exit when the parent dies ([`watch_parent`]); true but for
    /// daemons and children started with `exit_on_parent_death` off.
    pub exit_on_parent_death: bool,
    /// A daemon: once it has reported its address it lets go of its
    /// lifeline, and outlives its parent.
    pub daemon: bool,
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
    *lock(&LIFELINE) = Lifeline {
        watch: config.exit_on_parent_death,
        release: config.daemon,
    };
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
    let flag = |name: &str, default: bool| match map.get(name) {
        None | Some(Json::Null) => Ok(default),
        Some(Json::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(&format!("{name} is not a boolean"))),
    };
    let daemon = flag("daemon", false)?;
    Ok(ChildConfig {
        address,
        name,
        parent_pid,
        extra,
        key,
        exit_on_parent_death: flag("exit_on_parent_death", !daemon)?,
        daemon,
    })
}

/// What the configuration said of the lifeline (stdin).
#[derive(Clone, Copy)]
struct Lifeline {
    /// Exit when it ends.
    watch: bool,
    /// Let go of it once the address is reported (a daemon).
    release: bool,
}

static LIFELINE: Mutex<Lifeline> = Mutex::new(Lifeline {
    watch: true,
    release: false,
});

/// Tells the parent the server is ready at `address`, and this process's
/// id (one JSON line on stdin, which is a socket). A daemon then lets go
/// of its stdin (it becomes /dev/null): its parent may come and go.
pub fn report_ready(address: &str) -> Result<()> {
    // Removed by the lifeline thread if the parent goes away.
    *lock(&BOUND_SOCKET) = socket_path(address);
    report(&json!({ "address": address, "pid": std::process::id() }))?;
    if lock(&LIFELINE).release {
        release_stdin()?;
    }
    Ok(())
}

/// Replaces fd 0 (the lifeline) with /dev/null.
fn release_stdin() -> Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: dup2 onto fd 0, a descriptor this process owns; `null` is
    // closed after, fd 0 stays open on /dev/null.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) } < 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(())
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
/// Calling it again does nothing, and so does calling it in a daemon or a
/// child told not to exit on its parent's death.
pub fn watch_parent() {
    if !lock(&LIFELINE).watch {
        return;
    }
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
        // A daemon does not watch its parent unless told (and then it is
        // the parent's mistake: the parent never says so).
        let c = parse_config(br#"{"daemon": true}"#).unwrap();
        assert!(c.daemon && !c.exit_on_parent_death);
        let c = parse_config(br#"{"exit_on_parent_death": false}"#).unwrap();
        assert!(!c.daemon && !c.exit_on_parent_death);
        assert!(parse_config(b"{}").unwrap().exit_on_parent_death);
        assert!(parse_config(br#"{"daemon": 1}"#).is_err());
        assert!(parse_config(b"nope").is_err());
    }
}
