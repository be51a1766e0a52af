//! `poolctl size`: the arithmetic through the binary, the server's limits read live, and
//! demand read from a running poolkit monitor.

mod common;

use common::*;

#[test]
fn concurrency_and_hold_give_pool_sizes_and_env_lines() {
    // 1000 concurrent requests of 100 ms that hold a connection 20 ms: 200 busy connections.
    let (code, out, err) = run(
        &[
            "size",
            "--concurrency",
            "1000",
            "--hold",
            "20ms",
            "--request-time",
            "100ms",
            "--instances",
            "4",
            "--max-connections",
            "400",
            "--reserved",
            "3",
            "--cores",
            "8",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("200.0 connections busy"), "{out}");
    assert!(out.contains("\nDATABASE_POOL_SIZE=63\n"), "{out}");
    assert!(out.contains("\nDATABASE_POOL_MAXSIZE="), "{out}");
    assert!(
        out.contains("cores × 2 + spindles = 8 × 2 + 1 = 17"),
        "{out}"
    );
    assert!(out.contains("default_pool_size = 250"), "{out}");
    // The same load against a 100-connection server does not fit directly.
    let (code, out, _) = run(
        &[
            "size",
            "--concurrency",
            "1000",
            "--hold",
            "20ms",
            "--instances",
            "4",
            "--max-connections",
            "100",
            "--reserved",
            "3",
            "--json",
            "--prefix",
            "supabase",
        ],
        &[],
    );
    assert_eq!(code, 0);
    let v = json(&out);
    assert_eq!(v["fits_direct"], false);
    assert_eq!(v["pgbouncer_default_pool_size"], 80);
    assert_eq!(v["env"][0], "SUPABASE_POOL_SIZE=63");
}

#[test]
fn max_connections_is_read_from_the_server() {
    let url = database_url_with_marker();
    let (code, out, err) = run(
        &["size", "--rps", "500", "--hold", "10ms", "--json"],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json(&out);
    let (check_code, check_out, _) = run(
        &["check", "--json", "--connects", "1"],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(check_code, 0);
    let c = json(&check_out);
    assert_eq!(
        v["input"]["max_connections"],
        c["pools"][0]["postgres"]["max_connections"]
    );
    assert!(
        (v["input"]["busy_total"].as_f64().unwrap() - 5.0).abs() < 1e-9,
        "{v}"
    );
}

#[test]
fn bad_input_exits_2() {
    let (code, _, err) = run(&["size"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--concurrency") && err.contains("--monitor"),
        "{err}"
    );
    let (code, _, err) = run(&["size", "--concurrency", "10", "--hold", "soon"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--hold") && err.contains("500ms"), "{err}");
    let (code, _, err) = run(
        &[
            "size",
            "--concurrency",
            "10",
            "--hold",
            "1s",
            "--request-time",
            "10ms",
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--request-time"), "{err}");
    let (code, _, err) = run(&["size", "--rps", "5", "--concurrency", "5"], &[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["size", "--monitor", "https://x"], &[]);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_demand_from_a_running_monitor() {
    const TOKEN: &str = "poolctl-test-token-0123456789";
    let url = database_url_with_marker();
    let vars = [
        ("SIZETEST_URL", url.clone()),
        ("SIZETEST_POOL_SIZE", "4".to_owned()),
        ("SIZETEST_POOL_MIN_IDLE", "0".to_owned()),
    ];
    let lookup = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let pool = poolkit_postgres::Pool::new(
        poolkit_postgres::Config::from_lookup("SIZETEST", &lookup).unwrap(),
    )
    .await
    .expect("DATABASE_URL");
    let held = [
        pool.get().await.unwrap(),
        pool.get().await.unwrap(),
        pool.get().await.unwrap(),
    ];
    let mon_vars = [
        ("POOLKIT_MONITOR_ADDR", "127.0.0.1:0"),
        ("POOLKIT_MONITOR_TOKEN", TOKEN),
    ];
    let config = poolkit_monitor::MonitorConfig::from_lookup(&|k| {
        mon_vars
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap();
    let server = poolkit_monitor::Monitor::builder()
        .config(config)
        .without_metrics()
        .build()
        .spawn()
        .await
        .unwrap();
    let monitor = format!("http://{}", server.local_addr());
    let args = [
        "size",
        "--monitor",
        &monitor,
        "--prefix",
        "SIZETEST",
        "--max-connections",
        "100",
        "--reserved",
        "3",
    ];
    let (code, out, err) = {
        let args = args.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, &[("POOLKIT_MONITOR_TOKEN", TOKEN)])
        })
        .await
        .unwrap()
    };
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("pool `sizetest` has 3 in use + 0 waiting of 4"),
        "{out}"
    );
    assert!(out.contains("SIZETEST_POOL_SIZE=4"), "{out}");
    // Without the token the monitor refuses, and poolctl says which variable to set.
    let (code, _, err) = {
        let args = args.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, &[])
        })
        .await
        .unwrap()
    };
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("401") && err.contains("POOLKIT_MONITOR_TOKEN"),
        "{err}"
    );
    drop(held);
    server.shutdown().await.unwrap();
    pool.drain(std::time::Duration::from_secs(2)).await;
}
