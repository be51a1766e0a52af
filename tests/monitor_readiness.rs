//! Starvation as a readiness signal: callers waiting with no connection free for longer
//! than `P_STARVATION_AFTER` turn `/health/ready` to 503 (and the pool's `ready` false),
//! while `/health` stays 200 (the pool is up: a liveness probe must not restart it). Ready
//! again as soon as a connection is free.
#![cfg(all(feature = "monitor", feature = "postgres"))]

mod monitor_support;

use std::time::{Duration, Instant};

use monitor_support::*;
use poolkit::monitor::{Monitor, MonitorConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_pool_is_not_ready_and_ready_again_when_served() {
    recorder();
    let mut config = poolkit::postgres::Config::new(database_url());
    config.pool.name = "mon_ready".into();
    config.pool.prefix = "MON_READY".into();
    config.pool.pool_size = 1;
    config.pool.min_idle = 1;
    config.pool.acquire_timeout = Duration::from_secs(20);
    config.pool.starvation_after = Some(Duration::from_millis(500));
    let pool = poolkit::postgres::Pool::new(config)
        .await
        .expect("a pool on DATABASE_URL (scripts/services.sh starts PostgreSQL)");
    let (_, server) = spawn(Monitor::builder(), MonitorConfig::default()).await;
    let addr = server.local_addr();
    assert_eq!(get(addr, "/health/ready", None).await.status, 200);

    let held = hold(&pool, 1).await;
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let c = pool
                    .get()
                    .await
                    .expect("served once the connection is back");
                c.simple_query("SELECT 1").await.expect("query");
            })
        })
        .collect();
    let starved_at = Instant::now();
    let not_ready = loop {
        let r = get(addr, "/health/ready", None).await;
        if r.status == 503 || starved_at.elapsed() > Duration::from_secs(5) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = starved_at.elapsed();
    assert_eq!(not_ready.status, 503, "{}", not_ready.body);
    let body = not_ready.json();
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["pools"][0]["ready"], false, "{body}");
    let message = body["pools"][0]["message"].as_str().unwrap();
    assert!(message.contains("waiting"), "{message}");
    let health = get(addr, "/health", None).await;
    assert_eq!(health.status, 200, "starved is not down: {}", health.body);
    let alerts = pool.health().alerts;
    let starved = alerts
        .iter()
        .find(|a| a.message.contains("no connection free"))
        .expect("a starvation alert");
    println!(
        "FIGURES monitor_readiness: /health/ready 503 {took:.0?} after 3 callers started waiting on a held pool of 1 (P_STARVATION_AFTER 500 ms); /health 200; alert: {}",
        starved.message
    );
    assert!(
        starved
            .recommendation
            .contains("MON_READY_STARVATION_AFTER"),
        "{}",
        starved.recommendation
    );
    assert!(
        took >= Duration::from_millis(500),
        "not ready before the bound: {took:?}"
    );

    drop(held);
    for w in waiters {
        w.await.expect("waiter");
    }
    let back = get(addr, "/health/ready", None).await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.json()["ready"], true);
}
