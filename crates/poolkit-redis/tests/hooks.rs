//! Hooks around a connection's life, the same three as the PostgreSQL pool's
//! (`after_connect`, `before_acquire`, `after_release`), against the real Redis.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use common::redis_url;
use poolkit_redis::{Builder, Pool, redis};

fn builder(name: &str) -> Builder {
    Pool::builder()
        .url(redis_url())
        .name(name)
        .pool_size(1)
        .min_idle(0)
        .acquire_timeout(Duration::from_secs(5))
}

/// The name the server knows this connection by (`CLIENT GETNAME`).
async fn client_name(conn: &mut redis::aio::MultiplexedConnection) -> Option<String> {
    redis::cmd("CLIENT")
        .arg("GETNAME")
        .query_async(conn)
        .await
        .expect("CLIENT GETNAME")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_connect_sets_up_shared_and_exclusive_connections_and_its_error_discards_them() {
    let name = format!("poolkit-hook-{}", std::process::id());
    let setname = name.clone();
    let pool = builder("t_hook_connect")
        .after_connect(move |c| {
            let cmd = redis::cmd("CLIENT").arg("SETNAME").arg(&setname).clone();
            Box::pin(async move { cmd.query_async::<()>(c).await })
        })
        .build()
        .await
        .expect("pool");
    let shared: Option<String> = pool
        .query(redis::cmd("CLIENT").arg("GETNAME"))
        .await
        .expect("shared CLIENT GETNAME");
    assert_eq!(
        shared.as_deref(),
        Some(name.as_str()),
        "the shared connection"
    );
    let mut conn = pool.exclusive().await.expect("exclusive");
    assert_eq!(client_name(&mut conn).await.as_deref(), Some(name.as_str()));
    drop(conn);

    // A hook that fails: the connection never serves, and the caller is told why, at once
    // for the build (the shared connections) and for an exclusive checkout.
    let fail = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&fail);
    let pool = builder("t_hook_connect_err")
        .acquire_timeout(Duration::from_millis(500))
        .after_connect(move |c| {
            let cmd = if flag.load(SeqCst) {
                redis::cmd("NO_SUCH_COMMAND_FOR_POOLKIT")
            } else {
                redis::cmd("PING")
            };
            Box::pin(async move { cmd.query_async::<()>(c).await })
        })
        .build()
        .await
        .expect("the hook passes at build");
    fail.store(true, SeqCst);
    let e = pool
        .exclusive()
        .await
        .expect_err("the hook fails every connect");
    assert!(e.to_string().contains("NO_SUCH_COMMAND_FOR_POOLKIT"), "{e}");
    assert_eq!(
        pool.exclusive_stats().open,
        0,
        "no connection joined the pool"
    );
    fail.store(false, SeqCst);
    pool.exclusive().await.expect("the hook passes now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_acquire_and_after_release_can_refuse_an_exclusive_connection() {
    let checks = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&checks);
    // Set while a connection is left in a state the next caller must not see.
    let tainted = Arc::new(AtomicBool::new(false));
    let taint = Arc::clone(&tainted);
    let pool = builder("t_hook_acquire")
        // The first check refuses: the caller still gets a connection, a new one.
        .before_acquire(move |c| {
            let n = seen.fetch_add(1, SeqCst);
            Box::pin(async move { n > 0 && redis::cmd("PING").query_async::<()>(c).await.is_ok() })
        })
        // A connection left in a state the next caller must not see is not reused.
        .after_release(move |_| !taint.load(SeqCst))
        .build()
        .await
        .expect("pool");
    let first_id: i64 = {
        let mut conn = pool.exclusive().await.expect("exclusive");
        redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut *conn)
            .await
            .expect("CLIENT ID")
    };
    assert_eq!(
        checks.load(SeqCst),
        2,
        "the first check refused, the second passed"
    );
    let s = pool.exclusive_stats();
    assert_eq!(s.closed_by("rejected"), 1, "{s:?}");

    // Back in the pool and passing its check: the same connection serves again.
    let again: i64 = {
        let mut conn = pool.exclusive().await.expect("exclusive");
        let id = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut *conn)
            .await
            .expect("CLIENT ID");
        // Switched to another database: refused at release.
        redis::cmd("SELECT")
            .arg(1)
            .query_async::<()>(&mut *conn)
            .await
            .expect("SELECT 1");
        tainted.store(true, SeqCst);
        id
    };
    let after = pool.exclusive_stats();
    assert_eq!(
        again, first_id,
        "the connection that passed its check was reused"
    );
    assert_eq!(
        after.closed_by("rejected"),
        2,
        "the release hook closed the connection: {after:?}"
    );
    assert_eq!((after.used, after.open), (0, 0), "{after:?}");
    tainted.store(false, SeqCst);
    let mut conn = pool.exclusive().await.expect("a new connection");
    let db: i64 = redis::cmd("CLIENT")
        .arg("INFO")
        .query_async::<String>(&mut *conn)
        .await
        .expect("CLIENT INFO")
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("db=").and_then(|v| v.parse().ok()))
        .expect("db= in CLIENT INFO");
    assert_eq!(db, 0, "the next caller does not inherit SELECT 1");
}
