//! tokio-postgres code compiles and runs unchanged on pooled connections: every call
//! shape, every supported type, directly and through the real PgBouncer in transaction
//! mode at 1000 tasks, with no named statement outliving its transaction.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures_util::TryStreamExt;
use poolkit_core::env::process_lookup;
use poolkit_postgres::tokio_postgres::types::{ToSql, Type};
use poolkit_postgres::{Pool, Pooler, PoolerRefusal, tokio_postgres};
use serde_json::json;
use uuid::Uuid;

fn pgbouncer_url() -> String {
    process_lookup("PGBOUNCER_URL")
        .unwrap_or_else(|| "postgres://poolkit:poolkit_test@127.0.0.1:6432/test".to_owned())
}

const COLUMNS: &str = "id, u, ts, nts, d, ots, j, arr, tarr, b, i2, f, s, by, maybe";

/// A table with one column per supported type, owned by the PgBouncer user too.
async fn table(name: &str) -> String {
    let admin = common::admin().await;
    let table = format!("compat_{name}_{}", std::process::id());
    admin
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (id int8 PRIMARY KEY, u uuid, ts timestamptz, nts timestamp,
               d date, ots timestamptz, j jsonb, arr int8[], tarr text[], b bool, i2 int2,
               f float8, s text, by bytea, maybe int4);
             GRANT ALL ON {table} TO PUBLIC;"
        ))
        .await
        .expect("create the table");
    table
}

async fn pool(name: &str, url: &str, pooler: Pooler) -> Pool {
    Pool::builder()
        .url(url)
        .name(name)
        .pooler(pooler)
        .pool_size(20)
        .min_idle(0)
        .acquire_timeout(Duration::from_secs(60))
        .build()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach {} ({e}); start it with scripts/services.sh",
                poolkit_core::redact_url(url)
            )
        })
}

/// What one task writes and reads back: one value of every supported type.
fn values(
    id: i64,
) -> (
    Uuid,
    DateTime<Utc>,
    NaiveDateTime,
    time::Date,
    time::OffsetDateTime,
) {
    let u = Uuid::from_u64_pair(0x5eed, u64::try_from(id).unwrap_or(0));
    let ts = DateTime::from_timestamp(1_700_000_000 + id, 0).expect("a valid timestamp");
    let nts = NaiveDate::from_ymd_opt(2024, 2, 29)
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .expect("a valid date");
    let d = time::Date::from_calendar_date(2025, time::Month::March, 1).expect("a valid date");
    let ots = time::OffsetDateTime::from_unix_timestamp(1_600_000_000 + id).expect("valid");
    (u, ts, nts, d, ots)
}

/// The ordinary tokio-postgres program: every call shape on a pooled connection.
async fn one_task(pool: Pool, table: Arc<str>, id: i64) -> Result<(), tokio_postgres::Error> {
    let mut conn = pool.get().await.expect("a connection within the timeout");
    let (u, ts, nts, d, ots) = values(id);
    let j = json!({"id": id, "tags": ["a", "b"]});
    let arr: Vec<i64> = vec![id, id + 1, id + 2];
    let tarr: Vec<String> = vec!["x".into(), format!("t{id}")];
    let by: Vec<u8> = vec![0, 1, 2, 255];
    let maybe: Option<i32> = None;
    // A `&[&(dyn ToSql + Sync)]` slice, built once and passed around.
    let params: &[&(dyn ToSql + Sync)] = &[
        &id, &u, &ts, &nts, &d, &ots, &j, &arr, &tarr, &true, &7i16, &1.5f64, &"text", &by, &maybe,
    ];
    let insert = format!(
        "INSERT INTO {table} ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)"
    );
    assert_eq!(conn.execute(insert.as_str(), params).await?, 1);

    // A prepared statement (`&Statement`), then query_one / query_opt / query.
    let select = conn
        .prepare(&format!("SELECT {COLUMNS} FROM {table} WHERE id = $1"))
        .await?;
    assert_eq!(select.params(), &[Type::INT8]);
    let row = conn.query_one(&select, &[&id]).await?;
    assert_eq!(row.get::<_, Uuid>("u"), u);
    assert_eq!(row.get::<_, DateTime<Utc>>("ts"), ts);
    assert_eq!(row.get::<_, NaiveDateTime>("nts"), nts);
    assert_eq!(row.get::<_, time::Date>("d"), d);
    assert_eq!(row.get::<_, time::OffsetDateTime>("ots"), ots);
    assert_eq!(row.get::<_, serde_json::Value>("j"), j);
    assert_eq!(row.get::<_, Vec<i64>>("arr"), arr);
    assert_eq!(row.get::<_, Vec<String>>("tarr"), tarr);
    assert!(row.get::<_, bool>("b"));
    assert_eq!(row.get::<_, i16>("i2"), 7);
    assert_eq!(row.get::<_, Vec<u8>>("by"), by);
    assert_eq!(row.get::<_, Option<i32>>("maybe"), None);
    assert!(conn.query_opt(&select, &[&-id]).await?.is_none());
    let by_uuid = conn
        .query(
            &format!("SELECT id FROM {table} WHERE u = $1 AND ts = $2 AND $3 = ANY(arr)"),
            &[&u, &ts, &(id + 1)],
        )
        .await?;
    assert_eq!(by_uuid.len(), 1);

    // query_raw with an iterator of parameters.
    let stream = conn
        .query_raw(
            &format!("SELECT id FROM {table} WHERE id = $1 AND tarr = $2"),
            [&id as &(dyn ToSql + Sync), &tarr],
        )
        .await?;
    let rows: Vec<tokio_postgres::Row> = stream.try_collect().await?;
    assert_eq!(rows.len(), 1);

    // A transaction, in the same dialect; the statement prepared outside runs inside.
    let tx = conn.transaction().await?;
    let j2 = json!({"id": id, "updated": true});
    tx.execute(
        format!("UPDATE {table} SET j = $2, maybe = $3 WHERE id = $1").as_str(),
        &[&id, &j2, &Some(1i32)],
    )
    .await?;
    let inside = tx
        .prepare_typed(
            &format!("SELECT j FROM {table} WHERE id = $1"),
            &[Type::INT8],
        )
        .await?;
    assert_eq!(
        tx.query_one(&inside, &[&id])
            .await?
            .get::<_, serde_json::Value>(0),
        j2
    );
    assert!(tx.query_opt(&select, &[&id]).await?.is_some());
    tx.commit().await?;

    let tx = conn
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    assert_eq!(
        tx.query_one(&inside, &[&id])
            .await?
            .get::<_, serde_json::Value>(0),
        j2
    );
    tx.rollback().await?;
    Ok(())
}

async fn run_all(pool: &Pool, table: &str, tasks: i64) {
    let table: Arc<str> = table.into();
    let mut handles = Vec::new();
    for id in 1..=tasks {
        handles.push(tokio::spawn(one_task(pool.clone(), Arc::clone(&table), id)));
    }
    let mut errors = Vec::new();
    for h in handles {
        if let Err(e) = h.await.expect("the task did not panic") {
            errors.push(format!("{e:?}"));
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {tasks} failed, first: {}",
        errors.len(),
        errors[0]
    );
    let s = pool.stats();
    assert!(
        s.query.count >= u64::try_from(tasks * 8).unwrap_or(0),
        "{:?}",
        s.query
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_code_runs_through_pgbouncer_in_transaction_mode_at_1000_tasks() {
    let table = table("bouncer").await;
    let pool = pool("compat_bouncer", &pgbouncer_url(), Pooler::Transaction).await;
    run_all(&pool, &table, 1000).await;

    // No named statement was left behind: every server connection PgBouncer holds has
    // none. Each open transaction pins a different server connection.
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(pool.get().await.expect("a connection"));
    }
    let mut txs = Vec::new();
    for c in &mut conns {
        txs.push(c.transaction().await.expect("BEGIN"));
    }
    for tx in &txs {
        let left: i64 = tx
            .query_one(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE $1",
                &[&format!("%{table}%")],
            )
            .await
            .expect("pg_prepared_statements")
            .get(0);
        // (Other clients' leftovers may be there: only ours are counted.)
        assert_eq!(
            left, 0,
            "a named statement of ours outlived its transaction"
        );
    }
    drop(txs);

    // A raw tokio_postgres::Statement cannot be made safe there: a clear error, at once.
    let conn = &conns[0];
    let raw = (**conn).prepare("SELECT 1").await;
    if let Ok(raw) = raw {
        let err = conn.query(&raw, &[]).await.expect_err("refused");
        let why = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<PoolerRefusal>())
            .expect("a PoolerRefusal source");
        assert!(why.to_string().contains("prepare()"), "{why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_code_runs_directly_with_named_statements() {
    let table = table("direct").await;
    let pool = pool("compat_direct", &common::database_url(), Pooler::None).await;
    run_all(&pool, &table, 200).await;
    let conn = pool.get().await.expect("a connection");
    let st = conn.prepare("SELECT $1::int4 + 1").await.expect("prepare");
    assert!(
        st.as_named().is_some(),
        "directly, prepare() is a named statement"
    );
    let raw = (*conn)
        .prepare("SELECT $1::int4 * 2")
        .await
        .expect("prepare");
    assert_eq!(
        conn.query_one(&raw, &[&21i32])
            .await
            .expect("raw")
            .get::<_, i32>(0),
        42
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_timed_by_operation_and_slow_ones_counted() {
    let pool = common::builder("query_timing")
        .slow_query(Some(Duration::from_millis(50)))
        .build()
        .await
        .expect("pool");
    let conn = pool.get().await.expect("a connection");
    for i in 0..20i32 {
        let row = conn
            .query_one("SELECT $1::int4", &[&i])
            .await
            .expect("select");
        assert_eq!(row.get::<_, i32>(0), i);
    }
    conn.execute("SELECT pg_sleep(0.1)", &[])
        .await
        .expect("sleep");
    drop(conn);
    let q = pool.stats().query;
    assert_eq!((q.count, q.slow), (21, 1), "{q:?}");
    assert!(q.avg > 0.1 / 21.0 && q.avg < 0.1, "{q:?}");
    assert!(q.p95 > 0.0 && q.p95 < 0.1, "{q:?}");
    let health = pool.health();
    assert_eq!(health.query_performance.status, "ok", "{health:?}");
    assert_eq!(health.query_performance.count, 21);
}
