//! Health thresholds from the environment: a real PostgreSQL pool's `/health`, `/alerts` and
//! `/pools` use them, and `/alerts.yml` serves Prometheus rules with the same figures
//! (checked by promtool).
#![cfg(all(feature = "monitor", feature = "postgres"))]

mod monitor_support;

use std::process::{Command, Stdio};

use monitor_support::*;
use poolkit::monitor::{Endpoint, Monitor, MonitorConfig};
use poolkit::postgres::{Config, Pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_from_the_environment_reach_every_endpoint() {
    recorder();
    let url = database_url();
    let vars = [
        ("MON_THRESH_URL", url.as_str()),
        ("MON_THRESH_POOL_SIZE", "4"),
        ("MON_THRESH_POOL_MIN_IDLE", "0"),
        ("MON_THRESH_POOL_TIMEOUT", "200ms"),
        ("POOLKIT_HEALTH_WARNING", "80"),
        ("POOLKIT_HEALTH_CRITICAL", "95"),
    ];
    let lookup = |k: &str| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    };
    let config = Config::from_lookup("MON_THRESH", &lookup).expect("config");
    assert_eq!(
        (
            config.pool.thresholds.warning,
            config.pool.thresholds.critical
        ),
        (0.8, 0.95)
    );
    let pool = Pool::new(config).await.expect("a pool on DATABASE_URL");
    // 3 of 4 in use: 75 %, a warning with the defaults (70 %), moderate with 80 %.
    let held = hold(&pool, 3).await;
    let monitor_config = MonitorConfig::from_lookup(&lookup)
        .expect("monitor config")
        .with_open(Endpoint::Pools, true)
        .with_open(Endpoint::Alerts, true);
    let (_, server) = spawn(
        Monitor::builder().pools(vec![poolkit_core::pool("mon_thresh").expect("registered")]),
        monitor_config,
    )
    .await;
    let addr = server.local_addr();
    let health = get(addr, "/health", None).await.json();
    assert_eq!(health["status"], "moderate", "{health}");
    let pools = get(addr, "/pools", None).await.json();
    assert_eq!(pools["pools"][0]["status"], "moderate", "{pools}");
    let alerts = get(addr, "/alerts", None).await.json();
    assert_eq!(
        alerts["alerts"],
        serde_json::json!([]),
        "no alert below 80 %"
    );
    // A fourth connection: 100 % >= 95 %, but callers are served in time: a warning.
    let fourth = pool.get().await.expect("the fourth connection");
    let health = get(addr, "/health", None).await.json();
    assert_eq!(health["status"], "warning", "full, nobody waits: {health}");
    // A caller that times out: 100 % >= 95 % under pressure, critical everywhere.
    let timed_out = pool.get().await.expect_err("no fifth connection");
    assert!(timed_out.is_timeout(), "{timed_out}");
    let health = get(addr, "/health", None).await.json();
    assert_eq!(health["status"], "critical", "{health}");
    let alerts = get(addr, "/alerts", None).await.json();
    assert_eq!(alerts["alerts"][0]["severity"], "critical", "{alerts}");
    drop(fourth);

    // The rules Prometheus would load use the same 80 / 95 %, and critical needs callers
    // that time out or wait long, as /health.
    let rules = get(addr, "/alerts.yml", None).await;
    assert_eq!(rules.status, 200);
    assert!(
        rules.body.contains("(poolkit_utilization_ratio) >= 0.8\n")
            && rules.body.contains("(poolkit_utilization_ratio) >= 0.95\n")
            && rules.body.contains("poolkit_acquire_timeouts_total"),
        "{}",
        rules.body
    );
    let path = artifacts().join("alerts-80-95.yml");
    std::fs::write(&path, &rules.body).expect("write the rules");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run promtool (install it with scripts/services.d/monitor.sh)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(held);
    server.shutdown().await.expect("shutdown");
}
