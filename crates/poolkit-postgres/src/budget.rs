//! The connection budget: does `instances × pool ceiling + reserve` fit the server's
//! `max_connections`?

use crate::error::Error;
use crate::pool::Pool;
use crate::prisma::Limit;

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
    /// What the limit is: `max_connections` (the server's), or the variable that lowered it
    /// (`DATABASE_MAX_CONNECTIONS`).
    pub limit_source: String,
    /// The server connections of the pooler in front, when known: then the pooler's pool,
    /// not the app's pools, is what must fit, and the app's connections queue in it.
    pub pooler_pool_size: Option<Limit>,
    /// The variable that sets `per_instance` (`MAX_POOL_SIZE`, `DATABASE_POOL_SIZE`).
    pub size_var: String,
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
        let mut b = plan(
            max_connections,
            reserved,
            in_use,
            instances,
            self.config().pool.ceiling(),
            &self.config().ceiling_var(),
        );
        if let Some(limit) = &self.config().max_connections
            && (max_connections == 0 || i64::from(limit.value) < max_connections)
        {
            b = b.with_limit(limit);
        }
        if let Some(pooler) = &self.config().pooler_pool_size {
            b = b.through_pooler(pooler);
        }
        Ok(b)
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
    let verdict = verdict(
        fits,
        &Numbers {
            instances,
            per_instance,
            reserved,
            needed,
            limit: max_connections,
            max_instances,
            available,
        },
        "max_connections",
        size_var,
    );
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
        limit_source: "max_connections".to_owned(),
        pooler_pool_size: None,
        size_var: size_var.to_owned(),
    }
}

struct Numbers {
    instances: u32,
    per_instance: u32,
    reserved: i64,
    needed: i64,
    limit: i64,
    max_instances: i64,
    available: i64,
}

fn verdict(fits: bool, n: &Numbers, limit_name: &str, size_var: &str) -> String {
    let Numbers {
        instances,
        per_instance,
        reserved,
        needed,
        limit,
        max_instances,
        available,
    } = *n;
    if fits {
        return format!(
            "fits: {} × {per_instance} + {reserved} reserved = {needed} of {limit_name} {limit} (room for {})",
            instances_n(instances),
            instances_n(max_instances)
        );
    }
    let head = format!(
        "does NOT fit: {} × {per_instance} + {reserved} reserved = {needed} > {limit_name} {limit}",
        instances_n(instances)
    );
    if max_instances == 0 || instances <= 1 {
        // Not even one instance fits: only a smaller pool (or a pooler) helps.
        return format!(
            "{head}; even one instance needs more than the server has: lower {size_var} to {available} or less, or put PgBouncer/Supavisor in front"
        );
    }
    let per = available / i64::from(instances);
    format!(
        "{head}; lower {size_var} to {per} or run at most {}, or put PgBouncer/Supavisor in front",
        instances_n(max_instances)
    )
}

impl Budget {
    /// The budget against a lower limit the application is granted (`P_MAX_CONNECTIONS`).
    #[must_use]
    pub fn with_limit(self, limit: &Limit) -> Self {
        let size_var = self.size_var.clone();
        let mut b = plan(
            i64::from(limit.value),
            self.reserved,
            self.in_use,
            self.instances,
            self.per_instance,
            &size_var,
        );
        let available = (b.max_connections - b.reserved).max(0);
        b.verdict = verdict(
            b.fits,
            &Numbers {
                instances: b.instances,
                per_instance: b.per_instance,
                reserved: b.reserved,
                needed: b.needed,
                limit: b.max_connections,
                max_instances: b.max_instances,
                available,
            },
            &limit.source,
            &size_var,
        );
        b.limit_source.clone_from(&limit.source);
        b.pooler_pool_size = self.pooler_pool_size;
        b
    }

    /// The budget when the app connects through a pooler holding `pooler` server
    /// connections: those (plus the reserved ones) must fit the limit, and the app's
    /// `instances × per_instance` client connections share them, queueing in the pooler
    /// when more run at once.
    #[must_use]
    pub fn through_pooler(mut self, pooler: &Limit) -> Self {
        let server = i64::from(pooler.value) + self.reserved;
        let clients = i64::from(self.instances) * i64::from(self.per_instance);
        self.needed = server;
        self.fits = server <= self.max_connections;
        let share = if clients > i64::from(pooler.value) {
            format!(
                "; {clients} client connections ({} × {}) share them, so up to {} queue in the pooler at peak",
                instances_n(self.instances),
                self.per_instance,
                clients - i64::from(pooler.value)
            )
        } else {
            format!("; {clients} client connections fit in them")
        };
        self.verdict = if self.fits {
            format!(
                "fits: the pooler's {}={} server connections + {} reserved = {server} of {} {}{share}",
                pooler.source, pooler.value, self.reserved, self.limit_source, self.max_connections
            )
        } else {
            format!(
                "does NOT fit: the pooler's {}={} server connections + {} reserved = {server} > {} {}; lower {} to {} or less{share}",
                pooler.source,
                pooler.value,
                self.reserved,
                self.limit_source,
                self.max_connections,
                pooler.source,
                (self.max_connections - self.reserved).max(0)
            )
        };
        self.pooler_pool_size = Some(pooler.clone());
        self
    }
}

/// "1 instance", "3 instances".
pub(crate) fn instances_n(n: impl Into<i64>) -> String {
    let n = n.into();
    if n == 1 {
        "1 instance".to_owned()
    } else {
        format!("{n} instances")
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
        // One instance of 150 against 100: no "run at most 0 instances".
        let b = plan(100, 3, ServerUse::default(), 1, 150, "MAX_POOL_SIZE");
        assert!(!b.fits);
        assert!(!b.verdict.contains("0 instances"), "{}", b.verdict);
        assert!(
            b.verdict.contains("lower MAX_POOL_SIZE to 97 or less"),
            "{}",
            b.verdict
        );
        let b = plan(100, 3, ServerUse::default(), 4, 150, "MAX_POOL_SIZE");
        assert!(!b.verdict.contains("0 instances"), "{}", b.verdict);
        // A granted limit below max_connections.
        let b = plan(100, 3, ServerUse::default(), 2, 30, "DATABASE_POOL_SIZE")
            .with_limit(&Limit::new(60, "DATABASE_MAX_CONNECTIONS"));
        assert!(!b.fits, "2 × 30 + 3 > 60");
        assert!(
            b.verdict.contains("> DATABASE_MAX_CONNECTIONS 60")
                && b.verdict.contains("lower DATABASE_POOL_SIZE to 28"),
            "{}",
            b.verdict
        );
        // Through Supavisor: its pool must fit, the app's connections queue in it.
        let b = plan(100, 3, ServerUse::default(), 10, 20, "DATABASE_POOL_SIZE")
            .through_pooler(&Limit::new(40, "SUPAVISOR_POOL_SIZE"));
        assert!(b.fits, "{}", b.verdict);
        assert!(
            b.verdict.contains(
                "SUPAVISOR_POOL_SIZE=40 server connections + 3 reserved = 43 of max_connections 100"
            ) && b.verdict.contains("up to 160 queue in the pooler"),
            "{}",
            b.verdict
        );
        let b = plan(100, 3, ServerUse::default(), 1, 5, "DATABASE_POOL_SIZE")
            .through_pooler(&Limit::new(120, "--pgbouncer-pool-size"));
        assert!(
            !b.fits && b.verdict.contains("lower --pgbouncer-pool-size to 97"),
            "{}",
            b.verdict
        );
    }
}
