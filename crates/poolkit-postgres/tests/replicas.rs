//! Read replicas: routing, fallback to the primary while every replica is down, return;
//! a replica that is up but exhausted fails the read with its own timeout (no fallback).

mod common;

use std::time::{Duration, Instant};

use common::*;
use poolkit_postgres::{Config, Pool};

async fn server_port(pool: &Pool, read: bool) -> i32 {
    let conn = if read {
        pool.read().await
    } else {
        pool.write().await
    }
    .expect("connection");
    let row = conn
        .query_one("SELECT current_setting('port')::int4", &[])
        .await
        .expect("port");
    row.get(0)
}

/// A private cluster as the replica of the shared server (`DATABASE_READ_URL`), and a pool
/// named `name` of `size` connections with `timeout` on both.
async fn primary_and_replica(
    cluster: &str,
    name: &str,
    size: &str,
    timeout: &str,
) -> (PrivateCluster, Pool) {
    let replica = PrivateCluster::start(cluster, "", |_| {});
    let primary_url = format!(
        "{}?sslmode=disable",
        database_url().split('?').next().unwrap_or_default()
    );
    let replica_url = replica.url("127.0.0.1", "sslmode=disable");
    let lookup = |k: &str| match k {
        "DATABASE_URL" => Some(primary_url.clone()),
        "DATABASE_READ_URL" => Some(replica_url.clone()),
        "DATABASE_POOL_SIZE" => Some(size.to_owned()),
        "DATABASE_POOL_TIMEOUT" => Some(timeout.to_owned()),
        _ => None,
    };
    let mut config = Config::from_lookup("DATABASE", &lookup).expect("config");
    config.pool.name = name.into();
    let pool = Pool::new(config).await.expect("build");
    (replica, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_fall_back_while_it_is_down_and_return() {
    let (replica, pool) = primary_and_replica("replica", "t_replicas", "4", "5s").await;
    assert_eq!(pool.read_pools().len(), 1);
    assert_eq!(
        pool.read_pools()[0].config().pool.name,
        "t_replicas_read0",
        "replica pools carry their own label"
    );

    let replica_port = i32::from(replica.port);
    assert_eq!(
        server_port(&pool, true).await,
        replica_port,
        "reads go to the replica"
    );
    let primary_port = server_port(&pool, false).await;
    assert_ne!(primary_port, replica_port, "writes go to the primary");

    replica.down();
    let started = Instant::now();
    // The read pool holds one idle connection to the replica. The shutdown ends it with
    // FATAL 57P01, which its task reads asynchronously: a read that checks it out before
    // the task has run finds the socket gone (seen once in a loaded run). That one read
    // fails with a typed error; the pool then knows the connection is broken.
    {
        let conn = pool
            .read()
            .await
            .expect("a connection (the replica's or the primary's)");
        match conn
            .query_one("SELECT current_setting('port')::int4", &[])
            .await
        {
            Ok(row) => assert_eq!(row.get::<_, i32>(0), primary_port, "reads fall back"),
            Err(e) => assert!(
                e.is_closed() || e.code() == Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN),
                "a connection the shutdown closed, typed: {e:?}"
            ),
        }
    }
    for _ in 0..5 {
        assert_eq!(
            server_port(&pool, true).await,
            primary_port,
            "reads fall back to the primary"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "fallback is quick: {:?}",
        started.elapsed()
    );
    assert!(pool.stats().errors_by("fallback") >= 1);

    replica.up();
    let back = async {
        loop {
            if server_port(&pool, true).await == replica_port {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), back)
        .await
        .expect("reads return to the replica once it is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_replica_is_not_down_and_its_surge_stays_off_the_primary() {
    let (replica, pool) =
        primary_and_replica("replica_busy", "t_replicas_busy", "2", "2500ms").await;
    let replica_port = i32::from(replica.port);
    // Both of the replica pool's connections are held (a surge of slow reads); one comes
    // back after 1.5 s, longer than the read pool's own 1 s (which only skips a replica
    // that does not answer): the read waits for it, within DATABASE_POOL_TIMEOUT.
    let (one, two) = (
        pool.read().await.expect("one"),
        pool.read().await.expect("two"),
    );
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(one);
    });
    let started = Instant::now();
    let third = pool
        .read()
        .await
        .expect("the replica's connection, once free");
    let port: i32 = third
        .query_one("SELECT current_setting('port')::int4", &[])
        .await
        .expect("port")
        .get(0);
    assert_eq!(port, replica_port, "served by the replica, not the primary");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    // Nothing comes back: the read fails at DATABASE_POOL_TIMEOUT with the read pool's
    // timeout, and no read went to the primary.
    let started = Instant::now();
    let e = match pool.read().await {
        Ok(_) => panic!("a read while the replica pool is exhausted got a connection"),
        Err(e) => e,
    };
    let waited = started.elapsed();
    assert!(
        e.is_pool_timeout() && e.to_string().contains("t_replicas_busy_read0"),
        "the replica pool's own timeout: {e}"
    );
    assert!(
        waited >= Duration::from_millis(2400) && waited < Duration::from_millis(3500),
        "{waited:?}"
    );
    assert_eq!(
        pool.stats().errors_by("fallback"),
        0,
        "an exhausted replica is not down"
    );
    drop((two, third));
    assert_eq!(
        server_port(&pool, true).await,
        replica_port,
        "the replica serves the next read"
    );
}

#[test]
fn a_bad_read_url_is_named() {
    let lookup = |k: &str| match k {
        "DATABASE_URL" => Some("postgres://u@h/db".to_owned()),
        "DATABASE_READ_URL" => {
            Some("postgres://u@h/db,postgres://u:pw_marker@r:notaport/db".to_owned())
        }
        _ => None,
    };
    let err = Config::from_lookup("DATABASE", &lookup).expect_err("bad replica URL");
    assert_eq!(err.var(), "DATABASE_READ_URL", "{err}");
    assert!(!err.to_string().contains("pw_marker"), "{err}");
}
