//! The `Monitored` trait every pool implements, and the registry pools join.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};

use thiserror::Error;

use crate::{Backend, Health, PoolStats};

/// A boxed, sendable future (the form a `dyn`-compatible trait can return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a ping failed. The message never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{pool}: ping failed: {message}")]
#[non_exhaustive]
pub struct PingError {
    /// The pool's name.
    pub pool: String,
    /// What went wrong.
    pub message: String,
}

impl PingError {
    /// A ping error for `pool`.
    #[must_use]
    pub fn new(pool: &str, message: impl Into<String>) -> Self {
        Self {
            pool: pool.to_owned(),
            message: message.into(),
        }
    }
}

/// What a health probe that never queues behind callers found (see [`Monitored::probe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Probe {
    /// An idle connection (or a fresh one, when none was open) answered a ping.
    Alive,
    /// The ping failed: the backend cannot be reached.
    Failed(PingError),
    /// Every open connection is in use, so nothing was pinged: judge reachability from the
    /// pool's counters (checkouts keep succeeding, connects keep failing).
    Busy,
}

/// What every pool offers to monitoring, the same for all backends.
///
/// Held as `Arc<dyn Monitored>` by the registry and `poolkit-monitor`.
pub trait Monitored: Send + Sync + fmt::Debug {
    /// The pool's name (`database`, `supabase`).
    fn name(&self) -> &str;
    /// The backend kind.
    fn backend(&self) -> Backend;
    /// A snapshot of the pool.
    fn stats(&self) -> PoolStats;
    /// Health from the snapshot (not `Down`: use [`check`] for a live answer).
    fn health(&self) -> Health;
    /// Checks that the backend answers (a `SELECT 1`, a Redis `PING`, an HTTP request).
    fn ping(&self) -> BoxFuture<'_, Result<(), PingError>>;

    /// A health probe that never waits in the queue behind callers: ping an idle
    /// connection if there is one, else answer [`Probe::Busy`] without pinging.
    ///
    /// The default reads the snapshot: when nobody waits and there is an idle connection or
    /// room to open one, it calls [`Monitored::ping`], which then gets a connection at once;
    /// otherwise it answers `Busy`. A pool whose engine has a
    /// non-queueing `try_get` should override this with "try-get, ping it, or `Busy`", which
    /// closes the small window in which a caller takes the idle connection first.
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            let s = self.stats();
            let room = s.idle > 0 || s.open < u64::from(s.max_size);
            if s.pending == 0 && room {
                match self.ping().await {
                    Ok(()) => Probe::Alive,
                    Err(e) => Probe::Failed(e),
                }
            } else {
                Probe::Busy
            }
        })
    }
}

/// How long a monitoring ping may take before it counts as failed.
pub const PING_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What differs between pools, for the one [`Monitored`] implementation: every type that
/// implements `MonitoredPool` is `Monitored` (PostgreSQL, Redis shared, Redis exclusive,
/// Redis cluster, HTTP, and the reqwest client's monitor).
///
/// The shared implementation names the pool from [`MonitoredPool::pool_config`], judges
/// health with its thresholds, bounds every ping by [`PING_LIMIT`], and probes without
/// queueing: [`MonitoredPool::ping_idle`] when it has an idle connection, else a ping only
/// when nobody waits and there is room, else [`Probe::Busy`].
pub trait MonitoredPool: Send + Sync + fmt::Debug {
    /// What the ping sends, for the message when it gets no answer (`SELECT 1`, `PING`).
    const PING: &'static str;

    /// The pool's common configuration: its name and health thresholds.
    fn pool_config(&self) -> &crate::PoolConfig;
    /// The backend kind; the default is the configuration's.
    fn backend(&self) -> Backend {
        self.pool_config().backend
    }
    /// A snapshot of the pool.
    fn stats(&self) -> PoolStats;
    /// The snapshot health is judged from; the default is [`MonitoredPool::stats`] (an
    /// HTTP pool answers with its busiest origin, where it runs out first).
    fn health_stats(&self) -> PoolStats {
        self.stats()
    }
    /// Adds what the counters do not show (a rotating password that fails, a failover)
    /// to the health judged from `stats`.
    fn add_alerts(&self, stats: &PoolStats, health: &mut Health) {
        let _ = (stats, health);
    }
    /// Checks that the backend answers, the way a caller would reach it; the error is the
    /// message (never a secret).
    fn ping_backend(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Pings an idle connection taken without queueing, or `None` when none is idle (the
    /// default: the pool cannot take one without queueing).
    fn ping_idle(&self) -> Option<BoxFuture<'_, Result<(), String>>> {
        None
    }
}

impl<T: MonitoredPool> Monitored for T {
    fn name(&self) -> &str {
        &self.pool_config().name
    }

    fn backend(&self) -> Backend {
        MonitoredPool::backend(self)
    }

    fn stats(&self) -> PoolStats {
        MonitoredPool::stats(self)
    }

    fn health(&self) -> Health {
        let stats = self.health_stats();
        let mut h = Health::assess(&stats, &self.pool_config().thresholds);
        self.add_alerts(&stats, &mut h);
        h
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), PingError>> {
        Box::pin(async move { limited::<T>(self.name(), self.ping_backend()).await })
    }

    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            if let Some(ping) = self.ping_idle() {
                return match limited::<T>(self.name(), ping).await {
                    Ok(()) => Probe::Alive,
                    Err(e) => Probe::Failed(e),
                };
            }
            let s = MonitoredPool::stats(self);
            let room = s.idle > 0 || s.open < u64::from(s.max_size);
            if s.pending == 0 && room {
                match Monitored::ping(self).await {
                    Ok(()) => Probe::Alive,
                    Err(e) => Probe::Failed(e),
                }
            } else {
                Probe::Busy
            }
        })
    }
}

/// A ping bounded by [`PING_LIMIT`], its failure as a [`PingError`].
async fn limited<T: MonitoredPool>(
    pool: &str,
    ping: BoxFuture<'_, Result<(), String>>,
) -> Result<(), PingError> {
    match tokio::time::timeout(PING_LIMIT, ping).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(PingError::new(pool, message)),
        Err(_) => Err(PingError::new(
            pool,
            format!("no answer to {} within {PING_LIMIT:?}", T::PING),
        )),
    }
}

/// Health with a live ping: `Down` when the ping fails, else [`Monitored::health`].
pub async fn check(pool: &dyn Monitored) -> Health {
    match pool.ping().await {
        Ok(()) => pool.health(),
        Err(e) => Health::down(&pool.stats(), &e.message),
    }
}

static REGISTRY: RwLock<Vec<Weak<dyn Monitored>>> = RwLock::new(Vec::new());

/// Adds a pool to the process-wide registry. Pools call this when built; the registry
/// holds a weak reference, so a dropped pool leaves it by itself.
pub fn register(pool: &Arc<dyn Monitored>) {
    let mut list = REGISTRY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    list.retain(|w| w.strong_count() > 0);
    if list
        .iter()
        .filter_map(Weak::upgrade)
        .any(|p| p.name() == pool.name())
    {
        tracing::warn!(
            pool = pool.name(),
            "a pool with this name is already registered; their metrics will share labels"
        );
    }
    list.push(Arc::downgrade(pool));
}

/// Every live registered pool, in the order they were built.
#[must_use]
pub fn pools() -> Vec<Arc<dyn Monitored>> {
    let list = REGISTRY
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    list.iter().filter_map(Weak::upgrade).collect()
}

/// The live registered pool called `name`, if any (the newest when several share it).
#[must_use]
pub fn pool(name: &str) -> Option<Arc<dyn Monitored>> {
    pools().into_iter().rev().find(|p| p.name() == name)
}
