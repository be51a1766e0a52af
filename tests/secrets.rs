//! Secrets: every password, key and token is set to a marker string; then every error
//! path, `Debug` impl, log line (captured `tracing` output at TRACE), the rendered metrics
//! and the monitor's JSON endpoints are checked: the marker must never appear.
#![cfg(all(
    feature = "postgres",
    feature = "redis",
    feature = "monitor",
    feature = "http"
))]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{LogBuffer, MARKER, PrivateRedis, database_url, free_port, pg_unreachable};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use poolkit::monitor::{Monitor, MonitorConfig};
use poolkit::postgres::{Config as PgConfig, Pool as PgPool};
use poolkit::redis::{Config as RedisConfig, Pool as RedisPool, redis};

/// Everything the test looked at, with what it was.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, what: &str, text: impl Into<String>) {
        self.0.push((what.to_owned(), text.into()));
    }
    fn err<E: std::error::Error + std::fmt::Debug>(&mut self, what: &str, e: &E) {
        self.add(&format!("{what} (Display)"), e.to_string());
        self.add(&format!("{what} (Debug)"), format!("{e:?}"));
        let mut chain = String::new();
        let mut cur = e.source();
        while let Some(s) = cur {
            chain.push_str(&format!("{s} / {s:?}\n"));
            cur = s.source();
        }
        self.add(&format!("{what} (sources)"), chain);
    }
}

/// `GET path` with an optional bearer token; returns (status, body).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let run = async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        let driver = tokio::spawn(conn);
        let mut req = hyper::Request::get(path).header("host", addr.to_string());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = tx
            .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        drop(tx);
        driver.await.expect("driver").expect("connection");
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .unwrap_or_else(|_| panic!("GET {path} took over 15 s"))
}

fn with_password(url: &str, pw: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (userinfo, host) = rest.split_once('@').unwrap_or(("postgres", rest));
    let user = userinfo.split(':').next().unwrap_or("postgres");
    format!("{scheme}://{user}:{pw}@{host}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marker_never_appears() {
    let logs = LogBuffer::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish(),
    )
    .expect("install the capturing subscriber");
    let metrics = poolkit::monitor::install().expect("install the Prometheus recorder");
    let mut seen = Seen::default();
    let closed_port = free_port();

    // --- PostgreSQL: a working pool whose URL holds the marker (trust auth ignores it).
    let pg_url = with_password(&database_url(), MARKER);
    let lookup = |k: &str| match k {
        "SECRETPG_URL" => Some(pg_url.clone()),
        "SECRETPG_POOL_SIZE" => Some("1".to_owned()),
        "SECRETPG_POOL_TIMEOUT" => Some("300ms".to_owned()),
        _ => None,
    };
    let config = PgConfig::from_lookup("SECRETPG", &lookup).expect("config");
    seen.add("postgres Config Debug", format!("{config:?}"));
    seen.add("postgres target", config.target());
    let pg = PgPool::new(config)
        .await
        .unwrap_or_else(|e| panic!("{}", pg_unreachable(&e)));
    let conn = pg.get().await.expect("a connection");
    conn.simple_query("SELECT 1").await.expect("query");
    seen.add("postgres Pool Debug", format!("{pg:?}"));
    seen.add("postgres PooledConnection Debug", format!("{conn:?}"));
    seen.add("postgres Client Debug", format!("{:?}", &*conn));
    let timeout = pg.get().await.expect_err("pool of 1 held");
    assert!(timeout.is_timeout());
    seen.err("postgres Timeout", &timeout);
    drop(conn);
    seen.add("postgres stats Debug", format!("{:?}", pg.stats()));
    seen.add("postgres health Debug", format!("{:?}", pg.health()));
    // Connect error: nothing listens there.
    let e = PgPool::builder()
        .url(format!(
            "postgres://app:{MARKER}@127.0.0.1:{closed_port}/db"
        ))
        .name("secret_pg_down")
        .min_idle(1)
        .acquire_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect_err("nothing listens");
    assert!(e.is_connect(), "{e:?}");
    seen.err("postgres Connect", &e);
    // Invalid URLs, with the marker in the password, in key=value form, and unencoded.
    for bad in [
        format!("postgres://app:{MARKER}@127.0.0.1:notaport/db"),
        format!("host=127.0.0.1 port=x password={MARKER}"),
        format!("postgres://app:{MARKER}?/@127.0.0.1:1/db"),
    ] {
        let lookup = |k: &str| match k {
            "BADPG_URL" => Some(bad.clone()),
            "BADPG_POOL_TIMEOUT" => Some("300ms".to_owned()),
            _ => None,
        };
        match PgConfig::from_lookup("BADPG", &lookup) {
            // Parsed after all (port 1 refuses): the connect error path.
            Ok(c) => {
                seen.add("postgres odd Config Debug", format!("{c:?}"));
                let e = PgPool::new(c).await.expect_err("port 1 refuses");
                seen.err("postgres odd URL connect", &e);
            }
            Err(e) => seen.err("postgres Config error", &e),
        }
        let mut config = PgConfig::new(bad.clone());
        config.pool.acquire_timeout = Duration::from_millis(300);
        let e = PgPool::new(config)
            .await
            .expect_err("invalid URL or nothing listening");
        seen.err("postgres Pool::new error", &e);
    }

    // --- Redis: a server that requires the marker as its password.
    let server = PrivateRedis::start(&["--requirepass", MARKER]);
    let lookup = |k: &str| match k {
        "SECRETREDIS_HOST" => Some("127.0.0.1".to_owned()),
        "SECRETREDIS_PORT" => Some(server.port.to_string()),
        "SECRETREDIS_PASSWORD" => Some(MARKER.to_owned()),
        "SECRETREDIS_POOL_TIMEOUT" => Some("500ms".to_owned()),
        "SECRETREDIS_POOL_SIZE" => Some("1".to_owned()),
        _ => None,
    };
    let config = RedisConfig::from_lookup("SECRETREDIS", &lookup).expect("config");
    seen.add("redis Config Debug", format!("{config:?}"));
    seen.add("redis target", config.target());
    let rp = RedisPool::new(config)
        .await
        .expect("pool with the right password");
    let pong: String = rp.query(&redis::cmd("PING")).await.expect("PING");
    assert_eq!(pong, "PONG");
    let x = rp.exclusive().await.expect("exclusive");
    seen.add("redis Pool Debug", format!("{rp:?}"));
    seen.add("redis PooledConnection Debug", format!("{x:?}"));
    let e = rp.exclusive().await.expect_err("exclusive pool of 1 held");
    seen.err("redis Timeout", &e);
    drop(x);
    // Wrong password (the marker, sent to a server that wants another one).
    let other = PrivateRedis::start(&["--requirepass", "another-password-entirely"]);
    let e = RedisPool::new(RedisConfig::new(format!(
        "redis://:{MARKER}@127.0.0.1:{}/0",
        other.port
    )))
    .await
    .expect_err("wrong password");
    seen.err("redis auth error", &e);
    let e = RedisPool::new(RedisConfig::new(format!(
        "redis://:{MARKER}@127.0.0.1:{closed_port}/0"
    )))
    .await
    .expect_err("nothing listens");
    seen.err("redis Connect", &e);
    for bad in [
        format!("redis://:{MARKER}@127.0.0.1:notaport/0"),
        format!("redis://:{MARKER},@127.0.0.1:1/0"),
        format!("redis:{MARKER}@://"),
    ] {
        let lookup = |k: &str| (k == "BADREDIS_URL").then(|| bad.clone());
        let e = RedisConfig::from_lookup("BADREDIS", &lookup).expect_err("invalid URL");
        seen.err("redis Config error", &e);
    }
    // The server goes away: reconnect warnings are logged.
    drop(server);
    let e = rp
        .query::<String>(&redis::cmd("PING"))
        .await
        .expect_err("server gone");
    seen.err("redis command error", &e);
    let e = rp
        .query::<String>(&redis::cmd("PING"))
        .await
        .expect_err("server gone");
    seen.err("redis command error after", &e);

    // --- HTTP: API keys (Supabase, Pinecone, a custom header) set to the marker.
    #[cfg(feature = "http")]
    http_paths(&mut seen, closed_port).await;

    // --- Monitor: JSON endpoints and the metrics rendering, with a marker token.
    let token = format!("{MARKER}_monitor_token");
    let mut mc = MonitorConfig::default().with_token(token.clone());
    mc.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    mc.ping_timeout = Duration::from_secs(2);
    seen.add("MonitorConfig Debug", format!("{mc:?}"));
    let server = Monitor::builder()
        .config(mc)
        .build()
        .spawn()
        .await
        .expect("monitor on 127.0.0.1:0");
    let addr = server.local_addr();
    let mut pools_listed = String::new();
    for path in [
        "/",
        "/metrics",
        "/health",
        "/pools",
        "/alerts",
        "/pools/secretpg",
        "/pools/secretredis",
    ] {
        let (status, body) = get(addr, path, Some(&token)).await;
        assert!(status == 200 || status == 503, "{path}: {status} {body}");
        if path == "/pools" {
            pools_listed = body.clone();
        }
        seen.add(&format!("monitor {path}"), body);
        let (status, body) = get(addr, path, Some("wrong-token-0123456789")).await;
        seen.add(&format!("monitor {path} ({status}, wrong token)"), body);
    }
    assert!(
        pools_listed.contains("secretpg") && pools_listed.contains("secretredis"),
        "the monitor lists the pools: {pools_listed}"
    );
    server.shutdown().await.expect("monitor shutdown");
    let rendered = metrics.render();
    assert!(
        rendered.contains("poolkit_connection_errors_total"),
        "rendered metrics"
    );
    seen.add("Prometheus rendering", rendered);

    // --- The logs: captured for real (non-empty, with the failures above), marker-free.
    let log = logs.text();
    assert!(
        log.contains("connect failed"),
        "the connect failure was logged: {log}"
    );
    assert!(
        log.contains("secretredis"),
        "the Redis pool's events were logged"
    );
    seen.add("tracing output", log);

    let mut bytes = 0;
    for (what, text) in &seen.0 {
        assert!(
            !text.contains(MARKER),
            "{what} shows the secret marker:\n{text}"
        );
        bytes += text.len();
    }
    println!(
        "FIGURES secrets: {} outputs checked ({bytes} bytes: errors, Debug, logs, metrics, monitor JSON), marker found 0 times",
        seen.0.len()
    );
}

/// A server on 127.0.0.1:0 that answers every request with 500 and a fixed body.
#[cfg(feature = "http")]
async fn failing_server() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        seen.clear();
                        let body = r#"{"message":"internal error"}"#;
                        let head = format!(
                            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if s.write_all(format!("{head}{body}").as_bytes())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[cfg(feature = "http")]
async fn http_paths(seen: &mut Seen, closed_port: u16) {
    use poolkit::http::{Config, Pool, Secret, pinecone, supabase};
    let addr = failing_server().await;
    let url = format!("http://{addr}");
    let lookup = |k: &str| match k {
        "SUPABASE_URL" => Some(url.clone()),
        "SUPABASE_SERVICE_ROLE_KEY" | "PINECONE_API_KEY" => Some(MARKER.to_owned()),
        "PINECONE_HOST" => Some(url.clone()),
        "SUPABASE_POOL_TIMEOUT" | "PINECONE_POOL_TIMEOUT" => Some("1s".to_owned()),
        _ => None,
    };
    let sb = supabase::Client::from_lookup(&lookup).expect("Supabase client");
    seen.add("supabase Client Debug", format!("{sb:?}"));
    let resp = sb
        .request(poolkit::http::http::Method::GET, "/rest/v1/items")
        .send()
        .await
        .expect("a 500 answer");
    assert_eq!(resp.status(), 500);
    seen.add("supabase Response Debug", format!("{resp:?}"));
    let pc = pinecone::Client::from_lookup(&lookup).expect("Pinecone client");
    seen.add("pinecone Client Debug", format!("{pc:?}"));
    let e = pc
        .query(&pinecone::Query::new(&[0.1, 0.2], 3))
        .await
        .expect_err("500");
    seen.err("pinecone error", &e);
    let mut c = Config::new("secret_http_down");
    c.base_url = Some(format!("http://127.0.0.1:{closed_port}"));
    c.connect_timeout = Duration::from_millis(500);
    seen.add("http Config Debug", format!("{c:?}"));
    let p = Pool::builder()
        .config(c)
        .secret_header("x-api-key", &Secret::new(MARKER))
        .build()
        .expect("pool");
    seen.add("http Pool Debug", format!("{p:?}"));
    let e = p.get("/").send().await.expect_err("nothing listens");
    seen.err("http Connect error", &e);
    let lookup = |k: &str| (k == "SUPABASE_URL").then(|| format!("https://x:{MARKER}@h?/"));
    if let Err(e) = supabase::Client::from_lookup(&lookup) {
        seen.err("supabase config error", &e);
    }
}
