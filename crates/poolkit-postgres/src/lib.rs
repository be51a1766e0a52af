#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod error;
mod manager;
mod pool;

pub use config::{Config, DEFAULT_PREFIX, default_pool_config};
pub use error::{Error, chain};
pub use manager::Manager;
pub use pool::{Builder, Pool, PooledConnection};

pub use bb8;
pub use poolkit_core as core;
pub use tokio_postgres;
