//! The multiplexed core: a few sockets, each carrying many requests at once, shared by
//! every caller of a pool. Redis shared mode, HTTP/2 and PostgreSQL pipelining are built
//! on it; the engine (`crate::engine`, feature `bb8`) is its counterpart for checked-out
//! connections.
//!
//! A backend implements [`Multiplexer`]: open a socket, giving back a cheap-to-clone
//! handle and a future that completes when the socket stops taking new requests (it died,
//! or the server said GOAWAY). [`MuxPool`] does the rest, once for every backend:
//!
//! - **routing**: [`MuxPool::lease`] claims one request on the least-loaded live socket
//!   (or the first with room, [`Routing::FirstWithRoom`]);
//!   requests in flight are capped per socket and per pool by a [`Gate`](crate::Gate)
//!   whose limit is `per_socket × live sockets` (at most `max_in_flight`), so callers that
//!   find no room, or no socket at all, wait first come first served, and a socket that
//!   comes up admits exactly as many waiters as it has room for (nobody is woken for
//!   nothing);
//! - **reconnects**: each socket slot has a task of its own that opens the socket with
//!   the shared back-off and jitter ([`crate::backoff`]), so a connect outlives a caller
//!   who gave up;
//! - **retirement**: on death, GOAWAY, `max_lifetime` (with jitter) or
//!   [`MuxPool::retire`], the socket leaves routing at once, its requests in flight finish
//!   on it (drain), and its slot reconnects in the background;
//! - **counts**: sockets live / connecting / draining, requests in flight and callers
//!   pending are read from their owners ([`MuxPool::sockets`], [`MuxPool::in_flight`],
//!   …) when stats or a scrape asks; nothing is counted twice.
//!
//! The hot path is a gate entry (one short lock), a read lock over the routing table with
//! a scan of a few atomics, and one compare-and-swap on the chosen socket's count.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use poolkit_core::mux::{Multiplexer, MuxConfig, MuxPool, Opened};
//!
//! /// An in-memory "socket": a number, never closing.
//! struct Numbers;
//! impl Multiplexer for Numbers {
//!     type Socket = u32;
//!     type Error = std::io::Error;
//!     async fn connect(&self) -> Result<Opened<u32>, std::io::Error> {
//!         Ok(Opened::new(7, std::future::pending()))
//!     }
//! }
//!
//! let pool = MuxPool::start(Numbers, MuxConfig::new("numbers", 2), None);
//! pool.wait_ready(Duration::from_secs(1)).await.unwrap();
//! let lease = pool.lease(Duration::from_secs(1)).await.unwrap();
//! assert_eq!(*lease, 7);
//! assert_eq!(pool.in_flight(), 1);
//! drop(lease); // the request is done
//! assert_eq!(pool.in_flight(), 0);
//! # }
//! ```

mod driver;
pub(crate) mod table;

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use thiserror::Error;

use crate::metrics::CloseReason;
use crate::{GateError, Place, Telemetry};
use table::{Entry, Pick, Table};

type Clock = quanta::Instant;

/// A backend's way to open a multiplexed socket. Implemented by Redis shared mode
/// (`MultiplexedConnection`), HTTP/2 (`SendRequest`) and PostgreSQL pipelining
/// (`tokio_postgres::Client`).
pub trait Multiplexer: Send + Sync + 'static {
    /// The handle requests are sent through; cloned once per request, so keep it cheap
    /// (an `Arc` or a channel sender).
    type Socket: Send + Sync + 'static;
    /// Why a connect failed.
    type Error: fmt::Display + Send + Sync + 'static;

    /// Opens one socket. The backend spawns whatever drives the socket itself; the
    /// returned [`Opened::closed`] future only observes it.
    fn connect(&self) -> impl Future<Output = Result<Opened<Self::Socket>, Self::Error>> + Send;

    /// Whether `socket` still takes new requests, asked of the chosen socket on every
    /// lease (keep it to an atomic load). A `false` retires the socket. Defaults to `true`.
    fn usable(&self, socket: &Self::Socket) -> bool {
        let _ = socket;
        true
    }
}

/// A socket just opened: its handle, and a future that completes when it stops taking
/// new requests, with the reason (for example [`CloseReason::Broken`] when the
/// connection task ended). Requests already in flight on it may still finish (GOAWAY).
pub struct Opened<S> {
    /// The handle requests go through.
    pub socket: S,
    /// Completes when the socket stops taking new requests. Dropping it must not close
    /// the socket (the socket closes when its last handle goes).
    pub closed: Pin<Box<dyn Future<Output = CloseReason> + Send>>,
}

impl<S> Opened<S> {
    /// A socket whose end is observed by `closed` (its output is taken as
    /// [`CloseReason::Broken`]).
    pub fn new(socket: S, closed: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            socket,
            closed: Box::pin(async move {
                closed.await;
                CloseReason::Broken
            }),
        }
    }

    /// A socket whose `closed` future gives its own reason.
    pub fn with_reason(
        socket: S,
        closed: impl Future<Output = CloseReason> + Send + 'static,
    ) -> Self {
        Self {
            socket,
            closed: Box::pin(closed),
        }
    }
}

impl<S> fmt::Debug for Opened<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Opened")
    }
}

/// How a [`MuxPool`] is shaped.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MuxConfig {
    /// The pool's name, for logs.
    pub name: String,
    /// Sockets to keep open (change it later with [`MuxPool::set_sockets`]).
    pub sockets: usize,
    /// The most sockets [`MuxPool::set_sockets`] may ask for.
    pub max_sockets: usize,
    /// Requests in flight on one socket at most.
    pub per_socket: usize,
    /// Requests in flight over all sockets at most.
    pub max_in_flight: usize,
    /// How long one connect attempt may take.
    pub connect_timeout: Duration,
    /// Retire a socket after this age (shortened by up to
    /// [`LIFETIME_JITTER`](crate::backoff::LIFETIME_JITTER)), draining it.
    pub max_lifetime: Option<Duration>,
    /// A socket with requests in flight and none finished for longer than this is
    /// *stalled*: routing prefers the others, and [`MuxPool::all_stalled`] tells a caller
    /// to go elsewhere (PostgreSQL's `P_SHARED_SPILL`).
    pub stall: Option<Duration>,
    /// What the telemetry's `used` gauge counts (requests, or sockets carrying any).
    pub used_gauge: UsedGauge,
    /// Which socket a request goes to.
    pub routing: Routing,
}

/// Which live socket a [`MuxPool`] gives a request to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Routing {
    /// The socket with the fewest requests in flight: the load spreads evenly (HTTP/2,
    /// PostgreSQL pipelining, where one slow request holds up those behind it).
    #[default]
    LeastLoaded,
    /// The first socket with room under `per_socket`, in the order they came up; the next
    /// takes only what the first has no room for, and every request while the first is
    /// away. For a pipelining protocol whose cost is per write and per read (Redis): one
    /// socket carrying 50 requests writes them in one batch, two sockets carrying 25 each
    /// write two, so at low concurrency the requests stay on one socket, and the others
    /// are open and ready when it drops or the load grows past `per_socket`.
    FirstWithRoom,
}

/// What a [`MuxPool`] reports as `used` to its telemetry (and so to stats, `/pools` and
/// `poolkit_connections{state="used"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UsedGauge {
    /// Requests in flight: for a pool whose ceiling is its in-flight cap (Redis shared).
    #[default]
    Requests,
    /// Sockets carrying at least one request: for a pool whose ceiling counts server
    /// connections that checkouts share too (PostgreSQL), so utilization stays the share
    /// of those connections in use.
    Sockets,
}

impl MuxConfig {
    /// `sockets` sockets (at most that many later), no caps, 5 s connect timeout, no
    /// lifetime, no stall bound.
    #[must_use]
    pub fn new(name: &str, sockets: usize) -> Self {
        Self {
            name: name.to_owned(),
            sockets,
            max_sockets: sockets,
            per_socket: usize::MAX,
            max_in_flight: usize::MAX,
            connect_timeout: Duration::from_secs(5),
            max_lifetime: None,
            stall: None,
            used_gauge: UsedGauge::Requests,
            routing: Routing::LeastLoaded,
        }
    }
}

/// Why [`MuxPool::lease`] or [`MuxPool::wait_ready`] failed, before the backend turns it
/// into its own error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MuxError<E> {
    /// No socket had room within the time given.
    #[error("no shared connection had room within {waited:?} ({pending} callers still waiting)")]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
        /// Callers still waiting when this one gave up.
        pending: usize,
        /// The last connect error while it waited, if a connect failed.
        connect: Option<Arc<E>>,
    },
    /// Connecting failed and no socket is open (from [`MuxPool::wait_ready`]).
    #[error("connect failed: {0}")]
    Connect(Arc<E>),
    /// The pool was closed.
    #[error("the pool is closed")]
    Closed,
}

/// What the routing table holds for one socket: the backend's handle and the telemetry
/// a lease reports to when it ends, so a lease holds one `Arc` (its socket's), not two.
pub(crate) struct Held<S> {
    socket: S,
    telemetry: Option<Arc<Telemetry>>,
}

impl<S> Held<S> {
    pub(crate) fn new(socket: S, telemetry: Option<Arc<Telemetry>>) -> Self {
        Self { socket, telemetry }
    }
}

/// What the pool's handles, leases' owners and slot tasks share.
pub(crate) struct Inner<M: Multiplexer> {
    mux: M,
    config: MuxConfig,
    table: Table<Held<M::Socket>>,
    telemetry: Option<Arc<Telemetry>>,
    slots: Vec<driver::SlotCtl>,
    wanted: AtomicUsize,
    closed: AtomicBool,
    next_id: AtomicU64,
    reconnects: AtomicU64,
    last_error: StdMutex<Option<(Clock, Arc<M::Error>)>>,
    /// Bumped at every install and failed connect; `wait_ready` watches it.
    changed: tokio::sync::watch::Sender<u64>,
    epoch: Clock,
}

impl<M: Multiplexer> Inner<M> {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
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

    fn close(&self) {
        if self.closed.swap(true, AcqRel) {
            return;
        }
        self.table.gate.close();
        for e in self.table.remove_all() {
            self.slots[e.slot].retire(CloseReason::PoolClosed);
        }
        for s in &self.slots {
            s.wake();
        }
    }
}

/// A few shared sockets and the requests in flight on them. Cheap to clone; the pool
/// closes when the last clone is dropped (requests in flight finish first).
pub struct MuxPool<M: Multiplexer> {
    inner: Arc<Inner<M>>,
    _owner: Arc<Owner<M>>,
}

/// Closes the pool when the last [`MuxPool`] goes (the slot tasks hold `Inner` only).
struct Owner<M: Multiplexer>(Arc<Inner<M>>);

/// The telemetry's gauges, read from the table when stats or a scrape asks: sockets open
/// (live and draining), requests in flight, callers waiting for room.
impl<M: Multiplexer> crate::GaugeSource for Inner<M> {
    fn gauges(&self) -> crate::Gauges {
        let open = self.table.live() + self.table.counts.draining.load(Relaxed);
        let used = match self.config.used_gauge {
            UsedGauge::Requests => self.table.gate.in_use(),
            UsedGauge::Sockets => self
                .table
                .snapshot()
                .iter()
                .filter(|e| e.in_flight() > 0)
                .count(),
        };
        crate::Gauges::new(open as u64, used as u64, self.table.gate.pending() as u64)
    }
}

impl<M: Multiplexer> Drop for Owner<M> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<M: Multiplexer> Clone for MuxPool<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _owner: Arc::clone(&self._owner),
        }
    }
}

impl<M: Multiplexer> fmt::Debug for MuxPool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxPool")
            .field("name", &self.inner.config.name)
            .field("sockets", &self.sockets())
            .field("connecting", &self.connecting())
            .field("draining", &self.draining())
            .field("in_flight", &self.in_flight())
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

/// One request's claim on a socket: derefs to the socket's handle. Dropping it says the
/// request is done (its gate place goes to the oldest waiter).
pub struct Lease<M: Multiplexer> {
    entry: crate::sync::Arc<Entry<Held<M::Socket>>>,
    started: Clock,
    /// Set by [`Lease::complete_timed`] or [`Lease::end`], so the drop does not count the
    /// request twice.
    completed: bool,
    /// Claimed by [`MuxPool::try_lease_idle`]: its socket is marked slow until it is done.
    slow: bool,
    epoch: Clock,
    _place: Place,
}

impl<M: Multiplexer> Lease<M> {
    /// The socket's id, unique in its pool (a reopened slot gets a new one).
    #[must_use]
    pub fn socket_id(&self) -> u64 {
        self.entry.id
    }

    /// Requests in flight on this socket now, this one included.
    #[must_use]
    pub fn socket_in_flight(&self) -> usize {
        self.entry.in_flight()
    }

    /// How long this request has held its place.
    #[must_use]
    pub fn held_for(&self) -> Duration {
        self.started.elapsed()
    }

    /// Ends the request (as dropping the lease does) and returns how long it held the
    /// head of its socket (the time since the socket's previous completion, or since this
    /// request started on an idle socket: on a socket that answers in order, a pipelined
    /// PostgreSQL connection, that is the request's own service time without the wait
    /// behind the ones before it) and how long it held its place ([`Lease::held_for`]),
    /// from one clock reading, which it also returns for the caller's own timing.
    pub fn complete_timed(mut self) -> Completed {
        self.completed = true;
        let (at, head, held) = self.finish_at();
        Completed {
            head: Duration::from_nanos(head),
            held,
            at,
        }
    }

    /// Ends the request (as dropping the lease does) and returns how long it held its
    /// place, read from the same clock reading the drop takes (one fewer than
    /// [`Lease::held_for`] before the drop).
    pub fn end(mut self) -> Duration {
        self.completed = true;
        self.finish().1
    }

    /// Counts the request done: returns the time at its socket's head (see
    /// [`Lease::complete_timed`]) and the time it held its place.
    fn finish(&self) -> (u64, Duration) {
        let (_, gap, held) = self.finish_at();
        (gap, held)
    }

    /// As [`Lease::finish`], with the clock reading it took.
    fn finish_at(&self) -> (Clock, u64, Duration) {
        let now = Clock::now();
        let nanos =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        // The socket's count first, so the waiter the place goes to finds room.
        let gap = self.entry.done(nanos, self.slow);
        let held = now.saturating_duration_since(self.started);
        if let Some(t) = &self.entry.socket.telemetry {
            t.record_release(held);
        }
        (now, gap, held)
    }
}

/// A request's end as [`Lease::complete_timed`] measured it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Completed {
    /// How long it held the head of its socket (see [`Lease::complete_timed`]).
    pub head: Duration,
    /// How long it held its place (see [`Lease::held_for`]).
    pub held: Duration,
    /// When it ended: the clock reading both come from, for the caller's own timing
    /// (the same clock as [`crate::QueryStart`]).
    pub at: Clock,
}

impl<M: Multiplexer> Deref for Lease<M> {
    type Target = M::Socket;
    fn deref(&self) -> &M::Socket {
        &self.entry.socket.socket
    }
}

impl<M: Multiplexer> fmt::Debug for Lease<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("socket", &self.entry)
            .finish()
    }
}

impl<M: Multiplexer> Drop for Lease<M> {
    fn drop(&mut self) {
        if !self.completed {
            self.finish();
        }
    }
}

/// Looks at the pool until `look` gives an answer, again after each change `rx` announces
/// (a socket installed, a connect failed); `None` at `deadline`.
///
/// The change is marked seen *before* each look: one that lands after the look and before
/// the wait is still unseen, so the wait ends at once. Marked after the look, it would be
/// taken as seen and the caller would sleep to its deadline beside an open socket (the
/// race `wait_ready` had; `tests::a_change_right_after_a_look_ends_the_wait`).
async fn look_until<T>(
    rx: &mut tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    mut look: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        rx.mark_unchanged();
        if let Some(answer) = look() {
            return Some(answer);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            // The sender lives in the pool's `Inner`, which outlives every caller.
            Ok(Err(_)) | Err(_) => return None,
        }
    }
}

thread_local! {
    /// Where this thread starts its scan of the sockets, so equal sockets share the load
    /// without a shared counter.
    static START: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn next_start() -> usize {
    START.with(|s| {
        let v = s.get().wrapping_add(1);
        s.set(v);
        v
    })
}

impl<M: Multiplexer> MuxPool<M> {
    /// Starts the pool: one task per socket slot opens its socket in the background (so
    /// this must run inside a tokio runtime). `telemetry`, when given, receives the events
    /// (opens, closes, connect errors, lease waits and hold times); its gauges are read
    /// from this pool.
    #[must_use]
    pub fn start(mux: M, config: MuxConfig, telemetry: Option<Arc<Telemetry>>) -> Self {
        let max_sockets = config.max_sockets.max(config.sockets).max(1);
        let table = Table::new(config.per_socket, config.max_in_flight);
        let table = match config.routing {
            Routing::LeastLoaded => table,
            Routing::FirstWithRoom => table.fill_first(),
        };
        let inner = Arc::new(Inner {
            table,
            slots: (0..max_sockets)
                .map(|_| driver::SlotCtl::default())
                .collect(),
            wanted: AtomicUsize::new(config.sockets.min(max_sockets)),
            closed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            reconnects: AtomicU64::new(0),
            last_error: StdMutex::new(None),
            changed: tokio::sync::watch::Sender::new(0),
            epoch: Clock::now(),
            mux,
            config,
            telemetry,
        });
        if let Some(t) = &inner.telemetry {
            let source: Arc<dyn crate::GaugeSource> = inner.clone();
            t.read_gauges_from(Arc::downgrade(&source));
        }
        for i in 0..max_sockets {
            tokio::spawn(driver::drive(Arc::clone(&inner), i));
        }
        Self {
            _owner: Arc::new(Owner(Arc::clone(&inner))),
            inner,
        }
    }

    /// The backend's [`Multiplexer`].
    #[must_use]
    pub fn multiplexer(&self) -> &M {
        &self.inner.mux
    }

    /// The configuration the pool was started with.
    #[must_use]
    pub fn config(&self) -> &MuxConfig {
        &self.inner.config
    }

    /// Waits until at least one socket is open.
    ///
    /// # Errors
    /// [`MuxError::Connect`] with the server's reason as soon as a connect fails while no
    /// socket is open; [`MuxError::Timeout`] after `timeout`; [`MuxError::Closed`].
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), MuxError<M::Error>> {
        let asked = Clock::now();
        let mut rx = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let looked = look_until(&mut rx, deadline, || {
            if self.inner.closed.load(Acquire) {
                return Some(Err(MuxError::Closed));
            }
            if self.sockets() > 0 {
                return Some(Ok(()));
            }
            self.inner
                .error_since(asked)
                .map(|e| Err(MuxError::Connect(e)))
        })
        .await;
        looked.unwrap_or_else(|| {
            Err(MuxError::Timeout {
                waited: asked.elapsed(),
                pending: self.pending(),
                connect: None,
            })
        })
    }

    fn claim(&self, place: Place, asked: Clock, hit: bool) -> Result<Lease<M>, Place> {
        self.claim_by(place, asked, hit, Pick::Any)
    }

    fn claim_by(
        &self,
        place: Place,
        asked: Clock,
        hit: bool,
        how: Pick,
    ) -> Result<Lease<M>, Place> {
        let inner = &*self.inner;
        // A caller served at once was asked a moment ago: that reading serves as now.
        let mut now = if hit { asked } else { Clock::now() };
        loop {
            let nanos = u64::try_from(now.saturating_duration_since(inner.epoch).as_nanos())
                .unwrap_or(u64::MAX);
            let stall = inner
                .config
                .stall
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            let Some(entry) = inner.table.pick_below(next_start(), nanos, stall, how) else {
                return Err(place);
            };
            let slow = how == Pick::IdleSlow;
            if !inner.mux.usable(&entry.socket.socket) {
                entry.done(nanos, slow);
                self.retire_socket(entry.id, CloseReason::Broken);
                now = Clock::now();
                continue;
            }
            if let Some(t) = &inner.telemetry {
                t.record_acquire(now.saturating_duration_since(asked), hit);
            }
            return Ok(Lease {
                entry,
                started: now,
                completed: false,
                slow,
                epoch: inner.epoch,
                _place: place,
            });
        }
    }

    /// A request slot now, if a socket has room and nobody waits ahead.
    #[must_use]
    pub fn try_lease(&self) -> Option<Lease<M>> {
        let asked = Clock::now();
        let place = self.inner.table.gate.try_enter()?;
        self.claim(place, asked, true).ok()
    }

    /// A request slot now on a socket with nothing in flight, if there is one, for a
    /// request known to be slow: it holds up nobody there. The socket counts as stalled
    /// until this request is done ([`MuxPool::all_stalled`] sees it), and
    /// [`MuxPool::try_lease_flowing`] passes it by; claiming and marking are one step, so
    /// no request can slip in between and queue behind it.
    #[must_use]
    pub fn try_lease_idle(&self) -> Option<Lease<M>> {
        let asked = Clock::now();
        let place = self.inner.table.gate.try_enter()?;
        self.claim_by(place, asked, true, Pick::IdleSlow).ok()
    }

    /// A request slot now on a socket that is not stalled (see [`MuxConfig::stall`]),
    /// if there is one and nobody waits ahead: a request that must not queue behind a
    /// slow one goes elsewhere when this is `None` and [`MuxPool::all_stalled`] says so.
    /// Whether the socket is stalled is decided in the same step that claims it.
    #[must_use]
    pub fn try_lease_flowing(&self) -> Option<Lease<M>> {
        let asked = Clock::now();
        let place = self.inner.table.gate.try_enter()?;
        self.claim_by(place, asked, true, Pick::Flowing).ok()
    }

    /// Claims one request on the least-loaded live socket, waiting first come first
    /// served at most `timeout` for room (or for a socket, while they reconnect).
    /// Cancel-safe: dropping the future takes no place and skips nobody.
    ///
    /// # Errors
    /// [`MuxError::Timeout`] (with the last connect error, if any); [`MuxError::Closed`].
    pub async fn lease(&self, timeout: Duration) -> Result<Lease<M>, MuxError<M::Error>> {
        if let Some(lease) = self.try_lease() {
            return Ok(lease);
        }
        self.lease_until(tokio::time::Instant::now() + timeout)
            .await
    }

    /// As [`MuxPool::lease`], with an absolute deadline.
    ///
    /// # Errors
    /// As [`MuxPool::lease`].
    pub async fn lease_until(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Lease<M>, MuxError<M::Error>> {
        let asked = Clock::now();
        let mut hit = true;
        loop {
            let place = match self.inner.table.gate.try_enter() {
                Some(p) => p,
                None => {
                    hit = false;
                    match self.inner.table.gate.enter_until(deadline).await {
                        Ok(p) => p,
                        Err(GateError::Closed) => return Err(MuxError::Closed),
                        Err(GateError::Timeout) => return Err(self.timed_out(asked)),
                    }
                }
            };
            match self.claim(place, asked, hit) {
                Ok(lease) => return Ok(lease),
                Err(place) => {
                    // The socket that made room went away between the gate and the table:
                    // wait again (the gate's limit already counts it out).
                    drop(place);
                    hit = false;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(self.timed_out(asked));
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    fn timed_out(&self, asked: Clock) -> MuxError<M::Error> {
        let waited = asked.elapsed();
        if let Some(t) = &self.inner.telemetry {
            t.timed_out(waited);
        }
        MuxError::Timeout {
            waited,
            pending: self.pending(),
            connect: self.inner.error_since(asked),
        }
    }

    fn retire_socket(&self, id: u64, reason: CloseReason) {
        if let Some(e) = self.inner.table.remove(id) {
            self.inner.slots[e.slot].retire(reason);
        }
    }

    /// Takes `lease`'s socket out of routing (a request on it showed it broken): new
    /// requests go to the others, its requests in flight finish, and its slot reconnects
    /// in the background. Harmless when the socket was already retired.
    pub fn retire(&self, lease: &Lease<M>, reason: CloseReason) {
        self.retire_socket(lease.entry.id, reason);
    }

    /// Retires every socket (the server moved: a failover); each slot reconnects.
    pub fn retire_all(&self, reason: CloseReason) {
        for e in self.inner.table.remove_all() {
            self.inner.slots[e.slot].retire(reason);
        }
    }

    /// Changes how many sockets are kept open (at most `max_sockets`); extra sockets
    /// drain and close, new ones open in the background.
    pub fn set_sockets(&self, n: usize) {
        let n = n.clamp(1, self.inner.slots.len());
        self.inner.wanted.store(n, Release);
        for s in &self.inner.slots {
            s.wake();
        }
    }

    /// Whether every live socket is stalled (requests in flight and none finished within
    /// `bound`); `false` when no socket is live.
    #[must_use]
    pub fn all_stalled(&self, bound: Duration) -> bool {
        let bound = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        self.inner.table.all_stalled(self.inner.now(), bound)
    }

    /// Closes the pool: waiters and later callers get [`MuxError::Closed`]; requests in
    /// flight finish, then the sockets close.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Whether the pool was closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Acquire)
    }

    // ---- counts, read from their owners ----

    /// Sockets live (taking requests).
    #[must_use]
    pub fn sockets(&self) -> usize {
        self.inner.table.live()
    }

    /// Sockets being opened.
    #[must_use]
    pub fn connecting(&self) -> usize {
        self.inner.table.counts.connecting.load(Relaxed)
    }

    /// Sockets retired and still finishing requests.
    #[must_use]
    pub fn draining(&self) -> usize {
        self.inner.table.counts.draining.load(Relaxed)
    }

    /// Sockets open: live plus draining (server connections held).
    #[must_use]
    pub fn open(&self) -> usize {
        self.sockets() + self.draining()
    }

    /// Sockets the pool keeps open (see [`MuxPool::set_sockets`]).
    #[must_use]
    pub fn wanted_sockets(&self) -> usize {
        self.inner.wanted.load(Relaxed)
    }

    /// Requests in flight over all sockets.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.inner.table.gate.in_use()
    }

    /// Callers waiting for room.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.inner.table.gate.pending()
    }

    /// Requests in flight on each live socket.
    #[must_use]
    pub fn loads(&self) -> Vec<usize> {
        self.inner
            .table
            .snapshot()
            .iter()
            .map(|e| e.in_flight())
            .collect()
    }

    /// Sockets opened since the start.
    #[must_use]
    pub fn opened(&self) -> u64 {
        self.inner.table.counts.opened.load(Relaxed)
    }

    /// Sockets reopened after one was retired or died.
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Relaxed)
    }

    /// The last connect error, if it happened within `within` from now.
    #[must_use]
    pub fn recent_error(&self, within: Duration) -> Option<Arc<M::Error>> {
        let since = Clock::now().checked_sub(within).unwrap_or(self.inner.epoch);
        self.inner.error_since(since)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::look_until;

    /// The `wait_ready` race, made deterministic: a socket is installed (the watch
    /// bumped) right after a look found none, before the wait starts. The wait must end
    /// at once; with the change marked seen after the look, it ran to its deadline.
    #[tokio::test(start_paused = true)]
    async fn a_change_right_after_a_look_ends_the_wait() {
        let (tx, mut rx) = tokio::sync::watch::channel(0u64);
        let started = Instant::now();
        let mut looks = 0;
        let answer = look_until(&mut rx, started + Duration::from_secs(10), || {
            looks += 1;
            if looks == 1 {
                tx.send_modify(|v| *v += 1); // the install lands here
                return None;
            }
            Some("ready")
        })
        .await;
        assert_eq!(answer, Some("ready"));
        assert_eq!(looks, 2);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no wait for the deadline"
        );
    }

    /// With no change the wait runs to its deadline, and a change before the first look
    /// does not count as one after it.
    #[tokio::test(start_paused = true)]
    async fn without_a_change_the_wait_ends_at_the_deadline() {
        let (tx, mut rx) = tokio::sync::watch::channel(0u64);
        tx.send_modify(|v| *v += 1);
        let started = Instant::now();
        let mut looks = 0;
        let answer: Option<()> = look_until(&mut rx, started + Duration::from_secs(10), || {
            looks += 1;
            None
        })
        .await;
        assert_eq!(answer, None);
        assert_eq!(looks, 1);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
