//! A name that starts resolving elsewhere (reqwest#3033: pooled connections never look
//! the name up again, so a scaled-out or failed-over service is never seen). Two servers
//! on one port, 127.0.0.1 ("a") and 127.0.0.2 ("b"); a resolver override maps
//! `service.test` to one of them and is switched mid-test. With `P_MAX_LIFETIME` the pool
//! follows the new address within one lifetime, over HTTP/1.1 and HTTP/2; without it, it
//! stays on the old one.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use poolkit_http::{Config, HttpVersion, Pool};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Answers every request with `name`, over HTTP/1.1 or h2c.
fn serve(listener: TcpListener, name: &'static str, h2: bool) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(name))))
                });
                let io = TokioIo::new(tcp);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    })
}

/// Two listeners on the same port: 127.0.0.1 and 127.0.0.2.
async fn two_addresses() -> (TcpListener, TcpListener, u16) {
    for _ in 0..50 {
        let a = TcpListener::bind((A, 0)).await.unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind((B, port)).await {
            return (a, b, port);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// Sends one request every 20 ms for `for_`; returns (ms since `since`, server name).
async fn probe(pool: &Pool, since: Instant, for_: Duration) -> Vec<(u128, String)> {
    let mut out = Vec::new();
    let end = Instant::now() + for_;
    while Instant::now() < end {
        // Four at once, so HTTP/1.1 holds several connections.
        let replies = futures_join4(pool).await;
        for r in replies {
            out.push((since.elapsed().as_millis(), r));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out
}

async fn futures_join4(pool: &Pool) -> Vec<String> {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get("/").send().await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            t.await
                .expect("task")
                .expect("request")
                .text()
                .await
                .expect("body"),
        );
    }
    out
}

/// Runs the switch with `lifetime`; returns the replies after the switch.
async fn switch(h2: bool, lifetime: Option<Duration>) -> (Vec<(u128, String)>, Pool) {
    let (a, b, port) = two_addresses().await;
    let _servers = (serve(a, "a", h2), serve(b, "b", h2));
    let target = Arc::new(Mutex::new(A));
    let resolved = target.clone();
    let mut config = Config::new(if h2 { "dns_h2" } else { "dns_h1" });
    config.pool.pool_size = 4;
    config.pool.max_lifetime = lifetime;
    config.pool.idle_timeout = Some(Duration::from_secs(30));
    config.http_version = if h2 {
        HttpVersion::Http2
    } else {
        HttpVersion::Http1
    };
    config.base_url = Some(format!("http://service.test:{port}"));
    let pool = Pool::builder()
        .config(config)
        .resolver(move |host: &str, port: u16| {
            assert_eq!(host, "service.test");
            Ok(vec![SocketAddr::new(*resolved.lock().unwrap(), port)])
        })
        .build()
        .unwrap();
    let before = probe(&pool, Instant::now(), Duration::from_millis(300)).await;
    assert!(before.iter().all(|(_, s)| s == "a"), "{before:?}");
    *target.lock().unwrap() = B;
    let after = probe(&pool, Instant::now(), Duration::from_millis(1600)).await;
    (after, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_follows_a_name_that_moved() {
    let lifetime = Duration::from_secs(1);
    for h2 in [false, true] {
        let (after, pool) = switch(h2, Some(lifetime)).await;
        let first_b = after
            .iter()
            .find(|(_, s)| s == "b")
            .map(|(ms, _)| *ms)
            .expect("the pool followed the name");
        let last_a = after
            .iter()
            .filter(|(_, s)| s == "a")
            .map(|(ms, _)| *ms)
            .max()
            .unwrap_or(0);
        println!(
            "FIGURES dns {}: P_MAX_LIFETIME=1s, first reply from the new address {first_b} ms after the switch, last from the old one at {last_a} ms; {} replies",
            if h2 { "HTTP/2" } else { "HTTP/1.1" },
            after.len()
        );
        // Every connection opened before the switch is younger than 1 s + the 300 ms probe.
        assert!(first_b <= 1100, "{after:?}");
        assert!(
            last_a < 1100,
            "no old connection served past its lifetime: {after:?}"
        );
        assert!(after.iter().rev().take(8).all(|(_, s)| s == "b"));
        let s = pool.stats();
        assert!(s.closed_by("max_lifetime") >= 1, "{s:?}");
        assert_eq!((s.used, s.pending), (0, 0), "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_lifetime_the_old_address_is_kept() {
    let (after, pool) = switch(true, None).await;
    assert!(
        after.iter().all(|(_, s)| s == "a"),
        "the kept-alive connection never looks the name up again: {after:?}"
    );
    assert_eq!(pool.stats().created, 1);
}
