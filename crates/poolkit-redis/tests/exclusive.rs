//! Exclusive checkout: blocking commands and transactions on connections of their own.

mod common;

use std::time::Duration;

use common::*;
use poolkit_redis::redis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_does_not_stall_shared_traffic() {
    let pool = shared_pool("t_block", 2).await;
    let list = format!("poolkit:block:{}", std::process::id());
    let blocker = {
        let (pool, list) = (pool.clone(), list.clone());
        tokio::spawn(async move {
            pool.with_exclusive(async |conn| {
                redis::cmd("BLPOP")
                    .arg(&list)
                    .arg(3)
                    .query_async::<Option<(String, String)>>(conn)
                    .await
            })
            .await
        })
    };
    // Wait until the BLPOP is really blocking in the server.
    loop {
        let clients: String = pool
            .query(redis::cmd("CLIENT").arg("LIST"))
            .await
            .expect("CLIENT LIST");
        if clients.contains("cmd=blpop") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..500 {
        let pong: String = pool
            .query(&redis::cmd("PING"))
            .await
            .expect("shared traffic flows");
        assert_eq!(pong, "PONG", "{i}");
    }
    assert!(
        !blocker.is_finished(),
        "the BLPOP is still blocked while 500 shared commands ran"
    );
    pool.query::<()>(redis::cmd("RPUSH").arg(&list).arg("job-1"))
        .await
        .expect("RPUSH");
    let popped = blocker.await.expect("task").expect("BLPOP");
    assert_eq!(popped, Some((list, "job-1".to_owned())));
    assert_eq!(pool.exclusive_stats().used, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_multi_exec_on_an_exclusive_connection() {
    let pool = shared_pool("t_tx", 2).await;
    let key = format!("poolkit:tx:{}", std::process::id());
    pool.query::<()>(redis::cmd("SET").arg(&key).arg(10))
        .await
        .expect("SET");
    let mut conn = pool.exclusive().await.expect("exclusive");
    redis::cmd("WATCH")
        .arg(&key)
        .query_async::<()>(&mut *conn)
        .await
        .expect("WATCH");
    let v: i64 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut *conn)
        .await
        .expect("GET");
    let (n,): (i64,) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&key)
        .arg(v * 2)
        .ignore()
        .cmd("INCR")
        .arg(&key)
        .query_async(&mut *conn)
        .await
        .expect("EXEC");
    assert_eq!(n, 21);
    drop(conn);
    pool.query::<()>(redis::cmd("DEL").arg(&key))
        .await
        .expect("DEL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_exhaustion_is_a_named_timeout() {
    let server = PrivateRedis::start(&[]);
    let pool = private_pool(&server, "t_exhaust", 1, Duration::from_millis(300)).await;
    let held = pool.exclusive().await.expect("first");
    let started = std::time::Instant::now();
    let err = pool.exclusive().await.expect_err("only one");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(280));
    let msg = err.to_string();
    assert!(
        msg.contains("t_exhaust_exclusive") && msg.contains("T_EXHAUST_POOL_SIZE"),
        "{msg}"
    );
    drop(held);
    pool.exclusive().await.expect("free again");
    // Shared traffic is unaffected by exclusive exhaustion.
    let held = pool.exclusive().await.expect("held");
    assert_eq!(
        pool.query::<String>(&redis::cmd("PING"))
            .await
            .expect("ping"),
        "PONG"
    );
    drop(held);
}
