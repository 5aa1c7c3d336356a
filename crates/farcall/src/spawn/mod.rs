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

use std::time::Duration;

#[cfg(doc)]
use crate::client::Client;

mod child;
mod options;
mod parent;
mod plumbing;
mod stderr;

pub use child::{
    is_spawned_child, read_child_config, report_error, report_ready, serve_as_child, watch_parent,
    ChildConfig,
};
pub use options::SpawnOptions;
pub use parent::ProcessSpawner;

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
