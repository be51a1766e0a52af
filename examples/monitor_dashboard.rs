//! Builds every pool configured in the environment, puts a small load on them and serves
//! the monitor (dashboard, /metrics, /health, /pools, /alerts).
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test DATABASE_POOL_SIZE=8 \
//! REDIS_URL=redis://127.0.0.1:6379 \
//! POOLKIT_MONITOR_ADDR=127.0.0.1:9464 \
//!   cargo run --example monitor_dashboard --features full -- 60
//! # open http://127.0.0.1:9464/ (add #token=<POOLKIT_MONITOR_TOKEN> when a token is set)
//! ```
//!
//! The optional argument is how many seconds to run (default: until interrupted).

use std::time::Duration;

use poolkit::monitor::{Endpoint, Monitor, MonitorConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: Option<u64> = std::env::args().nth(1).map(|s| s.parse()).transpose()?;
    // The recorder first: pools register their metric handles when built.
    poolkit::monitor::install()?;

    let mut config = MonitorConfig::from_env()?;
    if config.token.is_none() && config.addr.ip().is_loopback() {
        println!(
            "POOLKIT_MONITOR_TOKEN is not set: serving /pools and /alerts without a token on loopback only"
        );
        config = config
            .with_open(Endpoint::Pools, true)
            .with_open(Endpoint::Alerts, true);
    }

    #[allow(unused_mut)] // filled only when a backend feature is on
    let mut load: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    #[cfg(feature = "postgres")]
    if poolkit::core::env::process_lookup("DATABASE_URL").is_some() {
        let pool = poolkit::postgres::Pool::from_env().await?;
        println!("postgres pool {:?} built", pool.stats().name);
        load.extend(postgres_load(&pool));
    }
    #[cfg(feature = "redis")]
    {
        use poolkit::core::env::process_lookup;
        if process_lookup("REDIS_URL").is_some() || process_lookup("REDIS_HOST").is_some() {
            let pool = poolkit::redis::Pool::from_env().await?;
            println!("redis pool {:?} built", pool.stats().name);
            load.extend(redis_load(&pool));
        }
    }
    let pools = poolkit::core::pools();
    if pools.is_empty() {
        println!(
            "no pool configured: set DATABASE_URL (feature postgres) or REDIS_URL (feature redis)"
        );
    }

    let server = Monitor::builder().config(config).build().spawn().await?;
    println!(
        "dashboard: http://{}/  metrics: http://{0}/metrics  health: http://{0}/health",
        server.local_addr()
    );
    match seconds {
        Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
        None => std::future::pending::<()>().await,
    }
    for task in load {
        task.abort();
        let _ = task.await;
    }
    server.shutdown().await?;
    Ok(())
}

/// Workers that check out a connection, run a short query and hold it for a while, so
/// utilization and waits move on the dashboard.
#[cfg(feature = "postgres")]
fn postgres_load(pool: &poolkit::postgres::Pool) -> Vec<tokio::task::JoinHandle<()>> {
    let workers = pool.stats().max_size as usize + 2;
    (0..workers)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut n: u64 = i as u64;
                loop {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let hold_ms = 20 + (n >> 33) % 180;
                    match pool.get().await {
                        Ok(conn) => {
                            if let Err(e) = conn.simple_query("SELECT 1").await {
                                eprintln!("query failed: {e}");
                            }
                            tokio::time::sleep(Duration::from_millis(hold_ms)).await;
                        }
                        Err(e) => eprintln!("checkout failed: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(hold_ms / 2)).await;
                }
            })
        })
        .collect()
}

/// Workers that run `INCR` in bursts on the shared Redis connections and `BLPOP` with a
/// short timeout on exclusive ones, so both parts of the pool show activity.
#[cfg(feature = "redis")]
fn redis_load(pool: &poolkit::redis::Pool) -> Vec<tokio::task::JoinHandle<()>> {
    use poolkit::redis::redis;
    let mut tasks: Vec<_> = (0..8)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let key = format!("poolkit_demo_counter_{i}");
                loop {
                    for _ in 0..50 {
                        if let Err(e) = pool.query::<i64>(redis::cmd("INCR").arg(&key)).await {
                            eprintln!("redis INCR failed: {e}");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    let pool = pool.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let popped = pool
                .with_exclusive(async |conn| {
                    redis::cmd("BLPOP")
                        .arg("poolkit_demo_jobs")
                        .arg(0.2)
                        .query_async::<Option<(String, String)>>(conn)
                        .await
                })
                .await;
            if let Err(e) = popped {
                eprintln!("redis BLPOP failed: {e}");
            }
        }
    }));
    tasks
}
