//! Warm-up at build, and what a dead or refusing server looks like.

mod common;

use std::time::{Duration, Instant};

use common::*;
use poolkit_postgres::{Error, Pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_connections_are_open_when_build_returns() {
    let admin = admin().await;
    let pool = builder("warmup")
        .pool_size(8)
        .min_idle(4)
        .build()
        .await
        .expect("build");
    assert_eq!(
        backends(&admin, "warmup").await,
        4,
        "4 backends open before any get()"
    );
    let s = pool.stats();
    assert_eq!((s.open, s.idle, s.used, s.created), (4, 4, 0, 4));
    assert!(pool.ping().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_server_is_an_error_within_the_timeout_not_a_hang() {
    // Nothing listens on port 1.
    let start = Instant::now();
    let err = Pool::builder()
        .url("postgres://postgres:pw_marker@127.0.0.1:1/test")
        .name("t_dead")
        .min_idle(1)
        .acquire_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect_err("no server on port 1");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let msg = err.to_string();
    assert!(err.is_connect(), "{msg}");
    assert!(
        msg.contains("127.0.0.1:1") && msg.contains("t_dead"),
        "{msg}"
    );
    assert!(
        !msg.contains("pw_marker") && !format!("{err:?}").contains("pw_marker"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_error_carries_the_servers_reason() {
    let url = database_url();
    let base = url
        .rsplit_once('/')
        .map_or(url.as_str(), |(b, _)| b)
        .to_owned();
    let err = Pool::builder()
        .url(format!("{base}/poolkit_no_such_database"))
        .name("t_nodb")
        .acquire_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect_err("database does not exist");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Pool(poolkit_postgres::PoolError::Connect { .. })
        ),
        "{msg}"
    );
    assert!(
        msg.contains("poolkit_no_such_database") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_pool_connects_on_first_get_and_reports_connect_errors_there() {
    let pool = Pool::builder()
        .url("postgres://postgres@127.0.0.1:1/test")
        .name("t_lazy")
        .min_idle(0)
        .acquire_timeout(Duration::from_millis(800))
        .build()
        .await
        .expect("min_idle 0 builds without connecting");
    let start = Instant::now();
    let err = pool.get().await.expect_err("nothing listens");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(
        err.is_connect(),
        "the real cause, not a bare timeout: {err}"
    );
    assert!(pool.stats().errors_by("connect") >= 1);
}
