//! bb8 instrumentation: a fair FIFO gate in front of bb8, connections that remember
//! their age and idle time, and a manager wrapper that counts and times what bb8 does.
//!
//! Adapters build a [`FairPool`] from their bb8 manager; they get first-come-first-served
//! checkout with one timeout over the whole wait, "ping only when idle longer than
//! `ping_if_idle`", burst connections closed on return, `max_uses` rotation, and every
//! metric of the schema, without writing any of it again.

mod manager;
mod pool;

pub use manager::{InstrumentedManager, LIFETIME_JITTER, ManagerError, Tracked};
pub use pool::{AcquireError, Checkout, FairPool};
