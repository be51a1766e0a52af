//! Helpers shared by the poolkit-monitor tests: the recorder, real PostgreSQL pools, an
//! HTTP client, and a private PostgreSQL server that a test may stop and start.
#![allow(dead_code, unreachable_pub)]

pub use poolkit_test_support as ports;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use poolkit::monitor::{Monitor, MonitorConfig, Server};
use poolkit::postgres::Pool;
use poolkit_core::env::process_lookup;

/// A password that the test database ignores (trust auth) and that must never appear in
/// any monitor response.
pub const PASSWORD_MARKER: &str = "PWMARKER_d41d8cd9";
/// The token the tests configure; it must never appear in any response either.
pub const TOKEN: &str = "tok_SECRETMARKER_0123456789abcdef";

/// Installs the Prometheus recorder once per test binary, before any pool is built.
pub fn recorder() -> poolkit::monitor::metrics_exporter_prometheus::PrometheusHandle {
    poolkit::monitor::install().expect("install the Prometheus recorder")
}

/// `DATABASE_URL`, defaulting to the local test database.
pub fn database_url() -> String {
    process_lookup("DATABASE_URL")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `DATABASE_URL` with [`PASSWORD_MARKER`] as its password (trust auth ignores it).
pub fn url_with_marker() -> String {
    let url = database_url();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (userinfo, host) = rest.split_once('@').unwrap_or(("postgres", rest));
            let user = userinfo.split(':').next().unwrap_or("postgres");
            format!("{scheme}://{user}:{PASSWORD_MARKER}@{host}")
        }
        None => url,
    }
}

/// A PostgreSQL pool named `name` with `size` connections; panics naming `DATABASE_URL`
/// when the server cannot be reached.
pub async fn pg_pool(name: &str, size: u32, url: &str) -> Pool {
    recorder();
    Pool::builder()
        .url(url)
        .name(name)
        .pool_size(size)
        .min_idle(1)
        .acquire_timeout(Duration::from_secs(5))
        .application_name(&format!("poolkit_monitor_test_{name}"))
        .build()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot build a pool on DATABASE_URL={} ({e}); start PostgreSQL with scripts/services.sh",
                poolkit_core::redact_url(url)
            )
        })
}

/// Checks out `n` connections and keeps them until the returned guards drop.
pub async fn hold(pool: &Pool, n: usize) -> Vec<poolkit::postgres::PooledConnection> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(pool.get().await.expect("check out a connection"));
    }
    held
}

/// A monitor on 127.0.0.1:0 with the test token and `config` otherwise.
pub async fn spawn(
    builder: poolkit::monitor::MonitorBuilder,
    config: MonitorConfig,
) -> (Monitor, Server) {
    let mut config = config.with_token(TOKEN);
    config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let monitor = builder.config(config).build();
    let server = monitor
        .spawn()
        .await
        .expect("serve the monitor on 127.0.0.1:0");
    (monitor, server)
}

/// One HTTP response, as a test reads it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// `GET path` on `addr` with an optional `Authorization` header value, over a fresh
/// HTTP/1.1 connection, within 15 s.
pub async fn get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> Reply {
    let run = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the monitor");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("HTTP handshake");
        let driver = tokio::spawn(conn);
        let mut req = hyper::Request::get(path).header("host", addr.to_string());
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let resp = sender
            .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
            .await
            .expect("send the request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("read the body")
            .to_bytes();
        drop(sender);
        driver.await.expect("connection task").expect("connection");
        Reply {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
        }
    };
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .unwrap_or_else(|_| panic!("GET {path} took more than 15 s"))
}

/// `Bearer <TOKEN>`.
pub fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// Asserts no secret marker appears in `text`.
pub fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD_MARKER),
        "{what} leaks the password: {text}"
    );
    assert!(
        !text.contains("SECRETMARKER"),
        "{what} leaks the token: {text}"
    );
}

/// The directory of PostgreSQL's server binaries (`/usr/lib/postgresql/<v>/bin`).
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (run scripts/services.sh)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("initdb under /usr/lib/postgresql/*/bin")
}

/// Runs a command as the `postgres` user, panicking with its output when it fails.
fn as_postgres(args: &[&str]) {
    let out = Command::new("runuser")
        .arg("-u")
        .arg("postgres")
        .arg("--")
        .args(args)
        .output()
        .expect("run runuser");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private PostgreSQL server in a temporary directory on a free port, run as the
/// `postgres` user with trust auth. Stopped (immediate) and removed on drop.
pub struct PrivatePg {
    dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

impl PrivatePg {
    pub fn start() -> Self {
        let port = ports::child_port();
        let dir =
            std::env::temp_dir().join(format!("poolkit-monitor-pg-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let chown = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(chown.success(), "chown {dir:?} to postgres");
        let bin = pg_bin();
        let data = dir.join("data");
        as_postgres(&[
            bin.join("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        let pg = Self { dir, port, bin };
        pg.up();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB -c max_connections=30",
            self.port,
            self.dir.display()
        );
        as_postgres(&[
            self.bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            self.data().to_str().unwrap(),
            "-l",
            self.dir.join("log").to_str().unwrap(),
            "-o",
            &opts,
            "-w",
            "-t",
            "30",
            "start",
        ]);
    }

    /// Stops the server (fast: open connections are closed) and waits for it to exit.
    pub fn down(&self) {
        as_postgres(&[
            self.bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            self.data().to_str().unwrap(),
            "-m",
            "fast",
            "-w",
            "-t",
            "30",
            "stop",
        ]);
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD_MARKER}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where tests keep artifacts (screenshots, scrapes): `<workspace>/artifacts`, git-ignored.
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&dir).expect("create artifacts/");
    dir
}
