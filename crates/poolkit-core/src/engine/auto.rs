//! The task that runs an auto-sized pool's [`Controller`] (`P_POOL_SIZE=auto`): once per
//! interval it samples the pool's telemetry, asks the controller, and moves the engine's
//! limit. Weakly held, like upkeep: it ends with the pool.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{Manager, Shared};
use crate::autosize::{Controller, Sample, Sizing, Units, floor};
use crate::metrics::CloseReason;

/// What the last sample saw, to take differences from.
struct Sampler {
    at: Instant,
    acquires: u64,
    hits: u64,
    hold: Vec<(f64, u64)>,
}

impl Sampler {
    fn new<M: Manager>(shared: &Shared<M>) -> Self {
        let t = &shared.telemetry;
        Self {
            at: Instant::now(),
            acquires: t.acquires(),
            hits: t.wait_time().first_bucket(),
            hold: t.use_time().buckets(),
        }
    }

    fn sample<M: Manager>(&mut self, shared: &Shared<M>) -> Sample {
        let t = &shared.telemetry;
        let next = Self::new(shared);
        let acquires = next.acquires.saturating_sub(self.acquires);
        let hits = next.hits.saturating_sub(self.hits);
        let (mut n, mut sum) = (0u64, 0.0);
        for ((value, count), (_, before)) in next.hold.iter().zip(&self.hold) {
            let d = count.saturating_sub(*before);
            n += d;
            #[allow(clippy::cast_precision_loss)]
            {
                sum += value * d as f64;
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let hold_secs = if n == 0 { 0.0 } else { sum / n as f64 };
        #[allow(clippy::cast_precision_loss)]
        let waited_share = if acquires == 0 {
            0.0
        } else {
            acquires.saturating_sub(hits) as f64 / acquires as f64
        };
        let s = Sample {
            elapsed: next.at.saturating_duration_since(self.at),
            acquires,
            hold_secs,
            returns: n,
            busy: t.used(),
            pending: t.pending(),
            waited_share,
            ceiling: shared.allowed_ceiling(),
        };
        *self = next;
        s
    }
}

impl<M: Manager> Shared<M> {
    /// Moves the auto-sizing open limit (see [`Shared::apply_limits`]).
    pub(super) fn set_open_limit(self: &Arc<Self>, limit: u32) {
        self.auto_limit.store(limit, Relaxed);
        self.apply_limits();
    }

    /// The ceiling the pool may use now: its own, under the external cap (a fleet share).
    pub(super) fn allowed_ceiling(&self) -> u32 {
        self.telemetry.max_size().min(self.cap.load(Relaxed))
    }

    /// Sets the engine's limits from the sizes, the auto-sizing open limit and the cap:
    /// callers beyond them queue; idle connections above them close now, busy ones when
    /// they come back.
    pub(super) fn apply_limits(self: &Arc<Self>) {
        let (surplus, connects) = self.with(|s| {
            let cap = self.cap.load(Relaxed);
            let (pool_size, max_size) = if self.config.sizing == Sizing::Auto {
                let t = self.auto_limit.load(Relaxed).min(cap);
                (t, t)
            } else {
                (
                    self.telemetry.pool_size().min(cap),
                    self.telemetry.max_size().min(cap),
                )
            };
            s.resize(pool_size, max_size)
        });
        for conn in surplus {
            self.close_conn(conn, CloseReason::Overflow);
        }
        self.spawn_connects(connects);
    }
}

/// Starts the sizing task of an auto-sized pool (nothing for a fixed one).
pub(super) fn start<M: Manager>(shared: &Arc<Shared<M>>) {
    let config = &shared.config;
    if config.sizing != Sizing::Auto {
        return;
    }
    let every = config.auto_interval.max(Duration::from_millis(10));
    let idle = config.idle_timeout.unwrap_or(Duration::from_secs(60));
    let shrink_after =
        u32::try_from(idle.as_millis() / every.as_millis().max(1)).unwrap_or(u32::MAX);
    let mut controller = Controller::with_units(
        Units::for_backend(config.backend),
        floor(config),
        shrink_after,
    );
    let weak: Weak<Shared<M>> = Arc::downgrade(shared);
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(pool = %config.name, "no tokio runtime: the pool stays at its floor");
        return;
    };
    let mut sampler = Sampler::new(shared);
    rt.spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            if shared.lock().closed {
                return;
            }
            let sample = sampler.sample(&shared);
            if let Some(change) = controller.decide(&sample) {
                shared.set_open_limit(change.to);
                tracing::info!(
                    pool = %shared.config.name,
                    from = change.from,
                    to = change.to,
                    ceiling = sample.ceiling,
                    throughput = sample.throughput(),
                    hold_ms = sample.hold_secs * 1e3,
                    unloaded_hold_ms = controller.unloaded_hold().unwrap_or(0.0) * 1e3,
                    reason = %change.reason,
                    "pool open limit changed"
                );
            }
        }
    });
}
