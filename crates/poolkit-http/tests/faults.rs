//! Servers that close idle connections, stall, drop a request, or are busy.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{Mode, Opts, Raw, serve, serve_raw};
use poolkit_http::PoolError;
use poolkit_http::{Error, Pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closing_idle_connections_after_one_second_fails_no_get() {
    let mut opts = Opts::new(Mode::Http1);
    opts.idle_close = Some(Duration::from_secs(1));
    let server = serve(opts).await;
    let mut config = common::config("idle_close", &server, 4);
    // Keep connections longer than the server does, to meet its closes.
    config.pool.idle_timeout = Some(Duration::from_secs(30));
    let pool = Pool::new(config).unwrap();
    let mut failures = Vec::new();
    // Pauses around the server's 1 s idle close, on 4 connections at once.
    for pause_ms in [0, 950, 1000, 1020, 1050, 1500, 990] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.get("/").send().await })
            })
            .collect();
        for t in tasks {
            match t.await.expect("task panicked") {
                Ok(r) => assert_eq!(r.status(), 200),
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(failures.is_empty(), "failed GETs: {failures:?}");
    let s = pool.stats();
    // Each retry (a keep-alive race lost to the server's close) is one more request.
    assert_eq!(s.requests_new + s.requests_reused, 28 + pool.retries());
    // Every retry counts a broken connection; so does every idle connection the engine
    // found closed by the server and discarded before use (no request lost on it).
    assert!(s.errors_by("broken") >= pool.retries(), "{s:?}");
    assert_eq!(s.errors_by("broken"), s.closed_by("broken"), "{s:?}");
    assert!(
        s.requests_new > 4,
        "the server's closes forced new connections: {s:?}"
    );
    assert!(
        s.closed_by("broken") > 0,
        "server-side closes are counted: {s:?}"
    );
    assert!(server.seen.max_open.load(SeqCst) <= 4);
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let server = serve(Opts::new(Mode::Http1)).await;
    let mut config = common::config("idle_timeout", &server, 3);
    config.pool.idle_timeout = Some(Duration::from_millis(300));
    let pool = Pool::new(config).unwrap();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get("/").send().await })
        })
        .collect();
    for t in tasks {
        t.await.expect("task panicked").expect("request failed");
    }
    assert!(pool.stats().open >= 1);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let s = pool.stats();
    assert_eq!(s.open, 0, "{s:?}");
    assert_eq!(s.closed_by("idle_timeout"), s.created, "{s:?}");
    // The server saw the sockets go away too.
    assert_eq!(server.seen.open.load(SeqCst), 0);
    let r = pool.get("/").send().await.unwrap();
    assert!(r.new_connection());
}

#[tokio::test]
async fn stalled_server_gives_the_request_timeout_error() {
    let server = serve_raw(Raw::Stall).await;
    let lookup = |var: &str| match var {
        "STALL_TIMEOUT" => Some("300ms".to_owned()),
        _ => None,
    };
    let mut config =
        poolkit_http::Config::from_lookup("STALL", poolkit_http::Config::new("stall"), &lookup)
            .unwrap();
    config.base_url = Some(server.url());
    let pool = Pool::new(config).unwrap();
    let started = std::time::Instant::now();
    let e = pool.get("/").send().await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(e, Error::Pool(PoolError::Deadline { .. })),
        "{e:?}"
    );
    assert!(e.is_timeout() && !e.is_pool_timeout());
    assert!(e.to_string().contains("STALL_TIMEOUT"), "{e}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let s = pool.stats();
    assert_eq!(s.errors_by("timeout"), 1, "{s:?}");
    assert_eq!((s.used, s.pending), (0, 0), "{s:?}");
    assert_eq!(
        s.closed_by("broken"),
        1,
        "the stalled connection is dropped: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_gives_the_pool_timeout_error() {
    let mut opts = Opts::new(Mode::Http1);
    opts.delay = Duration::from_millis(1500);
    let server = serve(opts).await;
    let lookup = |var: &str| match var {
        "BUSY_POOL_SIZE" => Some("1".to_owned()),
        "BUSY_POOL_TIMEOUT" => Some("200ms".to_owned()),
        _ => None,
    };
    let mut config =
        poolkit_http::Config::from_lookup("BUSY", poolkit_http::Config::new("busy"), &lookup)
            .unwrap();
    config.base_url = Some(server.url());
    let pool = Pool::new(config).unwrap();
    let holder = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get("/").send().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pool.stats().used, 1);
    let e = pool.get("/").send().await.unwrap_err();
    assert!(e.is_pool_timeout(), "{e:?}");
    assert!(e.to_string().contains("BUSY_POOL_TIMEOUT"), "{e}");
    let r = holder.await.expect("task panicked").expect("holder failed");
    assert_eq!(r.status(), 200);
    let s = pool.stats();
    assert_eq!((s.timeouts, s.acquires, s.created), (1, 1, 1), "{s:?}");
    assert_eq!(server.seen.accepted.load(SeqCst), 1);
    let health = pool.health();
    assert!(
        health
            .recommendations
            .iter()
            .any(|r| r.contains("BUSY_POOL_SIZE")),
        "{health:?}"
    );
}

#[tokio::test]
async fn dropped_keepalive_is_retried_once_for_idempotent_requests_only() {
    let server = serve_raw(Raw::DropSecond).await;
    let pool = Pool::new(common::config("retry", &server, 1)).unwrap();
    let first = pool.get("/").send().await.unwrap();
    assert!(first.new_connection());
    // The server reads the second request on the kept-alive connection and hangs up.
    let second = pool.get("/").send().await.unwrap();
    assert!(
        second.new_connection(),
        "the retry went out on a new connection"
    );
    assert_eq!(second.text().await.expect("body"), "ok");
    assert_eq!(pool.retries(), 1);
    let s = pool.stats();
    assert_eq!(s.errors_by("broken"), 1, "{s:?}");
    assert_eq!((s.requests_new, s.requests_reused), (2, 1), "{s:?}");

    // A POST is not retried: it may have been processed.
    let server = serve_raw(Raw::DropSecond).await;
    let pool = Pool::new(common::config("no_retry", &server, 1)).unwrap();
    pool.post("/").body("x").send().await.unwrap();
    let e = pool.post("/").body("y").send().await.unwrap_err();
    assert!(matches!(e, Error::Interrupted { .. }), "{e:?}");
    assert!(e.to_string().contains("POST request was in flight"), "{e}");
    assert_eq!(pool.retries(), 0);
    // ... unless the caller says it is safe.
    let server = serve_raw(Raw::DropSecond).await;
    let pool = Pool::new(common::config("retry_marked", &server, 1)).unwrap();
    pool.post("/").send().await.unwrap();
    pool.post("/").idempotent(true).send().await.unwrap();
    assert_eq!(pool.retries(), 1);
}

#[tokio::test]
async fn closed_pool_and_unreachable_server_give_named_errors() {
    let server = serve(Opts::new(Mode::Http1)).await;
    let pool = Pool::new(common::config("closing", &server, 2)).unwrap();
    pool.get("/").send().await.unwrap();
    pool.close();
    assert!(matches!(
        pool.get("/").send().await,
        Err(Error::Pool(PoolError::Closed { .. }))
    ));
    assert_eq!(pool.stats().open, 0);
    assert_eq!(pool.stats().closed_by("pool_closed"), 1);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = poolkit_http::Config::new("unreachable");
    config.base_url = Some(format!("http://127.0.0.1:{port}"));
    let pool = Pool::builder().config(config).build().unwrap();
    let e = pool
        .get(format!("http://127.0.0.1:{port}/x?api_key=s3cret"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && !msg.contains("s3cret"),
        "{msg}"
    );
    let health = poolkit_core::check(&*poolkit_core::pool("unreachable").unwrap()).await;
    assert_eq!(
        health.status,
        poolkit_core::HealthStatus::Down,
        "{health:?}"
    );
    assert!(health.message.contains("cannot connect"), "{health:?}");
}

/// Resolves every name to one address after a pause: a slow connect.
struct SlowResolver(std::net::SocketAddr, Duration);

impl poolkit_http::Resolve for SlowResolver {
    fn resolve(
        &self,
        _host: &str,
        _port: u16,
    ) -> poolkit_core::BoxFuture<'static, std::io::Result<Vec<std::net::SocketAddr>>> {
        let (addr, pause) = (self.0, self.1);
        Box::pin(async move {
            tokio::time::sleep(pause).await;
            Ok(vec![addr])
        })
    }
}

#[tokio::test]
async fn a_connect_outlives_the_caller_who_gave_up_and_serves_the_next() {
    let server = serve(Opts::new(Mode::Http1)).await;
    let mut config = common::config("outlive", &server, 2);
    config.base_url = Some(format!("http://slow.test:{}", server.addr.port()));
    let pool = Pool::builder()
        .config(config)
        .resolver(SlowResolver(server.addr, Duration::from_millis(300)))
        .build()
        .unwrap();
    // The caller gives up long before the connect can finish.
    let gave_up = pool
        .get("/")
        .timeout(Some(Duration::from_millis(50)))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    // The connect went on without it: the connection is open and waits idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = pool.stats();
    assert_eq!((s.open, s.created), (1, 1), "{s:?}");
    // The next caller gets it (its first request) instead of opening another.
    let r = pool.get("/").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(pool.stats().created, 1);
    assert_eq!(server.seen.accepted.load(SeqCst), 1);
}
