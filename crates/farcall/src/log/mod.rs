//! Log forwarding between processes: records travel on their own ZeroMQ
//! channel (PUSH from senders, PULL at the log server), json-encoded with
//! the field names of Python's `logging.LogRecord` plus pyacq's
//! `host_name`, `process_name` and `thread_name` (see `docs/protocol.md`).
//!
//! - [`Record`]: one log record, from a `log` crate record or from JSON.
//! - [`LogSender`]: sends records from a background thread; [`send`]
//!   never blocks (a bounded queue; a full queue drops and counts). It is
//!   also a [`log::Log`], so `log` records of a Rust program can go to it.
//! - [`LogReceiver`] / [`LogServer`]: bind a PULL socket and hand records
//!   to a callback.
//! - [`install`], [`set_logger_address`], [`init_child`], [`shutdown`]:
//!   the process-wide forwarder for `log` records.
//! - [`capture_stdio`]: file descriptors 1 and 2 become pipes read by a
//!   thread; every line becomes a record.
//! - [`set_process_server`], [`child_options`]: this process's log server,
//!   where spawned children send their records by default.
//! - [`LineStyle`]: how a record reads as a line of text.
//!
//! Names (host, process, thread) are process-wide and shared with the
//! Python package, so Rust and Python records of one process agree.
//!
//! [`send`]: LogSender::send

use std::time::Duration;

mod forward;
mod line;
mod names;
mod receiver;
mod record;
mod sender;
mod stdio;

pub use forward::{
    child_options, clear_process_server, global_sender, init_child, init_forwarding, install,
    logger_address, process_server, saved_stderr, set_global_sender, set_local_sink,
    set_logger_address, set_process_server, shutdown, LocalSink, ProcessServer,
};
pub use line::{level_color, LineStyle, Source};
pub use names::{
    current_thread_id, host_name, process_name, registered_thread_name, set_host_name,
    set_process_name, set_thread_name, thread_name,
};
pub use receiver::{LogReceiver, LogServer};
pub use record::{level_filter, level_name, parse_level, python_level, Record};
pub use sender::LogSender;
pub use stdio::{capture_stdio, StdioCapture};

/// Records a sender queues before it starts dropping them.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// The address a log server binds when given none (loopback, any port).
pub const DEFAULT_ADDRESS: &str = "tcp://127.0.0.1:*";
/// Longest message body a sender sends; longer ones are cut.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Largest message a log server accepts (libzmq drops the peer beyond).
pub const MAX_RECORD_BYTES: i64 = 16 << 20;
/// How long [`shutdown`] and the exit of a spawned child wait for records
/// to leave by default.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Python's numeric levels.
pub mod level {
    /// `logging.DEBUG`.
    pub const DEBUG: i64 = 10;
    /// `logging.INFO`.
    pub const INFO: i64 = 20;
    /// `logging.WARNING`.
    pub const WARNING: i64 = 30;
    /// `logging.ERROR`.
    pub const ERROR: i64 = 40;
    /// `logging.CRITICAL`.
    pub const CRITICAL: i64 = 50;
    /// The `log` crate's `Trace` (Python has no name for it).
    pub const TRACE: i64 = 5;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn names() {
        let tid = current_thread_id();
        assert!(registered_thread_name(tid).is_none());
        set_thread_name("worker-a", None);
        assert_eq!(&*thread_name(), "worker-a");
        assert_eq!(&*Record::new("x", 20, "m").thread_name, "worker-a");
        assert!(!host_name().is_empty());
    }

    #[test]
    fn non_zmq_addresses_are_refused() {
        assert!(matches!(
            LogSender::connect("unix:///tmp/x"),
            Err(Error::Address(..))
        ));
        assert!(LogReceiver::bind("tcp+native://127.0.0.1:*").is_err());
    }
}
