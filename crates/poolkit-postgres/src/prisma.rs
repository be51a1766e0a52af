//! Settings operators already have: Prisma's URL parameters, and the connection limits
//! of the server and of the pooler in front of it (`P_MAX_CONNECTIONS`,
//! `SUPAVISOR_POOL_SIZE`), which feed the budget check.

use poolkit_core::env::{Env, parse_duration, parse_u32};
use poolkit_core::{ConfigError, Knob, MAX_POOL_SIZE_LIMIT};

use crate::config::{Config, url_param_pub};

/// Supavisor's pool size: the server connections Supavisor holds for this database.
pub const SUPAVISOR_POOL_SIZE_VAR: &str = "SUPAVISOR_POOL_SIZE";

/// A connection limit and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limit {
    /// The number of connections.
    pub value: u32,
    /// What set it: a variable (`SUPAVISOR_POOL_SIZE`) or a flag (`--pgbouncer-pool-size`).
    pub source: String,
}

impl Limit {
    /// A limit of `value` set by `source`.
    #[must_use]
    pub fn new(value: u32, source: &str) -> Self {
        Self {
            value,
            source: source.to_owned(),
        }
    }
}

fn refuse(url_var: &str, key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        var: format!("{url_var} ({key})"),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

/// Applies Prisma's URL parameters: `connection_limit` sets the pool size and
/// `pool_timeout` the acquire timeout unless the variable is set (the variable wins, with a
/// note); `connect_timeout=0` (no limit) is refused, as are `socket_timeout`, `schema`,
/// `sslaccept` and `sslidentity`, each naming what to use instead. `statement_cache_size`
/// is accepted: poolkit prepares statements per call and caches none across checkouts, the
/// same as `statement_cache_size=0`, and a note says so when it is above 0.
pub(crate) fn apply_url_params(
    config: &mut Config,
    env: &Env<'_>,
    url_var: &str,
) -> Result<(), ConfigError> {
    let url = config.url.expose().to_owned();
    let param = |k: &str| url_param_pub(&url, k);
    if let Some(v) = param("connection_limit") {
        let n = parse_u32(
            &format!("{url_var} (connection_limit)"),
            &v,
            1,
            MAX_POOL_SIZE_LIMIT,
        )?;
        match config.pool.sources.get(&Knob::PoolSize) {
            Some(var) => config.notes.push(format!(
                "{var}={} wins over connection_limit={n} in {url_var}",
                config.pool.pool_size
            )),
            None => {
                config.pool.pool_size = n;
                config
                    .pool
                    .sources
                    .insert(Knob::PoolSize, format!("{url_var} connection_limit"));
            }
        }
    }
    if let Some(v) = param("pool_timeout") {
        let d = parse_duration(&format!("{url_var} (pool_timeout)"), &v)?;
        if d.is_zero() {
            return Err(refuse(
                url_var,
                "pool_timeout",
                &v,
                &format!(
                    "seconds above 0: Prisma's pool_timeout=0 waits forever, and poolkit always bounds the wait (set {} instead)",
                    config.pool.var(Knob::AcquireTimeout)
                ),
            ));
        }
        match config.pool.sources.get(&Knob::AcquireTimeout) {
            Some(var) => config.notes.push(format!(
                "{var}={:?} wins over pool_timeout={v} in {url_var}",
                config.pool.acquire_timeout
            )),
            None => {
                config.pool.acquire_timeout = d;
                config
                    .pool
                    .sources
                    .insert(Knob::AcquireTimeout, format!("{url_var} pool_timeout"));
            }
        }
    }
    if let Some(v) = param("connect_timeout") {
        let d = parse_duration(&format!("{url_var} (connect_timeout)"), &v)?;
        if d.is_zero() {
            return Err(refuse(
                url_var,
                "connect_timeout",
                &v,
                "seconds above 0: connect_timeout=0 never gives up on a connect",
            ));
        }
        match config.connect_timeout {
            Some(env_value) => config.notes.push(format!(
                "{}={env_value:?} wins over connect_timeout={v} in {url_var}",
                env.name("CONNECT_TIMEOUT")
            )),
            None => config.connect_timeout = Some(d),
        }
    }
    if let Some(v) = param("statement_cache_size") {
        let n = parse_u32(
            &format!("{url_var} (statement_cache_size)"),
            &v,
            0,
            u32::MAX,
        )?;
        if n > 0 {
            config.notes.push(format!(
                "statement_cache_size={n} in {url_var}: poolkit caches no prepared statements across checkouts (as with 0), which is also what PgBouncer in transaction mode needs"
            ));
        }
    }
    for (key, instead) in [
        (
            "socket_timeout",
            format!(
                "no socket_timeout: bound queries with {}",
                env.name("STATEMENT_TIMEOUT")
            ),
        ),
        (
            "schema",
            "no schema parameter: set the search path in the URL with options=-csearch_path%3Dmyschema".to_owned(),
        ),
        (
            "sslaccept",
            "no sslaccept parameter: use sslmode=verify-full (strict) or sslmode=require (accept any certificate)".to_owned(),
        ),
        (
            "sslidentity",
            "no sslidentity parameter: client certificates are not supported".to_owned(),
        ),
    ] {
        if let Some(v) = param(key) {
            return Err(refuse(url_var, key, &v, &instead));
        }
    }
    Ok(())
}

/// Reads `P_MAX_CONNECTIONS` (the connections the server grants this application, for
/// example a managed plan's limit below `max_connections`) and `SUPAVISOR_POOL_SIZE` (the
/// server connections a Supavisor pooler holds).
pub(crate) fn read_limits(config: &mut Config, env: &Env<'_>) -> Result<(), ConfigError> {
    if let Some((var, v)) = env.u32_in("MAX_CONNECTIONS", 1, 1_000_000)? {
        config.max_connections = Some(Limit::new(v, &var));
    }
    if let Some(v) = env.raw(SUPAVISOR_POOL_SIZE_VAR) {
        let n = parse_u32(SUPAVISOR_POOL_SIZE_VAR, &v, 1, 1_000_000)?;
        config.pooler_pool_size = Some(Limit::new(n, SUPAVISOR_POOL_SIZE_VAR));
    }
    Ok(())
}

/// The duration Prisma's integer-seconds parameters mean.
#[cfg(test)]
fn secs(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Config::from_lookup("DATABASE", &lookup)
    }

    #[test]
    fn prisma_parameters_are_honoured_or_refused() {
        let url = "postgres://u:pw@h/test?connection_limit=25&pool_timeout=10&connect_timeout=3";
        let c = cfg(&[("DATABASE_URL", url)]).unwrap();
        assert_eq!(c.pool.pool_size, 25);
        assert_eq!(c.pool.acquire_timeout, secs(10));
        assert_eq!(c.connect_timeout, Some(secs(3)));
        assert_eq!(c.pool.ceiling_var(), "DATABASE_URL connection_limit");
        assert!(c.notes.is_empty());
        let c = cfg(&[
            ("DATABASE_URL", url),
            ("DATABASE_POOL_SIZE", "5"),
            ("DATABASE_POOL_TIMEOUT", "2s"),
        ])
        .unwrap();
        assert_eq!((c.pool.pool_size, c.pool.acquire_timeout), (5, secs(2)));
        assert_eq!(
            c.notes[0],
            "DATABASE_POOL_SIZE=5 wins over connection_limit=25 in DATABASE_URL"
        );
        assert!(c.notes[1].starts_with("DATABASE_POOL_TIMEOUT=2s wins over pool_timeout=10"));
        for (bad, var) in [
            ("pool_timeout=0", "DATABASE_URL (pool_timeout)"),
            ("connection_limit=lots", "DATABASE_URL (connection_limit)"),
            ("schema=app", "DATABASE_URL (schema)"),
            ("socket_timeout=5", "DATABASE_URL (socket_timeout)"),
            ("connect_timeout=0", "DATABASE_URL (connect_timeout)"),
        ] {
            let e = cfg(&[(
                "DATABASE_URL",
                &format!("postgres://u:SECRETPW@h/test?{bad}"),
            )])
            .unwrap_err();
            assert_eq!(e.var(), var, "{e}");
            assert!(!e.to_string().contains("SECRETPW"), "{e}");
        }
        let c = cfg(&[(
            "DATABASE_URL",
            "postgres://u@h:6543/test?pgbouncer=true&statement_cache_size=100",
        )])
        .unwrap();
        assert!(
            c.notes[0].starts_with("statement_cache_size=100"),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn limits_for_the_budget() {
        let c = cfg(&[
            ("DATABASE_URL", "postgres://u@h/test"),
            ("DATABASE_MAX_CONNECTIONS", "60"),
            ("SUPAVISOR_POOL_SIZE", "15"),
        ])
        .unwrap();
        assert_eq!(
            c.max_connections,
            Some(Limit::new(60, "DATABASE_MAX_CONNECTIONS"))
        );
        assert_eq!(
            c.pooler_pool_size,
            Some(Limit::new(15, "SUPAVISOR_POOL_SIZE"))
        );
        let e = cfg(&[
            ("DATABASE_URL", "postgres://u@h/test"),
            ("SUPAVISOR_POOL_SIZE", "x"),
        ])
        .unwrap_err();
        assert_eq!(e.var(), "SUPAVISOR_POOL_SIZE");
    }
}
