//! `Telemetry`: the counters, gauges and histogram one pool keeps, shared by every
//! backend. Adapters call its event methods; it updates the `metrics` handles and the
//! atomics behind [`PoolStats`], counting each event exactly once.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::histogram::LatencyHistogram;
use crate::metrics::{CloseReason, ErrorKind, PoolMetrics};
use crate::{Knob, PoolConfig, PoolStats, WaitQuantiles};

/// The live numbers of one pool.
#[derive(Debug)]
pub struct Telemetry {
    config: PoolConfig,
    metrics: PoolMetrics,
    open: AtomicI64,
    used: AtomicI64,
    pending: AtomicI64,
    timeouts: AtomicU64,
    created: AtomicU64,
    closed: Vec<AtomicU64>,
    errors: Vec<AtomicU64>,
    requests_new: AtomicU64,
    requests_reused: AtomicU64,
    wait: LatencyHistogram,
    gate: Semaphore,
    closing: std::sync::atomic::AtomicBool,
}

fn nonneg(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Telemetry {
    /// Telemetry for a pool with this (validated) config; registers its metric handles.
    #[must_use]
    pub fn new(config: PoolConfig) -> Self {
        let metrics = PoolMetrics::new(
            &config.name,
            config.backend,
            config.ceiling(),
            config.min_idle,
        );
        Self {
            metrics,
            open: AtomicI64::new(0),
            used: AtomicI64::new(0),
            pending: AtomicI64::new(0),
            timeouts: AtomicU64::new(0),
            created: AtomicU64::new(0),
            closed: CloseReason::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            errors: ErrorKind::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            requests_new: AtomicU64::new(0),
            requests_reused: AtomicU64::new(0),
            wait: LatencyHistogram::default(),
            gate: Semaphore::new(config.ceiling() as usize),
            closing: std::sync::atomic::AtomicBool::new(false),
            config,
        }
    }

    /// The pool's config.
    #[must_use]
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The pool's fair gate: a FIFO semaphore with one permit per connection (or request
    /// slot) the ceiling allows. Callers queue on it first come, first served.
    #[must_use]
    pub fn gate(&self) -> &Semaphore {
        &self.gate
    }

    /// Marks the pool as closing: its gate is closed (waiting and new callers fail at once)
    /// and connections returned from now on are closed instead of kept.
    pub fn set_closing(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.gate.close();
    }

    /// Whether [`Telemetry::set_closing`] was called.
    #[must_use]
    pub fn is_closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The pool's metric handles.
    #[must_use]
    pub fn metrics(&self) -> &PoolMetrics {
        &self.metrics
    }

    fn refresh_gauges(&self, open: i64, used: i64) {
        #[allow(clippy::cast_precision_loss)]
        {
            self.metrics.idle.set((open - used).max(0) as f64);
            self.metrics.used.set(used.max(0) as f64);
            self.metrics
                .utilization
                .set(used.max(0) as f64 / f64::from(self.config.ceiling()));
        }
    }

    /// A caller started waiting for a connection.
    pub fn wait_started(&self) {
        self.pending.fetch_add(1, Relaxed);
        self.metrics.pending.increment(1.0);
    }

    /// A caller stopped waiting (got a connection, timed out or was cancelled).
    pub fn wait_ended(&self) {
        self.pending.fetch_sub(1, Relaxed);
        self.metrics.pending.decrement(1.0);
    }

    /// A caller got a connection after `wait`; `hit` when an idle connection served it at
    /// once (recorded as a zero wait; a miss records at least 2 µs).
    pub fn acquired(&self, wait: Duration, hit: bool) {
        // A hit is recorded as a zero wait (see `stats`), which keeps this path to one
        // histogram update instead of a second counter.
        let wait = if hit {
            Duration::ZERO
        } else {
            wait.max(Duration::from_micros(2))
        };
        self.wait.record(wait);
        self.metrics.acquires.increment(1);
        self.metrics.acquire_wait.record(wait);
        let used = self.used.fetch_add(1, Relaxed) + 1;
        self.refresh_gauges(self.open.load(Relaxed), used);
    }

    /// A caller gave up after the acquire timeout.
    pub fn timed_out(&self, wait: Duration) {
        self.timeouts.fetch_add(1, Relaxed);
        self.metrics.timeouts.increment(1);
        self.metrics.acquire_wait.record(wait);
    }

    /// A connection held for `held` went back to the pool (or was closed).
    pub fn released(&self, held: Duration) {
        self.metrics.use_time.record(held);
        let used = self.used.fetch_sub(1, Relaxed) - 1;
        self.refresh_gauges(self.open.load(Relaxed), used);
    }

    /// A connection was opened in `took`.
    pub fn opened(&self, took: Duration) {
        self.created.fetch_add(1, Relaxed);
        self.metrics.created.increment(1);
        self.metrics.create_time.record(took);
        let open = self.open.fetch_add(1, Relaxed) + 1;
        self.refresh_gauges(open, self.used.load(Relaxed));
    }

    /// A connection was closed for `reason`.
    pub fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Relaxed);
        self.metrics.closed[reason as usize].increment(1);
        let open = self.open.fetch_sub(1, Relaxed) - 1;
        self.refresh_gauges(open, self.used.load(Relaxed));
    }

    /// An error of `kind` happened.
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Relaxed);
        self.metrics.errors[kind as usize].increment(1);
    }

    /// An HTTP request went out on a new (`true`) or reused connection.
    pub fn request(&self, new_connection: bool) {
        if new_connection {
            self.requests_new.fetch_add(1, Relaxed);
            self.metrics.requests_new.increment(1);
        } else {
            self.requests_reused.fetch_add(1, Relaxed);
            self.metrics.requests_reused.increment(1);
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

    /// A snapshot (see [`PoolStats`] for the consistency caveat).
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        let open = self.open();
        let used = self.used();
        // Every successful acquire records one wait, so the histogram counts them.
        let acquires = self.wait.count();
        let ceiling = self.config.ceiling();
        #[allow(clippy::cast_precision_loss)]
        let hit_rate = if acquires == 0 {
            0.0
        } else {
            self.wait.first_bucket() as f64 / acquires as f64
        };
        #[allow(clippy::cast_precision_loss)]
        let utilization = used as f64 / f64::from(ceiling);
        let by = |names: &[&'static str], counts: &[AtomicU64]| -> Vec<(String, u64)> {
            names
                .iter()
                .zip(counts)
                .map(|(n, c)| ((*n).to_owned(), c.load(Relaxed)))
                .collect()
        };
        let reasons: Vec<&'static str> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        let kinds: Vec<&'static str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        PoolStats {
            name: self.config.name.clone(),
            backend: self.config.backend.as_str().to_owned(),
            max_size: ceiling,
            pool_size: self.config.pool_size,
            min_idle: self.config.min_idle,
            open,
            idle: open.saturating_sub(used),
            used,
            pending: self.pending(),
            utilization,
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
        }
    }
}
