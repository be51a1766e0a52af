//! Connect errors that retrying cannot fix fail at once with the server's reason; those
//! a restart fixes are still retried within the acquire timeout.

mod common;

use std::time::{Duration, Instant};

use poolkit_core::env::process_lookup;
use poolkit_postgres::{Error, Pool};

/// A pool that would wait 30 s for a connection: anything failing in under a second
/// failed because retrying was pointless, not because time ran out.
async fn build(url: String, name: &str, min_idle: u32) -> (Result<Pool, Error>, Duration) {
    let started = Instant::now();
    let pool = Pool::builder()
        .url(url)
        .name(name)
        .min_idle(min_idle)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .await;
    (pool, started.elapsed())
}

fn with(base: &str, user: &str, db: &str) -> String {
    let rest = base.split_once("@").map_or(base, |(_, r)| r);
    let host = rest.split_once('/').map_or(rest, |(h, _)| h);
    format!("postgres://{user}@{host}/{db}")
}

fn expect_fast(r: (Result<Pool, Error>, Duration), reason: &str) {
    let (pool, took) = r;
    let err = pool.expect_err("must fail");
    let msg = err.to_string();
    assert!(err.is_connect(), "{msg}");
    assert!(
        msg.contains(reason),
        "the server's reason `{reason}` in: {msg}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_in_under_a_second() {
    let bouncer = process_lookup("PGBOUNCER_URL")
        .unwrap_or_else(|| "postgres://poolkit:poolkit_test@127.0.0.1:6432/test".to_owned());
    let wrong = bouncer.replace(":poolkit_test@", ":not_the_password@");
    expect_fast(
        build(wrong.clone(), "t_ff_password", 1).await,
        "password authentication failed",
    );
    // Also at the first get() of a pool that opens nothing at build.
    let (pool, _) = build(wrong, "t_ff_password_get", 0).await;
    let pool = pool.expect("min_idle 0 opens nothing");
    let started = Instant::now();
    let err = pool.get().await.expect_err("wrong password");
    assert!(
        started.elapsed() < Duration::from_secs(1) && err.to_string().contains("password"),
        "{:?}: {err}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_database_or_role_fails_in_under_a_second() {
    let base = common::database_url();
    expect_fast(
        build(with(&base, "postgres", "no_such_db"), "t_ff_db", 1).await,
        "database \"no_such_db\" does not exist",
    );
    expect_fast(
        build(with(&base, "no_such_role", "test"), "t_ff_role", 1).await,
        "role \"no_such_role\" does not exist",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_fails_the_build_at_once_but_is_retried_later() {
    // Port 1 on loopback: refused.
    let url = "postgres://postgres@127.0.0.1:1/test".to_owned();
    expect_fast(build(url.clone(), "t_ff_refused", 1).await, "refused");
    // A pool that was built (min_idle 0) retries a refused connection: the server may be
    // restarting. It gives up at its acquire timeout with the reason.
    let pool = Pool::builder()
        .url(url)
        .name("t_ff_refused_later")
        .min_idle(0)
        .acquire_timeout(Duration::from_millis(800))
        .build()
        .await
        .expect("min_idle 0 opens nothing");
    let started = Instant::now();
    let err = pool.get().await.expect_err("refused");
    assert!(
        started.elapsed() >= Duration::from_millis(700) && err.to_string().contains("refused"),
        "{:?}: {err}",
        started.elapsed()
    );
}
