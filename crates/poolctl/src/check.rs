//! `poolctl check`: every configured pool, its config and where each value came from,
//! the server's facts, connect times, the budget verdict and warnings.

use std::fmt::Write as _;
use std::time::Duration;

use poolkit_core::{Knob, PoolConfig, redact_url};
use serde::Serialize;

use crate::cli::{BackendArg, CheckArgs, PoolSpec};
use crate::error::Error;
use crate::facts::{self, ConnectTimes, PgFacts, RedisFacts};
use crate::format::{ms, table};
use crate::warnings::{dur, opt_dur, pg_warnings, pool_warnings};

/// One config row: setting, value, the variable that sets it, and whether it was set.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConfigRow {
    /// What the setting is.
    pub(crate) setting: &'static str,
    /// Its value in force.
    pub(crate) value: String,
    /// The variable that sets it.
    pub(crate) var: String,
    /// `env` or `default`.
    pub(crate) source: &'static str,
}

/// What `check` found for one pool.
#[derive(Debug, Serialize)]
pub(crate) struct PoolReport {
    /// Pool name (the prefix, lower-case).
    pub(crate) name: String,
    /// `postgres` or `redis`.
    pub(crate) backend: &'static str,
    /// `host:port`, never the password.
    pub(crate) target: String,
    /// The config in force.
    pub(crate) config: Vec<ConfigRow>,
    /// PostgreSQL facts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) postgres: Option<PgFacts>,
    /// Redis facts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) redis: Option<RedisFacts>,
    /// HTTP facts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) http: Option<crate::http_check::HttpFacts>,
    /// Connect times.
    pub(crate) connect: Option<ConnectTimes>,
    /// The fleet sharing `P_FLEET_BUDGET`, as Redis holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fleet: Option<crate::fleet::FleetFacts>,
    /// Things to look at.
    pub(crate) warnings: Vec<String>,
    /// Things that fail the check.
    pub(crate) failures: Vec<String>,
    /// Whether the server could not be reached at all (exit code 4).
    pub(crate) unreachable: bool,
    /// Whether the pool passed.
    pub(crate) ok: bool,
}

/// The common knobs as rows.
pub(crate) fn config_rows(c: &PoolConfig) -> Vec<ConfigRow> {
    let row = |setting, knob: Knob, value: String| ConfigRow {
        setting,
        value,
        var: c.var(knob),
        source: if c.sources.contains_key(&knob) {
            "env"
        } else {
            "default"
        },
    };
    vec![
        row(
            "pool size",
            Knob::PoolSize,
            if c.sizing == poolkit_core::Sizing::Auto {
                format!("auto (from {} up to the max size)", c.min_idle.max(1))
            } else {
                c.pool_size.to_string()
            },
        ),
        row(
            "max size",
            Knob::MaxSize,
            c.max_size.map_or_else(
                || format!("{} (= pool size)", c.pool_size),
                |m| m.to_string(),
            ),
        ),
        row("min idle", Knob::MinIdle, c.min_idle.to_string()),
        row(
            "acquire timeout",
            Knob::AcquireTimeout,
            dur(c.acquire_timeout),
        ),
        row("max lifetime", Knob::MaxLifetime, opt_dur(c.max_lifetime)),
        row("idle timeout", Knob::IdleTimeout, opt_dur(c.idle_timeout)),
        row(
            "max uses",
            Knob::MaxUses,
            c.max_uses.map_or_else(|| "none".into(), |n| n.to_string()),
        ),
        row("ping if idle", Knob::PingIfIdle, dur(c.ping_if_idle)),
        row(
            "leak threshold",
            Knob::LeakThreshold,
            opt_dur(c.leak_threshold),
        ),
    ]
}

/// Pools named with `--pool`, or the ones the environment configures.
fn discover(
    args: &CheckArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<PoolSpec>, Error> {
    if !args.pools.is_empty() {
        return Ok(args.pools.clone());
    }
    let set = |v: &str| lookup(v).is_some_and(|x| !x.trim().is_empty());
    let mut pools = Vec::new();
    if [
        "DATABASE_URL",
        "DATABASE_URL_TRANSACTION",
        "DATABASE_URL_SESSION",
        "DATABASE_URL_DIRECT",
    ]
    .iter()
    .any(|v| set(v))
    {
        pools.push(PoolSpec {
            prefix: "DATABASE".into(),
            backend: BackendArg::Postgres,
        });
    }
    if set("REDIS_URL") || set("REDIS_HOST") {
        pools.push(PoolSpec {
            prefix: "REDIS".into(),
            backend: BackendArg::Redis,
        });
    }
    for (prefix, var) in [("SUPABASE", "SUPABASE_URL"), ("PINECONE", "PINECONE_HOST")] {
        if set(var) {
            pools.push(PoolSpec {
                prefix: prefix.into(),
                backend: BackendArg::Http,
            });
        }
    }
    if pools.is_empty() {
        return Err(poolkit_core::ConfigError::Missing {
            var: "DATABASE_URL".into(),
            hint: "no pool is configured: set DATABASE_URL, REDIS_URL, SUPABASE_URL or PINECONE_HOST (as the app does), or name pools with --pool PREFIX=BACKEND".into(),
        }
        .into());
    }
    Ok(pools)
}

async fn check_postgres(
    prefix: &str,
    args: &CheckArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<PoolReport, Error> {
    let mut config = poolkit_postgres::Config::from_lookup(prefix, lookup)?;
    if let Some(n) = args.pgbouncer_pool_size {
        config.pooler_pool_size = Some(poolkit_postgres::Limit::new(n, "--pgbouncer-pool-size"));
    }
    let mut rows = config_rows(&config.pool);
    rows.insert(
        0,
        ConfigRow {
            setting: "url",
            value: redact_url(config.url.expose()),
            var: format!("{prefix}_URL"),
            source: "env",
        },
    );
    rows.push(ConfigRow {
        setting: "pooler",
        value: config.pooler.to_string(),
        var: format!("{prefix}_POOLER"),
        source: if lookup(&format!("{prefix}_POOLER")).is_some() {
            "env"
        } else {
            "default"
        },
    });
    rows.push(ConfigRow {
        setting: "statement timeout",
        value: opt_dur(config.statement_timeout),
        var: format!("{prefix}_STATEMENT_TIMEOUT"),
        source: if config.statement_timeout.is_some() {
            "env"
        } else {
            "default"
        },
    });
    let mut report = PoolReport {
        name: config.pool.name.clone(),
        backend: "postgres",
        target: config.target(),
        config: rows,
        postgres: None,
        redis: None,
        http: None,
        connect: None,
        fleet: None,
        warnings: pg_warnings(&config, args.server_lifetime),
        failures: Vec::new(),
        unreachable: false,
        ok: false,
    };
    if let Some(fc) = &config.fleet {
        match crate::fleet::read(fc).await {
            Ok(f) => {
                if let Some(b) = f.budget.filter(|b| f.total > *b) {
                    report.failures.push(format!(
                        "the fleet holds {} connections, above its budget {b}",
                        f.total
                    ));
                }
                report.fleet = Some(f);
            }
            Err(e) => report.failures.push(format!(
                "fleet Redis ({}_FLEET_REDIS_URL) unreachable: {e}",
                prefix
            )),
        }
    }
    report
        .warnings
        .extend(<poolkit_postgres::Config as poolkit_core::FromEnv>::unknown_vars(prefix));
    report.warnings.extend(config.notes.iter().cloned());
    report.warnings.extend(config.pool.contradictions());
    let mut probe = config.clone();
    // One connection at build: a server that is down, or refuses the login, fails the
    // probe at once with its reason (and an unresponsive one within 5 s).
    probe.pool.min_idle = 1;
    probe.pool.acquire_timeout = probe.pool.acquire_timeout.min(PROBE_TIMEOUT);
    // The probe is not an instance of the fleet: it must not take a share.
    probe.fleet = None;
    match poolkit_postgres::Pool::new(probe).await {
        Err(e) => {
            report.unreachable = e.is_connect() || e.is_timeout();
            report.failures.push(Error::postgres(prefix, e).to_string());
        }
        Ok(pool) => {
            match facts::postgres(&pool, args.instances).await {
                Ok(f) => {
                    if !f.budget.fits {
                        report.failures.push(f.budget.verdict.clone());
                    }
                    if f.max_connections > 0 && f.connections * 10 >= f.max_connections * 8 {
                        report.warnings.push(format!(
                            "the server already has {} of max_connections {} in use",
                            f.connections, f.max_connections
                        ));
                    }
                    report.postgres = Some(f);
                }
                Err(e) => report.failures.push(Error::postgres(prefix, e).to_string()),
            }
            pool.drain(Duration::from_secs(2)).await;
            // Gone before the connect probes, which build pools of the same name.
            drop(pool);
            match facts::pg_connect_times(&config, args.connects).await {
                Ok(t) => {
                    if t.p95 > 0.1 {
                        report.warnings.push(format!(
                            "slow connects (p95 {}): keep connections warm with {}",
                            ms(t.p95),
                            config.pool.var(Knob::MinIdle)
                        ));
                    }
                    report.connect = Some(t);
                }
                Err(e) => report
                    .failures
                    .push(format!("connect to {}: {e}", config.target())),
            }
        }
    }
    report.ok = report.failures.is_empty();
    Ok(report)
}

async fn check_redis(
    prefix: &str,
    args: &CheckArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<PoolReport, Error> {
    let config = poolkit_redis::Config::from_lookup(prefix, lookup)?;
    let mut rows = config_rows(&config.pool);
    rows.insert(
        0,
        ConfigRow {
            setting: "url",
            value: redact_url(config.url.expose()),
            var: format!("{prefix}_URL"),
            source: if lookup(&format!("{prefix}_URL")).is_some() {
                "env"
            } else {
                "default"
            },
        },
    );
    rows.push(ConfigRow {
        setting: "max in flight",
        value: config.max_in_flight.to_string(),
        var: format!("{prefix}_MAX_IN_FLIGHT"),
        source: if lookup(&format!("{prefix}_MAX_IN_FLIGHT")).is_some() {
            "env"
        } else {
            "default"
        },
    });
    let mut report = PoolReport {
        name: config.pool.name.clone(),
        backend: "redis",
        target: config.target(),
        config: rows,
        postgres: None,
        redis: None,
        http: None,
        connect: None,
        fleet: None,
        warnings: pool_warnings(&config.pool),
        failures: Vec::new(),
        unreachable: false,
        ok: false,
    };
    report
        .warnings
        .extend(<poolkit_redis::Config as poolkit_core::FromEnv>::unknown_vars(prefix));
    report.warnings.extend(config.pool.contradictions());
    let mut probe = config.clone();
    probe.pool.acquire_timeout = probe.pool.acquire_timeout.min(PROBE_TIMEOUT);
    match poolkit_redis::Pool::new(probe).await {
        Err(e) => {
            report.unreachable = !matches!(e, poolkit_redis::Error::Config(_));
            report.failures.push(Error::redis(prefix, e).to_string());
        }
        Ok(pool) => {
            match facts::redis(&pool, args.instances).await {
                Ok(f) => {
                    match &f.budget {
                        Some(b) if !b.fits => report.failures.push(b.verdict.clone()),
                        None => report.warnings.push(
                            "maxclients unknown (CONFIG GET refused): the budget was not checked"
                                .into(),
                        ),
                        _ => {}
                    }
                    report.redis = Some(f);
                }
                Err(e) => report.failures.push(Error::redis(prefix, e).to_string()),
            }
            pool.close();
            drop(pool);
            match facts::redis_connect_times(&config, args.connects).await {
                Ok(t) => report.connect = Some(t),
                Err(e) => report
                    .failures
                    .push(format!("connect to {}: {e}", config.target())),
            }
        }
    }
    report.ok = report.failures.is_empty();
    Ok(report)
}

/// The human-readable report of one pool.
pub(crate) fn render(r: &PoolReport) -> String {
    let mut out = format!("pool `{}` ({}) at {}\n\n", r.name, r.backend, r.target);
    let rows: Vec<Vec<String>> = r
        .config
        .iter()
        .map(|c| {
            vec![
                c.setting.to_owned(),
                c.value.clone(),
                c.var.clone(),
                c.source.to_owned(),
            ]
        })
        .collect();
    out.push_str(&table(&["setting", "value", "variable", "source"], &rows));
    let mut facts: Vec<Vec<String>> = Vec::new();
    let mut fact = |k: &str, v: String| facts.push(vec![k.to_owned(), v]);
    let mut budget = None;
    if let Some(f) = &r.postgres {
        fact("version", format!("PostgreSQL {}", f.version));
        fact("max_connections", f.max_connections.to_string());
        fact("reserved", f.reserved.to_string());
        fact(
            "connections now",
            format!(
                "{} ({} active, {} idle in transaction)",
                f.connections, f.active, f.idle_in_transaction
            ),
        );
        let apps: Vec<String> = f
            .by_application
            .iter()
            .map(|(a, n)| format!("{a} {n}"))
            .collect();
        fact("by application_name", apps.join(", "));
        budget = Some(&f.budget);
    }
    if let Some(f) = &r.redis {
        fact("version", format!("Redis {}", f.version));
        fact(
            "maxclients",
            f.maxclients
                .map_or_else(|| "unknown".into(), |n| n.to_string()),
        );
        fact("connected clients", f.connected_clients.to_string());
        budget = f.budget.as_ref();
    }
    if let Some(h) = &r.http {
        fact(
            "protocol",
            format!(
                "{}{}",
                h.protocol,
                if h.tls {
                    " over TLS (ALPN)"
                } else {
                    " (plain)"
                }
            ),
        );
        if let Some(t) = h.tls_handshake {
            fact("TLS handshake", format!("p50 {}", ms(t)));
        }
        fact("GET status", h.status.to_string());
        fact(
            "keep-alive timeout",
            match h.keepalive_timeout {
                Some(t) => format!("{t:.1} s (the server closed an idle connection)"),
                None => format!(
                    "over {:.0} s (still open when the wait ended)",
                    h.keepalive_waited
                ),
            },
        );
        if let Some(k) = &h.keepalive_header {
            fact("Keep-Alive header", k.clone());
        }
    }
    if let Some(t) = &r.connect {
        fact(
            "connect time",
            format!(
                "p50 {}  p95 {} ({} connects)",
                ms(t.p50),
                ms(t.p95),
                t.samples
            ),
        );
    }
    if let Some(f) = &r.fleet {
        for (k, v) in crate::fleet::rows(f, r.postgres.as_ref().map(|p| p.max_connections)) {
            fact(&k, v);
        }
    }
    if let Some(b) = budget {
        fact(
            &format!("budget ({})", crate::format::instances(b.instances)),
            b.verdict.clone(),
        );
    }
    if !facts.is_empty() {
        out.push('\n');
        out.push_str(&table(&["server", "value"], &facts));
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    for f in &r.failures {
        let _ = writeln!(out, "FAILED: {f}");
    }
    let _ = writeln!(out, "result: {}", if r.ok { "ok" } else { "FAILED" });
    out
}

/// The longest `poolctl check` waits for a connection to a server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The whole `check` subcommand.
pub(crate) async fn command(args: &CheckArgs) -> Result<(), Error> {
    let lookup = poolkit_core::env::process_lookup;
    let specs = discover(args, &lookup)?;
    let mut reports = Vec::new();
    for spec in &specs {
        reports.push(match spec.backend {
            BackendArg::Postgres => check_postgres(&spec.prefix, args, &lookup).await?,
            BackendArg::Redis => check_redis(&spec.prefix, args, &lookup).await?,
            BackendArg::Http => crate::http_check::check_http(&spec.prefix, args, &lookup).await?,
        });
    }
    let failed = reports.iter().filter(|r| !r.ok).count();
    let unreachable = reports.iter().filter(|r| r.unreachable).count();
    if args.json {
        let body = serde_json::json!({ "ok": failed == 0, "pools": reports });
        println!("{body:#}");
    } else {
        for r in &reports {
            println!("{}", render(r));
        }
    }
    if unreachable > 0 {
        return Err(Error::Unreachable(unreachable, reports.len()));
    }
    if failed > 0 {
        return Err(Error::CheckFailed(failed, reports.len()));
    }
    Ok(())
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
    fn rows_say_where_values_came_from() {
        let c = pg(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("MAX_POOL_SIZE", "20"),
        ]);
        let rows = config_rows(&c.pool);
        assert_eq!(
            (rows[0].var.as_str(), rows[0].value.as_str(), rows[0].source),
            ("MAX_POOL_SIZE", "20", "env")
        );
        assert_eq!(
            (rows[3].var.as_str(), rows[3].value.as_str(), rows[3].source),
            ("DATABASE_POOL_TIMEOUT", "30s", "default")
        );
    }
}
