//! Server facts for `poolctl check`: what the server says about itself and its limits,
//! and how long a fresh connection takes. PostgreSQL's budget comes from
//! `poolkit_postgres::Pool::budget`; the rest is asked here.

use std::time::{Duration, Instant};

use poolkit_postgres::tokio_postgres;
use poolkit_redis::redis;
use serde::Serialize;

/// Connect-time quantiles over a few fresh connections.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub(crate) struct ConnectTimes {
    /// Connections opened.
    pub(crate) samples: u32,
    /// Median, seconds.
    pub(crate) p50: f64,
    /// 95th percentile, seconds.
    pub(crate) p95: f64,
}

impl ConnectTimes {
    /// Nearest-rank quantiles of `samples`.
    pub(crate) fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1].as_secs_f64()
        };
        Self {
            samples: u32::try_from(samples.len()).unwrap_or(u32::MAX),
            p50: at(0.5),
            p95: at(0.95),
        }
    }
}

/// PostgreSQL facts.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PgFacts {
    /// `server_version`.
    pub(crate) version: String,
    /// `max_connections`.
    pub(crate) max_connections: i64,
    /// Reserved for superusers.
    pub(crate) reserved: i64,
    /// Client connections now.
    pub(crate) connections: i64,
    /// Of which running a query.
    pub(crate) active: i64,
    /// Of which idle in a transaction.
    pub(crate) idle_in_transaction: i64,
    /// Client connections by `application_name`.
    pub(crate) by_application: Vec<(String, i64)>,
    /// The budget for `--instances`.
    pub(crate) budget: BudgetFacts,
}

/// The budget verdict.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BudgetFacts {
    /// App instances planned.
    pub(crate) instances: u32,
    /// Connections one instance may open.
    pub(crate) per_instance: u32,
    /// `instances × per_instance (+ reserved)`.
    pub(crate) needed: i64,
    /// The server's limit.
    pub(crate) limit: i64,
    /// Whether it fits.
    pub(crate) fits: bool,
    /// One line for humans.
    pub(crate) verdict: String,
}

/// Reads the PostgreSQL facts through `pool`.
pub(crate) async fn postgres(
    pool: &poolkit_postgres::Pool,
    instances: u32,
) -> Result<PgFacts, poolkit_postgres::Error> {
    let budget = pool.budget(instances).await?;
    let conn = pool.get().await?;
    let version = conn
        .simple_query("SHOW server_version")
        .await?
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default();
    Ok(PgFacts {
        version,
        max_connections: budget.max_connections,
        reserved: budget.reserved,
        connections: budget.in_use.total,
        active: budget.in_use.active,
        idle_in_transaction: budget.in_use.idle_in_transaction,
        by_application: budget.in_use.by_application.clone(),
        budget: BudgetFacts {
            instances,
            per_instance: budget.per_instance,
            needed: budget.needed,
            limit: budget.max_connections,
            fits: budget.fits,
            verdict: budget.verdict.clone(),
        },
    })
}

/// Opens `n` fresh PostgreSQL connections one after another and times each. Each is
/// opened by a one-connection pool built from `config`, so TLS (`P_SSLMODE`), the
/// application name and startup options are exactly the app's.
pub(crate) async fn pg_connect_times(
    config: &poolkit_postgres::Config,
    n: u32,
) -> Result<ConnectTimes, String> {
    let mut probe = config.clone();
    probe.pool.pool_size = 1;
    probe.pool.max_size = None;
    probe.pool.min_idle = 1;
    let mut samples = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let pool = poolkit_postgres::Pool::new(probe.clone())
            .await
            .map_err(|e| e.to_string())?;
        samples.push(started.elapsed());
        pool.drain(Duration::from_secs(2)).await;
    }
    Ok(ConnectTimes::of(samples))
}

/// Redis facts.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RedisFacts {
    /// `redis_version` from INFO.
    pub(crate) version: String,
    /// `maxclients` (None when CONFIG is disabled, as on managed services).
    pub(crate) maxclients: Option<i64>,
    /// `connected_clients` from INFO.
    pub(crate) connected_clients: i64,
    /// The budget for `--instances` (when maxclients is known).
    pub(crate) budget: Option<BudgetFacts>,
}

/// A field of an INFO reply.
fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// Reads the Redis facts through `pool`.
pub(crate) async fn redis(
    pool: &poolkit_redis::Pool,
    instances: u32,
) -> Result<RedisFacts, poolkit_redis::Error> {
    let info: String = pool.query(redis::cmd("INFO").arg("server")).await?;
    let version = info_field(&info, "redis_version")
        .unwrap_or_default()
        .to_owned();
    let clients: String = pool.query(redis::cmd("INFO").arg("clients")).await?;
    let connected_clients = info_field(&clients, "connected_clients")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let maxclients = match pool
        .query::<Vec<String>>(redis::cmd("CONFIG").arg("GET").arg("maxclients"))
        .await
    {
        Ok(kv) => kv.get(1).and_then(|v| v.parse().ok()),
        Err(e) => {
            tracing::info!(error = %e, "CONFIG GET maxclients refused");
            None
        }
    };
    let config = pool.config();
    // Shared connections plus the exclusive pool's ceiling.
    let per_instance = config.pool.pool_size.saturating_add(config.pool.ceiling());
    let budget = maxclients.map(|limit| {
        let needed = i64::from(instances) * i64::from(per_instance);
        let fits = needed <= limit;
        let verdict = if fits {
            format!(
                "fits: {} × {per_instance} (shared {} + exclusive up to {}) = {needed} of maxclients {limit}",
                crate::format::instances(instances),
                config.pool.pool_size,
                config.pool.ceiling()
            )
        } else {
            format!(
                "does NOT fit: {} × {per_instance} = {needed} > maxclients {limit}; lower {} or raise maxclients",
                crate::format::instances(instances),
                config.pool.ceiling_var()
            )
        };
        BudgetFacts {
            instances,
            per_instance,
            needed,
            limit,
            fits,
            verdict,
        }
    });
    Ok(RedisFacts {
        version,
        maxclients,
        connected_clients,
        budget,
    })
}

/// Opens `n` fresh Redis connections one after another and times each (connect + PING).
pub(crate) async fn redis_connect_times(
    config: &poolkit_redis::Config,
    n: u32,
) -> Result<ConnectTimes, String> {
    let info = config.connection_info().map_err(|e| e.to_string())?;
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let timeout = config
        .connect_timeout
        .unwrap_or(config.pool.acquire_timeout.min(Duration::from_secs(5)));
    let mut samples = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let connect = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(_)) => samples.push(started.elapsed()),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer within {timeout:?}")),
        }
    }
    Ok(ConnectTimes::of(samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_info() {
        let t = ConnectTimes::of((1..=20).map(Duration::from_millis).collect());
        assert_eq!(t.samples, 20);
        assert!((t.p50 - 0.010).abs() < 1e-9, "{t:?}");
        assert!((t.p95 - 0.019).abs() < 1e-9, "{t:?}");
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "redis"), None);
    }
}
