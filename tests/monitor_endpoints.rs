//! Every monitor endpoint against real PostgreSQL pools: /metrics (names and labels as in
//! DESIGN.md), /pools, /pools/{name}, /health, /alerts, the dashboard page, auth, and the
//! router mounted inside another axum app.
#![cfg(all(feature = "monitor", feature = "postgres"))]

mod monitor_support;

use monitor_support::*;
use poolkit::monitor::{Endpoint, Monitor, MonitorConfig};
use poolkit_core::metrics::names;
use poolkit_core::metrics::{CloseReason, ErrorKind};

/// The value of the sample `line_prefix` (metric name with labels) in a Prometheus scrape.
fn sample(scrape: &str, line_prefix: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(line_prefix) && l[line_prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_schema() {
    let pool = pg_pool("mon_metrics", 4, &url_with_marker()).await;
    for _ in 0..5 {
        let c = pool.get().await.expect("checkout");
        c.simple_query("SELECT 1").await.expect("query");
    }
    let held = hold(&pool, 3).await;
    let (_, server) = spawn(
        Monitor::builder(),
        MonitorConfig::default().with_open(Endpoint::Pools, true),
    )
    .await;
    let r = get(server.local_addr(), "/metrics", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.headers
    );
    let m = &r.body;
    assert_no_secret("/metrics", m);
    let base = r#"pool="mon_metrics",backend="postgres""#;
    // Every name of the schema is exported for this pool with `pool` and `backend` labels.
    for name in names::ALL {
        assert!(
            m.lines().any(|l| l.starts_with(name) && l.contains(base)),
            "{name} with {base} missing from /metrics:\n{m}"
        );
    }
    // The three *_seconds metrics are histograms with explicit buckets, not summaries.
    for name in [
        names::ACQUIRE_WAIT_SECONDS,
        names::CONNECTION_USE_SECONDS,
        names::CONNECTION_CREATE_SECONDS,
    ] {
        assert!(
            m.contains(&format!("# TYPE {name} histogram")),
            "{name} is not a histogram:\n{m}"
        );
        for le in ["0.0001", "0.001", "0.1", "1", "30", "+Inf"] {
            assert!(
                m.contains(&format!("{name}_bucket{{{base},le=\"{le}\"}}")),
                "{name} lacks bucket le={le}:\n{m}"
            );
        }
        assert!(
            !m.contains(&format!("{name}{{{base},quantile=")),
            "{name} exported as a summary"
        );
    }
    let stats = pool.stats();
    let gauge = |line: &str| sample(m, line).unwrap_or_else(|| panic!("no sample {line}:\n{m}"));
    assert_eq!(
        gauge(&format!("poolkit_connections{{{base},state=\"used\"}}")),
        3.0
    );
    assert_eq!(gauge(&format!("poolkit_connections_max{{{base}}}")), 4.0);
    assert_eq!(
        gauge(&format!("poolkit_connections_min_idle{{{base}}}")),
        1.0
    );
    assert_eq!(gauge(&format!("poolkit_utilization_ratio{{{base}}}")), 0.75);
    assert_eq!(
        gauge(&format!("poolkit_pending_requests{{{base}}}")),
        0.0,
        "{m}"
    );
    #[allow(clippy::cast_precision_loss)]
    let acquires = stats.acquires as f64;
    assert!(acquires >= 8.0, "{stats:?}");
    assert_eq!(
        gauge(&format!("poolkit_acquires_total{{{base}}}")),
        acquires
    );
    assert_eq!(
        gauge(&format!("poolkit_acquire_wait_seconds_count{{{base}}}")),
        acquires,
        "one wait sample per acquire"
    );
    // Closed label values, error kinds and HTTP reuse labels exactly as in DESIGN.md.
    for r in CloseReason::ALL {
        let line = format!(
            "poolkit_connections_closed_total{{{base},reason=\"{}\"}}",
            r.as_str()
        );
        assert!(sample(m, &line).is_some(), "{line} missing");
    }
    for k in ErrorKind::ALL {
        let line = format!(
            "poolkit_connection_errors_total{{{base},kind=\"{}\"}}",
            k.as_str()
        );
        assert!(sample(m, &line).is_some(), "{line} missing");
    }
    for c in ["new", "reused"] {
        let line = format!("poolkit_requests_total{{{base},connection=\"{c}\"}}");
        assert!(sample(m, &line).is_some(), "{line} missing");
    }
    // /pools reads the registry by default (no ping, so no side effect on other tests).
    let pools = get(server.local_addr(), "/pools", Some(&bearer()))
        .await
        .json();
    let mine = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mon_metrics")
        .unwrap_or_else(|| panic!("mon_metrics missing from /pools: {pools}"))
        .clone();
    assert_eq!(mine["stats"]["used"], 3);
    assert_eq!(mine["stats"]["acquires"], stats.acquires);
    // Query timing: count, average and p95 in seconds, and health's component.
    let q = &mine["stats"]["query"];
    for key in ["count", "avg", "p95", "slow", "slow_threshold"] {
        assert!(q[key].is_number(), "stats.query.{key} in {mine}");
    }
    let perf = &mine["health"]["query_performance"];
    assert!(
        perf["status"].is_string() && perf["p95_ms"].is_number(),
        "{mine}"
    );
    drop(held);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_and_alerts_need_the_token() {
    let pool = pg_pool("mon_auth", 4, &url_with_marker()).await;
    let held = hold(&pool, 3).await;
    // Only this pool: /alerts pings, and a ping of another test's pool would change its numbers.
    let only = Monitor::builder().pools(vec![poolkit_core::pool("mon_auth").expect("registered")]);
    let (_, server) = spawn(only, MonitorConfig::default()).await;
    let addr = server.local_addr();
    for path in ["/pools", "/pools/mon_auth", "/alerts"] {
        let missing = get(addr, path, None).await;
        assert_eq!(
            missing.status, 401,
            "{path} without a token: {}",
            missing.body
        );
        assert_eq!(
            missing.header("www-authenticate"),
            "Bearer realm=\"poolkit-monitor\""
        );
        assert!(
            missing.json()["error"]
                .as_str()
                .unwrap()
                .contains("Authorization: Bearer")
        );
        for wrong in [
            "Bearer tok_SECRETMARKER_0123456789abcdeX",
            "Bearer tok_SECRETMARKER_0123456789abcde",
            "Basic dG9rOnRvaw==",
            "Bearer ",
        ] {
            let r = get(addr, path, Some(wrong)).await;
            assert_eq!(r.status, 401, "{path} with {wrong:?}: {}", r.body);
            assert_no_secret(path, &r.body);
        }
        let ok = get(addr, path, Some(&bearer())).await;
        assert_eq!(ok.status, 200, "{path} with the token: {}", ok.body);
        assert_eq!(ok.header("content-type"), "application/json");
        assert_no_secret(path, &ok.body);
    }
    // /pools: the numbers a user checks.
    let all = get(addr, "/pools", Some(&bearer())).await.json();
    let p = all["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mon_auth")
        .unwrap_or_else(|| panic!("mon_auth missing from /pools: {all}"))
        .clone();
    assert_eq!(p["backend"], "postgres");
    assert_eq!(p["status"], "warning");
    assert_eq!(p["stats"]["used"], 3);
    assert_eq!(p["stats"]["max_size"], 4);
    assert_eq!(p["stats"]["pending"], 0);
    assert_eq!(p["stats"]["utilization"], 0.75);
    assert_eq!(
        p["stats"]["closed"]["broken"], 0,
        "closed is an object by reason: {p}"
    );
    assert_eq!(
        p["stats"]["errors"]["connect"], 0,
        "errors is an object by kind: {p}"
    );
    assert_eq!(p["stats"]["ceiling_var"], "MON_AUTH_POOL_SIZE");
    assert_eq!(p["health"]["status"], "warning");
    let one = get(addr, "/pools/mon_auth", Some(&bearer())).await.json();
    assert_eq!(
        one["stats"], p["stats"],
        "/pools/{{name}} agrees with /pools"
    );
    let missing = get(addr, "/pools/no_such_pool", Some(&bearer())).await;
    assert_eq!(missing.status, 404);
    assert!(
        missing.json()["error"]
            .as_str()
            .unwrap()
            .contains("mon_auth"),
        "{}",
        missing.body
    );
    // /alerts: severity, pool, message, and a recommendation naming the variable.
    let alerts = get(addr, "/alerts", Some(&bearer())).await.json();
    let a = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["pool"] == "mon_auth")
        .unwrap_or_else(|| panic!("no alert for mon_auth: {alerts}"))
        .clone();
    assert_eq!(a["severity"], "warning");
    assert_eq!(
        a["message"],
        "Mon_auth pool utilization high: 75.0% (3 of 4 in use)"
    );
    let ceiling_var = pool.stats().ceiling_var;
    assert!(ceiling_var.ends_with("_POOL_SIZE"), "{ceiling_var}");
    // 3 of 4 held, nobody waiting, no timeouts: the one sizing rule sees no demand above
    // the size, so the advice is not to raise it (issue 22).
    let rec = a["recommendation"].as_str().unwrap();
    assert!(rec.starts_with("no change needed"), "{rec}");
    drop(held);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_are_open_by_default_and_configurable() {
    let pool = pg_pool("mon_health", 4, &url_with_marker()).await;
    // Only this pool: a live ping of another test's pool would change that test's numbers.
    let only =
        || Monitor::builder().pools(vec![poolkit_core::pool("mon_health").expect("registered")]);
    let (_, server) = spawn(only(), MonitorConfig::default()).await;
    let r = get(server.local_addr(), "/health", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_no_secret("/health", &r.body);
    let h = r.json();
    let mine = h["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == "mon_health")
        .unwrap_or_else(|| panic!("mon_health missing: {h}"))
        .clone();
    assert_eq!(mine["status"], "healthy", "{h}");
    assert_eq!(mine["backend"], "postgres");
    assert!(mine["query_performance"]["status"].is_string(), "{h}");
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(h["pools"].as_array().unwrap().len(), 1, "{h}");
    server.shutdown().await.expect("shutdown");

    // Closed: /health and /metrics need the token; /pools opened instead.
    let config = MonitorConfig::default()
        .with_open(Endpoint::Health, false)
        .with_open(Endpoint::Metrics, false)
        .with_open(Endpoint::Pools, true);
    let (_, server) = spawn(only(), config).await;
    let addr = server.local_addr();
    assert_eq!(get(addr, "/health", None).await.status, 401);
    assert_eq!(get(addr, "/metrics", None).await.status, 401);
    assert_eq!(get(addr, "/health", Some(&bearer())).await.status, 200);
    assert_eq!(get(addr, "/metrics", Some(&bearer())).await.status, 200);
    assert_eq!(get(addr, "/pools", None).await.status, 200);
    assert_eq!(get(addr, "/alerts", None).await.status, 401);
    server.shutdown().await.expect("shutdown");

    // No token configured: protected endpoints stay closed and say which variable to set.
    let mut config = MonitorConfig::default();
    config.addr = ([127, 0, 0, 1], 0).into();
    let monitor = only().config(config).build();
    let server = monitor.spawn().await.expect("spawn");
    let r = get(server.local_addr(), "/pools", Some(&bearer())).await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("POOLKIT_MONITOR_TOKEN"), "{}", r.body);
    server.shutdown().await.expect("shutdown");
    drop(pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_inside_another_axum_app() {
    let _pool = pg_pool("mon_nested", 2, &url_with_marker()).await;
    let monitor = Monitor::builder()
        .config(MonitorConfig::default().with_token(TOKEN))
        .pools(vec![
            poolkit_core::pool("mon_nested").expect("mon_nested is registered"),
        ])
        .build();
    let app = poolkit::monitor::axum::Router::new()
        .route(
            "/hello",
            poolkit::monitor::axum::routing::get(|| async { "app" }),
        )
        .nest("/monitor", monitor.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move { poolkit::monitor::axum::serve(listener, app).await });
    assert_eq!(get(addr, "/hello", None).await.body, "app");
    let pools = get(addr, "/monitor/pools", Some(&bearer())).await;
    assert_eq!(pools.status, 200, "{}", pools.body);
    let list = pools.json();
    assert_eq!(
        list["pools"].as_array().unwrap().len(),
        1,
        "only the given pool: {list}"
    );
    assert_eq!(list["pools"][0]["name"], "mon_nested");
    let page = get(addr, "/monitor", None).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(
        page.header("content-security-policy")
            .contains("default-src 'none'")
    );
    assert!(page.body.contains("poolkit pools"));
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "the page must not load anything from elsewhere"
    );
    let unknown = get(addr, "/monitor/nope", None).await;
    assert_eq!(unknown.status, 404);
    task.abort();
    let ended = task.await;
    assert!(
        ended
            .as_ref()
            .is_err_and(tokio::task::JoinError::is_cancelled),
        "{ended:?}"
    );
}
