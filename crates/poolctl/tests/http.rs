//! `poolctl check`, `size` and `bench` for HTTP pools, against a private nginx (config, pid
//! and logs in a temp dir, killed at the end) with `keepalive_timeout 2s`.
//! `scripts/services.d/http.sh` installs nginx.

mod common;
use poolkit_test_support as ports;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
    tls_port: u16,
}

impl Nginx {
    /// What a failed step needs to be explained: whether nginx still runs, which process
    /// listens on its ports, and its error log.
    fn state(&mut self) -> String {
        let alive = match self.child.try_wait() {
            Ok(None) => "running".to_owned(),
            Ok(Some(status)) => format!("exited: {status}"),
            Err(e) => format!("unknown: {e}"),
        };
        let listeners = Command::new("ss")
            .args(["-Htanp", "sport", "=", &format!(":{}", self.port)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("ss: {e}"));
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        format!(
            "nginx (pid {}) {alive}; sockets on port {}:\n{listeners}nginx error.log:\n{log}",
            self.child.id(),
            self.port
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is not installed: run scripts/services.d/http.sh")
}

fn start_nginx() -> Nginx {
    let dir = std::env::temp_dir().join(format!("poolctl-nginx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Ports no other socket is handed before nginx binds them (see poolkit-test-support).
    let (port, tls_port) = (ports::child_port(), ports::child_port());
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a cert");
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).expect("cert.pem");
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).expect("key.pem");
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 2s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok"; }}
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl http2;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        location / {{ return 200 "ok"; }}
    }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
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
        port,
        tls_port,
    };
    // Ready means nginx itself answers a request on the plain port (not merely that
    // something accepts a connection there) and accepts on the TLS port.
    let started = Instant::now();
    loop {
        let plain = nginx_answers(port);
        if plain.is_ok() && std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok() {
            return nginx;
        }
        if !matches!(nginx.child.try_wait(), Ok(None))
            || started.elapsed() > Duration::from_secs(10)
        {
            panic!("nginx is not serving ({plain:?}): {}", nginx.state());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `GET /` on the plain port, answered `200` by a server that names itself nginx.
fn nginx_answers(port: u16) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let server = answer
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("server: nginx"));
    if answer.starts_with("HTTP/1.1 200") && server {
        Ok(())
    } else {
        Err(format!("not nginx's answer: {answer:?}"))
    }
}

#[test]
fn check_size_and_bench_know_http_pools() {
    let mut nginx = start_nginx();
    let url = format!("http://127.0.0.1:{}/", nginx.port);

    // check: connect time, protocol, and the keep-alive timeout nginx enforces (2 s).
    let (code, out, err) = run(
        &[
            "check",
            "--json",
            "--pool",
            "WEB=http",
            "--connects",
            "3",
            "--keepalive-wait",
            "10s",
        ],
        &[
            ("WEB_URL", &url),
            ("WEB_IDLE_TIMEOUT", "5s"),
            ("WEB_POOL_SZIE", "3"),
            ("WEB_POOL_SIZE", "20"),
            ("WEB_MAX_KEEPALIVE", "50"),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}\n{}", nginx.state());
    let v = json(&out);
    let pool = &v["pools"][0];
    assert_eq!(pool["backend"], "http");
    assert_eq!(pool["http"]["protocol"], "HTTP/1.1");
    assert_eq!(pool["http"]["status"], 200);
    let keepalive = pool["http"]["keepalive_timeout"]
        .as_f64()
        .unwrap_or_else(|| panic!("nginx closed no idle connection within 10 s: {pool}"));
    assert!(
        (1.5..4.0).contains(&keepalive),
        "nginx's keepalive_timeout is 2 s, measured {keepalive}"
    );
    assert_eq!(pool["connect"]["samples"], 3);
    let warnings: Vec<&str> = pool["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w
                .starts_with("WEB_IDLE_TIMEOUT=5s is not below the server's keep-alive timeout")),
        "{warnings:?}"
    );
    assert!(
        warnings.contains(&"WEB_POOL_SZIE is not a poolkit variable; did you mean WEB_POOL_SIZE?"),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("WEB_MAX_KEEPALIVE=50 is above the ceiling WEB_POOL_SIZE=20")),
        "{warnings:?}"
    );
    // An idle timeout below the server's: no warning.
    let (code, out, _) = run(
        &[
            "check",
            "--pool",
            "WEB=http",
            "--connects",
            "1",
            "--keepalive-wait",
            "10s",
        ],
        &[("WEB_URL", &url), ("WEB_IDLE_TIMEOUT", "1s")],
    );
    assert_eq!(code, 0, "{out}\n{}", nginx.state());
    assert!(
        out.contains("protocol") && out.contains("HTTP/1.1 (plain)"),
        "{out}"
    );
    assert!(
        !out.contains("is not below the server's keep-alive"),
        "{out}"
    );

    // Over TLS: HTTP/2 chosen by ALPN, the handshake timed, the keep-alive still found.
    let https = format!("https://127.0.0.1:{}/", nginx.tls_port);
    let cacert = nginx.dir.join("cert.pem");
    let (code, out, err) = run(
        &[
            "check",
            "--json",
            "--pool",
            "WEB=http",
            "--connects",
            "2",
            "--keepalive-wait",
            "10s",
            "--cacert",
            cacert.to_str().expect("UTF-8 path"),
        ],
        &[("WEB_URL", &https)],
    );
    assert_eq!(code, 0, "{out}\n{err}\n{}", nginx.state());
    let v = json(&out);
    let h = &v["pools"][0]["http"];
    assert_eq!(h["protocol"], "HTTP/2", "{h}");
    assert_eq!(h["tls"], true);
    assert!(h["tls_handshake"].as_f64().unwrap_or(0.0) > 0.0, "{h}");
    assert!(
        (1.5..4.0).contains(&h["keepalive_timeout"].as_f64().unwrap_or(0.0)),
        "{h}"
    );
    // Without the CA the self-signed server is refused, and the check fails saying why:
    // no connection could be made, so exit 4 (docs/poolctl.md), as for PostgreSQL.
    let (code, out, _) = run(
        &["check", "--pool", "WEB=http", "--connects", "1"],
        &[("WEB_URL", &https)],
    );
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("FAILED: https://127.0.0.1") && out.contains("TLS"),
        "{out}"
    );

    // size: Little's law for an HTTP pool, no server budget.
    let (code, out, _) = run(
        &[
            "size",
            "--backend",
            "http",
            "--prefix",
            "WEB",
            "--rps",
            "400",
            "--hold",
            "50ms",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("WEB_POOL_SIZE=25") && out.contains("WEB_MAX_KEEPALIVE=25"),
        "{out}"
    );

    // bench: poolkit-http and a plain reqwest client, side by side, same line and chart.
    let chart = std::env::temp_dir().join(format!("poolctl-http-{}.svg", std::process::id()));
    let (code, out, err) = run(
        &[
            "bench",
            "http",
            "--url",
            &url,
            "-c",
            "300",
            "-d",
            "2s",
            "--pool-size",
            "20",
            "--quiet",
            "--chart",
            chart.to_str().expect("UTF-8 path"),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}\n{}", nginx.state());
    let p = out.find("poolkit-http:\nPool Size: 20 | Concurrency: 300 | Throughput: ");
    let r = out.find("reqwest:\nPool Size: 20 | Concurrency: 300 | Throughput: ");
    assert!(p.is_some() && r.is_some() && p < r, "{out}");
    assert!(
        out.contains("Client"),
        "a table with a client column: {out}"
    );
    let svg = std::fs::read_to_string(&chart).expect("the chart");
    assert!(
        svg.contains("poolkit-http pool 20") && svg.contains("reqwest pool 20"),
        "both clients in the chart"
    );
    let _ = std::fs::remove_file(&chart);
    let (code, out, _) = run(
        &[
            "bench",
            "http",
            "--url",
            &url,
            "-c",
            "50",
            "-d",
            "1s",
            "--pool-size",
            "5",
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{}", nginx.state());
    let v = json(&out);
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["client"], "poolkit-http");
    assert_eq!(runs[1]["client"], "reqwest");
    for run in runs {
        assert!(run["ok"].as_u64().unwrap_or(0) > 100, "{run}");
        assert_eq!(run["errors"], serde_json::json!({}), "{run}");
    }
    assert!(
        runs[0]["connections_opened"].as_u64().unwrap_or(99) <= 5,
        "poolkit-http opens at most the pool size: {}",
        runs[0]
    );
}

/// A server that answers one HTTP/1.1 request and then keeps the connection open, idle,
/// for as long as the client does.
async fn never_closing_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                // Idle until the client goes.
                let _ = sock.read(&mut buf).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keepalive_probe_says_what_it_waits_for() {
    let port = never_closing_server().await;
    let url = format!("http://127.0.0.1:{port}/");
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run(
            &[
                "check",
                "--pool",
                "WEB=http",
                "--connects",
                "1",
                "--keepalive-wait",
                "7s",
            ],
            &[("WEB_URL", &url)],
        )
    })
    .await
    .expect("poolctl");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("holding an idle HTTP connection open") && err.contains("up to 7 s"),
        "{err}"
    );
    assert!(err.contains("still open after 5 s of up to 7 s"), "{err}");
}
