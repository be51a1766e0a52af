//! Read replicas: `DATABASE_READ_URL` (one URL or a comma list) makes read pools;
//! `Pool::read` spreads over them and falls back to the primary while all are down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use poolkit_core::metrics::ErrorKind;

use crate::error::Error;
use crate::pool::{Pool, PooledConnection};

/// How long a replica that failed is skipped before it is tried again.
pub const REPLICA_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The read pools of a primary, and which of them are down.
#[derive(Debug, Default)]
pub(crate) struct Replicas {
    pub(crate) pools: Vec<Pool>,
    /// Per replica: until when (ms since `epoch`) it is skipped; 0 = up.
    down_until: Vec<AtomicU64>,
    next: AtomicUsize,
    epoch: Option<Instant>,
    pub(crate) var: String,
    /// The primary's acquire timeout: how long a read waits for a replica that is up but
    /// busy (the read pools' own is shorter, to skip a replica that does not answer).
    patience: Duration,
}

impl Replicas {
    pub(crate) fn new(pools: Vec<Pool>, var: String, patience: Duration) -> Self {
        let down_until = pools.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            pools,
            down_until,
            next: AtomicUsize::new(0),
            epoch: Some(Instant::now()),
            var,
            patience,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.map_or(0, |e| {
            u64::try_from(e.elapsed().as_millis()).unwrap_or(u64::MAX)
        })
    }

    /// A connection from the first replica (round robin) that is up and answers; `None`
    /// when every replica is down. A replica whose pool is exhausted (its short acquire
    /// timeout passed while its connections were open and busy) is up: the caller waits
    /// for it the rest of the primary's acquire timeout, and the load is not moved onto
    /// the primary.
    pub(crate) async fn get(&self) -> Option<Result<PooledConnection, Error>> {
        let asked = Instant::now();
        let n = self.pools.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let i = (start + k) % n;
            if self.down_until[i].load(Ordering::Relaxed) > self.now_ms() {
                continue;
            }
            match self.pools[i].get().await {
                Ok(conn) => {
                    self.down_until[i].store(0, Ordering::Relaxed);
                    return Some(Ok(conn));
                }
                Err(e) if e.is_pool_timeout() && self.pools[i].stats().open > 0 => {
                    let rest = self.patience.saturating_sub(asked.elapsed());
                    if rest.is_zero() {
                        return Some(Err(e));
                    }
                    return Some(self.pools[i].get_timeout(rest).await);
                }
                Err(e) => {
                    let until = self.now_ms()
                        + u64::try_from(REPLICA_RETRY_AFTER.as_millis()).unwrap_or(1000);
                    self.down_until[i].store(until, Ordering::Relaxed);
                    tracing::warn!(pool = %self.pools[i].config().pool.name, error = %e, var = %self.var, "read replica unavailable; skipping it for a while");
                }
            }
        }
        None
    }
}

impl Pool {
    /// A connection for reads: from a read replica (`DATABASE_READ_URL`, round robin) when
    /// one is configured and up; from the primary otherwise. While every replica is down,
    /// reads go to the primary with a warning and
    /// `poolkit_connection_errors_total{kind="fallback"}` on the primary; a replica that
    /// failed is tried again after [`REPLICA_RETRY_AFTER`]. A replica that is up but
    /// exhausted is not down: the read waits for it up to the pool's acquire timeout
    /// (`DATABASE_POOL_TIMEOUT`), and fails with the read pool's timeout rather than
    /// moving the surge onto the primary.
    ///
    /// # Errors
    /// As [`Pool::get`] on the primary; [`PoolError::Timeout`](poolkit_core::PoolError::Timeout) of the replica's pool when it
    /// is exhausted.
    pub async fn read(&self) -> Result<PooledConnection, Error> {
        let replicas = self.replicas();
        if replicas.pools.is_empty() {
            return self.get().await;
        }
        if let Some(conn) = replicas.get().await {
            return conn;
        }
        self.telemetry().error(ErrorKind::Fallback);
        tracing::warn!(pool = %self.config().pool.name, var = %replicas.var, "every read replica is down; reading from the primary");
        self.get().await
    }

    /// A connection for writes: always the primary (the same as [`Pool::get`]).
    ///
    /// # Errors
    /// As [`Pool::get`].
    pub async fn write(&self) -> Result<PooledConnection, Error> {
        self.get().await
    }

    /// The read replicas' pools (named `NAME_read0`, `NAME_read1`, …).
    #[must_use]
    pub fn read_pools(&self) -> &[Pool] {
        &self.replicas().pools
    }
}

/// Builds one lazy pool per replica URL (no connection at build, so a replica that is
/// down at start does not stop the service: reads fall back until it answers).
pub(crate) async fn build(primary: &crate::config::Config) -> Result<Arc<Replicas>, Error> {
    let var = format!("{}_READ_URL", primary.pool.prefix);
    let mut pools = Vec::new();
    for (i, url) in primary.read_urls.iter().enumerate() {
        let mut config = primary.clone();
        config.read_urls = Vec::new();
        config.url = url.clone();
        config.replica = true;
        config = config.read_session_attrs();
        config.pool.name = format!("{}_read{i}", primary.pool.name);
        config.pool.min_idle = 0;
        // A replica that does not answer soon is skipped, not waited for.
        config.pool.acquire_timeout = primary.pool.acquire_timeout.min(Duration::from_secs(1));
        config.connect_timeout = Some(config.pool.acquire_timeout);
        config.pg_config().map_err(|e| match e {
            poolkit_core::ConfigError::Invalid {
                value, expected, ..
            } => Error::Config(poolkit_core::ConfigError::Invalid {
                var: var.clone(),
                value,
                expected,
            }),
            other => Error::Config(other),
        })?;
        pools.push(Box::pin(Pool::new(config)).await?);
    }
    Ok(Arc::new(Replicas::new(
        pools,
        var,
        primary.pool.acquire_timeout,
    )))
}
