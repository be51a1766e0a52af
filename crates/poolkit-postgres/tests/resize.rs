//! `Pool::resize` under load on the real server: a raise serves the queue at once, a cut
//! never takes a connection from its holder and brings the server-side count down to the
//! new ceiling; stats, health and the metrics gauge follow; bad sizes get the env errors.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// This test's backends in pg_stat_activity.
async fn backends(admin: &poolkit_postgres::tokio_postgres::Client, app: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("count backends")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_under_load_follows_on_the_server() {
    let admin = admin().await;
    let app = app_name("resize");
    let pool = builder("resize")
        .application_name(&app)
        .pool_size(3)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("build");
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (pool, stop) = (pool.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let c = pool.get().await.expect("no timeout while resizing");
                    c.simple_query("SELECT pg_sleep(0.002)")
                        .await
                        .expect("query");
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 3 of 3 busy and 197 waiting, but served far within the 10 s acquire timeout and
    // none timed out: full, not critical (issue 22: utilization alone is not suffering).
    assert_eq!(
        pool.health().status.as_str(),
        "warning",
        "3 of 3 busy, 197 waiting"
    );

    pool.resize(12, None).expect("raise");
    let t = Instant::now();
    while backends(&admin, &app).await < 12 {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the raise did not reach the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = pool.stats();
    assert_eq!((s.max_size, s.pool_size), (12, 12), "{s:?}");
    poolkit_core::metrics::publish_all();

    pool.resize(2, Some(4)).expect("cut");
    let t = Instant::now();
    loop {
        let (s, server) = (pool.stats(), backends(&admin, &app).await);
        if s.open <= 4 && server <= 4 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the cut did not reach the server: {s:?}, server {server}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = pool.stats();
    assert_eq!((s.max_size, s.pool_size), (4, 2), "{s:?}");
    assert!(s.closed_by("overflow") >= 8, "{s:?}");
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        assert!(t.await.expect("task") > 0, "every task was served");
    }
    assert_eq!(pool.stats().timeouts, 0);
    // Back to the steady size once nobody waits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(pool.stats().open <= 2, "{:?}", pool.stats());

    let e = pool.resize(0, None).unwrap_err().to_string();
    assert!(e.contains("T_RESIZE_POOL_SIZE"), "names the variable: {e}");
    let e = pool.resize(5, Some(3)).unwrap_err().to_string();
    assert!(
        e.contains("T_RESIZE_POOL_MAXSIZE"),
        "names the variable: {e}"
    );
}
