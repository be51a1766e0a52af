//! Whole environments: the input is `NAME=value` lines under the prefix `FZ` (names are
//! picked from the real knobs by the first byte of each line). Every backend's config
//! reader takes them: no panic, and an error names a variable that was set.
#![no_main]

use libfuzzer_sys::fuzz_target;

const KNOBS: &[&str] = &[
    "POOL_SIZE",
    "POOL_MAXSIZE",
    "POOL_MIN_IDLE",
    "POOL_TIMEOUT",
    "MAX_LIFETIME",
    "IDLE_TIMEOUT",
    "MAX_USES",
    "MAX_KEEPALIVE",
    "TIMEOUT",
    "CONNECT_TIMEOUT",
    "HTTP_VERSION",
    "HTTP2_KEEPALIVE",
    "TCP_KEEPALIVE",
    "URL",
    "READ_URL",
    "STATEMENT_TIMEOUT",
    "POOLER",
    "SSLMODE",
    "MAX_IN_FLIGHT",
    "HOST",
    "PORT",
    "PASSWORD",
    "CLUSTER_NODES",
    "LEAK_THRESHOLD",
    "PING_IF_IDLE",
    "APPLICATION_NAME",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: Vec<(String, String)> = text
        .split('\n')
        .filter_map(|line| {
            let mut bytes = line.bytes();
            let knob = KNOBS[usize::from(bytes.next()?) % KNOBS.len()];
            Some((format!("FZ_{knob}"), line.get(1..)?.to_owned()))
        })
        .collect();
    let lookup = |k: &str| {
        vars.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let set = |var: &str| vars.iter().any(|(n, _)| n == var);
    let core = poolkit_core::PoolConfig::new("fz", poolkit_core::Backend::Postgres);
    if let Err(e) = poolkit_core::PoolConfig::from_lookup("FZ", core, &lookup) {
        assert!(set(e.var()), "core: {e}");
    }
    if let Err(e) = poolkit_postgres::Config::from_lookup("FZ", &lookup) {
        assert!(set(e.var()) || e.var() == "FZ_URL", "postgres: {e}");
    }
    if let Err(e) = poolkit_redis::Config::from_lookup("FZ", &lookup) {
        assert!(set(e.var()) || e.var() == "FZ_URL", "redis: {e}");
    }
    let http = poolkit_http::Config::new("fz");
    if let Err(e) = poolkit_http::Config::from_lookup("FZ", http, &lookup) {
        assert!(set(e.var()), "http: {e}");
    }
});
