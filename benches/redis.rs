//! poolkit-redis shared mode vs redis-rs ConnectionManager vs bb8-redis, in one run.
//!
//! `cargo bench --bench redis --features redis` (env: `REDIS_URL`, `BENCH_SECONDS` per round,
//! default 3). `GET` of one key from 50 and 1000 concurrent tasks; three interleaved rounds
//! per client, the median shown. bb8-redis has 20 connections and a 5 s acquire timeout;
//! poolkit reads its configuration as a service does (`Config::from_env("REDIS")`: its
//! defaults unless `REDIS_POOL_SIZE`, the shared sockets, or `REDIS_MAX_IN_FLIGHT` are set).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use poolkit::core::env::process_lookup;
use poolkit::redis::{Config, Pool, redis};

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
const KEY: &str = "poolkit:bench:key";

/// One `GET`; `Err(true)` for an acquire timeout, `Err(false)` for another error.
trait Target: Send + Sync + 'static {
    fn op(&self) -> BoxFut<'_, Result<(), bool>>;
}

struct Poolkit(Pool);
impl Target for Poolkit {
    fn op(&self) -> BoxFut<'_, Result<(), bool>> {
        Box::pin(async move {
            self.0
                .query::<String>(redis::cmd("GET").arg(KEY))
                .await
                .map(drop)
                .map_err(|e| e.is_timeout())
        })
    }
}

/// The same pool through redis-rs's own calls (`ConnectionLike`), as ported code uses it.
struct PoolkitCommands(Pool);
impl Target for PoolkitCommands {
    fn op(&self) -> BoxFut<'_, Result<(), bool>> {
        Box::pin(async move {
            let mut c = self.0.clone();
            redis::cmd("GET")
                .arg(KEY)
                .query_async::<String>(&mut c)
                .await
                .map(drop)
                .map_err(|_| false)
        })
    }
}

struct Manager(redis::aio::ConnectionManager);
impl Target for Manager {
    fn op(&self) -> BoxFut<'_, Result<(), bool>> {
        Box::pin(async move {
            let mut c = self.0.clone();
            redis::cmd("GET")
                .arg(KEY)
                .query_async::<String>(&mut c)
                .await
                .map(drop)
                .map_err(|_| false)
        })
    }
}

struct Bb8(bb8::Pool<bb8_redis::RedisConnectionManager>);
impl Target for Bb8 {
    fn op(&self) -> BoxFut<'_, Result<(), bool>> {
        Box::pin(async move {
            let mut c = self
                .0
                .get()
                .await
                .map_err(|e| matches!(e, bb8::RunError::TimedOut))?;
            redis::cmd("GET")
                .arg(KEY)
                .query_async::<String>(&mut *c)
                .await
                .map(drop)
                .map_err(|_| false)
        })
    }
}

struct Outcome {
    ops_per_sec: f64,
    p95: f64,
    p99: f64,
    timeouts: u64,
    errors: u64,
    min: u64,
    median: u64,
    total: u64,
}

async fn run(target: Arc<dyn Target>, tasks: usize, secs: u64) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (target, stop) = (Arc::clone(&target), Arc::clone(&stop));
            tokio::spawn(async move {
                let (mut ops, mut timeouts, mut errors, mut lat) = (0u64, 0u64, 0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match target.op().await {
                        Ok(()) => {
                            ops += 1;
                            lat.push(t.elapsed());
                        }
                        Err(true) => timeouts += 1,
                        Err(false) => errors += 1,
                    }
                }
                (ops, timeouts, errors, lat)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut per_task, mut timeouts, mut errors, mut lat) = (Vec::new(), 0, 0, Vec::new());
    for h in handles {
        let (o, t, e, l) = h.await.expect("bench task");
        per_task.push(o);
        timeouts += t;
        errors += e;
        lat.extend(l);
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    per_task.sort_unstable();
    let pct = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len().max(1)) - 1;
        lat.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    #[allow(clippy::cast_precision_loss)]
    Outcome {
        ops_per_sec: per_task.iter().sum::<u64>() as f64 / elapsed,
        p95: pct(0.95),
        p99: pct(0.99),
        timeouts,
        errors,
        min: per_task[0],
        median: per_task[per_task.len() / 2],
        total: per_task.iter().sum(),
    }
}

#[tokio::main]
async fn main() {
    let url = process_lookup("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let secs: u64 = process_lookup("BENCH_SECONDS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut config = Config::from_env("REDIS").expect("REDIS_* configuration");
    config.pool.name = "bench_redis".into();
    let sockets = config.pool.pool_size;
    let in_flight = config.max_in_flight;
    let poolkit = Pool::new(config).await.expect("poolkit pool");
    poolkit
        .query::<()>(redis::cmd("SET").arg(KEY).arg("value"))
        .await
        .expect("SET");
    let client = redis::Client::open(url.as_str()).expect("REDIS_URL");
    let manager = redis::aio::ConnectionManager::new(client)
        .await
        .expect("ConnectionManager");
    let bb8 = bb8::Pool::builder()
        .max_size(20)
        .connection_timeout(Duration::from_secs(5))
        .build(bb8_redis::RedisConnectionManager::new(url.as_str()).expect("bb8-redis"))
        .await
        .expect("bb8");
    let only = process_lookup("BENCH_ONLY").filter(|s| !s.is_empty());
    let task_counts: Vec<usize> = process_lookup("BENCH_TASKS").map_or(vec![50, 1000], |s| {
        s.split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("BENCH_TASKS: task counts, comma-separated")
            })
            .collect()
    });
    let rounds: usize = process_lookup("BENCH_ROUNDS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let targets: Vec<(&str, String, Arc<dyn Target>)> = vec![
        (
            "poolkit",
            format!("poolkit shared ({sockets} connections, at most {in_flight} in flight)"),
            Arc::new(Poolkit(poolkit.clone())),
        ),
        (
            "commands",
            "poolkit shared, redis-rs calls (ConnectionLike)".into(),
            Arc::new(PoolkitCommands(poolkit)),
        ),
        (
            "manager",
            "redis-rs ConnectionManager (1 connection)".into(),
            Arc::new(Manager(manager)),
        ),
        (
            "bb8",
            "bb8-redis (20 connections)".into(),
            Arc::new(Bb8(bb8)),
        ),
    ];
    let targets: Vec<(String, Arc<dyn Target>)> = targets
        .into_iter()
        .filter(|(key, _, _)| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|o| o.trim() == *key))
        })
        .map(|(_, name, t)| (name, t))
        .collect();
    assert!(
        !targets.is_empty(),
        "BENCH_ONLY={only:?}: expected poolkit, commands, manager or bb8"
    );
    let mut totals = vec![0u64; targets.len()];
    println!(
        "Redis GET, {secs} s rounds, {rounds} interleaved rounds per client, median round, {} cores\n",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    println!(
        "| client | tasks | ops/s, median (all rounds) | p95 ms | p99 ms | timeouts | errors | per-task min/median |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for tasks in task_counts {
        let mut results: Vec<Vec<Outcome>> = targets.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (i, (_, t)) in targets.iter().enumerate() {
                let o = run(Arc::clone(t), tasks, secs).await;
                totals[i] += o.total;
                results[i].push(o);
            }
        }
        for ((name, _), mut rounds) in targets.iter().zip(results) {
            rounds.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
            let all: Vec<String> = rounds
                .iter()
                .map(|r| format!("{:.0}", r.ops_per_sec))
                .collect();
            let (timeouts, errors): (u64, u64) = (
                rounds.iter().map(|r| r.timeouts).sum(),
                rounds.iter().map(|r| r.errors).sum(),
            );
            let o = &rounds[rounds.len() / 2];
            #[allow(clippy::cast_precision_loss)]
            let fair = if o.median == 0 {
                0.0
            } else {
                o.min as f64 / o.median as f64
            };
            println!(
                "| {name} | {tasks} | {:.0} ({}) | {:.2} | {:.2} | {timeouts} | {errors} | {}/{} ({fair:.2}) |",
                o.ops_per_sec,
                all.join(", "),
                o.p95,
                o.p99,
                o.min,
                o.median
            );
        }
    }
    for ((name, _), total) in targets.iter().zip(totals) {
        println!("\n{name}: {total} GETs in all");
    }
}
