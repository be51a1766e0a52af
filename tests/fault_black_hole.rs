//! Black holes: a server that accepts TCP and never answers (a hung process, a half-open
//! firewall, a dead VM behind a live load balancer). For a PostgreSQL primary, a
//! PostgreSQL read replica, Redis and HTTP: every acquire or request fails at its deadline
//! with a typed error naming the variable that sets it, the connections opened towards
//! the hole never exceed the pool's ceiling, and a replica black hole sends reads to the
//! primary.
#![cfg(all(feature = "postgres", feature = "redis", feature = "http"))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// What the hole saw.
#[derive(Debug, Default)]
struct Hole {
    accepted: AtomicU64,
    open: AtomicI64,
    max_open: AtomicI64,
}

/// Accepts, reads and discards, never writes a byte.
async fn black_hole() -> (u16, Arc<Hole>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hole = Arc::new(Hole::default());
    let seen = hole.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            seen.accepted.fetch_add(1, SeqCst);
            let open = seen.open.fetch_add(1, SeqCst) + 1;
            seen.max_open.fetch_max(open, SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                seen.open.fetch_sub(1, SeqCst);
            });
        }
    });
    (port, hole)
}

/// Runs `n` calls of `op` at once; returns each one's (elapsed, error text).
async fn at_once<F, Fut, T, E>(n: usize, op: F) -> Vec<(Duration, Result<T, E>)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let fut = op();
            tokio::spawn(async move {
                let t = Instant::now();
                // The watchdog only turns a hang into a clear failure.
                let r = tokio::time::timeout(Duration::from_secs(10), fut)
                    .await
                    .expect("a call into the black hole hung past 10 s");
                (t.elapsed(), r)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task panicked"));
    }
    out
}

/// Every result is an error that came between `deadline` and `deadline + slack` and
/// names one of `vars`; returns the slowest.
fn all_at_deadline<T: std::fmt::Debug, E: std::fmt::Display>(
    what: &str,
    results: &[(Duration, Result<T, E>)],
    deadline: Duration,
    vars: &[&str],
) -> Duration {
    let slack = Duration::from_millis(300);
    let mut slowest = Duration::ZERO;
    for (took, r) in results {
        let e = match r {
            Ok(v) => panic!("{what}: a call into the black hole succeeded: {v:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            *took >= deadline.mul_f64(0.95) && *took <= deadline + slack,
            "{what}: failed after {took:?}, the deadline is {deadline:?}: {e}"
        );
        assert!(
            vars.iter().any(|v| e.contains(v)),
            "{what}: the error names none of {vars:?}: {e}"
        );
        slowest = slowest.max(*took);
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_primary_black_hole() {
    use poolkit::postgres::{Config, Pool};
    let (port, hole) = black_hole().await;
    let mut config = Config::new(format!("postgres://postgres@127.0.0.1:{port}/test"));
    config.pool.name = "bh_pg".into();
    config.pool.prefix = "BH_PG".into();
    config.pool.pool_size = 4;
    config.pool.min_idle = 0;
    config.pool.acquire_timeout = Duration::from_millis(500);
    let pool = Pool::new(config).await.expect("a lazy pool builds");
    let deadline = Duration::from_millis(500);
    let mut slowest = Duration::ZERO;
    for _round in 0..3 {
        let pool2 = pool.clone();
        let results = at_once(20, move || {
            let pool = pool2.clone();
            async move { pool.get().await.map(|_| ()) }
        })
        .await;
        let vars = ["BH_PG_POOL_TIMEOUT", "BH_PG_CONNECT_TIMEOUT"];
        slowest = slowest.max(all_at_deadline("pg", &results, deadline, &vars));
    }
    tokio::time::sleep(Duration::from_millis(700)).await; // connects in flight end
    let s = pool.stats();
    println!(
        "FIGURES black hole pg primary: 60 gets, all typed at {deadline:?} (slowest {slowest:?}); {} connects accepted by the hole, at most {} open at once, {} open after",
        hole.accepted.load(SeqCst),
        hole.max_open.load(SeqCst),
        hole.open.load(SeqCst)
    );
    assert!(hole.max_open.load(SeqCst) <= 4, "{hole:?}");
    assert_eq!(hole.open.load(SeqCst), 0, "timed-out connects are closed");
    assert_eq!((s.used, s.pending, s.open), (0, 0, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replica_black_hole_reads_from_the_primary() {
    use poolkit::postgres::{Config, Pool};
    let (port, hole) = black_hole().await;
    let mut config = Config::new(common::database_url());
    config.pool.name = "bh_rep".into();
    config.pool.prefix = "BH_REP".into();
    config.pool.pool_size = 4;
    config.pool.min_idle = 0;
    config.pool.acquire_timeout = Duration::from_millis(500);
    config.read_urls = vec![poolkit::core::Secret::new(format!(
        "postgres://postgres@127.0.0.1:{port}/test"
    ))];
    let pool = Pool::new(config)
        .await
        .unwrap_or_else(|e| panic!("{}", common::pg_unreachable(&e)));
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let conn = pool.read().await.expect("a read falls back to the primary");
        let row = conn
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap();
        assert!(!row.get::<_, bool>(0), "served by the primary");
        times.push(t.elapsed());
        drop(conn);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = times[0];
    let after: Duration = times[1..].iter().copied().max().unwrap();
    println!(
        "FIGURES black hole pg replica: 20 reads all served by the primary; the first waited {first:?} (the replica's deadline), the slowest of the rest {after:?}; {} connects accepted by the hole, at most {} open at once",
        hole.accepted.load(SeqCst),
        hole.max_open.load(SeqCst)
    );
    assert!(first >= Duration::from_millis(450) && first < Duration::from_millis(900));
    assert!(hole.max_open.load(SeqCst) <= 4, "{hole:?}");
    let s = pool.stats();
    assert_eq!((s.used, s.pending), (0, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_black_hole() {
    use poolkit::redis::{Config, Pool};
    let (port, hole) = black_hole().await;
    let mut config = Config::new(format!("redis://127.0.0.1:{port}"));
    config.pool.name = "bh_redis".into();
    config.pool.prefix = "BH_REDIS".into();
    config.pool.pool_size = 4;
    config.pool.acquire_timeout = Duration::from_millis(500);
    let vars = [
        "BH_REDIS_POOL_TIMEOUT",
        "BH_REDIS_CONNECT_TIMEOUT",
        "BH_REDIS_TIMEOUT",
    ];
    let mut slowest = Duration::ZERO;
    for _round in 0..3 {
        let config = config.clone();
        let results = at_once(10, move || {
            let config = config.clone();
            async move { Pool::new(config).await.map(|_| ()) }
        })
        .await;
        slowest = slowest.max(all_at_deadline(
            "redis",
            &results,
            Duration::from_millis(500),
            &vars,
        ));
        // The builds gave up: their connects end (the hole sees each socket close a
        // moment after the abort). Measured per round, so one round's closing sockets
        // are not counted against the next round's cap.
        let gave_up = Instant::now();
        while hole.open.load(SeqCst) > 0 {
            assert!(
                gave_up.elapsed() < Duration::from_secs(2),
                "abandoned connects still open 2 s after the builds gave up: {hole:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "FIGURES black hole redis: 30 pool builds, all typed at 500ms (slowest {slowest:?}); {} connects accepted, at most {} open at once, {} open after",
        hole.accepted.load(SeqCst),
        hole.max_open.load(SeqCst),
        hole.open.load(SeqCst)
    );
    // Each build opens its 4 shared sockets at once (the multiplexed core's slots), and a
    // build that gives up ends its connects at once: no round overlaps the next.
    assert!(hole.max_open.load(SeqCst) <= 10 * 4, "{hole:?}");
    assert_eq!(hole.open.load(SeqCst), 0, "abandoned connects are closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_black_hole() {
    use poolkit::http::{Config, HttpVersion, Pool};
    let (port, hole) = black_hole().await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let mut config = Config::new("bh_http");
        config.pool.pool_size = 4;
        config.pool.acquire_timeout = Duration::from_secs(5);
        config.timeout = Some(Duration::from_millis(500));
        config.http_version = version;
        config.base_url = Some(format!("http://127.0.0.1:{port}"));
        let pool = Pool::new(config).unwrap();
        // The pool's own count of open connections, sampled every 5 ms.
        let sampler = {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut max = 0;
                while !pool.is_closed() {
                    max = max.max(pool.stats().open);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                max
            })
        };
        let mut slowest = Duration::ZERO;
        let mut settled_open = 0;
        for _round in 0..3 {
            let pool2 = pool.clone();
            let results = at_once(20, move || {
                let pool = pool2.clone();
                async move { pool.get("/").send().await.map(|r| r.status()) }
            })
            .await;
            slowest = slowest.max(all_at_deadline(
                "http",
                &results,
                Duration::from_millis(500),
                &["BH_HTTP_TIMEOUT"],
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
            settled_open = settled_open.max(hole.open.load(SeqCst));
        }
        let s = pool.stats();
        pool.close();
        let pool_max = sampler.await.unwrap();
        println!(
            "FIGURES black hole http {version:?}: 60 requests, all PoolError::Deadline at 500ms (slowest {slowest:?}); {} connects accepted so far, pool open at most {pool_max}, hole open after each round at most {settled_open}",
            hole.accepted.load(SeqCst),
        );
        // Waiters that get a place in the last milliseconds before their deadline still
        // connect (and are cut off), so the hole sees more connects than the ceiling, but
        // never more than the ceiling open: timed-out HTTP/1.1 sockets are closed at once.
        assert!(pool_max <= 4, "{s:?}");
        assert!(settled_open <= 4, "{hole:?}");
        assert_eq!((s.used, s.pending), (0, 0), "{s:?}");
    }
}
