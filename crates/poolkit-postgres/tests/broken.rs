//! Connections killed by the server are never handed out again, and min idle comes back.
//! A session the server ends with 57P01 (`pg_terminate_backend`, or every session at a
//! shutdown) is one "server moved" event for the whole pool: every connection is retired
//! at once (`closed{reason="server_moved"}`), counted once in `errors{kind="server_moved"}`.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_are_not_handed_out_again() {
    let admin = admin().await;
    let pool = builder("killed")
        .pool_size(5)
        .min_idle(5)
        .build()
        .await
        .expect("build");
    assert_eq!(terminate(&admin, "killed").await, 5);
    // Give the client sockets a moment to see the server hang up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        let conn = pool
            .get()
            .await
            .expect("a fresh connection replaces each killed one");
        conn.simple_query("SELECT 1")
            .await
            .expect("never a dead connection");
        conns.push(conn);
    }
    drop(conns);
    let s = pool.stats();
    assert_eq!(s.closed_by("server_moved"), 5, "{s:?}");
    assert_eq!(
        s.errors_by("server_moved"),
        1,
        "one event, not one per connection"
    );
    assert!(s.created >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_while_checked_out_is_dropped_on_return() {
    let admin = admin().await;
    let pool = builder("killed_used")
        .pool_size(2)
        .min_idle(0)
        .build()
        .await
        .expect("build");
    let conn = pool.get().await.expect("get");
    terminate(&admin, "killed_used").await;
    assert!(
        conn.simple_query("SELECT 1").await.is_err(),
        "the backend is gone"
    );
    // The client marks itself closed when its connection task sees the socket end, a few
    // microseconds after the failed query; give that task a moment to run.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(conn);
    let conn = pool.get().await.expect("get");
    conn.simple_query("SELECT 1")
        .await
        .expect("a live connection");
    assert_eq!(pool.stats().closed_by("server_moved"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_is_restored_after_connections_close() {
    let admin = admin().await;
    let pool = builder("restore")
        .pool_size(6)
        .min_idle(3)
        .build()
        .await
        .expect("build");
    terminate(&admin, "restore").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    pool.get()
        .await
        .expect("get")
        .simple_query("SELECT 1")
        .await
        .expect("query");
    // At least min_idle idle connections again, every one of them a live backend.
    let restored = eventually(Duration::from_secs(5), || async {
        let s = pool.stats();
        s.idle >= 3 && u64::try_from(backends(&admin, "restore").await).unwrap_or(0) == s.open
    })
    .await;
    assert!(
        restored,
        "3 or more live idle connections again; stats {:?}, backends {}",
        pool.stats(),
        backends(&admin, "restore").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_pinged_only_after_the_threshold() {
    let admin = admin().await;
    let pool = builder("ping")
        .pool_size(1)
        .min_idle(1)
        .ping_if_idle(Duration::from_millis(300))
        .build()
        .await
        .expect("build");
    for _ in 0..50 {
        pool.get().await.expect("get");
    }
    let s = pool.stats();
    assert_eq!(
        (s.acquires, s.created),
        (50, 1),
        "no re-connects on fast reuse"
    );
    // A backend killed, but whose socket close the client has not yet noticed, is caught by
    // the ping once idle past the threshold.
    terminate(&admin, "ping").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let conn = pool.get().await.expect("get");
    conn.simple_query("SELECT 1")
        .await
        .expect("validated or replaced");
    assert_eq!(pool.stats().created, 2);
}
