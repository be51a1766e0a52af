//! The `query_performance` component of health.

/// The `query_performance` component of [`crate::Health`]: how fast the pool's queries
/// are, and whether too many are slow (1 % or more over `P_SLOW_QUERY`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct QueryPerformance {
    /// `ok`, `slow` (1 % or more of queries over the threshold) or `no_data`.
    pub status: &'static str,
    /// Queries timed.
    pub count: u64,
    /// Mean query time, milliseconds.
    pub avg_ms: f64,
    /// 95th percentile query time, milliseconds.
    pub p95_ms: f64,
    /// Share of queries over the slow threshold, 0 to 1.
    pub slow_ratio: f64,
    /// One line for humans.
    pub message: String,
}

/// The slow-query share at which `query_performance` turns `slow`.
pub const SLOW_RATIO_ALERT: f64 = 0.01;

impl QueryPerformance {
    /// The component from a snapshot, and a warning when 1 % or more of at least 100
    /// queries were slow.
    #[must_use]
    pub fn assess(stats: &crate::PoolStats) -> (Self, Option<crate::Alert>) {
        let t = stats.query;
        let slow = t.count >= 100 && t.slow_ratio() >= SLOW_RATIO_ALERT;
        let status = if t.count == 0 {
            "no_data"
        } else if slow {
            "slow"
        } else {
            "ok"
        };
        let (avg_ms, p95_ms) = (t.avg * 1e3, t.p95 * 1e3);
        let message = if t.count == 0 {
            format!("{} pool has run no timed queries yet", stats.name)
        } else {
            format!(
                "{} pool queries: {} timed, average {avg_ms:.2} ms, p95 {p95_ms:.2} ms, {:.2}% over {} ms",
                stats.name,
                t.count,
                t.slow_ratio() * 100.0,
                t.slow_threshold * 1e3
            )
        };
        let alert = slow.then(|| crate::Alert {
            severity: crate::Severity::Warning,
            pool: stats.name.clone(),
            message: format!(
                "{} pool: {:.1}% of queries took longer than {} ms (p95 {p95_ms:.1} ms)",
                stats.name,
                t.slow_ratio() * 100.0,
                t.slow_threshold * 1e3
            ),
            recommendation: format!(
                "find the statements logged as \"slow query\" and index or shorten them; raise {}_SLOW_QUERY if they are expected",
                stats.name.to_ascii_uppercase()
            ),
        });
        (
            Self {
                status,
                count: t.count,
                avg_ms,
                p95_ms,
                slow_ratio: t.slow_ratio(),
                message,
            },
            alert,
        )
    }
}
