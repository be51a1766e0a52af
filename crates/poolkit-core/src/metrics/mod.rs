//! The metrics schema: names, label values, descriptions and the per-pool handles.
//!
//! poolkit only emits through the `metrics` facade; installing a recorder (Prometheus or
//! any other) is the application's or `poolkit-monitor`'s job. Pools count in their own
//! atomics ([`crate::Telemetry`], [`crate::QueryStats`], …); [`publish_all`] sends those
//! counts to the recorder, once a second in the background and whenever an exporter
//! renders, so the checkout path costs the same with or without a recorder. Anything else
//! that counts for the facade does the same: it implements [`Publish`] and [`join`]s.

pub mod names;

use std::sync::{Arc, Mutex, Once, PoisonError, Weak};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Unit, describe_counter, describe_gauge, describe_histogram,
};

use crate::histogram::LatencyHistogram;

/// Connection state label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnState {
    /// Open and not in use.
    Idle,
    /// Checked out (or, for shared connections, requests in flight).
    Used,
}

impl ConnState {
    /// The label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Used => "used",
        }
    }
}

macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $value:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value, in a fixed order (index with `as usize`).
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The label value.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)*
                }
            }
        }
    };
}

label_enum!(
    /// Why a connection was closed (`reason` label).
    CloseReason {
        /// The connection reported itself broken (socket closed, fatal error).
        Broken => "broken",
        /// The idle-time validation (ping) failed.
        Invalid => "invalid",
        /// It reached `P_MAX_LIFETIME`.
        MaxLifetime => "max_lifetime",
        /// It sat idle past `P_IDLE_TIMEOUT` above the minimum.
        IdleTimeout => "idle_timeout",
        /// It reached `P_MAX_USES` checkouts.
        MaxUses => "max_uses",
        /// A burst connection above `P_POOL_SIZE`, closed when returned with nobody waiting.
        Overflow => "overflow",
        /// The pool was closed or dropped.
        PoolClosed => "pool_closed",
        /// Abandoned mid-transaction (deadline or panic) and closed rather than reused.
        Aborted => "aborted",
        /// Retired because the server it talks to stopped being the one the pool wants (a
        /// failover: PostgreSQL SQLSTATE 25006 / 57P01–03 or a standby, Redis READONLY /
        /// MASTERDOWN / LOADING): every connection of the pool is retired at once.
        ServerMoved => "server_moved",
        /// Taken out of the pool by its user (`detach()`): the pool forgot it and opens
        /// another when needed.
        Detached => "detached",
        /// A user hook (`before_acquire`, `after_release`) said not to reuse it.
        Rejected => "rejected",
    }
);

label_enum!(
    /// What kind of error (`kind` label).
    ErrorKind {
        /// Opening a connection failed.
        Connect => "connect",
        /// A connection broke while in use or idle.
        Broken => "broken",
        /// A validation ping failed.
        HealthCheck => "health_check",
        /// A request or query failed on a healthy connection.
        Request => "request",
        /// A caller ran out of time: an acquire that gave up after the acquire timeout
        /// (also counted in `poolkit_pool_timeouts_total`), or a request or statement
        /// past its deadline.
        Timeout => "timeout",
        /// A connection was held longer than `P_LEAK_THRESHOLD`.
        Leak => "leak",
        /// A read went to the primary because every read replica was down.
        Fallback => "fallback",
        /// The server moved (a failover): counted once per pool-wide event, not per
        /// connection (those are `closed{reason="server_moved"}`).
        ServerMoved => "server_moved",
    }
);

/// Sends the descriptions and units of every metric to the installed recorder.
/// Called on every pool build; repeats are harmless.
pub fn describe() {
    use names::*;
    describe_gauge!(
        CONNECTIONS,
        Unit::Count,
        "Open connections by state (idle, used)."
    );
    describe_gauge!(CONNECTIONS_MAX, Unit::Count, "The pool's ceiling.");
    describe_gauge!(
        CONNECTIONS_OPEN_LIMIT,
        Unit::Count,
        "The open limit: the most connections the pool opens now, the auto-sizer's choice (P_POOL_SIZE=auto), else the ceiling."
    );
    describe_gauge!(CONNECTIONS_MIN_IDLE, Unit::Count, "Connections kept warm.");
    describe_gauge!(
        PENDING_REQUESTS,
        Unit::Count,
        "Callers waiting for a connection."
    );
    describe_gauge!(
        UTILIZATION_RATIO,
        Unit::Percent,
        "Used connections over the ceiling, 0 to 1."
    );
    describe_histogram!(
        ACQUIRE_WAIT_SECONDS,
        Unit::Seconds,
        "Time from asking for a connection to holding one."
    );
    describe_histogram!(
        CONNECTION_USE_SECONDS,
        Unit::Seconds,
        "Time a connection was held."
    );
    describe_histogram!(
        CONNECTION_CREATE_SECONDS,
        Unit::Seconds,
        "Time to open a connection."
    );
    describe_counter!(ACQUIRES_TOTAL, Unit::Count, "Successful checkouts.");
    describe_counter!(
        ACQUIRE_TIMEOUTS_TOTAL,
        Unit::Count,
        "Checkouts that gave up after the acquire timeout."
    );
    describe_counter!(
        CONNECTIONS_CREATED_TOTAL,
        Unit::Count,
        "Connections opened."
    );
    describe_counter!(
        CONNECTIONS_CLOSED_TOTAL,
        Unit::Count,
        "Connections closed, by reason."
    );
    describe_counter!(CONNECTION_ERRORS_TOTAL, Unit::Count, "Errors, by kind.");
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "HTTP requests by connection (new or reused)."
    );
    describe_counter!(
        RETRIES_TOTAL,
        Unit::Count,
        "Requests or statements sent again after a failure that allowed it."
    );
    describe_counter!(
        RECONNECTS_TOTAL,
        Unit::Count,
        "Connections opened again in the background after they dropped or were retired."
    );
    describe_histogram!(
        QUERY_DURATION_SECONDS,
        Unit::Seconds,
        "Time a SQL statement or Redis command took, by operation (first keyword or command)."
    );
    describe_counter!(
        SLOW_QUERIES_TOTAL,
        Unit::Count,
        "Queries slower than P_SLOW_QUERY, by operation."
    );
}

/// The metric handles of one pool, registered once with labels `pool` and `backend`.
/// Only [`crate::Telemetry::publish`] writes to them.
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    /// `poolkit_connections{state="idle"}`
    pub idle: Gauge,
    /// `poolkit_connections{state="used"}`
    pub used: Gauge,
    /// `poolkit_connections_max`
    pub max: Gauge,
    /// `poolkit_connections_open_limit`
    pub open_limit: Gauge,
    /// `poolkit_connections_min_idle`
    pub min_idle: Gauge,
    /// `poolkit_pending_requests`
    pub pending: Gauge,
    /// `poolkit_utilization_ratio`
    pub utilization: Gauge,
    /// `poolkit_acquire_wait_seconds`
    pub acquire_wait: Histogram,
    /// `poolkit_connection_use_seconds`
    pub use_time: Histogram,
    /// `poolkit_connection_create_seconds`
    pub create_time: Histogram,
    /// `poolkit_acquires_total`
    pub acquires: Counter,
    /// `poolkit_acquire_timeouts_total`
    pub timeouts: Counter,
    /// `poolkit_connections_created_total`
    pub created: Counter,
    /// `poolkit_connections_closed_total{reason}`, indexed by [`CloseReason`] `as usize`.
    pub closed: Vec<Counter>,
    /// `poolkit_connection_errors_total{kind}`, indexed by [`ErrorKind`] `as usize`.
    pub errors: Vec<Counter>,
    /// `poolkit_requests_total{connection="new"}`
    pub requests_new: Counter,
    /// `poolkit_requests_total{connection="reused"}`
    pub requests_reused: Counter,
    /// `poolkit_retries_total`
    pub retries: Counter,
    /// `poolkit_reconnects_total`
    pub reconnects: Counter,
}

impl PoolMetrics {
    /// Registers every handle for pool `pool` of kind `backend` with the current recorder
    /// (describing the metrics first). Values are sent by [`crate::Telemetry::publish`].
    #[must_use]
    pub fn new(pool: &str, backend: crate::Backend) -> Self {
        use names::*;
        describe();
        let pool = pool.to_owned();
        let backend = backend.as_str();
        let base = [
            (LABEL_POOL, pool.clone()),
            (LABEL_BACKEND, backend.to_owned()),
        ];
        let with = |key: &'static str, value: &'static str| {
            [
                (LABEL_POOL, pool.clone()),
                (LABEL_BACKEND, backend.to_owned()),
                (key, value.to_owned()),
            ]
        };
        Self {
            idle: metrics::gauge!(CONNECTIONS, &with(LABEL_STATE, ConnState::Idle.as_str())),
            used: metrics::gauge!(CONNECTIONS, &with(LABEL_STATE, ConnState::Used.as_str())),
            max: metrics::gauge!(CONNECTIONS_MAX, &base),
            open_limit: metrics::gauge!(CONNECTIONS_OPEN_LIMIT, &base),
            min_idle: metrics::gauge!(CONNECTIONS_MIN_IDLE, &base),
            pending: metrics::gauge!(PENDING_REQUESTS, &base),
            utilization: metrics::gauge!(UTILIZATION_RATIO, &base),
            acquire_wait: metrics::histogram!(ACQUIRE_WAIT_SECONDS, &base),
            use_time: metrics::histogram!(CONNECTION_USE_SECONDS, &base),
            create_time: metrics::histogram!(CONNECTION_CREATE_SECONDS, &base),
            acquires: metrics::counter!(ACQUIRES_TOTAL, &base),
            timeouts: metrics::counter!(ACQUIRE_TIMEOUTS_TOTAL, &base),
            created: metrics::counter!(CONNECTIONS_CREATED_TOTAL, &base),
            closed: CloseReason::ALL
                .iter()
                .map(|r| {
                    metrics::counter!(CONNECTIONS_CLOSED_TOTAL, &with(LABEL_REASON, r.as_str()))
                })
                .collect(),
            errors: ErrorKind::ALL
                .iter()
                .map(|k| metrics::counter!(CONNECTION_ERRORS_TOTAL, &with(LABEL_KIND, k.as_str())))
                .collect(),
            requests_new: metrics::counter!(REQUESTS_TOTAL, &with(LABEL_CONNECTION, "new")),
            requests_reused: metrics::counter!(REQUESTS_TOTAL, &with(LABEL_CONNECTION, "reused")),
            retries: metrics::counter!(RETRIES_TOTAL, &base),
            reconnects: metrics::counter!(RECONNECTS_TOTAL, &base),
        }
    }
}

/// What sends its own counts to the `metrics` facade when asked (a scrape, or the
/// background publisher), instead of on every event: a pool's [`crate::Telemetry`], its
/// [`crate::QueryStats`], an adapter's monitor.
pub trait Publish: Send + Sync {
    /// Sends the counts as they are now, and histogram samples recorded since last time.
    fn publish(&self);
}

/// The histogram samples already sent to the facade, so each publish sends only the new
/// ones (each bucket's count since the last publish, at the bucket's middle).
#[derive(Debug, Default)]
pub struct HistogramFeed {
    seen: Mutex<Vec<u64>>,
}

impl HistogramFeed {
    /// Sends the samples `hist` recorded since the last call to `handle`.
    pub fn feed(&self, hist: &LatencyHistogram, handle: &Histogram) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let buckets = hist.buckets();
        seen.resize(buckets.len(), 0);
        for ((value, count), before) in buckets.into_iter().zip(seen.iter_mut()) {
            if count > *before {
                let new = usize::try_from(count - *before).unwrap_or(usize::MAX);
                handle.record_many(value, new);
                *before = count;
            }
        }
    }
}

/// Everything live that publishes, for [`publish_all`].
static LIVE: Mutex<Vec<Weak<dyn Publish>>> = Mutex::new(Vec::new());

/// How often the background publisher sends every pool's numbers to the facade.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Adds `t` to the published set (and starts the background publisher the first time);
/// it leaves the set when dropped.
pub fn join(t: Weak<dyn Publish>) {
    static PUBLISHER: Once = Once::new();
    let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    live.retain(|w| w.strong_count() > 0);
    live.push(t);
    drop(live);
    PUBLISHER.call_once(|| {
        // A plain thread: it must outlive any one tokio runtime (tests make many).
        let spawned = std::thread::Builder::new()
            .name("poolkit-publish".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(PUBLISH_INTERVAL);
                    publish_all();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the metrics publisher; call poolkit_core::metrics::publish_all() yourself");
        }
    });
}

/// Sends every live pool's gauges, counters and new histogram samples to the installed
/// recorder. The checkout path never touches the facade; this runs once a second in the
/// background, and exporters call it before they render (so a scrape is exact).
pub fn publish_all() {
    let live: Vec<Arc<dyn Publish>> = LIVE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for t in live {
        t.publish();
    }
}
