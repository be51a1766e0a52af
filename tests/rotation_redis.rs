//! Rotating the Redis password with `REDIS_PASSWORD_FILE`: the server's `requirepass`
//! changed and the file swapped; connections re-opened after it log in with the new one.
//! A wrong new password: a caller that needs a new connection gets `PoolError::Credentials`
//! naming the file, health says so, and the connection already open keeps serving.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::{MARKER, PrivateRedis, TempDir};
use poolkit::redis::{Config, Pool, redis};
use poolkit_core::{HealthStatus, PasswordSource};

fn swap(path: &std::path::Path, content: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, content).expect("write");
    std::fs::rename(&aside, path).expect("swap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_file_is_read_at_every_connect() {
    let (old, new, wrong) = (
        format!("{MARKER}a"),
        format!("{MARKER}b"),
        format!("{MARKER}c"),
    );
    let server = PrivateRedis::start(&["--requirepass", &old]);
    let dir = TempDir::new("rotation-redis");
    let file = dir.0.join("redis-password");
    std::fs::write(&file, format!("{old}\n")).unwrap();
    let mut config = Config::new(server.url());
    config.pool.name = "rotation_redis".into();
    config.pool.prefix = "ROTATION_REDIS".into();
    config.pool.pool_size = 2;
    config.pool.acquire_timeout = Duration::from_millis(700);
    config.password = PasswordSource::File {
        path: file.clone(),
        var: "ROTATION_REDIS_PASSWORD_FILE".into(),
    };
    let pool = Pool::new(config)
        .await
        .expect("pool with the first password");
    pool.query::<()>(redis::cmd("SET").arg("rot").arg(1))
        .await
        .expect("SET");

    // Rotate: the server wants the new password, the file has it; the open connections
    // are dropped (as a server restart or a failover would) and reopen with it.
    server.cli(Some(&old), &["CONFIG", "SET", "requirepass", &new]);
    swap(&file, &new);
    server.cli(
        Some(&new),
        &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
    );
    let mut served_after = None;
    for i in 0..50 {
        if pool
            .query::<i64>(redis::cmd("INCR").arg("rot"))
            .await
            .is_ok()
        {
            served_after = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        served_after.is_some(),
        "no command served with the new password"
    );
    assert!(pool.reconnects() >= 1);

    // A wrong new password: the exclusive connection open now keeps serving.
    let mut held = pool.exclusive().await.expect("an exclusive connection");
    swap(&file, &wrong);
    let second = pool.exclusive().await;
    let e = second.expect_err("a new connection cannot log in");
    let msg = e.to_string();
    assert!(e.is_credentials(), "{e:?}");
    assert!(msg.contains("ROTATION_REDIS_PASSWORD_FILE="), "{msg}");
    redis::cmd("PING")
        .query_async::<()>(&mut held)
        .await
        .expect("the open connection serves");
    let h = pool.health();
    assert!(h.status >= HealthStatus::Warning, "{h:?}");
    assert!(
        h.alerts
            .iter()
            .any(|a| a.message.contains("ROTATION_REDIS_PASSWORD_FILE=")),
        "{:?}",
        h.alerts
    );
    println!(
        "FIGURES rotation_redis: served with the new password after {} retries of 20 ms; wrong password: {msg}",
        served_after.unwrap_or_default()
    );
    for shown in [
        msg,
        format!("{e:?}"),
        format!("{h:?}"),
        format!("{pool:?}"),
        format!("{:?}", pool.config()),
    ] {
        assert!(!shown.contains(MARKER), "a secret shown: {shown}");
    }
}
