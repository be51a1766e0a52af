//! Exhaustion: holders keep every connection; a new caller gets the pool-timeout error after
//! the configured time ± 10 %, with a message naming the pool and its `P_POOL_SIZE`.
//! Pools are configured from env-style variables, as users configure them.
#![cfg(all(feature = "postgres", feature = "redis"))]

mod common;

use std::time::{Duration, Instant};

use common::{PrivateRedis, database_url, pg_unreachable};

fn within_10_percent(waited: Duration, configured: Duration) -> bool {
    waited >= configured.mul_f64(0.9) && waited <= configured.mul_f64(1.1)
}

/// Builds a PostgreSQL pool from `vars` under `prefix`, holds all of it, and returns
/// (configured timeout, waited, message).
async fn exhaust_pg(prefix: &str, vars: &[(&str, &str)]) -> (Duration, Duration, String) {
    let url = database_url();
    let lookup = |k: &str| {
        if k == format!("{prefix}_URL") {
            return Some(url.clone());
        }
        vars.iter()
            .find(|(name, _)| format!("{prefix}_{name}") == k)
            .map(|(_, v)| (*v).to_owned())
    };
    let config = poolkit::postgres::Config::from_lookup(prefix, &lookup).expect("valid config");
    let timeout = config.pool.acquire_timeout;
    let ceiling = config.pool.ceiling();
    let pool = poolkit::postgres::Pool::new(config)
        .await
        .unwrap_or_else(|e| panic!("{}", pg_unreachable(&e)));
    let mut held = Vec::new();
    for _ in 0..ceiling {
        held.push(pool.get().await.expect("a holder"));
    }
    let start = Instant::now();
    let err = pool.get().await.expect_err("every connection is held");
    let waited = start.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    let s = pool.stats();
    assert_eq!((s.timeouts, s.used), (1, u64::from(ceiling)), "{s:?}");
    drop(held);
    let s = pool.stats();
    assert_eq!((s.used, s.pending), (0, 0), "{s:?}");
    (timeout, waited, err.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_timeout_is_on_time_and_named() {
    // Three pools at once (each waits on its own), so the test takes the longest timeout.
    let (a, b, c) = tokio::join!(
        exhaust_pg("ORDERS", &[("POOL_SIZE", "3"), ("POOL_TIMEOUT", "300ms")]),
        exhaust_pg("BILLING", &[("POOL_SIZE", "2"), ("POOL_TIMEOUT", "1")]),
        exhaust_pg(
            "REPORTS",
            &[
                ("POOL_SIZE", "1"),
                ("POOL_MAXSIZE", "2"),
                ("POOL_TIMEOUT", "2s")
            ]
        ),
    );
    for ((timeout, waited, msg), (pool, var)) in [a, b, c].into_iter().zip([
        ("orders", "ORDERS_POOL_SIZE"),
        ("billing", "BILLING_POOL_SIZE"),
        ("reports", "REPORTS_POOL_MAXSIZE"),
    ]) {
        assert!(
            within_10_percent(waited, timeout),
            "{pool}: waited {waited:?} for a {timeout:?} timeout"
        );
        assert!(msg.contains(&format!("`{pool}`")), "names the pool: {msg}");
        assert!(msg.contains(var), "names {var}: {msg}");
        assert!(
            msg.contains(&format!("{}_POOL_TIMEOUT", pool.to_ascii_uppercase())),
            "names the timeout variable: {msg}"
        );
        println!(
            "FIGURES exhaustion postgres {pool}: configured={timeout:?} waited={waited:?} error=\"{msg}\""
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_exclusive_timeout_is_on_time_and_named() {
    let server = PrivateRedis::start(&[]);
    let url = server.url();
    let lookup = |k: &str| match k {
        "CACHE_URL" => Some(url.clone()),
        "CACHE_POOL_SIZE" => Some("2".to_owned()),
        "CACHE_POOL_TIMEOUT" => Some("500ms".to_owned()),
        _ => None,
    };
    let config = poolkit::redis::Config::from_lookup("CACHE", &lookup).expect("valid config");
    let pool = poolkit::redis::Pool::new(config)
        .await
        .unwrap_or_else(|e| panic!("pool on the private redis-server {url}: {e}"));
    let _a = pool.exclusive().await.expect("holder");
    let _b = pool.exclusive().await.expect("holder");
    let start = Instant::now();
    let err = pool.exclusive().await.expect_err("both held");
    let waited = start.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    let msg = err.to_string();
    assert!(
        within_10_percent(waited, Duration::from_millis(500)),
        "waited {waited:?}"
    );
    assert!(msg.contains("`cache_exclusive`"), "{msg}");
    assert!(msg.contains("CACHE_POOL_SIZE"), "{msg}");
    assert!(msg.contains("CACHE_POOL_TIMEOUT"), "{msg}");
    // Shared commands are not blocked by exclusive holders.
    let pong: String = pool
        .query(&poolkit::redis::redis::cmd("PING"))
        .await
        .expect("shared PING");
    assert_eq!(pong, "PONG");
    println!(
        "FIGURES exhaustion redis cache_exclusive: configured=500ms waited={waited:?} error=\"{msg}\""
    );
}
