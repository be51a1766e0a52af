//! The router's pure logic, in process (no network): the dashboard page, /metrics when no
//! recorder is installed or pools were built before it, and unknown paths. The endpoints
//! against real pools are tested in the workspace's `tests/monitor_*.rs`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use poolkit_monitor::{Monitor, MonitorConfig};
use tower::ServiceExt;

async fn call(monitor: &Monitor, path: &str) -> (StatusCode, String) {
    let resp = monitor
        .router()
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8(body.to_vec()).expect("UTF-8"))
}

#[tokio::test]
async fn without_a_recorder_metrics_says_what_to_call() {
    let m = Monitor::builder()
        .without_metrics()
        .pools(Vec::new())
        .build();
    let (status, body) = call(&m, "/metrics").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("poolkit_monitor::install()"), "{body}");
}

#[tokio::test]
async fn a_handle_from_build_recorder_renders_its_metrics() {
    let (recorder, handle) = poolkit_monitor::build_recorder();
    metrics::with_local_recorder(&recorder, || {
        metrics::histogram!("poolkit_acquire_wait_seconds", "pool" => "x", "backend" => "redis")
            .record(0.003);
    });
    let m = Monitor::builder().metrics(handle).pools(Vec::new()).build();
    let (status, body) = call(&m, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(
            "poolkit_acquire_wait_seconds_bucket{pool=\"x\",backend=\"redis\",le=\"0.0025\"} 0"
        ),
        "{body}"
    );
    assert!(
        body.contains(
            "poolkit_acquire_wait_seconds_bucket{pool=\"x\",backend=\"redis\",le=\"0.005\"} 1"
        ),
        "{body}"
    );
}

#[tokio::test]
async fn dashboard_is_one_self_contained_page() {
    let m = Monitor::builder().config(MonitorConfig::default()).build();
    let (status, body) = call(&m, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("<!doctype html>"));
    assert!(
        !body.contains("<script src") && !body.contains("<link"),
        "no external assets"
    );
    let (status, body) = call(&m, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("/pools/{name}"), "{body}");
}

/// A pool that only has a name (the router test needs one registered pool, nothing more).
#[derive(Debug)]
struct Named;

impl poolkit_core::Monitored for Named {
    fn name(&self) -> &str {
        "early"
    }
    fn backend(&self) -> poolkit_core::Backend {
        poolkit_core::Backend::Postgres
    }
    fn stats(&self) -> poolkit_core::PoolStats {
        poolkit_core::PoolStats::default()
    }
    fn health(&self) -> poolkit_core::Health {
        poolkit_core::Health::assess(&self.stats(), &poolkit_core::Thresholds::default())
    }
    fn ping(&self) -> poolkit_core::BoxFuture<'_, Result<(), poolkit_core::PingError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn pools_built_before_the_recorder_are_pointed_out() {
    let (_recorder, handle) = poolkit_monitor::build_recorder();
    let m = Monitor::builder()
        .metrics(handle)
        .pools(vec![std::sync::Arc::new(Named)])
        .build();
    let (status, body) = call(&m, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("# poolkit: pools were built before this recorder was installed"),
        "{body}"
    );
}
