//! The port examples run against the local servers: their `run` functions are compiled
//! into this test from `examples/` (the very code `cargo run --example` runs), so
//! `cargo test` (and scripts/test.sh) runs them.

#[allow(dead_code)]
#[path = "../examples/port_tokio_postgres.rs"]
mod port_tokio_postgres;

#[allow(dead_code)]
#[path = "../examples/port_redis.rs"]
mod port_redis;

#[allow(dead_code)]
#[path = "../examples/port_reqwest.rs"]
mod port_reqwest;

use poolkit_core::env::process_lookup;

fn var(name: &str, default: &str) -> String {
    process_lookup(name).unwrap_or_else(|| default.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_tokio_postgres_runs_directly_and_through_pgbouncer() {
    let direct = var("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test");
    let rows = port_tokio_postgres::run(&direct, "port_pg_direct")
        .await
        .unwrap_or_else(|e| panic!("against DATABASE_URL: {e}"));
    assert_eq!(rows, 5);
    let bouncer = var(
        "PGBOUNCER_URL",
        "postgres://poolkit:poolkit_test@127.0.0.1:6432/test",
    );
    let rows = port_tokio_postgres::run(&bouncer, "port_pg_bouncer")
        .await
        .unwrap_or_else(|e| panic!("against PGBOUNCER_URL: {e}"));
    assert_eq!(rows, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_redis_runs() {
    let url = var("REDIS_URL", "redis://127.0.0.1:6379");
    let v = port_redis::run(&url, "port_redis_test")
        .await
        .unwrap_or_else(|e| panic!("against REDIS_URL: {e}"));
    assert_eq!(v, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_reqwest_runs() {
    let base = port_reqwest::start_standin()
        .await
        .expect("a local stand-in API");
    let n = port_reqwest::run(&base, "port_reqwest_test")
        .await
        .expect("the program");
    assert_eq!(n, 2);
}
