#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
mod cluster;
mod commands;
mod config;
mod connector;
mod error;
mod exclusive;
mod fail_fast;
mod failover;
mod hooks;
mod pool;
mod sentinel_watch;
mod shared;
#[cfg(feature = "cluster")]
mod topology;

#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub use cluster::ClusterPool;
pub use config::{
    Config, DEFAULT_PREFIX, DEFAULT_TCP_KEEPALIVE, DEFAULT_TCP_USER_TIMEOUT, ENV_SUFFIXES,
    SentinelConfig, TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_RETRIES, default_pool_config,
};
pub use error::Error;
pub use exclusive::Manager;
pub use hooks::{AfterConnect, AfterRelease, BeforeAcquire, Hooks};
pub use pool::{Builder, Pool, PooledConnection};
pub use poolkit_core::PoolError;

pub use poolkit_core as core;
pub use poolkit_core::FromEnv;
pub use redis;
