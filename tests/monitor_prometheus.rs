//! A real Prometheus (Debian package `prometheus`) scrapes a pool of 2 connections with 50
//! callers through the monitor mounted under `/monitor`, with the scrape config from
//! docs/metrics.md: `/health`, `/alerts` and `/pools` agree with Prometheus while the pool
//! is saturated, `/health` answers at once, PromQL's p99 lands within 20 % of the true
//! p99, and no Grafana panel shows NaN.
#![cfg(all(feature = "monitor", feature = "postgres"))]

mod monitor_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use monitor_support::*;
use poolkit::monitor::{Endpoint, Monitor, MonitorConfig};

const POOL: &str = "mon_saturated";

fn docs(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(file)
}

/// The YAML block between the scrape-config markers of docs/metrics.md.
fn documented_scrape_config() -> String {
    let text = std::fs::read_to_string(docs("metrics.md")).expect("docs/metrics.md");
    let start = text
        .find("<!-- scrape-config:start -->")
        .expect("docs/metrics.md has a scrape config");
    let block = &text[start..];
    let yaml = block
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a yaml block");
    yaml.to_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant PromQL query against Prometheus: the `data.result` array.
async fn query(prom: SocketAddr, promql: &str) -> Vec<serde_json::Value> {
    let r = get(
        prom,
        &format!("/api/v1/query?query={}", percent_encode(promql)),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{promql}: {}", r.body);
    r.json()["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn value(sample: &serde_json::Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Polls `promql` until its first sample satisfies `ok`, for at most `within`.
async fn wait_for(prom: SocketAddr, promql: &str, within: Duration, ok: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let got = query(prom, promql).await;
        if got.first().map(value).is_some_and(&ok) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{promql} never matched within {within:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Prometheus on a free loopback port, killed when dropped.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_prometheus(app: SocketAddr) -> Prometheus {
    let dir = std::env::temp_dir().join(format!("poolkit-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).expect("a Prometheus directory");
    let token = dir.join("poolkit-token");
    std::fs::write(&token, TOKEN).expect("write the token file");
    std::fs::copy(docs("alerts.yml"), dir.join("alerts.yml")).expect("copy alerts.yml");
    let config = documented_scrape_config()
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("app.internal:8080", &app.to_string())
        .replace(
            "/etc/prometheus/poolkit-token",
            token.to_str().expect("UTF-8 path"),
        );
    assert!(config.contains(&app.to_string()), "{config}");
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, &config).expect("write prometheus.yml");
    let check = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(&config_path)
        .output()
        .expect("run promtool (install it with scripts/services.d/monitor.sh)");
    assert!(
        check.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let port = monitor_support::ports::child_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
    let child = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("run prometheus (install it with scripts/services.d/monitor.sh)");
    Prometheus { child, addr, dir }
}

/// Whether Prometheus answers 200 on `/-/ready` (its storage is open and it serves queries).
async fn prometheus_ready(addr: SocketAddr) -> bool {
    if tokio::net::TcpStream::connect(addr).await.is_err() {
        return false;
    }
    get(addr, "/-/ready", None).await.status == 200
}

/// The `q`-quantile of `values` (nearest rank).
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_the_endpoints_agree_under_saturation() {
    let pool = pg_pool(POOL, 2, &database_url()).await;
    let mut config = MonitorConfig::default().with_open(Endpoint::Metrics, false);
    config = config.with_open(Endpoint::Health, false);
    let monitor = Monitor::builder()
        .pools(vec![poolkit_core::pool(POOL).expect("registered")])
        .config(config.with_token(TOKEN))
        .build();
    let app = poolkit::monitor::axum::Router::new().nest("/monitor", monitor.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the app");
    let app_addr = listener.local_addr().expect("app address");
    let server = tokio::spawn(async move { poolkit::monitor::axum::serve(listener, app).await });
    let prom = start_prometheus(app_addr);
    let started = Instant::now();
    // Prometheus listens before it can answer: until its storage is open the API says
    // 503 "Service Unavailable". Wait for /-/ready, not for the port.
    while !prometheus_ready(prom.addr).await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Prometheus was not ready on {} within 30 s; see {}",
            prom.addr,
            prom.dir.join("prometheus.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One real scrape through the mounted path with the bearer token from the file.
    wait_for(
        prom.addr,
        "up{job=\"poolkit\"}",
        Duration::from_secs(30),
        |v| v == 1.0,
    )
    .await;

    // 50 callers on 2 connections, each holding one for 100 ms, for 7 s.
    let waits = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + Duration::from_secs(7);
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let pool = pool.clone();
            let waits = Arc::clone(&waits);
            tokio::spawn(async move {
                while Instant::now() < until {
                    let asked = Instant::now();
                    let c = pool.get().await.expect("checkout within the 5 s timeout");
                    waits
                        .lock()
                        .expect("waits")
                        .push(asked.elapsed().as_secs_f64());
                    c.simple_query("SELECT pg_sleep(0.1)").await.expect("query");
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Saturated now. /health answers at once, from the same snapshot as /pools.
    let auth = bearer();
    let asked = Instant::now();
    let health = get(app_addr, "/monitor/health", Some(&auth)).await;
    let took = asked.elapsed();
    let pools = get(app_addr, "/monitor/pools", Some(&auth)).await;
    let alerts = get(app_addr, "/monitor/alerts", Some(&auth)).await;
    assert!(
        took < Duration::from_millis(300),
        "/health took {took:?}: it queued behind the callers"
    );
    let health = health.json();
    assert_eq!(health["status"], "critical", "{health}");
    assert_eq!(health["pools"][0]["utilization"], 1.0, "{health}");
    let pools = pools.json();
    assert_eq!(pools["pools"][0]["status"], "critical", "{pools}");
    assert!(
        pools["pools"][0]["stats"]["pending"].as_u64().unwrap_or(0) > 10,
        "{pools}"
    );
    let alerts = alerts.json();
    assert_eq!(alerts["alerts"][0]["severity"], "critical", "{alerts}");
    assert_eq!(alerts["alerts"][0]["pool"], POOL, "{alerts}");
    // Prometheus sees the same: full, with waiters.
    wait_for(
        prom.addr,
        &format!("poolkit_utilization_ratio{{pool=\"{POOL}\"}}"),
        Duration::from_secs(5),
        |v| v == 1.0,
    )
    .await;
    wait_for(
        prom.addr,
        &format!("poolkit_pending_requests{{pool=\"{POOL}\"}}"),
        Duration::from_secs(5),
        |v| v > 10.0,
    )
    .await;

    for c in callers {
        c.await.expect("caller");
    }
    let acquires = pool.stats().acquires;
    // Wait for a scrape that has every checkout, then compare the quantiles.
    wait_for(
        prom.addr,
        &format!("poolkit_acquires_total{{pool=\"{POOL}\"}}"),
        Duration::from_secs(10),
        |v| v == acquires as f64,
    )
    .await;
    let mut waits = waits.lock().expect("waits").clone();
    assert!(
        quantile(&mut waits, 0.5) > 0.5,
        "the pool was not saturated"
    );
    for q in [0.5, 0.95, 0.99] {
        let exact = quantile(&mut waits, q);
        let promql = query(
            prom.addr,
            &format!(
                "histogram_quantile({q}, poolkit_acquire_wait_seconds_bucket{{pool=\"{POOL}\"}})"
            ),
        )
        .await
        .first()
        .map(value)
        .expect("a quantile from Prometheus");
        let error = (promql - exact).abs() / exact;
        eprintln!(
            "{} checkouts: exact p{} {exact:.3} s, PromQL {promql:.3} s ({:.1} % off)",
            waits.len(),
            q * 100.0,
            error * 100.0
        );
        assert!(
            error <= 0.2,
            "PromQL p{} {promql} vs exact {exact}",
            q * 100.0
        );
    }
    let stats = pool.stats();
    eprintln!(
        "/pools: p50 {:.3} s, p95 {:.3} s, p99 {:.3} s",
        stats.wait.p50, stats.wait.p95, stats.wait.p99
    );

    // Every Grafana panel query: "no data" (an empty result), never NaN.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(docs("grafana-dashboard.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut empty = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "1m")
                .replace("$pool", ".*");
            let result = query(prom.addr, &expr).await;
            if result.is_empty() {
                empty += 1;
            }
            for sample in &result {
                assert!(
                    !value(sample).is_nan(),
                    "panel {}: {expr} gives NaN: {sample}",
                    panel["title"]
                );
            }
        }
    }
    assert!(empty >= 1, "the HTTP reuse panel has no HTTP pool to show");
    server.abort();
    let _ = server.await;
}
