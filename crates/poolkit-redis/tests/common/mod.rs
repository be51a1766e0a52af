//! Helpers for the Redis tests: the shared server's URL and private servers the tests
//! own (so they can kill and restart them without disturbing anyone else).
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use poolkit_core::env::process_lookup;
use poolkit_redis::{Config, Pool};
use poolkit_test_support as ports;

/// `REDIS_URL`, defaulting to the local server.
pub fn redis_url() -> String {
    process_lookup("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// A pool on the shared server; fails naming REDIS_URL when it is unreachable.
pub async fn shared_pool(name: &str, size: u32) -> Pool {
    let mut config = Config::new(redis_url());
    config.pool.name = name.to_owned();
    config.pool.prefix = name.to_ascii_uppercase();
    config.pool.pool_size = size;
    config.max_in_flight = size * 256;
    config.pool.acquire_timeout = Duration::from_secs(5);
    match Pool::new(config).await {
        Ok(pool) => pool,
        Err(e) => panic!(
            "cannot reach Redis at REDIS_URL={} ({e}); start it with scripts/services.sh",
            redis_url()
        ),
    }
}

/// A free TCP port on 127.0.0.1 for a private redis-server, or where nothing listens: from
/// outside the kernel's ephemeral range, so no other socket is handed it in the meantime
/// (see `poolkit-test-support`).
pub fn free_port() -> u16 {
    ports::child_port()
}

/// A redis-server this test owns (its log kept for a failing test).
pub use poolkit_test_support::PrivateRedis;

/// A pool on a private server.
pub async fn private_pool(server: &PrivateRedis, name: &str, size: u32, timeout: Duration) -> Pool {
    let mut config = Config::new(server.url());
    config.pool.name = name.to_owned();
    config.pool.prefix = name.to_ascii_uppercase();
    config.pool.pool_size = size;
    config.max_in_flight = size * 256;
    config.pool.acquire_timeout = timeout;
    Pool::new(config).await.expect("pool on the private server")
}

/// Waits (at most 5 s) until `pool` has `n` shared sockets open: a pool is ready with one,
/// and on a busy machine the others may still be connecting.
pub async fn until_open(pool: &Pool, n: u64) {
    let open = async {
        while pool.stats().open < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), open)
        .await
        .unwrap_or_else(|_| panic!("{n} shared sockets open within 5 s"));
}
