//! Query timing shared by the PostgreSQL and Redis pools: a duration histogram per
//! operation (`poolkit_query_duration_seconds{operation}`), a slow-query counter and log
//! (`P_SLOW_QUERY`), and the in-process average and p95 that stats and health report.
//!
//! The operation label is the statement's first keyword (`select`) or the Redis command
//! (`get`), lower case, taken from a closed list; anything else is `other`. Statement text
//! never becomes a label, and parameters are never logged.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram};

use crate::Backend;
use crate::histogram::LatencyHistogram;
use crate::metrics::names;

/// Every operation label value. SQL keywords first, then Redis commands, then `other`.
const NAMES: &[&str] = &[
    // SQL
    "select",
    "insert",
    "update",
    "delete",
    "with",
    "merge",
    "values",
    "begin",
    "start",
    "commit",
    "rollback",
    "savepoint",
    "release",
    "copy",
    "call",
    "do",
    "set",
    "reset",
    "show",
    "create",
    "alter",
    "drop",
    "truncate",
    "explain",
    "analyze",
    "vacuum",
    "lock",
    "listen",
    "notify",
    "prepare",
    "execute",
    "deallocate",
    "declare",
    "fetch",
    "close",
    "discard",
    "grant",
    "revoke",
    "comment",
    "refresh",
    // Redis
    "get",
    "mget",
    "getex",
    "getdel",
    "mset",
    "setex",
    "setnx",
    "psetex",
    "getset",
    "append",
    "strlen",
    "del",
    "unlink",
    "exists",
    "expire",
    "pexpire",
    "expireat",
    "ttl",
    "pttl",
    "persist",
    "type",
    "rename",
    "incr",
    "incrby",
    "incrbyfloat",
    "decr",
    "decrby",
    "hget",
    "hset",
    "hsetnx",
    "hmget",
    "hmset",
    "hgetall",
    "hdel",
    "hexists",
    "hincrby",
    "hkeys",
    "hvals",
    "hlen",
    "lpush",
    "rpush",
    "lpop",
    "rpop",
    "lrange",
    "llen",
    "lrem",
    "ltrim",
    "lindex",
    "lmove",
    "blpop",
    "brpop",
    "blmove",
    "sadd",
    "srem",
    "smembers",
    "sismember",
    "scard",
    "spop",
    "zadd",
    "zrem",
    "zscore",
    "zincrby",
    "zcard",
    "zcount",
    "zrange",
    "zrangebyscore",
    "zrevrange",
    "zrank",
    "zpopmin",
    "xadd",
    "xread",
    "xreadgroup",
    "xack",
    "xlen",
    "xrange",
    "xdel",
    "xtrim",
    "publish",
    "subscribe",
    "eval",
    "evalsha",
    "fcall",
    "script",
    "ping",
    "echo",
    "scan",
    "sscan",
    "hscan",
    "zscan",
    "keys",
    "multi",
    "exec",
    "watch",
    "unwatch",
    "info",
    "dbsize",
    "flushdb",
    "flushall",
    "pfadd",
    "pfcount",
    "setbit",
    "getbit",
    "bitcount",
    "object",
    "memory",
    "client",
    "config",
    "pipeline",
    // Everything else
    "other",
];

/// [`NAMES`] sorted, with their indexes, for [`Operation::lookup`].
static SORTED: OnceLock<Vec<(&'static [u8], u8)>> = OnceLock::new();

/// What a query did, as a label value from a closed set: the first SQL keyword or the
/// Redis command, lower case; `other` for anything not in the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operation(u8);

impl Operation {
    /// `other`: the label of anything outside the closed set.
    pub const OTHER: Self = Self(index_of("other"));
    /// `pipeline`: a Redis pipeline or transaction of several commands.
    pub const PIPELINE: Self = Self(index_of("pipeline"));

    fn lookup(word: &[u8]) -> Self {
        if word.is_empty() || word.len() > 16 {
            return Self::OTHER;
        }
        let mut lower = [0u8; 16];
        for (d, s) in lower.iter_mut().zip(word) {
            *d = s.to_ascii_lowercase();
        }
        let lower = &lower[..word.len()];
        // Binary search over the names sorted once: about 8 comparisons per query.
        let sorted = SORTED.get_or_init(|| {
            let mut v: Vec<(&'static [u8], u8)> = NAMES
                .iter()
                .enumerate()
                .filter_map(|(i, n)| u8::try_from(i).ok().map(|i| (n.as_bytes(), i)))
                .collect();
            v.sort_unstable();
            v
        });
        sorted
            .binary_search_by(|(n, _)| (*n).cmp(lower))
            .map_or(Self::OTHER, |at| Self(sorted[at].1))
    }

    /// The operation of a SQL statement: its first keyword, skipping leading
    /// whitespace, `(` and comments.
    #[must_use]
    pub fn sql(statement: &str) -> Self {
        let mut s = statement;
        loop {
            s = s.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
            if let Some(rest) = s.strip_prefix("--") {
                s = rest.split_once('\n').map_or("", |(_, r)| r);
            } else if let Some(rest) = s.strip_prefix("/*") {
                s = rest.split_once("*/").map_or("", |(_, r)| r);
            } else {
                break;
            }
        }
        let end = s
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(s.len());
        Self::lookup(&s.as_bytes()[..end])
    }

    /// The operation of a Redis command from its name (`GET`, `get`).
    #[must_use]
    pub fn redis(command: &[u8]) -> Self {
        // DISCARD is both a SQL and a Redis word; one label value serves both.
        Self::lookup(command)
    }

    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        NAMES[usize::from(self.0)]
    }

    /// Every label value, for schema tests and docs.
    #[must_use]
    pub fn all() -> &'static [&'static str] {
        NAMES
    }
}

const fn index_of(name: &str) -> u8 {
    let mut i = 0;
    while i < NAMES.len() {
        let n = NAMES[i].as_bytes();
        let w = name.as_bytes();
        if n.len() == w.len() {
            let mut j = 0;
            while j < n.len() && n[j] == w[j] {
                j += 1;
            }
            if j == n.len() {
                #[allow(clippy::cast_possible_truncation)]
                return i as u8;
            }
        }
        i += 1;
    }
    panic!("operation name missing from NAMES");
}

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

/// The query timing of one pool: held by the pool, shared by its connections.
#[derive(Debug)]
pub struct QueryStats {
    pool: String,
    backend: Backend,
    slow: Option<Duration>,
    latency: LatencyHistogram,
    total_nanos: AtomicU64,
    slow_count: AtomicU64,
    handles: Box<[OnceLock<(Histogram, Counter)>]>,
}

impl QueryStats {
    /// Timing for the pool `pool`, logging statements slower than `slow`.
    #[must_use]
    pub fn new(pool: &str, backend: Backend, slow: Option<Duration>) -> Self {
        let stats = Self {
            pool: pool.to_owned(),
            backend,
            slow,
            latency: LatencyHistogram::default(),
            total_nanos: AtomicU64::new(0),
            slow_count: AtomicU64::new(0),
            handles: (0..NAMES.len()).map(|_| OnceLock::new()).collect(),
        };
        // Register `other` at once, so both names are exported from the pool's start.
        stats.handles(Operation::OTHER);
        stats
    }

    /// Starts timing one query.
    #[must_use]
    pub fn start(&self) -> Instant {
        Instant::now()
    }

    fn handles(&self, op: Operation) -> &(Histogram, Counter) {
        self.handles[usize::from(op.0)].get_or_init(|| {
            let labels = [
                (names::LABEL_POOL, self.pool.clone()),
                (names::LABEL_BACKEND, self.backend.as_str().to_owned()),
                (names::LABEL_OPERATION, op.as_str().to_owned()),
            ];
            (
                metrics::histogram!(names::QUERY_DURATION_SECONDS, &labels),
                metrics::counter!(names::SLOW_QUERIES_TOTAL, &labels),
            )
        })
    }

    /// Records a query that began at `started`. `statement` is called only when the query
    /// was slow, for the log line: give the SQL text or the command name, never values.
    pub fn finish(&self, op: Operation, started: Instant, statement: impl FnOnce() -> String) {
        self.record(op, started.elapsed(), statement);
    }

    /// Records a query that took `elapsed` (for callers with their own clock).
    pub fn record(&self, op: Operation, elapsed: Duration, statement: impl FnOnce() -> String) {
        let (histogram, slow_counter) = self.handles(op);
        histogram.record(elapsed);
        self.latency.record(elapsed);
        self.total_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if self.slow.is_some_and(|t| elapsed >= t) {
            slow_counter.increment(1);
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
        // The histogram's buckets are the count: one atomic add per query, not two.
        let count = self.latency.count();
        #[allow(clippy::cast_precision_loss)]
        let avg = if count == 0 {
            0.0
        } else {
            self.total_nanos.load(Ordering::Relaxed) as f64 / 1e9 / count as f64
        };
        QueryTiming {
            count,
            avg,
            p95: self.latency.quantile(0.95),
            slow: self.slow_count.load(Ordering::Relaxed),
            slow_threshold: self.slow.map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

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
        let now = Instant::now();
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
