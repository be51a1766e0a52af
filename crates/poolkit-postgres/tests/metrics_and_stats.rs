//! Metrics recorded through the `metrics` facade, and stats that add up.

mod common;

use std::time::Duration;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};

fn labels(key: &CompositeKey) -> Vec<(String, String)> {
    let mut l: Vec<(String, String)> = key
        .key()
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    l.sort();
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_schema_and_stats_add_up() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this test binary");

    let pool = builder("metrics")
        .pool_size(4)
        .min_idle(2)
        .build()
        .await
        .expect("build");
    let mut handles = Vec::new();
    for _ in 0..20 {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..10 {
                let c = pool.get().await.expect("get");
                c.simple_query("SELECT 1").await.expect("query");
                let s = pool.stats();
                assert!(s.open <= 4 && s.used <= 4 && s.used >= 1, "{s:?}");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = pool.stats();
    assert_eq!(s.acquires, 200);
    assert_eq!((s.used, s.pending), (0, 0));
    assert_eq!(s.idle + s.used, s.open);
    assert!(s.open <= 4 && s.open >= 2);
    assert_eq!(s.created - s.closed_total(), s.open);
    assert!(s.wait.p50 <= s.wait.p95 && s.wait.p95 <= s.wait.p99);

    let snap = snapshot_map(&snapshotter);
    let base = vec![
        ("backend".to_owned(), "postgres".to_owned()),
        ("pool".to_owned(), "t_metrics".to_owned()),
    ];
    let find = |name: &str, extra: &[(&str, &str)]| {
        let mut want = base.clone();
        want.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        want.sort();
        snap.iter()
            .find(|(k, _, _)| k.key().name() == name && labels(k) == want)
            .map(|(_, u, v)| (*u, v))
    };
    let counter = |name: &str, extra: &[(&str, &str)]| match find(name, extra) {
        Some((_, DebugValue::Counter(n))) => *n,
        other => panic!("{name}{extra:?}: {other:?}"),
    };
    let gauge = |name: &str, extra: &[(&str, &str)]| match find(name, extra) {
        Some((_, DebugValue::Gauge(g))) => g.into_inner(),
        other => panic!("{name}{extra:?}: {other:?}"),
    };
    let hist_len = |name: &str| match find(name, &[]) {
        Some((unit, DebugValue::Histogram(v))) => {
            assert_eq!(unit, Some(metrics::Unit::Seconds), "{name} is in seconds");
            v.len()
        }
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(counter("poolkit_acquires_total", &[]), 200);
    assert_eq!(counter("poolkit_acquire_timeouts_total", &[]), 0);
    assert_eq!(counter("poolkit_connections_created_total", &[]), s.created);
    assert_eq!(
        counter("poolkit_connection_errors_total", &[("kind", "connect")]),
        0
    );
    assert_eq!(
        counter("poolkit_connections_closed_total", &[("reason", "broken")]),
        0
    );
    assert_eq!(gauge("poolkit_connections_max", &[]), 4.0);
    assert_eq!(gauge("poolkit_connections_min_idle", &[]), 2.0);
    assert_eq!(gauge("poolkit_pending_requests", &[]), 0.0);
    assert_eq!(gauge("poolkit_connections", &[("state", "used")]), 0.0);
    #[allow(clippy::cast_precision_loss)]
    let open = s.open as f64;
    assert_eq!(gauge("poolkit_connections", &[("state", "idle")]), open);
    assert_eq!(gauge("poolkit_utilization_ratio", &[]), 0.0);
    assert!(hist_len("poolkit_acquire_wait_seconds") >= 200);
    assert!(hist_len("poolkit_connection_use_seconds") >= 200);
    assert_eq!(
        hist_len("poolkit_connection_create_seconds") as u64,
        s.created
    );
    // Every emitted name is in the schema; no label carries the URL.
    for (k, _, _) in &snap {
        assert!(
            poolkit_core::metrics::names::ALL.contains(&k.key().name()),
            "{}",
            k.key().name()
        );
        assert!(k.kind() != MetricKind::Histogram || k.key().name().ends_with("_seconds"));
        for (_, v) in labels(k) {
            assert!(
                !v.contains("127.0.0.1") && !v.contains("postgres://"),
                "label leaks the target: {v}"
            );
        }
    }
}

type Snap = Vec<(CompositeKey, Option<metrics::Unit>, DebugValue)>;

fn snapshot_map(s: &metrics_util::debugging::Snapshotter) -> Snap {
    // Pools count in atomics and publish to the recorder when asked (as a scrape does).
    poolkit_core::metrics::publish_all();
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, unit, _desc, v)| (k, unit, v))
        .collect()
}
