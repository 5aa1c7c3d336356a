//! The names of this host, process and threads in log records, shared
//! with the Python package.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use crate::sync::{lock, read, write};

static HOST_NAME: RwLock<Option<Arc<str>>> = RwLock::new(None);
static PROCESS_NAME: RwLock<Option<Arc<str>>> = RwLock::new(None);
static THREAD_NAMES: OnceLock<Mutex<HashMap<u64, Arc<str>>>> = OnceLock::new();

/// The name of this host in log records (default: the system host name).
pub fn host_name() -> Arc<str> {
    if let Some(name) = read(&HOST_NAME) {
        return name;
    }
    static SYSTEM: OnceLock<Arc<str>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let mut buf = [0u8; 256];
            // SAFETY: gethostname writes at most `len` bytes into the buffer.
            let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            if ok && end > 0 {
                String::from_utf8_lossy(&buf[..end]).into()
            } else {
                "localhost".into()
            }
        })
        .clone()
}

/// Sets the host name used in this process's records.
pub fn set_host_name(name: &str) {
    write(&HOST_NAME, Some(name.into()));
}

/// The name of this process in log records (default `process-<pid>`, as
/// in pyacq; a spawned child gets the name its parent gave it).
pub fn process_name() -> Arc<str> {
    read(&PROCESS_NAME).unwrap_or_else(|| format!("process-{}", std::process::id()).into())
}

/// Sets the process name used in this process's records.
pub fn set_process_name(name: &str) {
    write(&PROCESS_NAME, Some(name.into()));
}

/// The calling thread's id as Python's `threading.get_ident()` sees it
/// (`pthread_self`), so Rust and Python agree on thread ids.
pub fn current_thread_id() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

fn thread_names() -> MutexGuard<'static, HashMap<u64, Arc<str>>> {
    lock(THREAD_NAMES.get_or_init(Default::default))
}

/// Names a thread in log records (`tid`: a [`current_thread_id`]; `None`:
/// the calling thread).
pub fn set_thread_name(name: &str, tid: Option<u64>) {
    let tid = tid.unwrap_or_else(current_thread_id);
    thread_names().insert(tid, name.into());
}

/// The name given to thread `tid` with [`set_thread_name`], if any.
pub fn registered_thread_name(tid: u64) -> Option<Arc<str>> {
    thread_names().get(&tid).cloned()
}

/// The calling thread's name in log records: the registered name, else
/// the Rust thread's name, else `thread-<id in hex>`.
pub fn thread_name() -> Arc<str> {
    let tid = current_thread_id();
    registered_thread_name(tid).unwrap_or_else(|| match std::thread::current().name() {
        Some(n) => n.into(),
        None => format!("thread-{tid:x}").into(),
    })
}
