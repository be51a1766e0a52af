//! The dashboard in Debian's headless Chromium, against a running monitor with real pools
//! under load: the test reads the rendered numbers from the page and keeps a screenshot in
//! `artifacts/dashboard.png`.
#![cfg(all(feature = "monitor", feature = "postgres"))]

mod monitor_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use monitor_support::*;
use poolkit::monitor::{Monitor, MonitorConfig};

/// Runs headless Chromium on `url` with `extra` arguments; returns its stdout.
async fn chromium(url: &str, extra: &[&str]) -> String {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let profile = std::env::temp_dir().join(format!(
        "poolkit-monitor-chromium-{}-{run}",
        std::process::id()
    ));
    let mut cmd = tokio::process::Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        // Let the page run its timers (about 4 polls) before the DOM is read.
        "--virtual-time-budget=4500",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finished within 90 s")
        .unwrap_or_else(|e| panic!("cannot run chromium ({e}): install it with scripts/services.d/monitor.sh (apt-get install chromium)"));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 DOM")
}

/// The text of the element carrying `data-pool="{pool}" data-field="{field}"`.
fn field(dom: &str, pool: &str, field: &str) -> String {
    let key = format!("data-pool=\"{pool}\" data-field=\"{field}\">");
    let start = dom
        .find(&key)
        .unwrap_or_else(|| panic!("no {field} for {pool} in the rendered page:\n{dom}"))
        + key.len();
    dom[start..].split('<').next().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_numbers_in_chromium() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A pool at 70 % (7 of 10 held) and a saturated one (6 workers on 2 connections).
    let steady = pg_pool("dash_db", 10, &url_with_marker()).await;
    let held = hold(&steady, 7).await;
    let busy = pg_pool("dash_busy", 2, &url_with_marker()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (busy, stop) = (busy.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                let mut rounds = 0u32;
                while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                    let c = busy.get().await.expect("checkout under load");
                    c.simple_query("SELECT pg_sleep(0.05)")
                        .await
                        .expect("query");
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let (_, server) = spawn(Monitor::builder(), MonitorConfig::default()).await;
    let base = format!("http://{}/", server.local_addr());

    let dom = chromium(&format!("{base}#token={TOKEN}"), &["--dump-dom"]).await;
    std::fs::write(artifacts().join("dashboard.html"), &dom).expect("keep the DOM");
    assert_no_secret("the rendered dashboard", &dom);
    let updates: u32 = dom
        .split("data-updates=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("data-updates on <body>");
    assert!(
        updates >= 2,
        "the page polled /pools only {updates} times:\n{dom}"
    );

    // The steady pool: exactly what the test set up.
    assert_eq!(field(&dom, "dash_db", "utilization"), "70.0%");
    assert_eq!(field(&dom, "dash_db", "used"), "7");
    assert_eq!(field(&dom, "dash_db", "max"), "10");
    assert_eq!(field(&dom, "dash_db", "pending"), "0");
    assert_eq!(field(&dom, "dash_db", "status"), "warning");
    assert!(
        dom.contains("data-pool=\"dash_db\" data-status=\"warning\""),
        "status colour class"
    );
    assert!(
        dom.contains("Dash_db pool utilization high: 70.0% (7 of 10 in use)"),
        "the alert is shown:\n{dom}"
    );
    // 70 % used, nobody waiting, no timeouts: the advice is not to raise the size.
    assert!(
        dom.contains("no change needed"),
        "the recommendation is shown"
    );

    // The busy pool: full, with callers queued and a measurable p95 wait.
    assert_eq!(field(&dom, "dash_busy", "max"), "2");
    let used: u32 = field(&dom, "dash_busy", "used")
        .parse()
        .expect("used is a number");
    let pending: u32 = field(&dom, "dash_busy", "pending")
        .parse()
        .expect("waiters is a number");
    assert!(
        used <= 2 && used + pending >= 4,
        "6 workers on 2 connections: used {used}, waiting {pending}"
    );
    let util = field(&dom, "dash_busy", "utilization");
    assert_eq!(
        util,
        format!("{:.1}%", f64::from(used) * 50.0),
        "utilization agrees with in-use"
    );
    let p95 = field(&dom, "dash_busy", "p95");
    let p95_ms: f64 = p95
        .strip_suffix(" ms")
        .map(|v| v.parse().expect("p95 number"))
        .or_else(|| {
            p95.strip_suffix(" s")
                .map(|v| v.parse::<f64>().expect("p95 number") * 1000.0)
        })
        .unwrap_or_else(|| panic!("p95 {p95:?}"));
    assert!(
        p95_ms >= 10.0,
        "queued callers wait about a query's time: p95 {p95}"
    );
    if used == 2 {
        // Full, but callers wait ~100 ms of a 30 s acquire timeout and none time out:
        // warning, not critical (critical needs timeouts or long waits).
        assert_eq!(field(&dom, "dash_busy", "status"), "warning");
        assert!(
            dom.contains("id=\"overall\" data-status=\"warning\""),
            "overall is the worst status"
        );
    }

    // Without the token the page asks for it instead of showing numbers.
    let locked = chromium(&base, &["--dump-dom"]).await;
    assert!(
        locked.contains("<form id=\"auth\" class=\"show\">"),
        "{locked}"
    );
    assert!(locked.contains("401"), "{locked}");
    assert!(!locked.contains("data-field=\"utilization\""));

    // A screenshot for humans, kept in the test output.
    let png = artifacts().join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    let shot = format!("--screenshot={}", png.display());
    chromium(
        &format!("{base}#token={TOKEN}"),
        &[&shot, "--window-size=1280,900"],
    )
    .await;
    let bytes = std::fs::read(&png).expect("chromium wrote artifacts/dashboard.png");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        bytes.len() > 20_000,
        "a {}-byte screenshot is blank",
        bytes.len()
    );
    println!(
        "screenshot: {} ({} bytes)",
        Path::new(&png).display(),
        bytes.len()
    );

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let rounds = w.await.expect("load worker");
        assert!(rounds > 0, "every worker got connections");
    }
    drop(held);
    server.shutdown().await.expect("shutdown");
}

/// The value of attribute `attr` on the chart `chart` of `pool` in the rendered page.
fn chart_attr(dom: &str, pool: &str, chart: &str, attr: &str) -> String {
    let key = format!("data-pool=\"{pool}\" data-chart=\"{chart}\"");
    let start = dom
        .find(&key)
        .unwrap_or_else(|| panic!("no {chart} chart for {pool}:\n{dom}"));
    let tag = &dom[start..dom[start..].find('>').map_or(dom.len(), |e| start + e)];
    let a = format!("{attr}=\"");
    tag.split(&a)
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or_else(|| panic!("no {attr} in {tag}"))
        .to_owned()
}

fn body_attr(dom: &str, attr: &str) -> String {
    let body = dom.split("<body").nth(1).expect("a body");
    body.split(&format!("{attr}=\""))
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or("")
        .to_owned()
}

async fn screenshot(url: &str, file: &str) -> usize {
    let png = artifacts().join(file);
    let _ = std::fs::remove_file(&png);
    let shot = format!("--screenshot={}", png.display());
    chromium(url, &[&shot, "--window-size=1280,900"]).await;
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("chromium wrote no {file}: {e}"));
    assert!(bytes.starts_with(b"\x89PNG"), "{file} is not a PNG");
    assert!(
        bytes.len() > 20_000,
        "{file}: a {}-byte screenshot is blank",
        bytes.len()
    );
    bytes.len()
}

/// Connections held in pool `i` of the twenty.
fn want_held(i: usize) -> usize {
    match i % 7 {
        0 => 2,
        3 => 1,
        _ => 0,
    }
}

/// The two Chromium tests run one after the other, so their pools never add up on the
/// shared server.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_keeps_history_with_1_and_with_20_pools() {
    let _one = ONE_AT_A_TIME.lock().await;
    // One pool at 50 %.
    let one = pg_pool("hist_one", 4, &url_with_marker()).await;
    let held_one = hold(&one, 2).await;
    let monitor =
        Monitor::builder().pools(vec![poolkit_core::pool("hist_one").expect("registered")]);
    let (_, server) = spawn(monitor, MonitorConfig::default()).await;
    let base = format!("http://{}/", server.local_addr());
    let dom = chromium(&format!("{base}#token={TOKEN}"), &["--dump-dom"]).await;
    std::fs::write(artifacts().join("dashboard-1.html"), &dom).expect("keep the DOM");
    for chart in ["utilization", "waiters", "p95"] {
        let points: u32 = chart_attr(&dom, "hist_one", chart, "data-points")
            .parse()
            .expect("a count");
        assert!(points >= 3, "{chart}: {points} samples after 4 polls");
    }
    assert!(
        dom.contains("data-pool=\"hist_one\" data-chart-last=\"utilization\">50.0%<"),
        "{dom}"
    );
    assert!(dom.contains("last 15 min, kept in this tab"));
    assert_eq!(
        body_attr(&dom, "data-overflow"),
        "false",
        "the page fits 1280 px"
    );
    // A 2 s window keeps at most the last 2–3 samples: older ones are dropped.
    let short = chromium(&format!("{base}#token={TOKEN}&window=2"), &["--dump-dom"]).await;
    let points: u32 = chart_attr(&short, "hist_one", "utilization", "data-points")
        .parse()
        .expect("count");
    assert!(
        (1..=3).contains(&points),
        "a 2 s window kept {points} samples"
    );
    screenshot(&format!("{base}#token={TOKEN}"), "dashboard-1.png").await;
    server.shutdown().await.expect("shutdown");

    // Twenty pools of 2: three full, three half used, the rest idle (few server connections,
    // as the test server is shared).
    let mut pools = Vec::new();
    let mut held = Vec::new();
    for i in 0..20 {
        let name = format!("hist_{i:02}");
        let p = poolkit::postgres::Pool::builder()
            .url(url_with_marker())
            .name(&name)
            .pool_size(2)
            .min_idle(0)
            .build()
            .await
            .expect("a pool");
        held.push(hold(&p, want_held(i)).await);
        pools.push(p);
    }
    let registered: Vec<_> = (0..20)
        .map(|i| poolkit_core::pool(&format!("hist_{i:02}")).expect("registered"))
        .collect();
    let (_, server) = spawn(
        Monitor::builder().pools(registered),
        MonitorConfig::default(),
    )
    .await;
    let base = format!("http://{}/", server.local_addr());
    let dom = chromium(&format!("{base}#token={TOKEN}"), &["--dump-dom"]).await;
    std::fs::write(artifacts().join("dashboard-20.html"), &dom).expect("keep the DOM");
    assert!(
        dom.contains("<main id=\"pools\" class=\"many\">"),
        "compact layout for 20 pools"
    );
    for i in 0..20 {
        let name = format!("hist_{i:02}");
        let points: u32 = chart_attr(&dom, &name, "utilization", "data-points")
            .parse()
            .expect("count");
        assert!(points >= 2, "{name}: {points} samples");
        let want = ["0.0%", "50.0%", "100.0%"][want_held(i)];
        assert!(
            dom.contains(&format!(
                "data-pool=\"{name}\" data-chart-last=\"utilization\">{want}<"
            )),
            "{name} shows {want}"
        );
    }
    assert_eq!(
        body_attr(&dom, "data-overflow"),
        "false",
        "20 pools fit 1280 px wide"
    );
    screenshot(&format!("{base}#token={TOKEN}"), "dashboard-20.png").await;
    server.shutdown().await.expect("shutdown");
    drop(held);
    drop(held_one);
}
