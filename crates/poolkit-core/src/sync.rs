//! The synchronisation primitives of the hand-off code, swapped for loom's when the crate
//! is built with `RUSTFLAGS="--cfg poolkit_loom"` so the model checker explores every
//! interleaving of the waiter queue, the gate, the engine's state and the multiplexed
//! core's routing table (see `loom_tests`).

#[cfg(poolkit_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
#[cfg(poolkit_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard, RwLock};
#[cfg(not(poolkit_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
#[cfg(not(poolkit_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Locks `m`, ignoring poisoning: every critical section leaves the state consistent
/// before anything in it can panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
