#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod budget;
mod client;
mod config;
mod error;
mod manager;
mod pool;
mod pooler;
mod prisma;
mod replicas;
mod statement;
mod tls;
mod transaction;

pub use budget::{Budget, ServerUse, plan};
pub use config::{Config, DEFAULT_PREFIX, ENV_SUFFIXES, Use, default_pool_config, unknown_vars};
pub use error::{Error, chain};
pub use manager::Manager;
pub use pool::{Builder, Pool, PooledConnection};
pub use pooler::{Param, Pooler, Typed, session_state};
pub use prisma::{Limit, SUPAVISOR_POOL_SIZE_VAR};
pub use replicas::REPLICA_RETRY_AFTER;
pub use statement::{Column, PoolerRefusal, Statement, ToStatement};
pub use tls::{MakeRustls, RustlsConnect, RustlsStream, SslMode};
pub use transaction::{Transaction, TransactionBuilder, TxOptions};

pub use bb8;
pub use poolkit_core as core;
pub use tokio_postgres;
