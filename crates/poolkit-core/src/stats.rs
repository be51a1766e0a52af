//! `PoolStats`: a snapshot of one pool, the same shape for every backend.

use std::fmt;
use std::time::Duration;

/// The kind of backend a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "lowercase")
)]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL (directly, or through PgBouncer / Supavisor).
    Postgres,
    /// Redis.
    Redis,
    /// HTTP/1.1 and HTTP/2 APIs.
    Http,
}

impl Backend {
    /// The label value: `postgres`, `redis` or `http`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::Http => "http",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Acquire-wait quantiles, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct WaitQuantiles {
    /// Median wait.
    pub p50: f64,
    /// 95th percentile wait.
    pub p95: f64,
    /// 99th percentile wait.
    pub p99: f64,
}

impl WaitQuantiles {
    /// Quantiles from values in seconds.
    #[must_use]
    pub fn new(p50: f64, p95: f64, p99: f64) -> Self {
        Self { p50, p95, p99 }
    }

    /// The 95th percentile as a `Duration`.
    #[must_use]
    pub fn p95_duration(&self) -> Duration {
        Duration::from_secs_f64(self.p95.max(0.0))
    }
}

/// A snapshot of one pool.
///
/// The numbers are read one after another without a lock across them, so under load a
/// snapshot can be off by the few checkouts that happened while it was taken (for
/// example `idle + used` may briefly differ from `open` by one). Counters are totals since
/// the pool was built.
///
/// For shared connections (HTTP/2 streams, multiplexed Redis), `used` counts requests in
/// flight and `open`/`idle` count sockets.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PoolStats {
    /// The pool's name (`database`, `supabase`).
    pub name: String,
    /// `postgres`, `redis` or `http`.
    pub backend: String,
    /// The ceiling: the most connections (or in-flight requests) the pool allows.
    pub max_size: u32,
    /// The steady size (`P_POOL_SIZE`).
    pub pool_size: u32,
    /// The open limit: the most connections the pool opens now. For `P_POOL_SIZE=auto`
    /// the auto-sizer's choice (between `min_idle` and `max_size`), else the ceiling.
    /// (In poolkit "target" means only where a pool connects, `host:port`.)
    pub open_limit: u32,
    /// Whether the pool sizes itself (`P_POOL_SIZE=auto`).
    pub auto_sized: bool,
    /// Connections kept warm.
    pub min_idle: u32,
    /// Open connections.
    pub open: u64,
    /// Open connections not in use.
    pub idle: u64,
    /// Connections (or requests) in use.
    pub used: u64,
    /// Callers waiting for a connection.
    pub pending: u64,
    /// `used / max_size`, from 0 to 1.
    pub utilization: f64,
    /// Seconds callers have been waiting with no connection free (0 when none wait or one
    /// is free), as sampled about once a second.
    pub starved_for: f64,
    /// Whether `starved_for` reached the pool's bound (`P_STARVATION_AFTER`): the pool
    /// is starved, and not ready for more work.
    pub starved: bool,
    /// The variable that sets the starvation bound (`DATABASE_STARVATION_AFTER`).
    pub starvation_var: String,
    /// Successful checkouts.
    pub acquires: u64,
    /// Checkouts that gave up after the acquire timeout.
    pub timeouts: u64,
    /// Connections opened.
    pub created: u64,
    /// Connections closed, by reason (`broken`, `max_lifetime`, …).
    pub closed: Vec<(String, u64)>,
    /// Errors, by kind (`connect`, `broken`, `health_check`, …).
    pub errors: Vec<(String, u64)>,
    /// Share of checkouts served at once by an idle connection, from 0 to 1.
    pub hit_rate: f64,
    /// Acquire-wait quantiles.
    pub wait: WaitQuantiles,
    /// HTTP: requests that opened a new connection.
    pub requests_new: u64,
    /// HTTP: requests that reused a kept-alive connection.
    pub requests_reused: u64,
    /// The variable that raises the ceiling (`SUPABASE_POOL_SIZE`).
    pub ceiling_var: String,
    /// The variable that sets the acquire timeout (`SUPABASE_POOL_TIMEOUT`).
    pub timeout_var: String,
    /// Query timing (PostgreSQL statements, Redis commands): count, average, p95, slow.
    pub query: crate::QueryTiming,
    /// PostgreSQL: the server-side pooler mode in force (`none`, `session` or
    /// `transaction`), which a pool may have switched to by itself.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub pooler: Option<String>,
    /// The acquire timeout, in seconds (`timeout_var`).
    pub acquire_timeout: f64,
    /// The most connections the server grants this pool, when the adapter knows it
    /// (PostgreSQL: `max_connections` less reserved, `P_MAX_CONNECTIONS`, a fleet share).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub server_cap: Option<crate::advice::ServerCap>,
}

impl PoolStats {
    /// Total closed connections over every reason.
    #[must_use]
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().map(|(_, n)| n).sum()
    }

    /// Total errors over every kind.
    #[must_use]
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }

    /// The count for one close reason (0 when absent).
    #[must_use]
    pub fn closed_by(&self, reason: &str) -> u64 {
        self.closed
            .iter()
            .find(|(r, _)| r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// The count for one error kind (0 when absent).
    #[must_use]
    pub fn errors_by(&self, kind: &str) -> u64 {
        self.errors
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(0, |(_, n)| *n)
    }
}
