//! The one locking rule: std mutexes, held briefly, recovered when
//! poisoned.

use std::sync::{Mutex, MutexGuard};

/// Locks a std mutex, recovering from poisoning: a panicked request must
/// not wedge the agent.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
