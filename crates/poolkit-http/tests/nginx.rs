//! Against nginx, a server we did not write: a private instance (config, pid and logs in a
//! temp dir, `daemon off`, killed at the end) with HTTP/1.1 (`keepalive_timeout 1s`) and
//! HTTP/2 over TLS. `scripts/services.d/http.sh` installs nginx.

mod common;
use poolkit_test_support as ports;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use poolkit_http::{Config, HttpVersion, Pool};

struct Nginx {
    child: Child,
    dir: PathBuf,
    http1: u16,
    https: u16,
    cert_der: Vec<u8>,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port for nginx to bind that no other socket is handed in the meantime (see
/// `poolkit-test-support`).
fn free_port() -> u16 {
    ports::child_port()
}

fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "nginx is not installed (tried /usr/sbin/nginx, /usr/local/sbin/nginx, /usr/bin/nginx): run scripts/services.d/http.sh"
    );
}

fn start() -> Nginx {
    start_with(100_000)
}

/// nginx closing each connection (HTTP/2: with a `GOAWAY`) after `keepalive_requests`.
fn start_with(keepalive_requests: u32) -> Nginx {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("poolkit-nginx-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let (http1, https) = (free_port(), free_port());
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format ids '$request_method $http_x_id';
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 1s;
    keepalive_requests {keepalive_requests};
    server {{
        listen 127.0.0.1:{http1};
        location / {{ return 200 "ok"; }}
    }}
    server {{
        listen 127.0.0.1:{https} ssl http2;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        http2_max_concurrent_streams 128;
        access_log {d}/ids.log ids;
        location / {{ return 200 "ok"; }}
    }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nginx");
    let mut nginx = Nginx {
        child,
        dir,
        http1,
        https,
        cert_der: cert.cert.der().to_vec(),
    };
    let started = Instant::now();
    while [http1, https]
        .iter()
        .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
    {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
            panic!("nginx exited with {status}: {log}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not listen on 127.0.0.1:{http1}/{https} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx
}

/// Each answer's version and whether it opened a connection.
async fn burst(pool: &Pool, n: usize) -> Vec<(poolkit_http::http::Version, bool)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get("/").send().await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        let r = t
            .await
            .expect("task panicked")
            .expect("request to nginx failed");
        let seen = (r.version(), r.new_connection());
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.text().await.expect("body"), "ok");
        out.push(seen);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_http2_over_tls_and_http1_keepalive_closes() {
    let nginx = start();

    let mut config = Config::new("nginx_h2");
    config.pool.pool_size = 20;
    config.base_url = Some(format!("https://127.0.0.1:{}", nginx.https));
    config.root_certificates.push(nginx.cert_der.clone());
    config.http_version = HttpVersion::Auto;
    let pool = Pool::new(config).unwrap();
    let responses = burst(&pool, 500).await;
    assert!(responses.iter().all(|r| r.0 == http::Version::HTTP_2));
    let s = pool.stats();
    assert_eq!(
        (s.created, s.requests_new, s.requests_reused),
        (1, 1, 499),
        "{s:?}"
    );

    let mut config = Config::new("nginx_h1");
    config.pool.pool_size = 20;
    // `Config::new` took the default ceiling (10) as the keep-alive limit; keep all 20 idle
    // connections, so that every one opened is reused.
    config.max_keepalive = 20;
    config.pool.idle_timeout = Some(Duration::from_secs(30)); // outlive nginx's 1 s
    config.base_url = Some(format!("http://127.0.0.1:{}", nginx.http1));
    let pool = Pool::new(config).unwrap();
    let responses = burst(&pool, 500).await;
    assert!(responses.iter().all(|r| r.0 == http::Version::HTTP_11));
    let s = pool.stats();
    assert!(s.created <= 20 && s.requests_new <= 20, "{s:?}");
    for pause_ms in [950, 1000, 1050, 1200] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        burst(&pool, 20).await;
    }
    let s = pool.stats();
    assert_eq!(
        s.requests_new + s.requests_reused,
        580 + pool.retries(),
        "{s:?}"
    );
    assert!(
        s.closed_by("broken") > 0,
        "nginx's keep-alive closes were seen: {s:?}"
    );
    assert!(s.open <= 20, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_goaway_after_keepalive_requests_loses_no_idempotent_request() {
    const REQUESTS: u64 = 4000;
    let nginx = start_with(50);
    let mut config = Config::new("nginx_goaway");
    config.pool.pool_size = 16;
    config.base_url = Some(format!("https://127.0.0.1:{}", nginx.https));
    config.root_certificates.push(nginx.cert_der.clone());
    config.http_version = HttpVersion::Http2;
    let pool = Pool::new(config).unwrap();
    let tasks: Vec<_> = (0..32u64)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let (mut ok, mut interrupted) = (0u64, 0u64);
                for i in 0..REQUESTS / 32 {
                    let id = format!("{t}-{i}");
                    let post = i % 2 == 1;
                    let req = if post {
                        pool.post("/").body(id.clone())
                    } else {
                        pool.get("/")
                    };
                    match req.header("x-id", &id).send().await {
                        Ok(r) => {
                            assert_eq!(r.text().await.expect("body"), "ok");
                            ok += 1;
                        }
                        Err(e) if post && e.is_interrupted() => interrupted += 1,
                        Err(e) => panic!("{id} ({}): {e}", if post { "POST" } else { "GET" }),
                    }
                }
                (ok, interrupted)
            })
        })
        .collect();
    let (mut ok, mut interrupted) = (0, 0);
    for t in tasks {
        let (o, i) = t.await.expect("no GET failed, every POST failure typed");
        ok += o;
        interrupted += i;
    }
    let s = pool.stats();
    let log = std::fs::read_to_string(nginx.dir.join("ids.log")).unwrap();
    let mut posts = std::collections::HashMap::new();
    for line in log.lines().filter(|l| l.starts_with("POST ")) {
        *posts.entry(line.to_owned()).or_insert(0u32) += 1;
    }
    let twice: Vec<_> = posts.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "FIGURES nginx keepalive_requests 50 over HTTP/2: {ok} ok of {REQUESTS}, 0 GET failed, {interrupted} POST Interrupted, {} retries, {} connections opened, {} POSTs logged, {} twice",
        pool.retries(),
        s.created,
        posts.len(),
        twice.len()
    );
    assert_eq!(ok + interrupted, REQUESTS);
    assert!(
        s.created >= REQUESTS / 100,
        "nginx rotated the connections: {s:?}"
    );
    assert!(twice.is_empty(), "a POST processed twice: {twice:?}");
    assert_eq!((s.used, s.pending), (0, 0), "{s:?}");
}
