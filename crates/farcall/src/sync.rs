//! Locks that outlive a panicking holder.
//!
//! A request that panics must not take the whole engine down with it, so
//! every lock in the crate is taken through these helpers, which treat a
//! poisoned lock as a plain one.

use std::sync::{Mutex, MutexGuard, RwLock};

/// Locks `m`, ignoring poison.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the value behind `lock`, ignoring poison.
pub(crate) fn read<T: Clone>(lock: &RwLock<Option<T>>) -> Option<T> {
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Replaces the value behind `lock`, ignoring poison.
pub(crate) fn write<T>(lock: &RwLock<Option<T>>, value: Option<T>) {
    *lock.write().unwrap_or_else(|p| p.into_inner()) = value;
}
