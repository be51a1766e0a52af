//! Query timing shared by the PostgreSQL and Redis pools: a duration histogram per
//! operation (`poolkit_query_duration_seconds{operation}`), a slow-query counter and log
//! (`P_SLOW_QUERY`), and the in-process average and p95 that stats and health report.
//!
//! Nothing here writes to the `metrics` facade per query: each operation counts in its own
//! lock-free histogram, and [`Publish`] sends the new samples when a scrape asks (or once a
//! second in the background), as a pool's [`crate::Telemetry`] does.
//!
//! The operation label is the statement's first keyword (`select`) or the Redis command
//! (`get`), lower case, taken from a closed list; anything else is `other`. Statement text
//! never becomes a label, and parameters are never logged.

mod operation;
mod performance;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use metrics::{Counter, Histogram};

use crate::Backend;
use crate::histogram::LatencyHistogram;
use crate::metrics::{HistogramFeed, Publish, names};

pub use operation::Operation;
pub use performance::{QueryPerformance, SLOW_RATIO_ALERT};

/// When a query started: the `quanta` clock (the CPU's time-stamp counter), several times
/// cheaper than `std::time::Instant` on virtual machines, read twice per query.
pub type QueryStart = quanta::Instant;

/// Query timing in a [`crate::PoolStats`] snapshot. Seconds; zero before the first query.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct QueryTiming {
    /// Queries timed since the pool was built.
    pub count: u64,
    /// Mean query time, seconds.
    pub avg: f64,
    /// 95th percentile query time, seconds.
    pub p95: f64,
    /// Queries slower than `P_SLOW_QUERY`.
    pub slow: u64,
    /// The slow-query threshold in seconds (0: off).
    pub slow_threshold: f64,
}

impl QueryTiming {
    /// Share of queries that were slow, 0 to 1 (0 before the first query).
    #[must_use]
    pub fn slow_ratio(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            #[allow(clippy::cast_precision_loss)]
            let r = self.slow as f64 / self.count as f64;
            r
        }
    }
}

/// One operation's counts, and its facade handles (written only by [`Publish`]).
#[derive(Debug)]
struct OpTiming {
    latency: LatencyHistogram,
    slow: AtomicU64,
    histogram: Histogram,
    slow_counter: Counter,
    fed: HistogramFeed,
}

/// The query timing of one pool: held by the pool, shared by its connections.
#[derive(Debug)]
pub struct QueryStats {
    pool: String,
    backend: Backend,
    slow: Option<Duration>,
    total_nanos: AtomicU64,
    slow_count: AtomicU64,
    ops: Box<[OnceLock<OpTiming>]>,
}

impl QueryStats {
    /// Timing for the pool `pool`, logging statements slower than `slow`. It joins the
    /// set that [`crate::metrics::publish_all`] publishes.
    #[must_use]
    pub fn new(pool: &str, backend: Backend, slow: Option<Duration>) -> Arc<Self> {
        let stats = Arc::new(Self {
            pool: pool.to_owned(),
            backend,
            slow,
            total_nanos: AtomicU64::new(0),
            slow_count: AtomicU64::new(0),
            ops: (0..Operation::all().len())
                .map(|_| OnceLock::new())
                .collect(),
        });
        // Register `other` at once, so both names are exported from the pool's start.
        stats.op(Operation::OTHER);
        crate::metrics::join(Arc::downgrade(&stats) as Weak<dyn Publish>);
        stats
    }

    /// Starts timing one query.
    #[must_use]
    pub fn start(&self) -> QueryStart {
        QueryStart::now()
    }

    fn op(&self, op: Operation) -> &OpTiming {
        self.ops[op.index()].get_or_init(|| {
            let labels = [
                (names::LABEL_POOL, self.pool.clone()),
                (names::LABEL_BACKEND, self.backend.as_str().to_owned()),
                (names::LABEL_OPERATION, op.as_str().to_owned()),
            ];
            OpTiming {
                latency: LatencyHistogram::default(),
                slow: AtomicU64::new(0),
                histogram: metrics::histogram!(names::QUERY_DURATION_SECONDS, &labels),
                slow_counter: metrics::counter!(names::SLOW_QUERIES_TOTAL, &labels),
                fed: HistogramFeed::default(),
            }
        })
    }

    /// Records a query that began at `started`. `statement` is called only when the query
    /// was slow, for the log line: give the SQL text or the command name, never values.
    pub fn finish(&self, op: Operation, started: QueryStart, statement: impl FnOnce() -> String) {
        self.record(op, started.elapsed(), statement);
    }

    /// Records a query that took `elapsed` (for callers with their own clock).
    pub fn record(&self, op: Operation, elapsed: Duration, statement: impl FnOnce() -> String) {
        let timing = self.op(op);
        // Only the operation's histogram: the pool's is their sum, taken when read.
        timing.latency.record(elapsed);
        self.total_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if self.slow.is_some_and(|t| elapsed >= t) {
            timing.slow.fetch_add(1, Ordering::Relaxed);
            self.slow_count.fetch_add(1, Ordering::Relaxed);
            let mut text = statement();
            if text.len() > 2000 {
                let mut cut = 2000;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push('…');
            }
            tracing::warn!(
                pool = %self.pool,
                backend = %self.backend,
                operation = op.as_str(),
                duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                statement = %text,
                "slow query"
            );
        }
    }

    /// The snapshot that [`crate::PoolStats::query`] carries.
    #[must_use]
    pub fn timing(&self) -> QueryTiming {
        // The operations' histograms summed: each query is recorded once, in its own.
        let latency = LatencyHistogram::default();
        for timing in self.ops.iter().filter_map(OnceLock::get) {
            latency.add(&timing.latency);
        }
        let count = latency.count();
        #[allow(clippy::cast_precision_loss)]
        let avg = if count == 0 {
            0.0
        } else {
            self.total_nanos.load(Ordering::Relaxed) as f64 / 1e9 / count as f64
        };
        QueryTiming {
            count,
            avg,
            p95: latency.quantile(0.95),
            slow: self.slow_count.load(Ordering::Relaxed),
            slow_threshold: self.slow.map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

impl Publish for QueryStats {
    fn publish(&self) {
        for timing in self.ops.iter().filter_map(OnceLock::get) {
            timing.fed.feed(&timing.latency, &timing.histogram);
            timing
                .slow_counter
                .absolute(timing.slow.load(Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_come_from_a_closed_set() {
        assert_eq!(Operation::sql("SELECT 1").as_str(), "select");
        assert_eq!(Operation::sql("  (select 1)").as_str(), "select");
        assert_eq!(
            Operation::sql("-- hi\n/* x */ InSeRt into t").as_str(),
            "insert"
        );
        assert_eq!(Operation::sql("WITH x AS (..)").as_str(), "with");
        assert_eq!(Operation::sql("'; drop table").as_str(), "other");
        assert_eq!(Operation::sql("").as_str(), "other");
        assert_eq!(Operation::sql("supercalifragilistic").as_str(), "other");
        assert_eq!(Operation::redis(b"GET").as_str(), "get");
        assert_eq!(Operation::redis(b"hgetall").as_str(), "hgetall");
        assert_eq!(Operation::redis(b"user:123").as_str(), "other");
        assert_eq!(Operation::OTHER.as_str(), "other");
        assert_eq!(Operation::PIPELINE.as_str(), "pipeline");
        for n in Operation::all() {
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
        }
    }

    #[test]
    fn timing_counts_average_and_slow() {
        let q = QueryStats::new("t", Backend::Postgres, Some(Duration::from_millis(20)));
        let op = Operation::sql("select 1");
        let now = QueryStart::now();
        q.finish(op, now - Duration::from_millis(10), || {
            unreachable!("not slow")
        });
        let mut logged = false;
        q.finish(op, now - Duration::from_millis(30), || {
            logged = true;
            "select pg_sleep($1)".into()
        });
        assert!(logged);
        let t = q.timing();
        assert_eq!((t.count, t.slow), (2, 1));
        assert!(t.avg >= 0.019 && t.avg < 0.5, "{t:?}");
        assert!(t.p95 >= 0.03, "{t:?}");
        assert!((t.slow_ratio() - 0.5).abs() < 1e-9);
    }
}
