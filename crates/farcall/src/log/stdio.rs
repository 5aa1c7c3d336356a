//! Capture of stdout and stderr: fds 1 and 2 become pipes read by threads
//! that turn every line into a record ([`capture_stdio`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::level;
use super::record::Record;
use super::sender::{LogSender, IN_LOG};
use crate::error::Result;
use crate::sync::lock;

/// File descriptors replaced by pipes whose lines become log records;
/// [`finish`](StdioCapture::finish) puts the originals back.
pub struct StdioCapture {
    streams: Vec<Captured>,
}

struct Captured {
    fd: RawFd,
    saved: OwnedFd,
    done: Arc<(Mutex<bool>, Condvar)>,
}

/// Captures fds 1 and 2: lines written to stdout become `INFO` records of
/// logger `stdout`, lines written to stderr `WARNING` records of logger
/// `stderr`, reading `[name.stdout] line` (pyacq's levels and text), sent
/// through `sender`. Output of native code
/// and of subprocesses that inherit the descriptors is captured too.
pub fn capture_stdio(sender: Arc<LogSender>) -> Result<StdioCapture> {
    let mut capture = StdioCapture {
        streams: Vec::new(),
    };
    capture
        .streams
        .push(capture_fd(1, "stdout", level::INFO, sender.clone())?);
    capture
        .streams
        .push(capture_fd(2, "stderr", level::WARNING, sender)?);
    line_buffer_c_stdout();
    Ok(capture)
}

/// C's stdout is fully buffered on a pipe; make native `printf` output
/// arrive line by line, as on a terminal.
fn line_buffer_c_stdout() {
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            static mut stdout: *mut libc::FILE;
        }
        // SAFETY: `stdout` is libc's stream; setvbuf with a null buffer lets
        // libc allocate. Nothing in this process has written through it yet
        // in the intended use (a freshly started child).
        unsafe {
            let stream = stdout;
            if !stream.is_null() {
                libc::fflush(stream);
                libc::setvbuf(stream, std::ptr::null_mut(), libc::_IOLBF, 0);
            }
        }
    }
}

fn cvt(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn capture_fd(fd: RawFd, stream: &str, levelno: i64, sender: Arc<LogSender>) -> Result<Captured> {
    let mut ends = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    cvt(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    // SAFETY: duplicating a descriptor we were given; the copy is ours.
    let saved = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    let saved = unsafe { OwnedFd::from_raw_fd(saved) };
    // SAFETY: dup2 onto a standard descriptor; the write end stays ours and
    // is closed below, so `fd` holds the only copy.
    cvt(unsafe { libc::dup2(write_end.as_raw_fd(), fd) })?;
    drop(write_end);
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let finished = done.clone();
    let stream = stream.to_string();
    let started = std::thread::Builder::new()
        .name(format!("farcall-{stream}"))
        .spawn(move || {
            IN_LOG.with(|f| f.set(true));
            read_lines(read_end, &stream, levelno, &sender);
            *lock(&finished.0) = true;
            finished.1.notify_all();
        });
    if let Err(e) = started {
        // SAFETY: restoring the descriptor we replaced.
        unsafe { libc::dup2(saved.as_raw_fd(), fd) };
        return Err(e.into());
    }
    Ok(Captured { fd, saved, done })
}

/// How long a line without its newline waits before it is sent as is.
const PARTIAL_LINE_WAIT: Duration = Duration::from_millis(200);
/// A line longer than this is sent in pieces.
const MAX_LINE: usize = 64 << 10;

fn read_lines(pipe: OwnedFd, stream: &str, levelno: i64, sender: &LogSender) {
    let fd = pipe.as_raw_fd();
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    let emit = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        // As pyacq's parent logged a child's output: `[name.stdout] line`.
        let text = format!("[{}.{stream}] {text}", super::names::process_name());
        let mut r = Record::new(stream, levelno, &text);
        r.thread_name = stream.to_string();
        r.py_thread_name = stream.to_string();
        r.pathname = format!("<{stream}>");
        r.filename = r.pathname.clone();
        sender.send(r);
    };
    loop {
        if !pending.is_empty() {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polling one descriptor we own.
            let ready = unsafe { libc::poll(&mut pfd, 1, PARTIAL_LINE_WAIT.as_millis() as i32) };
            if ready == 0 {
                emit(&pending);
                pending.clear();
                continue;
            }
        }
        // SAFETY: reading into a live buffer of the given length.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        let mut rest = &chunk[..n as usize];
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            pending.extend_from_slice(&rest[..=end]);
            emit(&pending);
            pending.clear();
            rest = &rest[end + 1..];
        }
        pending.extend_from_slice(rest);
        if pending.len() >= MAX_LINE {
            emit(&pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        emit(&pending);
    }
}

impl StdioCapture {
    /// A copy of the original descriptor behind `fd` (1 or 2), e.g. for
    /// crash reports that must not depend on the capturing thread.
    pub fn saved_fd(&self, fd: RawFd) -> Option<RawFd> {
        self.streams
            .iter()
            .find(|s| s.fd == fd)
            .map(|s| s.saved.as_raw_fd())
    }

    /// Puts the original descriptors back and waits at most `timeout` for
    /// the reading threads to send what was written before (a subprocess
    /// that still holds the pipe keeps its thread going after that).
    pub fn finish(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for s in &self.streams {
            // SAFETY: putting back the descriptor saved at capture.
            unsafe { libc::dup2(s.saved.as_raw_fd(), s.fd) };
        }
        for s in &self.streams {
            let left = deadline.saturating_duration_since(Instant::now());
            let done = lock(&s.done.0);
            let _ = s.done.1.wait_timeout_while(done, left, |d| !*d);
        }
    }
}
