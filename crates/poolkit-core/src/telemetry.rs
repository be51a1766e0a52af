//! `Telemetry`: the one place a pool's numbers are kept. Events (checkouts, timeouts,
//! opens, closes, errors) are counted in atomics, waits and hold times in lock-free
//! histograms; nothing on the checkout path touches the `metrics` facade. The facade is
//! fed by [`Telemetry::publish`], which runs when a scrape asks for it
//! ([`crate::metrics::publish_all`]) and once a second in the background, so `/pools`
//! (which reads [`Telemetry::stats`]) and `/metrics` read the same counts.
//!
//! Events are only counters and histograms, recorded one way (`record_*`, [`Telemetry::error`],
//! [`Telemetry::timed_out`]). The gauges (open, used, pending, open limit) are not kept here:
//! they are read from the state that owns them (the engine's state, a [`crate::Gate`], the
//! multiplexed sockets) through a [`GaugeSource`] when stats or a scrape asks.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::histogram::LatencyHistogram;
use crate::metrics::{CloseReason, ErrorKind, HistogramFeed, PoolMetrics, Publish};
use crate::{Knob, PoolConfig, PoolStats, Sizing, WaitQuantiles};

/// A pool's gauges now, read from their owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gauges {
    /// Connections (or sockets) open.
    pub open: u64,
    /// Connections checked out, or requests in flight on shared sockets.
    pub used: u64,
    /// Callers waiting.
    pub pending: u64,
    /// The open limit: the most connections the owner opens now (its ceiling after the
    /// auto-sizer's choice or a fleet cap), when it sets one; else the configured ceiling.
    pub open_limit: Option<u32>,
}

impl Gauges {
    /// Gauges with no open limit of their own.
    #[must_use]
    pub fn new(open: u64, used: u64, pending: u64) -> Self {
        Self {
            open,
            used,
            pending,
            open_limit: None,
        }
    }

    /// These gauges with the owner's open limit.
    #[must_use]
    pub fn with_open_limit(mut self, limit: u32) -> Self {
        self.open_limit = Some(limit);
        self
    }

    fn add(self, other: Self) -> Self {
        Self {
            open: self.open + other.open,
            used: self.used + other.used,
            pending: self.pending + other.pending,
            open_limit: match (self.open_limit, other.open_limit) {
                (Some(a), Some(b)) => Some(a.saturating_add(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// The owner of a pool's open / used / pending counts: it answers from its own state
/// (under its own lock, if it has one), so nothing is counted twice. Registered with
/// [`Telemetry::read_gauges_from`].
pub trait GaugeSource: Send + Sync {
    /// The gauges now.
    fn gauges(&self) -> Gauges;
}

/// The live numbers of one pool.
#[derive(Debug)]
pub struct Telemetry {
    config: PoolConfig,
    metrics: PoolMetrics,
    /// Where the gauges are read (summed over the live ones).
    sources: Mutex<Vec<Weak<dyn GaugeSource>>>,
    pool_size: AtomicU32,
    max_size: AtomicU32,
    timeouts: AtomicU64,
    retries: AtomicU64,
    reconnects: AtomicU64,
    created: AtomicU64,
    closed: Vec<AtomicU64>,
    errors: Vec<AtomicU64>,
    requests_new: AtomicU64,
    requests_reused: AtomicU64,
    wait: CachePadded<LatencyHistogram>,
    use_time: CachePadded<LatencyHistogram>,
    create_time: LatencyHistogram,
    /// Histogram counts already sent to the facade.
    fed: [HistogramFeed; 3],
    /// Callers waiting with nothing free, sampled by `publish` and `stats`.
    starvation: crate::starvation::Starvation,
}

impl Telemetry {
    /// Telemetry for a pool with this (validated) config: registers its metric handles
    /// and joins the set that [`crate::metrics::publish_all`] publishes.
    #[must_use]
    pub fn new(config: PoolConfig) -> Arc<Self> {
        let metrics = PoolMetrics::new(&config.name, config.backend);
        let t = Arc::new(Self {
            metrics,
            sources: Mutex::new(Vec::new()),
            pool_size: AtomicU32::new(config.pool_size),
            max_size: AtomicU32::new(config.ceiling()),
            timeouts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            created: AtomicU64::new(0),
            closed: CloseReason::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            errors: ErrorKind::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            requests_new: AtomicU64::new(0),
            requests_reused: AtomicU64::new(0),
            wait: CachePadded::new(LatencyHistogram::default()),
            use_time: CachePadded::new(LatencyHistogram::default()),
            create_time: LatencyHistogram::default(),
            fed: Default::default(),
            starvation: crate::starvation::Starvation::default(),
            config,
        });
        t.publish();
        crate::metrics::join(Arc::downgrade(&t) as Weak<dyn Publish>);
        t
    }

    /// Reads the gauges from `source` from now on (added to those already registered: a
    /// pool whose connections live in several owners, such as one engine per origin,
    /// registers each). A source that is dropped stops counting.
    pub fn read_gauges_from(&self, source: Weak<dyn GaugeSource>) {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        sources.retain(|w| w.strong_count() > 0);
        sources.push(source);
    }

    /// The gauges now, asked of their owners.
    #[must_use]
    pub fn gauges(&self) -> Gauges {
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        sources
            .iter()
            .filter_map(Weak::upgrade)
            .fold(Gauges::default(), |sum, s| sum.add(s.gauges()))
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

    /// Records new configured sizes (after a resize).
    pub fn set_sizes(&self, pool_size: u32, max_size: u32) {
        self.pool_size.store(pool_size, Relaxed);
        self.max_size.store(max_size, Relaxed);
    }

    /// The most connections the pool opens now: its owner's open limit (the auto-sizing
    /// one, or a ceiling cut by a fleet share), else the ceiling.
    #[must_use]
    pub fn open_limit(&self) -> u32 {
        self.gauges().open_limit.unwrap_or_else(|| self.max_size())
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

    // ---- events: counters and histograms only ----

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
        self.error(ErrorKind::Timeout);
    }

    /// An error of `kind` happened.
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// A request or statement was sent again after a failure that allowed it.
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// A connection was opened again in the background after it dropped or was retired.
    pub fn record_reconnect(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }

    /// Retries so far ([`Telemetry::record_retry`]).
    #[must_use]
    pub fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }

    /// Background reconnects so far ([`Telemetry::record_reconnect`]).
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Relaxed)
    }

    /// An HTTP request went out on a new (`true`) or reused connection.
    pub fn request(&self, new_connection: bool) {
        if new_connection {
            self.requests_new.fetch_add(1, Relaxed);
        } else {
            self.requests_reused.fetch_add(1, Relaxed);
        }
    }

    /// Open connections now (asked of the owner: see [`Telemetry::gauges`]).
    #[must_use]
    pub fn open(&self) -> u64 {
        self.gauges().open
    }

    /// Connections in use now (asked of the owner).
    #[must_use]
    pub fn used(&self) -> u64 {
        self.gauges().used
    }

    /// Callers waiting now (asked of the owner).
    #[must_use]
    pub fn pending(&self) -> u64 {
        self.gauges().pending
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

    /// Sends every number to the `metrics` facade: gauges (asked of their owners) and
    /// counters as they are now, and the histogram samples recorded since the last publish.
    pub fn publish(&self) {
        let m = &self.metrics;
        let g = self.gauges();
        let (open, used, pending) = (g.open, g.used, g.pending);
        self.starvation.observe(
            pending,
            open.saturating_sub(used),
            std::time::Instant::now(),
        );
        #[allow(clippy::cast_precision_loss)]
        {
            m.idle.set(open.saturating_sub(used) as f64);
            m.used.set(used as f64);
            m.pending.set(pending as f64);
            m.utilization
                .set(used as f64 / f64::from(self.max_size().max(1)));
        }
        m.max.set(f64::from(self.max_size()));
        m.open_limit
            .set(f64::from(g.open_limit.unwrap_or_else(|| self.max_size())));
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
        m.retries.absolute(self.retries.load(Relaxed));
        m.reconnects.absolute(self.reconnects.load(Relaxed));
        self.fed[0].feed(&self.wait, &m.acquire_wait);
        self.fed[1].feed(&self.use_time, &m.use_time);
        self.fed[2].feed(&self.create_time, &m.create_time);
    }

    /// A snapshot (see [`PoolStats`] for the consistency caveat).
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        let g = self.gauges();
        let (open, used, pending) = (g.open, g.used, g.pending);
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
            open_limit: g.open_limit.unwrap_or(ceiling),
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
            acquire_timeout: self.config.acquire_timeout.as_secs_f64(),
            server_cap: None,
        }
    }
}

impl Publish for Telemetry {
    fn publish(&self) {
        Telemetry::publish(self);
    }
}
