//! Shared mode: a few multiplexed connections that every caller uses at once,
//! reconnected in the background with exponential backoff and jitter.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use poolkit_core::metrics::{CloseReason, ErrorKind};
use poolkit_core::{Gate, GaugeSource, Gauges, Telemetry};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;

use crate::connector::Connector;

/// One multiplexed connection and its state.
#[derive(Debug, Default)]
struct Slot {
    conn: RwLock<Option<MultiplexedConnection>>,
    live: AtomicBool,
    generation: AtomicU64,
    in_flight: AtomicUsize,
    reconnecting: AtomicBool,
    ready: Notify,
}

/// The shared connections of one pool.
#[derive(Debug)]
pub(crate) struct Shared {
    slots: Vec<Slot>,
    connector: Arc<Connector>,
    connect_config: AsyncConnectionConfig,
    telemetry: Arc<Telemetry>,
    next: AtomicUsize,
    /// Callers waiting for a live socket (after their place under the gate).
    waiting: AtomicU64,
    last_error: RwLock<Option<(Instant, Arc<redis::RedisError>)>>,
    pub(crate) closed: AtomicBool,
    /// The cap on commands in flight over all slots (`P_MAX_IN_FLIGHT`), first come,
    /// first served.
    pub(crate) gate: Gate,
}

/// A connection handed to one command, and the slot it came from.
pub(crate) struct Lease {
    pub(crate) conn: MultiplexedConnection,
    slot: usize,
    generation: u64,
}

impl Shared {
    pub(crate) fn new(
        connector: Arc<Connector>,
        connect_config: AsyncConnectionConfig,
        size: usize,
        max_in_flight: usize,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Self> {
        let shared = Arc::new(Self {
            slots: (0..size).map(|_| Slot::default()).collect(),
            connector,
            connect_config,
            telemetry,
            next: AtomicUsize::new(0),
            waiting: AtomicU64::new(0),
            last_error: RwLock::new(None),
            closed: AtomicBool::new(false),
            gate: Gate::new(max_in_flight),
        });
        shared
            .telemetry
            .read_gauges_from(Arc::downgrade(&shared) as Weak<dyn GaugeSource>);
        shared
    }

    /// Opens every slot's connection; the first failure is returned.
    pub(crate) async fn connect_all(self: &Arc<Self>) -> Result<(), Arc<redis::RedisError>> {
        for i in 0..self.slots.len() {
            let conn = self.open().await?;
            self.install(i, conn);
        }
        Ok(())
    }

    async fn open(&self) -> Result<MultiplexedConnection, Arc<redis::RedisError>> {
        let start = Instant::now();
        match self.connector.open(&self.connect_config).await {
            Ok(conn) => {
                self.telemetry.record_created(start.elapsed());
                Ok(conn)
            }
            Err(e) => {
                self.telemetry.error(ErrorKind::Connect);
                let e = Arc::new(e);
                *self
                    .last_error
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((Instant::now(), Arc::clone(&e)));
                Err(e)
            }
        }
    }

    fn install(&self, i: usize, conn: MultiplexedConnection) {
        let slot = &self.slots[i];
        *slot
            .conn
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(conn);
        slot.generation.fetch_add(1, Ordering::AcqRel);
        slot.live.store(true, Ordering::Release);
        slot.ready.notify_waiters();
    }

    /// Live sockets now.
    pub(crate) fn live(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.live.load(Ordering::Acquire))
            .count()
    }

    /// The last connect error if it happened at or after `since`.
    pub(crate) fn error_since(&self, since: Instant) -> Option<Arc<redis::RedisError>> {
        let last = self
            .last_error
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, e)| Arc::clone(e))
    }

    /// A live connection with the fewest commands in flight (round robin among equals),
    /// without waiting; starts reconnects of dead slots it passes.
    pub(crate) fn lease_now(self: &Arc<Self>) -> Option<Lease> {
        let n = self.slots.len();
        for _attempt in 0..2 {
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let mut best: Option<(usize, usize)> = None;
            for k in 0..n {
                let i = (start + k) % n;
                let slot = &self.slots[i];
                if !slot.live.load(Ordering::Acquire) {
                    self.reconnect(i);
                    continue;
                }
                let load = slot.in_flight.load(Ordering::Relaxed);
                if best.is_none_or(|(_, b)| load < b) {
                    best = Some((i, load));
                }
            }
            let (i, _) = best?;
            let slot = &self.slots[i];
            let generation = slot.generation.load(Ordering::Acquire);
            let conn = slot
                .conn
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(conn) = conn {
                slot.in_flight.fetch_add(1, Ordering::Relaxed);
                return Some(Lease {
                    conn,
                    slot: i,
                    generation,
                });
            }
        }
        None
    }

    /// Like [`Shared::lease_now`], waiting for a reconnect until `deadline`.
    pub(crate) async fn lease(self: &Arc<Self>, deadline: tokio::time::Instant) -> Option<Lease> {
        let _waiting = Waiting::new(&self.waiting);
        loop {
            // Registered before the check, so a reconnect in between is not missed.
            let notified = self.slots[0].ready.notified();
            if let Some(lease) = self.lease_now() {
                return Some(lease);
            }
            if self.closed.load(Ordering::Acquire)
                || tokio::time::timeout_at(deadline, notified).await.is_err()
            {
                return None;
            }
        }
    }

    /// A command on `lease` finished; `failed` tells whether it showed the connection dead.
    pub(crate) fn release(self: &Arc<Self>, lease: &Lease, broken: bool) {
        let slot = &self.slots[lease.slot];
        slot.in_flight.fetch_sub(1, Ordering::Relaxed);
        if broken {
            // Only the first caller to see this generation die closes it.
            if slot
                .generation
                .compare_exchange(
                    lease.generation,
                    lease.generation + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                slot.live.store(false, Ordering::Release);
                let old = slot
                    .conn
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if old.is_some() {
                    self.telemetry.error(ErrorKind::Broken);
                    self.telemetry.record_closed(CloseReason::Broken);
                    tracing::warn!(pool = %self.telemetry.config().name, "a shared Redis connection dropped; reconnecting");
                }
                self.reconnect(lease.slot);
            }
        }
    }

    /// Whether `lease` is on a slot's connection of now (not one retired since).
    pub(crate) fn is_current(&self, lease: &Lease) -> bool {
        self.slots[lease.slot].generation.load(Ordering::Acquire) == lease.generation
    }

    /// Retires every slot's connection at once and reconnects each in the background
    /// (re-resolving through the connector): the server moved. Commands in flight on the
    /// old connections finish on them; new commands wait for a new one.
    pub(crate) fn reconnect_all(self: &Arc<Self>) {
        for (i, slot) in self.slots.iter().enumerate() {
            slot.generation.fetch_add(1, Ordering::AcqRel);
            slot.live.store(false, Ordering::Release);
            let old = slot
                .conn
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if old.is_some() {
                self.telemetry.record_closed(CloseReason::ServerMoved);
            }
            self.reconnect(i);
        }
    }

    /// Starts a background reconnect of slot `i` unless one is running.
    fn reconnect(self: &Arc<Self>, i: usize) {
        if self.closed.load(Ordering::Acquire)
            || self.slots[i].reconnecting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(25);
            loop {
                let Some(this) = weak.upgrade() else { return };
                if this.closed.load(Ordering::Acquire) {
                    this.slots[i].reconnecting.store(false, Ordering::Release);
                    return;
                }
                match this.open().await {
                    Ok(conn) => {
                        this.install(i, conn);
                        this.telemetry.record_reconnect();
                        this.slots[i].reconnecting.store(false, Ordering::Release);
                        // Waiters on any slot may go on.
                        for s in &this.slots {
                            s.ready.notify_waiters();
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(pool = %this.telemetry.config().name, error = %e, retry_in = ?delay, "Redis reconnect failed");
                    }
                }
                drop(this);
                tokio::time::sleep(jitter(delay)).await;
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        });
    }

    /// Closes every connection.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.gate.close();
        for slot in &self.slots {
            slot.live.store(false, Ordering::Release);
            if slot
                .conn
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .is_some()
            {
                self.telemetry.record_closed(CloseReason::PoolClosed);
            }
            slot.ready.notify_waiters();
        }
    }
}

/// Open sockets, commands in flight (places held under the gate) and callers waiting
/// (for a place, or for a live socket), read from the gate and the slots.
impl GaugeSource for Shared {
    fn gauges(&self) -> Gauges {
        Gauges::new(
            self.live() as u64,
            self.gate.in_use() as u64,
            self.gate.pending() as u64 + self.waiting.load(Ordering::Relaxed),
        )
    }
}

/// Counts a caller waiting for a live socket while it lives.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The longest pause between two reconnect attempts (before jitter): a server that comes
/// back is seen within 0.75 s, at the cost of two attempts a second while it is down.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// `d` plus up to 50 % random jitter, so many clients do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    #[allow(clippy::cast_precision_loss)]
    let unit = (RandomState::new().hash_one(0u8) >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(1.0 + 0.5 * unit)
}

/// Whether an error shows that the connection itself is gone (not just a bad command).
pub(crate) fn is_broken(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_unrecoverable_error() || (e.is_io_error() && !e.is_timeout())
}
