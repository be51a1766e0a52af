//! 1000 concurrent requests on a pool of 20: the cap holds over HTTP/1.1, and HTTP/2
//! (h2c and TLS) uses one connection.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use common::{Mode, Opts, serve};
use poolkit_http::{HttpVersion, Pool};

/// Runs `n` concurrent GETs, sampling the pool's open connections meanwhile; returns
/// (new-connection responses, highest open count sampled, versions seen).
async fn burst(pool: &Pool, n: usize) -> (u64, u64, Vec<http::Version>) {
    let max_open = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (pool, max_open, done) = (pool.clone(), max_open.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(SeqCst) {
                max_open.fetch_max(pool.stats().open, SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get("/").send().await })
        })
        .collect();
    let mut new = 0;
    let mut versions = Vec::new();
    for t in tasks {
        let r = t.await.expect("task panicked").expect("request failed");
        assert_eq!(r.status(), 200);
        new += u64::from(r.new_connection());
        if !versions.contains(&r.version()) {
            versions.push(r.version());
        }
        assert_eq!(r.text().await.expect("body"), "ok");
    }
    done.store(true, SeqCst);
    sampler.await.expect("sampler panicked");
    (new, max_open.load(SeqCst), versions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_thousand_requests_never_exceed_twenty_connections() {
    let mut opts = Opts::new(Mode::Http1);
    opts.delay = Duration::from_millis(2);
    let server = serve(opts).await;
    let pool = Pool::new(common::config("cap_h1", &server, 20)).unwrap();
    let (new, max_open, versions) = burst(&pool, 1000).await;
    assert_eq!(versions, vec![http::Version::HTTP_11]);
    let seen = &server.seen;
    assert!(
        seen.max_open.load(SeqCst) <= 20,
        "server saw {} open",
        seen.max_open.load(SeqCst)
    );
    assert!(
        seen.accepted.load(SeqCst) <= 20,
        "server accepted {}",
        seen.accepted.load(SeqCst)
    );
    assert!((1..=20).contains(&new), "new connections: {new}");
    assert!(max_open <= 20, "pool reported {max_open} open");
    let s = pool.stats();
    assert_eq!(s.requests_new + s.requests_reused, 1000, "{s:?}");
    assert_eq!(s.requests_new, new);
    assert!(s.created <= 20, "{s:?}");
    assert_eq!(s.acquires, 1000);
    assert_eq!((s.used, s.pending), (0, 0), "{s:?}");
    assert!(s.wait.p99 > 0.0, "callers queued: {s:?}");
    assert_eq!(s.errors_total(), 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_thousand_requests_share_one_connection() {
    let mut opts = Opts::new(Mode::H2c);
    opts.delay = Duration::from_millis(2);
    let server = serve(opts).await;
    let mut config = common::config("cap_h2c", &server, 20);
    config.http_version = HttpVersion::Http2;
    config.http2_max_streams = 20;
    let pool = Pool::new(config).unwrap();
    let (new, max_open, versions) = burst(&pool, 1000).await;
    assert_eq!(versions, vec![http::Version::HTTP_2]);
    assert_eq!(server.seen.accepted.load(SeqCst), 1);
    assert_eq!((new, max_open), (1, 1));
    let streams = server.seen.max_in_flight.load(SeqCst);
    assert!(
        streams <= 20,
        "{streams} concurrent streams, P_HTTP2_MAX_STREAMS is 20"
    );
    assert!(streams > 1, "requests were multiplexed ({streams})");
    let s = pool.stats();
    assert_eq!((s.requests_new, s.requests_reused, s.created), (1, 999, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_negotiates_http2_with_one_connection() {
    let server = serve(Opts::new(Mode::Tls)).await;
    let pool = Pool::new(common::config("cap_tls", &server, 20)).unwrap();
    let (new, _, versions) = burst(&pool, 300).await;
    assert_eq!(versions, vec![http::Version::HTTP_2]);
    assert_eq!(server.seen.accepted.load(SeqCst), 1);
    assert_eq!(new, 1);

    let mut http1 = common::config("cap_tls_h1", &server, 5);
    http1.http_version = HttpVersion::Http1;
    let pool = Pool::new(http1).unwrap();
    let (_, max_open, versions) = burst(&pool, 100).await;
    assert_eq!(versions, vec![http::Version::HTTP_11]);
    assert!(max_open <= 5);
}

#[tokio::test]
async fn tls_rejects_an_untrusted_certificate() {
    let server = serve(Opts::new(Mode::Tls)).await;
    let mut config = common::config("tls_untrusted", &server, 2);
    config.root_certificates.clear();
    let pool = Pool::new(config).unwrap();
    let e = pool.get("/").send().await.unwrap_err();
    assert!(e.is_connect(), "{e}");
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    assert_eq!(pool.stats().errors_by("connect"), 1);
}
