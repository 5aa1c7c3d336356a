//! [`SpawnOptions`]: what to start (program, arguments, environment) and
//! what the child is told on its lifeline.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;

#[cfg(doc)]
use super::serve_as_child;
use super::DEFAULT_START_TIMEOUT;
use crate::handshake::Auth;

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
    /// Start a daemon: a process of its own session, detached from this
    /// one (no lifeline, stdio on /dev/null, not stopped when the
    /// [`ProcessSpawner`](super::ProcessSpawner) drops), which outlives
    /// this process and is reached again by address.
    pub daemon: bool,
    /// Make the child exit when this process dies (default; never for a
    /// daemon).
    pub exit_on_parent_death: bool,
    /// Where the child's stdout goes (default: ours).
    pub stdout: Option<Arc<OwnedFd>>,
    /// Where the child's stderr goes (default: a pipe copied to ours line
    /// by line, whose last lines explain a failed start).
    pub stderr: Option<Arc<OwnedFd>>,
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
            daemon: false,
            exit_on_parent_death: true,
            stdout: None,
            stderr: None,
        }
    }

    /// Sends the child's stdout to `fd` (a file, /dev/null, a pipe).
    pub fn stdout(mut self, fd: OwnedFd) -> Self {
        self.stdout = Some(Arc::new(fd));
        self
    }

    /// Sends the child's stderr to `fd` (then it is not forwarded, and a
    /// failed start cannot quote it).
    pub fn stderr(mut self, fd: OwnedFd) -> Self {
        self.stderr = Some(Arc::new(fd));
        self
    }

    /// Starts a daemon (see [`SpawnOptions::daemon`]).
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Sets whether the child exits when this process dies.
    pub fn exit_on_parent_death(mut self, exit: bool) -> Self {
        self.exit_on_parent_death = exit;
        self
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
