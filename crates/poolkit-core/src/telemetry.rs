//! `Telemetry`: the one place a pool's numbers are kept. Events (checkouts, timeouts,
//! opens, closes, errors) are counted in atomics, waits and hold times in lock-free
//! histograms; nothing on the checkout path touches the `metrics` facade. The facade is
//! fed by [`Telemetry::publish`], which runs when a scrape asks for it
//! ([`crate::metrics::publish_all`]) and once a second in the background, so `/pools`
//! (which reads [`Telemetry::stats`]) and `/metrics` read the same counts.
//!
//! The gauges (open, used, pending) are either moved by the event methods
//! ([`Telemetry::opened`], [`Telemetry::acquired`], …: pools built on a [`crate::Gate`]), or
//! stored by the pool engine from its locked state ([`Telemetry::store_gauges`]).

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::histogram::LatencyHistogram;
use crate::metrics::{CloseReason, ErrorKind, PoolMetrics};
use crate::{Knob, PoolConfig, PoolStats, Sizing, WaitQuantiles};

/// The live numbers of one pool.
#[derive(Debug)]
pub struct Telemetry {
    config: PoolConfig,
    metrics: PoolMetrics,
    open: CachePadded<AtomicI64>,
    used: CachePadded<AtomicI64>,
    pending: CachePadded<AtomicI64>,
    pool_size: AtomicU32,
    max_size: AtomicU32,
    target: AtomicU32,
    timeouts: AtomicU64,
    created: AtomicU64,
    closed: Vec<AtomicU64>,
    errors: Vec<AtomicU64>,
    requests_new: AtomicU64,
    requests_reused: AtomicU64,
    wait: CachePadded<LatencyHistogram>,
    use_time: CachePadded<LatencyHistogram>,
    create_time: LatencyHistogram,
    /// Histogram counts already sent to the facade, per histogram and bucket.
    published: Mutex<[Vec<u64>; 3]>,
    /// Callers waiting with nothing free, sampled by `publish` and `stats`.
    starvation: crate::starvation::Starvation,
}

fn nonneg(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn as_i64(v: u32) -> i64 {
    i64::from(v)
}

impl Telemetry {
    /// Telemetry for a pool with this (validated) config: registers its metric handles
    /// and joins the set that [`crate::metrics::publish_all`] publishes.
    #[must_use]
    pub fn new(config: PoolConfig) -> Arc<Self> {
        let metrics = PoolMetrics::new(&config.name, config.backend);
        let t = Arc::new(Self {
            metrics,
            open: CachePadded::new(AtomicI64::new(0)),
            used: CachePadded::new(AtomicI64::new(0)),
            pending: CachePadded::new(AtomicI64::new(0)),
            pool_size: AtomicU32::new(config.pool_size),
            max_size: AtomicU32::new(config.ceiling()),
            target: AtomicU32::new(if config.sizing == Sizing::Auto {
                crate::autosize::floor(&config)
            } else {
                config.ceiling()
            }),
            timeouts: AtomicU64::new(0),
            created: AtomicU64::new(0),
            closed: CloseReason::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            errors: ErrorKind::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            requests_new: AtomicU64::new(0),
            requests_reused: AtomicU64::new(0),
            wait: CachePadded::new(LatencyHistogram::default()),
            use_time: CachePadded::new(LatencyHistogram::default()),
            create_time: LatencyHistogram::default(),
            published: Mutex::new([Vec::new(), Vec::new(), Vec::new()]),
            starvation: crate::starvation::Starvation::default(),
            config,
        });
        t.publish();
        crate::metrics::join(Arc::downgrade(&t) as Weak<Self>);
        t
    }

    /// The pool's config as built (sizes may since have changed: see
    /// [`Telemetry::pool_size`] and [`Telemetry::max_size`]).
    #[must_use]
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The pool's metric handles.
    #[must_use]
    pub fn metrics(&self) -> &PoolMetrics {
        &self.metrics
    }

    /// Records new sizes (after a resize). For a fixed-size pool the target follows the
    /// ceiling; an auto-sized pool's target is moved by [`Telemetry::set_target`].
    pub fn set_sizes(&self, pool_size: u32, max_size: u32) {
        self.pool_size.store(pool_size, Relaxed);
        self.max_size.store(max_size, Relaxed);
        if !self.auto_sized() {
            self.target.store(max_size, Relaxed);
        }
    }

    /// Records the auto-sizing controller's new target.
    pub fn set_target(&self, target: u32) {
        self.target.store(target, Relaxed);
    }

    /// The most connections the pool opens now: the auto-sizing target, or the ceiling of a
    /// fixed-size pool.
    #[must_use]
    pub fn target(&self) -> u32 {
        self.target.load(Relaxed)
    }

    /// Whether the pool sizes itself (`P_POOL_SIZE=auto`).
    #[must_use]
    pub fn auto_sized(&self) -> bool {
        self.config.sizing == Sizing::Auto
    }

    /// The steady size now.
    #[must_use]
    pub fn pool_size(&self) -> u32 {
        self.pool_size.load(Relaxed)
    }

    /// The ceiling now.
    #[must_use]
    pub fn max_size(&self) -> u32 {
        self.max_size.load(Relaxed)
    }

    // ---- gauges moved by events (pools built on a Gate) ----

    /// A caller started waiting for a connection.
    pub fn wait_started(&self) {
        self.pending.fetch_add(1, Relaxed);
    }

    /// A caller stopped waiting (got a connection, timed out or was cancelled).
    pub fn wait_ended(&self) {
        self.pending.fetch_sub(1, Relaxed);
    }

    /// A caller got a connection after `wait` (see [`Telemetry::record_acquire`]); one more
    /// in use.
    pub fn acquired(&self, wait: Duration, hit: bool) {
        self.record_acquire(wait, hit);
        self.used.fetch_add(1, Relaxed);
    }

    /// A connection held for `held` went back (or was closed); one fewer in use.
    pub fn released(&self, held: Duration) {
        self.record_release(held);
        self.used.fetch_sub(1, Relaxed);
    }

    /// A connection was opened in `took`; one more open.
    pub fn opened(&self, took: Duration) {
        self.record_created(took);
        self.open.fetch_add(1, Relaxed);
    }

    /// A connection was closed for `reason`; one fewer open.
    pub fn closed(&self, reason: CloseReason) {
        self.record_closed(reason);
        self.open.fetch_sub(1, Relaxed);
    }

    // ---- events only (the engine keeps its gauges itself) ----

    /// Stores the gauges from a pool that keeps its own counts (the engine, under its lock).
    pub fn store_gauges(&self, open: u32, used: u32, pending: usize) {
        self.open.store(as_i64(open), Relaxed);
        self.used.store(as_i64(used), Relaxed);
        self.pending
            .store(i64::try_from(pending).unwrap_or(i64::MAX), Relaxed);
    }

    /// Adds changes of (open, used, pending) from one of several pools that share this
    /// telemetry (see `Engine::with_telemetry`).
    pub fn add_gauges(&self, [open, used, pending]: [i64; 3]) {
        for (gauge, change) in [
            (&self.open, open),
            (&self.used, used),
            (&self.pending, pending),
        ] {
            if change != 0 {
                gauge.fetch_add(change, Relaxed);
            }
        }
    }

    /// Counts a checkout after `wait`; `hit` when an idle connection served it at once
    /// (recorded as a zero wait; a miss records at least 2 µs, so the first bucket counts
    /// the hits).
    pub fn record_acquire(&self, wait: Duration, hit: bool) {
        let wait = if hit {
            Duration::ZERO
        } else {
            wait.max(Duration::from_micros(2))
        };
        self.wait.record(wait);
    }

    /// Counts a connection held for `held`.
    pub fn record_release(&self, held: Duration) {
        self.use_time.record(held);
    }

    /// Counts a connection opened in `took`.
    pub fn record_created(&self, took: Duration) {
        self.created.fetch_add(1, Relaxed);
        self.create_time.record(took);
    }

    /// Counts a connection closed for `reason`.
    pub fn record_closed(&self, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Relaxed);
    }

    /// A caller gave up after the acquire timeout, having waited `_wait`. The wait is
    /// not added to the acquire-wait histogram, which counts successful checkouts (its
    /// count is `acquires`).
    pub fn timed_out(&self, _wait: Duration) {
        self.timeouts.fetch_add(1, Relaxed);
    }

    /// An error of `kind` happened.
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// An HTTP request went out on a new (`true`) or reused connection.
    pub fn request(&self, new_connection: bool) {
        if new_connection {
            self.requests_new.fetch_add(1, Relaxed);
        } else {
            self.requests_reused.fetch_add(1, Relaxed);
        }
    }

    /// Open connections now.
    #[must_use]
    pub fn open(&self) -> u64 {
        nonneg(self.open.load(Relaxed))
    }

    /// Connections in use now.
    #[must_use]
    pub fn used(&self) -> u64 {
        nonneg(self.used.load(Relaxed))
    }

    /// Callers waiting now.
    #[must_use]
    pub fn pending(&self) -> u64 {
        nonneg(self.pending.load(Relaxed))
    }

    /// Successful checkouts so far.
    #[must_use]
    pub fn acquires(&self) -> u64 {
        self.wait.count()
    }

    /// The hold-time histogram (for callers that size the pool from it).
    #[must_use]
    pub fn use_time(&self) -> &LatencyHistogram {
        &self.use_time
    }

    /// The acquire-wait histogram.
    #[must_use]
    pub fn wait_time(&self) -> &LatencyHistogram {
        &self.wait
    }

    /// Sends every number to the `metrics` facade: gauges and counters as they are now,
    /// and the histogram samples recorded since the last publish.
    pub fn publish(&self) {
        let m = &self.metrics;
        let (open, used) = (self.open(), self.used());
        self.starvation.observe(
            self.pending(),
            open.saturating_sub(used),
            std::time::Instant::now(),
        );
        #[allow(clippy::cast_precision_loss)]
        {
            m.idle.set(open.saturating_sub(used) as f64);
            m.used.set(used as f64);
            m.pending.set(self.pending() as f64);
            m.utilization
                .set(used as f64 / f64::from(self.max_size().max(1)));
        }
        m.max.set(f64::from(self.max_size()));
        m.target.set(f64::from(self.target()));
        m.min_idle.set(f64::from(self.config.min_idle));
        m.acquires.absolute(self.acquires());
        m.timeouts.absolute(self.timeouts.load(Relaxed));
        m.created.absolute(self.created.load(Relaxed));
        for (c, n) in m.closed.iter().zip(&self.closed) {
            c.absolute(n.load(Relaxed));
        }
        for (c, n) in m.errors.iter().zip(&self.errors) {
            c.absolute(n.load(Relaxed));
        }
        m.requests_new.absolute(self.requests_new.load(Relaxed));
        m.requests_reused
            .absolute(self.requests_reused.load(Relaxed));
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sources: [(&LatencyHistogram, &metrics::Histogram); 3] = [
            (&self.wait, &m.acquire_wait),
            (&self.use_time, &m.use_time),
            (&self.create_time, &m.create_time),
        ];
        for ((hist, handle), seen) in sources.into_iter().zip(published.iter_mut()) {
            let buckets = hist.buckets();
            seen.resize(buckets.len(), 0);
            for ((value, count), before) in buckets.into_iter().zip(seen.iter_mut()) {
                if count > *before {
                    let new = usize::try_from(count - *before).unwrap_or(usize::MAX);
                    handle.record_many(value, new);
                    *before = count;
                }
            }
        }
    }

    /// A snapshot (see [`PoolStats`] for the consistency caveat).
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        let open = self.open();
        let used = self.used();
        // Every successful acquire records one wait, so the histogram counts them.
        let acquires = self.wait.count();
        let ceiling = self.max_size();
        #[allow(clippy::cast_precision_loss)]
        let hit_rate = if acquires == 0 {
            0.0
        } else {
            self.wait.first_bucket() as f64 / acquires as f64
        };
        #[allow(clippy::cast_precision_loss)]
        let utilization = used as f64 / f64::from(ceiling.max(1));
        let by = |names: &[&'static str], counts: &[AtomicU64]| -> Vec<(String, u64)> {
            names
                .iter()
                .zip(counts)
                .map(|(n, c)| ((*n).to_owned(), c.load(Relaxed)))
                .collect()
        };
        let pending = self.pending();
        let starved_for = self.starvation.observe(
            pending,
            open.saturating_sub(used),
            std::time::Instant::now(),
        );
        let starvation_after = self.config.effective_starvation_after();
        let reasons: Vec<&'static str> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        let kinds: Vec<&'static str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        PoolStats {
            name: self.config.name.clone(),
            backend: self.config.backend.as_str().to_owned(),
            max_size: ceiling,
            pool_size: self.pool_size(),
            target: self.target(),
            auto_sized: self.auto_sized(),
            min_idle: self.config.min_idle,
            open,
            idle: open.saturating_sub(used),
            used,
            pending,
            utilization,
            starved_for: starved_for.as_secs_f64(),
            starved: !starved_for.is_zero() && starved_for >= starvation_after,
            starvation_var: self.config.var(Knob::StarvationAfter),
            acquires,
            timeouts: self.timeouts.load(Relaxed),
            created: self.created.load(Relaxed),
            closed: by(&reasons, &self.closed),
            errors: by(&kinds, &self.errors),
            hit_rate,
            wait: WaitQuantiles::new(
                self.wait.quantile(0.5),
                self.wait.quantile(0.95),
                self.wait.quantile(0.99),
            ),
            requests_new: self.requests_new.load(Relaxed),
            requests_reused: self.requests_reused.load(Relaxed),
            ceiling_var: self.config.ceiling_var(),
            timeout_var: self.config.var(Knob::AcquireTimeout),
            query: crate::QueryTiming::default(),
            pooler: None,
        }
    }
}
