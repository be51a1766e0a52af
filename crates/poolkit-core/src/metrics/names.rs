//! Metric names and label keys, declared once. See `docs/metrics.md` for the
//! OpenTelemetry equivalents.

/// Gauge: open connections, by `state` (`idle` | `used`).
pub const CONNECTIONS: &str = "poolkit_connections";
/// Gauge: the configured ceiling.
pub const CONNECTIONS_MAX: &str = "poolkit_connections_max";
/// Gauge: the open limit, the most connections the pool opens now (the auto-sizer's
/// choice, or the ceiling).
pub const CONNECTIONS_OPEN_LIMIT: &str = "poolkit_connections_open_limit";
/// Gauge: the configured minimum of idle connections.
pub const CONNECTIONS_MIN_IDLE: &str = "poolkit_connections_min_idle";
/// Gauge: callers waiting for a connection.
pub const PENDING_REQUESTS: &str = "poolkit_pending_requests";
/// Gauge: used / max, 0 to 1.
pub const UTILIZATION_RATIO: &str = "poolkit_utilization_ratio";
/// Histogram: seconds from asking for a connection to holding one.
pub const ACQUIRE_WAIT_SECONDS: &str = "poolkit_acquire_wait_seconds";
/// Histogram: seconds a connection was held.
pub const CONNECTION_USE_SECONDS: &str = "poolkit_connection_use_seconds";
/// Histogram: seconds to open a connection.
pub const CONNECTION_CREATE_SECONDS: &str = "poolkit_connection_create_seconds";
/// Counter: successful checkouts.
pub const ACQUIRES_TOTAL: &str = "poolkit_acquires_total";
/// Counter: checkouts that timed out.
pub const ACQUIRE_TIMEOUTS_TOTAL: &str = "poolkit_acquire_timeouts_total";
/// Counter: connections opened.
pub const CONNECTIONS_CREATED_TOTAL: &str = "poolkit_connections_created_total";
/// Counter: connections closed, by `reason`.
pub const CONNECTIONS_CLOSED_TOTAL: &str = "poolkit_connections_closed_total";
/// Counter: errors, by `kind`.
pub const CONNECTION_ERRORS_TOTAL: &str = "poolkit_connection_errors_total";
/// Counter: HTTP requests, by `connection` (`new` | `reused`).
pub const REQUESTS_TOTAL: &str = "poolkit_requests_total";
/// Counter: requests or statements sent again after a failure that allowed it (an HTTP
/// request retried on a fresh connection, a transaction retried after a serialization
/// failure).
pub const RETRIES_TOTAL: &str = "poolkit_retries_total";
/// Counter: connections opened again in the background after they dropped or were retired
/// (Redis shared sockets, the Redis Cluster connection).
pub const RECONNECTS_TOTAL: &str = "poolkit_reconnects_total";
/// Histogram: seconds a query (SQL statement or Redis command) took, by `operation`.
/// OpenTelemetry: `db.client.operation.duration`.
pub const QUERY_DURATION_SECONDS: &str = "poolkit_query_duration_seconds";
/// Counter: queries slower than `P_SLOW_QUERY`.
pub const SLOW_QUERIES_TOTAL: &str = "poolkit_slow_queries_total";

/// Every metric name, for exporters and schema tests.
pub const ALL: [&str; 19] = [
    CONNECTIONS,
    CONNECTIONS_MAX,
    CONNECTIONS_OPEN_LIMIT,
    CONNECTIONS_MIN_IDLE,
    PENDING_REQUESTS,
    UTILIZATION_RATIO,
    ACQUIRE_WAIT_SECONDS,
    CONNECTION_USE_SECONDS,
    CONNECTION_CREATE_SECONDS,
    ACQUIRES_TOTAL,
    ACQUIRE_TIMEOUTS_TOTAL,
    CONNECTIONS_CREATED_TOTAL,
    CONNECTIONS_CLOSED_TOTAL,
    CONNECTION_ERRORS_TOTAL,
    REQUESTS_TOTAL,
    RETRIES_TOTAL,
    RECONNECTS_TOTAL,
    QUERY_DURATION_SECONDS,
    SLOW_QUERIES_TOTAL,
];

/// Label key: the pool's name.
pub const LABEL_POOL: &str = "pool";
/// Label key: the backend (`postgres`, `redis`, `http`).
pub const LABEL_BACKEND: &str = "backend";
/// Label key on [`CONNECTIONS`].
pub const LABEL_STATE: &str = "state";
/// Label key on [`CONNECTIONS_CLOSED_TOTAL`].
pub const LABEL_REASON: &str = "reason";
/// Label key on [`CONNECTION_ERRORS_TOTAL`].
pub const LABEL_KIND: &str = "kind";
/// Label key on [`REQUESTS_TOTAL`].
pub const LABEL_CONNECTION: &str = "connection";
/// Label key on [`QUERY_DURATION_SECONDS`] and [`SLOW_QUERIES_TOTAL`]: the statement's
/// first keyword or the Redis command, lower case, from a closed set (`other` otherwise).
pub const LABEL_OPERATION: &str = "operation";
