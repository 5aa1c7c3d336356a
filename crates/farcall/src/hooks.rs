//! Call hooks (teleprox 2.2.1): options a provider attaches to every
//! outgoing call, a tracing context say, and a hook that runs around every
//! incoming call with those options. Both are process-wide, as in
//! teleprox, and cost one atomic load per call while unset.
//!
//! On the wire the options are extra entries of `call_obj`'s options map,
//! next to `obj`, `args` and `kwargs` (docs/protocol.md), which is how
//! teleprox sends them: a teleprox peer's provider reaches this process's
//! hook and the other way round.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::Result;
use crate::object::Kwargs;
use crate::sync::{read, write};
use crate::value::Value;

/// The options to attach to an outgoing call, asked in the calling thread
/// just before the request is encoded (so a thread-local or context-local
/// state, such as the current span, is the caller's). An error fails the
/// call.
pub type OptsProvider = Arc<dyn Fn() -> Result<Kwargs> + Send + Sync>;

/// Runs incoming calls inside the context their options describe.
pub trait CallHook: Send + Sync {
    /// Runs `call` once, within the context of `context` (the options the
    /// caller's provider attached; empty when it had none), and returns
    /// its result. When the call fails, it is logged inside `call`, so in
    /// the context too.
    fn around(
        &self,
        context: &Kwargs,
        call: Box<dyn FnOnce() -> Result<Value> + '_>,
    ) -> Result<Value>;
}

/// The option names of `call_obj` itself, which a provider cannot set.
pub const RESERVED: [&str; 3] = ["obj", "args", "kwargs"];

static PROVIDER: RwLock<Option<OptsProvider>> = RwLock::new(None);
static HAS_PROVIDER: AtomicBool = AtomicBool::new(false);
static HOOK: RwLock<Option<Arc<dyn CallHook>>> = RwLock::new(None);
static HAS_HOOK: AtomicBool = AtomicBool::new(false);

/// Sets (or, with `None`, removes) the provider of every outgoing call's
/// extra options; a new one replaces the old.
pub fn set_call_opts_provider(provider: Option<OptsProvider>) {
    HAS_PROVIDER.store(provider.is_some(), Ordering::Release);
    write(&PROVIDER, provider);
}

/// Sets (or, with `None`, removes) the hook run around every incoming
/// call; a new one replaces the old.
pub fn set_call_context_hook(hook: Option<Arc<dyn CallHook>>) {
    HAS_HOOK.store(hook.is_some(), Ordering::Release);
    write(&HOOK, hook);
}

/// The extra options of an outgoing call now: the provider's, without
/// the names `call_obj` uses itself; empty without a provider.
pub(crate) fn call_opts() -> Result<Kwargs> {
    if !HAS_PROVIDER.load(Ordering::Acquire) {
        return Ok(Vec::new());
    }
    let Some(provider) = read(&PROVIDER) else {
        return Ok(Vec::new());
    };
    let mut opts = provider()?;
    opts.retain(|(name, _)| {
        let reserved = RESERVED.contains(&name.as_str());
        if reserved {
            log::warn!("the call opts provider set '{name}', which call_obj uses itself: ignored");
        }
        !reserved
    });
    Ok(opts)
}

/// The hook to run incoming calls in, if one is set.
pub(crate) fn call_hook() -> Option<Arc<dyn CallHook>> {
    if !HAS_HOOK.load(Ordering::Acquire) {
        return None;
    }
    read(&HOOK)
}
