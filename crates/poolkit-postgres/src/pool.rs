//! The PostgreSQL pool: tokio-postgres clients in the poolkit engine.

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use poolkit_core::engine::{AcquireError, Checkout, Engine};
use poolkit_core::{
    Backend, BoxFuture, Health, Monitored, MonitoredPool, PoolError, PoolStats, Telemetry,
};

use crate::client::QueryCtx;
use crate::config::{Config, DEFAULT_PREFIX};
use crate::connect::ConnectError;
use crate::error::{Error, chain};
use crate::manager::Manager;
use crate::pooler::{Pooler, SessionWarnings};
use crate::statement::ShapeCache;
use crate::tls::{MakeRustls, SslMode};
use crate::transaction::{Transaction, TransactionBuilder};

/// A pool of PostgreSQL connections. Cheap to clone (clones share the pool).
///
/// Callers are served first come, first served; [`Pool::get`] waits at most the acquire
/// timeout (`P_POOL_TIMEOUT`) in total. The pool joins the process-wide registry of
/// [`poolkit_core::pools`] when built.
#[derive(Clone)]
pub struct Pool {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine<Manager>,
    config: Config,
    pub(crate) ctx: Arc<QueryCtx>,
    /// The shared connections, started at the first statement on the pool (`None`
    /// inside when `P_SHARED_CONNECTIONS=0` or the ceiling leaves no room).
    shared: std::sync::OnceLock<Option<Arc<crate::shared::Shared>>>,
    /// Weak self, for the shared side's controller.
    me: std::sync::OnceLock<std::sync::Weak<Inner>>,
    credentials: Arc<poolkit_core::Credentials>,
    replicas: Arc<crate::replicas::Replicas>,
    #[cfg(feature = "fleet")]
    fleet: Option<Arc<crate::fleet::Fleet>>,
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
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// A checked-out connection: derefs to [`tokio_postgres::Client`]. Dropping it returns
/// the connection to the pool.
pub struct PooledConnection {
    /// `None` only once detached.
    checkout: Option<Checkout<Manager>>,
    after_release: Option<crate::hooks::AfterRelease>,
    ctx: Arc<QueryCtx>,
    /// The pool generation the connection belongs to (for a failover seen on it).
    generation: u64,
}

impl fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.checkout, f)
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        if let (Some(hook), Some(checkout)) = (&self.after_release, &mut self.checkout)
            && !hook(checkout)
        {
            checkout
                .tracked()
                .retire(poolkit_core::metrics::CloseReason::Rejected);
        }
    }
}

impl Deref for PooledConnection {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &tokio_postgres::Client {
        self.co()
    }
}

impl DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut tokio_postgres::Client {
        self.co_mut()
    }
}

crate::client::dialect!(PooledConnection);

impl PooledConnection {
    fn co(&self) -> &Checkout<Manager> {
        self.checkout.as_ref().unwrap_or_else(|| detached())
    }

    fn co_mut(&mut self) -> &mut Checkout<Manager> {
        self.checkout.as_mut().unwrap_or_else(|| detached())
    }

    fn parts(&self) -> (&tokio_postgres::Client, bool, &QueryCtx) {
        (self.co(), false, &self.ctx)
    }

    /// Takes the connection out of the pool (sqlx's `detach`, deadpool's `Object::take`):
    /// the pool forgets it, frees its place (opening another when a caller needs one) and
    /// counts it as `closed{reason="detached"}`. The client is yours; dropping it closes
    /// the connection.
    #[must_use]
    pub fn detach(mut self) -> tokio_postgres::Client {
        self.checkout.take().unwrap_or_else(|| detached()).detach()
    }

    /// Notes a statement's outcome: an error that says the server moved retires the pool.
    fn seen<T>(&self, r: &Result<T, tokio_postgres::Error>) {
        if let Err(e) = r {
            self.ctx.failover.seen(e, self.generation);
        }
    }

    /// Starts a transaction, like `tokio_postgres::Client::transaction`; its queries take
    /// the same shapes as the connection's and follow the pooler the same way.
    ///
    /// # Errors
    /// The server's error.
    pub async fn transaction(&mut self) -> Result<Transaction<'_>, tokio_postgres::Error> {
        let ctx = &*self.ctx;
        let generation = self.generation;
        let client: &mut tokio_postgres::Client =
            self.checkout.as_mut().unwrap_or_else(|| detached());
        let begun = client.transaction().await;
        if let Err(e) = &begun {
            ctx.failover.seen(e, generation);
        }
        Ok(Transaction::new(begun?, ctx, generation))
    }

    /// A transaction with options, like `tokio_postgres::Client::build_transaction`.
    pub fn build_transaction(&mut self) -> TransactionBuilder<'_> {
        let ctx = &*self.ctx;
        let generation = self.generation;
        let client: &mut tokio_postgres::Client =
            self.checkout.as_mut().unwrap_or_else(|| detached());
        TransactionBuilder::new(client.build_transaction(), ctx, generation)
    }

    /// Closes this connection instead of returning it to the pool.
    pub fn retire(&mut self, reason: poolkit_core::metrics::CloseReason) {
        self.co_mut().tracked().retire(reason);
    }

    /// The pooler mode this connection's queries follow.
    #[must_use]
    pub fn pooler(&self) -> Pooler {
        self.ctx.pooler.get()
    }

    /// How many times this connection has been checked out, this time included.
    #[must_use]
    pub fn uses(&mut self) -> u64 {
        self.co_mut().tracked().uses()
    }

    /// How old the connection is.
    #[must_use]
    pub fn age(&mut self) -> Duration {
        self.co_mut().tracked().age()
    }
}

/// Builds a [`Pool`]; every setter overrides one field of [`Config`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Builder {
    config: Config,
}

impl Builder {
    poolkit_core::pool_setters!(config.pool);
    poolkit_core::connect_setters!(config);
    poolkit_core::hook_setters!(config.hooks, tokio_postgres::Client, tokio_postgres::Error);

    /// The connection URL (also sets the pooler mode it implies: see [`Config::pooler`]).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = url.into().into();
        self.config.pooler = Pooler::None;
        self.config = self.config.detect_pooler().read_session_attrs();
        if let Some(mode) = crate::config::url_param_pub(self.config.url.expose(), "sslmode")
            .and_then(|m| SslMode::parse(&m))
        {
            self.config.ssl_mode = mode;
        }
        if let Some(path) = crate::config::url_param_pub(self.config.url.expose(), "sslrootcert") {
            self.config.ssl_root_cert = Some(path.into());
        }
        self
    }

    /// libpq's `sslmode` (overrides the URL's).
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.config.ssl_mode = mode;
        self
    }

    /// The root certificate(s) to verify the server with.
    pub fn ssl_root_cert(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.ssl_root_cert = Some(path.into());
        self
    }

    /// The server-side pooler in front of PostgreSQL.
    pub fn pooler(mut self, pooler: Pooler) -> Self {
        self.config.pooler = pooler;
        self
    }

    /// `application_name` sent to the server.
    pub fn application_name(mut self, name: &str) -> Self {
        self.config.application_name = name.to_owned();
        self
    }

    /// How many shared connections carry statements run on the pool itself
    /// (`P_SHARED_CONNECTIONS`: a number, `auto`, or `0` for none).
    pub fn shared_connections(mut self, n: crate::SharedConnections) -> Self {
        self.config.shared = n;
        self
    }

    /// How long every shared connection may be stalled before statements spill to an
    /// exclusive checkout (`P_SHARED_SPILL`).
    pub fn shared_spill(mut self, d: Duration) -> Self {
        self.config.shared_spill = d;
        self
    }

    /// Server-side statement timeout.
    pub fn statement_timeout(mut self, d: Option<Duration>) -> Self {
        self.config.statement_timeout = d;
        self
    }

    /// libpq's `target_session_attrs` (overrides the URL's): which kind of server the URL's
    /// hosts are tried for.
    pub fn target_session_attrs(mut self, attrs: crate::SessionAttrs) -> Self {
        self.config.target_session_attrs = attrs;
        self
    }

    /// Starts over from `config` (such as `Config::from_env("DATABASE")?`): setters called
    /// afterwards win over it, the same order as in every adapter's builder.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The configuration as built so far.
    #[must_use]
    pub fn current(&self) -> &Config {
        &self.config
    }

    /// Validates the configuration, opens `min_idle` connections and registers the pool.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings; [`PoolError::Connect`] (with the server's
    /// reason) or [`PoolError::Timeout`] when the warm-up connections cannot be opened
    /// within the acquire timeout.
    pub async fn build(self) -> Result<Pool, Error> {
        Pool::new(self.config).await
    }
}

impl Pool {
    /// A builder with PostgreSQL defaults and no URL yet.
    pub fn builder() -> Builder {
        Builder {
            config: Config::new(""),
        }
    }

    /// A pool configured from `DATABASE_URL` and the `DATABASE_*` variables (plus
    /// `MAX_POOL_SIZE` and `POOL_WARMUP_SIZE`).
    ///
    /// # Errors
    /// As [`Config::from_env`] and [`Pool::new`].
    pub async fn from_env() -> Result<Self, Error> {
        Self::new(Config::from_env(DEFAULT_PREFIX)?).await
    }

    /// Builds a pool from a configuration (see [`Builder::build`]).
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub async fn new(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let credentials = Arc::new(poolkit_core::Credentials::new(config.password.clone()));
        let failover = crate::failover::Failover::new(
            &config.pool.name,
            config.replica || config.target_session_attrs.wants_standby(),
        );
        let mut manager = Manager::new(config.pg_config()?, &config.pool.name)
            .with_session_attrs(config.target_session_attrs)
            .with_credentials(Arc::clone(&credentials))
            .with_resolver(config.resolver.clone())
            .with_failover(Arc::clone(&failover))
            .with_after_connect(config.hooks.after_connect.clone());
        if config.ssl_mode != SslMode::Disable {
            let root =
                match &config.ssl_root_cert {
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        poolkit_core::ConfigError::Invalid {
                            var: format!("{}_SSLROOTCERT", config.pool.prefix),
                            value: path.display().to_string(),
                            expected: format!("a readable PEM file ({e})"),
                        }
                    })?),
                    None => None,
                };
            let tls =
                crate::tls::client_config(config.ssl_mode, root.as_deref()).map_err(|why| {
                    poolkit_core::ConfigError::Invalid {
                        var: format!("{}_SSLMODE", config.pool.prefix),
                        value: config.ssl_mode.to_string(),
                        expected: why,
                    }
                })?;
            manager = manager.with_tls(MakeRustls::new(tls));
        }
        #[cfg(feature = "fleet")]
        let (fleet, cap) = match &config.fleet {
            Some(fc) => {
                let (fleet, grant) = crate::fleet::join(&config, fc, &manager).await?;
                (Some(fleet), Some(grant))
            }
            None => (None, None),
        };
        #[cfg(not(feature = "fleet"))]
        let cap = match &config.fleet {
            Some(_) => {
                return Err(Error::Config(poolkit_core::ConfigError::Invalid {
                    var: format!("{}_FLEET_BUDGET", config.pool.prefix),
                    value: "set".into(),
                    expected: "a poolkit-postgres built with the `fleet` feature (it holds the leases in Redis)".into(),
                }));
            }
            None => None,
        };
        let engine = Engine::build_with(manager, config.pool.clone(), cap, crate::fail_fast::fatal)
            .await
            .map_err(|e| acquire_error(&config, e))?;
        let ctx = Arc::new(QueryCtx {
            pool: config.pool.name.clone(),
            pooler: crate::pooler::PoolerMode::new(
                config.pooler,
                format!("{}_POOLER", config.pool.prefix),
            ),
            warnings: SessionWarnings::default(),
            queries: poolkit_core::QueryStats::new(
                &config.pool.name,
                Backend::Postgres,
                config.pool.slow_query,
            ),
            shapes: ShapeCache::default(),
            failover: Arc::clone(&failover),
        });
        let replicas = if config.read_urls.is_empty() {
            Arc::new(crate::replicas::Replicas::default())
        } else {
            crate::replicas::build(&config).await?
        };
        let inner = Arc::new(Inner {
            engine,
            config,
            ctx,
            shared: std::sync::OnceLock::new(),
            me: std::sync::OnceLock::new(),
            credentials,
            replicas,
            #[cfg(feature = "fleet")]
            fleet,
        });
        let _ = inner.me.set(Arc::downgrade(&inner));
        failover.attach(&inner);
        #[cfg(feature = "fleet")]
        if let Some(fleet) = &inner.fleet {
            fleet.start(Arc::downgrade(&inner));
        }
        let monitored: Arc<dyn Monitored> = inner.clone();
        poolkit_core::register(&monitored);
        tracing::debug!(pool = %inner.config.pool.name, target = %inner.config.target(), "pool built");
        Ok(Self { inner })
    }

    /// Takes a connection, waiting first come, first served.
    ///
    /// # Errors
    /// [`PoolError::Timeout`] when none came free within the acquire timeout;
    /// [`PoolError::Connect`] when the wait ended because the server could not be reached;
    /// [`PoolError::Closed`] after [`Pool::close`].
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<PooledConnection, Error>> + Send + '_ {
        self.get_timeout(self.inner.config.pool.acquire_timeout)
    }

    /// [`Pool::get`] waiting at most `timeout` instead of the acquire timeout
    /// (`P_POOL_TIMEOUT`), for one call (deadpool's `timeout_get`).
    ///
    /// # Errors
    /// As [`Pool::get`]; [`PoolError::Timeout`] after `timeout`.
    #[track_caller]
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<PooledConnection, Error>> + Send + '_ {
        // Not `async fn` so that `#[track_caller]` reaches the caller's line for leak
        // reports (`DATABASE_LEAK_THRESHOLD`).
        let caller = std::panic::Location::caller();
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let mut checkout = self
                    .inner
                    .engine
                    .get_with(left, caller)
                    .await
                    .map_err(|e| acquire_error(&self.inner.config, e))?;
                if let Some(hook) = &self.inner.config.hooks.before_acquire
                    && !hook(&mut checkout).await
                {
                    checkout
                        .tracked()
                        .retire(poolkit_core::metrics::CloseReason::Rejected);
                    continue;
                }
                return Ok(PooledConnection {
                    generation: checkout.generation(),
                    checkout: Some(checkout),
                    after_release: self.inner.config.hooks.after_release.clone(),
                    ctx: Arc::clone(&self.inner.ctx),
                });
            }
        }
    }
    /// A snapshot of the pool.
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        Monitored::stats(&*self.inner)
    }

    /// The fleet budget as this instance sees it (`None` without `P_FLEET_BUDGET`).
    #[cfg(feature = "fleet")]
    #[cfg_attr(docsrs, doc(cfg(feature = "fleet")))]
    #[must_use]
    pub fn fleet(&self) -> Option<crate::fleet::FleetStatus> {
        self.inner.fleet.as_ref().map(|f| f.status())
    }

    /// Health from the current snapshot (see [`Pool::check`] for a live answer).
    #[must_use]
    pub fn health(&self) -> Health {
        self.inner.health()
    }

    /// Health with a live `SELECT 1`: `down` when the server does not answer.
    pub async fn check(&self) -> Health {
        poolkit_core::check(&*self.inner).await
    }

    /// Runs `SELECT 1` on a pooled connection, within the acquire timeout (at most 5 s).
    ///
    /// # Errors
    /// Any error of [`Pool::get`], or the query's.
    pub async fn ping(&self) -> Result<(), Error> {
        self.inner.ping().await
    }

    pub(crate) fn replicas(&self) -> &crate::replicas::Replicas {
        &self.inner.replicas
    }

    /// The pool's configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The pool's telemetry (counters and metric handles).
    #[must_use]
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        self.inner.engine.telemetry()
    }

    /// Stops handing out connections: waiting and later callers get [`PoolError::Closed`] at
    /// once; connections in use stay usable and are closed when returned.
    pub fn close(&self) {
        if let Some(Some(shared)) = self.inner.shared.get() {
            shared.mux.close();
        }
        self.inner.engine.close();
    }

    /// Changes the pool's steady size and burst ceiling while it runs (see
    /// [`Engine::resize`]): waiters are served at once after a raise; after a cut, idle
    /// connections above the new ceiling close now and busy ones when returned.
    ///
    /// # Errors
    /// [`Error::Config`] with the same message the environment variables would give.
    pub fn resize(&self, pool_size: u32, max_size: Option<u32>) -> Result<(), Error> {
        Ok(self.inner.engine.resize(pool_size, max_size)?)
    }

    /// Closes the pool and waits until every checked-out connection is returned and
    /// every connection is closed, at most `deadline`. Returns whether all closed in time
    /// (for a graceful shutdown: stop accepting requests, then drain).
    pub async fn drain(&self, deadline: Duration) -> bool {
        let start = tokio::time::Instant::now();
        if let Some(Some(shared)) = self.inner.shared.get() {
            shared.mux.close();
            while shared.mux.open() > 0 && start.elapsed() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        self.inner
            .engine
            .drain(deadline.saturating_sub(start.elapsed()))
            .await
    }

    /// The shared connections now: live, in flight, how many the pool keeps; `None` when statements
    /// on the pool check out (`P_SHARED_CONNECTIONS=0`) or none ran yet.
    #[must_use]
    pub fn shared_connections(&self) -> Option<SharedStatus> {
        let shared = self.inner.shared.get()?.as_ref()?;
        Some(SharedStatus {
            open: shared.mux.open(),
            live: shared.mux.sockets(),
            size: shared.mux.wanted_sockets(),
            in_flight: shared.mux.in_flight(),
            pending: shared.mux.pending(),
            statements: shared.statements.load(std::sync::atomic::Ordering::Relaxed),
            spilled: shared.spilled(),
            reconnects: shared.mux.reconnects(),
        })
    }
}

/// The shared connections of a pool at one moment (see [`Pool::shared_connections`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedStatus {
    /// Server connections held: live plus draining.
    pub open: usize,
    /// Connections taking statements.
    pub live: usize,
    /// How many the pool keeps (fixed, or the auto-sizer's choice).
    pub size: usize,
    /// Statements in flight on them.
    pub in_flight: usize,
    /// Callers waiting for room.
    pub pending: usize,
    /// Statements run on them so far.
    pub statements: u64,
    /// Statements on the pool sent to an exclusive checkout: known to be slow, every
    /// shared connection stalled behind a slow statement (`P_SHARED_SPILL`), or waiting
    /// their turn behind slow statements queued for a checkout.
    pub spilled: u64,
    /// Connections reopened after one broke or was retired.
    pub reconnects: u64,
}

impl Inner {
    /// Whether statements on the pool use shared connections (whether or not started).
    pub(crate) fn shared_enabled(&self) -> bool {
        self.config
            .shared
            .range(self.config.pool.ceiling())
            .is_some()
    }

    /// The shared side if it was started (`Some(None)`: off).
    pub(crate) fn shared_started(&self) -> Option<&Option<Arc<crate::shared::Shared>>> {
        self.shared.get()
    }

    /// The shared side, started on first use. `None` (statements check out) when shared
    /// connections are off, when the fleet share is 0 (nothing may be opened yet), or after
    /// the fleet closed the shared side (a share of 0 while it ran).
    pub(crate) fn shared(&self) -> Option<&Arc<crate::shared::Shared>> {
        #[cfg(feature = "fleet")]
        if self.shared.get().is_none() && self.fleet.as_ref().is_some_and(|f| f.status().share == 0)
        {
            return None;
        }
        self.shared
            .get_or_init(|| {
                #[cfg(feature = "fleet")]
                let limit = self.fleet.as_ref().map(|f| f.status().share);
                #[cfg(not(feature = "fleet"))]
                let limit = None;
                let me = self.me.get().cloned().unwrap_or_default();
                let shared = crate::shared::Shared::start(
                    self.engine.manager().clone(),
                    &self.config,
                    Arc::clone(self.engine.telemetry()),
                    limit,
                    Box::new(move |held| me.upgrade().is_none_or(|inner| inner.fits(held))),
                )?;
                self.reserve_shared(shared.mux.wanted_sockets());
                if shared.auto {
                    self.start_shared_auto(&shared);
                }
                Some(shared)
            })
            .as_ref()
            .filter(|s| !s.mux.is_closed() || self.engine.is_closed())
    }

    /// Starts the controller of `P_SHARED_CONNECTIONS=auto` (see `shared_auto::start_auto`):
    /// its ceiling is the range's top under the fleet share, and each change caps the
    /// checkouts for the shared connections (one ceiling, one fleet share for both).
    fn start_shared_auto(&self, shared: &Arc<crate::shared::Shared>) {
        let most = u32::try_from(shared.most).unwrap_or(u32::MAX);
        let me = self.me.get().cloned().unwrap_or_default();
        let ceiling = {
            let me = me.clone();
            move || {
                // One checkout left at least (statements learn their shape on one).
                me.upgrade().map_or(most, |inner| {
                    most.min(inner.share().saturating_sub(1).max(1))
                })
            }
        };
        let waiting = {
            let me = me.clone();
            move || {
                me.upgrade()
                    .is_some_and(|inner| inner.engine.counts().pending > 0)
            }
        };
        crate::shared_auto::start_auto(
            shared,
            crate::shared_auto::AutoHooks {
                ceiling: Box::new(ceiling),
                checkouts_waiting: Box::new(waiting),
                on_resize: Box::new(move |n| {
                    if let Some(inner) = me.upgrade() {
                        inner.reserve_shared(n);
                    }
                }),
            },
            self.config.pool.auto_interval,
            self.config.pool.idle_timeout,
        );
    }

    /// The pool's ceiling, or its fleet share when it is a fleet member.
    fn share(&self) -> u32 {
        #[cfg(feature = "fleet")]
        let base = self
            .fleet
            .as_ref()
            .map_or(self.config.pool.ceiling(), |f| f.status().share);
        #[cfg(not(feature = "fleet"))]
        let base = self.config.pool.ceiling();
        base
    }

    /// The server moved: every shared connection is retired too (each reconnects).
    pub(crate) fn retire_shared(&self) {
        if let Some(Some(s)) = self.shared.get() {
            s.mux
                .retire_all(poolkit_core::metrics::CloseReason::ServerMoved);
        }
    }

    /// The shared connections now, for the fleet share (see `crate::fleet::Fit`): with
    /// `Some(limit)`, first brought down to at most `limit` (the shared side is closed for
    /// good at 0, and statements check out from then on).
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub(crate) fn fit_shared(&self, limit: Option<u32>) -> u32 {
        let Some(Some(s)) = self.shared.get() else {
            return 0;
        };
        if let Some(limit) = limit {
            if limit == 0 && !s.mux.is_closed() {
                tracing::warn!(pool = %self.config.pool.name, "fleet share 0: closing the shared connections; statements check out from now on");
                s.mux.close();
            } else if limit > 0 && s.mux.wanted_sockets() > limit as usize {
                s.mux.set_sockets(limit as usize);
            }
        }
        let open = s.mux.open() + s.mux.connecting();
        let held = if s.mux.is_closed() {
            open
        } else {
            open.max(s.mux.wanted_sockets())
        };
        u32::try_from(held).unwrap_or(u32::MAX)
    }

    /// Whether `held` shared connections (open or opening) fit beside the exclusive ones
    /// open or opening, within the ceiling or the fleet share.
    ///
    /// A checkout the pool closed holds its server backend until its connection's task
    /// ends: it counts until then, or a shared connection opened in its place would put
    /// the server one over for a moment (seen in `pg_stat_activity` as the shared side's
    /// controller resizes).
    fn fits(&self, held: u32) -> bool {
        let c = self.engine.counts();
        let exclusive = c
            .connecting
            .saturating_add(c.open.max(self.engine.manager().alive()));
        exclusive.saturating_add(held) <= self.share()
    }

    /// Caps the exclusive connections at the ceiling (or the fleet share) less the `n`
    /// shared ones; with a fleet share below `n`, the shared ones come down to it first.
    fn reserve_shared(&self, n: usize) {
        #[cfg_attr(not(feature = "fleet"), allow(unused_mut))]
        let mut n = u32::try_from(n).unwrap_or(u32::MAX);
        #[cfg(feature = "fleet")]
        let base = match self.fleet.as_ref() {
            Some(f) => {
                let share = f.status().share;
                if self.shared.get().is_some() {
                    n = self.fit_shared(Some(share));
                }
                share
            }
            None => self.config.pool.ceiling(),
        };
        #[cfg(not(feature = "fleet"))]
        let base = self.config.pool.ceiling();
        self.engine.cap(Some(base.saturating_sub(n)));
    }
}

impl Inner {
    async fn ping(&self) -> Result<(), Error> {
        let deadline = self.config.pool.acquire_timeout.min(Duration::from_secs(5));
        let run = async {
            let conn = self
                .engine
                .get()
                .await
                .map_err(|e| acquire_error(&self.config, e))?;
            conn.simple_query("SELECT 1").await?;
            Ok::<(), Error>(())
        };
        match tokio::time::timeout(deadline, run).await {
            Ok(r) => r,
            Err(_) => Err(acquire_error(
                &self.config,
                AcquireError::Timeout {
                    waited: deadline,
                    pending: self.engine.telemetry().pending(),
                },
            )),
        }
    }
}

/// The driver's reason; for a connect that ran out of time (a server that accepts TCP and
/// never answers), the limit and the variable that sets it.
fn connect_reason(config: &Config, e: &ConnectError) -> String {
    let reason = chain(e);
    if !matches!(e, ConnectError::Timeout(_)) {
        return reason;
    }
    format!(
        "{reason} (the connect timeout; raise {}_CONNECT_TIMEOUT if the server is just slow)",
        config.pool.prefix
    )
}

/// The error for a failed connect: [`PoolError::Credentials`] when the password's rotating
/// source failed or the server refused it, else [`PoolError::Connect`].
pub(crate) fn connect_error(config: &Config, source: Arc<ConnectError>) -> Error {
    let pool = config.pool.name.clone();
    let credentials = match &*source {
        ConnectError::Password(e) => Some(e.reason.clone()),
        e if e.is_auth() && config.password.rotates() => Some(chain(e)),
        _ => None,
    };
    match credentials {
        Some(reason) => PoolError::Credentials {
            pool,
            target: config.target(),
            source_name: config.password.describe(),
            reason,
            source,
        }
        .into(),
        None => PoolError::Connect {
            pool,
            backend: "PostgreSQL",
            target: config.target(),
            reason: connect_reason(config, &source),
            source,
        }
        .into(),
    }
}

fn acquire_error(config: &Config, e: AcquireError<ConnectError>) -> Error {
    let pool = config.pool.name.clone();
    match e {
        AcquireError::Timeout { waited, pending } => {
            PoolError::timeout(&config.pool, waited, pending, "connection").into()
        }
        AcquireError::Connect(source) => connect_error(config, source),
        _ => PoolError::closed(&pool).into(),
    }
}

impl Inner {
    /// The most connections the server grants this pool: the lowest of the server's
    /// `max_connections` less reserved (not behind a pooler, which multiplexes),
    /// `P_MAX_CONNECTIONS`, and the fleet share.
    fn server_cap(&self) -> Option<poolkit_core::advice::ServerCap> {
        use poolkit_core::advice::ServerCap;
        let mut caps = Vec::new();
        if self.ctx.pooler.get() == Pooler::None
            && let Some((max, reserved)) = self.engine.manager().server_limit()
            && max > 0
        {
            caps.push(ServerCap::new(
                max.saturating_sub(reserved),
                format!("the server's max_connections {max} − {reserved} reserved"),
            ));
        }
        if let Some(limit) = &self.config.max_connections {
            caps.push(ServerCap::new(limit.value, limit.source.clone()));
        }
        #[cfg(feature = "fleet")]
        if let Some(fleet) = &self.fleet {
            let status = fleet.status();
            caps.push(ServerCap::new(
                status.share,
                format!(
                    "this instance's fleet share ({}_FLEET_BUDGET {} over {} instances)",
                    self.config.pool.prefix, status.budget, status.instances
                ),
            ));
        }
        ServerCap::lowest(caps)
    }
}

impl MonitoredPool for Inner {
    const PING: &'static str = "SELECT 1";

    fn pool_config(&self) -> &poolkit_core::PoolConfig {
        &self.config.pool
    }

    fn stats(&self) -> PoolStats {
        let mut stats = self.engine.telemetry().stats();
        stats.query = self.ctx.queries.timing();
        stats.pooler = Some(self.ctx.pooler.get().as_str().to_owned());
        // Shared connections count in the telemetry's gauges, which the multiplexed core
        // answers for: the sockets as open connections, the statements in flight on them as
        // used, callers waiting for room as pending (as Redis shared).
        stats.server_cap = self.server_cap();
        stats
    }

    fn add_alerts(&self, stats: &PoolStats, h: &mut Health) {
        if let Some(alert) = self.credentials.alert(&self.config.pool.name, stats.open) {
            h.add_alert(alert, poolkit_core::HealthStatus::Warning, false);
        }
        if let Some(alert) = self.ctx.failover.alert() {
            h.alerts.push(alert);
        }
        #[cfg(feature = "fleet")]
        if let Some(fleet) = &self.fleet {
            crate::fleet::add_health(h, &fleet.status(), &self.config);
        }
    }

    fn ping_backend(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { Inner::ping(self).await.map_err(|e| e.to_string()) })
    }

    /// `SELECT 1` on an idle connection taken with the engine's `try_get` (never queued).
    fn ping_idle(&self) -> Option<BoxFuture<'_, Result<(), String>>> {
        let conn = self.engine.try_get()?;
        Some(Box::pin(async move {
            conn.simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }))
    }
}

#[allow(clippy::panic)]
fn detached() -> ! {
    panic!("poolkit: PooledConnection used after detach()")
}
