//! `P_POOL_SIZE=auto` against the real server: it grows while callers queue and more
//! connections help, stops where they stop helping, and is back at its floor when idle.
//! Ceilings stay at 30 or below: the shared server's `max_connections` is 100.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use poolkit_postgres::Pool;

const FLOOR: u32 = 2;

/// The two tests measure throughput: they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn auto_pool(test: &str, ceiling: u32) -> Pool {
    // The controller's decisions (`pool open limit changed`, with the hold times and the
    // reason) go to the test's captured output: a failure shows why the size moved.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("poolkit_core=info")
        .with_test_writer()
        .try_init();
    builder(test)
        .pool_size_auto(ceiling)
        .min_idle(FLOOR)
        .auto_interval(Duration::from_millis(200))
        .idle_timeout(Some(Duration::from_secs(1)))
        .acquire_timeout(Duration::from_secs(20))
        .build()
        .await
        .expect("build")
}

/// `tasks` callers running `sql` in a loop for `secs`; returns (checkouts, errors) and the
/// targets seen every 100 ms.
async fn load(pool: &Pool, tasks: usize, sql: &'static str, run: Duration) -> (u64, u64, Vec<u32>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (pool, stop, done, errors) =
                (pool.clone(), stop.clone(), done.clone(), errors.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ok = match pool.get().await {
                        Ok(conn) => conn.simple_query(sql).await.is_ok(),
                        Err(_) => false,
                    };
                    let counter = if ok { &done } else { &errors };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut targets = Vec::new();
    let end = Instant::now() + run;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        targets.push(pool.stats().open_limit);
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.expect("load task");
    }
    (
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        targets,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_load_grows_stops_where_throughput_flattens_and_returns_to_the_floor() {
    const CEILING: u32 = 30;
    let _serial = SERIAL.lock().await;
    let pool = auto_pool("auto_steps", CEILING).await;
    let s = pool.stats();
    assert!(s.auto_sized);
    assert_eq!(
        (s.open_limit, s.max_size, s.open),
        (FLOOR, CEILING, u64::from(FLOOR))
    );
    let mut all = Vec::new();
    for tasks in [100, 1000, 10_000] {
        let (done, errors, targets) = load(&pool, tasks, "SELECT 1", Duration::from_secs(3)).await;
        eprintln!("{tasks} tasks: {done} checkouts, targets {targets:?}");
        assert_eq!(errors, 0, "{tasks} tasks");
        assert!(done > 1000, "{tasks} tasks: only {done} checkouts");
        all.extend(targets);
    }
    let peak = all.iter().copied().max().unwrap_or(0);
    assert!(peak > FLOOR, "it grew under load: {all:?}");
    // SELECT 1 on a 2-core server flattens long before 30 connections.
    assert!(
        peak < CEILING,
        "it stopped growing before the ceiling: {all:?}"
    );
    let health = pool.health();
    assert!(
        health.message.contains("auto-sized: open limit"),
        "{}",
        health.message
    );
    // Idle: back at the floor within 2 x the idle timeout (1 s).
    let idle_from = Instant::now();
    loop {
        let s = pool.stats();
        if s.open_limit == FLOOR && s.open <= u64::from(FLOOR) {
            break;
        }
        assert!(
            idle_from.elapsed() < Duration::from_secs(2),
            "not back at the floor after 2 s idle: target {} open {}",
            s.open_limit,
            s.open
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = admin().await;
    assert!(backends(&admin, "auto_steps").await <= i64::from(FLOOR));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_queries_grow_it_towards_the_ceiling() {
    const CEILING: u32 = 20;
    let _serial = SERIAL.lock().await;
    let pool = auto_pool("auto_sleep", CEILING).await;
    let (done, errors, targets) =
        load(&pool, 100, "SELECT pg_sleep(0.01)", Duration::from_secs(6)).await;
    eprintln!("pg_sleep: {done} checkouts, targets {targets:?}");
    assert_eq!(errors, 0);
    let peak = targets.iter().copied().max().unwrap_or(0);
    assert!(
        peak >= CEILING * 3 / 4,
        "with 10 ms queries more connections help; it should near {CEILING}: {targets:?}"
    );
    assert!(peak <= CEILING, "never above the ceiling: {targets:?}");
    // A lowered ceiling cuts the target at once.
    pool.resize(1, Some(5)).expect("resize");
    let s = pool.stats();
    assert_eq!((s.max_size, s.open_limit), (5, 5));
    assert!(
        s.open <= 5,
        "idle connections above the new ceiling closed: {}",
        s.open
    );
}
