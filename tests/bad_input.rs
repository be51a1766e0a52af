//! Bad input: property tests over env parsing and URL parsing (never a panic, always an
//! error naming the variable, never the password), plus a list of nasty values for every
//! numeric and duration variable.
#![cfg(all(feature = "postgres", feature = "redis"))]

mod common;

use std::collections::HashMap;

use common::MARKER;
use poolkit::postgres::Config as PgConfig;
use poolkit::redis::Config as RedisConfig;
use poolkit_core::env::{parse_duration, parse_u32};
use poolkit_core::{Backend, ConfigError, PoolConfig};
use proptest::prelude::*;

/// The common knobs every pool reads under its prefix.
const COMMON: &[&str] = &[
    "POOL_SIZE",
    "POOL_MAXSIZE",
    "POOL_MIN_IDLE",
    "POOL_TIMEOUT",
    "MAX_LIFETIME",
    "IDLE_TIMEOUT",
    "MAX_USES",
    "PING_IF_IDLE",
    "LEAK_THRESHOLD",
];
const PG_ONLY: &[&str] = &["STATEMENT_TIMEOUT", "CONNECT_TIMEOUT"];
const REDIS_ONLY: &[&str] = &["PORT", "DB", "MAX_IN_FLIGHT", "TIMEOUT", "CONNECT_TIMEOUT"];

/// Values no numeric or duration variable may accept.
const NASTY: &[&str] = &[
    "",
    " ",
    "\t\n",
    "-1",
    "-0.5",
    "1e309",
    "1e3",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "١٢",
    "１０",
    "٣s",
    "99999999999999999999",
    "184467440737095516160",
    "30 s",
    "30 ms",
    "3 0",
    "0x10",
    "+5",
    "1_000",
    "ten",
    "5,5",
    "\u{0}",
    "5\u{0}",
    "５ms",
    "1..2",
    "--1",
];

fn lookup_from(map: &HashMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |k: &str| map.get(k).cloned()
}

/// Checks an error is about `var` (and a message that says what was expected).
fn assert_names(e: &ConfigError, var: &str, value: &str) {
    let msg = e.to_string();
    assert!(
        msg.contains(var),
        "{var}={value:?}: message does not name it: {msg}"
    );
    assert!(
        msg.contains("expected") || msg.contains("contradict"),
        "{var}={value:?}: message does not say what is expected: {msg}"
    );
    assert!(
        !msg.contains(MARKER),
        "{var}: message leaks the password: {msg}"
    );
}

#[test]
fn nasty_values_are_refused_naming_the_variable() {
    let mut checked = 0;
    for value in NASTY {
        for knob in COMMON.iter().chain(PG_ONLY) {
            let var = format!("DATABASE_{knob}");
            let map = HashMap::from([
                (
                    "DATABASE_URL".to_owned(),
                    format!("postgres://u:{MARKER}@127.0.0.1/test"),
                ),
                (var.clone(), (*value).to_owned()),
            ]);
            let e = PgConfig::from_lookup("DATABASE", &lookup_from(&map))
                .expect_err(&format!("{var}={value:?} was accepted"));
            assert_eq!(e.var(), var, "{e}");
            assert_names(&e, &var, value);
            checked += 1;
        }
        for knob in COMMON.iter().chain(REDIS_ONLY) {
            let var = format!("CACHE_{knob}");
            let map = HashMap::from([
                ("CACHE_PASSWORD".to_owned(), MARKER.to_owned()),
                (var.clone(), (*value).to_owned()),
            ]);
            let e = RedisConfig::from_lookup("CACHE", &lookup_from(&map))
                .expect_err(&format!("{var}={value:?} was accepted"));
            assert_eq!(e.var(), var, "{e}");
            assert_names(&e, &var, value);
            checked += 1;
        }
        // The global names users already have in their .env files.
        for global in ["MAX_POOL_SIZE", "POOL_WARMUP_SIZE"] {
            let map = HashMap::from([(global.to_owned(), (*value).to_owned())]);
            let e = PoolConfig::from_lookup(
                "DATABASE",
                PoolConfig::new("database", Backend::Postgres),
                &lookup_from(&map),
            )
            .expect_err(&format!("{global}={value:?} was accepted"));
            assert_names(&e, global, value);
            checked += 1;
        }
    }
    println!(
        "FIGURES bad_input nasty: {checked} (variable, value) pairs refused with a named error"
    );
}

#[test]
fn contradictions_name_both_variables() {
    let map = HashMap::from([
        ("APP_POOL_SIZE".to_owned(), "5".to_owned()),
        ("APP_POOL_MIN_IDLE".to_owned(), "30".to_owned()),
    ]);
    let e = PoolConfig::from_lookup(
        "APP",
        PoolConfig::new("app", Backend::Http),
        &lookup_from(&map),
    )
    .expect_err("min idle above the size");
    let msg = e.to_string();
    assert!(
        msg.contains("APP_POOL_MIN_IDLE=30") && msg.contains("APP_POOL_SIZE=5"),
        "{msg}"
    );
    let map = HashMap::from([
        ("APP_POOL_SIZE".to_owned(), "20".to_owned()),
        ("APP_POOL_MAXSIZE".to_owned(), "10".to_owned()),
    ]);
    let e = PoolConfig::from_lookup(
        "APP",
        PoolConfig::new("app", Backend::Http),
        &lookup_from(&map),
    )
    .expect_err("ceiling below the size");
    let msg = e.to_string();
    assert!(
        msg.contains("APP_POOL_MAXSIZE=10") && msg.contains("APP_POOL_SIZE=20"),
        "{msg}"
    );
    let map = HashMap::from([("DATABASE_URL".to_owned(), " ".to_owned())]);
    let e = PgConfig::from_lookup("DATABASE", &lookup_from(&map)).expect_err("blank URL");
    assert!(e.to_string().contains("DATABASE_URL is not set"), "{e}");
}

/// Any printable-ish text, including unicode digits, signs, units and spaces.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        "[-+ 0-9.eE_,]{0,24}",
        "[0-9]{0,30}(ms|s|m|h|d|us| s|sec)?",
        "[٠-٩０-９]{1,6}",
    ]
}

/// A password: the marker plus characters that break naive URL handling.
fn password() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/?#@:%!$&'()*+,;= ]{0,12}".prop_map(|tail| format!("{MARKER}{tail}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn durations_never_panic_and_name_the_variable(value in any_value()) {
        match parse_duration("X_POOL_TIMEOUT", &value) {
            Ok(d) => prop_assert!(d <= poolkit_core::env::MAX_DURATION),
            Err(e) => {
                prop_assert_eq!(e.var(), "X_POOL_TIMEOUT");
                prop_assert!(e.to_string().contains("duration"));
            }
        }
    }

    #[test]
    fn valid_durations_round_trip(ms in 0u64..=604_800_000, unit in 0usize..3) {
        let (text, want) = match unit {
            0 => (format!("{ms}ms"), std::time::Duration::from_millis(ms)),
            1 => (format!("{}s", ms / 1000), std::time::Duration::from_secs(ms / 1000)),
            _ => (format!("{}.{:03}", ms / 1000, ms % 1000), std::time::Duration::from_millis(ms)),
        };
        prop_assert_eq!(parse_duration("X", &text).expect("valid"), want);
    }

    #[test]
    fn numbers_never_panic_and_name_the_variable(value in any_value()) {
        match parse_u32("X_POOL_SIZE", &value, 1, 10_000) {
            Ok(n) => prop_assert!((1..=10_000).contains(&n)),
            Err(e) => {
                prop_assert_eq!(e.var(), "X_POOL_SIZE");
                prop_assert!(e.to_string().contains("from 1 to 10000"));
            }
        }
    }

    #[test]
    fn any_env_gives_a_config_or_names_a_set_variable(
        vars in proptest::collection::vec((0usize..COMMON.len(), any_value()), 0..6)
    ) {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(i, v)| (format!("SVC_{}", COMMON[*i]), v.clone()))
            .collect();
        match PoolConfig::from_lookup("SVC", PoolConfig::new("svc", Backend::Http), &lookup_from(&map)) {
            Ok(c) => prop_assert!(c.validate().is_ok()),
            Err(e) => prop_assert!(map.contains_key(e.var()), "{} names {} which is not set", e, e.var()),
        }
    }

    #[test]
    fn postgres_urls_never_panic_nor_leak(
        host in "[a-z0-9.:/\\[\\]@-]{0,16}",
        port in "[0-9a-z]{0,7}",
        db in "[a-z0-9/?=&]{0,10}",
        pw in password(),
    ) {
        let url = format!("postgres://app:{pw}@{host}:{port}/{db}");
        let map = HashMap::from([("DATABASE_URL".to_owned(), url.clone())]);
        match PgConfig::from_lookup("DATABASE", &lookup_from(&map)) {
            Ok(c) => {
                let shown = format!("{c:?} {}", c.target());
                prop_assert!(!shown.contains(MARKER), "Debug/target leaks: {}", shown);
            }
            Err(e) => {
                prop_assert_eq!(e.var(), "DATABASE_URL");
                prop_assert!(!e.to_string().contains(MARKER), "leaks: {}", e);
                prop_assert!(!format!("{e:?}").contains(MARKER), "Debug leaks: {:?}", e);
            }
        }
    }

    #[test]
    fn redis_urls_never_panic_nor_leak(
        scheme in "(redis|rediss|http|)(://)?",
        host in "[a-z0-9.:/\\[\\]@-]{0,16}",
        port in "[0-9a-z]{0,7}",
        db in "[a-z0-9/?=&]{0,6}",
        pw in password(),
    ) {
        let url = format!("{scheme}:{pw}@{host}:{port}/{db}");
        let map = HashMap::from([("REDIS_URL".to_owned(), url)]);
        match RedisConfig::from_lookup("REDIS", &lookup_from(&map)) {
            Ok(c) => {
                let shown = format!("{c:?} {}", c.target());
                prop_assert!(!shown.contains(MARKER), "Debug/target leaks: {}", shown);
            }
            Err(e) => {
                prop_assert_eq!(e.var(), "REDIS_URL");
                prop_assert!(!e.to_string().contains(MARKER), "leaks: {}", e);
            }
        }
    }

    #[test]
    fn redis_parts_never_panic_nor_leak(
        host in "\\PC{0,12}",
        port in any_value(),
        db in any_value(),
        pw in password(),
    ) {
        let map = HashMap::from([
            ("REDIS_HOST".to_owned(), host),
            ("REDIS_PORT".to_owned(), port),
            ("REDIS_DB".to_owned(), db),
            ("REDIS_PASSWORD".to_owned(), pw),
        ]);
        match RedisConfig::from_lookup("REDIS", &lookup_from(&map)) {
            Ok(c) => {
                let shown = format!("{c:?} {}", c.target());
                prop_assert!(!shown.contains(MARKER), "Debug/target leaks: {}", shown);
            }
            Err(e) => {
                prop_assert!(map.contains_key(e.var()) || e.var() == "REDIS_URL", "{}", e);
                prop_assert!(!e.to_string().contains(MARKER), "leaks: {}", e);
            }
        }
    }
}
