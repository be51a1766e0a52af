//! `poolctl check` against the real PostgreSQL and Redis.

mod common;

use common::*;
use poolkit_postgres::tokio_postgres;

async fn pg_setting(name: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("DATABASE_URL");
    let task = tokio::spawn(conn);
    let row = client
        .query_one("SELECT current_setting($1)", &[&name])
        .await
        .unwrap();
    drop(client);
    task.await.unwrap().unwrap();
    row.get::<_, String>(0).parse().unwrap()
}

#[tokio::test]
async fn postgres_config_sources_facts_and_budget_as_json() {
    let url = database_url_with_marker();
    let (code, out, err) = run(
        &["check", "--json", "--instances", "2", "--connects", "3"],
        &[("DATABASE_URL", &url), ("MAX_POOL_SIZE", "7")],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json(&out);
    assert_eq!(v["ok"], true);
    let pool = &v["pools"][0];
    assert_eq!(pool["name"], "database");
    let rows = pool["config"].as_array().unwrap();
    let size = rows.iter().find(|r| r["setting"] == "pool size").unwrap();
    assert_eq!(
        (
            size["value"].as_str(),
            size["var"].as_str(),
            size["source"].as_str()
        ),
        (Some("7"), Some("MAX_POOL_SIZE"), Some("env"))
    );
    let timeout = rows
        .iter()
        .find(|r| r["setting"] == "acquire timeout")
        .unwrap();
    assert_eq!(
        (timeout["var"].as_str(), timeout["source"].as_str()),
        (Some("DATABASE_POOL_TIMEOUT"), Some("default"))
    );
    let pg = &pool["postgres"];
    assert_eq!(
        pg["max_connections"].as_i64(),
        Some(pg_setting("max_connections").await)
    );
    assert_eq!(
        pg["reserved"].as_i64(),
        Some(pg_setting("superuser_reserved_connections").await)
    );
    assert!(
        pg["version"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric),
        "{pg}"
    );
    assert!(pg["connections"].as_i64().unwrap() >= 1);
    assert_eq!(
        pg["budget"]["needed"].as_i64(),
        Some(2 * 7 + pg["reserved"].as_i64().unwrap())
    );
    assert_eq!(pg["budget"]["fits"], true);
    let connect = &pool["connect"];
    assert_eq!(connect["samples"], 3);
    assert!(
        connect["p50"].as_f64().unwrap() > 0.0
            && connect["p95"].as_f64().unwrap() >= connect["p50"].as_f64().unwrap()
    );
}

#[test]
fn budget_that_does_not_fit_fails_with_exit_1() {
    let url = database_url_with_marker();
    let (code, out, err) = run(
        &["check", "--instances", "1000"],
        &[("DATABASE_URL", &url), ("DATABASE_POOL_SIZE", "10")],
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("does NOT fit: 1000 instances × 10"), "{out}");
    assert!(out.contains("lower DATABASE_POOL_SIZE"), "{out}");
    assert!(out.contains("result: FAILED"), "{out}");
    assert!(err.contains("1 of 1 pools failed"), "{err}");
    // The human report shows where values came from, with the password redacted.
    assert!(
        out.contains("DATABASE_POOL_SIZE") && out.contains("env"),
        "{out}"
    );
    assert!(out.contains("postgres:***@"), "{out}");
}

#[test]
fn unreachable_server_fails_naming_the_address() {
    let port = closed_port();
    let url = format!("postgres://postgres:{MARKER}@127.0.0.1:{port}/test");
    // The acquire timeout is the default 30 s: a dead server must not take that long.
    let started = std::time::Instant::now();
    let (code, out, err) = run(&["check", "--connects", "1"], &[("DATABASE_URL", &url)]);
    let took = started.elapsed();
    // docs/poolctl.md: 4 when a server could not be reached.
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    let said = format!("{out}{err}").matches("refused").count();
    assert_eq!(said, 1, "the reason once:\n{out}\n{err}");
    assert!(
        out.contains(&format!("127.0.0.1:{port}")) && out.contains("FAILED"),
        "{out}"
    );
    assert!(out.contains("DATABASE_URL"), "{out}");
}

#[test]
fn bad_env_and_missing_env_exit_3() {
    let url = database_url_with_marker();
    let (code, _, err) = run(
        &["check"],
        &[("DATABASE_URL", &url), ("DATABASE_POOL_SIZE", "lots")],
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("DATABASE_POOL_SIZE") && err.contains("lots") && err.contains("whole number"),
        "{err}"
    );
    let (code, _, err) = run(&["check"], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("DATABASE_URL") && err.contains("--pool"),
        "{err}"
    );
    let (code, _, err) = run(
        &["check", "--pool", "DATABASE=postgres"],
        &[(
            "DATABASE_URL",
            &format!("postgres://u:{MARKER}@h:notaport/x"),
        )],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
}

#[test]
fn bad_flags_exit_2() {
    let (code, _, err) = run(&["check", "--instances", "0"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--instances"), "{err}");
    let (code, _, err) = run(&["check", "--pool", "DB=mysql"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("mysql") && err.contains("postgres, redis or http"),
        "{err}"
    );
    let (code, _, err) = run(&["chek"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("check"),
        "suggests the right subcommand: {err}"
    );
}

#[tokio::test]
async fn redis_version_maxclients_and_budget() {
    let url = redis_url_checked();
    let client = poolkit_redis::redis::Client::open(url.as_str()).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("REDIS_URL");
    let info: String = poolkit_redis::redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap()
        .trim()
        .to_owned();
    let maxclients: Vec<String> = poolkit_redis::redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, out, err) = run(
        &[
            "check",
            "--pool",
            "CACHE=redis",
            "--instances",
            "3",
            "--json",
        ],
        &[("CACHE_URL", &url), ("CACHE_POOL_SIZE", "2")],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json(&out);
    let r = &v["pools"][0]["redis"];
    assert_eq!(r["version"].as_str(), Some(version.as_str()));
    assert_eq!(r["maxclients"].as_i64(), maxclients[1].parse().ok());
    assert_eq!(r["budget"]["needed"], 3 * (2 + 2));
    assert_eq!(v["pools"][0]["name"], "cache");
}

/// `url` with `params` appended to its query string.
fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

#[tokio::test]
async fn held_out_settings_behave_as_stated() {
    let max = pg_setting("max_connections").await;
    // PostgreSQL 15 has no reserved_connections (16+ adds it).
    let reserved = pg_setting("superuser_reserved_connections").await;
    let url = database_url_with_marker();
    // A ceiling above max_connections, a typo, and Prisma's parameters the variable beats.
    let too_many = (max + 50).to_string();
    let (code, out, err) = run(
        &["check", "--connects", "5"],
        &[
            (
                "DATABASE_URL",
                &with_params(&url, "connection_limit=25&pool_timeout=10"),
            ),
            ("MAX_POOL_SIZE", &too_many),
            ("DATABASE_POOL_SZIE", "5"),
        ],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        !err.contains("already registered") && !out.contains("already registered"),
        "the connect probes share a name with a live pool:\n{err}"
    );
    assert!(!out.contains("at most 0 instances"), "{out}");
    assert!(
        out.contains(&format!(
            "lower MAX_POOL_SIZE to {} or less",
            max - reserved
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "warning: DATABASE_POOL_SZIE is not a poolkit variable; did you mean DATABASE_POOL_SIZE?"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "warning: MAX_POOL_SIZE={too_many} wins over connection_limit=25 in DATABASE_URL"
        )),
        "{out}"
    );

    // Prisma's parameters alone set the pool.
    let (code, out, err) = run(
        &["check", "--json", "--connects", "1"],
        &[(
            "DATABASE_URL",
            &with_params(&url, "connection_limit=25&pool_timeout=10"),
        )],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json(&out);
    let rows = v["pools"][0]["config"].as_array().expect("rows");
    let row = |s: &str| {
        rows.iter()
            .find(|r| r["setting"] == s)
            .expect("row")
            .clone()
    };
    assert_eq!(row("pool size")["value"], "25");
    assert_eq!(row("pool size")["var"], "DATABASE_URL connection_limit");
    assert_eq!(row("acquire timeout")["value"], "10s");
    // Prisma's "wait forever" is refused by name.
    let (code, _, err) = run(
        &["check"],
        &[("DATABASE_URL", &with_params(&url, "pool_timeout=0"))],
    );
    assert_ne!(code, 0);
    assert!(err.contains("DATABASE_URL (pool_timeout)"), "{err}");

    // A granted limit below max_connections, and the pooler's pool, feed the budget.
    let (code, out, _) = run(
        &["check", "--connects", "1"],
        &[
            ("DATABASE_URL", &url),
            ("MAX_POOL_SIZE", "30"),
            ("DATABASE_MAX_CONNECTIONS", "20"),
        ],
    );
    assert_ne!(code, 0, "30 connections cannot fit a grant of 20: {out}");
    assert!(out.contains("> DATABASE_MAX_CONNECTIONS 20"), "{out}");
    let (code, out, _) = run(
        &["check", "--connects", "1", "--instances", "10"],
        &[
            ("DATABASE_URL", &url),
            ("MAX_POOL_SIZE", "20"),
            ("SUPAVISOR_POOL_SIZE", "15"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("the pooler's SUPAVISOR_POOL_SIZE=15 server connections")
            && out.contains("200 client connections (10 instances × 20) share them"),
        "{out}"
    );
    let (code, out, _) = run(
        &[
            "check",
            "--connects",
            "1",
            "--pgbouncer-pool-size",
            &(max + 10).to_string(),
        ],
        &[("DATABASE_URL", &url), ("MAX_POOL_SIZE", "5")],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("lower --pgbouncer-pool-size to"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_shows_the_fleet_instances_and_shares() {
    let url = database_url();
    let redis = redis_url_checked();
    let key = format!("poolkit:test:check-fleet:{}", std::process::id());
    let vars: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), url.clone()),
        ("DATABASE_POOL_SIZE".into(), "4".into()),
        ("DATABASE_FLEET_BUDGET".into(), "6".into()),
        ("DATABASE_FLEET_REDIS_URL".into(), redis.clone()),
        ("DATABASE_FLEET_KEY".into(), key.clone()),
    ];
    let lookup = {
        let vars = vars.clone();
        move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    };
    let config = poolkit_postgres::Config::from_lookup("DATABASE", &lookup).expect("config");
    let a = poolkit_postgres::Pool::new(config.clone())
        .await
        .expect("instance a");
    let b = poolkit_postgres::Pool::new(config)
        .await
        .expect("instance b");
    // A new fleet lets members take shares after its first renewal period (the time a
    // store that lost its data gives the members it forgot to say what they hold).
    let start = std::time::Instant::now();
    while a.fleet().unwrap().share + b.fleet().unwrap().share < 6 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "both instances get their share: {:?} {:?}",
            a.fleet(),
            b.fleet()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run(&["check", "--json", "--connects", "1"], &env)
    })
    .await
    .expect("poolctl");
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json(&out);
    let fleet = &v["pools"][0]["fleet"];
    let instances = fleet["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 2, "the probe is not an instance: {fleet}");
    let shares: Vec<u64> = instances
        .iter()
        .map(|i| i["share"].as_u64().unwrap())
        .collect();
    assert_eq!(
        shares.iter().sum::<u64>(),
        6,
        "4 + 4 wanted, 6 to share: {fleet}"
    );
    assert_eq!(fleet["total"], 6);
    assert_eq!(fleet["budget"], 6);
    assert_eq!(
        (
            a.fleet().unwrap().share + b.fleet().unwrap().share,
            b.fleet().unwrap().instances
        ),
        (6, 2)
    );
    a.close();
    b.close();
}

#[test]
fn a_wrong_password_is_said_once_in_seconds_with_exit_4() {
    let bouncer = poolkit_core::env::process_lookup("PGBOUNCER_URL")
        .unwrap_or_else(|| "postgres://poolkit:poolkit_test@127.0.0.1:6432/test".to_owned());
    let url = bouncer.replace(":poolkit_test@", &format!(":{MARKER}@"));
    let started = std::time::Instant::now();
    let (code, out, err) = run(&["check", "--connects", "1"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    let said = format!("{out}{err}")
        .matches("password authentication failed")
        .count();
    assert_eq!(said, 1, "{out}\n{err}");
}
