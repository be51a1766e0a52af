//! The README's configuration table lists every variable poolkit reads: the suffixes each
//! adapter declares (the same lists the unknown-variable warnings use) and the globals.
#![cfg(all(
    feature = "postgres",
    feature = "redis",
    feature = "http",
    feature = "monitor"
))]

use poolkit_core::{PoolConfig, THRESHOLD_SUFFIXES, THRESHOLD_VARS};

#[test]
fn the_readme_table_lists_every_variable_read() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table: String = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Configuration section")
        .to_owned();
    let listed = |name: &str| table.contains(&format!("`{name}`"));
    let mut missing = Vec::new();
    let suffixes = PoolConfig::ENV_SUFFIXES
        .iter()
        .chain(poolkit::postgres::ENV_SUFFIXES)
        .chain(poolkit::redis::ENV_SUFFIXES)
        .chain(poolkit::http::ENV_SUFFIXES)
        .chain(THRESHOLD_SUFFIXES.iter());
    for suffix in suffixes {
        // Listed generically (`P_POOL_SIZE`) or for the prefix that reads it.
        let found = ["P", "DATABASE", "REDIS", "SUPABASE", "PINECONE"]
            .iter()
            .any(|p| listed(&format!("{p}_{suffix}")));
        if !found {
            missing.push(format!("P_{suffix}"));
        }
    }
    let globals = [
        "MAX_POOL_SIZE",
        "POOL_WARMUP_SIZE",
        poolkit::postgres::SUPAVISOR_POOL_SIZE_VAR,
        poolkit::monitor::ADDR_VAR,
        poolkit::monitor::TOKEN_VAR,
        poolkit::monitor::OPEN_VAR,
        poolkit::monitor::PING_TIMEOUT_VAR,
    ];
    for var in globals.iter().chain(THRESHOLD_VARS.iter()) {
        if !listed(var) {
            missing.push((*var).to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's configuration table lacks {missing:?}"
    );
}
