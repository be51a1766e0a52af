//! The warnings of `poolctl check`: settings that work but will hurt, each naming the
//! variable to change.

use std::time::Duration;

use poolkit_core::{Knob, PoolConfig};
use poolkit_postgres::Pooler;

/// A duration the way env vars write it: `1h`, `30m`, `30s`, `500ms`.
pub(crate) fn dur(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// An optional duration, `none` when unset.
pub(crate) fn opt_dur(d: Option<Duration>) -> String {
    d.map_or_else(|| "none".to_owned(), dur)
}

/// Warnings about the common knobs.
pub(crate) fn pool_warnings(c: &PoolConfig) -> Vec<String> {
    let mut w = Vec::new();
    if c.min_idle > c.pool_size {
        w.push(format!(
            "{}={} is above {}={}: connections above the steady size stay open when idle; lower {} to at most {}",
            c.var(Knob::MinIdle),
            c.min_idle,
            c.var(Knob::PoolSize),
            c.pool_size,
            c.var(Knob::MinIdle),
            c.pool_size
        ));
    }
    if let (Some(idle), Some(life)) = (c.idle_timeout, c.max_lifetime)
        && idle >= life
    {
        w.push(format!(
            "{}={} is not below {}={}: idle connections are recycled by age before the idle timeout fires",
            c.var(Knob::IdleTimeout),
            dur(idle),
            c.var(Knob::MaxLifetime),
            dur(life)
        ));
    }
    w
}

/// Warnings specific to PostgreSQL and poolers.
pub(crate) fn pg_warnings(
    config: &poolkit_postgres::Config,
    server_lifetime: Duration,
) -> Vec<String> {
    let c = &config.pool;
    let mut w = pool_warnings(c);
    let port = config
        .pg_config()
        .ok()
        .and_then(|pg| pg.get_ports().first().copied())
        .unwrap_or(5432);
    let pooler_var = format!("{}_POOLER", c.prefix);
    if config.pooler == Pooler::None && (port == 6432 || port == 6543) {
        w.push(format!(
            "port {port} is a pooler's port (PgBouncer 6432, Supavisor 6543) but {pooler_var}=none: a transaction-mode pooler refuses named prepared statements (the pool switches to transaction mode at the first refusal); set {pooler_var}=transaction to start there"
        ));
    }
    if config.pooler != Pooler::None {
        match c.max_lifetime {
            Some(life) if life <= server_lifetime => {}
            life => w.push(format!(
                "{}={} is longer than the pooler's server_lifetime ({}): set it to {} or less so the app recycles before the pooler does",
                c.var(Knob::MaxLifetime),
                opt_dur(life),
                dur(server_lifetime),
                dur(server_lifetime)
            )),
        }
    }
    if config.pooler == Pooler::Transaction && config.statement_timeout.is_some() {
        w.push(format!(
            "{}_STATEMENT_TIMEOUT is sent as a startup option, which PgBouncer in transaction mode refuses unless ignore_startup_parameters lists `options`",
            c.prefix
        ));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(vars: &[(&str, &str)]) -> poolkit_postgres::Config {
        let lookup = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        };
        poolkit_postgres::Config::from_lookup("DATABASE", &lookup).unwrap()
    }

    #[test]
    fn warnings_name_the_variables() {
        let c = pg(&[
            ("DATABASE_URL", "postgres://u@h:6432/db"),
            ("DATABASE_POOLER", "none"),
            ("DATABASE_POOL_SIZE", "5"),
            ("DATABASE_POOL_MAXSIZE", "10"),
            ("DATABASE_POOL_MIN_IDLE", "8"),
        ]);
        let w = pg_warnings(&c, Duration::from_secs(3600)).join("\n");
        assert!(
            w.contains("DATABASE_POOL_MIN_IDLE=8 is above DATABASE_POOL_SIZE=5"),
            "{w}"
        );
        assert!(w.contains("set DATABASE_POOLER=transaction"), "{w}");
        let c = pg(&[
            ("DATABASE_URL", "postgres://u@h:6543/db"),
            ("DATABASE_MAX_LIFETIME", "2h"),
        ]);
        let w = pg_warnings(&c, Duration::from_secs(3600)).join("\n");
        assert!(
            w.contains("DATABASE_MAX_LIFETIME=2h is longer than the pooler's server_lifetime (1h"),
            "{w}"
        );
        let c = pg(&[("DATABASE_URL", "postgres://u@h:5432/db")]);
        assert!(pg_warnings(&c, Duration::from_secs(3600)).is_empty());
    }
}
