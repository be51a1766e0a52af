//! Porting a tokio-postgres program to poolkit: only the connect lines change.
//!
//! ```text
//! // before                                              // after
//! let (client, conn) =                                   let pool = Pool::from_env().await?;
//!     tokio_postgres::connect(&url, NoTls).await?;       let mut client = pool.get().await?;
//! tokio::spawn(conn);
//! ```
//!
//! Everything below `connect` is ordinary tokio-postgres code: `prepare`, `&Statement`,
//! `&[&(dyn ToSql + Sync)]`, `query_one`/`query_opt`/`query_raw`, `transaction()`, uuid
//! and JSON values. Behind PgBouncer in transaction mode (`DATABASE_URL` on port 6432 or
//! 6543, or `?pgbouncer=true`) the same code runs without named prepared statements.
//!
//! Run: `cargo run --example port_tokio_postgres --features postgres-types`
//! (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`).

use futures_util::TryStreamExt;
use poolkit::postgres::tokio_postgres::types::ToSql;
use poolkit::postgres::{Pool, PooledConnection};
use poolkit_core::env::process_lookup;

/// The program's own code, written for `tokio_postgres::Client` and unchanged.
async fn work(
    client: &mut PooledConnection,
    table: &str,
) -> Result<usize, Box<dyn std::error::Error>> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id uuid PRIMARY KEY, doc jsonb, scores int8[])"
        ))
        .await?;
    let insert = client
        .prepare(&format!(
            "INSERT INTO {table} (id, doc, scores) VALUES ($1, $2, $3)"
        ))
        .await?;
    let mut ids = Vec::new();
    for (n, low) in (0..5i64).zip(1u64..) {
        let id = uuid::Uuid::from_u64_pair(7, low);
        let doc = serde_json::json!({ "n": n, "name": format!("item {n}") });
        let scores = vec![n, n * 10];
        let params: &[&(dyn ToSql + Sync)] = &[&id, &doc, &scores];
        client.execute(&insert, params).await?;
        ids.push(id);
    }
    let row = client
        .query_one(
            &format!("SELECT doc FROM {table} WHERE id = $1"),
            &[&ids[2]],
        )
        .await?;
    let doc: serde_json::Value = row.get(0);
    assert_eq!(doc["n"], 2);
    let missing = client
        .query_opt(
            &format!("SELECT 1 FROM {table} WHERE id = $1"),
            &[&uuid::Uuid::nil()],
        )
        .await?;
    assert!(missing.is_none());

    let tx = client.transaction().await?;
    tx.execute(
        &format!("UPDATE {table} SET scores = scores || $2 WHERE id = $1"),
        &[&ids[0], &vec![99i64]],
    )
    .await?;
    tx.commit().await?;

    let rows: Vec<_> = client
        .query_raw(
            &format!("SELECT id FROM {table} WHERE 99 = ANY(scores) OR id = ANY($1)"),
            [&ids as &(dyn ToSql + Sync)],
        )
        .await?
        .try_collect()
        .await?;
    client.batch_execute(&format!("DROP TABLE {table}")).await?;
    Ok(rows.len())
}

/// Runs the program against `url` with a pool called `name`.
pub(crate) async fn run(url: &str, name: &str) -> Result<usize, Box<dyn std::error::Error>> {
    let pool = Pool::builder().url(url).name(name).build().await?;
    let mut client = pool.get().await?;
    let table = format!("port_example_{name}_{}", std::process::id());
    let n = work(&mut client, &table).await?;
    let q = pool.stats().query;
    println!(
        "{name}: {n} rows; {} queries, average {:.2} ms, p95 {:.2} ms (pooler: {})",
        q.count,
        q.avg * 1e3,
        q.p95 * 1e3,
        client.pooler()
    );
    Ok(n)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = process_lookup("DATABASE_URL")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    run(&url, "port_example").await?;
    Ok(())
}
