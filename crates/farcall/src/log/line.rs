//! How a record reads as a line of text, for `farcall logs`, the
//! `logs` example and Python's `farcall.log.RPCLogHandler` alike:
//! `12:00:01.250 [host:process:thread] LEVEL logger: message`, the host
//! only when it is not this one, the source coloured per process and the
//! rest per level.

use std::collections::HashMap;
use std::sync::Mutex;

use super::level;
use super::names::host_name;
use super::record::Record;
use crate::sync::lock;

const RESET: &str = "\x1b[0m";

/// One colour per process, handed out in order of first appearance.
const SOURCE_COLORS: [&str; 12] = [
    "\x1b[32m",
    "\x1b[36m",
    "\x1b[35m",
    "\x1b[34m",
    "\x1b[92m",
    "\x1b[96m",
    "\x1b[95m",
    "\x1b[94m",
    "\x1b[1;32m",
    "\x1b[1;36m",
    "\x1b[1;35m",
    "\x1b[1;34m",
];

/// The colour of a record's text at Python level `levelno` ("" for INFO).
pub fn level_color(levelno: i64) -> &'static str {
    match levelno {
        n if n >= level::CRITICAL => "\x1b[97;41m",
        n if n >= level::ERROR => "\x1b[1;31m",
        n if n >= level::WARNING => "\x1b[33m",
        n if n >= level::INFO => "",
        _ => "\x1b[2m",
    }
}

/// Where a record comes from: pyacq's host, process and thread names.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The host's name.
    pub host: &'a str,
    /// The process's name.
    pub process: &'a str,
    /// The thread's name.
    pub thread: &'a str,
}

impl Source<'_> {
    /// `[host:process:thread]`, or `[process:thread]` on this host.
    pub fn label(&self) -> String {
        if *self.host == *host_name() {
            format!("[{}:{}]", self.process, self.thread)
        } else {
            format!("[{}:{}:{}]", self.host, self.process, self.thread)
        }
    }
}

/// Lays out records as lines; remembers which colour each process got,
/// so one process keeps its colour for the life of the style.
#[derive(Debug, Default)]
pub struct LineStyle {
    sources: Mutex<HashMap<(String, String), &'static str>>,
}

impl LineStyle {
    /// A style with no colours handed out yet.
    pub fn new() -> LineStyle {
        LineStyle::default()
    }

    /// The line of a record made at `created` (seconds since the epoch)
    /// by `source` at `levelno`, whose text after the source is `body`.
    /// With `color`, ANSI colours mark the source and the level.
    pub fn line(
        &self,
        created: f64,
        source: Source<'_>,
        levelno: i64,
        body: &str,
        color: bool,
    ) -> String {
        let stamp = local_time(created);
        let label = source.label();
        if !color {
            return format!("{stamp} {label} {body}");
        }
        let source_color = self.source_color(source);
        let level = level_color(levelno);
        let reset = if level.is_empty() { "" } else { RESET };
        format!("{stamp} {source_color}{label}{RESET} {level}{body}{reset}")
    }

    /// The line of `record`, its body `LEVEL logger: message` followed by
    /// its traceback and stack, if any.
    pub fn record_line(&self, record: &Record, color: bool) -> String {
        let source = Source {
            host: &record.host_name,
            process: &record.process_name,
            thread: &record.thread_name,
        };
        self.line(
            record.created,
            source,
            record.levelno,
            &record.body(),
            color,
        )
    }

    fn source_color(&self, source: Source<'_>) -> &'static str {
        let mut sources = lock(&self.sources);
        let next = SOURCE_COLORS[sources.len() % SOURCE_COLORS.len()];
        sources
            .entry((source.host.to_string(), source.process.to_string()))
            .or_insert(next)
    }
}

/// `HH:MM:SS.mmm` of `created` in local time.
fn local_time(created: f64) -> String {
    let secs = created.floor() as libc::time_t;
    // SAFETY: localtime_r fills a plain struct from a plain value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    let millis = (created.fract() * 1000.0).floor() as u32;
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let style = LineStyle::new();
        let mut r = Record::new("app", level::ERROR, "boom");
        r.host_name = "h".into();
        r.process_name = "p".into();
        r.thread_name = "t".into();
        let line = style.record_line(&r, false);
        assert!(line.ends_with(" [h:p:t] ERROR app: boom"), "{line}");
        r.host_name = host_name().to_string();
        let line = style.record_line(&r, false);
        assert!(line.ends_with(" [p:t] ERROR app: boom"), "{line}");
        let line = style.record_line(&r, true);
        assert!(
            line.contains("\x1b[32m[p:t]\x1b[0m \x1b[1;31mERROR app: boom\x1b[0m"),
            "{line:?}"
        );
        r.process_name = "q".into();
        r.levelno = level::INFO;
        r.levelname = "INFO".into();
        let line = style.record_line(&r, true);
        assert!(
            line.ends_with("\x1b[36m[q:t]\x1b[0m INFO app: boom"),
            "{line:?}"
        );
        r.exc_text = Some("Traceback\n  line\n".into());
        assert!(style
            .record_line(&r, false)
            .ends_with("boom\nTraceback\n  line"));
    }
}
