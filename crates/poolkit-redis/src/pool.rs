//! The Redis pool: shared multiplexed connections, plus exclusive checkout.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolkit_core::engine::{AcquireError, Checkout, Engine};
use poolkit_core::metrics::{CloseReason, ErrorKind};
use poolkit_core::mux::MuxError;
use poolkit_core::{
    Backend, BoxFuture, Health, Monitored, MonitoredPool, PoolError, PoolStats, QueryStats,
    Telemetry,
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
    after_release: Option<crate::hooks::AfterRelease>,
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        if let Some(hook) = &self.after_release
            && !self.broken
            && !hook(&self.checkout)
        {
            self.checkout.tracked().retire(CloseReason::Rejected);
        }
    }
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

/// Builds a [`Pool`] in code, with the same setters as the PostgreSQL and HTTP builders
/// (the common knobs, the connect settings, the hooks) and the same precedence: it starts
/// from the defaults and never reads the environment; [`Builder::config`] starts it from
/// `Config::from_env("REDIS")?` instead, and setters called afterwards win.
///
/// ```rust,no_run
/// # async fn run() -> Result<(), poolkit_redis::Error> {
/// use poolkit_redis::redis;
/// let pool = poolkit_redis::Pool::builder()
///     .config(poolkit_redis::Config::from_env("REDIS")?)
///     .pool_size(4)
///     .after_connect(|c| {
///         let setname = redis::cmd("CLIENT").arg("SETNAME").arg("api").clone();
///         Box::pin(async move { setname.query_async(c).await })
///     })
///     .before_acquire(|c| {
///         Box::pin(async move { redis::cmd("PING").query_async::<()>(c).await.is_ok() })
///     })
///     .after_release(|_| true)
///     .build()
///     .await?;
/// let conn = pool.exclusive_timeout(std::time::Duration::from_millis(200)).await?;
/// # drop(conn); Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct Builder {
    config: Config,
    /// Whether `max_in_flight` was set (else it follows the pool size, 256 a connection).
    in_flight_set: bool,
}

impl Builder {
    poolkit_core::pool_setters!(config.pool);
    poolkit_core::connect_setters!(config);
    poolkit_core::hook_setters!(config.hooks, MultiplexedConnection, redis::RedisError);

    /// The server's URL (`redis://`, `rediss://`, `redis+sentinel://`, `unix://`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = url.into().into();
        self
    }

    /// Shared mode: most commands in flight over all connections before callers queue.
    /// Env: `P_MAX_IN_FLIGHT`.
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.config.max_in_flight = n;
        self.in_flight_set = true;
        self
    }

    /// Shared mode: how long a command may take. Env: `P_TIMEOUT`.
    pub fn command_timeout(mut self, d: Duration) -> Self {
        self.config.command_timeout = d;
        self
    }

    /// How long opening one connection may take. Env: `P_CONNECT_TIMEOUT`.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = Some(d);
        self
    }

    /// Starts over from `config` (such as `Config::from_env("REDIS")?`): setters called
    /// afterwards win over it, the same order as in every adapter's builder.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self.in_flight_set = true;
        self
    }

    /// The configuration as built so far.
    #[must_use]
    pub fn current(&self) -> &Config {
        &self.config
    }

    /// Builds the pool (see [`Pool::new`]).
    ///
    /// # Errors
    /// As [`Pool::new`].
    pub async fn build(mut self) -> Result<Pool, Error> {
        if !self.in_flight_set {
            self.config.max_in_flight = self.config.pool.pool_size.max(1) * 256;
        }
        Pool::new(self.config).await
    }
}

impl Pool {
    /// A builder with Redis defaults (`redis://127.0.0.1:6379`, pool `redis`).
    pub fn builder() -> Builder {
        Builder {
            config: Config::new("redis://127.0.0.1:6379"),
            in_flight_set: false,
        }
    }

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
    /// [`Error::Config`], or [`PoolError::Connect`] with the server's reason.
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
                return Err(PoolError::closed(&config.pool.name).into());
            }
            Err(_) => {
                shared.close();
                return Err(PoolError::timeout(
                    &config.pool,
                    config.pool.acquire_timeout,
                    0,
                    "connection",
                )
                .into());
            }
        }

        let exclusive_cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None);
        let mut exclusive_pool = config.pool.clone();
        exclusive_pool.name = format!("{}_exclusive", config.pool.name);
        let engine = Engine::build_with(
            Manager::with_connector(Arc::clone(&connector), exclusive_cfg),
            exclusive_pool,
            None,
            crate::fail_fast::fatal,
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
    /// [`PoolError::Timeout`] when no shared connection is live (or the in-flight cap stays
    /// full) within the acquire timeout; [`PoolError::Connect`] when that wait ended because
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
    /// [`PoolError::Timeout`] when none came free within the acquire timeout;
    /// [`PoolError::Connect`]; [`PoolError::Closed`].
    pub async fn exclusive(&self) -> Result<PooledConnection, Error> {
        self.exclusive_timeout(self.inner.config.pool.acquire_timeout)
            .await
    }

    /// [`Pool::exclusive`] waiting at most `timeout` instead of the acquire timeout (as
    /// the PostgreSQL pool's `get_timeout`).
    ///
    /// # Errors
    /// As [`Pool::exclusive`], [`PoolError::Timeout`] after `timeout`.
    pub async fn exclusive_timeout(&self, timeout: Duration) -> Result<PooledConnection, Error> {
        let engine = &self.inner.exclusive.engine;
        let hooks = &self.inner.config.hooks;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut checkout = engine
                .get_timeout(left)
                .await
                .map_err(|e| acquire_error(&self.inner.config, e))?;
            if let Some(hook) = &hooks.before_acquire
                && !hook(&mut checkout).await
            {
                checkout.tracked().retire(CloseReason::Rejected);
                continue;
            }
            return Ok(PooledConnection {
                checkout,
                telemetry: Arc::clone(engine.telemetry()),
                broken: false,
                failover: Arc::clone(&self.inner.failover),
                after_release: hooks.after_release.clone(),
            });
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
    /// [`PoolError::Connect`] when Redis cannot be reached.
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

    /// Closes the pool: new commands and checkouts fail at once with [`PoolError::Closed`].
    pub fn close(&self) {
        self.inner.shared.close();
        self.inner.exclusive.engine.close();
    }
}

pub(crate) fn connect_error(config: &Config, source: Arc<redis::RedisError>) -> Error {
    if config.password.rotates() && is_refused_login(&source) {
        return PoolError::Credentials {
            pool: config.pool.name.clone(),
            target: config.target(),
            source_name: config.password.describe(),
            reason: source.to_string(),
            source,
        }
        .into();
    }
    let mut reason = source.to_string();
    if is_refused_login(&source) {
        // redis-rs reports WRONGPASS / NOAUTH as "Password authentication failed": say what
        // the server means and which variables hold the login.
        let p = &config.pool.prefix;
        reason = format!(
            "{reason}: Redis refused the login (WRONGPASS: a wrong password, or a user that does not exist or is disabled; NOAUTH: no password given); check the user and password in {p}_URL (or {p}_USERNAME and {p}_PASSWORD)"
        );
    } else if source.is_timeout() {
        // A server that accepts TCP and never answers: say which limit ran out.
        let limit = config
            .connect_timeout
            .unwrap_or(config.pool.acquire_timeout.min(Duration::from_secs(5)));
        reason = format!(
            "{reason}: no answer within {limit:?} (the connect timeout; raise {}_CONNECT_TIMEOUT if the server is just slow)",
            config.pool.prefix
        );
    }
    PoolError::Connect {
        pool: config.pool.name.clone(),
        backend: "Redis",
        target: config.target(),
        reason,
        source,
    }
    .into()
}

/// A command found no room among the `size` commands in flight (`P_MAX_IN_FLIGHT`) within
/// the acquire timeout.
pub(crate) fn in_flight_timeout(
    config: &Config,
    size: u32,
    waited: Duration,
    pending: usize,
) -> Error {
    PoolError::Timeout {
        pool: config.pool.name.clone(),
        waited,
        size,
        what: "room among the commands in flight".into(),
        pending: u32::try_from(pending).unwrap_or(u32::MAX),
        size_var: format!("{}_MAX_IN_FLIGHT", config.pool.prefix),
        timeout_var: config.timeout_var(),
    }
    .into()
}

fn acquire_error(config: &Config, e: AcquireError<redis::RedisError>) -> Error {
    match e {
        AcquireError::Timeout { waited, pending } => {
            let mut e = PoolError::timeout(&config.pool, waited, pending, "exclusive connection");
            if let PoolError::Timeout { pool, .. } = &mut e {
                pool.push_str("_exclusive");
            }
            e.into()
        }
        AcquireError::Connect(source) => connect_error(config, source),
        _ => PoolError::closed(&config.pool.name).into(),
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
            return Err(PoolError::closed(&self.config.pool.name).into());
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
                return Err(PoolError::closed(&self.config.pool.name).into());
            }
        };
        // The command, or the socket found dead while it waits: a command the connection
        // task never saw gets no answer from it (see `shared::Life`).
        let result = tokio::select! {
            biased;
            r = f(lease.conn.clone()) => r,
            () = lease.life.ended() => Err(crate::shared::ended_error()),
        };
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
        in_flight_timeout(
            &self.config,
            self.telemetry.config().ceiling(),
            waited,
            pending,
        )
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

impl MonitoredPool for Inner {
    const PING: &'static str = "PING";

    fn pool_config(&self) -> &poolkit_core::PoolConfig {
        &self.config.pool
    }
    fn stats(&self) -> PoolStats {
        Inner::stats(self)
    }
    fn add_alerts(&self, stats: &PoolStats, h: &mut Health) {
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
    }
    fn ping_backend(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            Inner::ping(self)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

impl MonitoredPool for Exclusive {
    const PING: &'static str = "PING";

    fn pool_config(&self) -> &poolkit_core::PoolConfig {
        self.engine.telemetry().config()
    }
    fn stats(&self) -> PoolStats {
        self.engine.telemetry().stats()
    }
    fn ping_backend(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut conn = self
                .engine
                .get()
                .await
                .map_err(|e| acquire_error(&self.config, e).to_string())?;
            ping(&mut conn).await
        })
    }
    /// `PING` on an idle connection taken with the engine's `try_get` (never queued).
    fn ping_idle(&self) -> Option<BoxFuture<'_, Result<(), String>>> {
        let mut conn = self.engine.try_get()?;
        Some(Box::pin(async move { ping(&mut conn).await }))
    }
}

async fn ping(conn: &mut MultiplexedConnection) -> Result<(), String> {
    redis::cmd("PING")
        .query_async::<()>(conn)
        .await
        .map_err(|e| e.to_string())
}
