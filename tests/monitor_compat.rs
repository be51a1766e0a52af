//! `poolkit_monitor::compat` against a real PostgreSQL pool: every path answers with the
//! exact keys and types existing dashboards read (snapshots of each body's shape), percent
//! where the shape uses percent, and only with the bearer token.
#![cfg(all(feature = "monitor", feature = "postgres"))]

mod monitor_support;

use monitor_support::*;
use poolkit::monitor::{Endpoint, Monitor, MonitorConfig, compat};
use serde_json::{Value, json};

const POOL: &str = "mon_compat";

/// The shape of a JSON value: objects keep their keys, arrays show their first element,
/// scalars become their type name.
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

fn is_timestamp(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.starts_with("20")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_paths_serve_the_expected_shapes() {
    let pool = pg_pool(POOL, 4, &url_with_marker()).await;
    let held = hold(&pool, 3).await;
    let monitor = Monitor::builder()
        .pools(vec![poolkit_core::pool(POOL).expect("registered")])
        .config(
            MonitorConfig::default()
                .with_open(Endpoint::Health, false)
                .with_token(TOKEN),
        )
        .build();
    let app = compat::router(&monitor);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { poolkit::monitor::axum::serve(listener, app).await });
    let auth = bearer();

    let paths = [
        "/api/admin/pool-stats",
        "/api/monitoring/connection-pools",
        "/api/monitoring/system-health",
        "/api/monitoring/alerts",
        "/api/v1/monitoring/pool-stats",
        "/api/v1/monitoring/pool-metrics/detailed",
        "/api/v1/monitoring/health/database",
    ];
    // Health is open by default (for load balancers); here every group needs the token.
    for path in paths {
        let denied = get(addr, path, None).await;
        assert_eq!(
            denied.status, 401,
            "{path} without the token: {}",
            denied.body
        );
        let wrong = get(addr, path, Some("Bearer not-the-token-0123456789")).await;
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
    }

    let admin = get(addr, "/api/admin/pool-stats", Some(&auth)).await;
    assert_eq!(admin.status, 200, "{}", admin.body);
    assert_no_secret("admin pool-stats", &admin.body);
    let admin = admin.json();
    assert_eq!(
        shape(&admin),
        json!({
            "pool": "string", "pool_size": "number", "checked_out": "number", "overflow": "number",
            "checked_in": "number", "total_capacity": "number", "utilization_percent": "number",
            "status": "string", "message": "string", "recommendations": ["string"],
            "timestamp": "string"
        })
    );
    assert_eq!(
        (
            &admin["pool_size"],
            &admin["checked_out"],
            &admin["total_capacity"]
        ),
        (&json!(4), &json!(3), &json!(4))
    );
    assert_eq!(
        admin["utilization_percent"], 75.0,
        "percent, not a fraction"
    );
    assert_eq!(admin["status"], "warning");
    assert!(is_timestamp(&admin["timestamp"]), "{}", admin["timestamp"]);
    let named = get(
        addr,
        &format!("/api/admin/pool-stats?pool={POOL}"),
        Some(&auth),
    )
    .await;
    assert_eq!(named.json()["pool"], POOL);
    let missing = get(addr, "/api/admin/pool-stats?pool=nope", Some(&auth)).await;
    assert_eq!(missing.status, 404);

    let pools = get(addr, "/api/monitoring/connection-pools", Some(&auth))
        .await
        .json();
    let counts = json!({
        "backend": "string", "pool_size": "number", "total_connections": "number",
        "active_connections": "number", "idle_connections": "number",
        "waiting_requests": "number", "failed_connections": "number",
        "utilization": "number", "status": "string"
    });
    assert_eq!(
        shape(&pools),
        json!({ "timestamp": "string", "pools": { POOL: counts } })
    );
    assert_eq!(pools["pools"][POOL]["utilization"], 75.0);
    assert_eq!(pools["pools"][POOL]["active_connections"], 3);
    assert!(is_timestamp(&pools["timestamp"]));

    let health = get(addr, "/api/monitoring/system-health", Some(&auth))
        .await
        .json();
    assert_eq!(
        shape(&health),
        json!({
            "timestamp": "string", "status": "string", "alert_count": "number",
            "components": { POOL: {
                "status": "string", "utilization": "number", "message": "string",
                "alert_count": "number"
            } }
        })
    );
    assert_eq!(health["status"], "warning");
    assert_eq!(health["components"][POOL]["utilization"], 75.0);

    let alerts = get(addr, "/api/monitoring/alerts", Some(&auth))
        .await
        .json();
    assert_eq!(
        shape(&alerts),
        json!({
            "timestamp": "string", "status": "string", "alert_count": "number",
            "alerts": [{
                "component": "string", "severity": "string", "message": "string",
                "recommendation": "string"
            }]
        })
    );
    assert_eq!(alerts["status"], "alerts_present");
    assert_eq!(alerts["alert_count"], 1);
    assert_eq!(alerts["alerts"][0]["component"], POOL);
    assert_eq!(health["alert_count"], alerts["alert_count"]);

    let v1 = get(addr, "/api/v1/monitoring/pool-stats", Some(&auth))
        .await
        .json();
    let v1_pool = json!({
        "name": "string", "backend": "string", "pool_size": "number", "max_size": "number",
        "checked_out": "number", "checked_in": "number", "overflow": "number",
        "waiting": "number", "utilization_percent": "number", "status": "string"
    });
    assert_eq!(
        shape(&v1),
        json!({ "timestamp": "string", "status": "string", "pools": [v1_pool.clone()] })
    );
    assert_eq!(v1["pools"][0]["utilization_percent"], 75.0);

    let detailed = get(
        addr,
        "/api/v1/monitoring/pool-metrics/detailed",
        Some(&auth),
    )
    .await
    .json();
    let mut want = v1_pool.as_object().cloned().expect("object");
    for (k, v) in json!({
        "total_connections": "number", "min_idle": "number", "acquires_total": "number",
        "timeouts_total": "number", "connections_created_total": "number",
        "connections_closed_total": "number", "errors_total": "number",
        "failed_connections": "number", "hit_rate_percent": "number",
        "wait_ms": { "p50": "number", "p95": "number", "p99": "number" },
        "message": "string",
        "alerts": [{ "severity": "string", "pool": "string", "message": "string", "recommendation": "string" }],
        "recommendations": ["string"]
    })
    .as_object()
    .expect("object")
    {
        want.insert(k.clone(), v.clone());
    }
    assert_eq!(
        shape(&detailed),
        json!({ "timestamp": "string", "status": "string", "pools": [Value::Object(want)] })
    );
    assert_eq!(
        detailed["pools"][0]["acquires_total"],
        pool.stats().acquires
    );

    let db = get(addr, "/api/v1/monitoring/health/database", Some(&auth)).await;
    assert_eq!(db.status, 200, "{}", db.body);
    let db = db.json();
    assert_eq!(
        shape(&db),
        json!({
            "timestamp": "string", "status": "string", "database_status": "string",
            "databases": [{
                "name": "string", "connected": "bool", "response_time_ms": "number",
                "status": "string", "utilization_percent": "number", "message": "string"
            }]
        })
    );
    assert_eq!(db["status"], "healthy");
    assert_eq!(db["databases"][0]["connected"], true);

    drop(held);
    server.abort();
    let _ = server.await;
}
