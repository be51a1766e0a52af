//! Helpers shared by the PostgreSQL integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use poolkit_core::env::process_lookup;
use poolkit_postgres::{Pool, tokio_postgres};

/// `DATABASE_URL`, defaulting to the local test database.
pub fn database_url() -> String {
    process_lookup("DATABASE_URL")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A direct (unpooled) client; panics with a message naming DATABASE_URL when the server
/// cannot be reached, so a missing server fails the test instead of skipping it.
pub async fn admin() -> tokio_postgres::Client {
    let url = database_url();
    let (client, conn) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok(pair) => pair,
        Err(e) => panic!(
            "cannot reach PostgreSQL at DATABASE_URL={} ({}); start it with scripts/services.sh",
            poolkit_core::redact_url(&url),
            poolkit_postgres::chain(&e)
        ),
    };
    tokio::spawn(conn);
    client
}

/// A unique application_name, so a test can find its own backends in pg_stat_activity.
pub fn app_name(test: &str) -> String {
    format!("poolkit_test_{test}_{}", std::process::id())
}

/// A pool builder on the test database with a unique name and application_name.
pub fn builder(test: &str) -> poolkit_postgres::Builder {
    Pool::builder()
        .url(database_url())
        .name(&format!("t_{test}"))
        .application_name(&app_name(test))
        .acquire_timeout(Duration::from_secs(10))
}

/// Backends of this test, from pg_stat_activity.
pub async fn backends(admin: &tokio_postgres::Client, test: &str) -> i64 {
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app_name(test)],
        )
        .await
        .expect("pg_stat_activity");
    row.get(0)
}

/// Terminates every backend of this test; returns how many.
pub async fn terminate(admin: &tokio_postgres::Client, test: &str) -> i64 {
    let rows = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app_name(test)],
        )
        .await
        .expect("pg_terminate_backend");
    i64::try_from(rows.len()).unwrap_or(i64::MAX)
}

/// Polls `f` every 50 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
