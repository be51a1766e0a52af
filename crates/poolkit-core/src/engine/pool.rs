//! [`Engine`]: the handle callers hold, and what they can do with a pool.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use super::checkout::{Checkout, Verdict};
use super::conn::Clock;
use super::leaks::Leaks;
use super::{AcquireError, Classify, Manager, Shared, auto, upkeep};
use crate::engine_state::State;
use crate::metrics::CloseReason;
use crate::sync::Mutex;
use crate::{ConfigError, GaugeSource, PoolConfig, Sizing, Telemetry};

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
        Self::build_with(manager, config, cap, super::fail_fast::never).await
    }

    /// [`Engine::build_capped`] with the adapter's word on which connect errors retrying
    /// cannot fix (see [`Classify`]): such an error ends the build, and every wait under
    /// way, at once with [`AcquireError::Connect`], instead of after the acquire timeout.
    ///
    /// # Errors
    /// As [`Engine::build`].
    pub async fn build_with(
        manager: M,
        config: PoolConfig,
        cap: Option<u32>,
        classify: Classify<M>,
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
            fail_fast: super::fail_fast::FailFast::new(),
            classify,
            leaks: config.leak_threshold.map(Leaks::new),
            auto_limit: AtomicU32::new(pool_size),
            cap: AtomicU32::new(cap),
            generation: AtomicU64::new(0),
            retries: super::connect::Retries::default(),
            shares_telemetry: false,
            telemetry,
            config,
        });
        shared
            .telemetry
            .read_gauges_from(Arc::downgrade(&shared) as Weak<dyn GaugeSource>);
        upkeep::start(&shared);
        auto::start(&shared);
        let engine = Self {
            handle: Arc::new(Handle(shared)),
        };
        let shared = engine.shared();
        let min_idle = shared.config.min_idle.min(cap);
        if min_idle > 0 {
            let start = Clock::now();
            let connects = shared.lock().reserve(min_idle);
            shared.spawn_connects(connects);
            let deadline = tokio::time::Instant::now() + shared.config.acquire_timeout;
            while shared.lock().open < min_idle {
                if let Some(e) = shared.fail_fast.since(start) {
                    return Err(AcquireError::Connect(e));
                }
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
        shared.fail_fast.worked();
        Ok(engine)
    }

    /// A pool that shares `telemetry` with other engines: one pool made of several
    /// engines (an HTTP pool has one engine per origin) publishes one set of numbers.
    /// The engine registers itself as one of the telemetry's gauge sources
    /// ([`Telemetry::read_gauges_from`]), so the gauges read at stats or scrape time are
    /// the sums over the engines alive; sizes stay the caller's to set
    /// ([`Telemetry::set_sizes`]). Opens nothing before it returns: `min_idle`
    /// connections are opened by the upkeep task. Must run inside a tokio runtime.
    /// Fixed-size only: `config.sizing` is not looked at, and no connect error fails fast.
    #[must_use]
    pub fn with_telemetry(manager: M, config: PoolConfig, telemetry: Arc<Telemetry>) -> Self {
        let shared = Arc::new(Shared {
            manager,
            state: Mutex::new(State::new(config.pool_size, config.ceiling())),
            last_error: StdMutex::new(None),
            fail_fast: super::fail_fast::FailFast::new(),
            classify: super::fail_fast::never,
            leaks: config.leak_threshold.map(Leaks::new),
            auto_limit: AtomicU32::new(config.pool_size),
            cap: AtomicU32::new(u32::MAX),
            generation: AtomicU64::new(0),
            retries: super::connect::Retries::default(),
            shares_telemetry: true,
            telemetry,
            config,
        });
        shared
            .telemetry
            .read_gauges_from(Arc::downgrade(&shared) as Weak<dyn GaugeSource>);
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
        self.get_timeout(self.shared().config.acquire_timeout)
    }

    /// [`Engine::get`] waiting at most `timeout` instead of the pool's acquire timeout
    /// (deadpool's `timeout_get`).
    ///
    /// # Errors
    /// As [`Engine::get`], [`AcquireError::Timeout`] after `timeout`.
    #[track_caller]
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Checkout<M>, AcquireError<M::Error>>> + Send + '_ {
        self.get_with(timeout, Location::caller())
    }

    /// [`Engine::get_timeout`] with the caller's location given (for an adapter whose own
    /// `get` is `#[track_caller]`), which leak reports name.
    ///
    /// # Errors
    /// As [`Engine::get_timeout`].
    #[allow(clippy::manual_async_fn)] // `Send` stays in the signature
    pub fn get_with(
        &self,
        timeout: Duration,
        caller: &'static Location<'static>,
    ) -> impl Future<Output = Result<Checkout<M>, AcquireError<M::Error>>> + Send + '_ {
        async move {
            let mut checkout = self.shared().acquire(timeout).await?;
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
        match shared.verdict(&mut conn, start) {
            Verdict::Fresh => return Some(shared.checkout(conn, start, start, true)),
            Verdict::Ping => shared.put_back(conn, None),
            Verdict::Close(reason) => shared.discard(conn, reason),
        }
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
            shared.auto_limit.fetch_min(ceiling, Relaxed);
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
