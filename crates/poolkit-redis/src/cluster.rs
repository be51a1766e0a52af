//! Redis Cluster: the same pool interface over a cluster connection (redis-rs
//! cluster-async), which routes each key to its node and follows MOVED/ASK redirects.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolkit_core::metrics::ErrorKind;
use poolkit_core::mux::{MuxConfig, MuxError, MuxPool};
use poolkit_core::{
    Backend, BoxFuture, Health, Monitored, MonitoredPool, PoolError, PoolStats, Telemetry,
};
use redis::FromRedisValue;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use crate::commands::Timed;
use crate::config::{Config, DEFAULT_PREFIX};
use crate::error::Error;
use crate::shared::is_broken;
use crate::topology::ClusterMux;

/// A pool over a Redis Cluster. Cheap to clone.
///
/// One cluster connection multiplexes commands to every node, so, as in shared mode,
/// `used` counts commands in flight. A node demoted mid-failover answers MOVED or READONLY
/// and redis-rs refreshes its slot map; when its connection still sends a slot nowhere
/// (commands time out after a `CLUSTER FAILOVER`), the pool rebuilds the cluster connection
/// from the seeds: `tests/cluster_failover.rs`. Errors from nodes (unreachable, redirect storms,
/// CLUSTERDOWN) are counted as `poolkit_connection_errors_total{kind="broken"}` when the
/// node's connection dropped and `{kind="request"}` otherwise.
#[derive(Clone)]
pub struct ClusterPool {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    topology: Arc<crate::topology::Topology>,
    telemetry: Arc<Telemetry>,
    /// The cluster connection on the multiplexed core: the in-flight cap
    /// (`P_MAX_IN_FLIGHT`, first come first served), its counts and its reconnects.
    mux: MuxPool<ClusterMux>,
    queries: Arc<poolkit_core::QueryStats>,
}

impl fmt::Debug for ClusterPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.inner, f)
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPool")
            .field("name", &self.config.pool.name)
            .field("nodes", &self.config.cluster_nodes.len())
            .finish_non_exhaustive()
    }
}

impl ClusterPool {
    /// A cluster pool from `REDIS_CLUSTER_NODES` (or a comma list in `REDIS_URL`).
    ///
    /// # Errors
    /// As [`Config::from_env`] and [`ClusterPool::new`].
    pub async fn from_env() -> Result<Self, Error> {
        Self::new(Config::from_env(DEFAULT_PREFIX)?).await
    }

    /// Connects to the cluster (reading its slot map from the seed nodes) and registers
    /// the pool.
    ///
    /// # Errors
    /// [`Error::Config`] when no seed nodes are configured; [`PoolError::Connect`] when no seed
    /// answers within the acquire timeout.
    pub async fn new(config: Config) -> Result<Self, Error> {
        config.validate()?;
        if config.cluster_nodes.is_empty() {
            return Err(Error::Config(poolkit_core::ConfigError::Missing {
                var: format!("{}_CLUSTER_NODES", config.pool.prefix),
                hint: "set it to a comma list of seed nodes such as redis://10.0.0.1:7000,redis://10.0.0.2:7000".into(),
            }));
        }
        let connect_timeout = config
            .connect_timeout
            .unwrap_or(config.pool.acquire_timeout.min(Duration::from_secs(5)));
        let nodes: Vec<&str> = config.cluster_nodes.iter().map(|n| n.expose()).collect();
        let connect_err = |e: redis::RedisError| crate::pool::connect_error(&config, Arc::new(e));
        let client = ClusterClient::builder(nodes)
            .connection_timeout(connect_timeout)
            .response_timeout(config.command_timeout)
            .tcp_settings(crate::connector::tcp_settings(
                config.tcp_keepalive,
                config.tcp_user_timeout,
            ))
            .retries(3)
            .build()
            .map_err(connect_err)?;
        let mut pool_config = config.pool.clone();
        pool_config.max_size = Some(config.max_in_flight.max(pool_config.pool_size));
        pool_config.min_idle = 0;
        let telemetry = Telemetry::new(pool_config);
        let mut mc = MuxConfig::new(&config.pool.name, 1);
        mc.per_socket = config.max_in_flight as usize;
        mc.max_in_flight = config.max_in_flight as usize;
        mc.connect_timeout = connect_timeout;
        let mux = MuxPool::start(ClusterMux { client }, mc, Some(Arc::clone(&telemetry)));
        match mux.wait_ready(config.pool.acquire_timeout).await {
            Ok(()) => {}
            Err(MuxError::Connect(e)) => {
                mux.close();
                return Err(crate::pool::connect_error(&config, e));
            }
            Err(_) => {
                mux.close();
                return Err(PoolError::timeout(
                    &config.pool,
                    config.pool.acquire_timeout,
                    0,
                    "cluster connection",
                )
                .into());
            }
        }
        let queries = poolkit_core::QueryStats::new(
            &config.pool.name,
            Backend::Redis,
            config.pool.slow_query,
        );
        let topology =
            crate::topology::Topology::new(&config.pool.name, mux.clone(), Arc::clone(&telemetry));
        topology.watch();
        let inner = Arc::new(Inner {
            config,
            topology,
            telemetry,
            mux,
            queries,
        });
        let monitored: Arc<dyn Monitored> = inner.clone();
        poolkit_core::register(&monitored);
        Ok(Self { inner })
    }

    /// Runs one command on the node that owns its key.
    ///
    /// # Errors
    /// [`Error::Backend`] when the command (or its node) failed after the driver's retries.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        self.inner.query(cmd).await
    }

    /// `PING` to the cluster; returns the round trip.
    ///
    /// # Errors
    /// As [`ClusterPool::query`].
    pub async fn ping(&self) -> Result<Duration, Error> {
        let t = Instant::now();
        self.inner.query::<String>(&redis::cmd("PING")).await?;
        Ok(t.elapsed())
    }

    /// A snapshot (used = commands in flight).
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }

    /// How many times the cluster connection was rebuilt from the seeds because a command
    /// failed in a way a changed topology explains (see `poolkit_redis` docs: Cluster).
    #[must_use]
    pub fn rebuilds(&self) -> u64 {
        self.inner.topology.rebuilds()
    }

    /// Health from the snapshot.
    #[must_use]
    pub fn health(&self) -> Health {
        Health::assess(&self.stats(), &self.inner.config.pool.thresholds)
    }
}

impl Inner {
    fn stats(&self) -> PoolStats {
        let mut stats = self.telemetry.stats();
        stats.query = self.queries.timing();
        stats
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        self.run(Timed::Cmd(cmd), |mut conn| async move {
            cmd.query_async::<T>(&mut conn).await
        })
        .await
    }

    async fn run<T, F, Fut>(&self, what: Timed<'_>, f: F) -> Result<T, Error>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let lease = match self.mux.lease(self.config.pool.acquire_timeout).await {
            Ok(lease) => lease,
            Err(MuxError::Timeout {
                waited, pending, ..
            }) => {
                return Err(crate::pool::in_flight_timeout(
                    &self.config,
                    self.config.max_in_flight,
                    waited,
                    pending,
                ));
            }
            Err(_) => {
                return Err(PoolError::closed(&self.config.pool.name).into());
            }
        };
        let stalls = self.topology.watched();
        let conn = (*lease).clone();
        let result = tokio::select! {
            r = f(conn) => r,
            () = crate::topology::Topology::abandoned(stalls) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the cluster connection stalled and was replaced while this command waited on it",
                "it may still run on the old connection; it was not sent again".to_owned(),
            ))),
        };
        self.topology.done();
        let held = lease.end();
        self.queries
            .record(what.operation(), held, || what.statement());
        if let Err(e) = &result {
            self.topology.failed(e);
            self.telemetry.error(if is_broken(e) {
                ErrorKind::Broken
            } else if e.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Request
            });
        }
        result.map_err(Error::from)
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
    fn ping_backend(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.query::<String>(&redis::cmd("PING"))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

crate::commands::shared_connection_like!(
    /// The cluster as a redis-rs connection: `AsyncCommands` and pipelines run on it, under
    /// the same in-flight cap, timed. Clone the pool for a `mut` handle.
    ClusterPool,
    |_pool| 0
);
