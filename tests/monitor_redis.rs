//! The monitor reports a real Redis pool (both its shared and exclusive parts) with the same
//! endpoints and metric schema as PostgreSQL.
#![cfg(all(feature = "monitor", feature = "redis", feature = "postgres"))]

mod monitor_support;

use monitor_support::*;
use poolkit::monitor::{Endpoint, Monitor, MonitorConfig};
use poolkit::redis::{Config, Pool, redis};
use poolkit_core::env::process_lookup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pools_show_up_in_every_endpoint() {
    recorder();
    let url = process_lookup("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let lookup = {
        let url = url.clone();
        move |k: &str| (k == "MONREDIS_URL").then(|| url.clone())
    };
    let config = Config::from_lookup("MONREDIS", &lookup).expect("config");
    let pool = Pool::new(config).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach Redis at REDIS_URL={} ({e}); start it with scripts/services.sh",
            poolkit_core::redact_url(&url)
        )
    });
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for j in 0..25 {
                    let key = format!("poolkit_monitor_test_{i}");
                    pool.query::<()>(redis::cmd("SET").arg(&key).arg(j))
                        .await
                        .expect("SET");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("load task");
    }
    let mine: Vec<_> = poolkit_core::pools()
        .into_iter()
        .filter(|p| p.name().starts_with("monredis"))
        .collect();
    let names: Vec<String> = mine.iter().map(|p| p.name().to_owned()).collect();
    assert!(names.contains(&"monredis".to_owned()), "{names:?}");
    let (_, server) = spawn(
        Monitor::builder().pools(mine),
        MonitorConfig::default().with_open(Endpoint::Pools, false),
    )
    .await;
    let addr = server.local_addr();

    let pools = get(addr, "/pools", Some(&bearer())).await;
    assert_eq!(pools.status, 200, "{}", pools.body);
    let body = pools.json();
    let shared = body["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "monredis")
        .unwrap_or_else(|| panic!("monredis missing: {body}"))
        .clone();
    assert_eq!(shared["backend"], "redis");
    assert_eq!(
        shared["stats"]["ceiling_var"]
            .as_str()
            .map(|v| v.starts_with("MONREDIS_")),
        Some(true),
        "{shared}"
    );
    assert!(shared["stats"]["open"].as_u64().unwrap() >= 1, "{shared}");
    assert_no_secret("/pools", &pools.body);

    let health = get(addr, "/health", None).await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "healthy", "{}", health.body);

    let metrics = get(addr, "/metrics", None).await;
    let base = r#"pool="monredis",backend="redis""#;
    for name in poolkit_core::metrics::names::ALL {
        assert!(
            metrics
                .body
                .lines()
                .any(|l| l.starts_with(name) && l.contains(base)),
            "{name} with {base} missing"
        );
    }
    server.shutdown().await.expect("shutdown");
}
