//! A Redis Cluster connection that is rebuilt from the seeds when the cluster's shape
//! changed under it. redis-rs follows MOVED and refreshes its slot map on READONLY, but
//! after a `CLUSTER FAILOVER` its connection often stalls: no command on any slot completes,
//! for good (measured: 30 s and counting; redis-rs #2085, #1005). Two things make the pool
//! retire the cluster connection on the multiplexed core, whose slot opens a new one (a
//! fresh slot map from the seeds) in the background: a command that fails with a timeout, a
//! dropped connection, READONLY, MASTERDOWN or CLUSTERDOWN; and a stall, no command
//! completing for [`STALL`] while some are in flight. Commands in flight finish (or time
//! out) on the old one; after a stall they are told to give up. At most one rebuild a
//! second.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use poolkit_core::Telemetry;
use poolkit_core::metrics::{CloseReason, ErrorKind as Kind};
use poolkit_core::mux::{Multiplexer, MuxPool, Opened};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Opens the cluster connection from the seeds (each open reads the slot map afresh).
pub(crate) struct ClusterMux {
    pub(crate) client: ClusterClient,
}

impl Multiplexer for ClusterMux {
    type Socket = ClusterConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Opened<ClusterConnection>, RedisError> {
        let conn = self.client.get_async_connection().await?;
        // The connection ends when retired (a rebuild) or with the pool.
        Ok(Opened::new(conn, std::future::pending::<()>()))
    }
}

/// The least time between two rebuilds.
const SPACING: Duration = Duration::from_secs(1);
/// No command completing for this long while some are in flight is a stall.
pub(crate) const STALL: Duration = Duration::from_millis(500);

/// When the cluster connection must be rebuilt, and the commands a stall abandons.
pub(crate) struct Topology {
    pool: String,
    mux: MuxPool<ClusterMux>,
    telemetry: Arc<Telemetry>,
    last: Mutex<Option<Instant>>,
    rebuilds: std::sync::atomic::AtomicU64,
    /// Milliseconds since `epoch` when a command last completed.
    done_at: std::sync::atomic::AtomicU64,
    epoch: Instant,
    /// Bumped when a stalled connection was replaced: commands still waiting on it give up.
    stalls: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// Whether `e` may come from a cluster whose shape changed.
pub(crate) fn stale(e: &RedisError) -> bool {
    e.is_timeout()
        || e.is_connection_dropped()
        || e.is_io_error()
        || crate::failover::moved_reason(e).is_some()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ClusterDown | ServerErrorKind::Moved)
                | ErrorKind::ClusterConnectionNotFound
        )
}

impl Topology {
    pub(crate) fn new(
        pool: &str,
        mux: MuxPool<ClusterMux>,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            pool: pool.to_owned(),
            mux,
            telemetry,
            last: Mutex::new(None),
            rebuilds: std::sync::atomic::AtomicU64::new(0),
            done_at: std::sync::atomic::AtomicU64::new(0),
            epoch: Instant::now(),
            stalls: tokio::sync::watch::Sender::new(0),
        })
    }

    /// A receiver that changes when the connection a command is about to be sent on is
    /// found stalled and replaced (see [`Topology::abandoned`]).
    pub(crate) fn watched(&self) -> tokio::sync::watch::Receiver<u64> {
        self.stalls.subscribe()
    }

    /// Resolves when the connection a command was sent on (with `rx` from
    /// [`Topology::current_watched`]) was found stalled and replaced.
    pub(crate) async fn abandoned(mut rx: tokio::sync::watch::Receiver<u64>) {
        let seen = *rx.borrow_and_update();
        if rx.wait_for(|n| *n > seen).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A command completed (whatever its outcome).
    pub(crate) fn done(&self) {
        self.done_at.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Starts the stall watch (every 100 ms); it ends when the pool is dropped.
    pub(crate) fn watch(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                let in_flight = this.mux.in_flight();
                let quiet = this
                    .now_ms()
                    .saturating_sub(this.done_at.load(Ordering::Relaxed));
                let stall_ms = u64::try_from(STALL.as_millis()).unwrap_or(500);
                if in_flight > 0 && quiet >= stall_ms {
                    this.rebuild(
                        &format!(
                            "no cluster command completed for {quiet} ms while {in_flight} were in flight"
                        ),
                        true,
                    );
                }
            }
        });
    }

    /// Rebuilds done so far.
    pub(crate) fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }

    /// A command failed with `e`: rebuild in the background when it says the cluster's
    /// shape may have changed (and no rebuild ran in the last second).
    pub(crate) fn failed(self: &Arc<Self>, e: &RedisError) {
        if stale(e) {
            self.rebuild(&format!("a command failed: {e}"), false);
        }
    }

    /// Retires the cluster connection (its slot opens a new one from the seeds in the
    /// background); when `stalled`, the commands still waiting on the old one are told to
    /// give up.
    fn rebuild(&self, why: &str, stalled: bool) {
        {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < SPACING) {
                return;
            }
            *last = Some(Instant::now());
        }
        tracing::warn!(pool = %self.pool, "{why}: the cluster's shape may have changed; opening a new cluster connection from the seeds");
        self.mux.retire_all(CloseReason::ServerMoved);
        if stalled {
            self.stalls.send_modify(|n| *n += 1);
        }
        self.telemetry.error(Kind::ServerMoved);
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
    }
}
