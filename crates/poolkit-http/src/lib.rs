#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod connect;
mod error;
mod exchange;
mod failure;
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod h2;
mod host;
pub mod pinecone;
mod pool;
mod redirect;
mod request;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
mod reqwest_pool;
mod response;
pub mod supabase;
mod url;

pub use config::{
    Config, DEFAULT_HTTP2_MAX_STREAMS, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BODY, DEFAULT_PREFIX,
    ENV_SUFFIXES, HttpVersion,
};
pub use connect::Resolve;
pub use error::{BoxError, Error};
pub use pool::{Builder, OriginStats, Pool};
pub use request::{IntoUrl, RequestBuilder, Token};
pub use response::Response;

pub use http;
pub use poolkit_core::{FromEnv, PoolError, Secret, Telemetry};
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use reqwest;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use reqwest_pool::{reqwest_client, reqwest_client_with};
