//! The pool engine: idle connections and waiting callers kept together behind one lock,
//! so a returned connection goes straight to the oldest waiter (FIFO by construction),
//! one deadline covers the whole wait, and the pool can be resized while it runs.
//!
//! Any [`bb8::ManageConnection`] plugs in: bb8's manager trait is the contract, bb8's pool
//! is not used. `docs/design.md` walks through the states a connection goes through.
//!
//! One file per part:
//! - `state.rs`: idle connections, waiters and counts, every change to them, behind one
//!   lock and free of I/O (the loom models drive exactly this code);
//! - `pool.rs`: [`Engine`], the handle callers hold: build, get, resize, cap, close, retire;
//! - `checkout.rs`: the checkout path: take or wait, check an idle connection, hand it
//!   out, take it back ([`Checkout`]);
//! - `connect.rs`: connects, each a task of its own, with the shared back-off;
//! - `upkeep.rs`: the background round (idle timeout, lifetime, min idle, leak reports);
//! - `auto.rs`: the auto-sizing controller (`P_POOL_SIZE=auto`);
//! - `conn.rs`: [`Tracked`], a connection with its age, uses and generation;
//! - `leaks.rs`: leak detection (`P_LEAK_THRESHOLD`).
//!
//! The waiter queue (`crate::waiters`) is shared with the [`crate::Gate`], so it lives
//! beside both.

mod auto;
mod checkout;
mod conn;
mod connect;
mod fail_fast;
mod leaks;
mod pool;
mod upkeep;

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

pub use bb8::ManageConnection;
pub use checkout::Checkout;
pub use conn::{LIFETIME_JITTER, Tracked};
pub use fail_fast::Classify;
pub use pool::{Counts, Engine};

use conn::Clock;
use fail_fast::FailFast;
use leaks::Leaks;

use crate::engine_state::State;
use crate::metrics::CloseReason;
use crate::sync::{Mutex, MutexGuard, lock};
use crate::waiters::Wakers;
use crate::{GaugeSource, Gauges, PoolConfig, Telemetry};

/// Why a checkout failed, before the adapter turns it into its own `Error`.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcquireError<E> {
    /// No connection came free (and none could be opened) within the acquire timeout.
    Timeout {
        /// How long the caller waited.
        waited: Duration,
        /// Callers still waiting when this one gave up.
        pending: u64,
    },
    /// Connecting failed while the caller waited; this is the server's reason.
    Connect(Arc<E>),
    /// The pool was closed.
    Closed,
}

/// The managers the engine takes: every [`bb8::ManageConnection`] whose error can be
/// shared between waiters (`Sync`) and shown in logs (`Display`), which covers
/// bb8-postgres, bb8-redis and poolkit's own managers. Implemented for all of them.
pub trait Manager: ManageConnection<Error: Sync + fmt::Display> {}

impl<T: ManageConnection<Error: Sync + fmt::Display>> Manager for T {}

type Conn<M> = Tracked<<M as ManageConnection>::Connection>;

/// What every handle, checkout and background task of one pool shares.
pub(crate) struct Shared<M: Manager> {
    manager: M,
    telemetry: Arc<Telemetry>,
    config: PoolConfig,
    state: Mutex<State<Conn<M>>>,
    last_error: StdMutex<Option<(Clock, Arc<M::Error>)>>,
    /// Connect errors retrying cannot fix, and the rate-limited connect WARNs.
    fail_fast: FailFast<M::Error>,
    classify: Classify<M>,
    leaks: Option<Leaks>,
    /// The auto-sizing controller's open limit (`P_POOL_SIZE=auto`).
    auto_limit: AtomicU32,
    /// An external cap on the ceiling (a fleet share); `u32::MAX` when none.
    cap: AtomicU32,
    /// Bumped by [`Engine::retire_all`]; connections of an older generation are closed
    /// instead of handed out or kept.
    generation: AtomicU64,
    /// The connects sleeping in back-off; a caller who would see no attempt in time cuts
    /// one short (see `Take::Wait`).
    retries: connect::Retries,
    /// The telemetry is shared with other engines (see [`Engine::with_telemetry`]): the
    /// gauges carry no target of this engine's own, so the sum stays the configured one.
    shares_telemetry: bool,
}

impl<M: Manager> Shared<M> {
    fn lock(&self) -> MutexGuard<'_, State<Conn<M>>> {
        lock(&self.state)
    }

    /// Checks the invariants of `s` (called under the lock after every change) and takes
    /// the wakers of waiters it served, to wake after the lock is released.
    fn sync(&self, s: &mut State<Conn<M>>) -> Wakers {
        s.check();
        s.waiters.wakers()
    }

    /// Runs `f` on the state under the lock, and wakes the waiters it served once the
    /// lock is released.
    fn with<R>(&self, f: impl FnOnce(&mut State<Conn<M>>) -> R) -> R {
        let mut s = self.lock();
        let r = f(&mut s);
        let wake = self.sync(&mut s);
        drop(s);
        drop(wake);
        r
    }

    fn close_conn(&self, conn: Conn<M>, reason: CloseReason) {
        self.telemetry.record_closed(reason);
        drop(conn);
    }

    fn error_since(&self, since: Clock) -> Option<Arc<M::Error>> {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, e)| Arc::clone(e))
    }

    fn close(&self) {
        let idle = self.with(|s| s.close());
        for conn in idle {
            self.close_conn(conn, CloseReason::PoolClosed);
        }
    }
}

/// The gauges are the state's own counts, read under its lock when stats or a scrape asks.
impl<M: Manager> GaugeSource for Shared<M> {
    fn gauges(&self) -> Gauges {
        let s = self.lock();
        let gauges = Gauges::new(
            u64::from(s.open),
            u64::from(s.used),
            u64::try_from(s.waiters.len()).unwrap_or(u64::MAX),
        );
        if self.shares_telemetry {
            gauges
        } else {
            gauges.with_open_limit(s.max_size)
        }
    }
}
