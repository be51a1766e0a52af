//! The connection budget: does `instances × pool ceiling + reserve` fit the server's
//! `max_connections`?

use crate::error::Error;
use crate::pool::Pool;

/// Connections in use on the server, from `pg_stat_activity`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerUse {
    /// Client backends, all states.
    pub total: i64,
    /// Running a query.
    pub active: i64,
    /// Idle.
    pub idle: i64,
    /// Idle inside an open transaction (holding locks and a connection).
    pub idle_in_transaction: i64,
    /// Client backends by `application_name`, most first.
    pub by_application: Vec<(String, i64)>,
}

/// The answer of [`Pool::budget`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Budget {
    /// The server's `max_connections`.
    pub max_connections: i64,
    /// `superuser_reserved_connections` (plus `reserved_connections` on PostgreSQL 16+).
    pub reserved: i64,
    /// Current use.
    pub in_use: ServerUse,
    /// App instances planned.
    pub instances: u32,
    /// This pool's ceiling per instance.
    pub per_instance: u32,
    /// `instances × per_instance + reserved`.
    pub needed: i64,
    /// Whether `needed <= max_connections`.
    pub fits: bool,
    /// The most instances of this pool that fit.
    pub max_instances: i64,
    /// Supabase's guideline when PostgREST is used heavily: pools ≤ 40 % of max_connections.
    pub supabase_heavy_postgrest_limit: i64,
    /// Supabase's guideline otherwise: ≤ 80 %.
    pub supabase_limit: i64,
    /// One line for humans.
    pub verdict: String,
}

impl Pool {
    /// Reads `max_connections`, the reserved connections and current use from the server,
    /// and says whether `instances` copies of this pool fit.
    ///
    /// # Errors
    /// Any error getting a connection or running the queries.
    pub async fn budget(&self, instances: u32) -> Result<Budget, Error> {
        let conn = self.get().await?;
        let setting = async |name: &str| -> Result<i64, Error> {
            let row = conn
                .query_one("SELECT coalesce(current_setting($1, true), '0')", &[&name])
                .await?;
            Ok(row.get::<_, String>(0).parse().unwrap_or(0))
        };
        let max_connections = setting("max_connections").await?;
        let reserved = setting("superuser_reserved_connections").await?
            + setting("reserved_connections").await?;
        let row = conn
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE state = 'active'), count(*) FILTER (WHERE state = 'idle'), \
                 count(*) FILTER (WHERE state LIKE 'idle in transaction%') FROM pg_stat_activity WHERE backend_type = 'client backend'",
                &[],
            )
            .await?;
        let rows = conn
            .query(
                "SELECT coalesce(nullif(application_name, ''), '(none)'), count(*) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC, 1",
                &[],
            )
            .await?;
        let in_use = ServerUse {
            total: row.get(0),
            active: row.get(1),
            idle: row.get(2),
            idle_in_transaction: row.get(3),
            by_application: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        };
        Ok(plan(
            max_connections,
            reserved,
            in_use,
            instances,
            self.config().pool.ceiling(),
            &self.config().ceiling_var(),
        ))
    }
}

/// The arithmetic of [`Pool::budget`], separate so it can be tested without a server.
#[must_use]
pub fn plan(
    max_connections: i64,
    reserved: i64,
    in_use: ServerUse,
    instances: u32,
    per_instance: u32,
    size_var: &str,
) -> Budget {
    let needed = i64::from(instances) * i64::from(per_instance) + reserved;
    let fits = needed <= max_connections;
    let available = (max_connections - reserved).max(0);
    let max_instances = if per_instance == 0 {
        0
    } else {
        available / i64::from(per_instance)
    };
    let supabase_heavy_postgrest_limit = max_connections * 40 / 100;
    let supabase_limit = max_connections * 80 / 100;
    let verdict = if fits {
        format!(
            "fits: {instances} instances × {per_instance} + {reserved} reserved = {needed} of max_connections {max_connections} (room for {max_instances} instances)"
        )
    } else {
        let per = if instances == 0 {
            0
        } else {
            available / i64::from(instances)
        };
        format!(
            "does NOT fit: {instances} instances × {per_instance} + {reserved} reserved = {needed} > max_connections {max_connections}; \
             lower {size_var} to {per} or run at most {max_instances} instances, or put PgBouncer/Supavisor in front"
        )
    };
    Budget {
        max_connections,
        reserved,
        in_use,
        instances,
        per_instance,
        needed,
        fits,
        max_instances,
        supabase_heavy_postgrest_limit,
        supabase_limit,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_arithmetic() {
        let b = plan(100, 3, ServerUse::default(), 4, 20, "MAX_POOL_SIZE");
        assert!(b.fits);
        assert_eq!(
            (
                b.needed,
                b.max_instances,
                b.supabase_limit,
                b.supabase_heavy_postgrest_limit
            ),
            (83, 4, 80, 40)
        );
        let b = plan(100, 3, ServerUse::default(), 5, 20, "MAX_POOL_SIZE");
        assert!(!b.fits);
        assert!(
            b.verdict.contains("lower MAX_POOL_SIZE to 19"),
            "{}",
            b.verdict
        );
    }
}
