//! Health, alerts and recommendations, derived from a [`PoolStats`] snapshot.

use std::fmt;

use crate::{ConfigError, PoolStats};

/// A pool's health status, from utilization (or `Down` when the backend cannot be reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "lowercase")
)]
#[non_exhaustive]
pub enum HealthStatus {
    /// Utilization below the moderate threshold (default 50 %).
    Healthy,
    /// Utilization from the moderate to the warning threshold (default 50–69 %).
    Moderate,
    /// Utilization from the warning to the critical threshold (default 70–89 %).
    Warning,
    /// Utilization at or above the critical threshold (default ≥ 90 %).
    Critical,
    /// The backend cannot be reached.
    Down,
}

impl HealthStatus {
    /// `healthy`, `moderate`, `warning`, `critical` or `down`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Moderate => "moderate",
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Down => "down",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Utilization thresholds (0–1) at which health turns moderate, warning and critical.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Thresholds {
    /// Default: 0.5.
    pub moderate: f64,
    /// Default: 0.7.
    pub warning: f64,
    /// Default: 0.9.
    pub critical: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            moderate: 0.5,
            warning: 0.7,
            critical: 0.9,
        }
    }
}

/// The variables that set the health thresholds for every pool, in percent
/// (`POOLKIT_HEALTH_WARNING=80`). A pool's own `P_HEALTH_MODERATE`, `P_HEALTH_WARNING`
/// and `P_HEALTH_CRITICAL` win over them.
pub const THRESHOLD_VARS: [&str; 3] = [
    "POOLKIT_HEALTH_MODERATE",
    "POOLKIT_HEALTH_WARNING",
    "POOLKIT_HEALTH_CRITICAL",
];

/// The suffixes of the per-pool threshold variables (`P_HEALTH_WARNING`).
pub const THRESHOLD_SUFFIXES: [&str; 3] = ["HEALTH_MODERATE", "HEALTH_WARNING", "HEALTH_CRITICAL"];

fn parse_percent(var: &str, value: &str) -> Result<f64, ConfigError> {
    let t = value.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    let ok = !t.is_empty()
        && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && t.bytes().filter(|b| *b == b'.').count() <= 1;
    match t.parse::<f64>() {
        Ok(v) if ok && v > 0.0 && v <= 100.0 => Ok(v / 100.0),
        _ => Err(ConfigError::invalid(
            var,
            value,
            "a percentage of the pool's ceiling above 0 and at most 100, such as 70 or 85.5%",
        )),
    }
}

impl Thresholds {
    /// Thresholds from the process environment (see [`Thresholds::from_lookup`]).
    ///
    /// # Errors
    /// As [`Thresholds::from_lookup`].
    pub fn from_env(prefix: Option<&str>) -> Result<Self, ConfigError> {
        Self::from_lookup(prefix, &crate::env::process_lookup)
    }

    /// Thresholds from `P_HEALTH_MODERATE` / `P_HEALTH_WARNING` / `P_HEALTH_CRITICAL` (when
    /// `prefix` is given), else `POOLKIT_HEALTH_MODERATE` / `_WARNING` / `_CRITICAL`, else the
    /// defaults (50 / 70 / 90). Values are percentages (`80`, `80%`, `72.5`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the variable for a value that is not a percentage, or
    /// thresholds out of order (moderate < warning < critical).
    pub fn from_lookup(
        prefix: Option<&str>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut t = Self::default();
        let mut set_by: Vec<String> = Vec::new();
        for (i, global) in THRESHOLD_VARS.iter().enumerate() {
            let own = prefix.map(|p| format!("{p}_{}", THRESHOLD_SUFFIXES[i]));
            let found = own
                .as_deref()
                .and_then(|n| lookup(n).map(|v| (n.to_owned(), v)))
                .or_else(|| lookup(global).map(|v| ((*global).to_owned(), v)));
            if let Some((var, value)) = found {
                let v = parse_percent(&var, &value)?;
                match i {
                    0 => t.moderate = v,
                    1 => t.warning = v,
                    _ => t.critical = v,
                }
                set_by.push(format!("{var}={value}"));
            }
        }
        if t.validate().is_err() {
            return Err(ConfigError::Invalid {
                var: set_by.join(", "),
                value: format!(
                    "{}/{}/{} %",
                    t.moderate * 100.0,
                    t.warning * 100.0,
                    t.critical * 100.0
                ),
                expected: "moderate < warning < critical (defaults 50 < 70 < 90)".into(),
            });
        }
        Ok(t)
    }

    /// Thresholds with the given values (checked by [`Thresholds::validate`]).
    #[must_use]
    pub fn new(moderate: f64, warning: f64, critical: f64) -> Self {
        Self {
            moderate,
            warning,
            critical,
        }
    }

    /// Checks `0 < moderate < warning < critical <= 1`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the thresholds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ok = 0.0 < self.moderate
            && self.moderate < self.warning
            && self.warning < self.critical
            && self.critical <= 1.0;
        if ok {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                var: "health thresholds".into(),
                value: format!("{}/{}/{}", self.moderate, self.warning, self.critical),
                expected: "0 < moderate < warning < critical <= 1".into(),
            })
        }
    }

    /// The status for a utilization from 0 to 1.
    #[must_use]
    pub fn classify(&self, utilization: f64) -> HealthStatus {
        if utilization >= self.critical {
            HealthStatus::Critical
        } else if utilization >= self.warning {
            HealthStatus::Warning
        } else if utilization >= self.moderate {
            HealthStatus::Moderate
        } else {
            HealthStatus::Healthy
        }
    }
}

/// How serious an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "lowercase")
)]
#[non_exhaustive]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Act soon.
    Warning,
    /// Act now.
    Critical,
}

/// One alert about one pool, with what to do about it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Alert {
    /// How serious.
    pub severity: Severity,
    /// The pool's name.
    pub pool: String,
    /// What is wrong.
    pub message: String,
    /// What to change, naming the env var and a value.
    pub recommendation: String,
}

impl Alert {
    /// An alert about `pool` (for adapters that add their own, such as a fleet budget).
    #[must_use]
    pub fn new(severity: Severity, pool: &str, message: String, recommendation: String) -> Self {
        Self {
            severity,
            pool: pool.to_owned(),
            message,
            recommendation,
        }
    }
}

/// A pool's health: a status, a one-line message, alerts and recommendations.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Health {
    /// The pool's name.
    pub pool: String,
    /// The status.
    pub status: HealthStatus,
    /// Utilization from 0 to 1.
    pub utilization: f64,
    /// One line for humans.
    pub message: String,
    /// Alerts, worst first.
    pub alerts: Vec<Alert>,
    /// Recommendations (the alerts' recommendations, plus quieter advice).
    pub recommendations: Vec<String>,
    /// How fast the pool's queries are (PostgreSQL statements, Redis commands).
    pub query_performance: crate::query::QueryPerformance,
    /// Whether the pool can take more work now: false when it is down, starved (callers
    /// waiting with no connection free for longer than `P_STARVATION_AFTER`) or its
    /// adapter reports it cannot open new connections. A Kubernetes readiness probe reads
    /// it from the monitor's `/health/ready`.
    pub ready: bool,
}

fn title(name: &str) -> String {
    let mut c = name.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

/// A wait at the 95th percentile this share of the acquire timeout or more is a long wait
/// (see [`under_pressure`]; the Prometheus rules use the same share of the default timeout).
pub const LONG_WAIT: f64 = 0.5;

/// Whether callers suffer: acquires timed out, the pool is starved, or the 95th
/// percentile wait reaches half the acquire timeout. Utilization alone is not suffering: a
/// full pool whose callers wait briefly is doing its job.
#[must_use]
pub fn under_pressure(stats: &PoolStats) -> bool {
    stats.timeouts > 0
        || stats.starved
        || (stats.acquire_timeout > 0.0 && stats.wait.p95 >= stats.acquire_timeout * LONG_WAIT)
}

/// The size advice for a snapshot, by [`crate::advice::advise`]. A pool not
/// [`under_pressure`] is big enough, however full: its callers are served in time. Under
/// pressure, the busy connections are those in use plus the callers waiting (the queue
/// that did not keep up).
#[must_use]
pub fn size_advice(stats: &PoolStats) -> crate::advice::SizeAdvice {
    if !under_pressure(stats) {
        return crate::advice::SizeAdvice::Enough;
    }
    #[allow(clippy::cast_precision_loss)]
    let busy = (stats.used + stats.pending) as f64;
    crate::advice::advise(
        busy,
        stats.max_size,
        &stats.ceiling_var,
        stats.server_cap.as_ref(),
    )
}

impl Health {
    /// Health of a pool whose backend could not be reached.
    #[must_use]
    pub fn down(stats: &PoolStats, reason: &str) -> Self {
        let message = format!("{} pool is down: {reason}", title(&stats.name));
        let alert = Alert {
            severity: Severity::Critical,
            pool: stats.name.clone(),
            message: message.clone(),
            recommendation: format!(
                "check that the {} server is running and reachable with the configured URL",
                stats.backend
            ),
        };
        Self {
            pool: stats.name.clone(),
            status: HealthStatus::Down,
            utilization: stats.utilization,
            query_performance: crate::query::QueryPerformance::assess(stats).0,
            message,
            recommendations: vec![alert.recommendation.clone()],
            alerts: vec![alert],
            ready: false,
        }
    }

    /// Adds an alert (for adapters: a fleet budget, a secret that stopped working), keeping
    /// the alerts worst first and the recommendation listed; the status becomes at least
    /// `at_least`, and `ready` turns false when `not_ready`.
    pub fn add_alert(&mut self, alert: Alert, at_least: HealthStatus, not_ready: bool) {
        if self.status < at_least {
            self.status = at_least;
        }
        if not_ready {
            self.ready = false;
        }
        self.message = format!("{}; {}", self.message, alert.message);
        self.recommendations.insert(0, alert.recommendation.clone());
        self.alerts.push(alert);
        self.alerts.sort_by_key(|a| std::cmp::Reverse(a.severity));
    }

    /// Health from a snapshot: status from utilization, alerts for high utilization,
    /// waiters, timeouts and connect errors, each naming the variable to change.
    #[must_use]
    pub fn assess(stats: &PoolStats, thresholds: &Thresholds) -> Self {
        let pressured = under_pressure(stats);
        let mut status = thresholds.classify(stats.utilization);
        if status == HealthStatus::Critical && !pressured {
            // Full, but callers get connections quickly and none time out.
            status = HealthStatus::Warning;
        }
        let name = title(&stats.name);
        let pct = stats.utilization * 100.0;
        let mut alerts = Vec::new();
        let raise = match size_advice(stats) {
            crate::advice::SizeAdvice::Enough if pressured => format!(
                "{} ({}) covers the connections in use: shorten the time each caller holds one",
                stats.ceiling_var, stats.max_size
            ),
            crate::advice::SizeAdvice::Enough => format!(
                "no change needed: callers wait {:.0} ms at p95 and none timed out",
                stats.wait.p95 * 1000.0
            ),
            advice => advice.to_string(),
        };
        if status >= HealthStatus::Warning {
            alerts.push(Alert {
                severity: if status == HealthStatus::Critical {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                pool: stats.name.clone(),
                message: format!(
                    "{name} pool utilization high: {pct:.1}% ({} of {} in use)",
                    stats.used, stats.max_size
                ),
                recommendation: raise.clone(),
            });
        }
        if stats.pending > 0 && status < HealthStatus::Warning {
            alerts.push(Alert {
                severity: Severity::Info,
                pool: stats.name.clone(),
                message: format!(
                    "{name} pool has {} callers waiting for a connection",
                    stats.pending
                ),
                recommendation: raise.clone(),
            });
        }
        if stats.timeouts > 0 {
            alerts.push(Alert {
                severity: Severity::Warning,
                pool: stats.name.clone(),
                message: format!("{name} pool timed out {} acquires", stats.timeouts),
                recommendation: format!("{raise}, or shorten the time each caller holds a connection; {} sets how long callers wait", stats.timeout_var),
            });
        }
        let connect_errors = stats.errors_by("connect");
        if connect_errors > 0 {
            alerts.push(Alert {
                severity: Severity::Warning,
                pool: stats.name.clone(),
                message: format!("{name} pool failed to connect {connect_errors} times"),
                recommendation:
                    "check the server's logs, its max_connections and the credentials in the URL"
                        .into(),
            });
        }
        if stats.starved {
            alerts.push(Alert {
                severity: Severity::Critical,
                pool: stats.name.clone(),
                message: format!(
                    "{name} pool starved: {} callers waiting and no connection free for {:.1} s",
                    stats.pending, stats.starved_for
                ),
                recommendation: format!(
                    "{raise}, or find what holds the connections (P_LEAK_THRESHOLD reports long holders); readiness is off until a connection is free ({} sets how long this may last)",
                    stats.starvation_var
                ),
            });
        }
        let (query_performance, slow) = crate::query::QueryPerformance::assess(stats);
        alerts.extend(slow);
        alerts.sort_by_key(|a| std::cmp::Reverse(a.severity));
        let mut recommendations: Vec<String> =
            alerts.iter().map(|a| a.recommendation.clone()).collect();
        if status == HealthStatus::Healthy
            && !stats.auto_sized
            && stats.acquires > 1000
            && stats.utilization < 0.1
            && stats.max_size > 4
            && stats.pending == 0
            && stats.timeouts == 0
        {
            recommendations.push(format!(
                "{} pool is mostly idle ({pct:.1}%): {} could be lowered to free server connections",
                name, stats.ceiling_var
            ));
        }
        let mut message = format!(
            "{name} pool {status}: {pct:.1}% utilization, {} in use, {} idle, {} waiting",
            stats.used, stats.idle, stats.pending
        );
        if stats.auto_sized {
            message.push_str(&format!(
                "; auto-sized: open limit {} of ceiling {}",
                stats.open_limit, stats.max_size
            ));
        }
        Self {
            pool: stats.name.clone(),
            status,
            utilization: stats.utilization,
            message,
            alerts,
            recommendations,
            query_performance,
            ready: !stats.starved,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(used: u64, max: u32, pending: u64) -> PoolStats {
        PoolStats {
            name: "supabase".into(),
            backend: "http".into(),
            max_size: max,
            pool_size: max,
            used,
            pending,
            utilization: used as f64 / f64::from(max),
            ceiling_var: "SUPABASE_POOL_SIZE".into(),
            timeout_var: "SUPABASE_POOL_TIMEOUT".into(),
            ..PoolStats::default()
        }
    }

    #[test]
    fn status_by_utilization() {
        let t = Thresholds::default();
        assert_eq!(t.classify(0.0), HealthStatus::Healthy);
        assert_eq!(t.classify(0.49), HealthStatus::Healthy);
        assert_eq!(t.classify(0.5), HealthStatus::Moderate);
        assert_eq!(t.classify(0.69), HealthStatus::Moderate);
        assert_eq!(t.classify(0.7), HealthStatus::Warning);
        assert_eq!(t.classify(0.89), HealthStatus::Warning);
        assert_eq!(t.classify(0.9), HealthStatus::Critical);
        assert_eq!(t.classify(1.0), HealthStatus::Critical);
        let lookup = |k: &str| match k {
            "POOLKIT_HEALTH_WARNING" => Some("80".to_owned()),
            "DB_HEALTH_CRITICAL" => Some("95%".to_owned()),
            "POOLKIT_HEALTH_CRITICAL" => Some("85".to_owned()),
            _ => None,
        };
        let t2 = Thresholds::from_lookup(Some("DB"), &lookup).unwrap();
        assert_eq!((t2.moderate, t2.warning, t2.critical), (0.5, 0.8, 0.95));
        let t3 = Thresholds::from_lookup(None, &lookup).unwrap();
        assert_eq!(t3.critical, 0.85);
        let bad = |k: &str| (k == "POOLKIT_HEALTH_WARNING").then(|| "95".to_owned());
        let e = Thresholds::from_lookup(None, &bad).unwrap_err();
        assert!(e.to_string().contains("POOLKIT_HEALTH_WARNING=95"), "{e}");
        let bad = |k: &str| (k == "POOLKIT_HEALTH_WARNING").then(|| "0.7".to_owned());
        let e = Thresholds::from_lookup(None, &bad).unwrap_err();
        assert!(
            e.to_string().contains("POOLKIT_HEALTH_WARNING=0.7"),
            "percent, not a ratio: {e}"
        );
        let bad = |k: &str| (k == "POOLKIT_HEALTH_WARNING").then(|| "seventy".to_owned());
        assert_eq!(
            Thresholds::from_lookup(None, &bad).unwrap_err().var(),
            "POOLKIT_HEALTH_WARNING"
        );
        let custom = Thresholds::new(0.3, 0.6, 0.8);
        assert_eq!(custom.classify(0.65), HealthStatus::Warning);
        assert!(Thresholds::new(0.7, 0.5, 0.9).validate().is_err());
    }

    #[test]
    fn recommendation_names_the_variable_and_a_value() {
        // Full but fast: 0 timeouts, waits far below the acquire timeout. Not critical,
        // and no advice to raise the size.
        let mut busy = stats(20, 20, 180);
        busy.acquire_timeout = 30.0;
        busy.wait.p95 = 0.05;
        let h = Health::assess(&busy, &Thresholds::default());
        assert_eq!(h.status, HealthStatus::Warning);
        assert_eq!(
            h.alerts[0].message,
            "Supabase pool utilization high: 100.0% (20 of 20 in use)"
        );
        assert!(
            h.alerts[0].recommendation.starts_with("no change needed"),
            "{}",
            h.alerts[0].recommendation
        );
        // Timeouts: the waiting callers are demand too; Little's law × 1.25.
        let mut s = stats(20, 20, 4);
        s.timeouts = 9;
        let h = Health::assess(&s, &Thresholds::default());
        assert_eq!(h.status, HealthStatus::Critical);
        assert!(
            h.alerts[0]
                .recommendation
                .contains("raise SUPABASE_POOL_SIZE from 20 to 30"),
            "{}",
            h.alerts[0].recommendation
        );
        // Capped by what the server grants, and said when the server is the limit.
        s.pending = 180;
        s.server_cap = Some(crate::advice::ServerCap::new(
            20,
            "max_connections 23 − 3 reserved",
        ));
        let h = Health::assess(&s, &Thresholds::default());
        assert!(
            h.alerts[0]
                .recommendation
                .starts_with("the server is the limit, not the pool"),
            "{}",
            h.alerts[0].recommendation
        );
        let h = Health::assess(&stats(2, 20, 0), &Thresholds::default());
        assert_eq!(h.status, HealthStatus::Healthy);
        assert!(h.alerts.is_empty());
    }

    #[test]
    fn down_is_down() {
        let h = Health::down(&stats(0, 20, 0), "connection refused");
        assert_eq!(h.status, HealthStatus::Down);
        assert_eq!(h.alerts[0].severity, Severity::Critical);
        assert!(!h.ready);
    }

    #[test]
    fn starved_is_not_ready() {
        let mut s = stats(20, 20, 40);
        assert!(
            Health::assess(&s, &Thresholds::default()).ready,
            "waiting, not yet starved"
        );
        s.starved_for = 6.0;
        s.starved = true;
        s.starvation_var = "SUPABASE_STARVATION_AFTER".into();
        let h = Health::assess(&s, &Thresholds::default());
        assert!(!h.ready);
        let alert = h
            .alerts
            .iter()
            .find(|a| a.message.contains("starved"))
            .expect("a starvation alert");
        assert_eq!(alert.severity, Severity::Critical);
        assert!(
            alert.message.contains("40 callers waiting") && alert.message.contains("6.0 s"),
            "{}",
            alert.message
        );
        assert!(
            alert.recommendation.contains("SUPABASE_STARVATION_AFTER"),
            "{}",
            alert.recommendation
        );
        let mut h = Health::assess(&stats(1, 20, 0), &Thresholds::default());
        h.add_alert(
            Alert::new(
                Severity::Warning,
                "supabase",
                "new secret refused".into(),
                "fix it".into(),
            ),
            HealthStatus::Warning,
            false,
        );
        assert_eq!(h.status, HealthStatus::Warning);
        assert!(h.ready && h.message.ends_with("new secret refused"));
        assert_eq!(h.recommendations[0], "fix it");
    }
}
