//! A Redis Cluster connection that is rebuilt from the seeds when the cluster's shape
//! changed under it. redis-rs follows MOVED and refreshes its slot map on READONLY, but
//! after a `CLUSTER FAILOVER` its connection often stalls: no command on any slot completes,
//! for good (measured: 30 s and counting; redis-rs #2085, #1005). Two things make the pool
//! open a new cluster connection (a fresh slot map from the seeds) in the background and
//! swap it in: a command that fails with a timeout, a dropped connection, READONLY,
//! MASTERDOWN or CLUSTERDOWN; and a stall, no command completing for [`STALL`] while some
//! are in flight. Commands in flight finish (or time out) on the old one. At most one
//! rebuild a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use poolkit_core::Telemetry;
use poolkit_core::metrics::{CloseReason, ErrorKind as Kind};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The least time between two rebuilds.
const SPACING: Duration = Duration::from_secs(1);
/// No command completing for this long while some are in flight is a stall.
pub(crate) const STALL: Duration = Duration::from_millis(500);

/// The cluster connection in use, and how to make a new one.
pub(crate) struct Topology {
    pool: String,
    client: ClusterClient,
    conn: RwLock<ClusterConnection>,
    telemetry: Arc<Telemetry>,
    connect_timeout: Duration,
    rebuilding: AtomicBool,
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
        client: ClusterClient,
        conn: ClusterConnection,
        telemetry: Arc<Telemetry>,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            pool: pool.to_owned(),
            client,
            conn: RwLock::new(conn),
            telemetry,
            connect_timeout,
            rebuilding: AtomicBool::new(false),
            last: Mutex::new(None),
            rebuilds: std::sync::atomic::AtomicU64::new(0),
            done_at: std::sync::atomic::AtomicU64::new(0),
            epoch: Instant::now(),
            stalls: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The connection to send a command on now, and a receiver that changes when that
    /// connection is found stalled and replaced (see [`Topology::abandoned`]).
    pub(crate) fn current_watched(&self) -> (ClusterConnection, tokio::sync::watch::Receiver<u64>) {
        let rx = self.stalls.subscribe();
        (self.current(), rx)
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
                let in_flight = this.telemetry.used();
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

    /// The connection to send a command on now.
    fn current(&self) -> ClusterConnection {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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

    /// Opens a new cluster connection in the background and swaps it in; when `stalled`,
    /// the commands still waiting on the old one are told to give up.
    fn rebuild(self: &Arc<Self>, why: &str, stalled: bool) {
        {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < SPACING)
                || self.rebuilding.swap(true, Ordering::AcqRel)
            {
                return;
            }
            *last = Some(Instant::now());
        }
        tracing::warn!(pool = %self.pool, "{why}: the cluster's shape may have changed; opening a new cluster connection from the seeds");
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let Some(this) = weak.upgrade() else { return };
            let started = Instant::now();
            match tokio::time::timeout(this.connect_timeout, this.client.get_async_connection())
                .await
            {
                Ok(Ok(conn)) => {
                    *this.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
                    if stalled {
                        this.stalls.send_modify(|n| *n += 1);
                    }
                    this.telemetry.record_closed(CloseReason::ServerMoved);
                    this.telemetry.record_created(started.elapsed());
                    this.telemetry.record_reconnect();
                    this.telemetry.error(Kind::ServerMoved);
                    this.rebuilds.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    this.telemetry.error(Kind::Connect);
                    tracing::warn!(pool = %this.pool, error = %e, "could not open a new cluster connection; keeping the old one");
                }
                Err(_) => {
                    this.telemetry.error(Kind::Connect);
                    tracing::warn!(pool = %this.pool, "no seed answered within the connect timeout; keeping the old cluster connection");
                }
            }
            this.rebuilding.store(false, Ordering::Release);
        });
    }
}
