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

/// An error with its sources (tokio-postgres puts the server's message in a source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn var(name: &str, default: &str) -> String {
    process_lookup(name).unwrap_or_else(|| default.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_tokio_postgres_runs_directly_and_through_pgbouncer() {
    let direct = var("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test");
    let rows = port_tokio_postgres::run(&direct, "port_pg_direct")
        .await
        .unwrap_or_else(|e| panic!("against DATABASE_URL: {}", chain(&*e)));
    assert_eq!(rows, 5);
    let bouncer = var(
        "PGBOUNCER_URL",
        "postgres://poolkit:poolkit_test@127.0.0.1:6432/test",
    );
    // `pgbouncer=true` (Prisma's flag) selects transaction mode on PgBouncer's port.
    let sep = if bouncer.contains('?') { '&' } else { '?' };
    let bouncer = format!("{bouncer}{sep}pgbouncer=true");
    let rows = port_tokio_postgres::run(&bouncer, "port_pg_bouncer")
        .await
        .unwrap_or_else(|e| panic!("against PGBOUNCER_URL: {}", chain(&*e)));
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
