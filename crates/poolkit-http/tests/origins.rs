//! Several origins in one pool: each origin has its own ceiling and its own utilization,
//! the pool-level figure never goes above 1, health follows the busiest origin, and
//! origins with nothing open are forgotten (the origin map stays bounded).

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::{Mode, Opts, serve};
use poolkit_http::Pool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utilization_is_per_origin_and_idle_origins_are_forgotten() {
    let mut opts = Opts::new(Mode::Http1);
    opts.delay = Duration::from_millis(300);
    let (a, b) = (serve(opts).await, serve(opts).await);
    let mut c = common::config("origins", &a, 2);
    c.pool.idle_timeout = Some(Duration::from_millis(200));
    let pool = Pool::new(c).expect("pool");

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (pool, done) = (pool.clone(), done.clone());
        tokio::spawn(async move {
            let mut critical = false;
            while !done.load(SeqCst) {
                let s = pool.stats();
                assert!(
                    s.utilization <= 1.0,
                    "pool-level utilization above 1: {s:?}"
                );
                // Full, with callers waiting briefly and none timed out: warning (critical
                // needs timeouts or long waits).
                critical |= matches!(pool.health().status.as_str(), "warning" | "critical");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            critical
        })
    };
    // Origin A gets 4 callers (2 wait), origin B only 1.
    let mut tasks = Vec::new();
    for (server, n) in [(&a, 4), (&b, 1)] {
        for _ in 0..n {
            let (pool, url) = (pool.clone(), format!("{}/", server.url()));
            tasks.push(tokio::spawn(async move { pool.get(&url).send().await }));
        }
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let origins = pool.origins();
    assert_eq!(origins.len(), 2, "{origins:?}");
    let busy = origins
        .iter()
        .find(|o| o.origin.ends_with(&a.addr.port().to_string()))
        .expect("A");
    assert_eq!((busy.used, busy.pending), (2, 2), "{busy:?}");
    assert!((busy.utilization - 1.0).abs() < 1e-9, "{busy:?}");
    let calm = origins
        .iter()
        .find(|o| o.origin.ends_with(&b.addr.port().to_string()))
        .expect("B");
    assert!((calm.utilization - 0.5).abs() < 1e-9, "{calm:?}");
    let s = pool.stats();
    assert_eq!(s.max_size, 4, "capacity = ceiling x origins: {s:?}");
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("request").status(), 200);
    }
    done.store(true, SeqCst);
    assert!(
        sampler.await.expect("sampler"),
        "the full origin made the pool warn"
    );

    // Idle connections close after the idle timeout; then the origins are forgotten.
    let t = Instant::now();
    while !pool.origins().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "origins kept: {:?}",
            pool.origins()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        pool.stats().max_size,
        2,
        "capacity back to one origin's ceiling"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_changes_every_origins_ceiling_while_running() {
    let mut opts = Opts::new(Mode::Http1);
    opts.delay = Duration::from_millis(50);
    let server = serve(opts).await;
    let pool = Pool::new(common::config("origins_resize", &server, 4)).expect("pool");
    let burst = |n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.get("/").send().await })
            })
            .collect();
        async move {
            for t in tasks {
                assert_eq!(t.await.expect("task").expect("request").status(), 200);
            }
        }
    };
    burst(8).await;
    assert_eq!(server.seen.max_in_flight.load(SeqCst), 4);
    pool.resize(1, None).expect("cut");
    server.seen.max_in_flight.store(0, SeqCst);
    burst(8).await;
    assert_eq!(
        server.seen.max_in_flight.load(SeqCst),
        1,
        "the cut ceiling holds"
    );
    pool.resize(6, None).expect("raise");
    server.seen.max_in_flight.store(0, SeqCst);
    burst(12).await;
    assert_eq!(
        server.seen.max_in_flight.load(SeqCst),
        6,
        "the raised ceiling is used"
    );
    let e = pool.resize(0, None).unwrap_err().to_string();
    assert!(e.contains("ORIGINS_RESIZE_POOL_SIZE"), "{e}");
}
