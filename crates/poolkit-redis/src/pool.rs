//! The Redis pool: shared multiplexed connections, plus exclusive checkout.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolkit_core::engine::{AcquireError, Checkout, Engine};
use poolkit_core::metrics::{CloseReason, ErrorKind};
use poolkit_core::mux::MuxError;
use poolkit_core::{
    Backend, BoxFuture, Health, Monitored, PingError, PoolStats, Probe, QueryStats, Telemetry,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue};

use crate::commands::Timed;
use crate::config::{Config, DEFAULT_PREFIX};
use crate::connector::{Connector, is_refused_login};
use crate::error::Error;
use crate::exclusive::Manager;
use crate::failover::Failover;
use crate::shared::{Shared, is_broken};

/// A Redis pool. Cheap to clone.
///
/// Commands sent with [`Pool::query`] share a few multiplexed connections (the fast
/// path: one socket carries many commands at once). [`Pool::exclusive`] checks out a
/// connection of its own, first come first served, for blocking commands and
/// transactions. The two parts register as two pools: `NAME` (shared) and
/// `NAME_exclusive`.
#[derive(Clone)]
pub struct Pool {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: Config,
    pub(crate) db: i64,
    queries: Arc<QueryStats>,
    shared: Arc<Shared>,
    telemetry: Arc<Telemetry>,
    exclusive: Arc<Exclusive>,
    connector: Arc<Connector>,
    failover: Arc<Failover>,
}

struct Exclusive {
    engine: Engine<Manager>,
    config: Config,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.inner, f)
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.config.pool.name)
            .field("target", &self.config.target())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Exclusive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExclusivePool")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// An exclusively checked-out connection: derefs to `MultiplexedConnection`. Dropping it
/// returns it to the pool.
///
/// It implements `redis::aio::ConnectionLike` itself: pass `&mut conn` (not `&mut *conn`)
/// to `query_async`, so that a command that shows the connection dead (killed by the
/// server, socket closed) retires it instead of returning it for the next caller.
pub struct PooledConnection {
    checkout: Checkout<Manager>,
    telemetry: Arc<Telemetry>,
    broken: bool,
    failover: Arc<Failover>,
}

impl PooledConnection {
    /// Marks the connection broken (closed, not reused, when returned) if `e` shows it dead;
    /// an error that says the server moved retires the whole pool.
    pub(crate) fn note_error(&mut self, e: &redis::RedisError) {
        self.failover.exclusive_error(self.checkout.generation(), e);
        if !self.broken && is_broken(e) {
            self.broken = true;
            self.telemetry.error(ErrorKind::Broken);
            self.checkout.tracked().retire(CloseReason::Broken);
        }
    }
}

impl fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.checkout, f)
    }
}

impl Deref for PooledConnection {
    type Target = MultiplexedConnection;
    fn deref(&self) -> &MultiplexedConnection {
        &self.checkout
    }
}

impl DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut MultiplexedConnection {
        &mut self.checkout
    }
}

impl Pool {
    /// A pool configured from `REDIS_URL` (or `REDIS_HOST` …) and the `REDIS_*` knobs.
    ///
    /// # Errors
    /// As [`Config::from_env`] and [`Pool::new`].
    pub async fn from_env() -> Result<Self, Error> {
        Self::new(Config::from_env(DEFAULT_PREFIX)?).await
    }

    /// Builds the pool: opens the shared connections (failing within the acquire timeout
    /// when Redis cannot be reached) and registers both parts.
    ///
    /// # Errors
    /// [`Error::Config`], or [`Error::Connect`] with the server's reason.
    pub async fn new(config: Config) -> Result<Self, Error> {
        config.validate()?;
        if !config.cluster_nodes.is_empty() {
            return Err(Error::Config(poolkit_core::ConfigError::Invalid {
                var: format!("{}_CLUSTER_NODES", config.pool.prefix),
                value: format!("{} nodes", config.cluster_nodes.len()),
                expected: "a single server here; use poolkit_redis::ClusterPool for a cluster"
                    .into(),
            }));
        }
        let db = config.connection_info()?.redis_settings().db();
        let connect_timeout = config
            .connect_timeout
            .unwrap_or(config.pool.acquire_timeout.min(Duration::from_secs(5)));
        let connector = Arc::new(Connector::new(&config, connect_timeout)?);
        let shared_cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        let mut shared_pool = config.pool.clone();
        shared_pool.max_size = Some(config.max_in_flight.max(shared_pool.pool_size));
        shared_pool.min_idle = 0;
        // `P_POOL_SIZE=auto` sizes the exclusive pool; shared connections stay at the floor.
        shared_pool.sizing = poolkit_core::Sizing::Fixed;
        let telemetry = Telemetry::new(shared_pool);
        let shared = Shared::start(
            Arc::clone(&connector),
            shared_cfg,
            config.pool.pool_size as usize,
            config.max_in_flight as usize,
            connect_timeout,
            Arc::clone(&telemetry),
        );
        match shared.mux.wait_ready(config.pool.acquire_timeout).await {
            Ok(()) => {}
            Err(MuxError::Connect(e)) => {
                shared.close();
                return Err(connect_error(&config, e));
            }
            Err(MuxError::Closed) => {
                return Err(Error::Closed {
                    pool: config.pool.name.clone(),
                });
            }
            Err(_) => {
                shared.close();
                return Err(Error::Timeout {
                    pool: config.pool.name.clone(),
                    waited: config.pool.acquire_timeout,
                    size: config.pool.pool_size,
                    what: "connections",
                    pending: 0,
                    size_var: config.pool.ceiling_var(),
                    timeout_var: config.timeout_var(),
                });
            }
        }

        let exclusive_cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None);
        let mut exclusive_pool = config.pool.clone();
        exclusive_pool.name = format!("{}_exclusive", config.pool.name);
        let engine = Engine::build(
            Manager::with_connector(Arc::clone(&connector), exclusive_cfg),
            exclusive_pool,
        )
        .await
        .map_err(|e| acquire_error(&config, e))?;
        let failover = Failover::new(
            &config.pool.name,
            Arc::clone(&shared),
            engine.clone(),
            Arc::clone(&telemetry),
        );
        if let Some(sentinel) = &config.sentinel {
            crate::sentinel_watch::start(sentinel, connect_timeout, Arc::downgrade(&failover));
        }
        let exclusive = Arc::new(Exclusive {
            engine,
            config: config.clone(),
        });
        let queries = QueryStats::new(&config.pool.name, Backend::Redis, config.pool.slow_query);
        let inner = Arc::new(Inner {
            config,
            db,
            queries,
            shared,
            telemetry,
            exclusive,
            connector,
            failover,
        });
        let monitored: Arc<dyn Monitored> = inner.clone();
        poolkit_core::register(&monitored);
        let monitored: Arc<dyn Monitored> = inner.exclusive.clone();
        poolkit_core::register(&monitored);
        Ok(Self { inner })
    }

    /// Runs one command over a shared connection and converts its reply.
    ///
    /// # Errors
    /// [`Error::Timeout`] when no shared connection is live (or the in-flight cap stays
    /// full) within the acquire timeout; [`Error::Connect`] when that wait ended because
    /// reconnecting failed; [`Error::Backend`] when the command failed.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        self.inner
            .run(Timed::Cmd(cmd), |mut conn| async move {
                cmd.query_async::<T>(&mut conn).await
            })
            .await
    }

    /// Runs a pipeline (or `MULTI`/`EXEC` with `.atomic()`) over a shared connection.
    ///
    /// # Errors
    /// As [`Pool::query`].
    pub async fn pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, Error> {
        self.inner
            .run(Timed::Pipe(pipe), |mut conn| async move {
                pipe.query_async::<T>(&mut conn).await
            })
            .await
    }

    /// A connection of one's own, for blocking commands (BLPOP), WATCH/MULTI/EXEC or
    /// anything that changes connection state. Served first come, first served.
    ///
    /// # Errors
    /// [`Error::Timeout`] when none came free within the acquire timeout;
    /// [`Error::Connect`]; [`Error::Closed`].
    pub async fn exclusive(&self) -> Result<PooledConnection, Error> {
        match self.inner.exclusive.engine.get().await {
            Ok(checkout) => Ok(PooledConnection {
                checkout,
                telemetry: Arc::clone(self.inner.exclusive.engine.telemetry()),
                broken: false,
                failover: Arc::clone(&self.inner.failover),
            }),
            Err(e) => Err(acquire_error(&self.inner.config, e)),
        }
    }

    /// Runs `op` with an exclusive connection and returns it to the pool afterwards
    /// (the seeds' `withRedis(op)`).
    ///
    /// # Errors
    /// As [`Pool::exclusive`], or the error `op` returns.
    pub async fn with_exclusive<T, F>(&self, op: F) -> Result<T, Error>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    {
        let mut conn = self.exclusive().await?;
        match op(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                conn.note_error(&e);
                Err(Error::from(e))
            }
        }
    }

    /// A dedicated pub/sub connection (not pooled: it lives as long as the subscription).
    ///
    /// # Errors
    /// [`Error::Connect`] when Redis cannot be reached.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, Error> {
        let client = self.inner.config.client()?;
        client
            .get_async_pubsub()
            .await
            .map_err(|e| connect_error(&self.inner.config, Arc::new(e)))
    }

    /// `PING` over a shared connection; returns the round-trip time.
    ///
    /// # Errors
    /// As [`Pool::query`].
    pub async fn ping(&self) -> Result<Duration, Error> {
        self.inner.ping().await
    }

    /// Stats of the shared part (used = commands in flight, open = live sockets).
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }

    /// Stats of the exclusive part.
    #[must_use]
    pub fn exclusive_stats(&self) -> PoolStats {
        self.inner.exclusive.engine.telemetry().stats()
    }

    /// Health of the shared part from its stats.
    #[must_use]
    pub fn health(&self) -> Health {
        self.inner.health()
    }

    /// Background reconnects of shared connections so far.
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.inner.telemetry.reconnects()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Changes the exclusive pool's steady size and ceiling while it runs (see
    /// `poolkit_core::engine::Engine::resize`). The shared connections are a fixed few
    /// multiplexed sockets; their in-flight cap is `P_MAX_IN_FLIGHT`.
    ///
    /// # Errors
    /// [`Error::Config`] with the same message the environment variables would give.
    pub fn resize(&self, pool_size: u32, max_size: Option<u32>) -> Result<(), Error> {
        Ok(self.inner.exclusive.engine.resize(pool_size, max_size)?)
    }

    /// Closes the pool: new commands and checkouts fail at once with [`Error::Closed`].
    pub fn close(&self) {
        self.inner.shared.close();
        self.inner.exclusive.engine.close();
    }
}

fn connect_error(config: &Config, source: Arc<redis::RedisError>) -> Error {
    if config.password.rotates() && is_refused_login(&source) {
        return Error::Credentials {
            pool: config.pool.name.clone(),
            target: config.target(),
            source_name: config.password.describe(),
            reason: source.to_string(),
            source,
        };
    }
    let mut reason = source.to_string();
    if source.is_timeout() {
        // A server that accepts TCP and never answers: say which limit ran out.
        let limit = config
            .connect_timeout
            .unwrap_or(config.pool.acquire_timeout.min(Duration::from_secs(5)));
        reason = format!(
            "{reason}: no answer within {limit:?} (the connect timeout; raise {}_CONNECT_TIMEOUT if the server is just slow)",
            config.pool.prefix
        );
    }
    Error::Connect {
        pool: config.pool.name.clone(),
        target: config.target(),
        reason,
        source,
    }
}

fn acquire_error(config: &Config, e: AcquireError<redis::RedisError>) -> Error {
    match e {
        AcquireError::Timeout { waited, pending } => Error::Timeout {
            pool: format!("{}_exclusive", config.pool.name),
            waited,
            size: config.pool.ceiling(),
            what: "exclusive connections",
            pending,
            size_var: config.pool.ceiling_var(),
            timeout_var: config.timeout_var(),
        },
        AcquireError::Connect(source) => connect_error(config, source),
        _ => Error::Closed {
            pool: config.pool.name.clone(),
        },
    }
}

impl Inner {
    pub(crate) async fn run<T, F, Fut>(&self, what: Timed<'_>, f: F) -> Result<T, Error>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let shared = &self.shared;
        if shared.is_closed() {
            return Err(Error::Closed {
                pool: self.config.pool.name.clone(),
            });
        }
        // The core routes the command to the least-loaded live socket under the in-flight
        // cap, first come first served, and counts it; a caller that drops this future
        // (a `timeout` around `query`, a `select!`) leaves no place or count behind.
        let lease = match shared.mux.lease(self.config.pool.acquire_timeout).await {
            Ok(lease) => lease,
            Err(MuxError::Timeout {
                waited,
                pending,
                connect,
            }) => return Err(self.timed_out(waited, pending, connect)),
            Err(_) => {
                return Err(Error::Closed {
                    pool: self.config.pool.name.clone(),
                });
            }
        };
        let result = f(lease.conn.clone()).await;
        if let Err(e) = &result {
            let broken = shared.failed(&lease, e);
            self.failover.shared_error(&lease, e);
            if !broken {
                self.telemetry.error(if e.is_timeout() {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Request
                });
            }
        }
        // One clock reading ends the lease and times the command.
        let held = lease.end();
        self.queries
            .record(what.operation(), held, || what.statement());
        result.map_err(Error::from)
    }

    /// A command found no room within the acquire timeout (the core counted it); the
    /// connect error that explains it, if a connect failed meanwhile.
    fn timed_out(
        &self,
        waited: Duration,
        pending: usize,
        connect: Option<Arc<redis::RedisError>>,
    ) -> Error {
        if let Some(e) = connect {
            return connect_error(&self.config, e);
        }
        Error::Timeout {
            pool: self.config.pool.name.clone(),
            waited,
            size: self.telemetry.config().ceiling(),
            what: "commands in flight",
            pending: pending as u64,
            size_var: format!("{}_MAX_IN_FLIGHT", self.config.pool.prefix),
            timeout_var: self.config.timeout_var(),
        }
    }

    async fn ping(&self) -> Result<Duration, Error> {
        let t = Instant::now();
        let ping = &redis::cmd("PING");
        self.run(Timed::Cmd(ping), |mut conn| async move {
            ping.query_async::<String>(&mut conn).await
        })
        .await?;
        Ok(t.elapsed())
    }

    fn stats(&self) -> PoolStats {
        let mut s = self.telemetry.stats();
        // Sockets, not in-flight commands, are the connections of shared mode (the
        // core's gauges); idle is computed as the metrics exporter computes
        // `poolkit_connections{state="idle"}` (open sockets less commands in flight), so
        // `/pools` and Prometheus agree.
        s.idle = s.open.saturating_sub(s.used);
        s.query = self.queries.timing();
        s
    }
}

impl Monitored for Inner {
    fn name(&self) -> &str {
        &self.config.pool.name
    }
    fn backend(&self) -> Backend {
        Backend::Redis
    }
    fn stats(&self) -> PoolStats {
        Inner::stats(self)
    }
    fn health(&self) -> Health {
        let stats = Inner::stats(self);
        let mut h = Health::assess(&stats, &self.config.pool.thresholds);
        let open = stats.open + self.exclusive.engine.telemetry().open();
        if let Some(alert) = self
            .connector
            .credentials()
            .alert(&self.config.pool.name, open)
        {
            h.add_alert(alert, poolkit_core::HealthStatus::Warning, false);
        }
        if let Some(alert) = self.failover.alert() {
            h.alerts.push(alert);
        }
        h
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), PingError>> {
        Box::pin(async move {
            let r = tokio::time::timeout(Duration::from_secs(5), Inner::ping(self)).await;
            match r {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(PingError::new(&self.config.pool.name, e.to_string())),
                Err(_) => Err(PingError::new(
                    &self.config.pool.name,
                    "no PING reply within 5 s",
                )),
            }
        })
    }
}

impl Monitored for Exclusive {
    fn name(&self) -> &str {
        &self.engine.telemetry().config().name
    }
    fn backend(&self) -> Backend {
        Backend::Redis
    }
    fn stats(&self) -> PoolStats {
        self.engine.telemetry().stats()
    }
    fn health(&self) -> Health {
        Health::assess(
            &self.engine.telemetry().stats(),
            &self.config.pool.thresholds,
        )
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), PingError>> {
        Box::pin(async move {
            let name = self.engine.telemetry().config().name.clone();
            let mut conn =
                self.engine.get().await.map_err(|e| {
                    PingError::new(&name, acquire_error(&self.config, e).to_string())
                })?;
            redis::cmd("PING")
                .query_async::<()>(&mut *conn)
                .await
                .map_err(|e| PingError::new(&name, e.to_string()))
        })
    }
    /// `PING` on an idle connection taken with the engine's `try_get` (never queued); with
    /// none idle, a ping only when nobody waits and there is room to open one, else `Busy`.
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            let name = self.engine.telemetry().config().name.clone();
            if let Some(mut conn) = self.engine.try_get() {
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<()>(&mut *conn);
                return match tokio::time::timeout(Duration::from_secs(5), ping).await {
                    Ok(Ok(())) => Probe::Alive,
                    Ok(Err(e)) => Probe::Failed(PingError::new(&name, e.to_string())),
                    Err(_) => Probe::Failed(PingError::new(&name, "no PING reply within 5 s")),
                };
            }
            let s = self.stats();
            if s.pending == 0 && s.open < u64::from(s.max_size) {
                return match self.ping().await {
                    Ok(()) => Probe::Alive,
                    Err(e) => Probe::Failed(e),
                };
            }
            Probe::Busy
        })
    }
}
