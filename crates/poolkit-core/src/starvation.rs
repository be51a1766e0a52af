//! Starvation: callers waiting with no connection free, for longer than a bound
//! (`P_STARVATION_AFTER`). Sampled off the checkout path (by the once-a-second publisher
//! and by every `stats()`), so the engine's hot path pays nothing for it; a readiness probe
//! reads it through `Health::ready`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// When the current stretch of starvation began, as seen by the samples.
#[derive(Debug)]
pub(crate) struct Starvation {
    epoch: Instant,
    /// Milliseconds since `epoch` (plus one) of the first sample that saw callers waiting
    /// with nothing free; 0 while the last sample saw none waiting.
    since: AtomicU64,
}

impl Default for Starvation {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            since: AtomicU64::new(0),
        }
    }
}

impl Starvation {
    /// Records one sample (`pending` callers waiting, `idle` connections free) at `now`
    /// and returns how long the pool has been starved, as far as the samples tell.
    pub(crate) fn observe(&self, pending: u64, idle: u64, now: Instant) -> Duration {
        let at = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX - 1)
            + 1;
        if pending == 0 || idle > 0 {
            self.since.store(0, Relaxed);
            return Duration::ZERO;
        }
        let since = match self.since.compare_exchange(0, at, Relaxed, Relaxed) {
            Ok(_) => at,
            Err(earlier) => earlier,
        };
        Duration::from_millis(at.saturating_sub(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stretch_of_waiting_with_nothing_free_is_measured_from_its_first_sample() {
        let s = Starvation::default();
        let t0 = s.epoch;
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(s.observe(0, 0, at(0)), Duration::ZERO);
        assert_eq!(s.observe(3, 0, at(1000)), Duration::ZERO, "first sample");
        assert_eq!(s.observe(5, 0, at(2500)), Duration::from_millis(1500));
        assert_eq!(
            s.observe(1, 2, at(3000)),
            Duration::ZERO,
            "a free connection ends it"
        );
        assert_eq!(s.observe(1, 0, at(4000)), Duration::ZERO);
        assert_eq!(s.observe(0, 0, at(5000)), Duration::ZERO, "nobody waits");
        assert_eq!(s.observe(2, 0, at(6000)), Duration::ZERO);
        assert_eq!(s.observe(2, 0, at(9000)), Duration::from_millis(3000));
    }
}
