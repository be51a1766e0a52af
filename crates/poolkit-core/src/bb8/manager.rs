//! The instrumented manager and the tracked connection.

use std::hash::{BuildHasher, RandomState};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bb8::ManageConnection;

use crate::metrics::{CloseReason, ErrorKind};
use crate::telemetry::Telemetry;

/// The clock of the checkout path: `quanta` reads the CPU's time-stamp counter, several
/// times cheaper than `clock_gettime` on virtual machines, where a `std` `Instant::now`
/// was a third of a no-I/O checkout.
pub(crate) type Clock = quanta::Instant;

/// The most a connection's lifetime is shortened, so connections opened together do not
/// all expire together.
pub const LIFETIME_JITTER: f64 = 0.025;

/// A pooled connection with the facts poolkit needs: when it was opened and expires, when
/// it was last returned, how many times it was checked out, and whether it must be
/// retired. Dropping it (whoever drops it: poolkit, bb8's reaper, the pool's end) counts
/// one close with its reason.
#[derive(Debug)]
pub struct Tracked<C> {
    conn: C,
    created: Clock,
    expires: Option<Clock>,
    pub(crate) last_used: Clock,
    pub(crate) uses: u64,
    pub(crate) retire: Option<CloseReason>,
    telemetry: Arc<Telemetry>,
}

fn jittered(lifetime: Duration) -> Duration {
    // A per-connection random fraction in [0, LIFETIME_JITTER) from std's random hasher keys.
    #[allow(clippy::cast_precision_loss)]
    let unit = (RandomState::new().hash_one(0u8) >> 11) as f64 / (1u64 << 53) as f64;
    lifetime.mul_f64(1.0 - LIFETIME_JITTER * unit)
}

impl<C> Tracked<C> {
    fn new(conn: C, telemetry: Arc<Telemetry>) -> Self {
        let now = Clock::now();
        let expires = telemetry.config().max_lifetime.map(|lt| now + jittered(lt));
        Self {
            conn,
            created: now,
            expires,
            last_used: now,
            uses: 0,
            retire: None,
            telemetry,
        }
    }

    /// How old the connection is.
    #[must_use]
    pub fn age(&self) -> Duration {
        self.created.elapsed()
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

    pub(crate) fn expired(&self, now: Clock) -> bool {
        self.expires.is_some_and(|at| now >= at)
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
        let now = Clock::now();
        let idle_timeout = self.telemetry.config().idle_timeout;
        let reason = self.retire.unwrap_or_else(|| {
            if self.expired(now) {
                CloseReason::MaxLifetime
            } else if idle_timeout
                .is_some_and(|it| now.saturating_duration_since(self.last_used) >= it)
            {
                CloseReason::IdleTimeout
            } else {
                CloseReason::PoolClosed
            }
        });
        self.telemetry.closed(reason);
    }
}

/// The error of [`InstrumentedManager`]: the wrapped manager's (shared, so a waiter whose
/// wait ends in a timeout can be told the real cause), or "the pool is closing".
#[derive(Debug)]
#[non_exhaustive]
pub enum ManagerError<E> {
    /// The wrapped manager's error.
    Backend(Arc<E>),
    /// The pool is closing and opens no new connections.
    Closed,
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

/// Wraps a bb8 manager: times and counts connects, and reports broken or retired
/// connections to bb8. Checkout validation ("ping only when idle longer than
/// `ping_if_idle`") is done by [`super::FairPool`], which shares the inner manager.
#[derive(Debug)]
pub struct InstrumentedManager<M: ManageConnection> {
    inner: Arc<M>,
    telemetry: Arc<Telemetry>,
    last_connect_error: Arc<ErrorSlot<M::Error>>,
}

impl<M: ManageConnection> InstrumentedManager<M> {
    /// Wraps `inner`, reporting to `telemetry`.
    pub fn new(inner: M, telemetry: Arc<Telemetry>) -> Self {
        Self {
            inner: Arc::new(inner),
            telemetry,
            last_connect_error: Arc::new(Mutex::new(None)),
        }
    }

    /// The wrapped manager.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    pub(crate) fn shared_inner(&self) -> Arc<M> {
        Arc::clone(&self.inner)
    }

    /// The pool's telemetry.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    pub(crate) fn error_slot(&self) -> Arc<ErrorSlot<M::Error>> {
        Arc::clone(&self.last_connect_error)
    }
}

/// Validates a connection taken from bb8: retires it (returning `false`) when it is past
/// its lifetime, reports broken, or fails the ping it gets after idling `ping_if_idle`.
pub(crate) async fn validate<M: ManageConnection>(
    inner: &M,
    telemetry: &Telemetry,
    conn: &mut Tracked<M::Connection>,
    now: Clock,
) -> bool
where
    M::Error: std::fmt::Display,
{
    if conn.expired(now) {
        conn.retire(CloseReason::MaxLifetime);
        return false;
    }
    let broken = inner.has_broken(&mut conn.conn);
    if !broken && now.saturating_duration_since(conn.last_used) < telemetry.config().ping_if_idle {
        return true;
    }
    match inner.is_valid(&mut conn.conn).await {
        Ok(()) => true,
        Err(e) => {
            if broken {
                // Its socket closed while idle: never handed out.
                telemetry.error(ErrorKind::Broken);
                conn.retire(CloseReason::Broken);
                tracing::debug!(pool = %telemetry.config().name, "discarding a connection that broke while idle");
            } else {
                telemetry.error(ErrorKind::HealthCheck);
                conn.retire(CloseReason::Invalid);
                tracing::warn!(pool = %telemetry.config().name, error = %e, "validation ping failed; closing the connection");
            }
            false
        }
    }
}

/// Whether a connection can be handed out without any check (the fast path).
pub(crate) fn fresh<M: ManageConnection>(
    inner: &M,
    telemetry: &Telemetry,
    conn: &mut Tracked<M::Connection>,
    now: Clock,
) -> bool {
    !conn.expired(now)
        && now.saturating_duration_since(conn.last_used) < telemetry.config().ping_if_idle
        && !inner.has_broken(&mut conn.conn)
}

impl<M> ManageConnection for InstrumentedManager<M>
where
    M: ManageConnection,
    M::Error: std::fmt::Display + Send + Sync,
{
    type Connection = Tracked<M::Connection>;
    type Error = ManagerError<M::Error>;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        if self.telemetry.is_closing() {
            // A closing pool opens nothing (bb8 would otherwise refill `min_idle`).
            return Err(ManagerError::Closed);
        }
        let start = Clock::now();
        match self.inner.connect().await {
            Ok(conn) => {
                self.telemetry.opened(start.elapsed());
                Ok(Tracked::new(conn, Arc::clone(&self.telemetry)))
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
                Err(ManagerError::Backend(e))
            }
        }
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        // Not called on checkout (FairPool validates itself); kept correct for direct use.
        self.inner
            .is_valid(&mut conn.conn)
            .await
            .map_err(|e| ManagerError::Backend(Arc::new(e)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_shortens_by_at_most_the_bound() {
        let lt = Duration::from_secs(1000);
        let all: Vec<Duration> = (0..200).map(|_| jittered(lt)).collect();
        assert!(
            all.iter()
                .all(|d| *d <= lt && *d >= lt.mul_f64(1.0 - LIFETIME_JITTER))
        );
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert!(distinct.len() > 150, "lifetimes are spread out");
    }
}
