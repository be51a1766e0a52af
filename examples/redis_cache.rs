//! A read-through cache on Redis with both pool modes: cached reads over the shared
//! multiplexed connections, and a worker that blocks on a job queue with `BLPOP` on an
//! exclusive connection without stalling the reads.
//!
//! `cargo run --example redis_cache --features redis` (env: `REDIS_URL` or
//! `REDIS_HOST` / `REDIS_PORT` / `REDIS_PASSWORD`, default 127.0.0.1:6379).

use std::time::{Duration, Instant};

use poolkit::redis::{Config, Pool, redis};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::new(Config::from_env("REDIS")?).await?;
    println!(
        "connected to {} with {} shared connections",
        pool.config().target(),
        pool.stats().open
    );

    // A worker waiting for jobs on a connection of its own.
    let worker = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.with_exclusive(async |conn| {
                redis::cmd("BLPOP")
                    .arg("poolkit:example:jobs")
                    .arg(5)
                    .query_async::<Option<(String, String)>>(conn)
                    .await
            })
            .await
        })
    };

    // Meanwhile, 10,000 cached reads from 200 tasks over the shared connections.
    pool.query::<()>(
        redis::cmd("SET")
            .arg("poolkit:example:user:1")
            .arg("Ada")
            .arg("EX")
            .arg(60),
    )
    .await?;
    let started = Instant::now();
    let readers: Vec<_> = (0..200)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    let name: Option<String> = pool
                        .query(redis::cmd("GET").arg("poolkit:example:user:1"))
                        .await?;
                    assert_eq!(name.as_deref(), Some("Ada"));
                }
                Ok::<(), poolkit::redis::Error>(())
            })
        })
        .collect();
    for r in readers {
        r.await??;
    }
    println!(
        "10,000 GETs in {:.1?} while the worker blocks in BLPOP",
        started.elapsed()
    );

    pool.query::<()>(
        redis::cmd("RPUSH")
            .arg("poolkit:example:jobs")
            .arg("send-welcome-email"),
    )
    .await?;
    let job = tokio::time::timeout(Duration::from_secs(6), worker).await???;
    println!("worker got: {job:?}");

    let s = pool.stats();
    println!(
        "shared: {} commands, p99 wait {:.3} ms, {} sockets; exclusive checkouts: {}",
        s.acquires,
        s.wait.p99 * 1e3,
        s.open,
        pool.exclusive_stats().acquires
    );
    println!("health: {}", pool.health().message);
    Ok(())
}
