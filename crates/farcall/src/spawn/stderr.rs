//! Stderr forwarding: a child's stderr is copied line by line to ours,
//! keeping the last lines ([`StderrTail`]) for error messages.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::process::ChildStderr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{MAX_STDERR_LINE, STDERR_TAIL_LINES};
use crate::sync::lock;

/// The last lines of a child's stderr, filled by a forwarding thread.
pub(super) struct StderrTail {
    state: Mutex<TailState>,
    done: Condvar,
}

#[derive(Default)]
struct TailState {
    lines: VecDeque<String>,
    done: bool,
}

impl StderrTail {
    /// A tail that stays empty (a child whose stderr is not ours: a daemon).
    pub(super) fn none() -> Arc<StderrTail> {
        let tail = Arc::new(StderrTail {
            state: Mutex::new(TailState::default()),
            done: Condvar::new(),
        });
        tail.finish();
        tail
    }

    /// Starts a thread that copies `pipe` to our stderr line by line.
    pub(super) fn forward(pipe: ChildStderr) -> Arc<StderrTail> {
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

    pub(super) fn wait_done(&self, timeout: Duration) {
        let st = lock(&self.state);
        let _ = self
            .done
            .wait_timeout_while(st, timeout, |st| !st.done)
            .unwrap_or_else(|p| p.into_inner());
    }

    pub(super) fn lines(&self) -> Vec<String> {
        lock(&self.state).lines.iter().cloned().collect()
    }

    /// `"; its stderr ends with:\n..."`, or nothing when it wrote nothing.
    pub(super) fn describe(&self) -> String {
        let lines = self.lines();
        if lines.is_empty() {
            String::new()
        } else {
            format!("; its stderr ends with:\n{}", lines.join("\n"))
        }
    }
}
