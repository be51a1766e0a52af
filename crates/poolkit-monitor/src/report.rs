//! The JSON bodies of `/pools`, `/health` and `/alerts`, built from the registry.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use poolkit_core::{Alert, Health, HealthStatus, Monitored, PoolStats, Probe};
use serde::Serialize;

/// One pool in `/pools`: its snapshot and the health derived from it (no live ping).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PoolReport {
    /// The pool's name.
    pub name: String,
    /// `postgres`, `redis` or `http`.
    pub backend: String,
    /// The status from the snapshot.
    pub status: HealthStatus,
    /// The snapshot. In JSON, `closed` and `errors` are objects keyed by reason / kind
    /// (`{"broken": 0, "max_lifetime": 2}`).
    #[serde(serialize_with = "stats_json")]
    pub stats: PoolStats,
    /// Health from the snapshot, with alerts and recommendations.
    pub health: Health,
}

impl PoolReport {
    /// The report of one pool, from its current snapshot.
    #[must_use]
    pub fn of(pool: &dyn Monitored) -> Self {
        let stats = pool.stats();
        let health = pool.health();
        Self {
            name: pool.name().to_owned(),
            backend: pool.backend().as_str().to_owned(),
            status: health.status,
            stats,
            health,
        }
    }
}

/// `PoolStats` as JSON, with its `(name, count)` lists turned into objects.
fn stats_json<S: serde::Serializer>(stats: &PoolStats, s: S) -> Result<S::Ok, S::Error> {
    let mut value = serde_json::to_value(stats).map_err(serde::ser::Error::custom)?;
    for key in ["closed", "errors"] {
        if let Some(slot) = value.get_mut(key) {
            let pairs = slot.as_array().cloned().unwrap_or_default();
            let object: serde_json::Map<String, serde_json::Value> = pairs
                .into_iter()
                .filter_map(|pair| {
                    let name = pair.get(0)?.as_str()?.to_owned();
                    Some((name, pair.get(1)?.clone()))
                })
                .collect();
            *slot = serde_json::Value::Object(object);
        }
    }
    value.serialize(s)
}

/// The body of `/pools`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PoolsReport {
    /// Every registered pool, in the order they were built.
    pub pools: Vec<PoolReport>,
}

/// One pool in `/health`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PoolHealth {
    /// The pool's name.
    pub pool: String,
    /// `postgres`, `redis` or `http`.
    pub backend: String,
    /// `healthy`, `moderate`, `warning`, `critical` or `down`.
    pub status: HealthStatus,
    /// Utilization from 0 to 1.
    pub utilization: f64,
    /// One line for humans.
    pub message: String,
    /// How fast the pool's queries are: `status` (`ok`, `slow`, `no_data`), `avg_ms`,
    /// `p95_ms`, `slow_ratio`.
    pub query_performance: poolkit_core::QueryPerformance,
    /// Whether the pool can take more work: false when it is down or starved (callers
    /// waiting with no connection free for longer than `P_STARVATION_AFTER`).
    pub ready: bool,
}

/// The body of `/health`: the worst status over every pool, and each pool's.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// The worst status of any pool (`healthy` when there are none).
    pub status: HealthStatus,
    /// Whether every pool can take more work (none down, none starved): what a Kubernetes
    /// readiness probe asks `/health/ready`.
    pub ready: bool,
    /// Each pool's live health.
    pub pools: Vec<PoolHealth>,
}

impl HealthReport {
    /// Whether any pool is down (`/health` then answers 503).
    #[must_use]
    pub fn any_down(&self) -> bool {
        self.status == HealthStatus::Down
    }
}

/// The body of `/alerts`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct AlertsReport {
    /// Every alert of every pool, worst first.
    pub alerts: Vec<Alert>,
}

/// The counters seen at the previous health check of each pool (by name), to judge
/// reachability of a busy pool from what happened since.
static SEEN: Mutex<Vec<(String, u64, u64)>> = Mutex::new(Vec::new());

/// Whether a pool whose every connection is in use still reaches its backend: checkouts
/// keep succeeding, or no connect failed since the previous check.
fn busy_but_reachable(stats: &PoolStats) -> Result<(), String> {
    let connect_errors = stats.errors_by("connect");
    let mut seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    let previous = seen.iter_mut().find(|(n, _, _)| *n == stats.name);
    let verdict = match previous.as_deref() {
        Some((_, acquires, errors)) if connect_errors > *errors && stats.acquires == *acquires => {
            Err(format!(
                "{} connect errors and no successful checkout since the previous health check",
                connect_errors - errors
            ))
        }
        _ => Ok(()),
    };
    match previous {
        Some(entry) => {
            entry.1 = stats.acquires;
            entry.2 = connect_errors;
        }
        None => seen.push((stats.name.clone(), stats.acquires, connect_errors)),
    }
    verdict
}

/// Live health of one pool, which never queues behind the pool's callers.
///
/// The status comes from a snapshot taken first (the same one `/pools` and Prometheus
/// read), so the probe's own connection never skews it. Then [`Monitored::probe`] pings an
/// idle connection if there is one. When every connection is in use the pool is serving
/// checkouts, so it is reachable unless connects keep failing with no checkout succeeding
/// since the previous check. A probe that fails, or takes longer than `timeout` while the
/// pool is not saturated, makes the pool `down`.
pub async fn live_health(pool: &dyn Monitored, timeout: Duration) -> Health {
    let health = pool.health();
    let stats = pool.stats();
    let reason = match tokio::time::timeout(timeout, pool.probe()).await {
        Ok(Probe::Busy) => {
            return match busy_but_reachable(&stats) {
                Ok(()) => health,
                Err(why) => Health::down(&stats, &why),
            };
        }
        Ok(Probe::Failed(e)) => e.message,
        Ok(_) => return health,
        Err(_) => format!("no answer to a ping within {timeout:?}"),
    };
    // A caller may take the idle connection between the snapshot and the ping, which then
    // waits in the queue: with every connection busy and no connect failing, that is load,
    // not an outage.
    let now = pool.stats();
    let saturated = now.max_size > 0 && now.used >= u64::from(now.max_size);
    if saturated && now.errors_by("connect") == stats.errors_by("connect") {
        return health;
    }
    Health::down(&stats, &reason)
}

/// Live health of every pool, pinged concurrently.
pub async fn health(
    pools: &[Arc<dyn Monitored>],
    timeout: Duration,
) -> Vec<(Arc<dyn Monitored>, Health)> {
    let tasks: Vec<_> = pools
        .iter()
        .map(|p| {
            let p = Arc::clone(p);
            async move {
                let h = live_health(&*p, timeout).await;
                (p, h)
            }
        })
        .collect();
    futures_util::future::join_all(tasks).await
}

/// The `/health` body from live health results.
#[must_use]
pub fn health_report(results: &[(Arc<dyn Monitored>, Health)]) -> HealthReport {
    let pools: Vec<PoolHealth> = results
        .iter()
        .map(|(p, h)| PoolHealth {
            pool: p.name().to_owned(),
            backend: p.backend().as_str().to_owned(),
            status: h.status,
            utilization: h.utilization,
            message: h.message.clone(),
            query_performance: h.query_performance.clone(),
            ready: h.ready && h.status != HealthStatus::Down,
        })
        .collect();
    let status = pools
        .iter()
        .map(|p| p.status)
        .max()
        .unwrap_or(HealthStatus::Healthy);
    let ready = pools.iter().all(|p| p.ready);
    HealthReport {
        status,
        ready,
        pools,
    }
}

/// The `/alerts` body from live health results.
#[must_use]
pub fn alerts_report(results: &[(Arc<dyn Monitored>, Health)]) -> AlertsReport {
    let mut alerts: Vec<Alert> = results
        .iter()
        .flat_map(|(_, h)| h.alerts.iter().cloned())
        .collect();
    alerts.sort_by_key(|a| std::cmp::Reverse(a.severity));
    AlertsReport { alerts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolkit_core::{BoxFuture, PingError, Thresholds};

    /// A pool with fixed numbers whose ping succeeds, fails or never answers.
    #[derive(Debug)]
    struct Fake {
        used: u64,
        max: u32,
        ping: Ping,
    }

    #[derive(Debug, Clone, Copy)]
    enum Ping {
        Ok,
        Refused,
        Hang,
    }

    impl Monitored for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn backend(&self) -> poolkit_core::Backend {
            poolkit_core::Backend::Redis
        }
        fn stats(&self) -> PoolStats {
            let mut s = PoolStats::default();
            s.name = "fake".into();
            s.backend = "redis".into();
            s.max_size = self.max;
            s.used = self.used;
            s.open = self.used;
            #[allow(clippy::cast_precision_loss)]
            {
                s.utilization = self.used as f64 / f64::from(self.max);
            }
            s.ceiling_var = "FAKE_POOL_SIZE".into();
            s
        }
        fn health(&self) -> Health {
            Health::assess(&self.stats(), &Thresholds::default())
        }
        fn ping(&self) -> BoxFuture<'_, Result<(), PingError>> {
            let ping = self.ping;
            Box::pin(async move {
                match ping {
                    Ping::Ok => Ok(()),
                    Ping::Refused => Err(PingError::new("fake", "connection refused")),
                    Ping::Hang => std::future::pending().await,
                }
            })
        }
    }

    fn pool(used: u64, max: u32, ping: Ping) -> Arc<dyn Monitored> {
        Arc::new(Fake { used, max, ping })
    }

    const T: Duration = Duration::from_secs(3);

    #[tokio::test(start_paused = true)]
    async fn live_health_from_ping_and_snapshot() {
        let h = live_health(&*pool(8, 10, Ping::Ok), T).await;
        assert_eq!(h.status, HealthStatus::Warning);
        let h = live_health(&*pool(1, 10, Ping::Refused), T).await;
        assert_eq!(h.status, HealthStatus::Down);
        assert_eq!(h.message, "Fake pool is down: connection refused");
        let started = tokio::time::Instant::now();
        let h = live_health(&*pool(1, 10, Ping::Hang), T).await;
        assert_eq!(h.status, HealthStatus::Down);
        assert_eq!(started.elapsed(), T, "gives up after the ping timeout");
        assert!(
            h.message.contains("no answer to a ping within 3s"),
            "{}",
            h.message
        );
        // Every connection busy: the ping waits in the queue, which is not an outage; and
        // with no timeouts and no long waits a full pool is not critical either.
        let h = live_health(&*pool(10, 10, Ping::Hang), T).await;
        assert_eq!(h.status, HealthStatus::Warning);
    }

    #[test]
    fn a_busy_pool_is_down_only_when_connects_fail_and_nothing_succeeds() {
        let mut s = PoolStats::default();
        s.name = "busy_judge".into();
        s.acquires = 100;
        assert!(busy_but_reachable(&s).is_ok(), "first look: serving");
        s.acquires = 150;
        s.errors = vec![("connect".into(), 3)];
        assert!(busy_but_reachable(&s).is_ok(), "checkouts still succeed");
        s.errors = vec![("connect".into(), 7)];
        let why = busy_but_reachable(&s).expect_err("connects fail, no checkout since");
        assert_eq!(
            why,
            "4 connect errors and no successful checkout since the previous health check"
        );
        s.acquires = 151;
        assert!(busy_but_reachable(&s).is_ok(), "a checkout succeeded again");
    }

    #[tokio::test(start_paused = true)]
    async fn worst_status_wins_and_alerts_sort_worst_first() {
        let results = health(
            &[
                pool(1, 10, Ping::Ok),
                pool(8, 10, Ping::Ok),
                pool(1, 10, Ping::Refused),
            ],
            T,
        )
        .await;
        let report = health_report(&results);
        assert_eq!(report.status, HealthStatus::Down);
        assert!(report.any_down());
        assert!(!report.ready, "a pool that is down is not ready");
        let statuses: Vec<_> = report.pools.iter().map(|p| p.status).collect();
        assert_eq!(
            statuses,
            [
                HealthStatus::Healthy,
                HealthStatus::Warning,
                HealthStatus::Down
            ]
        );
        let alerts = alerts_report(&results).alerts;
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].severity, poolkit_core::Severity::Critical);
        assert_eq!(alerts[1].severity, poolkit_core::Severity::Warning);
        // 80 % used, no timeouts: nothing to raise.
        assert!(
            alerts[1].recommendation.starts_with("no change needed"),
            "{}",
            alerts[1].recommendation
        );
        assert_eq!(health_report(&[]).status, HealthStatus::Healthy);
    }
}
