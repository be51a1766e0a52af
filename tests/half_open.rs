//! Half-open connections: a pooled connection whose peer vanished without a FIN (a TCP
//! proxy freezes it: bytes are swallowed both ways, nothing is closed). The next checkout
//! that pings it gives up after `P_PING_TIMEOUT`, closes it and serves the caller from a
//! new connection, well within the acquire timeout. Also: pooled PostgreSQL and Redis
//! sockets run TCP keep-alive with poolkit's 60 s idle time (read from `/proc/net/tcp`).
#![cfg(all(feature = "postgres", feature = "redis"))]

mod common;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::{FreezingProxy, database_url, keepalive_timers, redis_url};

const PING_TIMEOUT: Duration = Duration::from_millis(200);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// The shared PostgreSQL's address, user and database, from `DATABASE_URL`.
fn postgres() -> (SocketAddr, String, String) {
    let pg = tokio_postgres::Config::from_str(&database_url()).expect("DATABASE_URL parses");
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) if h != "localhost" => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let addr = format!("{host}:{port}")
        .parse()
        .expect("DATABASE_URL names an IP address");
    (
        addr,
        pg.get_user().unwrap_or("postgres").to_owned(),
        pg.get_dbname().unwrap_or("test").to_owned(),
    )
}

fn redis_addr() -> SocketAddr {
    let url = redis_url();
    let hostport = url
        .trim_start_matches("redis://")
        .split(['/', '?'])
        .next()
        .unwrap_or("127.0.0.1:6379");
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    hostport
        .parse()
        .expect("REDIS_URL names an IP address and port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_postgres_connection_costs_the_ping_timeout_not_the_acquire_timeout() {
    let (upstream, user, db) = postgres();
    let proxy = FreezingProxy::start(upstream).await;
    let pool = poolkit::postgres::Pool::builder()
        .url(format!("postgres://{user}@127.0.0.1:{}/{db}", proxy.port))
        .name("half_open_pg")
        .pool_size(1)
        .min_idle(1)
        .ping_if_idle(Duration::ZERO) // every checkout pings
        .ping_timeout(PING_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .build()
        .await
        .expect("pool through the proxy");
    pool.get()
        .await
        .expect("get")
        .simple_query("SELECT 1")
        .await
        .expect("warm");
    assert_eq!(proxy.freeze_all(), 1);
    let asked = Instant::now();
    let conn = pool.get().await.expect("served by a new connection");
    let took = asked.elapsed();
    conn.simple_query("SELECT 1")
        .await
        .expect("the new connection works");
    let s = pool.stats();
    println!(
        "FIGURES half_open postgres: checkout served in {took:.0?} (P_PING_TIMEOUT {PING_TIMEOUT:?}, acquire timeout {ACQUIRE_TIMEOUT:?}); closed invalid {}, health_check errors {}, connections through the proxy {}",
        s.closed_by("invalid"),
        s.errors_by("health_check"),
        proxy.accepted.load(std::sync::atomic::Ordering::SeqCst),
    );
    assert!(
        took >= PING_TIMEOUT && took < PING_TIMEOUT + Duration::from_millis(600),
        "served after {took:?}"
    );
    assert_eq!(
        (s.closed_by("invalid"), s.errors_by("health_check")),
        (1, 1),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_exclusive_connection_costs_the_ping_timeout() {
    let proxy = FreezingProxy::start(redis_addr()).await;
    let mut config = poolkit::redis::Config::new(format!("redis://127.0.0.1:{}", proxy.port));
    config.pool.name = "half_open_redis".into();
    config.pool.prefix = "HALF_OPEN_REDIS".into();
    config.pool.pool_size = 1;
    config.pool.ping_if_idle = Duration::ZERO;
    config.pool.ping_timeout = Some(PING_TIMEOUT);
    config.pool.acquire_timeout = ACQUIRE_TIMEOUT;
    let pool = poolkit::redis::Pool::new(config)
        .await
        .expect("pool through the proxy");
    {
        let mut conn = pool.exclusive().await.expect("exclusive");
        poolkit::redis::redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .expect("warm");
    }
    assert!(
        proxy.freeze_all() >= 2,
        "the shared and the exclusive connection"
    );
    let asked = Instant::now();
    let mut conn = pool.exclusive().await.expect("served by a new connection");
    let took = asked.elapsed();
    poolkit::redis::redis::cmd("PING")
        .query_async::<()>(&mut conn)
        .await
        .expect("the new connection works");
    let s = pool.exclusive_stats();
    println!(
        "FIGURES half_open redis exclusive: checkout served in {took:.0?} (P_PING_TIMEOUT {PING_TIMEOUT:?}, acquire timeout {ACQUIRE_TIMEOUT:?}); closed invalid {}, health_check errors {}",
        s.closed_by("invalid"),
        s.errors_by("health_check"),
    );
    assert!(
        took >= PING_TIMEOUT && took < PING_TIMEOUT + Duration::from_millis(600),
        "served after {took:?}"
    );
    assert_eq!(
        (s.closed_by("invalid"), s.errors_by("health_check")),
        (1, 1),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sockets_run_tcp_keepalive() {
    // Through proxies of their own, so that only this test's sockets go to these ports.
    let (pg_upstream, user, db) = postgres();
    let pg_proxy = FreezingProxy::start(pg_upstream).await;
    let redis_proxy = FreezingProxy::start(redis_addr()).await;
    let pg = poolkit::postgres::Pool::builder()
        .url(format!(
            "postgres://{user}@127.0.0.1:{}/{db}",
            pg_proxy.port
        ))
        .name("keepalive_pg")
        .pool_size(2)
        .min_idle(2)
        .build()
        .await
        .expect("postgres pool");
    let mut config = poolkit::redis::Config::new(format!("redis://127.0.0.1:{}", redis_proxy.port));
    config.pool.name = "keepalive_redis".into();
    config.pool.prefix = "KEEPALIVE_REDIS".into();
    config.pool.pool_size = 2;
    let redis = poolkit::redis::Pool::new(config).await.expect("redis pool");
    let _exclusive = redis.exclusive().await.expect("exclusive");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pg_timers = keepalive_timers(pg_proxy.port);
    let redis_timers = keepalive_timers(redis_proxy.port);
    println!(
        "FIGURES half_open keepalive: seconds to the next keep-alive probe: postgres {pg_timers:?}, redis {redis_timers:?} (P_TCP_KEEPALIVE 60 s)"
    );
    for (what, timers, open) in [("postgres", &pg_timers, 2), ("redis", &redis_timers, 3)] {
        assert_eq!(timers.len(), open, "{what}: the pool's sockets: {timers:?}");
        for t in timers {
            let t = t.unwrap_or_else(|| {
                panic!("{what}: a socket without a keep-alive timer: {timers:?}")
            });
            assert!(
                t > 50.0 && t <= 60.0,
                "{what}: next probe in {t} s, expected about 60 s"
            );
        }
    }
    drop((pg, redis));
}
