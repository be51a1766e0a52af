//! `poolctl bench` against the real PostgreSQL and Redis: short runs, small concurrency.

mod common;

use common::*;

/// Checks the seed's line shape and returns its fields.
fn seed_fields(line: &str) -> Vec<(String, String)> {
    let fields: Vec<(String, String)> = line
        .split(" | ")
        .map(|f| {
            let (k, v) = f
                .split_once(": ")
                .unwrap_or_else(|| panic!("field `{f}` in `{line}`"));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["Pool Size", "Concurrency", "Throughput", "P95", "Timeouts"],
        "{line}"
    );
    assert!(fields[2].1.ends_with(" RPS"), "{line}");
    assert!(fields[3].1.ends_with("ms"), "{line}");
    assert!(fields[4].1.ends_with('%'), "{line}");
    fields
}

#[test]
fn postgres_run_prints_the_seed_line_and_details() {
    let url = database_url_with_marker();
    let (code, out, err) = run(
        &[
            "bench",
            "postgres",
            "-c",
            "8",
            "-d",
            "1s",
            "--pool-size",
            "3",
        ],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let line = out.lines().next().unwrap();
    let f = seed_fields(line);
    assert_eq!(
        (f[0].1.as_str(), f[1].1.as_str(), f[4].1.as_str()),
        ("3", "8", "0.0%"),
        "{out}"
    );
    let rps: u64 = f[2]
        .1
        .trim_end_matches(" RPS")
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(rps > 50, "a local SELECT 1 runs far faster: {out}");
    assert!(
        out.contains("acquire wait  p50 ") && out.contains("(client)"),
        "{out}"
    );
    assert!(out.contains("operation     p50 "), "{out}");
    assert!(out.contains(" ok, 0 errors"), "{out}");
}

#[test]
fn exhausted_pool_reports_timeouts_by_kind() {
    let url = database_url_with_marker();
    let (code, out, err) = run(
        &[
            "bench",
            "postgres",
            "-c",
            "12",
            "-d",
            "1s",
            "--pool-size",
            "1",
            "--acquire-timeout",
            "30ms",
            "--query",
            "SELECT pg_sleep(0.02)",
            "--json",
        ],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json(&out);
    let r = &v["runs"][0];
    let timeouts = r["errors"]["timeout"].as_u64().unwrap_or(0);
    let ok = r["ok"].as_u64().unwrap();
    assert!(timeouts > 0 && ok > 0, "{r}");
    let ratio = r["timeout_ratio"].as_f64().unwrap();
    #[allow(clippy::cast_precision_loss)]
    let expected = timeouts as f64 / (ok + timeouts) as f64;
    assert!((ratio - expected).abs() < 1e-9, "{r}");
    assert_eq!(r["connections_opened"], 1, "{r}");
    // One connection, 20 ms per statement: at most about 50 statements a second.
    assert!(r["throughput_rps"].as_f64().unwrap() < 60.0, "{r}");
    assert!(r["latency"]["p50"].as_f64().unwrap() >= 0.02, "{r}");
}

#[test]
fn pool_sizes_and_steps_make_a_table_and_a_chart() {
    let url = database_url_with_marker();
    let dir = std::env::temp_dir().join(format!("poolctl-chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chart = dir.join("bench.svg");
    let (code, out, err) = run(
        &[
            "bench",
            "postgres",
            "--pool-sizes",
            "1,2",
            "--steps",
            "2,4",
            "-d",
            "1s",
            "--chart",
            chart.to_str().unwrap(),
        ],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let seed_lines: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("Pool Size: "))
        .collect();
    assert_eq!(seed_lines.len(), 4, "{out}");
    // Step by step, every size in turn at each step (the table groups them by size).
    for (line, (size, c)) in seed_lines
        .iter()
        .zip([("1", "2"), ("2", "2"), ("1", "4"), ("2", "4")])
    {
        let f = seed_fields(line);
        assert_eq!((f[0].1.as_str(), f[1].1.as_str()), (size, c), "{line}");
    }
    let header = out
        .lines()
        .find(|l| l.starts_with("Pool Size  Concurrency"))
        .expect("a table");
    assert!(
        header.contains("RPS") && header.contains("P95") && header.contains("Timeouts"),
        "{header}"
    );
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "not an SVG"
    );
    for text in [
        "Throughput",
        "P95 latency",
        "pool 1",
        "pool 2",
        "concurrent users",
    ] {
        assert!(svg.contains(text), "the chart lacks `{text}`");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn auto_is_a_column_beside_the_fixed_sizes() {
    let url = database_url_with_marker();
    let (code, out, err) = run(
        &[
            "bench",
            "postgres",
            "--pool-sizes",
            "1,4,auto",
            "--steps",
            "20,40",
            "-d",
            "1s",
            "--auto-interval",
            "100ms",
            "--query",
            "SELECT pg_sleep(0.005)",
            "--json",
        ],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        !err.contains("already registered"),
        "the bench's pools have names of their own: {err}"
    );
    let v = json(&out);
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 6, "{v}");
    let auto: Vec<&serde_json::Value> = runs.iter().filter(|r| r["auto_sized"] == true).collect();
    assert_eq!(auto.len(), 2, "one auto run per step: {v}");
    for r in &auto {
        assert_eq!(
            r["pool_size"], 4,
            "the largest fixed size is the ceiling: {r}"
        );
        let open_limit = r["open_limit"].as_u64().unwrap();
        assert!((1..=4).contains(&open_limit), "{r}");
        assert!(r["ok"].as_u64().unwrap() > 50, "{r}");
        assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    }
    // 5 ms statements: the auto pool grows past one connection.
    assert!(auto[1]["open_limit"].as_u64().unwrap() > 1, "{v}");
    let (code, out, err) = run(
        &[
            "bench",
            "postgres",
            "--pool-sizes",
            "1,auto",
            "-c",
            "4",
            "-d",
            "1s",
        ],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Pool Size: auto("), "{out}");
}

#[test]
fn sizes_run_in_turns_with_slice() {
    let url = database_url_with_marker();
    let (code, out, err) = run(
        &[
            "bench",
            "postgres",
            "--pool-sizes",
            "1,4,auto",
            "--steps",
            "20",
            "--rounds",
            "2",
            "-d",
            "1s",
            "--slice",
            "250ms",
            "--query",
            "SELECT pg_sleep(0.005)",
            "--json",
        ],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json(&out);
    assert_eq!(v["turns"], 4, "{v}");
    assert_eq!(v["turn_seconds"], 0.25, "{v}");
    let every = v["every_round"].as_array().expect("every_round");
    assert_eq!(every.len(), 6, "3 sizes × 2 rounds: {v}");
    for r in every {
        // Each size ran its four turns: the whole -d under load.
        assert_eq!(r["seconds"], 1.0, "{r}");
        assert!(r["ok"].as_u64().unwrap() > 20, "{r}");
        assert_eq!(r["errors"], serde_json::json!({}), "{r}");
        if r["auto_sized"] == false {
            // A fixed pool is built once per step and kept through its turns.
            assert_eq!(r["connections_opened"], r["pool_size"], "{r}");
        }
    }
    // 5 ms statements: 4 connections do more than 1 in the same turns.
    let rps = |size: u64| {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["pool_size"] == size && r["auto_sized"] == false)
            .map(|r| r["throughput_rps"].as_f64().unwrap())
            .unwrap()
    };
    assert!(rps(4) > 2.0 * rps(1), "{v}");
}

#[test]
fn redis_exclusive_pool_with_auto_and_pgbench_statement() {
    let redis = redis_url_checked();
    let (code, out, err) = run(
        &[
            "bench",
            "redis",
            "--op",
            "exclusive-get",
            "--pool-sizes",
            "2,auto",
            "-c",
            "8",
            "-d",
            "1s",
            "--json",
        ],
        &[("REDIS_URL", &redis)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json(&out);
    let runs = v["runs"].as_array().expect("runs");
    assert!(runs.iter().any(|r| r["auto_sized"] == true), "{v}");
    for r in runs {
        assert!(r["ok"].as_u64().unwrap() > 50, "{r}");
        assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    }
    // `:aid` becomes a row number (here in a statement that needs no pgbench tables).
    let (code, out, err) = run(
        &[
            "bench",
            "postgres",
            "-c",
            "4",
            "-d",
            "1s",
            "--query",
            "SELECT :aid::int BETWEEN 1 AND 100000",
            "--json",
        ],
        &[("DATABASE_URL", &database_url_with_marker())],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json(&out);
    assert_eq!(v["runs"][0]["errors"], serde_json::json!({}), "{v}");
    assert!(v["runs"][0]["ok"].as_u64().unwrap() > 50, "{v}");
}

#[tokio::test]
async fn redis_get_set_run_and_cleans_up() {
    let url = redis_url_checked();
    let (code, out, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            run(
                &["bench", "redis", "-c", "10", "-d", "1s", "--json"],
                &[("REDIS_URL", &url)],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json(&out);
    let r = &v["runs"][0];
    assert_eq!(v["backend"], "redis");
    assert!(r["ok"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    assert_eq!(r["acquire_wait_source"], "pool");
    assert_eq!(r["pool_size"], 2, "the env default");
    let client = poolkit_redis::redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let left: Vec<String> = poolkit_redis::redis::cmd("KEYS")
        .arg("poolctl:bench:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "bench keys left behind: {left:?}");
}

#[test]
fn bad_flags_and_unreachable_servers() {
    let (code, _, err) = run(&["bench", "mysql"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("postgres") && err.contains("redis"), "{err}");
    let (code, _, err) = run(&["bench", "postgres", "--pool-sizes", "10,x"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--pool-sizes"), "{err}");
    let (code, _, err) = run(&["bench", "postgres", "-d", "0"], &[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["bench", "postgres", "-d", "1s"], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    let port = closed_port();
    let (code, _, err) = run(
        &["bench", "redis", "-d", "1s"],
        &[
            ("REDIS_URL", &format!("redis://127.0.0.1:{port}")),
            ("REDIS_POOL_TIMEOUT", "2s"),
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("REDIS_URL"),
        "{err}"
    );
    let (code, _, err) = run(
        &["bench", "postgres", "-d", "1s"],
        &[
            (
                "DATABASE_URL",
                &format!("postgres://postgres:{MARKER}@127.0.0.1:{port}/test"),
            ),
            ("DATABASE_POOL_TIMEOUT", "2s"),
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn postgres_mode_both_runs_shared_beside_exclusive() {
    let url = database_url_with_marker();
    let (code, out, err) = run(
        &[
            "bench",
            "postgres",
            "-c",
            "50",
            "-d",
            "1s",
            "--pool-size",
            "8",
            "--mode",
            "both",
            "--json",
            "--quiet",
        ],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let runs = v["runs"].as_array().expect("runs");
    let clients: Vec<&str> = runs.iter().map(|r| r["client"].as_str().unwrap()).collect();
    assert_eq!(clients, ["poolkit", "poolkit shared"], "{out}");
    for r in runs {
        assert_eq!(
            r["errors"].as_object().map_or(0, serde_json::Map::len),
            0,
            "{r}"
        );
        assert!(r["throughput_rps"].as_f64().unwrap() > 100.0, "{r}");
    }
}
