//! Through the real PgBouncer in transaction mode (scripts/services.sh runs it on 6432).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use poolkit_core::env::process_lookup;
use poolkit_postgres::{Pool, Pooler, tokio_postgres};

fn pgbouncer_url() -> String {
    process_lookup("PGBOUNCER_URL")
        .unwrap_or_else(|| "postgres://poolkit:poolkit_test@127.0.0.1:6432/test".to_owned())
}

async fn bouncer_pool(name: &str, pooler: Pooler) -> Pool {
    match Pool::builder()
        .url(pgbouncer_url())
        .name(name)
        .pooler(pooler)
        .pool_size(20)
        .min_idle(0)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .await
    {
        Ok(pool) => pool,
        Err(e) => panic!(
            "cannot reach PgBouncer at PGBOUNCER_URL={} ({e}); start it with scripts/services.sh",
            poolkit_core::redact_url(&pgbouncer_url())
        ),
    }
}

/// 1000 tasks, each running `rounds` parameterized queries; returns the failures.
async fn hammer(pool: &Pool, plain_tokio_postgres: bool, rounds: u32) -> (u64, Vec<String>) {
    let failures = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..1000i32 {
        let (pool, failures) = (pool.clone(), Arc::clone(&failures));
        handles.push(tokio::spawn(async move {
            let mut first_error = None;
            for r in 0..rounds {
                let conn = pool.get().await.expect("no pool timeout");
                let n = t * 1000 + i32::try_from(r).unwrap_or(0);
                let result = if plain_tokio_postgres {
                    let client: &tokio_postgres::Client = &conn;
                    client
                        .query("SELECT $1::int4 + 1, $2::text", &[&n, &"x"])
                        .await
                        .map(|rows| rows[0].get::<_, i32>(0))
                } else {
                    conn.query("SELECT $1::int4 + 1, $2::text", &[&n, &"x"])
                        .await
                        .map(|rows| rows[0].get::<_, i32>(0))
                };
                match result {
                    Ok(v) => assert_eq!(v, n + 1),
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert_with(|| poolkit_postgres::chain(&e));
                    }
                }
            }
            first_error
        }));
    }
    let mut errors = Vec::new();
    for h in handles {
        if let Some(e) = h.await.expect("task") {
            errors.push(e);
        }
    }
    (failures.load(Ordering::Relaxed), errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameterized_queries_work_through_transaction_pooling_and_plain_ones_do_not() {
    let pool = bouncer_pool("t_bouncer", Pooler::Transaction).await;
    let (failures, errors) = hammer(&pool, false, 5).await;
    assert_eq!(failures, 0, "poolkit in transaction mode: {errors:?}");
    let s = pool.stats();
    assert_eq!((s.acquires, s.timeouts, s.used), (5000, 0, 0));

    // The same work with tokio-postgres's own `query` (named prepared statements) breaks:
    // the Parse and the Bind land on different server connections.
    let plain = bouncer_pool("t_bouncer_plain", Pooler::None).await;
    let (failures, errors) = hammer(&plain, true, 5).await;
    assert!(
        failures > 0,
        "named prepared statements should fail behind transaction pooling"
    );
    assert!(
        errors.iter().any(|e| e.contains("prepared statement")),
        "{:?}",
        &errors[..errors.len().min(3)]
    );
    eprintln!(
        "plain tokio-postgres query through PgBouncer: {failures} of 5000 failed, e.g. {}",
        errors[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_flag_selects_transaction_mode() {
    let url = format!("{}?pgbouncer=true", pgbouncer_url());
    let pool = Pool::builder()
        .url(url)
        .name("t_flag")
        .min_idle(1)
        .build()
        .await
        .expect("pgbouncer=true is accepted");
    assert_eq!(pool.config().pooler, Pooler::Transaction);
    let conn = pool.get().await.expect("get");
    assert_eq!(conn.pooler(), Pooler::Transaction);
    let row = conn
        .query_one("SELECT $1::text || $2::text", &[&"pool", &"kit"])
        .await
        .expect("typed query");
    assert_eq!(row.get::<_, String>(0), "poolkit");
    let n = conn
        .execute("SELECT 1 WHERE $1::bool", &[&true])
        .await
        .expect("execute");
    assert_eq!(n, 1);
    let none: Option<i64> = None;
    let row = conn
        .query_one("SELECT $1::int8 IS NULL", &[&none])
        .await
        .expect("typed NULL");
    assert!(row.get::<_, bool>(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_on_its_default_port_needs_no_setting() {
    // DATABASE_URL=…:6432/test as a new user writes it: no DATABASE_POOLER, no flag.
    let pool = Pool::builder()
        .url(pgbouncer_url())
        .name("t_bouncer_port")
        .pool_size(20)
        .min_idle(0)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .await
        .expect("PgBouncer on 6432 (PGBOUNCER_URL); start it with scripts/services.sh");
    assert_eq!(pool.config().pooler, Pooler::Transaction);
    let (failures, errors) = hammer(&pool, false, 4).await;
    assert_eq!(failures, 0, "{:?}", &errors[..errors.len().min(3)]);
    let stats = pool.stats();
    assert_eq!(stats.pooler.as_deref(), Some("transaction"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_finds_a_transaction_pooler_switches_and_reruns() {
    // Told "none" (a pooler on a port poolkit does not know): the first refused named
    // statement switches the pool, and that statement runs again unnamed.
    let pool = bouncer_pool("t_bouncer_switch", Pooler::None).await;
    assert_eq!(pool.config().pooler, Pooler::None);
    // A statement prepared before the switch (a named one) keeps working after it.
    let st = {
        let conn = pool.get().await.expect("get");
        conn.prepare("SELECT $1::int4 * 2").await.expect("prepare")
    };
    let (failures, errors) = hammer(&pool, false, 4).await;
    assert_eq!(failures, 0, "{:?}", &errors[..errors.len().min(3)]);
    let conn = pool.get().await.expect("get");
    assert_eq!(conn.pooler(), Pooler::Transaction);
    for n in 0..50i32 {
        let row = conn
            .query_one(&st, &[&n])
            .await
            .expect("prepared statement");
        assert_eq!(row.get::<_, i32>(0), n * 2);
    }
    let stats = pool.stats();
    assert_eq!(stats.pooler.as_deref(), Some("transaction"));
}
