//! One log record ([`Record`]): Python's levels, and the JSON wire format
//! of `docs/protocol.md`.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value as Json};

use super::names::{
    current_thread_id, host_name, process_name, registered_thread_name, thread_name,
};
use super::{level, MAX_MESSAGE};
use crate::error::{Error, Result};

/// One log record, with the fields of Python's `logging.LogRecord` (the
/// message already formatted) and pyacq's names of its source.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The logger name (`name`); a Rust record's target.
    pub name: String,
    /// The formatted message (`msg`).
    pub msg: String,
    /// The numeric level (`levelno`): 10 debug ... 50 critical.
    pub levelno: i64,
    /// The level's name (`levelname`).
    pub levelname: String,
    /// Creation time, seconds since the epoch (`created`).
    pub created: f64,
    /// Milliseconds since process start (`relativeCreated`).
    pub relative_created: f64,
    /// Source file path (`pathname`).
    pub pathname: String,
    /// Source file name (`filename`).
    pub filename: String,
    /// Module (`module`; a Rust module path).
    pub module: String,
    /// Source line (`lineno`).
    pub lineno: i64,
    /// Function name (`funcName`; empty for Rust records).
    pub func_name: String,
    /// Thread id (`thread`).
    pub thread: u64,
    /// The thread's own name (`threadName`).
    pub py_thread_name: String,
    /// Process id (`process`).
    pub process: u32,
    /// The process's own name (`processName`).
    pub py_process_name: String,
    /// A formatted exception traceback (`exc_text`).
    pub exc_text: Option<String>,
    /// A formatted stack (`stack_info`).
    pub stack_info: Option<String>,
    /// pyacq's `host_name`.
    pub host_name: String,
    /// pyacq's `process_name`.
    pub process_name: String,
    /// pyacq's `thread_name`.
    pub thread_name: String,
    /// Any other attribute the sender attached (`extra=` in Python).
    pub extra: Map<String, Json>,
}

/// The name Python gives a numeric level.
pub fn level_name(levelno: i64) -> String {
    match levelno {
        level::CRITICAL => "CRITICAL".into(),
        level::ERROR => "ERROR".into(),
        level::WARNING => "WARNING".into(),
        level::INFO => "INFO".into(),
        level::DEBUG => "DEBUG".into(),
        level::TRACE => "TRACE".into(),
        0 => "NOTSET".into(),
        n => format!("Level {n}"),
    }
}

/// The Python level of a `log` crate level.
pub fn python_level(level: log::Level) -> i64 {
    match level {
        log::Level::Error => level::ERROR,
        log::Level::Warn => level::WARNING,
        log::Level::Info => level::INFO,
        log::Level::Debug => level::DEBUG,
        log::Level::Trace => level::TRACE,
    }
}

/// The `log` crate filter that lets through records at Python level
/// `levelno` and above.
pub fn level_filter(levelno: i64) -> log::LevelFilter {
    match levelno {
        n if n > level::ERROR => log::LevelFilter::Error,
        n if n > level::WARNING => log::LevelFilter::Error,
        n if n > level::INFO => log::LevelFilter::Warn,
        n if n > level::DEBUG => log::LevelFilter::Info,
        n if n > level::TRACE => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Parses a level given as a number or a name (`"info"`, `"WARNING"`).
pub fn parse_level(level: &Json) -> Option<i64> {
    match level {
        Json::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Json::String(s) => match s.to_ascii_uppercase().as_str() {
            "CRITICAL" | "FATAL" => Some(level::CRITICAL),
            "ERROR" => Some(level::ERROR),
            "WARNING" | "WARN" => Some(level::WARNING),
            "INFO" => Some(level::INFO),
            "DEBUG" => Some(level::DEBUG),
            "TRACE" => Some(level::TRACE),
            "NOTSET" => Some(0),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn process_start() -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(now)
}

/// The program's name, as `processName` of Rust records.
fn program_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::args_os()
            .next()
            .and_then(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "rust".into())
    })
}

/// Field names a record carries as struct fields (everything else of a
/// JSON record lands in `extra`). `args`, `exc_info`, `message` and
/// `asctime` are dropped: the message travels formatted.
const DROPPED: [&str; 4] = ["args", "exc_info", "message", "asctime"];

impl Record {
    /// A record made here, now, by this thread, with this process's names.
    pub fn new(name: impl Into<String>, levelno: i64, msg: impl Into<String>) -> Record {
        let created = now();
        Record {
            name: name.into(),
            msg: msg.into(),
            levelno,
            levelname: level_name(levelno),
            created,
            relative_created: (created - process_start()) * 1000.0,
            pathname: String::new(),
            filename: String::new(),
            module: String::new(),
            lineno: 0,
            func_name: String::new(),
            thread: current_thread_id(),
            py_thread_name: std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_string(),
            process: std::process::id(),
            py_process_name: program_name().to_string(),
            exc_text: None,
            stack_info: None,
            host_name: host_name().to_string(),
            process_name: process_name().to_string(),
            thread_name: thread_name().to_string(),
            extra: Map::new(),
        }
    }

    /// A record of a `log` crate record (target as logger name).
    pub fn from_log(record: &log::Record<'_>) -> Record {
        let mut r = Record::new(
            record.target(),
            python_level(record.level()),
            record.args().to_string(),
        );
        if let Some(file) = record.file() {
            r.pathname = file.to_string();
            r.filename = file.rsplit('/').next().unwrap_or(file).to_string();
        }
        r.module = record.module_path().unwrap_or_default().to_string();
        r.lineno = record.line().map_or(0, i64::from);
        r
    }

    /// The milliseconds part of `created` (`msecs`).
    pub fn msecs(&self) -> f64 {
        (self.created.fract() * 1000.0).floor()
    }

    /// The record as a JSON object (the wire format of `docs/protocol.md`).
    pub fn to_json(&self) -> Json {
        Json::Object(self.to_map())
    }

    /// The record's fields by their `logging.LogRecord` names, `extra`
    /// among them: the one place that names them on the way out (the wire
    /// format, and the attributes of a Python `LogRecord`).
    pub fn to_map(&self) -> Map<String, Json> {
        let mut m = Map::with_capacity(24 + self.extra.len());
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        let mut put = |k: &str, v: Json| {
            m.insert(k.to_string(), v);
        };
        put("name", self.name.clone().into());
        put("msg", self.msg.clone().into());
        put("args", Json::Null);
        put("levelno", self.levelno.into());
        put("levelname", self.levelname.clone().into());
        put("created", json_f64(self.created));
        put("msecs", json_f64(self.msecs()));
        put("relativeCreated", json_f64(self.relative_created));
        put("pathname", self.pathname.clone().into());
        put("filename", self.filename.clone().into());
        put("module", self.module.clone().into());
        put("lineno", self.lineno.into());
        put("funcName", self.func_name.clone().into());
        put("thread", self.thread.into());
        put("threadName", self.py_thread_name.clone().into());
        put("process", self.process.into());
        put("processName", self.py_process_name.clone().into());
        put("exc_info", Json::Null);
        put("exc_text", self.exc_text.clone().into());
        put("stack_info", self.stack_info.clone().into());
        put("host_name", self.host_name.clone().into());
        put("process_name", self.process_name.clone().into());
        put("thread_name", self.thread_name.clone().into());
        m
    }

    /// The record as one JSON message (what a sender puts on the wire).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Reads a record from JSON, leniently: missing fields get defaults,
    /// fields of the wrong type are coerced or dropped, unknown fields go
    /// to `extra`. Only a message that is not a JSON object is an error.
    pub fn from_json(bytes: &[u8]) -> Result<Record> {
        match serde_json::from_slice::<Json>(bytes) {
            Ok(Json::Object(m)) => Ok(Record::from_map(m)),
            Ok(_) => Err(Error::Protocol("a log record is not a JSON object".into())),
            Err(e) => Err(Error::Protocol(format!("a log record is not JSON: {e}"))),
        }
    }

    /// A record received from another process, from the fields of a JSON
    /// object (see [`Record::from_json`]).
    pub fn from_map(m: Map<String, Json>) -> Record {
        Record::from_fields(m, false)
    }

    /// A record logged in this process, from the attributes of a Python
    /// `LogRecord`: missing source names are this process's (and the name
    /// given to its thread), as a record made here would carry.
    pub fn from_local_map(m: Map<String, Json>) -> Record {
        Record::from_fields(m, true)
    }

    /// The one place that reads the fields by name, leniently.
    fn from_fields(mut m: Map<String, Json>, here: bool) -> Record {
        let mut take = |k: &str| m.remove(k);
        let string = |v: Option<Json>| match v {
            Some(Json::String(s)) => Some(s),
            Some(Json::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        let int = |v: &Option<Json>| match v {
            Some(Json::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Some(Json::String(s)) => s.parse().ok(),
            _ => None,
        };
        let float = |v: &Option<Json>| match v {
            Some(Json::Number(n)) => n.as_f64(),
            _ => None,
        };
        let levelname = string(take("levelname"));
        let levelno_json = take("levelno");
        let levelno = int(&levelno_json)
            .or_else(|| {
                levelname
                    .as_ref()
                    .and_then(|n| parse_level(&Json::String(n.clone())))
            })
            .unwrap_or(level::INFO);
        let created = float(&take("created")).unwrap_or_else(now);
        let relative_created = float(&take("relativeCreated")).unwrap_or(0.0);
        let thread = take("thread");
        let thread = match &thread {
            Some(Json::Number(n)) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        let process =
            int(&take("process")).map_or(if here { std::process::id() } else { 0 }, |p| p as u32);
        let lineno = int(&take("lineno")).unwrap_or(0);
        let py_thread_name = string(take("threadName")).unwrap_or_default();
        let py_process_name = string(take("processName")).unwrap_or_default();
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let host = nonempty(string(take("host_name")))
            .or_else(|| nonempty(string(take("hostname"))))
            .unwrap_or_else(|| {
                if here {
                    host_name().to_string()
                } else {
                    "?".into()
                }
            });
        let process_name = nonempty(string(take("process_name")))
            .or_else(|| here.then(|| process_name().to_string()))
            .or_else(|| nonempty(Some(py_process_name.clone())))
            .unwrap_or_else(|| format!("process-{process}"));
        let thread_name = nonempty(string(take("thread_name")))
            .or_else(|| {
                here.then(|| registered_thread_name(thread))
                    .flatten()
                    .map(|n| n.to_string())
            })
            .or_else(|| nonempty(Some(py_thread_name.clone())))
            .unwrap_or_else(|| format!("thread-{thread:x}"));
        let record = Record {
            name: string(take("name")).unwrap_or_else(|| "root".into()),
            msg: string(take("msg")).unwrap_or_default(),
            levelname: levelname.unwrap_or_else(|| level_name(levelno)),
            levelno,
            created,
            relative_created,
            pathname: string(take("pathname")).unwrap_or_default(),
            filename: string(take("filename")).unwrap_or_default(),
            module: string(take("module")).unwrap_or_default(),
            lineno,
            func_name: string(take("funcName")).unwrap_or_default(),
            thread,
            py_thread_name,
            process,
            py_process_name,
            exc_text: string(take("exc_text")),
            stack_info: string(take("stack_info")),
            host_name: host,
            process_name,
            thread_name,
            extra: Map::new(),
        };
        take("msecs");
        for k in DROPPED {
            take(k);
        }
        Record { extra: m, ..record }
    }

    /// The text of a line after its source: `LEVEL logger: message`, then
    /// the traceback and the stack, if any, each on lines of their own.
    pub fn body(&self) -> String {
        let mut out = format!("{} {}: {}", self.levelname, self.name, self.msg);
        for extra in [&self.exc_text, &self.stack_info].into_iter().flatten() {
            out.push('\n');
            out.push_str(extra.trim_end());
        }
        out
    }

    /// Cuts the message and traceback to [`MAX_MESSAGE`] bytes each.
    pub(super) fn truncate(&mut self) {
        for text in [Some(&mut self.msg), self.exc_text.as_mut()]
            .into_iter()
            .flatten()
        {
            if text.len() > MAX_MESSAGE {
                let mut end = MAX_MESSAGE;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                let cut = text.len() - end;
                text.truncate(end);
                text.push_str(&format!("... [{cut} bytes cut]"));
            }
        }
    }
}

fn json_f64(x: f64) -> Json {
    serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level_name(30), "WARNING");
        assert_eq!(level_name(25), "Level 25");
        assert_eq!(parse_level(&Json::from("debug")), Some(10));
        assert_eq!(parse_level(&Json::from(15)), Some(15));
        assert_eq!(parse_level(&Json::from("nope")), None);
        assert_eq!(level_filter(20), log::LevelFilter::Info);
        assert_eq!(level_filter(30), log::LevelFilter::Warn);
        assert_eq!(level_filter(10), log::LevelFilter::Debug);
        assert_eq!(level_filter(0), log::LevelFilter::Trace);
        assert_eq!(python_level(log::Level::Warn), 30);
    }

    #[test]
    fn record_round_trip() {
        let mut r = Record::new("app.io", level::WARNING, "disk at 91%");
        // serde_json parses floats to within one ulp (no float_roundtrip
        // feature): use times it reads back exactly.
        r.created = 1_700_000_000.25;
        r.relative_created = 12.5;
        r.exc_text = Some("Traceback ...".into());
        r.extra.insert("device".into(), Json::from("cam0"));
        let back = Record::from_json(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        let json = r.to_json();
        assert_eq!(json["levelname"], "WARNING");
        assert_eq!(json["msecs"], Json::from(r.msecs()));
        assert_eq!(json["process_name"], Json::from(&*process_name()));
    }

    #[test]
    fn lenient_parsing() {
        let r = Record::from_json(br#"{"msg": "hi", "levelno": "40", "args": [1], "exc_info": [1, 2], "hostname": "h", "custom": {"a": 1}}"#).unwrap();
        assert_eq!(r.msg, "hi");
        assert_eq!(r.levelno, 40);
        assert_eq!(r.levelname, "ERROR");
        assert_eq!(r.name, "root");
        assert_eq!(r.host_name, "h");
        assert_eq!(r.extra.len(), 1);
        assert_eq!(r.extra["custom"]["a"], 1);
        let r = Record::from_json(br#"{"levelname": "debug", "msg": 3}"#).unwrap();
        assert_eq!((r.levelno, r.msg.as_str()), (10, "3"));
        assert!(Record::from_json(b"[1]").is_err());
        assert!(Record::from_json(b"\xff").is_err());
    }

    #[test]
    fn truncation() {
        let mut r = Record::new("x", 20, "é".repeat(MAX_MESSAGE));
        r.truncate();
        assert!(r.msg.len() < MAX_MESSAGE + 40);
        assert!(r.msg.ends_with("bytes cut]"));
    }
}
