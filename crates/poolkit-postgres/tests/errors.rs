//! Errors from the pool's own methods say what the server said: message, SQLSTATE and
//! detail, not just "db error".

mod common;

use poolkit_postgres::{Error, TxOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_statement_shows_the_servers_message_detail_and_sqlstate() {
    let pool = common::builder("errors").build().await.expect("pool");
    let table = format!("poolkit_err_{}", std::process::id());
    let conn = pool.get().await.expect("get");
    conn.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY)"
    ))
    .await
    .expect("create");
    drop(conn);
    let insert = format!("INSERT INTO {table} VALUES (1), (1)");
    let e = pool
        .transaction(TxOptions::default(), async |tx| {
            tx.execute(insert.as_str(), &[]).await?;
            Ok(())
        })
        .await
        .expect_err("duplicate key");
    let msg = e.to_string();
    assert!(matches!(e, Error::Backend(_)), "{e:?}");
    assert!(
        msg.contains("23505")
            && msg.contains("duplicate key value violates unique constraint")
            && msg.contains("detail: Key (id)=(1) already exists."),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    let conn = pool.get().await.expect("get");
    conn.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop");
}
