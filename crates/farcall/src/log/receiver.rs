//! The receiving side: [`LogReceiver`] (a bound PULL socket) and
//! [`LogServer`] (a thread handing each record to a callback).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::record::Record;
use super::sender::{check_zmq_address, note};
use super::MAX_RECORD_BYTES;
use crate::error::Result;

/// A bound PULL socket that reads records (the core of a log server, for
/// callers that want to do the waiting themselves).
pub struct LogReceiver {
    socket: zmq::Socket,
    address: String,
    rejected: u64,
}

impl LogReceiver {
    /// Binds `address` (a ZeroMQ endpoint; `tcp://127.0.0.1:*` picks a free
    /// port). Binding anything but loopback is logged as a warning: anyone
    /// who can connect can send records.
    pub fn bind(address: &str) -> Result<LogReceiver> {
        check_zmq_address(address)?;
        let socket = crate::transport::zmq::context().socket(zmq::PULL)?;
        socket.set_linger(0)?;
        socket.set_maxmsgsize(MAX_RECORD_BYTES)?;
        socket.set_rcvhwm(10_000)?;
        socket.bind(address)?;
        let bound = socket
            .get_last_endpoint()?
            .unwrap_or_else(|raw| String::from_utf8_lossy(&raw).into_owned());
        if let Some(host) = bound.strip_prefix("tcp://") {
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            if !matches!(host, "127.0.0.1" | "[::1]" | "localhost") {
                log::warn!(
                    "log server bound to {bound}: any host that can reach it can send records"
                );
            }
        }
        Ok(LogReceiver {
            socket,
            address: bound,
            rejected: 0,
        })
    }

    /// The address senders connect to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Messages that were not records (not a JSON object), dropped so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Waits at most `timeout` (`None`: no limit) for records, then returns
    /// every record already there (at most `max`). Empty when none came.
    pub fn recv(&mut self, timeout: Option<Duration>, max: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(i64::MAX as u128) as i64);
        let mut first = true;
        while out.len() < max.max(1) {
            let flags = if first {
                let ready = zmq::poll(&mut [self.socket.as_poll_item(zmq::POLLIN)], timeout_ms)?;
                if ready == 0 {
                    break;
                }
                zmq::DONTWAIT
            } else {
                zmq::DONTWAIT
            };
            first = false;
            let parts = match self.socket.recv_multipart(flags) {
                Ok(parts) => parts,
                Err(zmq::Error::EAGAIN) => break,
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            match parts.first().map(|p| Record::from_json(p)) {
                Some(Ok(record)) => out.push(record),
                _ => self.rejected += 1,
            }
        }
        Ok(out)
    }
}

/// A log server: a thread that receives records from any number of
/// processes and hands each to a callback (in arrival order).
pub struct LogServer {
    address: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LogServer {
    /// Binds `address` (see [`LogReceiver::bind`]) and starts the thread.
    pub fn bind(
        address: &str,
        mut handler: impl FnMut(Record) + Send + 'static,
    ) -> Result<LogServer> {
        let mut receiver = LogReceiver::bind(address)?;
        let address = receiver.address().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("farcall-log-server".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match receiver.recv(Some(Duration::from_millis(100)), 1000) {
                        Ok(records) => records.into_iter().for_each(&mut handler),
                        Err(e) => {
                            note(&format!("log server: {e}"));
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(LogServer {
            address,
            stop,
            thread: Some(thread),
        })
    }

    /// The address senders connect to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Stops the thread (after the batch it is handling) and unbinds.
    pub fn close(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LogServer {
    fn drop(&mut self) {
        self.close();
    }
}
