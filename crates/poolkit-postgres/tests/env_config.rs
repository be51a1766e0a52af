//! A pool built from the names users already have in their `.env` files.

mod common;

use common::*;
use poolkit_postgres::{Config, Pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_env_names_build_a_working_pool() {
    let admin = admin().await;
    let url = database_url();
    let app = app_name("envpool");
    let lookup = |k: &str| match k {
        "DATABASE_URL" => Some(url.clone()),
        "MAX_POOL_SIZE" => Some("20".into()),
        "POOL_WARMUP_SIZE" => Some("3".into()),
        "DATABASE_POOL_TIMEOUT" => Some("30.0".into()),
        "DATABASE_MAX_LIFETIME" => Some("10m".into()),
        "DATABASE_IDLE_TIMEOUT" => Some("30s".into()),
        "DATABASE_MAX_USES" => Some("50000".into()),
        "DATABASE_PING_IF_IDLE" => Some("500ms".into()),
        "DATABASE_STATEMENT_TIMEOUT" => Some("150ms".into()),
        "DATABASE_APPLICATION_NAME" => Some(app.clone()),
        _ => None,
    };
    let config = Config::from_lookup("DATABASE", &lookup).expect("every seed name parses");
    let pool = Pool::new(config).await.expect("build");
    assert_eq!(
        backends(&admin, "envpool").await,
        3,
        "POOL_WARMUP_SIZE=3 warmed 3 connections"
    );
    let s = pool.stats();
    assert_eq!(
        (s.max_size, s.min_idle, s.ceiling_var.as_str()),
        (20, 3, "MAX_POOL_SIZE")
    );
    let conn = pool.get().await.expect("get");
    let row = conn
        .query_one("SHOW statement_timeout", &[])
        .await
        .expect("show");
    assert_eq!(row.get::<_, String>(0), "150ms");
    let err = conn
        .simple_query("SELECT pg_sleep(1)")
        .await
        .expect_err("statement timeout applies");
    let err = poolkit_postgres::Error::from(err);
    assert_eq!(
        err.code(),
        Some(&poolkit_postgres::tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{err}"
    );
}

#[test]
fn bad_values_give_named_errors() {
    let cases: &[(&str, &str)] = &[
        ("MAX_POOL_SIZE", "twenty"),
        ("POOL_WARMUP_SIZE", "-1"),
        ("DATABASE_POOL_TIMEOUT", "30 s"),
        ("DATABASE_STATEMENT_TIMEOUT", "NaN"),
        ("DATABASE_URL", "postgres://u:pw_marker@h:99999/db"),
    ];
    for (var, value) in cases {
        let lookup = |k: &str| {
            if k == *var {
                Some((*value).to_owned())
            } else if k == "DATABASE_URL" {
                Some("postgres://postgres@127.0.0.1/test".to_owned())
            } else {
                None
            }
        };
        let err = Config::from_lookup("DATABASE", &lookup).expect_err(var);
        assert_eq!(err.var(), *var, "{err}");
        assert!(!err.to_string().contains("pw_marker"), "{err}");
    }
}
