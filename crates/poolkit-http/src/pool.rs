//! `Pool`: per-origin connection pools behind FIFO gates, with one `Telemetry`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use poolkit_core::engine::Engine;
use poolkit_core::metrics::ErrorKind;
use poolkit_core::mux::{MuxConfig, MuxPool};
use poolkit_core::{
    BoxFuture, Health, Monitored, MonitoredPool, PoolError, PoolStats, Secret, Sizing, Telemetry,
};

use crate::config::{Config, HttpVersion};
use crate::connect::{Connector, Dial, Resolve, Resolver};
use crate::h1;
use crate::h2::{H2Mux, H2Pool};
use crate::host::{Host, Proto};
use crate::request::{IntoUrl, RequestBuilder};
use crate::url::Origin;
use crate::{Error, Response};

/// A pool of keep-alive HTTP/1.1 and HTTP/2 connections, one sub-pool per origin.
///
/// Cheap to clone: clones share the connections. See the crate docs for the behaviour.
#[derive(Clone)]
pub struct Pool {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) connector: Arc<Connector>,
    pub(crate) headers: HeaderMap,
    hosts: Mutex<HashMap<Origin, Arc<Host>>>,
    /// Per-origin (steady size, ceiling), set at build and by [`Pool::resize`].
    sizes: Mutex<(u32, u32)>,
    closed: AtomicBool,
    sweeper_started: AtomicBool,
    /// Connection tasks that ended (the server closed the connection, it broke, or the
    /// pool closed it).
    pub(crate) tasks_ended: Arc<AtomicU64>,
    me: Weak<Shared>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.config.pool.name)
            .field("config", &self.config)
            .field("default_headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Pool`]: a config, default headers (secret ones marked sensitive) and extra
/// root certificates.
#[derive(Debug)]
#[must_use]
pub struct Builder {
    config: Config,
    headers: HeaderMap,
    error: Option<String>,
    resolver: Resolver,
}

impl Builder {
    poolkit_core::pool_setters!(config.pool);

    /// The base URL relative request paths resolve against (`P_URL`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.base_url = Some(url.into());
        self
    }

    /// TCP keep-alive idle time (`None` disables). Env: `P_TCP_KEEPALIVE`.
    pub fn tcp_keepalive(mut self, d: Option<Duration>) -> Self {
        self.config.tcp_keepalive = d;
        self
    }

    /// The configuration as built so far.
    #[must_use]
    pub fn current(&self) -> &Config {
        &self.config
    }

    /// Resolves host names with `resolver` instead of the system resolver, for every new
    /// connection (see [`Resolve`]). A closure `Fn(&str, u16) -> io::Result<Vec<SocketAddr>>`
    /// is a resolver.
    pub fn resolver(mut self, resolver: impl Resolve) -> Self {
        self.resolver = Resolver(Some(Arc::new(resolver)));
        self
    }

    /// Starts over from `config` (such as `Config::from_env("SUPABASE")?`): setters called
    /// afterwards win over it, the same order as in every adapter's builder.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sends `name: value` with every request (a request's own header wins).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.insert(name, value, false);
        self
    }

    /// Sends a secret header with every request; its value never appears in `Debug`.
    pub fn secret_header(mut self, name: &str, value: &Secret) -> Self {
        self.insert(name, value.expose(), true);
        self
    }

    fn insert(&mut self, name: &str, value: &str, sensitive: bool) {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(sensitive);
                self.headers.insert(n, v);
            }
            _ => {
                self.error = Some(format!(
                    "header {name:?} has an invalid name or value (value not shown)"
                ));
            }
        }
    }

    /// Trusts an extra root certificate (DER), for private CAs and test servers.
    pub fn root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.config.root_certificates.push(der.into());
        self
    }

    /// Validates the config and builds the pool; the pool joins the registry.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config; [`Error::InvalidRequest`] for a bad
    /// default header or root certificate.
    pub fn build(self) -> Result<Pool, Error> {
        self.config.validate()?;
        let name = self.config.pool.name.clone();
        if let Some(reason) = self.error {
            return Err(Error::InvalidRequest { pool: name, reason });
        }
        let connector = Connector::new(&self.config, self.resolver)
            .map_err(|reason| Error::InvalidRequest { pool: name, reason })?;
        let telemetry = Telemetry::new(self.config.pool.clone());
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            telemetry,
            connector: Arc::new(connector),
            headers: self.headers,
            hosts: Mutex::new(HashMap::new()),
            sizes: Mutex::new((self.config.pool.pool_size, self.config.pool.ceiling())),
            closed: AtomicBool::new(false),
            sweeper_started: AtomicBool::new(false),
            tasks_ended: Arc::new(AtomicU64::new(0)),
            config: self.config,
        });
        let monitored: Arc<dyn Monitored> = shared.clone();
        poolkit_core::register(&monitored);
        Ok(Pool { shared })
    }
}

impl Pool {
    /// A builder starting from `Config::new("http")`.
    pub fn builder() -> Builder {
        Builder {
            config: Config::new("http"),
            headers: HeaderMap::new(),
            error: None,
            resolver: Resolver::default(),
        }
    }

    /// A pool with `config` and no default headers.
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn new(config: Config) -> Result<Self, Error> {
        Self::builder().config(config).build()
    }

    /// A pool configured from `HTTP_URL` and the `HTTP_*` variables, as every adapter's
    /// `Pool::from_env()` reads its default prefix; for another prefix,
    /// `Pool::new(Config::from_env("BILLING")?)`. Unlike PostgreSQL and Redis, building
    /// opens no connection, so this is not `async`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable for a bad value.
    pub fn from_env() -> Result<Self, Error> {
        Self::new(Config::from_env(crate::config::DEFAULT_PREFIX)?)
    }

    /// A request with `method` to `url` (absolute, or relative to the base URL).
    pub fn request<U: IntoUrl>(&self, method: Method, url: U) -> RequestBuilder {
        RequestBuilder::new(self.clone(), method, url.into_url_string())
    }

    /// A `GET` request.
    pub fn get<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// A `POST` request.
    pub fn post<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// A `PUT` request.
    pub fn put<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// A `PATCH` request.
    pub fn patch<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::PATCH, url)
    }

    /// A `DELETE` request.
    pub fn delete<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }

    /// The pool's config.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The pool's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.config.pool.name
    }

    /// A snapshot: open sockets, requests in flight (`used`), waiters, new vs reused.
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        self.shared.snapshot()
    }

    /// Health from the snapshot.
    #[must_use]
    pub fn health(&self) -> Health {
        Monitored::health(&*self.shared)
    }

    /// Changes the per-origin steady size and ceiling while the pool runs: waiters are
    /// served at once after a raise; after a cut, connections above the new ceiling close
    /// as their requests end, never one in use.
    ///
    /// # Errors
    /// [`Error::Config`] with the same message the environment variables would give.
    pub fn resize(&self, pool_size: u32, max_size: Option<u32>) -> Result<(), Error> {
        let mut c = self.shared.config.pool.clone();
        c.pool_size = pool_size;
        c.max_size = max_size;
        c.validate()?;
        let ceiling = c.ceiling();
        let mut hosts = self
            .shared
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *self
            .shared
            .sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (pool_size, ceiling);
        let steady = self.shared.steady(pool_size);
        for host in hosts.values_mut() {
            if let Some(engine) = &host.h1 {
                engine.resize(steady, Some(ceiling))?;
            }
        }
        self.shared.count_origins(hosts.len());
        drop(hosts);
        tracing::info!(pool = %c.name, pool_size, max_size = ceiling, "pool resized");
        Ok(())
    }

    /// Figures per origin (each origin has its own ceiling), sorted by origin.
    #[must_use]
    pub fn origins(&self) -> Vec<OriginStats> {
        self.shared.origins()
    }

    /// Connection tasks that have ended so far (the server closed the connection, it
    /// broke, or the pool closed it): for tests that must wait for one.
    #[doc(hidden)]
    #[must_use]
    pub fn tasks_ended(&self) -> u64 {
        self.shared.tasks_ended.load(Relaxed)
    }

    /// Retries so far: requests sent again because their connection turned out closed or the server refused them unprocessed.
    #[must_use]
    pub fn retries(&self) -> u64 {
        self.shared.telemetry.retries()
    }

    /// Closes the pool: idle connections close now, busy ones when their request ends,
    /// and new requests fail with [`PoolError::Closed`](crate::PoolError::Closed).
    pub fn close(&self) {
        self.shared.closed.store(true, Relaxed);
        for host in self.shared.hosts() {
            if let Some(engine) = &host.h1 {
                engine.close();
            }
            if let Some(pool) = host.h2.get() {
                pool.close();
            }
        }
    }

    /// Whether [`Pool::close`] was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Relaxed)
    }
}

impl Shared {
    fn hosts(&self) -> Vec<Arc<Host>> {
        self.hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// The sub-pool for `origin`, made on first use.
    pub(crate) fn host(self: &Arc<Self>, origin: &Origin) -> Arc<Host> {
        self.start_sweeper();
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = hosts.get(origin) {
            return h.clone();
        }
        let proto = match (self.config.http_version, origin.tls) {
            (HttpVersion::Http2, _) => Some(Proto::H2),
            (HttpVersion::Http1, _) | (HttpVersion::Auto, false) => Some(Proto::H1),
            (HttpVersion::Auto, true) => None,
        };
        let (pool_size, ceiling) = self.sizes();
        let h1 = (proto != Some(Proto::H2)).then(|| {
            let manager = h1::Manager::new(self.dial(origin));
            let mut config = self.config.pool.clone();
            config.sizing = Sizing::Fixed;
            config.pool_size = self.steady(pool_size);
            config.max_size = Some(ceiling);
            Engine::with_telemetry(manager, config, Arc::clone(&self.telemetry))
        });
        let host = Arc::new(Host::new(origin.clone(), h1, proto));
        if proto == Some(Proto::H2) {
            let _ = host.h2.set(self.h2_pool(self.h2_mux(origin)));
        }
        hosts.insert(origin.clone(), host.clone());
        self.count_origins(hosts.len());
        host
    }

    /// The pool's capacity is the per-origin ceiling times the origins in use, so the
    /// pool-level utilization (used / capacity) stays within 0..=1.
    fn count_origins(&self, n: usize) {
        let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        let (pool_size, ceiling) = self.sizes();
        self.telemetry
            .set_sizes(pool_size.saturating_mul(n), ceiling.saturating_mul(n));
    }

    /// The HTTP/1.1 engine's steady size for a pool size: connections above it close when
    /// returned with nobody waiting, so at most `P_MAX_KEEPALIVE` stay idle (at least 1).
    fn steady(&self, pool_size: u32) -> u32 {
        pool_size.min(self.config.max_keepalive).max(1)
    }

    /// The per-origin steady size and ceiling now (they change with [`Pool::resize`]).
    fn sizes(&self) -> (u32, u32) {
        let s = self.sizes.lock().unwrap_or_else(PoisonError::into_inner);
        *s
    }

    /// Forgets origins with nothing open, in use or waiting and no caller holding them, so
    /// the map stays bounded by the origins in use.
    fn forget_unused(&self) {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let before = hosts.len();
        // A host a caller holds (it took it under this lock) is about to be used: kept,
        // or its engine would close under the caller and the next request open anew.
        let idle_timeout = self.config.pool.idle_timeout;
        hosts.retain(|_, h| Arc::strong_count(h) > 1 || !h.is_unused(idle_timeout));
        if hosts.len() != before {
            self.count_origins(hosts.len());
        }
    }

    /// Per-origin figures: (origin, in use, open, waiting, utilization of its ceiling).
    pub(crate) fn origins(&self) -> Vec<OriginStats> {
        let h1_ceiling = self.sizes().1;
        let mut all: Vec<OriginStats> = self
            .hosts()
            .iter()
            .map(|h| {
                let (used, open, pending) = h.counts();
                #[allow(clippy::cast_precision_loss)]
                OriginStats {
                    origin: h.origin.to_string(),
                    used,
                    open,
                    pending,
                    utilization: used as f64 / h.ceiling(h1_ceiling).max(1) as f64,
                }
            })
            .collect();
        all.sort_by(|a, b| a.origin.cmp(&b.origin));
        all
    }

    /// Starts the task that forgets unused origins (once, inside the runtime): an HTTP/2
    /// origin's connection closes with it after `P_IDLE_TIMEOUT`. HTTP/1.1 connections are
    /// kept up by their engines, HTTP/2 connections by the multiplexed core.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.swap(true, Relaxed) {
            return;
        }
        let every = self
            .config
            .pool
            .idle_timeout
            .map_or(Duration::from_secs(1), |d| d / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                shared.forget_unused();
            }
        });
    }

    /// How `origin`'s connections are opened (HTTP/1.1 and HTTP/2 alike).
    fn dial(&self, origin: &Origin) -> Dial {
        Dial::new(
            Arc::clone(&self.connector),
            origin.clone(),
            self.config.connect_timeout,
            self.config.connect_timeout_var(),
            Arc::clone(&self.tasks_ended),
        )
    }

    /// An origin's HTTP/2 connector for the multiplexed core.
    pub(crate) fn h2_mux(&self, origin: &Origin) -> H2Mux {
        H2Mux::new(self.dial(origin))
    }

    /// Starts an origin's HTTP/2 pool: one connection carrying up to
    /// `P_HTTP2_MAX_STREAMS` requests, rotated after `P_MAX_LIFETIME` (with jitter).
    pub(crate) fn h2_pool(&self, mux: H2Mux) -> H2Pool {
        let streams = self.config.http2_max_streams as usize;
        let mut config = MuxConfig::new(&self.config.pool.name, 1);
        config.per_socket = streams;
        config.max_in_flight = streams;
        config.connect_timeout = self.config.connect_timeout;
        config.max_lifetime = self.config.pool.max_lifetime;
        MuxPool::start(mux, config, Some(Arc::clone(&self.telemetry)))
    }

    /// The telemetry's snapshot. Its gauges are read from their owners, the origins'
    /// HTTP/1.1 engines and HTTP/2 pools, each registered with the pool's telemetry as it
    /// starts ([`Engine::with_telemetry`], [`MuxPool::start`]): the same sums a scrape
    /// publishes, each connection counted once.
    fn snapshot(&self) -> PoolStats {
        self.telemetry.stats()
    }

    pub(crate) fn count_error(&self, kind: ErrorKind) {
        self.telemetry.error(kind);
    }

    pub(crate) fn timeout_error(&self, origin: &Origin, waited: Duration) -> Error {
        PoolError::timeout(
            &self.config.pool,
            waited,
            self.telemetry.pending(),
            format!("connection to {origin}"),
        )
        .into()
    }
}

impl MonitoredPool for Shared {
    const PING: &'static str = "GET on the base URL";

    fn pool_config(&self) -> &poolkit_core::PoolConfig {
        &self.config.pool
    }

    fn stats(&self) -> PoolStats {
        self.snapshot()
    }

    /// The busiest origin: each origin has its own ceiling, so that is where a pool runs
    /// out first.
    fn health_stats(&self) -> PoolStats {
        let mut stats = self.snapshot();
        if let Some(busiest) = self
            .origins()
            .into_iter()
            .max_by(|a, b| a.utilization.total_cmp(&b.utilization))
        {
            (stats.pool_size, stats.max_size) = self.sizes();
            stats.used = busiest.used;
            stats.pending = busiest.pending;
            stats.utilization = busiest.utilization;
        }
        stats
    }

    /// Sends `GET` to the base URL: any HTTP answer (even 404) means reachable.
    fn ping_backend(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let Some(base) = self.config.base_url.clone() else {
                return Ok(());
            };
            match self.me.upgrade() {
                Some(shared) => Pool { shared }
                    .get(&base)
                    .send()
                    .await
                    .map(|_: Response| ())
                    .map_err(|e| e.to_string()),
                None => Err("the pool is gone".to_owned()),
            }
        })
    }
}

/// One origin's share of an HTTP pool (see [`Pool::origins`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OriginStats {
    /// `scheme://host:port`.
    pub origin: String,
    /// Connections (HTTP/1.1) or streams (HTTP/2) in use.
    pub used: u64,
    /// Open connections.
    pub open: u64,
    /// Callers waiting for this origin.
    pub pending: u64,
    /// `used` over the per-origin ceiling, 0 to 1.
    pub utilization: f64,
}
