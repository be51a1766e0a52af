#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod budget;
mod config;
mod error;
#[cfg(feature = "fleet")]
mod fleet;
mod fleet_config;
mod manager;
mod pool;
mod pooler;
mod replicas;
mod tls;
mod transaction;

pub use budget::{Budget, ServerUse, plan};
pub use config::{Config, DEFAULT_PREFIX, Use, default_pool_config};
pub use error::{Error, chain};
#[cfg(feature = "fleet")]
#[cfg_attr(docsrs, doc(cfg(feature = "fleet")))]
pub use fleet::FleetStatus;
pub use fleet_config::{FleetBudget, FleetConfig};
pub use manager::Manager;
pub use pool::{Builder, Pool, PooledConnection};
pub use pooler::{Param, Pooler, Typed, session_state};
pub use replicas::REPLICA_RETRY_AFTER;
pub use tls::{MakeRustls, RustlsConnect, RustlsStream, SslMode};
pub use transaction::TxOptions;

pub use bb8;
pub use poolkit_core as core;
pub use tokio_postgres;
