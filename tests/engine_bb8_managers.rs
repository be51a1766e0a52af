//! bb8's own managers plug into the poolkit engine as they are: bb8-postgres's
//! `PostgresConnectionManager` and bb8-redis's `RedisConnectionManager`, against the real
//! servers, at 200 concurrent tasks on pools of 8, served fairly and counted once.
#![cfg(all(feature = "postgres", feature = "redis"))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bb8_postgres::PostgresConnectionManager;
use bb8_redis::RedisConnectionManager;
use common::{database_url, pg_unreachable, redis_url};
use poolkit::core::engine::{Engine, Manager};
use poolkit::core::{Backend, PoolConfig};
use tokio_postgres::NoTls;

fn config(name: &str, backend: Backend) -> PoolConfig {
    let mut c = PoolConfig::new(name, backend);
    c.pool_size = 8;
    c.min_idle = 2;
    c.acquire_timeout = Duration::from_secs(5);
    c.validate().expect("valid config");
    c
}

/// 200 tasks each run `op` on a checkout for `run`; returns per-task counts.
async fn hammer<M, F, Fut>(engine: &Engine<M>, run: Duration, op: F) -> Vec<u64>
where
    M: Manager,
    F: Fn(poolkit::core::engine::Checkout<M>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let end = Instant::now() + run;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (engine, op) = (engine.clone(), op.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < end {
                    let conn = engine.get().await.expect("no timeout at 200 tasks on 8");
                    op(conn).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.expect("task"));
    }
    counts.sort_unstable();
    counts
}

/// The two tests take turns: each loads both cores, and run together their runtimes'
/// worker threads preempt each other, which skews per-task counts more than the pool does.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn assert_fair(counts: &[u64]) {
    let (min, median) = (counts[0], counts[counts.len() / 2]);
    // FIFO: nobody starves. bb8's own pool, at these numbers, leaves tasks with 0 ops
    // (docs/benchmarks.md). The bound leaves room for the OS preempting tokio's workers on
    // 2 shared cores, which stalls the tasks queued on a descheduled worker.
    assert!(min > 0, "a task did nothing");
    assert!(min * 4 >= median, "unfair: min {min}, median {median}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_postgres_manager_as_it_is() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let manager = PostgresConnectionManager::new_from_stringlike(database_url(), NoTls)
        .unwrap_or_else(|e| panic!("{}", pg_unreachable(&e)));
    let engine = Engine::build(manager, config("bb8_pg", Backend::Postgres))
        .await
        .unwrap_or_else(|e| panic!("{}", pg_unreachable(&format!("{e:?}"))));
    let rows = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&rows);
    let counts = hammer(&engine, Duration::from_secs(2), move |conn| {
        let rows = Arc::clone(&counted);
        async move {
            let row = conn.query_one("SELECT 1::int4", &[]).await.expect("query");
            assert_eq!(row.get::<_, i32>(0), 1);
            rows.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await;
    assert_fair(&counts);
    let s = engine.telemetry().stats();
    assert_eq!(s.acquires, counts.iter().sum::<u64>(), "{s:?}");
    assert_eq!(rows.load(Ordering::Relaxed), s.acquires);
    assert!(
        s.open <= 8 && s.created <= 8,
        "never above the ceiling: {s:?}"
    );
    assert_eq!((s.used, s.pending, s.timeouts), (0, 0, 0), "{s:?}");
    assert!(engine.drain(Duration::from_secs(2)).await, "drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_redis_manager_as_it_is() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let manager = RedisConnectionManager::new(redis_url()).expect("REDIS_URL parses");
    let engine = Engine::build(manager, config("bb8_redis", Backend::Redis))
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach Redis at REDIS_URL ({e:?}); start it with scripts/services.sh")
        });
    let counts = hammer(&engine, Duration::from_secs(2), |mut conn| async move {
        let v: String = redis::cmd("SET")
            .arg("poolkit:bb8_redis")
            .arg("x")
            .query_async(&mut *conn)
            .await
            .expect("SET");
        assert_eq!(v, "OK");
    })
    .await;
    assert_fair(&counts);
    let s = engine.telemetry().stats();
    assert_eq!(s.acquires, counts.iter().sum::<u64>(), "{s:?}");
    assert!(s.open <= 8, "{s:?}");
    assert_eq!((s.used, s.pending, s.timeouts), (0, 0, 0), "{s:?}");
    // Resizing works for any manager too.
    engine.resize(2, None).expect("shrink");
    let a = engine.get().await.expect("a");
    let b = engine.get().await.expect("b");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), engine.get())
            .await
            .is_err(),
        "the cut ceiling holds"
    );
    drop((a, b));
    assert!(engine.telemetry().open() <= 2);
}
