//! Honest size advice: one rule (Little's law × headroom, capped by what the server
//! grants), "critical" only when callers suffer, and "the server is the limit" when it is.

mod common;

use std::time::Duration;

use poolkit_core::HealthStatus;
use poolkit_postgres::{Config, Pool};

async fn pool(vars: &[(&str, &str)]) -> Pool {
    let url = common::database_url();
    let lookup = |k: &str| {
        if k == "DATABASE_URL" {
            return Some(url.clone());
        }
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    };
    let config = Config::from_lookup("DATABASE", &lookup).expect("config");
    Pool::new(config)
        .await
        .expect("DATABASE_URL: start PostgreSQL with scripts/services.sh")
}

/// Starts `tasks` callers each holding a connection for `hold`; returns their handles.
fn load(pool: &Pool, tasks: usize, hold: &'static str) -> Vec<tokio::task::JoinHandle<bool>> {
    (0..tasks)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                match pool.get().await {
                    Ok(conn) => conn.batch_execute(hold).await.is_ok(),
                    Err(e) => e.is_timeout(),
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_that_serves_in_time_is_not_critical() {
    let pool = pool(&[("MAX_POOL_SIZE", "10"), ("DATABASE_POOL_MIN_IDLE", "10")]).await;
    // 200 callers, 10 connections, 5 ms each: everyone is served in well under the 30 s
    // acquire timeout; the queue is only the burst.
    let mut worst = HealthStatus::Healthy;
    let mut advice = Vec::new();
    for _ in 0..3 {
        let handles = load(&pool, 200, "SELECT pg_sleep(0.005)");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let h = pool.health();
        worst = worst.max(h.status);
        advice.extend(h.recommendations);
        for h in handles {
            assert!(h.await.expect("task"), "served");
        }
    }
    let s = pool.stats();
    assert_eq!(s.timeouts, 0);
    assert!(worst < HealthStatus::Critical, "{worst}: {advice:?}");
    assert!(
        advice.iter().all(|r| !r.contains("raise")),
        "no advice to raise a pool that keeps up: {advice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_give_the_one_rule_capped_by_the_server() {
    // Callers time out: the waiting ones are demand too.
    let vars = [
        ("DATABASE_POOL_SIZE", "4"),
        ("DATABASE_POOL_TIMEOUT", "100ms"),
    ];
    let pool = pool(&vars).await;
    let handles = load(&pool, 40, "SELECT pg_sleep(0.4)");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let h = pool.health();
    for t in handles {
        assert!(t.await.expect("task"));
    }
    assert_eq!(h.status, HealthStatus::Critical, "{}", h.message);
    // Each acquire timeout is also poolkit_connection_errors_total{kind="timeout"}.
    let s = pool.stats();
    assert!(s.timeouts > 0);
    assert_eq!(s.errors_by("timeout"), s.timeouts, "{s:?}");
    let raise = h
        .recommendations
        .iter()
        .find(|r| r.contains("raise DATABASE_POOL_SIZE from 4 to"))
        .unwrap_or_else(|| panic!("{:?}", h.recommendations));
    let to: u32 = raise
        .split("from 4 to ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("a number");
    let cap = pool
        .stats()
        .server_cap
        .expect("the server's limit is known");
    assert!(to <= cap.connections, "{raise} vs {cap:?}");

    // With DATABASE_MAX_CONNECTIONS at the pool's size, the server is the limit.
    let pool = pool_limited().await;
    let handles = load(&pool, 40, "SELECT pg_sleep(0.4)");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let h = pool.health();
    for t in handles {
        assert!(t.await.expect("task"));
    }
    assert!(
        h.recommendations
            .iter()
            .any(|r| r.starts_with("the server is the limit, not the pool")
                && r.contains("DATABASE_MAX_CONNECTIONS")),
        "{:?}",
        h.recommendations
    );
}

async fn pool_limited() -> Pool {
    pool(&[
        ("DATABASE_POOL_SIZE", "4"),
        ("DATABASE_POOL_TIMEOUT", "100ms"),
        ("DATABASE_MAX_CONNECTIONS", "4"),
    ])
    .await
}
