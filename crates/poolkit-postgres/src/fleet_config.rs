//! The fleet budget's settings (`P_FLEET_*`), read whether or not the `fleet` feature is
//! built, so a budget set without it is an error rather than silently ignored.

use std::fmt;
use std::time::Duration;

use poolkit_core::env::{Env, parse_u32};
use poolkit_core::{ConfigError, Secret, redact_url};

/// How many connections the whole fleet may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FleetBudget {
    /// A fixed number. Env: `P_FLEET_BUDGET=60`.
    Fixed(u32),
    /// The server's `max_connections` − its reserved connections − `P_FLEET_RESERVE`.
    /// Env: `P_FLEET_BUDGET=server`.
    Server,
}

/// A fleet budget: every instance of this pool (same `P_FLEET_KEY`) shares `budget`
/// connections through expiring leases in Redis.
#[derive(Clone)]
#[non_exhaustive]
pub struct FleetConfig {
    /// The budget. Env: `P_FLEET_BUDGET` (a number, or `server`).
    pub budget: FleetBudget,
    /// Where the leases live. Env: `P_FLEET_REDIS_URL`, else `REDIS_URL`: one server
    /// (`redis://host:6379`), Redis Sentinel (`redis+sentinel://host:26379,host:26379/mymaster`)
    /// or Redis Cluster (a comma list of seed nodes, `redis://a:7000,redis://b:7001`).
    pub redis_url: Secret,
    /// Connections kept free for others (admin, migrations) below the server's limit when
    /// the budget comes from the server. Default: 5. Env: `P_FLEET_RESERVE`.
    pub reserve: u32,
    /// How long a dead instance's share stays out of use: the others take it over within
    /// it. Leases are renewed every quarter of it. Default: 10 s. Env: `P_FLEET_TTL`.
    pub ttl: Duration,
    /// The Redis key prefix shared by the fleet. Default: `poolkit:fleet:<pool name>`.
    /// Env: `P_FLEET_KEY`. Every key is `{<key>}:…`, one hash slot on Redis Cluster.
    pub key: String,
    /// Connections an instance keeps when it cannot renew its lease: it sheds down to
    /// this before its lease expires, and the floor stays reserved for it (the others
    /// never count on it) for [`FleetConfig::floor_hold`]. Default: 1. Env: `P_FLEET_FLOOR`.
    pub floor: u32,
}

impl FleetConfig {
    /// A budget of `budget` connections with leases in the Redis at `redis_url` under
    /// `key`, and the defaults for the rest (reserve 5, TTL 10 s, floor 1).
    #[must_use]
    pub fn new(budget: FleetBudget, redis_url: &str, key: &str) -> Self {
        Self {
            budget,
            redis_url: Secret::new(redis_url),
            reserve: 5,
            ttl: Duration::from_secs(10),
            key: key.to_owned(),
            floor: 1,
        }
    }

    /// How long a floor stays reserved for an instance that stopped renewing: 30 TTLs
    /// (5 minutes at the default TTL). A cut-off instance closes its last connections
    /// before then by its own clock; a dead instance's floor returns to the fleet then.
    #[must_use]
    pub fn floor_hold(&self) -> Duration {
        self.ttl * 30
    }
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("budget", &self.budget)
            .field("redis_url", &redact_url(self.redis_url.expose()))
            .field("reserve", &self.reserve)
            .field("ttl", &self.ttl)
            .field("key", &self.key)
            .field("floor", &self.floor)
            .finish()
    }
}

/// Reads `P_FLEET_BUDGET` and the rest; `None` when no budget is set.
pub(crate) fn from_env(env: &Env<'_>, pool: &str) -> Result<Option<FleetConfig>, ConfigError> {
    let Some((var, value)) = env.var("FLEET_BUDGET") else {
        return Ok(None);
    };
    let budget = if value.trim().eq_ignore_ascii_case("server") {
        FleetBudget::Server
    } else {
        FleetBudget::Fixed(parse_u32(&var, &value, 1, 100_000).map_err(|_| {
            ConfigError::Invalid {
                var: var.clone(),
                value: value.clone(),
                expected: "a whole number of connections from 1 to 100000, or `server` (max_connections minus the reserved ones and P_FLEET_RESERVE)".into(),
            }
        })?)
    };
    let url_var = env.name("FLEET_REDIS_URL");
    let redis_url = env
        .raw_nonempty(&url_var)
        .or_else(|| env.raw_nonempty("REDIS_URL"))
        .ok_or_else(|| ConfigError::Missing {
            var: url_var.clone(),
            hint: format!(
                "{var} needs Redis for the leases: set {url_var} (or REDIS_URL) to redis://host:6379"
            ),
        })?;
    let reserve = match env.u32_in("FLEET_RESERVE", 0, 100_000)? {
        Some((_, n)) => n,
        None => 5,
    };
    let ttl = match env.duration("FLEET_TTL")? {
        Some((var, d)) if d < Duration::from_millis(300) => {
            return Err(ConfigError::Invalid {
                var,
                value: format!("{d:?}"),
                expected: "a duration of at least 300ms (leases are renewed every quarter of it)"
                    .into(),
            });
        }
        Some((_, d)) => d,
        None => Duration::from_secs(10),
    };
    let key = env
        .raw_nonempty(&env.name("FLEET_KEY"))
        .unwrap_or_else(|| format!("poolkit:fleet:{pool}"));
    let floor = match env.u32_in("FLEET_FLOOR", 0, 10_000)? {
        Some((_, n)) => n,
        None => 1,
    };
    Ok(Some(FleetConfig {
        budget,
        redis_url: Secret::new(redis_url),
        reserve,
        ttl,
        key,
        floor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Option<FleetConfig>, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        from_env(&Env::new("DATABASE", &lookup), "database")
    }

    #[test]
    fn budget_needs_redis_and_names_bad_values() {
        assert!(read(&[]).unwrap().is_none());
        let e = read(&[("DATABASE_FLEET_BUDGET", "60")]).unwrap_err();
        assert_eq!(e.var(), "DATABASE_FLEET_REDIS_URL", "{e}");
        let c = read(&[
            ("DATABASE_FLEET_BUDGET", "60"),
            ("REDIS_URL", "redis://:hunter2@cache:6379"),
            ("DATABASE_FLEET_TTL", "3s"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.budget, c.ttl, c.reserve),
            (FleetBudget::Fixed(60), Duration::from_secs(3), 5)
        );
        assert_eq!((c.key.as_str(), c.floor), ("poolkit:fleet:database", 1));
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let c = read(&[
            ("DATABASE_FLEET_BUDGET", "server"),
            ("DATABASE_FLEET_REDIS_URL", "redis://127.0.0.1:6379"),
            ("DATABASE_FLEET_RESERVE", "10"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((c.budget, c.reserve), (FleetBudget::Server, 10));
        for (var, value) in [
            ("DATABASE_FLEET_BUDGET", "lots"),
            ("DATABASE_FLEET_BUDGET", "0"),
            ("DATABASE_FLEET_TTL", "100ms"),
            ("DATABASE_FLEET_RESERVE", "-1"),
            ("DATABASE_FLEET_FLOOR", "some"),
        ] {
            let mut vars = vec![
                ("DATABASE_FLEET_BUDGET", "60"),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
            ];
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            let e = read(&vars).unwrap_err();
            assert_eq!(e.var(), var, "{e}");
        }
    }
}
