//! The one way the daemon locks a std mutex. What they guard are plain
//! values (status figures, a last error, open connections), still usable
//! after a panic elsewhere, so poisoning is ignored rather than spreading
//! the panic. Imports nothing from the crate.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
