//! PostgreSQL statements pipelined on shared connections vs checked out, in one run:
//! poolkit shared (statements on the `Pool`), poolkit exclusive (`get()` + statement),
//! deadpool-postgres, bare bb8-postgres, and raw pipelined tokio-postgres clients (N
//! plain clients shared by all tasks, task i on client i mod N: the limit for a
//! tokio-postgres client).
//!
//! `cargo bench --bench pg_shared --features postgres`
//! env: `DATABASE_URL`, `PGBOUNCER_URL`, `BENCH_SECONDS` (per row, default 3),
//! `BENCH_WORKLOADS` (comma list of `select1`, `pgbench`, `sleep`, `mixed`, `bouncer`;
//! default all), `BENCH_TASKS` (comma list, default `50,1000,10000` for select1/pgbench),
//! `BENCH_SPILL_MS` (the shared rows' `P_SHARED_SPILL`, default 5; for profiles),
//! `BENCH_SIZES` (set: print the sizes of the statement futures, poolkit's and the raw
//! client's, and exit),
//! `BENCH_TARGETS` (comma list of rows: `exclusive`, `deadpool`, `bb8`, `shared2`,
//! `shared4`, `sharedauto`, `pipe2`, `pipe4`; default every row of the workload).
//!
//! Every exclusive pool has 20 connections; poolkit shared runs with `P_SHARED_CONNECTIONS`
//! fixed at 2 and 4 and `auto` (at most a quarter of its 20: 5), and its row says how
//! many shared connections it held. Latencies are per statement (including any wait for a
//! connection); "fast p99" in the mixed workload is over the `SELECT 1`s only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use poolkit::core::env::process_lookup;
use poolkit::postgres::tokio_postgres::types::Type;
use poolkit::postgres::{Pool, Pooler, SharedConnections, SslMode, tokio_postgres};
use tokio_postgres::NoTls;

const POOL: u32 = 20;
const TIMEOUT: Duration = Duration::from_secs(5);
const ACCOUNTS: i32 = 100_000;

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Work {
    Select1,
    Pgbench,
    Sleep,
    Mixed,
}

/// One statement of `work` for task `task`, op number `n`; returns whether it was a
/// "fast" statement, or an error text.
trait Target: Send + Sync + 'static {
    fn op(&self, work: Work, task: usize, n: u64) -> BoxFut<'_, Result<bool, String>>;
    /// Shared connections held (poolkit shared), for the row's label.
    fn shared(&self) -> Option<usize> {
        None
    }
    /// Statements run on the shared connections and spilled to checkouts so far
    /// (poolkit shared), for the per-statement counts on stderr.
    fn counts(&self) -> Option<(u64, u64)> {
        None
    }
}

fn aid(task: usize, n: u64) -> i32 {
    let x = (task as u64)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(n.wrapping_mul(40_503));
    i32::try_from(x % u64::try_from(ACCOUNTS).unwrap()).unwrap() + 1
}

const PGBENCH: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";

fn slow_one(task: usize, n: u64) -> bool {
    (task as u64 * 7 + n).is_multiple_of(100)
}

/// The statement a client runs for `work` (one round trip each).
async fn on_client(
    c: &tokio_postgres::Client,
    work: Work,
    task: usize,
    n: u64,
) -> Result<bool, tokio_postgres::Error> {
    match work {
        Work::Select1 => c.simple_query("SELECT 1").await.map(|_| true),
        Work::Pgbench => {
            let aid = aid(task, n);
            c.query_typed(PGBENCH, &[(&aid, Type::INT4)])
                .await
                .map(|_| true)
        }
        Work::Sleep => c.simple_query("SELECT pg_sleep(0.01)").await.map(|_| true),
        Work::Mixed if slow_one(task, n) => {
            c.simple_query("SELECT pg_sleep(0.2)").await.map(|_| false)
        }
        Work::Mixed => c.simple_query("SELECT 1").await.map(|_| true),
    }
}

struct Shared(Pool);
impl Target for Shared {
    fn op(&self, work: Work, task: usize, n: u64) -> BoxFut<'_, Result<bool, String>> {
        Box::pin(async move {
            let p = &self.0;
            let r = match work {
                Work::Select1 => p.simple_query("SELECT 1").await.map(|_| true),
                Work::Pgbench => {
                    let aid = aid(task, n);
                    p.query_typed(PGBENCH, &[(&aid, Type::INT4)])
                        .await
                        .map(|_| true)
                }
                Work::Sleep => p.simple_query("SELECT pg_sleep(0.01)").await.map(|_| true),
                Work::Mixed if slow_one(task, n) => {
                    p.simple_query("SELECT pg_sleep(0.2)").await.map(|_| false)
                }
                Work::Mixed => p.simple_query("SELECT 1").await.map(|_| true),
            };
            r.map_err(|e| e.to_string())
        })
    }
    fn shared(&self) -> Option<usize> {
        self.0.shared_connections().map(|s| s.size)
    }
    fn counts(&self) -> Option<(u64, u64)> {
        self.0
            .shared_connections()
            .map(|s| (s.statements, s.spilled))
    }
}

struct Exclusive(Pool);
impl Target for Exclusive {
    fn op(&self, work: Work, task: usize, n: u64) -> BoxFut<'_, Result<bool, String>> {
        Box::pin(async move {
            let conn = self.0.get().await.map_err(|e| e.to_string())?;
            on_client(&conn, work, task, n)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

struct Bb8(bb8::Pool<bb8_postgres::PostgresConnectionManager<NoTls>>);
impl Target for Bb8 {
    fn op(&self, work: Work, task: usize, n: u64) -> BoxFut<'_, Result<bool, String>> {
        Box::pin(async move {
            let conn = self.0.get().await.map_err(|e| e.to_string())?;
            on_client(&conn, work, task, n)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

struct Deadpool(deadpool_postgres::Pool);
impl Target for Deadpool {
    fn op(&self, work: Work, task: usize, n: u64) -> BoxFut<'_, Result<bool, String>> {
        Box::pin(async move {
            let conn = self.0.get().await.map_err(|e| e.to_string())?;
            on_client(&conn, work, task, n)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

struct Pipe(Vec<tokio_postgres::Client>);
impl Target for Pipe {
    fn op(&self, work: Work, task: usize, n: u64) -> BoxFut<'_, Result<bool, String>> {
        Box::pin(async move {
            let c = &self.0[task % self.0.len()];
            on_client(c, work, task, n).await.map_err(|e| e.to_string())
        })
    }
}

struct Row {
    name: String,
    conns: String,
    ops: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    fast_p99: f64,
    /// The slow statements (mixed workload): how many finished, p50 and max, in ms.
    slow: (usize, f64, f64),
    errors: u64,
    first_error: Option<String>,
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
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run(
    name: String,
    conns: String,
    t: Arc<dyn Target>,
    work: Work,
    tasks: usize,
    secs: f64,
) -> Row {
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None));
    // Warm up (shapes learned, connections open, auto settles a little).
    for i in 0..tasks.min(50) {
        let _ = t.op(work, i, 0).await;
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let (t, errors, first_error) = (t.clone(), errors.clone(), first_error.clone());
        handles.push(tokio::spawn(async move {
            let mut all = Vec::new();
            let mut fast = Vec::new();
            let mut slow = Vec::new();
            let mut n = 1u64;
            while Instant::now() < end {
                let s = Instant::now();
                match t.op(work, task, n).await {
                    Ok(is_fast) => {
                        let d = s.elapsed();
                        all.push(d);
                        if is_fast {
                            fast.push(d);
                        } else {
                            slow.push(d);
                        }
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                }
                n += 1;
            }
            (all, fast, slow)
        }));
    }
    let mut all = Vec::new();
    let mut fast = Vec::new();
    let mut slow = Vec::new();
    for h in handles {
        let (a, f, s) = h.await.unwrap();
        all.extend(a);
        fast.extend(f);
        slow.extend(s);
    }
    let took = start.elapsed().as_secs_f64();
    all.sort_unstable();
    fast.sort_unstable();
    slow.sort_unstable();
    let conns = match t.shared() {
        Some(n) => format!("{conns} (shared now {n})"),
        None => conns,
    };
    #[allow(clippy::cast_precision_loss)]
    let ops = all.len() as f64 / took;
    let first_error = first_error.lock().unwrap().take();
    // The exact count, for per-statement costs (instructions under callgrind, syscalls
    // under strace): total ÷ this, or the difference of two runs of different lengths.
    let counts = t
        .counts()
        .map(|(on, spilled)| format!(" (since the start: {on} shared, {spilled} spilled)"))
        .unwrap_or_default();
    eprintln!(
        "{name} [{conns}], {tasks} tasks: {} statements in {took:.3} s{counts}",
        all.len()
    );
    Row {
        name,
        conns,
        ops,
        p50: pct(&all, 0.5),
        p95: pct(&all, 0.95),
        p99: pct(&all, 0.99),
        fast_p99: pct(&fast, 0.99),
        slow: (slow.len(), pct(&slow, 0.5), pct(&slow, 1.0)),
        errors: errors.load(Ordering::Relaxed),
        first_error,
    }
}

/// `P_SHARED_SPILL` for the shared rows when `BENCH_SPILL_MS` is set (a profile under
/// valgrind runs some 50 times slower, so a connection looks stalled after 5 ms far more
/// often than on a real run and statements spill to checkouts); else the default.
fn spill() -> Option<Duration> {
    process_lookup("BENCH_SPILL_MS")
        .and_then(|s| s.parse().ok())
        .map(Duration::from_millis)
}

async fn poolkit(url: &str, name: &str, shared: SharedConnections, pooler: Pooler) -> Pool {
    let mut b = Pool::builder();
    if let Some(d) = spill() {
        b = b.shared_spill(d);
    }
    b.url(url)
        .ssl_mode(SslMode::Disable)
        .pooler(pooler)
        .name(name)
        .pool_size(POOL)
        .min_idle(if shared == SharedConnections::Off {
            POOL
        } else {
            0
        })
        .acquire_timeout(TIMEOUT)
        .shared_connections(shared)
        .build()
        .await
        .expect("poolkit pool")
}

async fn pipe(url: &str, n: usize) -> Pipe {
    let mut v = Vec::new();
    for _ in 0..n {
        let (c, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        v.push(c);
    }
    Pipe(v)
}

async fn bb8(url: &str) -> Bb8 {
    let pg: tokio_postgres::Config = url.parse().expect("url");
    Bb8(bb8::Pool::builder()
        .max_size(POOL)
        .min_idle(POOL)
        .connection_timeout(TIMEOUT)
        .test_on_check_out(false)
        .build(bb8_postgres::PostgresConnectionManager::new(pg, NoTls))
        .await
        .expect("bb8"))
}

fn deadpool(url: &str) -> Deadpool {
    let pg: tokio_postgres::Config = url.parse().expect("url");
    let mgr = deadpool_postgres::Manager::from_config(
        pg,
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    Deadpool(
        deadpool_postgres::Pool::builder(mgr)
            .max_size(POOL as usize)
            .wait_timeout(Some(TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .expect("deadpool"),
    )
}

/// Builds one target at a time (and drops it after its row), so the run never holds
/// more than 20 server connections of the shared server's 100.
async fn one(url: &str, which: &str, pooler: Pooler) -> (String, String, Arc<dyn Target>) {
    match which {
        "shared2" => (
            "poolkit shared".into(),
            "2".into(),
            Arc::new(Shared(
                poolkit(url, "bench_shared2", SharedConnections::Fixed(2), pooler).await,
            )),
        ),
        "shared4" => (
            "poolkit shared".into(),
            "4".into(),
            Arc::new(Shared(
                poolkit(url, "bench_shared4", SharedConnections::Fixed(4), pooler).await,
            )),
        ),
        "sharedauto" => (
            "poolkit shared (auto)".into(),
            "auto ≤ 5".into(),
            Arc::new(Shared(
                poolkit(url, "bench_sharedauto", SharedConnections::Auto, pooler).await,
            )),
        ),
        "exclusive" => (
            "poolkit exclusive".into(),
            "20".into(),
            Arc::new(Exclusive(
                poolkit(url, "bench_exclusive", SharedConnections::Off, pooler).await,
            )),
        ),
        "deadpool" => (
            "deadpool (Fast)".into(),
            "20".into(),
            Arc::new(deadpool(url)),
        ),
        "bb8" => (
            "bare bb8 (no test on checkout)".into(),
            "20".into(),
            Arc::new(bb8(url).await),
        ),
        "pipe2" => (
            "raw pipelined tokio-postgres".into(),
            "2".into(),
            Arc::new(pipe(url, 2).await),
        ),
        "pipe4" => (
            "raw pipelined tokio-postgres".into(),
            "4".into(),
            Arc::new(pipe(url, 4).await),
        ),
        other => panic!("unknown target {other}"),
    }
}

fn print(title: &str, rows: &[Row]) {
    let best_excl = rows
        .iter()
        .filter(|r| r.conns == "20" || r.conns.starts_with("20 "))
        .map(|r| r.ops)
        .fold(0.0, f64::max);
    let mixed = rows.iter().any(|r| r.slow.0 > 0);
    println!("\n{title}");
    if mixed {
        println!(
            "| pool | connections | statements/s | × best exclusive | p50 ms | p95 ms | p99 ms | fast p99 ms | slow done | slow p50 ms | slow max ms | errors |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    } else {
        println!(
            "| pool | connections | statements/s | × best exclusive | p50 ms | p95 ms | p99 ms | fast p99 ms | errors |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    }
    for r in rows {
        let slow = if mixed {
            format!(" {} | {:.2} | {:.2} |", r.slow.0, r.slow.1, r.slow.2)
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {:.1} k | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |{slow} {} |",
            r.name,
            r.conns,
            r.ops / 1000.0,
            if best_excl > 0.0 {
                r.ops / best_excl
            } else {
                0.0
            },
            r.p50,
            r.p95,
            r.p99,
            r.fast_p99,
            r.errors
        );
        if let Some(e) = &r.first_error {
            println!("|   first error: {e} |");
        }
    }
}

async fn ensure_pgbench(url: &str) {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    let have: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'pgbench_accounts'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if have == 0 {
        c.batch_execute(&format!(
            "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
             INSERT INTO pgbench_accounts SELECT g, 1, 0, '' FROM generate_series(1, {ACCOUNTS}) g;
             ANALYZE pgbench_accounts;"
        ))
        .await
        .expect("pgbench_accounts (scale 1)");
    }
}

#[tokio::main]
async fn main() {
    let url = process_lookup("DATABASE_URL")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if process_lookup("BENCH_SIZES").is_some() {
        let p = poolkit(&url, "sizes", SharedConnections::Fixed(1), Pooler::None).await;
        let aid = 1i32;
        eprintln!(
            "simple_query future {} B",
            std::mem::size_of_val(&p.simple_query("SELECT 1"))
        );
        eprintln!(
            "query_typed future {} B",
            std::mem::size_of_val(&p.query_typed(PGBENCH, &[(&aid, Type::INT4)]))
        );
        eprintln!(
            "query future {} B",
            std::mem::size_of_val(&p.query(PGBENCH, &[&aid]))
        );
        eprintln!("get future {} B", std::mem::size_of_val(&p.get()));
        let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(conn);
        eprintln!(
            "raw simple_query future {} B",
            std::mem::size_of_val(&c.simple_query("SELECT 1"))
        );
        eprintln!(
            "raw query_typed future {} B",
            std::mem::size_of_val(&c.query_typed(PGBENCH, &[(&aid, Type::INT4)]))
        );
        return;
    }
    let bouncer = process_lookup("PGBOUNCER_URL")
        .unwrap_or_else(|| "postgres://poolkit:poolkit_test@127.0.0.1:6432/test".to_owned());
    let secs: f64 = process_lookup("BENCH_SECONDS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let workloads = process_lookup("BENCH_WORKLOADS")
        .unwrap_or_else(|| "select1,pgbench,sleep,mixed,bouncer".to_owned());
    let task_counts: Vec<usize> = process_lookup("BENCH_TASKS")
        .unwrap_or_else(|| "50,1000,10000".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // BENCH_TARGETS: only these rows (names as in `one`), for a quicker look.
    let only: Option<Vec<String>> = process_lookup("BENCH_TARGETS")
        .map(|s| s.split(',').map(|t| t.trim().to_owned()).collect());
    println!(
        "poolkit shared vs exclusive, {secs} s per row, pools of {POOL}; cargo bench --bench pg_shared --features postgres"
    );
    let all = [
        "exclusive",
        "deadpool",
        "bb8",
        "shared2",
        "shared4",
        "sharedauto",
        "pipe2",
        "pipe4",
    ];
    for w in workloads.split(',') {
        let (work, tasks, targets, pooler, u): (Work, Vec<usize>, &[&str], Pooler, &str) =
            match w.trim() {
                "select1" => (Work::Select1, task_counts.clone(), &all, Pooler::None, &url),
                "pgbench" => {
                    ensure_pgbench(&url).await;
                    (Work::Pgbench, task_counts.clone(), &all, Pooler::None, &url)
                }
                "sleep" => (
                    Work::Sleep,
                    vec![1000],
                    &["exclusive", "deadpool", "bb8", "sharedauto"],
                    Pooler::None,
                    &url,
                ),
                "mixed" => (
                    Work::Mixed,
                    vec![1000],
                    &["exclusive", "deadpool", "bb8", "shared2", "sharedauto"],
                    Pooler::None,
                    &url,
                ),
                "bouncer" => (
                    Work::Select1,
                    vec![1000],
                    &["exclusive", "deadpool", "shared2", "sharedauto", "pipe2"],
                    Pooler::Transaction,
                    &bouncer,
                ),
                other => panic!("unknown workload {other}"),
            };
        for &n in &tasks {
            let mut rows = Vec::new();
            for which in targets
                .iter()
                .filter(|t| only.as_ref().is_none_or(|o| o.iter().any(|x| x == **t)))
            {
                let (name, conns, t) = one(u, which, pooler).await;
                rows.push(run(name, conns, t, work, n, secs).await);
                tokio::time::sleep(Duration::from_millis(300)).await; // connections close
            }
            let title = match w.trim() {
                "select1" => format!("SELECT 1 (simple protocol), {n} tasks"),
                "pgbench" => format!("pgbench select-only (scale 1, unnamed typed), {n} tasks"),
                "sleep" => format!("SELECT pg_sleep(0.01), {n} tasks"),
                "mixed" => format!("1 % SELECT pg_sleep(0.2), the rest SELECT 1, {n} tasks"),
                _ => format!("through PgBouncer (transaction mode), SELECT 1, {n} tasks"),
            };
            print(&title, &rows);
        }
    }
}
