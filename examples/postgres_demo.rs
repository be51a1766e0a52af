//! The demo of `scripts/demo.sh`: 1000 concurrent tasks through a 20-connection pool
//! against the local PostgreSQL, with live progress, then the same work with a new
//! connection per operation, so the gain of pooling is shown rather than claimed.
//!
//! Env: `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), the usual
//! `DATABASE_*` / `MAX_POOL_SIZE` knobs (pool size default here: 20), `DEMO_CONCURRENCY`
//! (1000) and `DEMO_SECONDS` (10).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use poolkit::core::LatencyHistogram;
use poolkit::core::env::{parse_u32, process_lookup};
use poolkit::postgres::{Config, Pool, tokio_postgres};
use tokio::sync::Semaphore;

fn setting(var: &str, default: u32) -> Result<u32, Box<dyn std::error::Error>> {
    Ok(match process_lookup(var) {
        Some(v) => parse_u32(var, &v, 1, 100_000)?,
        None => default,
    })
}

fn thousands(n: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let digits = (n.round().max(0.0) as u64).to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let concurrency = setting("DEMO_CONCURRENCY", 1000)?;
    let seconds = setting("DEMO_SECONDS", 10)?;
    // Plain TCP on loopback, as the connection-per-operation comparison below uses.
    let default_url = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".to_owned();
    let lookup = |var: &str| match var {
        "DATABASE_URL" => process_lookup(var).or_else(|| Some(default_url.clone())),
        "DATABASE_POOL_SIZE" => process_lookup(var)
            .or_else(|| process_lookup("MAX_POOL_SIZE"))
            .or_else(|| Some("20".into())),
        "DATABASE_POOL_MIN_IDLE" => process_lookup(var)
            .or_else(|| process_lookup("POOL_WARMUP_SIZE"))
            .or_else(|| Some("20".into())),
        "DATABASE_POOL_TIMEOUT" => process_lookup(var).or_else(|| Some("30s".into())),
        "DATABASE_APPLICATION_NAME" => process_lookup(var).or_else(|| Some("poolkit_demo".into())),
        _ => process_lookup(var),
    };
    let config = Config::from_lookup("DATABASE", &lookup)?;
    let url = config.url.clone();
    println!(
        "poolkit demo: {concurrency} tasks for {seconds} s against {}",
        config.target()
    );
    let pool = Pool::new(config).await?;
    let size = pool.stats().max_size;
    println!(
        "pool ready: {} connections warm, ceiling {size}\n",
        pool.stats().open
    );

    // 1. Pooled.
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (pool, stop, ops, errors) = (
            pool.clone(),
            Arc::clone(&stop),
            Arc::clone(&ops),
            Arc::clone(&errors),
        );
        tasks.push(tokio::spawn(async move {
            let mut mine = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match pool.get().await {
                    Ok(conn) => match conn.simple_query("SELECT 1").await {
                        Ok(_) => {
                            ops.fetch_add(1, Ordering::Relaxed);
                            mine += 1;
                        }
                        Err(_) => _ = errors.fetch_add(1, Ordering::Relaxed),
                    },
                    Err(_) => _ = errors.fetch_add(1, Ordering::Relaxed),
                }
            }
            mine
        }));
    }
    let mut last = 0;
    for second in 1..=seconds {
        tokio::time::sleep_until((start + Duration::from_secs(u64::from(second))).into()).await;
        let now = ops.load(Ordering::Relaxed);
        let s = pool.stats();
        println!(
            "[{second:>3}s] {:>9} ops | {:>7} ops/s | in use {:>3}/{size} | idle {:>3} | waiting {:>5} | p95 wait {:>7.1} ms",
            thousands(now as f64),
            thousands((now - last) as f64),
            s.used,
            s.idle,
            s.pending,
            s.wait.p95 * 1e3
        );
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let mut per_task = Vec::new();
    for t in tasks {
        per_task.push(t.await?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    per_task.sort_unstable();
    let s = pool.stats();
    let pooled = ops.load(Ordering::Relaxed) as f64 / elapsed;
    let summary = format!(
        "Pool Size: {size} | Concurrency: {concurrency} | Throughput: {} ops/s | P95 wait: {:.1} ms | P99 wait: {:.1} ms | Timeouts: {}",
        thousands(pooled),
        s.wait.p95 * 1e3,
        s.wait.p99 * 1e3,
        s.timeouts
    );
    println!(
        "\nper task: min {} / median {} / max {} ops; connections opened {}; errors {}",
        per_task[0],
        per_task[per_task.len() / 2],
        per_task[per_task.len() - 1],
        s.created,
        errors.load(Ordering::Relaxed)
    );
    println!("{summary}");

    // 2. The same statement on the pool itself: pipelined over a few shared connections
    //    (P_SHARED_CONNECTIONS, `auto` by default), counted against the same ceiling.
    let shared = run_shared(&pool, concurrency, seconds.min(5)).await;
    println!(
        "Shared (pipelined) | Concurrency: {concurrency} | Throughput: {} ops/s on {} shared connections | {:.1}x the checked-out throughput above",
        thousands(shared),
        pool.shared_connections().map_or(0, |s| s.live),
        shared / pooled.max(1e-9)
    );

    // 3. The same work with a new connection per operation, at most `size` at once (the
    //    same server budget).
    let budget_seconds = seconds.min(5);
    println!(
        "\nsame work without a pool: connect, SELECT 1, disconnect; at most {size} connections at once, {budget_seconds} s"
    );
    let gate = Arc::new(Semaphore::new(size as usize));
    let waits = Arc::new(LatencyHistogram::default());
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (gate, waits, ops, stop, url) = (
            Arc::clone(&gate),
            Arc::clone(&waits),
            Arc::clone(&ops),
            Arc::clone(&stop),
            url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let Ok(_permit) = gate.acquire().await else {
                    break;
                };
                let Ok((client, conn)) =
                    tokio_postgres::connect(url.expose(), tokio_postgres::NoTls).await
                else {
                    continue;
                };
                waits.record(asked.elapsed());
                let driver = tokio::spawn(conn);
                if client.simple_query("SELECT 1").await.is_ok() {
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                drop(client);
                let _ = driver.await;
            }
        }));
    }
    for second in 1..=budget_seconds {
        tokio::time::sleep_until((start + Duration::from_secs(u64::from(second))).into()).await;
        println!(
            "[{second:>3}s] {:>9} ops",
            thousands(ops.load(Ordering::Relaxed) as f64)
        );
    }
    stop.store(true, Ordering::Relaxed);
    gate.close();
    for t in tasks {
        t.await?;
    }
    let unpooled = ops.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!(
        "No pool (connect per op) | Concurrency: {concurrency} | Throughput: {} ops/s | P95 wait: {:.1} ms | P99 wait: {:.1} ms",
        thousands(unpooled),
        waits.quantile(0.95) * 1e3,
        waits.quantile(0.99) * 1e3
    );
    println!(
        "Pooling gain: {:.1}x the throughput of a connection per operation\n",
        pooled / unpooled.max(1e-9)
    );
    println!("{summary}");
    Ok(())
}

/// `concurrency` tasks running `pool.simple_query("SELECT 1")` (statements on the pool,
/// pipelined on its shared connections) for `seconds`; prints each second; returns ops/s.
async fn run_shared(pool: &Pool, concurrency: u32, seconds: u32) -> f64 {
    println!(
        "\nthe same statement on the pool itself (pool.simple_query): pipelined over shared connections, {seconds} s"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (pool, stop, ops) = (pool.clone(), Arc::clone(&stop), Arc::clone(&ops));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if pool.simple_query("SELECT 1").await.is_ok() {
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut last = 0;
    for second in 1..=seconds {
        tokio::time::sleep_until((start + Duration::from_secs(u64::from(second))).into()).await;
        let now = ops.load(Ordering::Relaxed);
        let shared = pool.shared_connections();
        println!(
            "[{second:>3}s] {:>9} ops | {:>7} ops/s | shared connections {} | in flight {:>5} | spilled to checkouts {}",
            thousands(now as f64),
            thousands((now - last) as f64),
            shared.map_or(0, |s| s.live),
            shared.map_or(0, |s| s.in_flight),
            shared.map_or(0, |s| s.spilled)
        );
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    ops.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
