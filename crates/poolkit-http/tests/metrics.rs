//! The pool publishes the poolkit_* schema with pool/backend labels, and joins the registry.

mod common;

use std::collections::HashMap;

use common::{Mode, Opts, serve};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use poolkit_http::Pool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_new_and_reused_in_metrics_and_registry() {
    let server = serve(Opts::new(Mode::Http1)).await;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let pool = metrics::with_local_recorder(&recorder, || {
        Pool::new(common::config("metrics_http", &server, 4)).unwrap()
    });
    for _ in 0..10 {
        pool.get("/").send().await.unwrap();
    }
    let mut values: HashMap<String, f64> = HashMap::new();
    // Pools count in atomics and publish to the recorder when asked (as a scrape does).
    poolkit_core::metrics::publish_all();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: HashMap<&str, &str> = key.labels().map(|l| (l.key(), l.value())).collect();
        assert_eq!(labels.get("pool"), Some(&"metrics_http"), "{key:?}");
        assert_eq!(labels.get("backend"), Some(&"http"), "{key:?}");
        let mut name = key.name().to_owned();
        for extra in ["connection", "state", "reason", "kind"] {
            if let Some(v) = labels.get(extra) {
                name = format!("{name}{{{extra}={v}}}");
            }
        }
        let v = match value {
            DebugValue::Counter(c) => c as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(h) => h.len() as f64,
        };
        values.insert(name, v);
    }
    let get = |n: &str| {
        *values
            .get(n)
            .unwrap_or_else(|| panic!("{n} missing from {values:?}"))
    };
    assert_eq!(get("poolkit_requests_total{connection=new}"), 1.0);
    assert_eq!(get("poolkit_requests_total{connection=reused}"), 9.0);
    assert_eq!(get("poolkit_connections_created_total"), 1.0);
    assert_eq!(get("poolkit_acquires_total"), 10.0);
    assert_eq!(get("poolkit_connections{state=idle}"), 1.0);
    assert_eq!(get("poolkit_connections{state=used}"), 0.0);
    assert_eq!(get("poolkit_connections_max"), 4.0);
    assert_eq!(get("poolkit_pending_requests"), 0.0);
    assert_eq!(
        get("poolkit_acquire_wait_seconds"),
        10.0,
        "one wait sample per request"
    );
    assert_eq!(
        get("poolkit_connection_use_seconds"),
        10.0,
        "one duration per request"
    );
    assert_eq!(get("poolkit_connection_errors_total{kind=connect}"), 0.0);

    let registered = poolkit_core::pool("metrics_http").expect("the pool registered itself");
    assert_eq!(registered.backend(), poolkit_core::Backend::Http);
    assert_eq!(registered.stats().requests_reused, 9);
    assert!(registered.ping().await.is_ok());
    drop(registered);
    drop(pool);
    assert!(
        poolkit_core::pool("metrics_http").is_none(),
        "a dropped pool leaves the registry"
    );
}
