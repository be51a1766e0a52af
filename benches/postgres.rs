//! poolkit vs bare bb8-postgres vs deadpool-postgres, in one run.
//!
//! `cargo bench --bench postgres --features postgres` (env: `DATABASE_URL`, `BENCH_SECONDS`
//! per round, default 5). For each of 50 and 1000 tasks on a pool of 20 with a 5 s
//! acquire timeout, every task loops `get` + `simple_query("SELECT 1")`; the table shows
//! throughput, acquire-wait percentiles, timeouts and per-task fairness (min / median ops).
//! Then the no-I/O checkout cost: ns per `get` + drop with an in-memory connection.
//! `BENCH_POOL=poolkit` (or `bb8`, `deadpool`) runs only the rows whose name starts so;
//! `BENCH_ONLY=checkout` runs only the checkout cost.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use poolkit::core::engine::Engine;
use poolkit::core::env::process_lookup;
use poolkit::core::{Backend, PoolConfig};
use poolkit::postgres::{Pool, tokio_postgres};
use tokio_postgres::NoTls;

const POOL: u32 = 20;
const TIMEOUT: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One checkout + `SELECT 1`; returns the acquire wait, or `None` for an acquire timeout.
trait Target: Send + Sync + 'static {
    fn op(&self) -> BoxFut<'_, Option<Duration>>;
}

struct Poolkit(Pool);
impl Target for Poolkit {
    fn op(&self) -> BoxFut<'_, Option<Duration>> {
        Box::pin(async move {
            let t = Instant::now();
            let conn = self.0.get().await.ok()?;
            let wait = t.elapsed();
            conn.simple_query("SELECT 1").await.expect("query");
            Some(wait)
        })
    }
}

struct Bb8(bb8::Pool<bb8_postgres::PostgresConnectionManager<NoTls>>);
impl Target for Bb8 {
    fn op(&self) -> BoxFut<'_, Option<Duration>> {
        Box::pin(async move {
            let t = Instant::now();
            let conn = self.0.get().await.ok()?;
            let wait = t.elapsed();
            conn.simple_query("SELECT 1").await.expect("query");
            Some(wait)
        })
    }
}

struct Deadpool(deadpool_postgres::Pool);
impl Target for Deadpool {
    fn op(&self) -> BoxFut<'_, Option<Duration>> {
        Box::pin(async move {
            let t = Instant::now();
            let conn = self.0.get().await.ok()?;
            let wait = t.elapsed();
            conn.simple_query("SELECT 1").await.expect("query");
            Some(wait)
        })
    }
}

struct Outcome {
    ops_per_sec: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    timeouts: u64,
    min: u64,
    median: u64,
    idle_tasks: usize,
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

async fn run(target: Arc<dyn Target>, tasks: usize, secs: u64) -> Outcome {
    // Warm up every connection first.
    let warm: Vec<_> = (0..POOL)
        .map(|_| {
            let t = Arc::clone(&target);
            tokio::spawn(async move { t.op().await })
        })
        .collect();
    for w in warm {
        w.await.expect("warm-up task");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (target, stop) = (Arc::clone(&target), Arc::clone(&stop));
            tokio::spawn(async move {
                let (mut ops, mut timeouts, mut waits) = (0u64, 0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match target.op().await {
                        Some(w) => {
                            ops += 1;
                            waits.push(w);
                        }
                        None => timeouts += 1,
                    }
                }
                (ops, timeouts, waits)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut per_task, mut timeouts, mut waits) = (Vec::new(), 0, Vec::new());
    for h in handles {
        let (o, t, w) = h.await.expect("bench task");
        per_task.push(o);
        timeouts += t;
        waits.extend(w);
    }
    let elapsed = start.elapsed().as_secs_f64();
    waits.sort_unstable();
    per_task.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    Outcome {
        ops_per_sec: per_task.iter().sum::<u64>() as f64 / elapsed,
        p50: pct(&waits, 0.50),
        p95: pct(&waits, 0.95),
        p99: pct(&waits, 0.99),
        timeouts,
        min: per_task[0],
        median: per_task[per_task.len() / 2],
        idle_tasks: per_task.iter().filter(|n| **n == 0).count(),
    }
}

async fn targets(url: &str, name: &str) -> Vec<(&'static str, Arc<dyn Target>)> {
    let poolkit = Pool::builder()
        .url(url)
        .ssl_mode(poolkit::postgres::SslMode::Disable) // like the others: NoTls
        .name(name)
        .pool_size(POOL)
        .min_idle(POOL)
        .acquire_timeout(TIMEOUT)
        .build()
        .await
        .expect("poolkit pool");
    let pg: tokio_postgres::Config = url.parse().expect("DATABASE_URL");
    let bb8_default = bb8::Pool::builder()
        .max_size(POOL)
        .min_idle(POOL)
        .connection_timeout(TIMEOUT)
        .build(bb8_postgres::PostgresConnectionManager::new(
            pg.clone(),
            NoTls,
        ))
        .await
        .expect("bb8");
    let bb8_fast = bb8::Pool::builder()
        .max_size(POOL)
        .min_idle(POOL)
        .connection_timeout(TIMEOUT)
        .test_on_check_out(false)
        .build(bb8_postgres::PostgresConnectionManager::new(
            pg.clone(),
            NoTls,
        ))
        .await
        .expect("bb8");
    let mgr = deadpool_postgres::Manager::from_config(
        pg,
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let deadpool = deadpool_postgres::Pool::builder(mgr)
        .max_size(POOL as usize)
        .wait_timeout(Some(TIMEOUT))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .expect("deadpool");
    vec![
        ("poolkit", Arc::new(Poolkit(poolkit))),
        ("bb8 (test_on_check_out=false)", Arc::new(Bb8(bb8_fast))),
        (
            "bb8 (defaults: test on checkout)",
            Arc::new(Bb8(bb8_default)),
        ),
        (
            "deadpool (RecyclingMethod::Fast)",
            Arc::new(Deadpool(deadpool)),
        ),
    ]
}

/// An in-memory connection: no I/O, so only the pool's own cost is measured.
struct Mem;
impl bb8::ManageConnection for Mem {
    type Connection = u64;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<u64, std::io::Error> {
        Ok(0)
    }
    async fn is_valid(&self, _: &mut u64) -> Result<(), std::io::Error> {
        Ok(())
    }
    fn has_broken(&self, _: &mut u64) -> bool {
        false
    }
}

/// The same in-memory connection for deadpool.
struct DeadMem;
impl deadpool::managed::Manager for DeadMem {
    type Type = u64;
    type Error = std::io::Error;
    async fn create(&self) -> Result<u64, std::io::Error> {
        Ok(0)
    }
    async fn recycle(
        &self,
        _: &mut u64,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<std::io::Error> {
        Ok(())
    }
}

/// Nanoseconds per get + drop with `tasks` tasks each doing `n / tasks` checkouts.
async fn per_checkout<F, Fut>(tasks: u32, n: u32, get: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let each = n / tasks;
    let t = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let get = get.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    get().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("bench task");
    }
    t.elapsed().as_nanos() as f64 / f64::from(each * tasks)
}

async fn checkout_cost() {
    let n: u32 = process_lookup("BENCH_CHECKOUT_N")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let mut config = PoolConfig::new("bench_mem", Backend::Postgres);
    config.pool_size = POOL;
    config.min_idle = POOL;
    let engine = Engine::build(Mem, config).await.expect("engine");
    let bare = bb8::Pool::builder()
        .max_size(POOL)
        .min_idle(POOL)
        .test_on_check_out(false)
        .build(Mem)
        .await
        .expect("bb8");
    let dead: deadpool::managed::Pool<DeadMem> = deadpool::managed::Pool::builder(DeadMem)
        .max_size(POOL as usize)
        .build()
        .expect("deadpool");
    println!(
        "\nno-I/O checkout cost (get + drop, in-memory connection, pool {POOL}, best of 5 x {n}):"
    );
    println!(
        "| tasks | poolkit engine | bare bb8 (no test on checkout) | deadpool | poolkit / bb8 | poolkit / deadpool |"
    );
    println!("|---|---|---|---|---|---|");
    for tasks in [1u32, 16] {
        let (mut best_engine, mut best_bare, mut best_dead) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..5 {
            let e = engine.clone();
            best_engine = best_engine.min(
                per_checkout(tasks, n, move || {
                    let e = e.clone();
                    async move { drop(std::hint::black_box(e.get().await.expect("get"))) }
                })
                .await,
            );
            let b = bare.clone();
            best_bare = best_bare.min(
                per_checkout(tasks, n, move || {
                    let b = b.clone();
                    async move { drop(std::hint::black_box(b.get().await.expect("get"))) }
                })
                .await,
            );
            let d = dead.clone();
            best_dead = best_dead.min(
                per_checkout(tasks, n, move || {
                    let d = d.clone();
                    async move { drop(std::hint::black_box(d.get().await.expect("get"))) }
                })
                .await,
            );
        }
        println!(
            "| {tasks} | {best_engine:.0} ns | {best_bare:.0} ns | {best_dead:.0} ns | {:.2} | {:.2} |",
            best_engine / best_bare,
            best_engine / best_dead
        );
    }
}

#[tokio::main]
async fn main() {
    let url = process_lookup("DATABASE_URL")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let secs: u64 = process_lookup("BENCH_SECONDS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    if process_lookup("BENCH_ONLY").as_deref() == Some("checkout") {
        checkout_cost().await;
        return;
    }
    println!(
        "PostgreSQL: pool {POOL}, acquire timeout {TIMEOUT:?}, {ROUNDS} interleaved rounds of {secs} s per pool, SELECT 1 via simple_query, {} cores\n",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    println!(
        "| pool | tasks | ops/s | wait p50 ms | p95 ms | p99 ms | timeouts | per-task min/median | tasks with 0 ops |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for tasks in [50usize, 1000] {
        let only = process_lookup("BENCH_POOL");
        let pools: Vec<_> = targets(&url, &format!("bench_{tasks}"))
            .await
            .into_iter()
            .filter(|(name, _)| only.as_deref().is_none_or(|o| name.starts_with(o)))
            .collect();
        // Rounds interleave the pools, so a noisy moment on the machine hurts all alike;
        // each row reports the median round.
        let mut results: Vec<Vec<Outcome>> = pools.iter().map(|_| Vec::new()).collect();
        for _ in 0..ROUNDS {
            for (i, (_, target)) in pools.iter().enumerate() {
                results[i].push(run(Arc::clone(target), tasks, secs).await);
            }
        }
        for ((name, _), mut rounds) in pools.into_iter().zip(results) {
            rounds.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
            let o = &rounds[rounds.len() / 2];
            let timeouts: u64 = rounds.iter().map(|r| r.timeouts).sum();
            #[allow(clippy::cast_precision_loss)]
            let fair = if o.median == 0 {
                0.0
            } else {
                o.min as f64 / o.median as f64
            };
            let all: Vec<String> = rounds
                .iter()
                .map(|r| format!("{:.0}", r.ops_per_sec))
                .collect();
            println!(
                "| {name} | {tasks} | {:.0} ({}) | {:.2} | {:.2} | {:.2} | {timeouts} | {}/{} ({fair:.2}) | {} |",
                o.ops_per_sec,
                all.join(", "),
                o.p50,
                o.p95,
                o.p99,
                o.min,
                o.median,
                o.idle_tasks
            );
        }
    }
    checkout_cost().await;
}
