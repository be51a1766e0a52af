//! Pinecone preset: a pool for one Pinecone index host, `Api-Key` set from
//! `PINECONE_API_KEY`, and a vector query.
//!
//! Env: `PINECONE_API_KEY`, `PINECONE_HOST` (the index host; `https://` is added when no
//! scheme is given), and the pool variables under `PINECONE_` with the seed services'
//! values as defaults: `PINECONE_POOL_SIZE=10`, `PINECONE_POOL_MAXSIZE=20`,
//! `PINECONE_POOL_TIMEOUT=30.0`.

use std::fmt;
use std::time::Duration;

use http::Method;
use poolkit_core::env::process_lookup;
use poolkit_core::{ConfigError, Secret};
use serde::{Deserialize, Serialize};

use crate::supabase::required;
use crate::{Config, Error, Pool, RequestBuilder};

/// The env prefix.
pub const PREFIX: &str = "PINECONE";

/// The Pinecone API version sent as `X-Pinecone-API-Version`.
pub const API_VERSION: &str = "2025-04";

/// A Pinecone data-plane client: the index host and `Api-Key` set on a poolkit HTTP pool.
#[derive(Clone)]
pub struct Client {
    pool: Pool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("pinecone::Client")
            .field("host", &self.pool.config().base_url)
            .field("api_key", &"***")
            .field("pool", &self.pool.name())
            .finish()
    }
}

/// The defaults: pool `pinecone`, 10 connections, bursts to 20, 30 s queue timeout.
#[must_use]
pub fn defaults() -> Config {
    let mut c = Config::new("pinecone");
    c.pool.pool_size = 10;
    c.pool.max_size = Some(20);
    c.pool.acquire_timeout = Duration::from_secs(30);
    c.max_keepalive = 20;
    c
}

/// A vector query (`POST /query`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Query<'a> {
    /// The query vector.
    pub vector: &'a [f32],
    /// How many matches to return.
    pub top_k: u32,
    /// The namespace (`None`: the default one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<&'a str>,
    /// Return each match's metadata.
    pub include_metadata: bool,
}

impl<'a> Query<'a> {
    /// The `top_k` nearest neighbours of `vector`, with metadata.
    #[must_use]
    pub fn new(vector: &'a [f32], top_k: u32) -> Self {
        Self {
            vector,
            top_k,
            namespace: None,
            include_metadata: true,
        }
    }

    /// Queries `namespace`.
    #[must_use]
    pub fn namespace(mut self, namespace: &'a str) -> Self {
        self.namespace = Some(namespace);
        self
    }
}

/// One match of a query.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Match {
    /// The vector's id.
    pub id: String,
    /// Its similarity score.
    #[serde(default)]
    pub score: f32,
    /// Its metadata, when asked for.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// The answer to a query.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct QueryResponse {
    /// Matches, best first.
    #[serde(default)]
    pub matches: Vec<Match>,
    /// The namespace queried.
    #[serde(default)]
    pub namespace: String,
}

impl Client {
    /// A client from the process environment.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable that is missing or invalid.
    pub fn from_env() -> Result<Self, Error> {
        let _ = <Config as poolkit_core::FromEnv>::unknown_vars(PREFIX);
        Self::from_lookup(&process_lookup)
    }

    /// A client from variables read through `lookup`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable that is missing or invalid.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let key = Secret::new(required(
            lookup,
            &["PINECONE_API_KEY"],
            "set it to the API key from the Pinecone console",
        )?);
        let host = required(
            lookup,
            &["PINECONE_HOST"],
            "set it to the index host, such as my-index-abc123.svc.us-east-1-aws.pinecone.io",
        )?;
        let url = if host.contains("://") {
            host
        } else {
            format!("https://{host}")
        };
        let mut config = Config::from_lookup(PREFIX, defaults(), lookup)?;
        if crate::url::Origin::parse(&url).is_err() {
            return Err(ConfigError::Invalid {
                var: "PINECONE_HOST".to_owned(),
                value: poolkit_core::redact_url(&url),
                expected: "a host name or an http(s):// URL".to_owned(),
            }
            .into());
        }
        config.base_url = Some(url);
        Self::new(config, &key)
    }

    /// A client for `config.base_url` sending `api_key` as `Api-Key`.
    ///
    /// # Errors
    /// [`Error::Config`] when `config.base_url` is unset or invalid.
    pub fn new(config: Config, api_key: &Secret) -> Result<Self, Error> {
        if config.base_url.is_none() {
            return Err(ConfigError::Missing {
                var: "PINECONE_HOST".to_owned(),
                hint: "set Config::base_url to the index host URL".to_owned(),
            }
            .into());
        }
        let pool = Pool::builder()
            .config(config)
            .secret_header("api-key", api_key)
            .header("x-pinecone-api-version", API_VERSION)
            .build()?;
        Ok(Self { pool })
    }

    /// The underlying pool (stats, health, close).
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Any REST call on the index host (`/vectors/upsert`, `/describe_index_stats`).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.pool.request(method, path)
    }

    /// `POST /query`. A query only reads, so it is retried once when a reused keep-alive
    /// connection breaks under it.
    ///
    /// # Errors
    /// [`Error::Status`] for a non-2xx answer, [`Error::Decode`] for an unexpected body,
    /// and the transport errors.
    pub async fn query(&self, query: &Query<'_>) -> Result<QueryResponse, Error> {
        self.request(Method::POST, "/query")
            .json(query)
            .idempotent(true)
            .send()
            .await?
            .error_for_status_with_body()
            .await?
            .json()
            .await
    }
}
