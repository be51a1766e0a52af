//! redis-rs code runs unchanged on the shared path: `AsyncCommands`, `Cmd::query_async`
//! and pipelines on the pool itself, with query timing by command.

mod common;

use std::time::Duration;

use poolkit_redis::redis::{self, AsyncCommands};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_commands_and_pipelines_run_on_the_shared_pool_at_1000_tasks() {
    let pool = common::shared_pool("redis_commands", 2).await;
    let prefix = format!("poolkit:commands:{}", std::process::id());
    let mut handles = Vec::new();
    for t in 0..1000u32 {
        // A clone is the cheap `mut` handle AsyncCommands needs, as with ConnectionManager.
        let mut con = pool.clone();
        let key = format!("{prefix}:{t}");
        handles.push(tokio::spawn(async move {
            let () = con.set_ex(&key, t, 60).await?;
            let got: u32 = con.get(&key).await?;
            assert_eq!(got, t);
            let n: u32 = con.incr(&key, 1).await?;
            assert_eq!(n, t + 1);
            let () = con.hset(format!("{key}:h"), "field", "v").await?;
            let h: std::collections::HashMap<String, String> =
                con.hgetall(format!("{key}:h")).await?;
            assert_eq!(h.get("field").map(String::as_str), Some("v"));
            let (a, b): (u32, String) = redis::pipe()
                .get(&key)
                .hget(format!("{key}:h"), "field")
                .query_async(&mut con)
                .await?;
            assert_eq!((a, b.as_str()), (t + 1, "v"));
            let (x,): (u32,) = redis::pipe()
                .atomic()
                .incr(&key, 1)
                .ignore()
                .get(&key)
                .query_async(&mut con)
                .await?;
            assert_eq!(x, t + 2);
            let deleted: u32 = redis::cmd("DEL")
                .arg(&key)
                .arg(format!("{key}:h"))
                .query_async(&mut con)
                .await?;
            assert_eq!(deleted, 2);
            Ok::<(), redis::RedisError>(())
        }));
    }
    for h in handles {
        h.await
            .expect("the task did not panic")
            .expect("commands succeed");
    }
    let stats = pool.stats();
    // 8 calls per task, each timed once (pipelines as one `pipeline` operation).
    assert!(stats.query.count >= 8000, "{:?}", stats.query);
    assert!(
        stats.query.avg > 0.0 && stats.query.p95 > 0.0,
        "{:?}",
        stats.query
    );
    assert_eq!(stats.timeouts, 0);
    assert_eq!(redis::aio::ConnectionLike::get_db(&pool), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_errors_reach_async_commands_as_redis_errors_and_slow_commands_are_counted() {
    let server = common::PrivateRedis::start(&["--enable-debug-command", "yes"]);
    let mut config = poolkit_redis::Config::new(server.url());
    config.pool.name = "redis_slow".into();
    config.pool.prefix = "REDIS_SLOW".into();
    config.pool.slow_query = Some(Duration::from_millis(50));
    let pool = poolkit_redis::Pool::new(config).await.expect("pool");
    let mut con = pool.clone();
    let () = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg("0.1")
        .query_async(&mut con)
        .await
        .expect("DEBUG SLEEP");
    let _: Option<String> = con.get("k").await.expect("get");
    let q = pool.stats().query;
    assert_eq!((q.count, q.slow), (2, 1), "{q:?}");

    pool.close();
    let err = con.get::<_, Option<String>>("k").await.expect_err("closed");
    assert!(err.to_string().contains("closed"), "{err}");
}
