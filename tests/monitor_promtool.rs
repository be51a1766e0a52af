//! promtool (Debian package `prometheus`) checks the alert rules, their unit tests, every
//! Grafana query, and a live `/metrics` scrape of real pools under load.
#![cfg(all(feature = "monitor", feature = "postgres"))]

mod monitor_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use monitor_support::*;
use poolkit::monitor::{Monitor, MonitorConfig};
use poolkit_core::metrics::names;

fn docs(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(file)
}

/// Runs promtool with `args` (and `stdin`), failing with a hint when it is not installed.
fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install it with scripts/services.d/monitor.sh (apt-get install prometheus)")
        });
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write to promtool");
    drop(input);
    child.wait_with_output().expect("promtool output")
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: promtool exited with {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `poolkit_*` name in `text`, with histogram suffixes stripped.
fn metric_names(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("poolkit_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
            .unwrap_or(name);
        found.push(base.to_owned());
        rest = &tail[end..];
    }
    found
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = docs("alerts.yml");
    assert_ok(
        "check rules",
        &promtool(&["check", "rules", rules.to_str().unwrap()], None),
    );
    let tests = docs("alerts_test.yml");
    assert_ok(
        "test rules",
        &promtool(&["test", "rules", tests.to_str().unwrap()], None),
    );
    let text = std::fs::read_to_string(&rules).expect("docs/alerts.yml");
    let used = metric_names(&text);
    for needed in [
        names::UTILIZATION_RATIO,
        names::CONNECTION_ERRORS_TOTAL,
        names::ACQUIRE_TIMEOUTS_TOTAL,
        names::ACQUIRE_WAIT_SECONDS,
    ] {
        assert!(
            used.iter().any(|n| n == needed),
            "alerts.yml has no rule on {needed}"
        );
    }
    for name in &used {
        assert!(
            names::ALL.contains(&name.as_str()),
            "alerts.yml uses {name}, which poolkit does not export"
        );
    }
}

#[test]
fn grafana_dashboard_is_importable_and_its_queries_parse() {
    let text = std::fs::read_to_string(docs("grafana-dashboard.json"))
        .expect("docs/grafana-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(
        dash["__inputs"][0]["pluginId"], "prometheus",
        "a datasource input for import"
    );
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    let panels = dash["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Utilization",
        "Waiters",
        "p95 / p99",
        "timeout rate",
        "error rate",
        "reuse ratio",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel for {want}: {titles:?}"
        );
    }
    // Each query, with Grafana's variables filled in, must be valid PromQL: promtool parses
    // them as recording rules.
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    let mut count = 0;
    for p in panels {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "5m")
                .replace("$pool", ".*");
            for name in metric_names(&expr) {
                assert!(
                    names::ALL.contains(&name.as_str()),
                    "the dashboard uses {name}, which poolkit does not export"
                );
            }
            count += 1;
            rules.push_str(&format!(
                "      - record: grafana:query_{count}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    assert!(count >= 6, "{count} queries");
    let path = artifacts().join("grafana-queries.rules.yml");
    std::fs::write(&path, rules).expect("write the queries");
    assert_ok(
        "grafana queries",
        &promtool(&["check", "rules", path.to_str().unwrap()], None),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_scrape_passes_promtool_check_metrics() {
    let pool = pg_pool("mon_promtool", 3, &url_with_marker()).await;
    // A little load: 6 workers on 3 connections for a bounded number of rounds.
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    let c = pool.get().await.expect("checkout under load");
                    c.simple_query("SELECT pg_sleep(0.002)")
                        .await
                        .expect("query");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    let (_, server) = spawn(Monitor::builder(), MonitorConfig::default()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let scrape = get(server.local_addr(), "/metrics", None).await;
    assert_eq!(scrape.status, 200);
    assert!(
        scrape
            .body
            .contains("\npoolkit_acquires_total{pool=\"mon_promtool\",backend=\"postgres\"} 120\n"),
        "6 workers x 20 checkouts:\n{}",
        scrape.body
    );
    std::fs::write(artifacts().join("metrics.txt"), &scrape.body).expect("keep the scrape");
    let out = tokio::task::block_in_place(|| promtool(&["check", "metrics"], Some(&scrape.body)));
    assert_ok("check metrics on a live scrape", &out);
    server.shutdown().await.expect("shutdown");
}
