//! The defaults the README and docs/http.md state are the code's: a row that drifts from
//! the code (or a variable listed twice with two defaults) fails here.

use std::time::Duration;

use poolkit::core::{Backend, PoolConfig};

/// The README's variable table: `(variable cell, default cell)` per row.
fn readme_rows() -> Vec<(String, String)> {
    let readme = include_str!("../README.md");
    readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells.len() >= 4).then(|| (cells[1].to_owned(), cells[2].to_owned()))
        })
        .collect()
}

fn default_of(var: &str) -> String {
    let rows = readme_rows();
    let found: Vec<&(String, String)> = rows.iter().filter(|(v, _)| v == var).collect();
    assert_eq!(
        found.len(),
        1,
        "{var} must be listed once in README.md: {found:?}"
    );
    found[0].1.clone()
}

/// `30 s`, `10 min`, `100 ms` → a duration.
fn duration(cell: &str) -> Duration {
    let (n, unit) = cell.split_once(' ').unwrap_or((cell, "s"));
    let n: u64 = n
        .parse()
        .unwrap_or_else(|_| panic!("not a duration: {cell}"));
    match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "min" => Duration::from_secs(n * 60),
        other => panic!("unit {other} in {cell}"),
    }
}

#[test]
fn readme_defaults_are_the_codes() {
    let c = PoolConfig::new("database", Backend::Postgres);
    assert_eq!(default_of("`P_POOL_SIZE`"), c.pool_size.to_string());
    assert_eq!(duration(&default_of("`P_POOL_TIMEOUT`")), c.acquire_timeout);
    assert_eq!(
        Some(duration(&default_of("`P_MAX_LIFETIME`"))),
        c.max_lifetime
    );
    assert_eq!(
        Some(duration(&default_of("`P_IDLE_TIMEOUT`"))),
        c.idle_timeout
    );
    assert_eq!(duration(&default_of("`P_PING_IF_IDLE`")), c.ping_if_idle);
    assert_eq!(
        duration(&default_of("`P_POOL_AUTO_INTERVAL`")),
        c.auto_interval
    );
    assert_eq!(Some(duration(&default_of("`P_SLOW_QUERY`"))), c.slow_query);
    // Every variable row appears once.
    let rows = readme_rows();
    for (var, _) in &rows {
        let n = rows.iter().filter(|(v, _)| v == var).count();
        assert_eq!(n, 1, "{var} is listed {n} times in README.md");
    }
}

#[cfg(feature = "http")]
#[test]
fn http_keepalive_defaults_in_docs_are_the_codes() {
    let doc = include_str!("../docs/http.md");
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `P_MAX_KEEPALIVE` |"))
        .expect("the P_MAX_KEEPALIVE row of docs/http.md");
    let defaults = row.rsplit('|').nth(1).expect("a defaults cell").trim();
    let parts: Vec<&str> = defaults.split(" / ").collect();
    assert_eq!(parts.len(), 3, "generic / supabase / pinecone: {row}");
    let supabase = poolkit::http::supabase::defaults();
    let pinecone = poolkit::http::pinecone::defaults();
    assert_eq!(supabase.max_keepalive, supabase.pool.ceiling());
    assert_eq!(
        parts[1],
        format!("the ceiling ({})", supabase.pool.ceiling()),
        "{row}"
    );
    assert_eq!(parts[2], pinecone.max_keepalive.to_string(), "{row}");
}
