//! The pool's shared connections: statements run on the `Pool` itself are pipelined over
//! a few tokio-postgres clients through poolkit-core's multiplexed core
//! ([`poolkit_core::mux`]). This file holds the connection side (opening a shared client,
//! how many there are, which statements are slow); the statements themselves are in
//! `pipelined.rs`, the `auto` controller's task in `shared_auto.rs` and the session-state
//! check in `session_state.rs`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use poolkit_core::mux::{Multiplexer, MuxConfig, MuxPool, Opened};
use tokio_postgres::Client;

use crate::connect::ConnectError;
use crate::manager::Manager;

/// Statements in flight on one shared connection at most; callers beyond it wait first
/// come, first served in the multiplexed core's gate. The server runs a connection's
/// statements one after another, so a deeper pipeline does not go faster: a few hundred
/// cover the round trip and let writes batch. Unbounded, 10,000 callers were all in
/// flight at once, their order left to the runtime's scheduling (p95 about twice the
/// p50); capped, they keep their order in the gate (docs/benchmarks.md). Two connections
/// carry 1,024 before anyone waits, so 1,000 callers never do.
pub(crate) const DEPTH: usize = 512;

/// The default `P_SHARED_SPILL`.
pub(crate) const DEFAULT_SPILL: Duration = Duration::from_millis(5);

/// How many shared connections a pool keeps (`P_SHARED_CONNECTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SharedConnections {
    /// Sized from what it measures (the default), by the controller of `P_POOL_SIZE=auto`
    /// (its own instance): starts at 1, grows while statements queue behind busy
    /// connections and another connection adds throughput, backs off when it does not,
    /// shrinks when they idle. At most a quarter of the ceiling (at least 1, at most 16);
    /// off when the ceiling is 1.
    #[default]
    Auto,
    /// This many, always.
    Fixed(u32),
    /// None: statements on the pool check out a connection (`P_SHARED_CONNECTIONS=0`).
    Off,
}

impl SharedConnections {
    /// Parses `auto`, `0`/`off` or a number.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Some(Self::Auto);
        }
        if s.eq_ignore_ascii_case("off") {
            return Some(Self::Off);
        }
        match s.parse::<u32>().ok()? {
            0 => Some(Self::Off),
            n => Some(Self::Fixed(n)),
        }
    }

    /// (first, most) shared connections for a pool whose ceiling is `ceiling`; `None`
    /// when off.
    pub(crate) fn range(self, ceiling: u32) -> Option<(usize, usize)> {
        match self {
            Self::Off => None,
            Self::Fixed(n) => Some((n as usize, n as usize)),
            Self::Auto if ceiling < 2 => None,
            Self::Auto => {
                let most = (ceiling / 4).clamp(1, 16) as usize;
                Some((1, most))
            }
        }
    }
}

impl fmt::Display for SharedConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Off => f.write_str("0"),
        }
    }
}

/// Whether a shared connection may open now, given how many shared connections are open
/// or opening (the one asking included): the pool's server connections, exclusive and
/// shared, stay within its ceiling or fleet share.
pub(crate) type Room = Box<dyn Fn(u32) -> bool + Send + Sync>;

/// Opens shared tokio-postgres clients with the pool's manager (TLS, credentials,
/// resolver, `target_session_attrs`, keep-alive and `statement_timeout` as for every
/// connection); a client's end is seen when its connection task ends.
///
/// A connection opens only when it fits beside the exclusive ones ([`Room`]). The pool
/// caps its exclusive side for the shared connections before they open, but a connection
/// checked out above the new cap closes only when it comes back: a shared connection
/// opened at once would put the pool one over its ceiling (a fleet one over its budget)
/// until then. So the connect waits for the room, within its connect timeout.
#[derive(Clone)]
pub(crate) struct PgMux {
    manager: Manager,
    /// Shared connections open or opening.
    held: Arc<AtomicUsize>,
    room: Arc<Room>,
}

impl fmt::Debug for PgMux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgMux")
            .field("manager", &self.manager)
            .field("held", &self.held.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// One shared connection open or opening, counted in [`PgMux::held`] until dropped.
struct Held(Arc<AtomicUsize>);

impl Held {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Relaxed);
        Self(Arc::clone(count))
    }

    fn count(&self) -> u32 {
        u32::try_from(self.0.load(Relaxed)).unwrap_or(u32::MAX)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl PgMux {
    /// Shared connections open or opening, until each one's connection task ends.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Relaxed)
    }
}

impl Multiplexer for PgMux {
    type Socket = Client;
    type Error = ConnectError;

    async fn connect(&self) -> Result<Opened<Client>, ConnectError> {
        let held = Held::new(&self.held);
        let mut pause = Duration::from_millis(1);
        while !(self.room)(held.count()) {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        let (client, ended) = self.manager.connect_watched(None).await?;
        // Counted until the core lets the connection go (it drops this future then) or
        // its connection task ends.
        Ok(Opened::new(client, async move {
            let _held = held;
            let _ = ended.await;
        }))
    }

    fn usable(&self, client: &Client) -> bool {
        !client.is_closed()
    }
}

/// Statements seen to hold a shared connection's head longer than the spill bound, by SQL
/// text: they then run on a shared connection only when one is idle, else on a checkout,
/// so the fast statements pipelined behind them are not held up.
///
/// A run is slow when it held its connection's head longer than the bound. Two slow
/// runs in a row mark a statement, or one that held an idle connection's head ten times
/// longer than the bound (a busy runtime can delay a fast statement's task past the
/// bound now and then; hardly ten times over). A fast run clears it, with one care: how
/// long a statement held the head is read when the task that waited for its answer
/// runs, and on a busy runtime tasks do not always run in the order their answers came.
/// A slow statement's task may run after the fast one queued behind it, which then reads
/// the slow one's time as its own and leaves the slow one a short one. A statement marked
/// slow runs alone (on an idle shared connection or a checkout), and only its whole time
/// from lease to answer, which such a mix-up cannot shorten, clears it: it never goes
/// back into the pipeline by mistake.
#[derive(Debug, Default)]
pub(crate) struct SlowStatements {
    any: std::sync::atomic::AtomicBool,
    /// Strikes, and whether a run alone took more than [`CLEARLY_SLOW`] times the bound
    /// (confirmed: a fast statement hardly looks that slow on its own).
    strikes: std::sync::RwLock<std::collections::HashMap<Box<str>, (u8, bool)>>,
}

/// Strikes that mark a statement slow: a slow run gives one, a run alone over
/// [`CLEARLY_SLOW`] times the bound all of them.
const STRIKES: u8 = 2;

/// A run alone this many times over the bound is slow at once.
const CLEARLY_SLOW: u32 = 10;

/// More distinct slow statements than this and the set starts over.
const SLOW_LIMIT: usize = 1024;

/// How a run of a statement was measured (see [`SlowStatements`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// How long it held its connection's head (on a checkout: its whole time).
    pub(crate) head: Duration,
    /// Its whole time from lease to answer, when that is its own service time: it
    /// started on an idle shared connection or ran on a checkout (`None`: pipelined
    /// behind others).
    pub(crate) alone: Option<Duration>,
}

impl SlowStatements {
    /// Whether `sql` is marked slow.
    pub(crate) fn is_slow(&self, sql: &str) -> bool {
        self.slow(sql).is_some()
    }

    /// `Some` when `sql` is marked slow, with whether that was confirmed by a run of its
    /// own (alone on a connection) over [`CLEARLY_SLOW`] times the bound: a statement
    /// marked from its time at a pipeline's head, or a little over the bound alone, may be
    /// a fast one that a busy runtime (a loaded machine's scheduler takes a thread away
    /// for several milliseconds) or a mix-up made look slow.
    pub(crate) fn slow(&self, sql: &str) -> Option<bool> {
        if !self.any.load(Relaxed) {
            return None;
        }
        self.strikes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(sql)
            .filter(|(s, _)| *s >= STRIKES)
            .map(|(_, confirmed)| *confirmed)
    }

    /// `sql` ran as `run` (`bound`: the spill bound).
    pub(crate) fn observe(&self, sql: &str, run: Run, bound: Duration) {
        if run.head > bound {
            let strikes = if run.alone.is_some() && run.head > bound * CLEARLY_SLOW {
                STRIKES
            } else {
                1
            };
            let mut map = self
                .strikes
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.len() >= SLOW_LIMIT {
                map.clear();
            }
            let (s, confirmed) = map.entry(sql.into()).or_insert((0, false));
            *s = s.saturating_add(strikes).min(STRIKES);
            *confirmed |= strikes == STRIKES;
            self.any.store(true, Relaxed);
        } else if run.alone.is_none_or(|whole| whole <= bound) && self.any.load(Relaxed) {
            let known = self
                .strikes
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(sql);
            if known {
                let mut map = self
                    .strikes
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                map.remove(sql);
                self.any.store(!map.is_empty(), Relaxed);
            }
        }
    }
}

/// The shared side of one pool.
pub(crate) struct Shared {
    /// Statements known to be slow.
    pub(crate) slow: SlowStatements,
    pub(crate) mux: MuxPool<PgMux>,
    pub(crate) spill: Duration,
    /// Statements sent to an exclusive checkout because every shared connection stalled.
    pub(crate) spilled: AtomicU64,
    /// Statements run on the shared connections.
    pub(crate) statements: AtomicU64,
    /// Statements confirmed slow waiting for a checkout now (not those only marked from
    /// their time at a pipeline's head: a fast statement marked by mistake sends its
    /// callers to the checkouts until its first run there clears it, and were the others
    /// to follow them, a burst would keep the whole pool on checkouts for a while).
    waiting: AtomicUsize,

    /// Of the spilled statements, those sent to a checkout because every shared
    /// connection was stalled: the only spills that say the shared connections are too
    /// few (a known-slow statement, or one waiting its turn behind those, would go to a
    /// checkout with any number of them).
    pub(crate) stalled: AtomicU64,
    pub(crate) auto: bool,
    /// The most shared connections (the range's top).
    pub(crate) most: usize,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("mux", &self.mux)
            .field("spill", &self.spill)
            .field("auto", &self.auto)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Starts the shared connections (they open in the background), at most `limit` (a
    /// fleet share) of them.
    pub(crate) fn start(
        manager: Manager,
        config: &crate::Config,
        telemetry: Arc<poolkit_core::Telemetry>,
        limit: Option<u32>,
        room: Room,
    ) -> Option<Arc<Self>> {
        let (first, most) = config.shared.range(config.pool.ceiling())?;
        let limit = limit.map_or(usize::MAX, |l| l as usize);
        let first = first.min(limit).max(1);
        let mut mc = MuxConfig::new(&config.pool.name, first);
        mc.max_sockets = most.max(first);
        mc.connect_timeout = config
            .connect_timeout
            .unwrap_or(config.pool.acquire_timeout.min(Duration::from_secs(10)));
        mc.max_lifetime = config.pool.max_lifetime;
        mc.stall = Some(config.shared_spill);
        mc.per_socket = DEPTH;
        // The ceiling counts server connections, which checkouts share: a shared
        // connection is `used` while it carries a statement (statements in flight are in
        // `Pool::shared_connections()`), so utilization stays a share of connections.
        mc.used_gauge = poolkit_core::mux::UsedGauge::Sockets;
        let mux = MuxPool::start(
            PgMux {
                manager,
                held: Arc::new(AtomicUsize::new(0)),
                room: Arc::new(room),
            },
            mc,
            Some(telemetry),
        );
        Some(Arc::new(Self {
            mux,
            spill: config.shared_spill,
            spilled: AtomicU64::new(0),
            statements: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            stalled: AtomicU64::new(0),
            slow: SlowStatements::default(),
            auto: config.shared == SharedConnections::Auto,
            most,
        }))
    }

    /// Spilled statements so far.
    pub(crate) fn spilled(&self) -> u64 {
        self.spilled.load(Relaxed)
    }

    /// Whether checkouts queue long: statements confirmed slow wait for one.
    pub(crate) fn queue_long(&self) -> bool {
        self.waiting.load(Relaxed) > 0
    }

    /// Counts one statement waiting for a checkout until the guard drops (the checkout
    /// came, failed, or the caller gave up).
    pub(crate) fn in_line(&self) -> InLine<'_> {
        self.waiting.fetch_add(1, Relaxed);
        InLine(&self.waiting)
    }
}

/// One statement on the pool waiting for a checkout (see [`Shared::in_line`]).
pub(crate) struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_runs_mark_a_statement_and_a_fast_one_clears_it() {
        let slow = SlowStatements::default();
        let bound = Duration::from_millis(5);
        let ms = Duration::from_millis;
        let piped = |head| Run { head, alone: None };
        let alone = |d| Run {
            head: d,
            alone: Some(d),
        };
        let sleep = "SELECT pg_sleep(1)";
        slow.observe(sleep, piped(ms(20)), bound);
        assert!(!slow.is_slow(sleep), "one slow run is not enough");
        slow.observe(sleep, piped(ms(20)), bound);
        assert_eq!(
            slow.slow(sleep),
            Some(false),
            "two in a row are, unconfirmed"
        );
        assert!(!slow.is_slow("SELECT 1"));
        slow.observe("SELECT 1", piped(ms(0)), bound);
        assert!(slow.is_slow(sleep));
        // Its task ran after the fast one behind it: a short time at the head, but its
        // whole time says it was slow.
        slow.observe(
            sleep,
            Run {
                head: ms(0),
                alone: Some(ms(1000)),
            },
            bound,
        );
        assert_eq!(slow.slow(sleep), Some(false), "not cleared by a mix-up");
        slow.observe(sleep, alone(ms(20)), bound);
        assert_eq!(
            slow.slow(sleep),
            Some(false),
            "a little slow alone: not confirmed"
        );
        slow.observe(sleep, alone(ms(1000)), bound);
        assert_eq!(
            slow.slow(sleep),
            Some(true),
            "confirmed by a run alone ten times over"
        );
        slow.observe(sleep, alone(ms(1)), bound);
        assert!(!slow.is_slow(sleep), "a fast run clears it");
        slow.observe(sleep, alone(ms(20)), bound);
        assert!(
            !slow.is_slow(sleep),
            "a little over the bound once is not enough"
        );
        slow.observe(sleep, alone(ms(1)), bound);
        slow.observe(sleep, alone(ms(60)), bound);
        assert!(
            slow.is_slow(sleep),
            "ten times over on an idle connection is"
        );
        slow.observe(sleep, alone(ms(1)), bound);
        slow.observe(sleep, piped(ms(20)), bound);
        slow.observe(sleep, piped(ms(1)), bound);
        slow.observe(sleep, piped(ms(20)), bound);
        assert!(!slow.is_slow(sleep), "strikes count in a row only");
    }

    #[test]
    fn shared_connections_parse_and_range() {
        assert_eq!(
            SharedConnections::parse("auto"),
            Some(SharedConnections::Auto)
        );
        assert_eq!(SharedConnections::parse("0"), Some(SharedConnections::Off));
        assert_eq!(
            SharedConnections::parse("4"),
            Some(SharedConnections::Fixed(4))
        );
        assert_eq!(SharedConnections::parse("many"), None);
        assert_eq!(SharedConnections::Auto.range(1), None);
        assert_eq!(SharedConnections::Auto.range(2), Some((1, 1)));
        assert_eq!(SharedConnections::Auto.range(20), Some((1, 5)));
        assert_eq!(SharedConnections::Fixed(3).range(20), Some((3, 3)));
    }
}
