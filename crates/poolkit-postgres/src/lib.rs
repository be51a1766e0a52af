#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod budget;
mod client;
mod config;
mod connect;
mod error;
mod fail_fast;
mod failover;
#[cfg(feature = "fleet")]
mod fleet;
mod fleet_config;
#[cfg(feature = "fleet")]
mod fleet_store;
mod hooks;
mod manager;
mod pipelined;
mod pool;
mod pooler;
mod prisma;
mod replicas;
mod session_state;
mod shared;
mod shared_auto;
mod statement;
mod tls;
mod transaction;

pub use budget::{Budget, ServerUse, plan};
pub use config::{
    Config, DEFAULT_PREFIX, DEFAULT_TCP_KEEPALIVE, DEFAULT_TCP_USER_TIMEOUT, ENV_SUFFIXES,
    TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_RETRIES, Use, default_pool_config,
};
pub use connect::{ConnectError, SessionAttrs};
pub use error::{Error, chain};
#[cfg(feature = "fleet")]
#[cfg_attr(docsrs, doc(cfg(feature = "fleet")))]
pub use fleet::{FleetMember, FleetStatus};
pub use fleet_config::{FleetBudget, FleetConfig};
pub use hooks::{AfterConnect, AfterRelease, BeforeAcquire, Hooks};
pub use manager::Manager;
pub use pool::{Builder, Pool, PooledConnection, SharedStatus};
pub use pooler::{Pooler, session_state};
pub use poolkit_core::PoolError;
pub use prisma::{Limit, SUPAVISOR_POOL_SIZE_VAR};
pub use replicas::REPLICA_RETRY_AFTER;
pub use session_state::shared_refusal;
pub use shared::SharedConnections;
pub use statement::{Column, PoolerRefusal, Statement, ToStatement};
pub use tls::{MakeRustls, RustlsConnect, RustlsStream, SslMode};
pub use transaction::{Transaction, TransactionBuilder, TxOptions};

pub use bb8;
pub use poolkit_core as core;
pub use poolkit_core::FromEnv;
pub use tokio_postgres;
