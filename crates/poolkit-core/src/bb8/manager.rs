//! The instrumented manager and the tracked connection.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bb8::ManageConnection;

use crate::metrics::{CloseReason, ErrorKind};
use crate::telemetry::Telemetry;

/// A pooled connection with the facts poolkit needs: when it was opened, when it was
/// last returned, how many times it was checked out, and whether it must be retired.
/// Dropping it (whoever drops it: poolkit, bb8's reaper, the pool's end) counts one
/// close with its reason.
#[derive(Debug)]
pub struct Tracked<C> {
    conn: C,
    created: Instant,
    pub(crate) last_used: Instant,
    pub(crate) uses: u64,
    pub(crate) retire: Option<CloseReason>,
    telemetry: Arc<Telemetry>,
}

impl<C> Tracked<C> {
    /// When the connection was opened.
    #[must_use]
    pub fn created(&self) -> Instant {
        self.created
    }

    /// How long it has been idle (since its last return to the pool).
    #[must_use]
    pub fn idle_for(&self) -> Duration {
        self.last_used.elapsed()
    }

    /// How many times it was checked out.
    #[must_use]
    pub fn uses(&self) -> u64 {
        self.uses
    }

    /// Marks the connection to be closed instead of reused when it goes back to the pool.
    pub fn retire(&mut self, reason: CloseReason) {
        self.retire.get_or_insert(reason);
    }

    /// The wrapped connection.
    #[must_use]
    pub fn inner(&self) -> &C {
        &self.conn
    }

    /// The wrapped connection, mutably.
    pub fn inner_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

impl<C> Deref for Tracked<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C> DerefMut for Tracked<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

impl<C> Drop for Tracked<C> {
    fn drop(&mut self) {
        let config = self.telemetry.config();
        let reason = self.retire.unwrap_or_else(|| {
            if config
                .max_lifetime
                .is_some_and(|lt| self.created.elapsed() >= lt)
            {
                CloseReason::MaxLifetime
            } else if config
                .idle_timeout
                .is_some_and(|it| self.last_used.elapsed() >= it)
            {
                CloseReason::IdleTimeout
            } else {
                CloseReason::PoolClosed
            }
        });
        self.telemetry.closed(reason);
    }
}

/// Wraps a bb8 manager: times and counts connects, validates only connections idle
/// longer than `ping_if_idle`, and reports broken or retired connections to bb8.
#[derive(Debug)]
pub struct InstrumentedManager<M: ManageConnection> {
    inner: M,
    telemetry: Arc<Telemetry>,
    ping_if_idle: Duration,
    last_connect_error: Arc<ErrorSlot<M::Error>>,
}

/// The last connect error and when it happened, shared with the pool.
pub(crate) type ErrorSlot<E> = Mutex<Option<(Instant, Arc<E>)>>;

pub(crate) fn error_since<E>(slot: &ErrorSlot<E>, since: Instant) -> Option<Arc<E>> {
    let last = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    last.as_ref()
        .filter(|(at, _)| *at >= since)
        .map(|(_, e)| Arc::clone(e))
}

impl<M: ManageConnection> InstrumentedManager<M> {
    /// Wraps `inner`, reporting to `telemetry`.
    pub fn new(inner: M, telemetry: Arc<Telemetry>) -> Self {
        let ping_if_idle = telemetry.config().ping_if_idle;
        Self {
            inner,
            telemetry,
            ping_if_idle,
            last_connect_error: Arc::new(Mutex::new(None)),
        }
    }

    /// The wrapped manager.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The pool's telemetry.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// The last connect error if it happened at or after `since`.
    pub fn connect_error_since(&self, since: Instant) -> Option<Arc<M::Error>> {
        error_since(&self.last_connect_error, since)
    }

    pub(crate) fn error_slot(&self) -> Arc<ErrorSlot<M::Error>> {
        Arc::clone(&self.last_connect_error)
    }

    /// Opens a connection outside the pool, timed and counted like any other.
    ///
    /// # Errors
    /// The inner manager's connect error.
    pub async fn connect_tracked(&self) -> Result<Tracked<M::Connection>, Arc<M::Error>>
    where
        M::Error: std::fmt::Display + Send + Sync,
    {
        self.connect().await
    }
}

impl<M> ManageConnection for InstrumentedManager<M>
where
    M: ManageConnection,
    M::Error: std::fmt::Display + Send + Sync,
{
    type Connection = Tracked<M::Connection>;
    type Error = Arc<M::Error>;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let start = Instant::now();
        match self.inner.connect().await {
            Ok(conn) => {
                self.telemetry.opened(start.elapsed());
                let now = Instant::now();
                Ok(Tracked {
                    conn,
                    created: now,
                    last_used: now,
                    uses: 0,
                    retire: None,
                    telemetry: Arc::clone(&self.telemetry),
                })
            }
            Err(e) => {
                self.telemetry.error(ErrorKind::Connect);
                tracing::warn!(pool = %self.telemetry.config().name, error = %e, "connect failed");
                // Kept so a caller whose wait ends in a timeout learns the real cause.
                let e = Arc::new(e);
                *self
                    .last_connect_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((Instant::now(), Arc::clone(&e)));
                Err(e)
            }
        }
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        // A connection that already reports broken (its socket closed while idle) is
        // never handed out: the ping below fails at once and bb8 discards it.
        let broken = self.inner.has_broken(&mut conn.conn);
        if !broken && conn.idle_for() < self.ping_if_idle {
            return Ok(());
        }
        match self.inner.is_valid(&mut conn.conn).await {
            Ok(()) => Ok(()),
            Err(e) => {
                if broken {
                    self.telemetry.error(ErrorKind::Broken);
                    conn.retire(CloseReason::Broken);
                    tracing::debug!(pool = %self.telemetry.config().name, "discarding a connection that broke while idle");
                } else {
                    self.telemetry.error(ErrorKind::HealthCheck);
                    conn.retire(CloseReason::Invalid);
                    tracing::warn!(pool = %self.telemetry.config().name, error = %e, "validation ping failed; closing the connection");
                }
                Err(Arc::new(e))
            }
        }
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        if conn.retire.is_some() {
            return true;
        }
        if self.inner.has_broken(&mut conn.conn) {
            self.telemetry.error(ErrorKind::Broken);
            conn.retire(CloseReason::Broken);
            return true;
        }
        false
    }
}
