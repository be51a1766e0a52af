//! The pool engine: idle connections and waiting callers kept together behind one lock,
//! so a returned connection goes straight to the oldest waiter (FIFO by construction),
//! one deadline covers the whole wait, and the pool can be resized while it runs.
//!
//! Any [`bb8::ManageConnection`] plugs in: bb8's manager trait is the contract, bb8's pool
//! is not used. `docs/design.md` walks through the states a connection goes through.

mod auto;
mod conn;
mod leaks;
mod upkeep;

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

pub use bb8::ManageConnection;
pub use conn::{LIFETIME_JITTER, Tracked};

use conn::Clock;
use leaks::Leaks;

use crate::engine_state::{Handed, Put, State, Surplus, Take};
use crate::metrics::{CloseReason, ErrorKind};
use crate::sync::{Mutex, MutexGuard, lock};
use crate::waiters::{Ticket, Wakers};
use crate::{ConfigError, PoolConfig, Sizing, Telemetry};

/// Why a checkout failed, before the adapter turns it into its own `Error`.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcquireError<E> {
    /// No connection came free (and none could be opened) within the acquire timeout.
    Timeout {
        /// How long the caller waited.
        waited: Duration,
        /// Callers still waiting when this one gave up.
        pending: u64,
    },
    /// Connecting failed while the caller waited; this is the server's reason.
    Connect(Arc<E>),
    /// The pool was closed.
    Closed,
}

/// One engine's counts at one moment (see [`Engine::counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Counts {
    /// Connections open (idle or in use).
    pub open: u32,
    /// Connects under way.
    pub connecting: u32,
    /// Connections checked out.
    pub used: u32,
    /// Callers waiting.
    pub pending: u32,
}

/// The managers the engine takes: every [`bb8::ManageConnection`] whose error can be
/// shared between waiters (`Sync`) and shown in logs (`Display`), which covers
/// bb8-postgres, bb8-redis and poolkit's own managers. Implemented for all of them.
pub trait Manager: ManageConnection<Error: Sync + fmt::Display> {}

impl<T: ManageConnection<Error: Sync + fmt::Display>> Manager for T {}

type Conn<M> = Tracked<<M as ManageConnection>::Connection>;

/// What every handle, checkout and background task of one pool shares.
pub(crate) struct Shared<M: Manager> {
    manager: M,
    telemetry: Arc<Telemetry>,
    config: PoolConfig,
    state: Mutex<State<Conn<M>>>,
    last_error: StdMutex<Option<(Clock, Arc<M::Error>)>>,
    leaks: Option<Leaks>,
    /// The auto-sizing controller's target (`P_POOL_SIZE=auto`).
    auto_target: AtomicU32,
    /// An external cap on the ceiling (a fleet share); `u32::MAX` when none.
    cap: AtomicU32,
    /// Bumped by [`Engine::retire_all`]; connections of an older generation are closed
    /// instead of handed out or kept.
    generation: AtomicU64,
    /// The gauges this engine last added to a `Telemetry` it shares with other engines
    /// (open, used, pending; see [`Engine::with_telemetry`]); `None` when it owns its
    /// telemetry and stores the gauges outright.
    added: Option<[AtomicI64; 3]>,
}

/// A pool of connections made by `M`. Cheap to clone; the pool closes when the last
/// clone is dropped (connections in use are closed as they come back).
pub struct Engine<M: Manager> {
    handle: Arc<Handle<M>>,
}

impl<M: Manager> Clone for Engine<M> {
    fn clone(&self) -> Self {
        Self {
            handle: Arc::clone(&self.handle),
        }
    }
}

/// Closes the pool when the last [`Engine`] goes.
struct Handle<M: Manager>(Arc<Shared<M>>);

impl<M: Manager> Drop for Handle<M> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<M: Manager> fmt::Debug for Engine<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.shared().telemetry;
        f.debug_struct("Engine")
            .field("name", &t.config().name)
            .field("open", &t.open())
            .field("used", &t.used())
            .field("pending", &t.pending())
            .field("max_size", &t.max_size())
            .finish_non_exhaustive()
    }
}

impl<M: Manager> Engine<M> {
    fn shared(&self) -> &Arc<Shared<M>> {
        &self.handle.0
    }

    /// Builds the pool from a validated `config`. When `min_idle > 0`, that many
    /// connections are open before this returns; a server that cannot be reached gives
    /// an error within the acquire timeout, never a hang. Starts the upkeep task (idle
    /// timeout, lifetime, min idle, leak reports), so it must run inside a tokio runtime.
    ///
    /// # Errors
    /// [`AcquireError::Connect`] with the server's reason, or [`AcquireError::Timeout`],
    /// when the warm-up connections cannot be opened.
    pub async fn build(manager: M, config: PoolConfig) -> Result<Self, AcquireError<M::Error>> {
        Self::build_capped(manager, config, None).await
    }

    /// [`Engine::build`] with the ceiling capped from the start (see [`Engine::cap`]):
    /// at most `cap` connections are opened, the warm-up included.
    ///
    /// # Errors
    /// As [`Engine::build`].
    pub async fn build_capped(
        manager: M,
        config: PoolConfig,
        cap: Option<u32>,
    ) -> Result<Self, AcquireError<M::Error>> {
        let cap = cap.unwrap_or(u32::MAX);
        let telemetry = Telemetry::new(config.clone());
        let (pool_size, max_size) = if config.sizing == Sizing::Auto {
            let floor = crate::autosize::floor(&config);
            (floor, floor)
        } else {
            (config.pool_size, config.ceiling())
        };
        let shared = Arc::new(Shared {
            manager,
            state: Mutex::new(State::new(pool_size.min(cap), max_size.min(cap))),
            last_error: StdMutex::new(None),
            leaks: config.leak_threshold.map(Leaks::new),
            auto_target: AtomicU32::new(pool_size),
            cap: AtomicU32::new(cap),
            generation: AtomicU64::new(0),
            added: None,
            telemetry,
            config,
        });
        upkeep::start(&shared);
        auto::start(&shared);
        let engine = Self {
            handle: Arc::new(Handle(shared)),
        };
        let shared = engine.shared();
        shared.telemetry.set_target(max_size.min(cap));
        let min_idle = shared.config.min_idle.min(cap);
        if min_idle > 0 {
            let start = Clock::now();
            let connects = shared.lock().reserve(min_idle);
            shared.spawn_connects(connects);
            let deadline = tokio::time::Instant::now() + shared.config.acquire_timeout;
            while shared.lock().open < min_idle {
                if tokio::time::Instant::now() >= deadline {
                    return Err(match shared.error_since(start) {
                        Some(e) => AcquireError::Connect(e),
                        None => AcquireError::Timeout {
                            waited: start.elapsed(),
                            pending: 0,
                        },
                    });
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(engine)
    }

    /// A pool that adds its counts to `telemetry`, which other engines may share: one
    /// pool made of several engines (an HTTP pool has one engine per origin) publishes
    /// one set of numbers. Each engine adds the change of its own gauges (open, used,
    /// pending) under its lock, so the shared gauges are the sums; sizes stay the
    /// caller's to set ([`Telemetry::set_sizes`]). Opens nothing before it returns:
    /// `min_idle` connections are opened by the upkeep task. Must run inside a tokio
    /// runtime. Fixed-size only: `config.sizing` is not looked at.
    #[must_use]
    pub fn with_telemetry(manager: M, config: PoolConfig, telemetry: Arc<Telemetry>) -> Self {
        let shared = Arc::new(Shared {
            manager,
            state: Mutex::new(State::new(config.pool_size, config.ceiling())),
            last_error: StdMutex::new(None),
            leaks: config.leak_threshold.map(Leaks::new),
            auto_target: AtomicU32::new(config.pool_size),
            cap: AtomicU32::new(u32::MAX),
            generation: AtomicU64::new(0),
            added: Some([AtomicI64::new(0), AtomicI64::new(0), AtomicI64::new(0)]),
            telemetry,
            config,
        });
        upkeep::start(&shared);
        Self {
            handle: Arc::new(Handle(shared)),
        }
    }

    /// The pool's telemetry (stats, config).
    #[must_use]
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.shared().telemetry
    }

    /// The connection manager.
    #[must_use]
    pub fn manager(&self) -> &M {
        &self.shared().manager
    }

    /// Takes a connection: waits first come, first served, for at most the acquire
    /// timeout in total. Cancel-safe: dropping the future loses no connection and no
    /// place, also mid-connect (connects run as tasks of their own) or mid-validation
    /// (the connection being checked is closed).
    ///
    /// # Errors
    /// [`AcquireError::Timeout`] after the acquire timeout; [`AcquireError::Connect`] when
    /// connecting failed during the wait (with the server's reason);
    /// [`AcquireError::Closed`] after [`Engine::close`].
    #[track_caller]
    pub fn get(
        &self,
    ) -> impl Future<Output = Result<Checkout<M>, AcquireError<M::Error>>> + Send + '_ {
        let caller = Location::caller();
        async move {
            let mut checkout = self.shared().acquire().await?;
            if let Some(leaks) = &self.shared().leaks {
                checkout.leak = Some(leaks.start(caller));
            }
            Ok(checkout)
        }
    }

    /// An idle connection that needs no check, if there is one and nobody waits; never
    /// queues or connects (for health checks that must not wait behind callers).
    #[must_use]
    pub fn try_get(&self) -> Option<Checkout<M>> {
        let shared = self.shared();
        let start = Clock::now();
        let mut conn = {
            let mut s = shared.lock();
            if s.closed || !s.waiters.is_empty() {
                return None;
            }
            let conn = s.idle.pop()?;
            s.used += 1;
            let wake = shared.sync(&mut s);
            drop(s);
            drop(wake);
            conn
        };
        if shared.fresh(&mut conn, start) {
            return Some(shared.checkout(conn, start, start, true));
        }
        shared.put_back(conn, None);
        None
    }

    /// Changes the steady size and the burst ceiling while the pool runs. Growing serves
    /// waiters at once; shrinking closes idle connections above the new ceiling and
    /// retires returned ones above it, never one in use.
    ///
    /// For an auto-sized pool (`P_POOL_SIZE=auto`) this moves the ceiling the sizing
    /// controller stays under (`max_size`, or `pool_size` when `None`); a target above the
    /// new ceiling is cut to it at once.
    ///
    /// # Errors
    /// The same [`ConfigError`] as the equivalent environment variables would give
    /// (size 0, ceiling below size, min idle above the ceiling, above the limit).
    pub fn resize(&self, pool_size: u32, max_size: Option<u32>) -> Result<(), ConfigError> {
        let shared = self.shared();
        let mut c = shared.config.clone();
        c.pool_size = pool_size;
        c.max_size = max_size;
        if c.sizing == Sizing::Auto {
            c.pool_size = pool_size.min(crate::autosize::floor(&c));
            c.max_size = Some(max_size.unwrap_or(pool_size));
        }
        c.validate()?;
        if c.sizing == Sizing::Auto {
            let ceiling = c.ceiling();
            shared
                .telemetry
                .set_sizes(crate::autosize::floor(&c).min(ceiling), ceiling);
            tracing::info!(pool = %c.name, ceiling, "auto-sized pool's ceiling changed");
            shared.auto_target.fetch_min(ceiling, Relaxed);
            shared.apply_limits();
            return Ok(());
        }
        shared.telemetry.set_sizes(pool_size, c.ceiling());
        shared.apply_limits();
        tracing::info!(pool = %c.name, pool_size, max_size = c.ceiling(), "pool resized");
        Ok(())
    }

    /// Caps the ceiling from outside, below what the pool's own sizes allow (`None`: no
    /// cap). A fleet budget uses it to hold each instance to its share: unlike
    /// [`Engine::resize`] it accepts 0 (open nothing; callers wait), and it does not change
    /// the configured sizes, so lifting the cap restores them. An auto-sized pool's
    /// controller stays under the cap. Cutting closes idle connections above it now and
    /// busy ones as they come back.
    pub fn cap(&self, cap: Option<u32>) {
        let shared = self.shared();
        let cap = cap.unwrap_or(u32::MAX);
        if shared.cap.swap(cap, Relaxed) != cap {
            shared.apply_limits();
        }
    }

    /// The cap set by [`Engine::cap`], if any.
    #[must_use]
    pub fn cap_value(&self) -> Option<u32> {
        let cap = self.shared().cap.load(Relaxed);
        (cap != u32::MAX).then_some(cap)
    }

    /// This engine's own counts now, read under its lock (for a pool made of several
    /// engines that share one `Telemetry`, such as an HTTP pool's origins).
    #[must_use]
    pub fn counts(&self) -> Counts {
        let s = self.shared().lock();
        Counts {
            open: s.open,
            connecting: s.connecting,
            used: s.used,
            pending: u32::try_from(s.waiters.len()).unwrap_or(u32::MAX),
        }
    }

    /// Connections open or being opened now (what a fleet share must cover).
    #[must_use]
    pub fn open_or_connecting(&self) -> u32 {
        let s = self.shared().lock();
        s.open + s.connecting
    }

    /// Closes the pool: waiting and new callers get [`AcquireError::Closed`] at once, no
    /// new connection is opened, idle ones are closed now and the others as they come
    /// back. See [`Engine::drain`] to wait for that.
    pub fn close(&self) {
        self.shared().close();
    }

    /// Closes the pool (as [`Engine::close`]) and waits until every connection is
    /// returned and closed, at most `deadline`. Returns whether all closed in time.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.close();
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let done = {
                let s = self.shared().lock();
                s.open == 0 && s.connecting == 0
            };
            if done {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether the pool was closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared().lock().closed
    }

    /// The pool's generation: 0 at build, one more after each [`Engine::retire_all`].
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.shared().generation.load(Relaxed)
    }

    /// Retires every connection at once, as one event for the whole pool (the server
    /// moved: a failover). Idle connections are closed now; connections in use are closed
    /// when returned (never taken from their holder); connects already under way are
    /// redone, since they may lead to the old server. Replacements are opened for waiters
    /// and `min_idle`. All are closed as `server_moved`.
    ///
    /// `seen` is the generation of the connection that showed the move (see
    /// [`Checkout::generation`]): when the pool has moved on since, the event was already
    /// handled and nothing happens, so a burst of callers that all see the same failover
    /// retires each connection once. Returns whether this call retired the pool.
    pub fn retire_all(&self, seen: u64) -> bool {
        let shared = self.shared();
        if shared
            .generation
            .compare_exchange(seen, seen + 1, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        let min_idle = shared.config.min_idle;
        let (idle, connects) = shared.with(|s| {
            let idle = std::mem::take(&mut s.idle);
            let mut connects = s.forget_idle(u32::try_from(idle.len()).unwrap_or(u32::MAX));
            connects += s.reserve(min_idle.saturating_sub(s.open + s.connecting));
            (idle, connects)
        });
        for conn in idle {
            shared.close_conn(conn, CloseReason::ServerMoved);
        }
        shared.spawn_connects(connects);
        true
    }
}

impl<M: Manager> Shared<M> {
    fn lock(&self) -> MutexGuard<'_, State<Conn<M>>> {
        lock(&self.state)
    }

    /// Publishes the counts of `s` (called under the lock after every change) and takes
    /// the wakers of waiters it served, to wake after the lock is released.
    fn sync(&self, s: &mut State<Conn<M>>) -> Wakers {
        s.check();
        let pending = u32::try_from(s.waiters.len()).unwrap_or(u32::MAX);
        match &self.added {
            None => self.telemetry.store_gauges(s.open, s.used, s.waiters.len()),
            Some(added) => {
                // Under the state lock: the differences add up to this engine's counts.
                let now = [s.open, s.used, pending].map(i64::from);
                let change = std::array::from_fn(|i| now[i] - added[i].swap(now[i], Relaxed));
                self.telemetry.add_gauges(change);
            }
        }
        s.waiters.wakers()
    }

    /// Runs `f` on the state under the lock, publishes the counts, and wakes the waiters
    /// it served once the lock is released.
    fn with<R>(&self, f: impl FnOnce(&mut State<Conn<M>>) -> R) -> R {
        let mut s = self.lock();
        let r = f(&mut s);
        let wake = self.sync(&mut s);
        drop(s);
        drop(wake);
        r
    }

    fn close_conn(&self, conn: Conn<M>, reason: CloseReason) {
        self.telemetry.record_closed(reason);
        drop(conn);
    }

    fn error_since(&self, since: Clock) -> Option<Arc<M::Error>> {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, e)| Arc::clone(e))
    }

    /// Whether an idle connection can be handed out without a check.
    fn fresh(&self, conn: &mut Conn<M>, now: Clock) -> bool {
        conn.retire.is_none()
            && conn.generation == self.generation.load(Relaxed)
            && !conn.expired(now)
            && conn.idle_since(now) < self.config.ping_if_idle
            && !self.manager.has_broken(conn.inner_mut())
    }

    fn checkout(
        self: &Arc<Self>,
        mut conn: Conn<M>,
        now: Clock,
        asked: Clock,
        hit: bool,
    ) -> Checkout<M> {
        conn.uses += 1;
        self.telemetry
            .record_acquire(now.saturating_duration_since(asked), hit);
        Checkout {
            conn: Some(conn),
            since: now,
            shared: Arc::clone(self),
            leak: None,
        }
    }

    async fn acquire(self: &Arc<Self>) -> Result<Checkout<M>, AcquireError<M::Error>> {
        let asked = Clock::now();
        let mut deadline = None;
        let mut fast = true;
        loop {
            let taken = self.with(|s| s.take());
            // The clock is read for the deadline only once the fast path is left.
            let mut deadline = || {
                *deadline.get_or_insert_with(|| {
                    tokio::time::Instant::now() + self.config.acquire_timeout
                })
            };
            match taken {
                Take::Closed => return Err(AcquireError::Closed),
                Take::Idle(mut conn) => {
                    let now = Clock::now();
                    if self.fresh(&mut conn, now) {
                        return Ok(self.checkout(conn, now, asked, fast));
                    }
                    fast = false;
                    if let Some(conn) = self.validate(conn, now, deadline()).await {
                        return Ok(self.checkout(conn, Clock::now(), asked, false));
                    }
                    // Closed as invalid; take another (or wait).
                }
                Take::Wait { ticket, connects } => {
                    self.spawn_connects(connects);
                    let mut waiting = Waiting {
                        shared: self,
                        ticket: Some(ticket),
                    };
                    let given = match &waiting.ticket {
                        Some(t) => tokio::time::timeout_at(deadline(), t.wait()).await.ok(),
                        None => None,
                    };
                    let given = match given {
                        Some(g) => {
                            waiting.ticket = None;
                            Some(g)
                        }
                        // Timed out; a connection handed over in the same instant is ours.
                        None => waiting.leave(),
                    };
                    return match given {
                        Some(Handed::Conn(conn)) => {
                            Ok(self.checkout(conn, Clock::now(), asked, false))
                        }
                        Some(Handed::Closed) => Err(AcquireError::Closed),
                        None => Err(self.timed_out(asked)),
                    };
                }
            }
        }
    }

    fn timed_out(&self, asked: Clock) -> AcquireError<M::Error> {
        let waited = asked.elapsed();
        self.telemetry.timed_out(waited);
        // A connect error during the wait explains the timeout better than "timed out".
        match self.error_since(asked) {
            Some(e) => AcquireError::Connect(e),
            None => AcquireError::Timeout {
                waited,
                pending: self.telemetry.pending(),
            },
        }
    }

    /// Checks an idle connection that is past `ping_if_idle` or suspect. Returns it when
    /// good; closes it (and frees its place) otherwise, also when the caller goes away
    /// mid-check, since a half-finished ping leaves the connection in an unknown state.
    async fn validate(
        self: &Arc<Self>,
        conn: Conn<M>,
        now: Clock,
        deadline: tokio::time::Instant,
    ) -> Option<Conn<M>> {
        let mut checking = Checking {
            shared: self,
            conn: Some(conn),
            reason: CloseReason::Aborted,
        };
        let c = checking.conn.as_mut()?;
        if c.generation != self.generation.load(Relaxed) {
            checking.reason = CloseReason::ServerMoved;
            return None;
        }
        if c.retire.is_some() || c.expired(now) {
            checking.reason = c.retire.unwrap_or(CloseReason::MaxLifetime);
            return None;
        }
        let broken = self.manager.has_broken(c.inner_mut());
        if !broken && c.idle_since(now) < self.config.ping_if_idle {
            return checking.conn.take();
        }
        // The ping has a bound of its own (`P_PING_TIMEOUT`), well under the acquire
        // timeout: a half-open connection costs the caller that, not its whole wait.
        let bound = self.config.effective_ping_timeout();
        let ping_deadline = deadline.min(tokio::time::Instant::now() + bound);
        let outcome =
            tokio::time::timeout_at(ping_deadline, self.manager.is_valid(c.inner_mut())).await;
        if outcome.is_err() && !broken {
            self.telemetry.error(ErrorKind::HealthCheck);
            tracing::warn!(pool = %self.config.name, bound = ?bound, "validation ping did not answer in time (a half-open connection?); closing it and serving the caller from another");
            checking.reason = CloseReason::Invalid;
            return None;
        }
        match outcome {
            Ok(Ok(())) if !broken => checking.conn.take(),
            Ok(Err(e)) if !broken => {
                self.telemetry.error(ErrorKind::HealthCheck);
                tracing::warn!(pool = %self.config.name, error = %e, "validation ping failed; closing the connection");
                checking.reason = CloseReason::Invalid;
                None
            }
            Ok(_) if broken => {
                // Its socket closed while idle: never handed out.
                self.telemetry.error(ErrorKind::Broken);
                tracing::debug!(pool = %self.config.name, "discarding a connection that broke while idle");
                checking.reason = CloseReason::Broken;
                None
            }
            _ => {
                checking.reason = CloseReason::Invalid;
                None
            }
        }
    }

    /// A checked-out connection that will not come back is closed; its place is freed.
    fn discard(self: &Arc<Self>, conn: Conn<M>, reason: CloseReason) {
        let connects = self.with(|s| s.discard());
        self.close_conn(conn, reason);
        self.spawn_connects(connects);
    }

    /// A connection comes back (`why`: the reason to close it, if any).
    fn put_back(self: &Arc<Self>, conn: Conn<M>, why: Option<CloseReason>) {
        let (put, surplus) = self.with(|s| s.put(conn, why.is_none()));
        self.closed_put(put, why, surplus);
    }

    fn closed_put(
        self: &Arc<Self>,
        put: Put<Conn<M>>,
        why: Option<CloseReason>,
        surplus: Option<Surplus>,
    ) {
        if let Put::Close { conn, connects } = put {
            let reason = why.unwrap_or(match surplus {
                Some(Surplus::Closed) => CloseReason::PoolClosed,
                _ => CloseReason::Overflow,
            });
            self.close_conn(conn, reason);
            self.spawn_connects(connects);
        }
    }

    fn close(&self) {
        let idle = self.with(|s| s.close());
        for conn in idle {
            self.close_conn(conn, CloseReason::PoolClosed);
        }
    }
}

/// A caller queued for a connection; leaving the queue (timeout or drop) hands on a
/// connection it was given in the meantime.
struct Waiting<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    ticket: Option<Ticket<Handed<Conn<M>>>>,
}

impl<M: Manager> Waiting<'_, M> {
    fn leave(&mut self) -> Option<Handed<Conn<M>>> {
        let ticket = self.ticket.take()?;
        self.shared.with(|s| s.waiters.cancel(&ticket))
    }
}

impl<M: Manager> Drop for Waiting<'_, M> {
    fn drop(&mut self) {
        if let Some(Handed::Conn(conn)) = self.leave() {
            // Handed over just as the caller went away: on to the next waiter.
            self.shared.put_back(conn, None);
        }
    }
}

/// An idle connection being checked for a caller; closed if the check does not finish.
struct Checking<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    conn: Option<Conn<M>>,
    reason: CloseReason,
}

impl<M: Manager> Drop for Checking<'_, M> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.shared.discard(conn, self.reason);
        }
    }
}

/// A checked-out connection. Derefs to the manager's connection; returning it is
/// dropping it. Its hold time is recorded, and it is closed instead of reused when it is
/// broken, expired, used up, above the pool's size with nobody waiting, or retired.
pub struct Checkout<M: Manager> {
    conn: Option<Conn<M>>,
    since: Clock,
    shared: Arc<Shared<M>>,
    leak: Option<u64>,
}

impl<M: Manager> Checkout<M> {
    /// The tracked connection (age, uses, retire).
    pub fn tracked(&mut self) -> &mut Tracked<M::Connection> {
        self.conn.as_mut().unwrap_or_else(|| unreachable_taken())
    }

    /// How long this checkout has been held.
    #[must_use]
    pub fn held_for(&self) -> Duration {
        self.since.elapsed()
    }

    /// The pool generation this connection belongs to (pass it to
    /// [`Engine::retire_all`] when the connection shows the server moved).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.conn.as_ref().map_or(0, |c| c.generation)
    }
}

#[allow(clippy::panic)]
fn unreachable_taken() -> ! {
    panic!("poolkit: checkout used after drop")
}

impl<M: Manager> fmt::Debug for Checkout<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkout")
            .field("pool", &self.shared.config.name)
            .field("held_for", &self.held_for())
            .finish_non_exhaustive()
    }
}

impl<M: Manager> Deref for Checkout<M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        self.conn
            .as_ref()
            .map_or_else(|| unreachable_taken(), |c| c.inner())
    }
}

impl<M: Manager> DerefMut for Checkout<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        self.conn
            .as_mut()
            .map_or_else(|| unreachable_taken(), |c| c.inner_mut())
    }
}

impl<M: Manager> Drop for Checkout<M> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let shared = &self.shared;
        let now = Clock::now();
        shared
            .telemetry
            .record_release(now.saturating_duration_since(self.since));
        if let (Some(leaks), Some(id)) = (&shared.leaks, self.leak) {
            leaks.stop(id);
        }
        conn.last_used = now;
        let why = if conn.retire.is_some() {
            conn.retire
        } else if conn.generation != shared.generation.load(Relaxed) {
            Some(CloseReason::ServerMoved)
        } else if shared.manager.has_broken(conn.inner_mut()) {
            shared.telemetry.error(ErrorKind::Broken);
            Some(CloseReason::Broken)
        } else if conn.expired(now) {
            Some(CloseReason::MaxLifetime)
        } else if shared.config.max_uses.is_some_and(|max| conn.uses >= max) {
            Some(CloseReason::MaxUses)
        } else {
            None
        };
        shared.put_back(conn, why);
    }
}
