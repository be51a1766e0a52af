#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod connect;
mod error;
mod exchange;
mod host;
pub mod pinecone;
mod pool;
mod request;
pub mod supabase;
mod url;

pub use config::{Config, DEFAULT_IDLE_TIMEOUT, ENV_SUFFIXES, HttpVersion, unknown_vars};
pub use error::{BoxError, Error};
pub use pool::{Builder, OriginStats, Pool};
pub use request::{RequestBuilder, Response};

pub use http;
pub use poolkit_core::{Secret, Telemetry};
