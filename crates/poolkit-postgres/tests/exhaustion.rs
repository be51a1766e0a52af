//! An exhausted pool gives a typed timeout within the configured time, never a hang.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_times_out_with_a_named_error() {
    let pool = builder("exhaust")
        .pool_size(2)
        .min_idle(2)
        .acquire_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("build");
    let a = pool.get().await.expect("first");
    let b = pool.get().await.expect("second");
    let start = Instant::now();
    let err = pool.get().await.expect_err("pool of 2 with 2 held");
    let waited = start.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(1500),
        "waited {waited:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("t_exhaust")
            && msg.contains("pool size 2")
            && msg.contains("T_EXHAUST_POOL_SIZE"),
        "{msg}"
    );
    assert_eq!(pool.stats().timeouts, 1);
    drop(a);
    let c = pool
        .get()
        .await
        .expect("a returned connection serves the next caller");
    drop((b, c));
    let s = pool.stats();
    assert_eq!((s.used, s.pending, s.acquires), (0, 0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_names_max_pool_size_when_that_set_the_size() {
    let url = database_url();
    let lookup = |k: &str| match k {
        "DATABASE_URL" => Some(url.clone()),
        "MAX_POOL_SIZE" => Some("1".to_owned()),
        "POOL_WARMUP_SIZE" => Some("1".to_owned()),
        "DATABASE_POOL_TIMEOUT" => Some("300ms".to_owned()),
        _ => None,
    };
    let config = poolkit_postgres::Config::from_lookup("DATABASE", &lookup).expect("config");
    let pool = poolkit_postgres::Pool::new(config).await.expect("build");
    let _held = pool.get().await.expect("first");
    let err = pool.get().await.expect_err("exhausted");
    let msg = err.to_string();
    assert!(
        msg.contains("raise MAX_POOL_SIZE or DATABASE_POOL_TIMEOUT"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waiters_leave_no_slot_taken() {
    let pool = builder("cancel")
        .pool_size(3)
        .min_idle(0)
        .build()
        .await
        .expect("build");
    let held: Vec<_> = futures_util::future::join_all((0..3).map(|_| pool.get()))
        .await
        .into_iter()
        .map(|r| r.expect("get"))
        .collect();
    for _ in 0..200 {
        let r = tokio::time::timeout(Duration::from_millis(1), pool.get()).await;
        assert!(r.is_err(), "no connection is free");
    }
    assert_eq!(
        pool.stats().pending,
        0,
        "cancelled waiters are not counted as waiting"
    );
    drop(held);
    let again: Vec<_> = futures_util::future::join_all((0..3).map(|_| pool.get()))
        .await
        .into_iter()
        .map(|r| r.expect("full size after cancellations"))
        .collect();
    assert_eq!(pool.stats().used, 3);
    drop(again);
    assert_eq!(pool.stats().used, 0);
}
