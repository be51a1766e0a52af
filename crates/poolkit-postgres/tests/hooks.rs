//! Peer parity (sqlx, deadpool, bb8): hooks around a connection's life, `detach()`, and a
//! per-call acquire timeout, against the real server.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_connect_sets_up_each_connection_and_its_error_discards_it() {
    let pool = common::builder("hook_connect")
        .min_idle(2)
        .after_connect(|c| Box::pin(c.batch_execute("SET search_path TO pg_catalog, public")))
        .build()
        .await
        .expect("pool");
    for _ in 0..3 {
        let conn = pool.get().await.expect("get");
        let row = conn.query_one("SHOW search_path", &[]).await.expect("show");
        assert_eq!(row.get::<_, String>(0), "pg_catalog, public");
    }
    // A hook that fails: the connection never joins the pool, and the caller is told why.
    let fail = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&fail);
    let pool = common::builder("hook_connect_err")
        .min_idle(0)
        .acquire_timeout(Duration::from_millis(500))
        .after_connect(move |c| {
            let failing = flag.load(SeqCst);
            Box::pin(async move {
                let sql = if failing {
                    "SELECT no_such_function()"
                } else {
                    "SELECT 1"
                };
                c.batch_execute(sql).await
            })
        })
        .build()
        .await
        .expect("pool");
    let e = pool.get().await.expect_err("the hook fails every connect");
    assert!(e.to_string().contains("no_such_function"), "{e}");
    assert_eq!(pool.stats().open, 0, "no connection joined the pool");
    fail.store(false, SeqCst);
    pool.get().await.expect("the hook passes now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_acquire_and_after_release_can_refuse_a_connection() {
    let checks = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&checks);
    let pool = common::builder("hook_acquire")
        .pool_size(1)
        .min_idle(1)
        // Every other check refuses: the caller still gets a connection, a new one.
        .before_acquire(move |c| {
            let n = seen.fetch_add(1, SeqCst);
            Box::pin(async move { n % 2 == 1 && c.simple_query("SELECT 1").await.is_ok() })
        })
        // A connection left in a transaction is not reused.
        .after_release(|c| !c.is_closed())
        .build()
        .await
        .expect("pool");
    let first_pid: i32 = {
        let conn = pool.get().await.expect("get");
        conn.query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0)
    };
    assert!(checks.load(SeqCst) >= 2);
    let s = pool.stats();
    assert_eq!(s.closed_by("rejected"), 1, "{s:?}");
    let pid: i32 = pool
        .get()
        .await
        .expect("get")
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    assert_ne!(
        pid, first_pid,
        "refused by before_acquire, so a new backend"
    );

    let refuse = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&refuse);
    let pool = common::builder("hook_release")
        .pool_size(1)
        .min_idle(0)
        .after_release(move |_| !flag.load(SeqCst))
        .build()
        .await
        .expect("pool");
    drop(pool.get().await.expect("get"));
    let s = pool.stats();
    assert_eq!((s.closed_by("rejected"), s.open), (1, 0), "{s:?}");
    refuse.store(false, SeqCst);
    drop(pool.get().await.expect("get"));
    assert_eq!(pool.stats().open, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_takes_a_connection_out_and_the_pool_opens_another() {
    let pool = common::builder("detach")
        .pool_size(1)
        .min_idle(1)
        .build()
        .await
        .expect("pool");
    let conn = pool.get().await.expect("get");
    let client = conn.detach();
    // The pool forgot it: its one place is free for a new connection.
    let other = pool.get().await.expect("a new connection");
    let a: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("the detached client still works")
        .get(0);
    let b: i32 = other
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    assert_ne!(a, b);
    let s = pool.stats();
    assert_eq!(
        (s.closed_by("detached"), s.open, s.used),
        (1, 1, 1),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_timeout_bounds_one_call() {
    let pool = common::builder("get_timeout")
        .pool_size(1)
        .min_idle(1)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .await
        .expect("pool");
    let held = pool.get().await.expect("get");
    let started = Instant::now();
    let e = pool
        .get_timeout(Duration::from_millis(200))
        .await
        .expect_err("the one connection is held");
    let took = started.elapsed();
    assert!(e.is_timeout(), "{e}");
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(2),
        "{took:?}"
    );
    drop(held);
    pool.get_timeout(Duration::from_millis(200))
        .await
        .expect("free again");
}
