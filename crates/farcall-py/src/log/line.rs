//! `farcall._native._LineStyle`: the engine's line layout
//! (`farcall::log::LineStyle`) for `farcall.log.RPCLogHandler`.

use farcall::log::{self as flog, Source};
use pyo3::intern;
use pyo3::prelude::*;

use super::record::text;

/// Lays out `logging.LogRecord`s as lines, `time [source] body`, and
/// remembers the colour each process got.
#[pyclass(module = "farcall._native", name = "_LineStyle", frozen)]
pub struct LineStyle {
    inner: flog::LineStyle,
}

/// A record's attribute as text, or "" when missing or None.
fn attr(record: &Bound<'_, PyAny>, name: &Bound<'_, pyo3::types::PyString>) -> String {
    match record.getattr(name) {
        Ok(v) if !v.is_none() => text(&v),
        _ => String::new(),
    }
}

/// The names of a record's source, this process's where it has none:
/// (host, process, thread).
fn source_names(record: &Bound<'_, PyAny>) -> (String, String, String) {
    let py = record.py();
    let or = |s: String, default: &dyn Fn() -> String| if s.is_empty() { default() } else { s };
    let host = or(attr(record, intern!(py, "host_name")), &|| {
        flog::host_name().to_string()
    });
    let process = or(attr(record, intern!(py, "process_name")), &|| {
        flog::process_name().to_string()
    });
    let thread = or(attr(record, intern!(py, "thread_name")), &|| {
        let tid = record
            .getattr(intern!(py, "thread"))
            .and_then(|t| t.extract::<u64>())
            .unwrap_or(0);
        flog::registered_thread_name(tid)
            .map(|n| n.to_string())
            .unwrap_or_else(|| attr(record, intern!(py, "threadName")))
    });
    (host, process, thread)
}

#[pymethods]
impl LineStyle {
    /// A style with no colours handed out yet.
    #[new]
    fn new() -> Self {
        LineStyle {
            inner: flog::LineStyle::new(),
        }
    }

    /// The line of `record` whose text after the source is `body`; with
    /// `color`, ANSI colours mark the source (per process) and the level.
    fn line(&self, record: &Bound<'_, PyAny>, body: &str, color: bool) -> PyResult<String> {
        let py = record.py();
        let created: f64 = record.getattr(intern!(py, "created"))?.extract()?;
        let levelno: i64 = record.getattr(intern!(py, "levelno"))?.extract()?;
        let (host, process, thread) = source_names(record);
        let source = Source {
            host: &host,
            process: &process,
            thread: &thread,
        };
        Ok(self.inner.line(created, source, levelno, body, color))
    }

    /// `[host:process:thread]` of `record` (the host only when not this one).
    fn source(&self, record: &Bound<'_, PyAny>) -> String {
        let (host, process, thread) = source_names(record);
        Source {
            host: &host,
            process: &process,
            thread: &thread,
        }
        .label()
    }
}
