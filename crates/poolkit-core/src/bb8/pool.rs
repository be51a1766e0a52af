//! `FairPool`: bb8 behind a FIFO gate, with one timeout over the whole wait.

use std::fmt;
use std::future::{Future, poll_fn};
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bb8::ManageConnection;
use tokio::sync::{SemaphorePermit, TryAcquireError};

use super::manager::{
    Clock, ErrorSlot, InstrumentedManager, ManagerError, Tracked, error_since, fresh, validate,
};
use crate::PoolConfig;
use crate::metrics::{CloseReason, ErrorKind};
use crate::telemetry::Telemetry;

/// Why a checkout failed, before the adapter turns it into its own `Error`.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcquireError<E> {
    /// Nobody returned a connection (and none could be opened) within the acquire timeout.
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

/// A bb8 pool behind a fair (FIFO) semaphore sized to the ceiling.
///
/// bb8 alone lets a task that just returned a connection take it straight back, so
/// under contention some callers starve. Here every caller first queues on a tokio
/// `Semaphore` (first come, first served); only permit holders enter bb8, which then
/// always has a connection for them or may open one. The acquire timeout covers the
/// queue and bb8 together.
pub struct FairPool<M: ManageConnection>
where
    M::Error: fmt::Display + Send + Sync,
{
    bb8: bb8::Pool<InstrumentedManager<M>>,
    manager: Arc<M>,
    telemetry: Arc<Telemetry>,
    connect_errors: Arc<ErrorSlot<M::Error>>,
}

impl<M: ManageConnection> fmt::Debug for FairPool<M>
where
    M::Error: fmt::Display + Send + Sync,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FairPool")
            .field("name", &self.telemetry.config().name)
            .field("open", &self.telemetry.open())
            .field("used", &self.telemetry.used())
            .field("pending", &self.telemetry.pending())
            .finish_non_exhaustive()
    }
}

struct PendingGuard<'a>(&'a Telemetry);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.wait_ended();
    }
}

impl<M: ManageConnection> FairPool<M>
where
    M::Error: fmt::Display + Send + Sync,
{
    /// Builds the pool from a validated `config`. When `min_idle > 0`, that many
    /// connections are open before this returns; a server that cannot be reached gives
    /// an error within the acquire timeout, never a hang.
    ///
    /// # Errors
    /// [`AcquireError::Connect`] with the server's reason, or [`AcquireError::Timeout`],
    /// when the warm-up connections cannot be opened.
    pub async fn build(manager: M, config: PoolConfig) -> Result<Self, AcquireError<M::Error>> {
        let telemetry = Arc::new(Telemetry::new(config));
        let c = telemetry.config().clone();
        let manager = InstrumentedManager::new(manager, Arc::clone(&telemetry));
        let shared_manager = manager.shared_inner();
        let connect_errors = manager.error_slot();
        let builder = bb8::Pool::builder()
            .max_size(c.ceiling())
            .min_idle((c.min_idle > 0).then_some(c.min_idle))
            .connection_timeout(c.acquire_timeout)
            // Lifetime (with jitter) and validation are enforced by FairPool itself, with the
            // cheap clock; bb8 keeps the idle timeout, min idle and replenishing.
            .max_lifetime(None)
            .idle_timeout(c.idle_timeout)
            .test_on_check_out(false)
            .queue_strategy(bb8::QueueStrategy::Lifo)
            .reaper_rate(
                Duration::from_secs(1)
                    .min(c.idle_timeout.unwrap_or(Duration::MAX) / 2)
                    .max(Duration::from_millis(100)),
            );
        let start = Instant::now();
        let start_instant = start;
        let bb8 = if c.min_idle > 0 {
            match tokio::time::timeout(
                c.acquire_timeout + Duration::from_millis(250),
                builder.build(manager),
            )
            .await
            {
                Ok(Ok(pool)) => pool,
                Ok(Err(ManagerError::Backend(e))) => return Err(AcquireError::Connect(e)),
                Ok(Err(_)) => return Err(AcquireError::Closed),
                Err(_) => {
                    // bb8 was still retrying: the last connect error is the real answer.
                    return Err(match error_since(&connect_errors, start_instant) {
                        Some(e) => AcquireError::Connect(e),
                        None => AcquireError::Timeout {
                            waited: start.elapsed(),
                            pending: 0,
                        },
                    });
                }
            }
        } else {
            builder.build_unchecked(manager)
        };
        Ok(Self {
            bb8,
            manager: shared_manager,
            telemetry,
            connect_errors,
        })
    }

    /// The pool's telemetry (stats, metrics handles, config).
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// The bb8 pool inside (for its own `state()`); checking out through it directly
    /// bypasses the fair gate and poolkit's counting.
    pub fn bb8(&self) -> &bb8::Pool<InstrumentedManager<M>> {
        &self.bb8
    }

    /// Takes a connection: waits first come, first served, for at most the acquire
    /// timeout in total. Cancel-safe: dropping the future leaves no slot taken.
    ///
    /// # Errors
    /// [`AcquireError::Timeout`] after the acquire timeout; [`AcquireError::Connect`] when
    /// the wait ended because connecting failed (with the server's reason);
    /// [`AcquireError::Closed`] after [`FairPool::close`].
    #[track_caller]
    pub fn get(
        &self,
    ) -> impl Future<Output = Result<Checkout<M>, AcquireError<M::Error>>> + Send + '_ {
        let caller = Location::caller();
        async move {
            let mut checkout = self.get_inner().await?;
            if let Some(threshold) = self.telemetry.config().leak_threshold {
                checkout.leak = Some(LeakWatch::start(
                    Arc::clone(&self.telemetry),
                    threshold,
                    caller,
                ));
            }
            Ok(checkout)
        }
    }

    async fn get_inner(&self) -> Result<Checkout<M>, AcquireError<M::Error>> {
        if self.telemetry.is_closing() {
            return Err(AcquireError::Closed);
        }
        let mut permit = None;
        let mut candidate = None;
        match self.telemetry.gate().try_acquire() {
            Ok(p) => {
                // Fast path: nobody is queued ahead and bb8 has an idle connection that
                // needs no check. No timer, no pending count, one clock read.
                let mut attempt = pin!(self.bb8.get_owned());
                if let Poll::Ready(Ok(mut conn)) =
                    poll_fn(|cx| Poll::Ready(attempt.as_mut().poll(cx))).await
                {
                    let now = Clock::now();
                    if fresh(&*self.manager, &self.telemetry, &mut conn, now) {
                        return Ok(self.checkout(p, conn, now, Duration::ZERO, true));
                    }
                    candidate = Some(conn);
                }
                permit = Some(p);
            }
            Err(TryAcquireError::NoPermits) => {}
            Err(TryAcquireError::Closed) => return Err(AcquireError::Closed),
        }
        self.get_slow(permit, candidate).await
    }

    /// The slow path: queue on the gate (unless a permit is held), take from bb8 (which may
    /// connect) and validate, all within the acquire timeout.
    async fn get_slow(
        &self,
        permit: Option<SemaphorePermit<'_>>,
        mut candidate: Option<bb8::PooledConnection<'static, InstrumentedManager<M>>>,
    ) -> Result<Checkout<M>, AcquireError<M::Error>> {
        let start = Instant::now();
        let clock_start = Clock::now();
        self.telemetry.wait_started();
        let pending = PendingGuard(&self.telemetry);
        let attempt = async {
            let permit = match permit {
                Some(p) => p,
                None => self
                    .telemetry
                    .gate()
                    .acquire()
                    .await
                    .map_err(|_| AcquireError::Closed)?,
            };
            loop {
                let mut conn = match candidate.take() {
                    Some(conn) => conn,
                    None => match self.bb8.get_owned().await {
                        Ok(conn) => conn,
                        Err(bb8::RunError::User(ManagerError::Backend(e))) => {
                            return Err(AcquireError::Connect(e));
                        }
                        Err(bb8::RunError::User(_)) => return Err(AcquireError::Closed),
                        Err(bb8::RunError::TimedOut) => {
                            return Err(AcquireError::Timeout {
                                waited: Duration::ZERO,
                                pending: 0,
                            });
                        }
                    },
                };
                let now = Clock::now();
                if validate(&*self.manager, &self.telemetry, &mut conn, now).await {
                    return Ok((permit, conn));
                }
                // Retired: dropping it makes bb8 close it; take another.
                drop(conn);
            }
        };
        let outcome = tokio::time::timeout(self.telemetry.config().acquire_timeout, attempt).await;
        drop(pending);
        match outcome {
            Ok(Ok((permit, conn))) => {
                let now = Clock::now();
                Ok(self.checkout(
                    permit,
                    conn,
                    now,
                    now.saturating_duration_since(clock_start),
                    false,
                ))
            }
            Ok(Err(AcquireError::Timeout { .. })) | Err(_) => Err(self.timed_out(start)),
            Ok(Err(e)) => Err(e),
        }
    }

    fn checkout(
        &self,
        permit: SemaphorePermit<'_>,
        mut conn: bb8::PooledConnection<'static, InstrumentedManager<M>>,
        now: Clock,
        waited: Duration,
        hit: bool,
    ) -> Checkout<M> {
        conn.uses += 1;
        self.telemetry.acquired(waited, hit);
        // The permit is given back by `Checkout::drop`, after the connection.
        permit.forget();
        Checkout {
            conn: Some(conn),
            since: now,
            telemetry: Arc::clone(&self.telemetry),
            leak: None,
        }
    }

    fn timed_out(&self, start: Instant) -> AcquireError<M::Error> {
        let waited = start.elapsed();
        self.telemetry.timed_out(waited);
        // A connect error during our wait explains the timeout better than "timed out".
        match error_since(&self.connect_errors, start) {
            Some(e) => AcquireError::Connect(e),
            None => AcquireError::Timeout {
                waited,
                pending: self.telemetry.pending(),
            },
        }
    }

    /// Closes the pool: waiting and new callers get [`AcquireError::Closed`] at once, no
    /// new connection is opened, and connections are closed as they come back. See
    /// [`FairPool::drain`] to wait for that.
    pub fn close(&self) {
        self.telemetry.set_closing();
    }

    /// Closes the pool (as [`FairPool::close`]), waits until every checked-out
    /// connection is returned, then closes the idle ones, all within `deadline`.
    /// Returns whether every connection was closed in time.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.close();
        let end = tokio::time::Instant::now() + deadline;
        while self.telemetry.used() > 0 {
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Idle connections: take each from bb8 and retire it. Only while some are idle, so
        // bb8 never tries to open one for us (and a closing pool would refuse anyway).
        while self.telemetry.open() > 0 && tokio::time::Instant::now() < end {
            let idle = self.bb8.state().idle_connections;
            if idle == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.bb8.get()).await {
                Ok(Ok(mut conn)) => conn.retire(CloseReason::PoolClosed),
                Ok(Err(_)) | Err(_) => break,
            }
        }
        self.telemetry.open() == 0
    }

    /// Whether the pool was closed.
    pub fn is_closed(&self) -> bool {
        self.telemetry.is_closing()
    }
}

/// A checked-out connection. Derefs to the backend's connection; returning it is
/// dropping it. Its use time is recorded, and it is retired instead of reused when it
/// reached `max_uses` or is a burst connection nobody is waiting for.
pub struct Checkout<M: ManageConnection>
where
    M::Error: fmt::Display + Send + Sync,
{
    conn: Option<bb8::PooledConnection<'static, InstrumentedManager<M>>>,
    since: Clock,
    telemetry: Arc<Telemetry>,
    leak: Option<LeakWatch>,
}

/// Leak detection for one checkout: a timer that reports the checkout if it is still held
/// after the threshold, naming where it was taken.
struct LeakWatch {
    returned: Arc<AtomicBool>,
    timer: tokio::task::JoinHandle<()>,
}

impl LeakWatch {
    fn start(
        telemetry: Arc<Telemetry>,
        threshold: Duration,
        caller: &'static Location<'static>,
    ) -> Self {
        let returned = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&returned);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(threshold).await;
            if !flag.load(Ordering::Acquire) {
                telemetry.error(ErrorKind::Leak);
                tracing::warn!(
                    pool = %telemetry.config().name,
                    held_for = ?threshold,
                    checked_out_at = %caller,
                    "connection held longer than the leak threshold (P_LEAK_THRESHOLD); was it forgotten?"
                );
            }
        });
        Self { returned, timer }
    }

    fn stop(&self) {
        self.returned.store(true, Ordering::Release);
        self.timer.abort();
    }
}

impl<M: ManageConnection> Checkout<M>
where
    M::Error: fmt::Display + Send + Sync,
{
    /// The tracked connection (age, uses, retire).
    pub fn tracked(&mut self) -> &mut Tracked<M::Connection> {
        self.conn
            .as_deref_mut()
            .unwrap_or_else(|| unreachable_taken())
    }

    /// How long this checkout has been held.
    pub fn held_for(&self) -> Duration {
        self.since.elapsed()
    }
}

#[allow(clippy::panic)]
fn unreachable_taken() -> ! {
    panic!("poolkit: checkout used after drop")
}

impl<M: ManageConnection> fmt::Debug for Checkout<M>
where
    M::Error: fmt::Display + Send + Sync,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkout")
            .field("pool", &self.telemetry.config().name)
            .field("held_for", &self.held_for())
            .finish_non_exhaustive()
    }
}

impl<M: ManageConnection> Deref for Checkout<M>
where
    M::Error: fmt::Display + Send + Sync,
{
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        self.conn
            .as_ref()
            .map(|c| &***c)
            .unwrap_or_else(|| unreachable_taken())
    }
}

impl<M: ManageConnection> DerefMut for Checkout<M>
where
    M::Error: fmt::Display + Send + Sync,
{
    fn deref_mut(&mut self) -> &mut M::Connection {
        self.conn
            .as_mut()
            .map(|c| &mut ***c)
            .unwrap_or_else(|| unreachable_taken())
    }
}

impl<M: ManageConnection> Drop for Checkout<M>
where
    M::Error: fmt::Display + Send + Sync,
{
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let config = self.telemetry.config();
            let now = Clock::now();
            conn.last_used = now;
            if let Some(leak) = &self.leak {
                leak.stop();
            }
            if self.telemetry.is_closing() {
                conn.retire(CloseReason::PoolClosed);
            } else if conn.expired(now) {
                conn.retire(CloseReason::MaxLifetime);
            } else if config.max_uses.is_some_and(|max| conn.uses >= max) {
                conn.retire(CloseReason::MaxUses);
            } else if config.max_size.is_some()
                && self.telemetry.open() > u64::from(config.pool_size)
                && self.telemetry.pending() == 0
            {
                conn.retire(CloseReason::Overflow);
            }
            self.telemetry
                .released(now.saturating_duration_since(self.since));
            // Back to bb8 (or closed, if retired or broken) before the permit frees the
            // next waiter, so that waiter finds it idle.
            drop(conn);
        }
        self.telemetry.gate().add_permits(1);
    }
}
