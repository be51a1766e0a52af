//! /health turns `down` (503) when a backend is stopped, and healthy again after it is
//! started: a private PostgreSQL server on a free port, stopped and started by the test.
#![cfg(all(feature = "monitor", feature = "postgres"))]

mod monitor_support;

use std::time::Duration;

use monitor_support::*;
use poolkit::monitor::{Monitor, MonitorConfig};

/// Polls `/health` every 200 ms until `want(status code, body)` or `within` passes;
/// returns the last reply.
async fn health_until(
    addr: std::net::SocketAddr,
    within: Duration,
    want: impl Fn(&Reply) -> bool,
) -> Reply {
    let end = tokio::time::Instant::now() + within;
    loop {
        let r = get(addr, "/health", None).await;
        if want(&r) || tokio::time::Instant::now() >= end {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_down_with_the_server_and_comes_back() {
    let pg = tokio::task::spawn_blocking(PrivatePg::start)
        .await
        .expect("start a private PostgreSQL");
    let pool = pg_pool("mon_down", 3, &pg.url()).await;
    let mut config = MonitorConfig::default();
    config.ping_timeout = Duration::from_secs(2);
    // The registry, as users run it: this binary builds no other pool.
    let (_, server) = spawn(Monitor::builder(), config).await;
    let addr = server.local_addr();

    let up = get(addr, "/health", None).await;
    assert_eq!(up.status, 200, "{}", up.body);
    let body = up.json();
    assert_eq!(body["status"], "healthy", "{body}");
    assert_eq!(body["pools"][0]["pool"], "mon_down");

    // Stop the server: the pool's idle connection breaks and new connects are refused.
    let stopped = std::time::Instant::now();
    tokio::task::block_in_place(|| pg.down());
    let down = health_until(addr, Duration::from_secs(15), |r| r.status == 503).await;
    assert_eq!(
        down.status, 503,
        "still {} after the server stopped: {}",
        down.status, down.body
    );
    let body = down.json();
    assert_eq!(body["status"], "down", "{body}");
    assert_eq!(body["pools"][0]["status"], "down", "{body}");
    let message = body["pools"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("Mon_down pool is down: "), "{message}");
    assert_no_secret("/health while down", &down.body);
    println!(
        "down detected {:?} after the stop: {message}",
        stopped.elapsed()
    );

    // /alerts says so too, with a critical alert.
    let alerts = get(addr, "/alerts", Some(&bearer())).await;
    assert_eq!(alerts.status, 200, "{}", alerts.body);
    assert_no_secret("/alerts while down", &alerts.body);
    let a = alerts.json();
    assert_eq!(a["alerts"][0]["severity"], "critical", "{a}");
    assert_eq!(a["alerts"][0]["pool"], "mon_down", "{a}");

    // Start it again: healthy within a few pings.
    tokio::task::block_in_place(|| pg.up());
    let started = std::time::Instant::now();
    let back = health_until(addr, Duration::from_secs(20), |r| r.status == 200).await;
    assert_eq!(
        back.status, 200,
        "still {} after the restart: {}",
        back.status, back.body
    );
    assert_eq!(
        back.json()["pools"][0]["status"],
        "healthy",
        "{}",
        back.body
    );
    println!("healthy again {:?} after the restart", started.elapsed());
    let conn = pool.get().await.expect("the pool works again");
    conn.simple_query("SELECT 1")
        .await
        .expect("query after restart");
    drop(conn);
    server.shutdown().await.expect("shutdown");
}
