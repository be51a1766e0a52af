//! HTTP faults against servers the test runs on 127.0.0.1:0 (plain TCP, so each fault is
//! exact): one that closes idle keep-alive connections at random moments, one that resets
//! the connection mid-response, one that stalls. Idempotent GETs must not fail in the
//! first case; the others give typed errors; no in-flight count is left up.
#![cfg(feature = "http")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Rng;
use poolkit::core::PoolError;
use poolkit::http::{Config, Error, Pool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
enum Fault {
    /// Answers, then closes the idle connection after a random 0–40 ms (or keeps it).
    RandomIdleClose,
    /// Sends the headers and half the body, then resets (SO_LINGER 0).
    ResetMidResponse,
    /// Reads the request and never answers.
    Stall,
}

/// Reads one request head; `false` when the client closed.
async fn read_head(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
    }
    true
}

async fn serve(fault: Fault) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let closes = Arc::new(AtomicU64::new(0));
    let closes2 = closes.clone();
    tokio::spawn(async move {
        let mut seed = 7u64;
        while let Ok((mut s, _)) = listener.accept().await {
            seed += 1;
            let closes = closes2.clone();
            tokio::spawn(async move {
                let mut rng = Rng::new(seed);
                while read_head(&mut s).await {
                    match fault {
                        Fault::RandomIdleClose => {
                            let ok = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                            if ok.is_err() {
                                return;
                            }
                            if rng.below(3) == 0 {
                                // Close while idle, at a random moment.
                                let delay = Duration::from_millis(rng.below(40));
                                if tokio::time::timeout(delay, read_head(&mut s))
                                    .await
                                    .is_err()
                                {
                                    closes.fetch_add(1, Ordering::Relaxed);
                                    return;
                                }
                                // A request arrived first: answer it, then close.
                                let _ = s
                                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                    .await;
                                closes.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                        Fault::ResetMidResponse => {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
                                .await;
                            let _ = s.set_zero_linger();
                            closes.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Fault::Stall => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, closes)
}

fn pool(name: &str, addr: SocketAddr, size: u32, timeout: Duration) -> Pool {
    let mut c = Config::new(name);
    c.pool.pool_size = size;
    c.pool.acquire_timeout = Duration::from_secs(2);
    c.max_keepalive = size;
    c.timeout = Some(timeout);
    c.pool.idle_timeout = Some(Duration::from_secs(30));
    c.base_url = Some(format!("http://{addr}"));
    Pool::new(c).expect("HTTP pool")
}

fn assert_settled(pool: &Pool) {
    let s = pool.stats();
    assert_eq!((s.used, s.pending), (0, 0), "in-flight left up: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_keepalive_closes_fail_no_idempotent_get() {
    let (addr, closes) = serve(Fault::RandomIdleClose).await;
    let pool = pool("fault_http_close", addr, 8, Duration::from_secs(5));
    let mut rng = Rng::new(42);
    let mut failures = Vec::new();
    let mut gets = 0u64;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.get("/").send().await })
            })
            .collect();
        for t in tasks {
            gets += 1;
            match t.await.expect("GET task") {
                Ok(r) => assert_eq!(r.status(), 200),
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(failures.is_empty(), "failed idempotent GETs: {failures:?}");
    assert!(
        closes.load(Ordering::Relaxed) > 20,
        "the server closed connections"
    );
    assert_settled(&pool);
    let s = pool.stats();
    println!(
        "FIGURES http_random_close: gets={gets} failed=0 server_closes={} retries={} new={} reused={}",
        closes.load(Ordering::Relaxed),
        pool.retries(),
        s.requests_new,
        s.requests_reused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_response_and_stall_give_typed_errors() {
    let (addr, _) = serve(Fault::ResetMidResponse).await;
    let reset = pool("fault_http_reset", addr, 4, Duration::from_secs(2));
    let mut kinds = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let e = reset.get("/").send().await.expect_err("the body was cut");
        assert!(start.elapsed() < Duration::from_secs(2), "no hang");
        assert!(matches!(e, Error::Backend { .. }), "typed: {e:?}");
        kinds.push(e.to_string());
    }
    assert_settled(&reset);

    let (addr, _) = serve(Fault::Stall).await;
    let stall = pool("fault_http_stall", addr, 4, Duration::from_millis(500));
    let start = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let p = stall.clone();
            tokio::spawn(async move { p.get("/").send().await })
        })
        .collect();
    for t in tasks {
        let e = t.await.expect("task").expect_err("stalled");
        assert!(
            matches!(
                e,
                Error::Pool(PoolError::Deadline { .. }) | Error::Pool(PoolError::Timeout { .. })
            ),
            "typed: {e:?}"
        );
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "8 requests on 4 slots took {took:?}"
    );
    assert_settled(&stall);
    println!(
        "FIGURES http_reset_and_stall: reset errors=20 (e.g. \"{}\"); stall: 8 requests, 4 slots, 500ms timeout, all typed in {took:?}",
        kinds[0]
    );
}
