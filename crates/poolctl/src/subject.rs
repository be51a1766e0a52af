//! The backends a bench drives: one pool each, built from the same env as the app, with
//! the bench's overrides (pool size, acquire timeout).

use std::time::{Duration, Instant};

use poolkit_core::PoolStats;
use poolkit_redis::redis;

use crate::cli::{BackendArg, RedisOp};
use crate::error::Error;

/// Keys the Redis bench reads and writes; they expire on their own after five minutes.
const REDIS_KEYS: u64 = 100;
const REDIS_TTL_SECS: u64 = 300;

/// What the bench needs to build a pool.
#[derive(Debug, Clone)]
pub(crate) struct SubjectSpec {
    /// Which backend.
    pub(crate) backend: BackendArg,
    /// Env prefix.
    pub(crate) prefix: String,
    /// Acquire timeout override.
    pub(crate) acquire_timeout: Option<Duration>,
    /// PostgreSQL statement.
    pub(crate) query: String,
    /// Redis command mix.
    pub(crate) op: RedisOp,
    /// HTTP: the URL each user GETs.
    pub(crate) url: Option<String>,
}

/// Which HTTP client a bench run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpClient {
    /// A `poolkit_http::Pool` from the environment, resized to the run's pool size.
    Poolkit,
    /// A plain `reqwest::Client` keeping up to the pool size idle per host, no cap.
    Reqwest,
    /// PostgreSQL: statements on the pool itself, pipelined on its shared connections
    /// (the other PostgreSQL runs check out with `Poolkit`).
    PostgresShared,
}

/// A pool under load.
#[derive(Debug)]
pub(crate) enum Subject {
    /// A PostgreSQL pool and the statement each user runs.
    Postgres {
        /// The pool.
        pool: poolkit_postgres::Pool,
        /// The statement.
        query: String,
        /// Run on the pool's shared connections instead of a checkout.
        shared: bool,
    },
    /// A Redis pool and the command mix.
    Redis {
        /// The pool.
        pool: poolkit_redis::Pool,
        /// The command mix.
        op: RedisOp,
        /// Prefix of the keys used (unique per process).
        keys: String,
    },
    /// A poolkit HTTP pool and the URL each user GETs.
    Http {
        /// The pool.
        pool: poolkit_http::Pool,
        /// The URL.
        url: String,
    },
    /// A plain reqwest client, for comparison, and the URL.
    Reqwest {
        /// The client.
        client: reqwest::Client,
        /// The URL.
        url: String,
        /// Its request timeout.
        timeout: Duration,
    },
}

/// The env lookup the bench reads (the process environment).
fn lookup(var: &str) -> Option<String> {
    poolkit_core::env::process_lookup(var)
}

impl SubjectSpec {
    /// The pool size in force when `--pool-size` is not given: the env's, or the default.
    pub(crate) fn env_pool_size(&self) -> Result<u32, Error> {
        Ok(match self.backend {
            BackendArg::Postgres => {
                poolkit_postgres::Config::from_lookup(&self.prefix, &lookup)?
                    .pool
                    .pool_size
            }
            BackendArg::Redis => {
                poolkit_redis::Config::from_lookup(&self.prefix, &lookup)?
                    .pool
                    .pool_size
            }
            BackendArg::Http => self.http_config()?.pool.pool_size,
        })
    }

    fn http_config(&self) -> Result<poolkit_http::Config, Error> {
        let defaults = poolkit_http::Config::new(&self.prefix.to_ascii_lowercase());
        Ok(poolkit_http::Config::from_lookup(
            &self.prefix,
            defaults,
            &lookup,
        )?)
    }

    fn http_url(&self) -> Result<String, Error> {
        match &self.url {
            Some(u) => Ok(u.clone()),
            None => self.http_config()?.base_url.ok_or_else(|| {
                Error::Usage(format!(
                    "bench http needs --url URL (or {}_URL set)",
                    self.prefix
                ))
            }),
        }
    }

    /// Builds an HTTP subject of `size` connections for `client`.
    pub(crate) fn build_http(&self, size: u32, client: HttpClient) -> Result<Subject, Error> {
        let mut config = self.http_config()?;
        let url = self.http_url()?;
        config.pool.pool_size = size;
        config.pool.max_size = None;
        config.pool.min_idle = 0;
        config.max_keepalive = size;
        if let Some(t) = self.acquire_timeout {
            config.pool.acquire_timeout = t;
        }
        let timeout = config.timeout.unwrap_or(Duration::from_secs(30));
        match client {
            HttpClient::Poolkit => Ok(Subject::Http {
                pool: poolkit_http::Pool::new(config)
                    .map_err(|e| Error::Failed(format!("{}: {e}", self.prefix)))?,
                url,
            }),
            HttpClient::PostgresShared => Err(Error::Usage(
                "shared PostgreSQL runs are built with build_for".into(),
            )),
            HttpClient::Reqwest => Ok(Subject::Reqwest {
                client: reqwest::Client::builder()
                    .pool_max_idle_per_host(size as usize)
                    .connect_timeout(config.connect_timeout)
                    .timeout(timeout)
                    .build()
                    .map_err(|e| Error::Failed(format!("cannot build a reqwest client: {e}")))?,
                url,
                timeout,
            }),
        }
    }

    /// The ceiling in force for an `auto` run without `--auto-ceiling`: `P_POOL_MAXSIZE`.
    pub(crate) fn env_ceiling(&self) -> Result<u32, Error> {
        Ok(match self.backend {
            BackendArg::Postgres => poolkit_postgres::Config::from_lookup(&self.prefix, &lookup)?
                .pool
                .ceiling(),
            BackendArg::Redis => poolkit_redis::Config::from_lookup(&self.prefix, &lookup)?
                .pool
                .ceiling(),
            BackendArg::Http => self.http_config()?.pool.ceiling(),
        })
    }

    /// Builds a fresh pool of `size` connections (its ceiling too); with `auto`, a
    /// self-sizing pool whose ceiling is `size`, deciding every `interval` (default 1 s).
    pub(crate) async fn build(
        &self,
        size: u32,
        auto: Option<Option<Duration>>,
    ) -> Result<Subject, Error> {
        self.build_for(size, auto, false).await
    }

    /// As [`SubjectSpec::build`]; `shared`: a PostgreSQL pool whose users run their
    /// statement on its shared connections (`P_SHARED_CONNECTIONS` from the env, `auto`
    /// by default); otherwise they check out, and the pool keeps none.
    pub(crate) async fn build_for(
        &self,
        size: u32,
        auto: Option<Option<Duration>>,
        shared: bool,
    ) -> Result<Subject, Error> {
        let sized = |pool: &mut poolkit_core::PoolConfig| {
            // Each pool of the bench has a name of its own (the auto pool lives through
            // every step beside the fixed ones): no "already registered" warning.
            static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let label = if auto.is_some() {
                "auto".to_owned()
            } else {
                size.to_string()
            };
            pool.name = format!("{}_bench_{label}_{seq}", pool.name);
            pool.min_idle = pool.min_idle.min(size);
            if let Some(interval) = auto {
                pool.sizing = poolkit_core::Sizing::Auto;
                pool.pool_size = pool.min_idle.max(1);
                pool.max_size = Some(size);
                if let Some(every) = interval {
                    pool.auto_interval = every;
                }
            } else {
                pool.sizing = poolkit_core::Sizing::Fixed;
                pool.pool_size = size;
                pool.max_size = None;
            }
        };
        match self.backend {
            BackendArg::Http => self.build_http(size, HttpClient::Poolkit),
            BackendArg::Postgres => {
                let mut config = poolkit_postgres::Config::from_lookup(&self.prefix, &lookup)?;
                sized(&mut config.pool);
                if let Some(t) = self.acquire_timeout {
                    config.pool.acquire_timeout = t;
                }
                if !shared {
                    config.shared = poolkit_postgres::SharedConnections::Off;
                }
                let pool = poolkit_postgres::Pool::new(config)
                    .await
                    .map_err(|e| Error::postgres(&self.prefix, e))?;
                Ok(Subject::Postgres {
                    pool,
                    query: self.query.clone(),
                    shared,
                })
            }
            BackendArg::Redis => {
                let mut config = poolkit_redis::Config::from_lookup(&self.prefix, &lookup)?;
                let per_connection = config.max_in_flight / config.pool.pool_size.max(1);
                sized(&mut config.pool);
                config.max_in_flight = per_connection.max(1).saturating_mul(size);
                if let Some(t) = self.acquire_timeout {
                    config.pool.acquire_timeout = t;
                }
                let pool = poolkit_redis::Pool::new(config)
                    .await
                    .map_err(|e| Error::redis(&self.prefix, e))?;
                let keys = format!("poolctl:bench:{}:", std::process::id());
                let mut pipe = redis::pipe();
                for i in 0..REDIS_KEYS {
                    pipe.cmd("SET")
                        .arg(format!("{keys}{i}"))
                        .arg(value(i))
                        .arg("EX")
                        .arg(REDIS_TTL_SECS)
                        .ignore();
                }
                pool.pipe::<()>(&pipe)
                    .await
                    .map_err(|e| Error::redis(&self.prefix, e))?;
                Ok(Subject::Redis {
                    pool,
                    op: self.op,
                    keys,
                })
            }
        }
    }
}

/// A 64-byte value.
fn value(i: u64) -> String {
    format!("{i:064}")
}

impl Subject {
    /// One user operation. Returns the acquire wait when the client measures it (an
    /// exclusive checkout); `Err` holds the error kind.
    pub(crate) async fn op(&self, n: u64) -> Result<Option<Duration>, &'static str> {
        match self {
            Self::Postgres {
                pool,
                query,
                shared: true,
            } => {
                pool.simple_query(query).await.map_err(|e| pg_kind(&e))?;
                Ok(None)
            }
            Self::Postgres { pool, query, .. } => {
                let started = Instant::now();
                let conn = pool.get().await.map_err(|e| pg_kind(&e))?;
                let wait = started.elapsed();
                let query = if query.contains(":aid") {
                    std::borrow::Cow::Owned(
                        query.replace(":aid", &(n.wrapping_mul(7919) % 100_000 + 1).to_string()),
                    )
                } else {
                    std::borrow::Cow::Borrowed(query.as_str())
                };
                conn.simple_query(&query)
                    .await
                    .map_err(|e| pg_kind(&poolkit_postgres::Error::Backend(e)))?;
                Ok(Some(wait))
            }
            Self::Redis { pool, op, keys } => {
                let key = format!("{keys}{}", n % REDIS_KEYS);
                if *op == RedisOp::ExclusiveGet {
                    let started = Instant::now();
                    let mut conn = pool.exclusive().await.map_err(|e| redis_kind(&e))?;
                    let wait = started.elapsed();
                    let mut cmd = redis::cmd("GET");
                    cmd.arg(&key);
                    cmd.query_async::<Option<Vec<u8>>>(&mut *conn)
                        .await
                        .map_err(|_| "command")?;
                    return Ok(Some(wait));
                }
                let set = match op {
                    RedisOp::Get | RedisOp::ExclusiveGet => false,
                    RedisOp::Set => true,
                    RedisOp::Mixed => n.is_multiple_of(2),
                };
                let result = if set {
                    let mut cmd = redis::cmd("SET");
                    cmd.arg(&key).arg(value(n)).arg("EX").arg(REDIS_TTL_SECS);
                    pool.query::<()>(&cmd).await
                } else {
                    let mut cmd = redis::cmd("GET");
                    cmd.arg(&key);
                    pool.query::<Option<Vec<u8>>>(&cmd).await.map(|_| ())
                };
                result.map(|()| None).map_err(|e| redis_kind(&e))
            }
            Self::Http { pool, url } => {
                let r = pool.get(url).send().await.map_err(|e| http_kind(&e))?;
                if r.status().is_success() {
                    Ok(None)
                } else {
                    Err("status")
                }
            }
            Self::Reqwest { client, url, .. } => {
                let r = client.get(url).send().await.map_err(|e| reqwest_kind(&e))?;
                let ok = r.status().is_success();
                r.bytes().await.map_err(|e| reqwest_kind(&e))?;
                if ok { Ok(None) } else { Err("status") }
            }
        }
    }

    /// The acquire timeout in force.
    pub(crate) fn acquire_timeout(&self) -> Duration {
        match self {
            Self::Postgres { pool, .. } => pool.config().pool.acquire_timeout,
            Self::Redis { pool, .. } => pool
                .config()
                .pool
                .acquire_timeout
                .max(pool.config().command_timeout),
            Self::Http { pool, .. } => pool
                .config()
                .pool
                .acquire_timeout
                .max(pool.config().timeout.unwrap_or(Duration::ZERO)),
            Self::Reqwest { timeout, .. } => *timeout,
        }
    }

    /// The client's name in reports: `poolkit`, or `poolkit-http` / `reqwest` for HTTP.
    pub(crate) fn client(&self) -> &'static str {
        match self {
            Self::Postgres { shared: true, .. } => "poolkit shared",
            Self::Postgres { .. } | Self::Redis { .. } => "poolkit",
            Self::Http { .. } => "poolkit-http",
            Self::Reqwest { .. } => "reqwest",
        }
    }

    /// The pool's snapshot.
    pub(crate) fn stats(&self) -> PoolStats {
        match self {
            Self::Postgres { pool, .. } => pool.stats(),
            Self::Redis { pool, op, .. } if *op == RedisOp::ExclusiveGet => pool.exclusive_stats(),
            Self::Redis { pool, .. } => pool.stats(),
            Self::Http { pool, .. } => pool.stats(),
            // reqwest keeps no statistics.
            Self::Reqwest { .. } => PoolStats::default(),
        }
    }

    /// Closes the pool (and removes the Redis bench keys), so runs do not add up on the
    /// server.
    pub(crate) async fn close(&self) {
        match self {
            Self::Postgres { pool, .. } => {
                pool.drain(Duration::from_secs(5)).await;
            }
            Self::Redis { pool, keys, .. } => {
                let mut cmd = redis::cmd("DEL");
                for i in 0..REDIS_KEYS {
                    cmd.arg(format!("{keys}{i}"));
                }
                if let Err(e) = pool.query::<()>(&cmd).await {
                    tracing::warn!(error = %e, "could not delete the bench keys (they expire in 5 minutes)");
                }
                pool.close();
            }
            Self::Http { pool, .. } => pool.close(),
            Self::Reqwest { .. } => {}
        }
    }
}

/// The kind of a failed HTTP request, poolkit's or reqwest's.
fn request_kind(timeout: bool, connect: bool) -> &'static str {
    if timeout {
        "timeout"
    } else if connect {
        "connect"
    } else {
        "request"
    }
}

fn http_kind(e: &poolkit_http::Error) -> &'static str {
    request_kind(e.is_timeout(), e.is_connect())
}

fn reqwest_kind(e: &reqwest::Error) -> &'static str {
    request_kind(e.is_timeout(), e.is_connect())
}

/// The kind of a pool failure, the same for every adapter.
fn pool_kind(e: &poolkit_core::PoolError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_closed() {
        "closed"
    } else {
        "other"
    }
}

fn pg_kind(e: &poolkit_postgres::Error) -> &'static str {
    match e {
        poolkit_postgres::Error::Pool(p) => pool_kind(p),
        poolkit_postgres::Error::Backend(_) => "query",
        _ => "other",
    }
}

fn redis_kind(e: &poolkit_redis::Error) -> &'static str {
    match e {
        poolkit_redis::Error::Pool(p) => pool_kind(p),
        poolkit_redis::Error::Backend(_) => "command",
        _ => "other",
    }
}
