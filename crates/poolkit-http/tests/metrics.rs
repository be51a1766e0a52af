//! The pool publishes the poolkit_* schema with pool/backend labels, and joins the registry.

mod common;

use std::collections::HashMap;
use std::time::Duration;

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

/// The gauges a scrape publishes, read from a debugging recorder after `publish_all`.
fn gauges(snapshotter: &metrics_util::debugging::Snapshotter, pool: &str) -> (f64, f64, f64) {
    poolkit_core::metrics::publish_all();
    let (mut idle, mut used, mut pending) = (None, None, None);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: HashMap<&str, &str> = key.labels().map(|l| (l.key(), l.value())).collect();
        if labels.get("pool") != Some(&pool) {
            continue;
        }
        let DebugValue::Gauge(g) = value else {
            continue;
        };
        match (key.name(), labels.get("state")) {
            ("poolkit_connections", Some(&"idle")) => idle = Some(g.into_inner()),
            ("poolkit_connections", Some(&"used")) => used = Some(g.into_inner()),
            ("poolkit_pending_requests", _) => pending = Some(g.into_inner()),
            _ => {}
        }
    }
    (
        idle.expect("idle published"),
        used.expect("used published"),
        pending.expect("pending published"),
    )
}

/// One pool over an HTTP/1.1 origin (its engine) and an HTTP/2 one (its multiplexed pool,
/// learnt by ALPN): `stats()` and the exporter show the same open / used / pending, each
/// connection counted once, while requests are in flight and one waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_exporter_agree_over_http1_and_http2_origins() {
    let delay = Duration::from_millis(400);
    let h1 = serve(Opts {
        delay,
        ..Opts::new(Mode::Http1)
    })
    .await;
    let h2 = serve(Opts {
        delay,
        ..Opts::new(Mode::Tls)
    })
    .await;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let pool = metrics::with_local_recorder(&recorder, || {
        // Two HTTP/1.1 connections per origin; the TLS origin's certificate trusted too.
        let mut config = common::config("metrics_agree", &h2, 2);
        config.base_url = None;
        Pool::new(config).unwrap()
    });
    let (h1_url, h2_url) = (format!("{}/", h1.url()), format!("{}/", h2.url()));
    // Warm both origins: one HTTP/1.1 connection, and the HTTP/2 one.
    pool.get(&h1_url).send().await.unwrap();
    pool.get(&h2_url).send().await.unwrap();

    let mut tasks = Vec::new();
    for url in [&h1_url, &h1_url, &h1_url, &h2_url, &h2_url, &h2_url] {
        let (pool, url) = (pool.clone(), url.clone());
        tasks.push(tokio::spawn(async move { pool.get(&url).send().await }));
    }
    tokio::time::sleep(delay / 2).await;
    let stats = poolkit_core::pool("metrics_agree").unwrap().stats();
    let (idle, used, pending) = gauges(&snapshotter, "metrics_agree");
    // HTTP/1.1: two connections both in use, one caller waiting; HTTP/2: one connection
    // carrying three requests.
    assert_eq!(
        (stats.open, stats.used, stats.pending),
        (3, 5, 1),
        "{stats:?}"
    );
    #[allow(clippy::cast_precision_loss)]
    {
        assert_eq!(idle, stats.idle as f64);
        assert_eq!(used, stats.used as f64);
        assert_eq!(pending, stats.pending as f64);
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = poolkit_core::pool("metrics_agree").unwrap().stats();
    let (idle, used, pending) = gauges(&snapshotter, "metrics_agree");
    assert_eq!(
        (stats.open, stats.used, stats.pending),
        (3, 0, 0),
        "{stats:?}"
    );
    assert_eq!((idle, used, pending), (3.0, 0.0, 0.0));
}
