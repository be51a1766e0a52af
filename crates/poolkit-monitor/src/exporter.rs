//! The Prometheus exporter: one call installs a recorder with explicit histogram buckets.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::Error;

/// Bucket bounds, in seconds, for every `poolkit_*_seconds` histogram: from 100 µs (a warm
/// checkout on loopback) to 60 s (a caller stuck behind an exhausted pool). Between 0.5 s
/// and 10 s, where a saturated pool's waits and holds fall, each bound is at most about
/// 20 % above the previous one, so PromQL's `histogram_quantile` (which interpolates inside
/// a bucket) lands within 20 % of the true quantile.
pub const SECONDS_BUCKETS: [f64; 34] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.6, 0.7,
    0.8, 0.9, 1.0, 1.2, 1.4, 1.6, 1.9, 2.2, 2.6, 3.0, 3.5, 4.0, 4.7, 5.6, 6.7, 8.0, 9.0, 10.0,
    30.0, 60.0,
];

/// How often the recorder drains histogram samples when nobody scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static INSTALLING: Mutex<()> = Mutex::new(());

/// A `PrometheusBuilder` with poolkit's buckets for every metric ending in `_seconds`
/// (so they are exported as histograms, not summaries). Add your own settings, then
/// install it yourself or pass it to [`install_with`].
#[must_use]
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        // The bucket list is a non-empty constant, so this cannot fail.
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

/// Installs the Prometheus recorder with poolkit's buckets as the process's `metrics`
/// recorder, and starts a background thread that runs its upkeep every
/// [`UPKEEP_INTERVAL`]. Returns the handle that renders `/metrics`.
///
/// Call it **before building any pool**: a pool registers its metric handles when built,
/// with whatever recorder is installed at that moment.
///
/// Calling it again returns the first handle.
///
/// # Errors
/// [`Error::Recorder`] when another recorder is already installed; in that case use
/// [`build_recorder`] to combine recorders, or pass your own Prometheus handle to
/// [`MonitorBuilder::metrics`](crate::MonitorBuilder::metrics).
pub fn install() -> Result<PrometheusHandle, Error> {
    install_with(builder())
}

/// As [`install`], with a builder you configured (start from [`builder`]).
///
/// # Errors
/// As [`install`].
pub fn install_with(builder: PrometheusBuilder) -> Result<PrometheusHandle, Error> {
    let _once = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = builder.install_recorder().map_err(Error::Recorder)?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("poolkit-monitor-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the Prometheus upkeep thread; histograms drain only on scrape");
    }
    Ok(handle)
}

/// Builds (without installing) a Prometheus recorder with poolkit's buckets, for an
/// application that combines recorders (for example with `metrics_util::layers::FanoutBuilder`).
/// Serve its handle with [`MonitorBuilder::metrics`](crate::MonitorBuilder::metrics); the
/// application then runs `handle.run_upkeep()` periodically.
#[must_use]
pub fn build_recorder() -> (PrometheusRecorder, PrometheusHandle) {
    let recorder = builder().build_recorder();
    let handle = recorder.handle();
    (recorder, handle)
}

/// The handle [`install`] created, if it was called.
#[must_use]
pub fn installed() -> Option<PrometheusHandle> {
    HANDLE.get().cloned()
}

#[cfg(test)]
mod tests {
    use super::SECONDS_BUCKETS;

    #[test]
    fn buckets_are_fine_between_half_a_second_and_ten() {
        assert!(SECONDS_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        for w in SECONDS_BUCKETS
            .windows(2)
            .filter(|w| w[0] >= 0.5 && w[1] <= 10.0)
        {
            assert!(w[1] / w[0] <= 1.21, "{} -> {} is too coarse", w[0], w[1]);
        }
    }
}
