//! The error type of poolkit-monitor.

use std::net::SocketAddr;

use poolkit_core::ConfigError;
use thiserror::Error;

/// What can go wrong when setting up or serving the monitor.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A `POOLKIT_MONITOR_*` variable is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Prometheus recorder could not be installed (usually: the application already
    /// installed a recorder; pass its handle with [`MonitorBuilder::metrics`](crate::MonitorBuilder::metrics)
    /// or use [`build_recorder`](crate::build_recorder) to combine recorders).
    #[error("cannot install the Prometheus recorder: {0}")]
    Recorder(#[source] metrics_exporter_prometheus::BuildError),
    /// The listening address could not be bound.
    #[error("cannot listen on {addr} (POOLKIT_MONITOR_ADDR): {source}")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("monitor server failed: {0}")]
    Serve(#[source] std::io::Error),
}
