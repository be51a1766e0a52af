#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod advice;
pub mod autosize;
pub mod backoff;
mod builder;
mod config;
pub mod credentials;
pub mod env;
mod error;
mod health;
mod histogram;
pub mod hooks;
pub mod metrics;
mod monitored;
pub mod query;
mod resolve;
mod secret;
mod starvation;
mod stats;
pub mod tcp;
mod telemetry;

#[cfg(feature = "bb8")]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
pub mod engine;
// The engine's state lives in `engine/state.rs` beside the rest of the engine; it is a
// module of its own here because the loom models drive it without the `bb8` feature.
#[cfg(any(feature = "bb8", poolkit_loom))]
#[cfg_attr(all(poolkit_loom, not(feature = "bb8")), allow(dead_code))]
#[path = "engine/state.rs"]
mod engine_state;
mod gate;
pub mod mux;
mod sync;
mod waiters;

#[cfg(all(test, poolkit_loom))]
mod loom_tests;

pub use autosize::Sizing;
pub use config::{Knob, MAX_POOL_SIZE_LIMIT, PoolConfig};
pub use credentials::{Credentials, PasswordProvider, PasswordSource, Token};
pub use env::FromEnv;
pub use error::{AdapterError, ConfigError, PoolError};
pub use gate::{Gate, GateError, Place};
pub use health::{
    Alert, Health, HealthStatus, LONG_WAIT, Severity, THRESHOLD_SUFFIXES, THRESHOLD_VARS,
    Thresholds, size_advice, under_pressure,
};
pub use histogram::LatencyHistogram;
pub use monitored::{
    BoxFuture, Monitored, MonitoredPool, PING_LIMIT, PingError, Probe, check, pool, pools, register,
};
pub use query::{Operation, QueryPerformance, QueryStart, QueryStats, QueryTiming};
pub use resolve::Resolve;
pub use secret::{Secret, redact_url};
pub use stats::{Backend, PoolStats, WaitQuantiles};
pub use telemetry::{GaugeSource, Gauges, Telemetry};
