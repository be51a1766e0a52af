//! Routers that serve the paths and JSON shapes existing dashboards and alerts already
//! read, so they work unchanged on top of poolkit:
//!
//! - `GET /api/admin/pool-stats` (SQLAlchemy's `pool.status()` numbers): `pool_size`,
//!   `checked_out`, `overflow`, `checked_in`, `total_capacity`, `utilization_percent`,
//!   `status`, `message`, `recommendations`. One pool: `?pool=NAME`, else the first
//!   PostgreSQL pool (else the first pool).
//! - `GET /api/monitoring/connection-pools`, `/api/monitoring/system-health` and
//!   `/api/monitoring/alerts`: a `timestamp`, per pool `pool_size`, `total_connections`,
//!   `active_connections`, `idle_connections`, `failed_connections` and `utilization` in
//!   percent; `alert_count`, `alerts[].component` and `status: "alerts_present"`.
//! - `GET /api/v1/monitoring/pool-stats`, `/api/v1/monitoring/pool-metrics/detailed` and
//!   `/api/v1/monitoring/health/database`.
//!
//! Percentages are 0–100 where these shapes use percent; times are ISO 8601 UTC. Every
//! path sits behind the monitor's bearer token, following the same `POOLKIT_MONITOR_OPEN`
//! groups (`pools` for stats, `health` for health, `alerts` for alerts).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use poolkit_core::{Backend, Health, HealthStatus, PoolStats};
use serde_json::{Value, json};

use crate::config::Endpoint;
use crate::report;
use crate::router::{Monitor, json_response, unauthorized};

/// The compatibility router for `monitor` (mount it next to [`Monitor::router`], for
/// example `app.merge(compat::router(&monitor))`).
pub fn router(monitor: &Monitor) -> Router {
    Router::new()
        .route("/api/admin/pool-stats", get(admin_pool_stats))
        .route("/api/monitoring/connection-pools", get(connection_pools))
        .route("/api/monitoring/system-health", get(system_health))
        .route("/api/monitoring/alerts", get(monitoring_alerts))
        .route("/api/v1/monitoring/pool-stats", get(v1_pool_stats))
        .route("/api/v1/monitoring/pool-metrics/detailed", get(v1_detailed))
        .route(
            "/api/v1/monitoring/health/database",
            get(v1_health_database),
        )
        .with_state(monitor.clone())
}

/// Days since 1970-01-01 to a civil (year, month, day), after Howard Hinnant's algorithm.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `time` as ISO 8601 UTC with milliseconds: `2026-11-30T20:37:45.123Z`.
#[must_use]
pub fn iso8601(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

fn now() -> String {
    iso8601(SystemTime::now())
}

fn pct(ratio: f64) -> f64 {
    (ratio * 1000.0).round() / 10.0
}

fn ms(seconds: f64) -> f64 {
    (seconds * 10_000.0).round() / 10.0
}

fn failed(stats: &PoolStats) -> u64 {
    stats.errors_by("connect") + stats.errors_by("broken") + stats.errors_by("health_check")
}

/// SQLAlchemy's `pool.status()` numbers plus health, for one pool.
#[must_use]
pub fn admin_pool_stats_body(stats: &PoolStats, health: &Health) -> Value {
    json!({
        "pool": stats.name,
        "pool_size": stats.pool_size,
        "checked_out": stats.used,
        "overflow": stats.open.saturating_sub(u64::from(stats.pool_size)),
        "checked_in": stats.idle,
        "total_capacity": stats.max_size,
        "utilization_percent": pct(stats.utilization),
        "status": health.status,
        "message": health.message,
        "recommendations": health.recommendations,
        "timestamp": now(),
    })
}

fn pool_counts(stats: &PoolStats, health: &Health) -> Value {
    json!({
        "backend": stats.backend,
        "pool_size": stats.max_size,
        "total_connections": stats.open,
        "active_connections": stats.used,
        "idle_connections": stats.idle,
        "waiting_requests": stats.pending,
        "failed_connections": failed(stats),
        "utilization": pct(stats.utilization),
        "status": health.status,
    })
}

/// `/api/monitoring/connection-pools`: every pool's counts, keyed by pool name.
#[must_use]
pub fn connection_pools_body(pools: &[(PoolStats, Health)]) -> Value {
    let map: serde_json::Map<String, Value> = pools
        .iter()
        .map(|(s, h)| (s.name.clone(), pool_counts(s, h)))
        .collect();
    json!({ "timestamp": now(), "pools": map })
}

fn overall(pools: &[(PoolStats, Health)]) -> HealthStatus {
    pools
        .iter()
        .map(|(_, h)| h.status)
        .max()
        .unwrap_or(HealthStatus::Healthy)
}

/// `/api/monitoring/system-health`: the worst status and each pool as a component.
#[must_use]
pub fn system_health_body(pools: &[(PoolStats, Health)]) -> Value {
    let components: serde_json::Map<String, Value> = pools
        .iter()
        .map(|(s, h)| {
            (
                s.name.clone(),
                json!({
                    "status": h.status,
                    "utilization": pct(h.utilization),
                    "message": h.message,
                    "alert_count": h.alerts.len(),
                }),
            )
        })
        .collect();
    let alert_count: usize = pools.iter().map(|(_, h)| h.alerts.len()).sum();
    json!({
        "timestamp": now(),
        "status": overall(pools),
        "alert_count": alert_count,
        "components": components,
    })
}

/// `/api/monitoring/alerts`: every alert with its `component` (the pool), and
/// `status: "alerts_present"` or `"ok"`.
#[must_use]
pub fn alerts_body(pools: &[(PoolStats, Health)]) -> Value {
    let mut alerts: Vec<&poolkit_core::Alert> =
        pools.iter().flat_map(|(_, h)| h.alerts.iter()).collect();
    alerts.sort_by_key(|a| std::cmp::Reverse(a.severity));
    let list: Vec<Value> = alerts
        .iter()
        .map(|a| {
            json!({
                "component": a.pool,
                "severity": a.severity,
                "message": a.message,
                "recommendation": a.recommendation,
            })
        })
        .collect();
    json!({
        "timestamp": now(),
        "status": if list.is_empty() { "ok" } else { "alerts_present" },
        "alert_count": list.len(),
        "alerts": list,
    })
}

fn v1_pool(stats: &PoolStats, health: &Health) -> Value {
    json!({
        "name": stats.name,
        "backend": stats.backend,
        "pool_size": stats.pool_size,
        "max_size": stats.max_size,
        "checked_out": stats.used,
        "checked_in": stats.idle,
        "overflow": stats.open.saturating_sub(u64::from(stats.pool_size)),
        "waiting": stats.pending,
        "utilization_percent": pct(stats.utilization),
        "status": health.status,
    })
}

/// `/api/v1/monitoring/pool-stats`.
#[must_use]
pub fn v1_pool_stats_body(pools: &[(PoolStats, Health)]) -> Value {
    let list: Vec<Value> = pools.iter().map(|(s, h)| v1_pool(s, h)).collect();
    json!({ "timestamp": now(), "status": overall(pools), "pools": list })
}

/// `/api/v1/monitoring/pool-metrics/detailed`: the stats plus counters, wait quantiles in
/// milliseconds, and each pool's alerts and recommendations.
#[must_use]
pub fn v1_detailed_body(pools: &[(PoolStats, Health)]) -> Value {
    let list: Vec<Value> = pools
        .iter()
        .map(|(s, h)| {
            let mut v = v1_pool(s, h);
            let extra = json!({
                "total_connections": s.open,
                "min_idle": s.min_idle,
                "acquires_total": s.acquires,
                "timeouts_total": s.timeouts,
                "connections_created_total": s.created,
                "connections_closed_total": s.closed_total(),
                "errors_total": s.errors_total(),
                "failed_connections": failed(s),
                "hit_rate_percent": pct(s.hit_rate),
                "wait_ms": { "p50": ms(s.wait.p50), "p95": ms(s.wait.p95), "p99": ms(s.wait.p99) },
                "message": h.message,
                "alerts": h.alerts,
                "recommendations": h.recommendations,
            });
            if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
                obj.extend(more);
            }
            v
        })
        .collect();
    json!({ "timestamp": now(), "status": overall(pools), "pools": list })
}

/// `/api/v1/monitoring/health/database`: the PostgreSQL pools' live health.
#[must_use]
pub fn v1_health_database_body(pools: &[(PoolStats, Health, Duration)]) -> Value {
    let status = pools
        .iter()
        .map(|(_, h, _)| h.status)
        .max()
        .unwrap_or(HealthStatus::Healthy);
    let list: Vec<Value> = pools
        .iter()
        .map(|(s, h, took)| {
            json!({
                "name": s.name,
                "connected": h.status != HealthStatus::Down,
                "response_time_ms": ms(took.as_secs_f64()),
                "status": h.status,
                "utilization_percent": pct(s.utilization),
                "message": h.message,
            })
        })
        .collect();
    json!({
        "timestamp": now(),
        "status": if status == HealthStatus::Down { "unhealthy" } else { "healthy" },
        "database_status": status,
        "databases": list,
    })
}

async fn snapshots(m: &Monitor) -> Vec<(PoolStats, Health)> {
    let results = report::health(&m.pools(), m.config().ping_timeout).await;
    results.into_iter().map(|(p, h)| (p.stats(), h)).collect()
}

fn guarded(m: &Monitor, endpoint: Endpoint, headers: &HeaderMap) -> Option<Response> {
    m.guard(endpoint, headers).err().map(unauthorized)
}

/// The `pool` parameter of a query string (pool names need no decoding: `[a-z0-9_]+`).
fn pool_param(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("pool="))
}

async fn admin_pool_stats(
    State(m): State<Monitor>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = guarded(&m, Endpoint::Pools, &headers) {
        return r;
    }
    let pools = m.pools();
    let chosen = match pool_param(query.as_deref()) {
        Some(name) => pools.iter().rev().find(|p| p.name() == name),
        None => pools
            .iter()
            .find(|p| p.backend() == Backend::Postgres)
            .or_else(|| pools.first()),
    };
    match chosen {
        Some(p) => json_response(
            StatusCode::OK,
            &admin_pool_stats_body(&p.stats(), &p.health()),
        ),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": "no such pool (pass ?pool=NAME with a registered pool's name)" }),
        ),
    }
}

async fn connection_pools(State(m): State<Monitor>, headers: HeaderMap) -> Response {
    if let Some(r) = guarded(&m, Endpoint::Pools, &headers) {
        return r;
    }
    let pools: Vec<(PoolStats, Health)> =
        m.pools().iter().map(|p| (p.stats(), p.health())).collect();
    json_response(StatusCode::OK, &connection_pools_body(&pools))
}

async fn system_health(State(m): State<Monitor>, headers: HeaderMap) -> Response {
    if let Some(r) = guarded(&m, Endpoint::Health, &headers) {
        return r;
    }
    let pools = snapshots(&m).await;
    let status = if overall(&pools) == HealthStatus::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(status, &system_health_body(&pools))
}

async fn monitoring_alerts(State(m): State<Monitor>, headers: HeaderMap) -> Response {
    if let Some(r) = guarded(&m, Endpoint::Alerts, &headers) {
        return r;
    }
    json_response(StatusCode::OK, &alerts_body(&snapshots(&m).await))
}

async fn v1_pool_stats(State(m): State<Monitor>, headers: HeaderMap) -> Response {
    if let Some(r) = guarded(&m, Endpoint::Pools, &headers) {
        return r;
    }
    let pools: Vec<(PoolStats, Health)> =
        m.pools().iter().map(|p| (p.stats(), p.health())).collect();
    json_response(StatusCode::OK, &v1_pool_stats_body(&pools))
}

async fn v1_detailed(State(m): State<Monitor>, headers: HeaderMap) -> Response {
    if let Some(r) = guarded(&m, Endpoint::Pools, &headers) {
        return r;
    }
    let pools: Vec<(PoolStats, Health)> =
        m.pools().iter().map(|p| (p.stats(), p.health())).collect();
    json_response(StatusCode::OK, &v1_detailed_body(&pools))
}

async fn v1_health_database(State(m): State<Monitor>, headers: HeaderMap) -> Response {
    if let Some(r) = guarded(&m, Endpoint::Health, &headers) {
        return r;
    }
    let timeout = m.config().ping_timeout;
    let mut pools = Vec::new();
    for p in m
        .pools()
        .iter()
        .filter(|p| p.backend() == Backend::Postgres)
    {
        let started = std::time::Instant::now();
        let h = report::live_health(&**p, timeout).await;
        pools.push((p.stats(), h, started.elapsed()));
    }
    let body = v1_health_database_body(&pools);
    let status = if body["status"] == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_064_665_123);
        assert_eq!(iso8601(t), "2026-11-30T18:51:05.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }
}
