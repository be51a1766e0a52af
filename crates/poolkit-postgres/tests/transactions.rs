//! `Pool::transaction` and `Pool::budget` against the real server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use poolkit_postgres::tokio_postgres::IsolationLevel;
use poolkit_postgres::{Error, Pool, TxOptions};

async fn table(pool: &Pool, name: &str) {
    let conn = pool.get().await.expect("get");
    conn.simple_query(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id int PRIMARY KEY, n int NOT NULL)"
    ))
    .await
    .expect("create");
}

async fn count(pool: &Pool, name: &str) -> i64 {
    let conn = pool.get().await.expect("get");
    conn.query_one(&format!("SELECT count(*) FROM {name}"), &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_on_ok_rollback_on_err_panic_and_deadline() {
    let pool = builder("tx")
        .pool_size(3)
        .min_idle(1)
        .build()
        .await
        .expect("build");
    table(&pool, "poolkit_tx").await;

    let v = pool
        .transaction(TxOptions::default(), async |tx| {
            tx.execute("INSERT INTO poolkit_tx VALUES (1, 1)", &[])
                .await?;
            Ok(7)
        })
        .await
        .expect("commit");
    assert_eq!((v, count(&pool, "poolkit_tx").await), (7, 1));

    let err = pool
        .transaction(TxOptions::default(), async |tx| {
            tx.execute("INSERT INTO poolkit_tx VALUES (2, 2)", &[])
                .await?;
            Err::<(), _>(Error::from(poolkit_postgres::PoolError::closed(
                "business rule said no",
            )))
        })
        .await
        .expect_err("rolled back");
    assert!(err.to_string().contains("business rule"), "{err}");
    assert_eq!(count(&pool, "poolkit_tx").await, 1, "the Err rolled back");

    let p = pool.clone();
    let panicked = tokio::spawn(async move {
        p.transaction(TxOptions::default(), async |tx| {
            tx.execute("INSERT INTO poolkit_tx VALUES (3, 3)", &[])
                .await?;
            panic!("boom inside a transaction");
            #[allow(unreachable_code)]
            Ok(())
        })
        .await
    })
    .await;
    assert!(panicked.is_err(), "the panic reached the task");
    assert_eq!(count(&pool, "poolkit_tx").await, 1, "the panic rolled back");

    let err = pool
        .transaction(
            TxOptions::default().timeout(Duration::from_millis(300)),
            async |tx| {
                tx.execute("INSERT INTO poolkit_tx VALUES (4, 4)", &[])
                    .await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok(())
            },
        )
        .await
        .expect_err("past the deadline");
    assert!(
        matches!(
            err,
            Error::Pool(poolkit_postgres::PoolError::Deadline { .. })
        ),
        "{err}"
    );
    assert!(err.is_timeout() && !err.is_pool_timeout(), "{err}");
    assert_eq!(
        count(&pool, "poolkit_tx").await,
        1,
        "the deadline rolled back"
    );
    let s = pool.stats();
    assert_eq!(
        s.closed_by("aborted"),
        2,
        "panic and deadline closed their connections: {s:?}"
    );
    assert_eq!(s.used, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_are_retried() {
    let pool = builder("tx_retry")
        .pool_size(4)
        .min_idle(2)
        .build()
        .await
        .expect("build");
    table(&pool, "poolkit_tx_retry").await;
    pool.get()
        .await
        .expect("get")
        .execute("INSERT INTO poolkit_tx_retry VALUES (1, 0)", &[])
        .await
        .expect("seed");
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    // Two transactions at once (joined in this task: a spawned task would need the async
    // closure's future to be `Send` for every lifetime, which today's compiler cannot prove).
    let run = || {
        let (pool, barrier) = (pool.clone(), Arc::clone(&barrier));
        async move {
            let mut first = true;
            pool.transaction(
                TxOptions::default()
                    .isolation(IsolationLevel::Serializable)
                    .retries(5),
                async |tx| {
                    let n: i32 = tx
                        .query_one("SELECT n FROM poolkit_tx_retry WHERE id = 1", &[])
                        .await?
                        .get(0);
                    if std::mem::take(&mut first) {
                        barrier.wait().await; // both read before either writes: one must fail
                    }
                    tx.execute(
                        "UPDATE poolkit_tx_retry SET n = $1 WHERE id = 1",
                        &[&(n + 1)],
                    )
                    .await?;
                    Ok(())
                },
            )
            .await
        }
    };
    let (a, b) = tokio::join!(run(), run());
    a.expect("committed, after a retry if needed");
    b.expect("committed, after a retry if needed");
    let n: i32 = pool
        .get()
        .await
        .expect("get")
        .query_one("SELECT n FROM poolkit_tx_retry WHERE id = 1", &[])
        .await
        .expect("n")
        .get(0);
    assert_eq!(
        n, 2,
        "both increments landed: the loser was retried, not lost"
    );
    assert!(
        pool.telemetry().retries() >= 1,
        "the retry is counted (poolkit_retries_total)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_reads_the_server() {
    let pool = builder("budget")
        .pool_size(20)
        .min_idle(2)
        .build()
        .await
        .expect("build");
    let b = pool.budget(2).await.expect("budget");
    assert!(b.max_connections >= 20, "{b:?}");
    assert!(b.reserved >= 0 && b.in_use.total >= 2, "{b:?}");
    assert!(
        b.in_use
            .by_application
            .iter()
            .any(|(app, n)| app == &app_name("budget") && *n >= 2),
        "{b:?}"
    );
    assert_eq!(b.fits, 2 * 20 + b.reserved <= b.max_connections);
    assert_eq!(b.max_instances, (b.max_connections - b.reserved) / 20);
    let too_many = pool.budget(10_000).await.expect("budget");
    assert!(
        !too_many.fits && too_many.verdict.contains("T_BUDGET_POOL_SIZE"),
        "{}",
        too_many.verdict
    );
}
