//! Supabase preset: a pool for one Supabase project, `apikey` and `Authorization:
//! Bearer` set from `SUPABASE_SERVICE_ROLE_KEY` (or `SUPABASE_KEY`), and a PostgREST select.
//!
//! Env: `SUPABASE_URL`, `SUPABASE_SERVICE_ROLE_KEY` or `SUPABASE_KEY`, and the pool
//! variables under `SUPABASE_` with the seed services' values as defaults:
//! `SUPABASE_POOL_SIZE=20`, `SUPABASE_MAX_KEEPALIVE` = the ceiling (20), `SUPABASE_TIMEOUT=30.0`.

use std::fmt;
use std::time::Duration;

use http::Method;
use poolkit_core::env::process_lookup;
use poolkit_core::{ConfigError, Secret};

use crate::{Config, Error, Pool, RequestBuilder};

/// The env prefix.
pub const PREFIX: &str = "SUPABASE";

/// A Supabase client: the base URL and key headers set on a poolkit HTTP pool.
#[derive(Clone)]
pub struct Client {
    pool: Pool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("supabase::Client")
            .field("url", &self.pool.config().base_url)
            .field("key", &"***")
            .field("pool", &self.pool.name())
            .finish()
    }
}

/// The defaults: pool `supabase`, 20 connections (all kept alive), 30 s request timeout.
#[must_use]
pub fn defaults() -> Config {
    let mut c = Config::new("supabase");
    c.pool.pool_size = 20;
    c.max_keepalive = c.pool.ceiling();
    c.timeout = Some(Duration::from_secs(30));
    c
}

pub(crate) fn required(
    lookup: &dyn Fn(&str) -> Option<String>,
    vars: &[&str],
    hint: &str,
) -> Result<String, ConfigError> {
    vars.iter()
        .find_map(|v| lookup(v).filter(|s| !s.trim().is_empty()))
        .map(|s| s.trim().to_owned())
        .ok_or_else(|| ConfigError::Missing {
            var: vars.join(" or "),
            hint: hint.to_owned(),
        })
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
        let url = required(
            lookup,
            &["SUPABASE_URL"],
            "set it to the project URL, such as https://abcdefgh.supabase.co",
        )?;
        let key = Secret::new(required(
            lookup,
            &["SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_KEY"],
            "set it to the project's service-role or anon API key",
        )?);
        let mut config = Config::from_lookup(PREFIX, defaults(), lookup)?;
        config.base_url = Some(url);
        config.validate()?;
        Self::new(config, &key)
    }

    /// A client for `config.base_url` sending `key` as `apikey` and `Authorization: Bearer`.
    ///
    /// # Errors
    /// [`Error::Config`] when `config.base_url` is unset or invalid.
    pub fn new(config: Config, key: &Secret) -> Result<Self, Error> {
        if config.base_url.is_none() {
            return Err(ConfigError::Missing {
                var: "SUPABASE_URL".to_owned(),
                hint: "set Config::base_url to the project URL".to_owned(),
            }
            .into());
        }
        let pool = Pool::builder()
            .config(config)
            .secret_header("apikey", key)
            .secret_header(
                "authorization",
                &Secret::new(format!("Bearer {}", key.expose())),
            )
            .build()?;
        Ok(Self { pool })
    }

    /// The underlying pool (stats, health, close).
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Any REST call: `path` is relative to the project URL (`/rest/v1/items`,
    /// `/storage/v1/bucket`), with the key headers set.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.pool.request(method, path)
    }

    /// PostgREST select: `GET /rest/v1/{table}?select={columns}&{filters}`, where each
    /// filter is a column and a PostgREST operator expression (`("id", "eq.7")`).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a bad table name, [`Error::Status`] for a non-2xx
    /// answer, [`Error::Decode`] when the body is not JSON, and the transport errors.
    pub async fn select(
        &self,
        table: &str,
        columns: &str,
        filters: &[(&str, &str)],
    ) -> Result<serde_json::Value, Error> {
        if table.is_empty()
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err(Error::InvalidRequest {
                pool: self.pool.name().to_owned(),
                reason: format!("table name {table:?}: expected letters, digits, '_', '-' or '.'"),
            });
        }
        let mut query = vec![("select", columns)];
        query.extend_from_slice(filters);
        self.request(Method::GET, &format!("/rest/v1/{table}"))
            .header("accept", "application/json")
            .query(&query)
            .send()
            .await?
            .error_for_status_with_body()
            .await?
            .json()
            .await
    }
}
