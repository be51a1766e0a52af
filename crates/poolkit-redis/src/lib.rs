#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
mod cluster;
mod commands;
mod config;
mod error;
mod exclusive;
mod pool;
mod shared;

#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub use cluster::ClusterPool;
pub use config::{Config, DEFAULT_PREFIX, ENV_SUFFIXES, default_pool_config, unknown_vars};
pub use error::Error;
pub use exclusive::Manager;
pub use pool::{Pool, PooledConnection};

pub use poolkit_core as core;
pub use redis;
