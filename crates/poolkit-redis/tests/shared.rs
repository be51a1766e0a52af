//! Shared (multiplexed) mode against the real Redis.

mod common;

use std::time::Duration;

use common::*;
use poolkit_redis::redis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_round_trip_and_stats_add_up() {
    let pool = shared_pool("t_shared", 2).await;
    let key = format!("poolkit:test:{}", std::process::id());
    pool.query::<()>(redis::cmd("SET").arg(&key).arg(41))
        .await
        .expect("SET");
    let n: i64 = pool
        .query(redis::cmd("INCR").arg(&key))
        .await
        .expect("INCR");
    assert_eq!(n, 42);
    let mut handles = Vec::new();
    for i in 0..1000 {
        let (pool, key) = (pool.clone(), key.clone());
        handles.push(tokio::spawn(async move {
            let v: i64 = pool.query(redis::cmd("GET").arg(&key)).await.expect("GET");
            assert_eq!(v, 42, "task {i}");
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let (a, b): (i64, i64) = pool
        .pipe(redis::pipe().cmd("INCR").arg(&key).cmd("INCR").arg(&key))
        .await
        .expect("pipeline");
    assert_eq!((a, b), (43, 44));
    pool.query::<()>(redis::cmd("DEL").arg(&key))
        .await
        .expect("DEL");
    let s = pool.stats();
    assert_eq!(s.acquires, 1004, "SET + INCR + 1000 GET + pipeline + DEL");
    assert_eq!(
        (s.used, s.pending, s.open, s.timeouts),
        (0, 0, 2, 0),
        "{s:?}"
    );
    // `/pools` shows what Prometheus shows: 2 sockets, nothing in flight, so 2 idle
    // (poolkit_connections{state="idle"} is open less in flight too).
    assert_eq!(s.idle, 2, "{s:?}");
    assert_eq!(s.backend, "redis");
    assert!(pool.ping().await.expect("ping") < Duration::from_secs(1));
    let names: Vec<String> = poolkit_core::pools()
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    assert!(
        names.contains(&"t_shared".to_owned()) && names.contains(&"t_shared_exclusive".to_owned()),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_command_is_a_backend_error_not_a_broken_connection() {
    let pool = shared_pool("t_badcmd", 1).await;
    let err = pool
        .query::<()>(&redis::cmd("NOSUCHCOMMAND"))
        .await
        .expect_err("unknown command");
    assert!(matches!(err, poolkit_redis::Error::Backend(_)), "{err}");
    let pong: String = pool
        .query(&redis::cmd("PING"))
        .await
        .expect("the connection still works");
    assert_eq!(pong, "PONG");
    let s = pool.stats();
    assert_eq!((s.errors_by("request"), s.closed_by("broken")), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_client_kill() {
    let server = PrivateRedis::start(&[]);
    let pool = private_pool(&server, "t_kill", 2, Duration::from_secs(5)).await;
    pool.query::<()>(redis::cmd("SET").arg("k").arg("v"))
        .await
        .expect("SET");
    let killed = server.cli(None, &["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(
        killed.trim().parse::<u32>().unwrap_or(0) >= 2,
        "killed: {killed}"
    );
    // Commands may fail once per dropped socket; then the pool has reconnected.
    let mut failures = 0;
    for _ in 0..50 {
        match pool.query::<String>(redis::cmd("GET").arg("k")).await {
            Ok(v) => assert_eq!(v, "v"),
            Err(e) => {
                failures += 1;
                assert!(matches!(e, poolkit_redis::Error::Backend(_)), "{e}");
            }
        }
    }
    assert!(failures <= 2, "{failures} failures after the kill");
    let s = pool.stats();
    assert_eq!(s.open, 2, "{s:?}");
    assert!(
        pool.reconnects() >= 1 && s.closed_by("broken") >= 1,
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_a_server_restart_and_fails_fast_with_typed_errors_meanwhile() {
    let mut server = PrivateRedis::start(&[]);
    let pool = private_pool(&server, "t_restart", 2, Duration::from_millis(800)).await;
    pool.query::<()>(redis::cmd("SET").arg("k").arg("v"))
        .await
        .expect("SET");
    // Both sockets open before the restart (the pool is ready with one; on a busy machine
    // the second may still be connecting, and its first open is not a reconnect).
    until_open(&pool, 2).await;
    server.stop();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let err = pool
            .query::<String>(redis::cmd("GET").arg("k"))
            .await
            .expect_err("server is down");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by the pool timeout: {:?}",
            started.elapsed()
        );
        assert!(
            err.is_connect() || err.is_timeout() || matches!(err, poolkit_redis::Error::Backend(_)),
            "{err}"
        );
    }
    server.up();
    let back = async {
        loop {
            if pool
                .query::<()>(redis::cmd("SET").arg("k").arg("again"))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), back)
        .await
        .expect("serves again within 5 s of the restart");
    let all_back = async {
        while pool.stats().open < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), all_back)
        .await
        .expect("both shared sockets reconnect");
    assert!(pool.reconnects() >= 2, "both sockets reconnected");
    assert!(
        pool.stats().errors_by("connect") >= 1,
        "failed reconnects during the outage are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_a_connect_error_naming_the_target() {
    let port = free_port();
    let mut config = poolkit_redis::Config::new(format!("redis://:pw_marker@127.0.0.1:{port}"));
    config.pool.acquire_timeout = Duration::from_secs(2);
    let err = poolkit_redis::Pool::new(config)
        .await
        .expect_err("nothing listens");
    let msg = err.to_string();
    assert!(err.is_connect(), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(
        !msg.contains("pw_marker") && !format!("{err:?}").contains("pw_marker"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_never_shows_the_password() {
    let server = PrivateRedis::start(&["--requirepass", "right_pw_marker"]);
    let mut config = poolkit_redis::Config::new(format!(
        "redis://:wrong_pw_marker@127.0.0.1:{}",
        server.port
    ));
    config.pool.acquire_timeout = Duration::from_secs(2);
    let err = poolkit_redis::Pool::new(config)
        .await
        .expect_err("bad password");
    let text = format!("{err} {err:?}");
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(!text.contains("pw_marker"), "{text}");
    let mut config = poolkit_redis::Config::new(format!(
        "redis://:right_pw_marker@127.0.0.1:{}",
        server.port
    ));
    config.pool.name = "t_auth".into();
    let pool = poolkit_redis::Pool::new(config)
        .await
        .expect("right password");
    assert!(!format!("{pool:?} {:?}", pool.config()).contains("pw_marker"));
    assert_eq!(
        pool.query::<String>(&redis::cmd("PING"))
            .await
            .expect("ping"),
        "PONG"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_cap_queues_callers_and_times_out_by_name() {
    let server = PrivateRedis::start(&["--enable-debug-command", "yes"]);
    let mut config = poolkit_redis::Config::new(server.url());
    config.pool.name = "t_cap".into();
    config.pool.prefix = "T_CAP".into();
    config.pool.pool_size = 1;
    config.max_in_flight = 1;
    config.pool.acquire_timeout = Duration::from_millis(300);
    let pool = poolkit_redis::Pool::new(config).await.expect("pool");
    let slow = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.query::<()>(redis::cmd("DEBUG").arg("SLEEP").arg("0.8"))
                .await
        })
    };
    while pool.stats().used == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    let err = pool
        .query::<String>(&redis::cmd("PING"))
        .await
        .expect_err("the only place is taken");
    assert!(
        started.elapsed() >= Duration::from_millis(280),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("T_CAP_MAX_IN_FLIGHT"), "{err}");
    slow.await.expect("task").expect("DEBUG SLEEP");
    assert_eq!(
        pool.query::<String>(&redis::cmd("PING"))
            .await
            .expect("room again"),
        "PONG"
    );
    let s = pool.stats();
    assert_eq!((s.timeouts, s.used, s.pending), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_commands_leave_no_place_taken() {
    let server = PrivateRedis::start(&["--enable-debug-command", "yes"]);
    let mut config = poolkit_redis::Config::new(server.url());
    config.pool.name = "t_cancel".into();
    config.pool.pool_size = 1;
    config.max_in_flight = 4;
    config.pool.acquire_timeout = Duration::from_secs(2);
    let pool = poolkit_redis::Pool::new(config).await.expect("pool");
    // 200 callers give up at random points: while waiting for room, or mid-command.
    let mut handles = Vec::new();
    for i in 0..200u64 {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            let cut = Duration::from_micros(200 + (i * 7919) % 20_000);
            tokio::time::timeout(
                cut,
                pool.query::<()>(redis::cmd("DEBUG").arg("SLEEP").arg("0.01")),
            )
            .await
            .ok();
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    // The server may still be sleeping through commands already sent; then all is free.
    let free = async {
        loop {
            let s = pool.stats();
            if s.used == 0 && s.pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), free)
        .await
        .expect("used and pending return to 0");
    let pongs = futures_join(&pool, 4).await;
    assert_eq!(pongs, 4, "the full in-flight cap serves again");
}

async fn futures_join(pool: &poolkit_redis::Pool, n: usize) -> usize {
    let mut handles = Vec::new();
    for _ in 0..n {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            pool.query::<String>(&redis::cmd("PING")).await
        }));
    }
    let mut ok = 0;
    for h in handles {
        if h.await.expect("task").is_ok() {
            ok += 1;
        }
    }
    ok
}
