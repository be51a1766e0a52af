//! # poolkit
//!
//! One pooling toolkit for the connections a backend service holds: PostgreSQL, Redis
//! and keep-alive HTTP. Every pool is configured the same way (environment variables
//! under a prefix), publishes the same `poolkit_*` metrics, and answers the same
//! questions through [`core::PoolStats`] and [`core::Health`].
//!
//! This crate re-exports the backend crates behind features:
//!
//! | feature | module | crate |
//! |---|---|---|
//! | `postgres` | [`postgres`] | `poolkit-postgres` |
//! | `redis` | [`redis`] | `poolkit-redis` |
//! | `monitor` | [`monitor`] | `poolkit-monitor` |
//! | `http` | [`http`] | `poolkit-http` |
//! | `full` | all of the above | |
//!
//! See the repository README for the quick start.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use poolkit_core as core;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use poolkit_postgres as postgres;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use poolkit_redis as redis;

#[cfg(feature = "monitor")]
#[cfg_attr(docsrs, doc(cfg(feature = "monitor")))]
pub use poolkit_monitor as monitor;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use poolkit_http as http;
