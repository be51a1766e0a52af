//! Redis `CLIENT KILL` against a private redis-server: shared (multiplexed) connections and
//! exclusive checkouts are killed from the server side. No broken connection may be handed
//! out twice, and the counters must say what happened.
#![cfg(feature = "redis")]

mod common;

use std::time::{Duration, Instant};

use common::PrivateRedis;
use poolkit::redis::{Config, Error, Pool, redis};

async fn private_pool(server: &PrivateRedis, name: &str, size: u32) -> Pool {
    let mut config = Config::new(server.url());
    config.pool.name = name.to_owned();
    config.pool.prefix = name.to_ascii_uppercase();
    config.pool.pool_size = size;
    config.max_in_flight = size * 256;
    config.pool.acquire_timeout = Duration::from_secs(2);
    Pool::new(config)
        .await
        .unwrap_or_else(|e| panic!("pool on the private redis-server {}: {e}", server.url()))
}

/// Kills every normal client of `server`; returns how many were killed.
fn kill_all(server: &PrivateRedis) -> u32 {
    let out = server.cli(None, &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("CLIENT KILL said {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_shared_connections() {
    const SIZE: u32 = 2;
    let server = PrivateRedis::start(&[]);
    let pool = private_pool(&server, "fault_rkill", SIZE).await;
    for i in 0..20 {
        let _: () = pool
            .query(redis::cmd("SET").arg(format!("k{i}")).arg(i))
            .await
            .expect("SET before the kill");
    }
    let killed = tokio::task::block_in_place(|| kill_all(&server));
    assert!(killed >= SIZE, "killed {killed}");
    let t = Instant::now();
    // One command at a time: each dead connection may fail at most one command.
    let mut failures = 0;
    let mut first_ok = None;
    for i in 0..50 {
        match pool
            .query::<Option<i64>>(redis::cmd("GET").arg(format!("k{}", i % 20)))
            .await
        {
            Ok(v) => {
                assert_eq!(v, Some(i64::from(i % 20)));
                first_ok.get_or_insert(t.elapsed());
            }
            Err(e) => {
                assert!(matches!(e, Error::Backend(_)), "typed: {e:?}");
                failures += 1;
            }
        }
    }
    assert!(
        failures <= SIZE,
        "{failures} failed commands for {SIZE} killed connections"
    );
    let s = pool.stats();
    assert_eq!(s.closed_by("broken"), u64::from(failures), "{s:?}");
    assert_eq!(s.errors_by("broken"), u64::from(failures), "{s:?}");
    assert_eq!(s.used, 0, "{s:?}");
    println!(
        "FIGURES redis_client_kill_shared: killed={killed} failed_commands={failures} first_ok_after={first_ok:?} \
         reconnects={} closed_broken={}",
        pool.reconnects(),
        s.closed_by("broken")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_exclusive_connections() {
    const SIZE: u32 = 3;
    let server = PrivateRedis::start(&[]);
    let pool = private_pool(&server, "fault_rkill_x", SIZE).await;
    // Open all exclusive connections.
    let mut held = Vec::new();
    for _ in 0..SIZE {
        held.push(pool.exclusive().await.expect("exclusive checkout"));
    }
    for c in &mut held {
        let _: () = redis::cmd("PING").query_async(c).await.expect("PING");
    }
    drop(held);
    let killed = tokio::task::block_in_place(|| kill_all(&server));
    assert!(killed >= SIZE, "killed {killed}");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut failures = 0;
    for round in 0..3 {
        let mut held = Vec::new();
        for _ in 0..SIZE {
            held.push(
                pool.exclusive()
                    .await
                    .expect("exclusive checkout after the kill"),
            );
        }
        let mut f = 0;
        for c in &mut held {
            if redis::cmd("PING").query_async::<()>(c).await.is_err() {
                f += 1;
            }
        }
        drop(held);
        if round > 0 {
            assert_eq!(
                f, 0,
                "round {round}: a killed connection was handed out again"
            );
        }
        failures += f;
    }
    let s = pool.exclusive_stats();
    assert_eq!(s.closed_by("broken"), u64::from(SIZE), "{s:?}");
    assert_eq!(s.used, 0);
    assert_eq!(s.pending, 0);
    println!(
        "FIGURES redis_client_kill_exclusive: killed={killed} failed_commands={failures} closed_broken={} created={}",
        s.closed_by("broken"),
        s.created
    );
}
