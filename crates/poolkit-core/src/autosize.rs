//! `P_POOL_SIZE=auto`: the controller that sizes a pool from what it measures.
//!
//! It is an adaptive concurrency limit in the manner of TCP Vegas (and of Netflix's
//! concurrency-limits and Envoy's adaptive concurrency filter), applied to a connection
//! pool. The limit is the pool's *open limit*: the engine opens at most that many connections,
//! and callers beyond it queue. Once per interval the engine's task hands the controller a
//! [`Sample`] of the last interval (checkouts, the mean time a connection was held, callers
//! queued), and the controller reasons with Little's law:
//!
//! - The **unloaded hold time** is the hold time measured with few connections in use: at
//!   the floor when the pool starts, whenever the load is light, and under a steady load by
//!   a short *downward probe* (half the size for two intervals) every 300 intervals under
//!   load (intervals while the pool is idle do not count), for [`Units::Requests`] also 20
//!   intervals after slow start ends (the floor's one connection in the pool's first
//!   interval is the least reliable measurement), and sooner when the throughput stays
//!   under half of what it was at the last growth for 20 decisions in a row.
//!   "Few in use" counts the connections checked out at the interval's start and end as
//!   well as the mean: an interval in which a heavy load began or ended has a light load's
//!   mean and a heavy load's hold time, and is not an unloaded measurement. With more
//!   connections in use, a lower *recent* hold time (smoothed as below) lowers it; one
//!   lucky interval does not.
//! - With throughput `x`, the server does the work of `x × unloaded` connections at a
//!   time (smoothed over the intervals spent at the current size, 0.3 for the newest:
//!   one noisy interval on a busy machine does not move the size); the rest of the
//!   connections in use (`x × hold`) wait *inside* the server. That is Vegas's queue
//!   estimate: requests that more connections only move from the pool's queue into the
//!   server's (where they cost CPU, locks, memory).
//! - While callers queue and every connection is in use, it **grows**. At first (slow
//!   start) it grows until the server's queue is over `beta`, so that the back-off that
//!   ends slow start lands in the middle of the band: by up to the callers waiting, at
//!   most to four times its size per interval while the queue is under `alpha`, and once
//!   it is over `alpha` only to where it would reach `beta` if the server could do no
//!   more at once (a step of four times from near the knee overshoots it as far). With
//!   10 ms statements the hold time stays flat, so it climbs to the ceiling in a few
//!   intervals.
//! - It **backs off** when the server's queue is above `beta` (more connections no longer
//!   raise throughput, or the server's response time rose): the first time straight to
//!   the size that leaves about `(alpha + beta) / 2` there, afterwards towards it by a
//!   quarter of the size at most per interval. Between the two it holds. `alpha` and
//!   `beta` are concurrency-limits' Vegas's, 3 and 6 × log10 of the size (at least 1 and
//!   2), and at least a quarter and a half of the server's parallel work: a hold time up
//!   to 1.5 × the unloaded one is tolerated (concurrency-limits' gradient tolerance),
//!   which matters for servers that work for many connections at once. After the first
//!   back-off it grows by `alpha / 2` per interval while the queue is under `alpha` (TCP's
//!   congestion avoidance after slow start), until the pool next shrinks when idle.
//! - With [`Units::Requests`], after slow start, it **keeps a larger size that does more**.
//!   The queue estimate takes all of a hold time over the unloaded one for waiting inside
//!   the server; on a machine whose cores the client and the server share, part of it is
//!   the response waiting for the client, and connections past the band still add
//!   throughput by overlapping the two (pgbench's select at 100 users on two cores: the
//!   band settled at 7, where 10 did 1.5–6.5 % more). So the controller keeps the median
//!   throughput of each size's recent intervals under load (at least 8 intervals, each
//!   counted for 100 intervals under load, and compared only with intervals that had
//!   from half to twice as many callers), does not back off from a size that measured
//!   over 1.02 × every smaller size, and, while in the band, at most once per 50
//!   intervals under load, tries the size one step larger for 10 intervals: kept while
//!   it measures more, left for the size it came from otherwise. A larger size measured
//!   recently as no faster is not tried again until that measurement expires.
//! - It **holds** while the throughput is under a third of what it was when the pool last
//!   grew: the whole machine stalls (a client starved of CPU by other processes, a network
//!   hiccup), every hold time rises with it, and backing off would not help; measured on
//!   a 2-core machine shared with compilers, where the pool otherwise fell to 1–3.
//! - It **shrinks** when the connections in use stay below half the open limit for the idle
//!   timeout, down to what was used (at least the floor, `P_POOL_MIN_IDLE`, or 1).
//! - Never above the ceiling (`P_POOL_MAXSIZE`), and never more than one change per
//!   interval (`P_POOL_AUTO_INTERVAL`, 100 ms by default).
//!
//! A server that becomes slower for every size (a heavier statement mix) looks like an
//! overloaded one at first: the pool backs off, and the probe that follows soon after
//! learns the new unloaded hold time, and the pool grows back.
//!
//! A Redis pool's band is wider ([`Units::EventLoop`]): Redis serves every connection from
//! one event loop, in batches, so requests waiting inside it raise its throughput instead
//! of contending for cores.
//!
//! The same controller sizes a PostgreSQL pool's shared (pipelined) connections
//! (`P_SHARED_CONNECTIONS=auto`), built with [`Controller::pipelined`]: there a unit is a
//! connection whose backend runs statements back to back, and the band between growing and
//! backing off is narrower ([`Units::Pipelines`]).
//!
//! This module is pure logic (no clock, no tasks), unit-tested below; the engine and the
//! shared connections' task run it.

use std::fmt;
use std::time::Duration;

/// How a pool's size is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Sizing {
    /// `pool_size` and `max_size` as configured (or as set by a resize).
    #[default]
    Fixed,
    /// An open limit between the floor (`min_idle`, at least 1) and the ceiling (`max_size`),
    /// moved by the [`Controller`]. Env: `P_POOL_SIZE=auto`.
    Auto,
}

/// The default interval between two decisions. Env: `P_POOL_AUTO_INTERVAL`.
///
/// Short, so that a pool under a sudden load reaches its size within a few tenths of a
/// second; the band between growing and backing off (see [`Controller`]) keeps a steady
/// load from moving it every interval.
pub const DEFAULT_AUTO_INTERVAL: Duration = Duration::from_millis(100);

/// Fewer returns than this in an interval say too little about the hold time to act on:
/// intervals are then pooled (up to [`MAX_WINDOW`]) until they say enough.
const MIN_RETURNS: u64 = 8;
/// The most intervals pooled into one decision (statements that take longer than an
/// interval).
const MAX_WINDOW: u32 = 20;
/// Intervals under load between two downward probes of the unloaded hold time. Counted
/// under load only: a pool that was idle for a while does not probe as soon as callers come
/// back, when it is finding its size again.
const PROBE_EVERY: u64 = 300;
/// Intervals under load after slow start ends (its first back-off) before the first probe.
/// The unloaded hold time slow start reasoned with came from the pool's first interval, one
/// connection for 100 ms, the least reliable measurement it makes: for the same pgbench
/// select it read 0.033 ms in one run and 0.094 ms in the next (the client's threads asleep
/// between commands or not), and the pool settled at 4 against 7–9, where 10 was best.
/// Measured again at half the settled size, with the load that size carries, it is what the
/// pool runs at. For [`Units::Requests`] only: pipelines measure again before they grow,
/// and an event loop's hold time at half its size is already a loaded one (Redis at 10
/// connections holds 3 × what it does at 4, and a pool that took that for the unloaded one
/// went to a ceiling of 50 where 20–30 do as much).
const FIRST_PROBE: u64 = 20;
/// Decisions in a row at under half the throughput of the pool's last growth after which it
/// probes (the server may simply have become slower for every size, which only a probe can
/// tell; a machine that stalls for a moment does not make it probe).
const PROBE_SOON: u64 = 20;
/// The weight of the newest interval in the smoothed estimate of the connections' worth of
/// work the server does at once (about three intervals' memory): one noisy interval on a
/// busy machine does not move the size.
const SMOOTHING: f64 = 0.3;
/// Below this share of the throughput it had when it last grew, the pool holds its size
/// rather than backing off (see [`Controller::decide`]).
const COLLAPSE: f64 = 0.3;

/// The checks [`crate::PoolConfig::validate`] adds for [`Sizing::Auto`]: a ceiling is
/// required, and the interval must be at least 10 ms.
pub(crate) fn validate(c: &crate::PoolConfig) -> Result<(), crate::ConfigError> {
    use crate::Knob;
    if c.max_size.is_none() {
        return Err(crate::ConfigError::Missing {
            var: c.var(Knob::MaxSize),
            hint: format!(
                "{}=auto needs a ceiling: set {} to the most connections this pool may open (for example 30)",
                c.var(Knob::PoolSize),
                c.var(Knob::MaxSize)
            ),
        });
    }
    if c.auto_interval < Duration::from_millis(10) {
        return Err(crate::ConfigError::Invalid {
            var: c.var(Knob::AutoInterval),
            value: format!("{:?}", c.auto_interval),
            expected: "a duration of at least 10ms (the least time between two size changes)"
                .to_owned(),
        });
    }
    Ok(())
}

/// The floor of an auto-sized pool: `min_idle`, at least 1.
#[must_use]
pub fn floor(c: &crate::PoolConfig) -> u32 {
    c.min_idle.max(1)
}

/// What the pool did during one interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// The interval's length.
    pub elapsed: Duration,
    /// Checkouts during it.
    pub acquires: u64,
    /// Mean time a connection was held, in seconds (0 when none came back).
    pub hold_secs: f64,
    /// Connections that came back during it (what `hold_secs` is the mean of).
    pub returns: u64,
    /// Connections checked out at the end of the interval.
    pub busy: u64,
    /// Callers waiting at the end of the interval.
    pub pending: u64,
    /// Share of the interval's checkouts that had to wait (0 to 1).
    pub waited_share: f64,
    /// The current ceiling (`max_size`, possibly lowered by a resize or a fleet share).
    pub ceiling: u32,
}

impl Sample {
    /// Checkouts per second.
    #[must_use]
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let n = self.acquires as f64;
        n / secs
    }

    /// Connections in use on average (Little's law: throughput × hold time); when none
    /// came back, those checked out at the end.
    #[must_use]
    pub fn in_use(&self) -> f64 {
        if self.returns == 0 {
            #[allow(clippy::cast_precision_loss)]
            return self.busy as f64;
        }
        self.throughput() * self.hold_secs
    }

    /// Whether callers queued for a connection.
    #[must_use]
    pub fn queued(&self) -> bool {
        self.pending > 0 || self.waited_share >= 0.2
    }
}

/// Why the open limit changed (logged, and kept as [`Controller::last_reason`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reason {
    /// Callers queued while the server had room (its queue below `alpha`): grow.
    Queued {
        /// Callers waiting.
        pending: u64,
        /// Requests estimated to wait inside the server.
        server_queue: f64,
    },
    /// Requests queue inside the server (its queue above `beta`): back off to the size
    /// that leaves about `(alpha + beta) / 2` there. More connections add no throughput,
    /// or the server's response time rose.
    Congested {
        /// The unloaded hold time, in seconds.
        unloaded: f64,
        /// The mean hold time in the last interval, in seconds.
        hold: f64,
        /// Requests estimated to wait inside the server.
        server_queue: f64,
    },
    /// A short step down, to measure the unloaded hold time again.
    Probe,
    /// The probe is over: back to the size before it.
    ProbeDone {
        /// The unloaded hold time it measured, in seconds.
        unloaded: f64,
    },
    /// In the band under load for a while: a size one step larger is tried, and kept
    /// while it measures more throughput than the smaller ones.
    Explore {
        /// The median throughput at the size before, in checkouts per second.
        throughput: f64,
    },
    /// Few connections were used for the idle timeout.
    Idle {
        /// Most connections in use (on average per interval) during that time.
        used: f64,
    },
    /// The ceiling was lowered below the open limit.
    Ceiling,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Queued {
                pending,
                server_queue,
            } => write!(
                f,
                "{pending} callers queued and about {server_queue:.1} requests wait inside the server: growing"
            ),
            Self::Congested {
                unloaded,
                hold,
                server_queue,
            } => write!(
                f,
                "hold time {:.2} ms against {:.2} ms unloaded: about {server_queue:.1} requests wait inside the server, where more connections add no throughput",
                hold * 1e3,
                unloaded * 1e3
            ),
            Self::Probe => f.write_str("probing the unloaded hold time with fewer connections"),
            Self::ProbeDone { unloaded } => write!(
                f,
                "unloaded hold time {:.2} ms: back to the size before the probe",
                unloaded * 1e3
            ),
            Self::Explore { throughput } => write!(
                f,
                "trying one step larger ({throughput:.0} checkouts per second at the size before)"
            ),
            Self::Idle { used } => {
                write!(
                    f,
                    "at most {used:.1} connections in use for the idle timeout"
                )
            }
            Self::Ceiling => f.write_str("the ceiling was lowered"),
        }
    }
}

/// A change of open limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The open limit before.
    pub from: u32,
    /// The open limit after.
    pub to: u32,
    /// Why.
    pub reason: Reason,
}

/// The unloaded hold time, and the connections in use when it was measured.
#[derive(Debug, Clone, Copy)]
struct Base {
    hold: f64,
    at: f64,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    restore: u32,
    /// The first interval after the step down is skipped (busy connections above the new
    /// open limit close as they come back).
    warming: bool,
    /// The intervals measured at the lower size so far.
    window: Window,
}

/// With [`Units::Pipelines`], an unloaded hold time measured more than this many decisions
/// ago is measured again (a probe) before the pool grows outside slow start.
const FRESH: u64 = 10;

/// With [`Units::Pipelines`], a hold time under this share of the unloaded one, with more
/// connections in use, says the unloaded one was measured on a slower machine: it is
/// measured again before the pool grows (a smaller difference is a busy machine's noise).
const STALE: f64 = 0.8;

/// With [`Units::Pipelines`], decisions after a back-off during which the pool does not
/// grow. A connection that is worth about one connection's band (the second one for
/// `SELECT 1` on a busy machine) would otherwise come and go every other interval: at
/// the size of the unloaded measurement there is no server queue to read, so the pool
/// grows, and backs off at the next.
const CALM: u64 = 20;

/// The most intervals a probe measures to collect [`MIN_RETURNS`] returns.
const PROBE_MAX_INTERVALS: u32 = 5;

/// With [`Units::Requests`], the throughput measured at a size counts for this many
/// intervals under load (10 s at the default interval); older measurements are dropped,
/// so a size kept because it was faster is measured against the smaller one again.
const RATE_MEMORY: u64 = 100;

/// The fewest intervals at one size whose median throughput is compared with another's.
const RATE_MIN: usize = 8;

/// How much more throughput (the median over [`RATE_MIN`] or more intervals) a larger
/// size must have measured than every smaller one, recently, to be kept where the server's
/// queue says to back off. On a busy machine such medians scatter by a few per cent, so
/// noise crosses it too, and the pool then keeps a size one step past the best until the
/// measurements expire ([`RATE_MEMORY`]): on the flat tops measured, under 2 % of
/// throughput (docs/benchmarks.md, issue 23 round twelve).
const RATE_MARGIN: f64 = 1.02;

/// With [`Units::Requests`], the fewest intervals under load between two tries of a size
/// one step larger (see [`Controller::decide`]).
const EXPLORE_EVERY: u64 = 50;

/// What one unit of the open limit carries, which sets how much queueing inside the
/// server the [`Controller`] tolerates before it backs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Units {
    /// Connections that each carry one request at a time (checkouts): between two
    /// requests a connection waits for its caller's round trip, during which the server
    /// does nothing for it, so a few connections waiting inside the server cost little.
    /// `alpha` and `beta` are concurrency-limits' Vegas's, 3 and 6 × log10 of the size
    /// (at least 1 and 2).
    #[default]
    Requests,
    /// Pipelined connections (the shared side of a PostgreSQL pool): each keeps its
    /// server backend busy without a round trip between statements, so a connection whose
    /// backend waits for a core buys nothing, and one whole connection waiting inside the
    /// server is already a lot. `alpha` and `beta` are half a connection and one (still
    /// at least a quarter and a half of the server's parallel work, the tolerance for a
    /// noisy machine). The sample's `busy` and hold time are then those of the
    /// connections' heads (see `poolkit_postgres`'s shared connections).
    ///
    /// A band this narrow needs a true unloaded head time: probes step down to the floor
    /// (one backend alone) rather than to half, and outside slow start the pool grows
    /// only on a measurement at most 10 decisions old, or measures again first; so it
    /// does as soon as a head time well under the unloaded one (a fifth) shows that
    /// was measured on a slower machine (the pool starting, other processes).
    Pipelines,
    /// Connections to a server that serves them all from one event loop (Redis): a
    /// request waiting inside it costs no core of its own and no lock, and the loop
    /// serves what waits in batches, so a queue there raises throughput rather than
    /// contending for it. Measured on a Redis exclusive pool: from 10 to 20 connections
    /// the hold time doubled and the throughput rose by 1.4 ×, where `Requests`' band backed
    /// off at 12. The pool grows while the hold time is under 4 × the unloaded one
    /// (`alpha` at least 3 × the server's parallel work) and backs off over 6 × it (`beta`
    /// at least 5 × that work): a loop that far behind gains nothing from more. Where
    /// that is, measured (`poolctl bench redis --pool-sizes 10,20,30,50`, then `1,2,4,8`):
    /// 20 connections do 1.17 × what 10 do, 30 1.03 × what 20 do, 50 no more than 30. The
    /// hold time is least at about 4 connections, 0.038 ms (with 1 or 2 the client's
    /// threads sleep between commands, and it is 0.05–0.06 ms), so it is 4 × that at about
    /// 20 connections and 6 × at about 30. A band of 2.5 × and 4 × backed off at 12–16
    /// when the pool measured that least hold time, and reached 20 only when its first
    /// intervals measured more. After slow start it grows by `Requests`' step, not by
    /// half of this wider band. The `Requests` band is the least either way, so a loop
    /// whose throughput stays flat (every connection only waits longer) keeps the pool as
    /// small as `Requests` would.
    EventLoop,
}

impl Units {
    /// The units of a checkout pool's open limit for `backend`: [`Units::EventLoop`] for
    /// Redis, [`Units::Requests`] for the others.
    #[must_use]
    pub fn for_backend(backend: crate::Backend) -> Self {
        match backend {
            crate::Backend::Redis => Self::EventLoop,
            crate::Backend::Postgres | crate::Backend::Http => Self::Requests,
        }
    }
}

/// The server's queue under which the pool grows: for [`Units::Requests`]
/// `3 × log10(size)` (concurrency-limits' Vegas), at least 1, for [`Units::Pipelines`]
/// half a connection; either way at least a quarter of the connections' worth of work the
/// server does at once (`parallel`). For [`Units::EventLoop`] `Requests`' value, and at
/// least 3 × `parallel` (a hold time under 4 × the unloaded one).
fn alpha(units: Units, size: u32, parallel: f64) -> f64 {
    let requests = (3.0 * f64::from(size).log10()).max(1.0);
    match units {
        Units::Requests => requests.max(parallel / 4.0),
        Units::Pipelines => 0.5f64.max(parallel / 4.0),
        Units::EventLoop => requests.max(parallel * 3.0),
    }
}

/// The server's queue over which the pool backs off: for [`Units::Requests`]
/// `6 × log10(size)` (concurrency-limits' Vegas), at least 2, for [`Units::Pipelines`] one
/// connection; either way at least half of `parallel`: a hold time up to 1.5 × the
/// unloaded one is tolerated (concurrency-limits' gradient tolerance), so that a server
/// that works for 50 connections at once is not shrunk by a hold time 20 % longer for a
/// moment (which on a busy client machine is noise). For [`Units::EventLoop`] `Requests`'
/// value, and at least 5 × `parallel` (a hold time up to 6 × the unloaded one).
fn beta(units: Units, size: u32, parallel: f64) -> f64 {
    let requests = (6.0 * f64::from(size).log10()).max(2.0);
    match units {
        Units::Requests => requests.max(parallel / 2.0),
        Units::Pipelines => 1.0f64.max(parallel / 2.0),
        Units::EventLoop => requests.max(parallel * 5.0),
    }
}

/// How much the pool grows per interval after slow start (congestion avoidance): half of
/// `alpha`, at least 1. For [`Units::EventLoop`] half of `Requests`' `alpha`: its own band
/// is wide (a hold time of 4 × to 6 × the unloaded one), and steps of half of it (12
/// connections at once for Redis on two cores) swung a pool with a ceiling of 50 between 24
/// and 44.
fn step(units: Units, size: u32, parallel: f64) -> u32 {
    let units = match units {
        Units::EventLoop => Units::Requests,
        other => other,
    };
    ceil_u32(alpha(units, size, parallel) / 2.0).max(1)
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn ceil_u32(v: f64) -> u32 {
    v.ceil().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The sizing controller of one pool. Feed it one [`Sample`] per interval.
#[derive(Debug, Clone)]
pub struct Controller {
    units: Units,
    limit: u32,
    floor: u32,
    shrink_after: u32,
    tick: u64,
    base: Option<Base>,
    probe: Option<Probe>,
    next_probe: u64,
    /// Growing fast (up to 4 × per interval), until the first back-off, like TCP's slow
    /// start; afterwards by `alpha / 2` per interval.
    slow_start: bool,
    low_ticks: u32,
    low_peak: f64,
    window: Window,
    last: Option<Reason>,
    /// Intervals with callers queued (the clock probes are scheduled on).
    loaded: u64,
    /// The smoothed connections' worth of work the server does at once (throughput ×
    /// unloaded hold time) at the current size; reset when the size changes.
    parallel: Option<f64>,
    /// Decisions in a row at under half the throughput of the last growth.
    slow: u32,
    /// The throughput when it last grew (checkouts per second).
    grown_x: f64,
    /// The decision at which the unloaded hold time was last measured.
    base_tick: u64,
    /// A hold time well under the unloaded one was seen with more connections in use:
    /// the unloaded one was measured on a slower machine (see [`STALE`]).
    stale: bool,
    /// With [`Units::Pipelines`], no growth before this decision (see [`CALM`]).
    calm_until: u64,
    /// Connections checked out at the end of the last interval (the start of this one).
    busy_before: u64,
    /// The hold time of the recent decisions, smoothed as `parallel` is ([`SMOOTHING`]),
    /// whatever the size: what lowers the unloaded hold time (see [`Controller::learn`]).
    recent_hold: Option<f64>,
    /// With [`Units::Requests`], the throughput measured at each size (see [`Rates`]).
    rates: Rates,
    /// The decision at which the open limit last changed.
    changed_tick: u64,
    /// With [`Units::Requests`], the `loaded` count at which the pool last tried a larger
    /// size (see [`EXPLORE_EVERY`]).
    explored: u64,
    /// The larger size being tried, until the open limit next changes.
    trying: Option<Try>,
}

/// Intervals pooled until they hold [`MIN_RETURNS`] returns.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    intervals: u32,
    elapsed: Duration,
    acquires: u64,
    returns: u64,
    hold_sum: f64,
    waited: f64,
    /// The most connections checked out at the start or the end of a pooled interval.
    peak_busy: u64,
}

impl Window {
    /// Adds an interval that began with `busy_before` connections checked out; returns
    /// the pooled sample and the most connections checked out at any of its intervals'
    /// edges, once it says enough ([`MIN_RETURNS`]), or after `most` intervals.
    #[allow(clippy::cast_precision_loss)]
    fn add(&mut self, s: &Sample, busy_before: u64, most: u32) -> Option<(Sample, u64)> {
        self.intervals += 1;
        self.peak_busy = self.peak_busy.max(busy_before).max(s.busy);
        self.elapsed += s.elapsed;
        self.acquires += s.acquires;
        self.returns += s.returns;
        self.hold_sum += s.hold_secs * s.returns as f64;
        self.waited += s.waited_share * s.acquires as f64;
        if self.returns < MIN_RETURNS && self.intervals < most {
            return None;
        }
        let w = std::mem::take(self);
        let sample = Sample {
            elapsed: w.elapsed,
            acquires: w.acquires,
            hold_secs: if w.returns == 0 {
                0.0
            } else {
                w.hold_sum / w.returns as f64
            },
            returns: w.returns,
            waited_share: if w.acquires == 0 {
                0.0
            } else {
                w.waited / w.acquires as f64
            },
            ..*s
        };
        Some((sample, w.peak_busy))
    }
}

/// A larger size being tried (see [`Controller::decide`]).
#[derive(Debug, Clone, Copy)]
struct Try {
    /// The size before: where the pool returns when the larger one does no more (not a
    /// quarter down from it, which crept upward).
    from: u32,
    /// No back-off before this decision: the larger size is measured for [`RATE_MIN`]
    /// intervals first.
    until: u64,
}

/// One interval's throughput at a size (see [`Rates`]).
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// The `loaded` count when it was measured.
    loaded: u64,
    /// Checkouts per second.
    x: f64,
    /// Callers, waiting or holding a connection.
    demand: f64,
}

/// The throughput measured at each size under load, recently: what tells whether a
/// larger size did more work where the server's queue says it cannot (see
/// [`Controller::decide`]).
#[derive(Debug, Clone, Default)]
struct Rates {
    /// Per size, its intervals, oldest first.
    at: Vec<(u32, std::collections::VecDeque<Rate>)>,
    /// The callers (waiting or holding a connection) in the recent measurements,
    /// smoothed ([`SMOOTHING`]): one interval at the edge of a burst does not move it far.
    demand: f64,
}

impl Rates {
    /// Records the throughput of an interval at `size`, measured at `loaded` with
    /// `demand` callers (waiting or holding a connection).
    fn record(&mut self, size: u32, loaded: u64, x: f64, demand: f64) {
        self.demand = if self.at.is_empty() {
            demand
        } else {
            SMOOTHING * demand + (1.0 - SMOOTHING) * self.demand
        };
        let i = match self.at.iter().position(|(s, _)| *s == size) {
            Some(i) => i,
            None => {
                self.at.push((size, std::collections::VecDeque::new()));
                self.at.len() - 1
            }
        };
        let samples = &mut self.at[i].1;
        samples.push_back(Rate { loaded, x, demand });
        if samples.len() > 4 * RATE_MIN {
            samples.pop_front();
        }
    }

    /// Drops what was measured more than [`RATE_MEMORY`] intervals under load ago.
    fn expire(&mut self, loaded: u64) {
        for (_, samples) in &mut self.at {
            while samples
                .front()
                .is_some_and(|r| r.loaded + RATE_MEMORY < loaded)
            {
                samples.pop_front();
            }
        }
        self.at.retain(|(_, samples)| !samples.is_empty());
    }

    /// The median throughput at `size` over its intervals measured with about as many
    /// callers as the recent ones (from half to twice), once [`RATE_MIN`] of them did.
    /// What a size does depends on how many callers the client runs (10,000 tasks take
    /// more of the client's cores than 100, and leave less to the server), so only
    /// measurements under one load are compared.
    fn median(&self, size: u32) -> Option<f64> {
        let (_, samples) = self.at.iter().find(|(s, _)| *s == size)?;
        let mut xs: Vec<f64> = samples
            .iter()
            .filter(|r| r.demand <= self.demand * 2.0 && r.demand >= self.demand / 2.0)
            .map(|r| r.x)
            .collect();
        if xs.len() < RATE_MIN {
            return None;
        }
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        Some(if n % 2 == 1 {
            xs[n / 2]
        } else {
            (xs[n / 2 - 1] + xs[n / 2]) / 2.0
        })
    }

    /// The highest median throughput among the sizes under `size`.
    fn best_below(&self, size: u32) -> Option<f64> {
        self.at
            .iter()
            .filter(|(s, _)| *s < size)
            .filter_map(|(s, _)| self.median(*s))
            .max_by(f64::total_cmp)
    }

    /// Whether `size` measured more than [`RATE_MARGIN`] × every smaller size measured
    /// (false while either is unknown).
    fn faster_than_below(&self, size: u32) -> bool {
        match (self.median(size), self.best_below(size)) {
            (Some(mine), Some(below)) => mine > below * RATE_MARGIN,
            _ => false,
        }
    }
}

impl Controller {
    /// A controller of [`Units::Requests`] starting at `floor` (at least 1). It shrinks
    /// after `shrink_after` intervals of low use (the idle timeout over the interval, at
    /// least 1).
    #[must_use]
    pub fn new(floor: u32, shrink_after: u32) -> Self {
        let floor = floor.max(1);
        Self {
            units: Units::Requests,
            limit: floor,
            floor,
            shrink_after: shrink_after.max(1),
            tick: 0,
            base: None,
            probe: None,
            next_probe: PROBE_EVERY,
            slow_start: true,
            low_ticks: 0,
            low_peak: 0.0,
            window: Window::default(),
            last: None,
            loaded: 0,
            parallel: None,
            slow: 0,
            grown_x: 0.0,
            base_tick: 0,
            stale: false,
            calm_until: 0,
            busy_before: 0,
            recent_hold: None,
            rates: Rates::default(),
            changed_tick: 0,
            explored: 0,
            trying: None,
        }
    }

    /// A controller for pipelined connections ([`Units::Pipelines`]), starting at `floor`
    /// (at least 1); otherwise as [`Controller::new`].
    #[must_use]
    pub fn pipelined(floor: u32, shrink_after: u32) -> Self {
        Self::with_units(Units::Pipelines, floor, shrink_after)
    }

    /// A controller whose open limit counts `units`, starting at `floor` (at least 1);
    /// otherwise as [`Controller::new`].
    #[must_use]
    pub fn with_units(units: Units, floor: u32, shrink_after: u32) -> Self {
        Self {
            units,
            ..Self::new(floor, shrink_after)
        }
    }

    /// What one unit of its open limit carries.
    #[must_use]
    pub fn units(&self) -> Units {
        self.units
    }

    /// The open limit now.
    #[must_use]
    pub fn open_limit(&self) -> u32 {
        self.limit
    }

    /// Whether a downward probe of the unloaded hold time is under way.
    #[must_use]
    pub fn probing(&self) -> bool {
        self.probe.is_some()
    }

    /// The unloaded hold time measured so far, in seconds.
    #[must_use]
    pub fn unloaded_hold(&self) -> Option<f64> {
        self.base.map(|b| b.hold)
    }

    /// Why the open limit last changed.
    #[must_use]
    pub fn last_reason(&self) -> Option<&Reason> {
        self.last.as_ref()
    }

    fn change(&mut self, to: u32, reason: Reason) -> Option<Change> {
        let from = self.limit;
        if to == from {
            return None;
        }
        self.limit = to;
        self.changed_tick = self.tick;
        self.trying = None;
        self.window = Window::default();
        // The server's work at once depends on the size: smooth only at one size.
        self.parallel = None;
        self.last = Some(reason.clone());
        Some(Change { from, to, reason })
    }

    /// Learns the unloaded hold time from a sample: a measurement with as few connections
    /// in use as the last one (or fewer) replaces it; a lower hold time with more
    /// connections in use lowers it.
    ///
    /// Only a measurement with as few connections in use counts as fresh (see [`FRESH`]):
    /// a lower hold time with more in use says the machine got faster, and the unloaded
    /// hold time may be lower still.
    ///
    /// `at` is how many connections were in use: the mean over the interval, or more when
    /// more were checked out at one of its edges (see [`Controller::decide`]).
    fn learn(&mut self, s: &Sample, at: f64) {
        let at = at.max(1.0);
        self.base = Some(match self.base {
            Some(b) if at > b.at * 1.25 => {
                self.stale |= s.hold_secs < b.hold * STALE;
                // To the recent hold time (smoothed), not to one interval's: on a busy
                // machine one interval's mean hold time is off by half either way, and
                // the least of hundreds of them is an accident of scheduling, which made
                // the pool settle anywhere from 4 to 10 in runs of the same bench.
                Base {
                    hold: b.hold.min(self.recent_hold.unwrap_or(s.hold_secs)),
                    at: b.at,
                }
            }
            _ => {
                self.base_tick = self.tick;
                self.stale = false;
                Base {
                    hold: s.hold_secs,
                    at,
                }
            }
        });
    }

    /// Takes the last interval's sample; returns the change to make, if any.
    pub fn decide(&mut self, s: &Sample) -> Option<Change> {
        self.tick += 1;
        let busy_before = std::mem::replace(&mut self.busy_before, s.busy);
        let ceiling = s.ceiling.max(1);
        let floor = self.floor.min(ceiling);
        if self.limit > ceiling {
            self.probe = None;
            return self.change(ceiling, Reason::Ceiling);
        }
        let queued = s.queued();
        if queued {
            self.loaded += 1;
        }
        let in_use = s.in_use();
        let size = f64::from(self.limit);
        // Low use: count towards a shrink.
        if !queued && in_use < size * 0.5 {
            self.low_ticks += 1;
            self.low_peak = self.low_peak.max(in_use);
        } else {
            self.low_ticks = 0;
            self.low_peak = 0.0;
        }
        if let Some(mut p) = self.probe {
            if p.warming {
                p.warming = false;
                self.probe = Some(p);
                return None;
            }
            let Some((measured, _)) = p.window.add(s, busy_before, PROBE_MAX_INTERVALS) else {
                self.probe = Some(p);
                return None;
            };
            self.probe = None;
            self.parallel = None;
            self.next_probe = self.loaded + PROBE_EVERY;
            if measured.returns >= MIN_RETURNS {
                let before = self.unloaded_hold();
                self.base_tick = self.tick;
                self.stale = false;
                self.base = Some(Base {
                    hold: measured.hold_secs,
                    at: measured.in_use().max(1.0),
                });
                // A much slower unloaded hold time: the last back-off mistook a slower
                // statement mix for an overloaded server; grow fast again.
                if before.is_some_and(|b| measured.hold_secs > b * 1.5) {
                    self.slow_start = true;
                    self.rates = Rates::default();
                }
            }
            let unloaded = self.unloaded_hold().unwrap_or(0.0);
            self.grown_x = measured.throughput();
            return self.change(p.restore.min(ceiling), Reason::ProbeDone { unloaded });
        }
        if self.low_ticks >= self.shrink_after {
            let peak = self.low_peak;
            self.low_ticks = 0;
            self.low_peak = 0.0;
            let to = ceil_u32(peak * 1.5).clamp(floor, self.limit);
            self.slow_start = true;
            self.rates = Rates::default();
            self.window = Window::default();
            return self.change(to, Reason::Idle { used: peak });
        }
        if s.acquires == 0 && s.busy == 0 && s.pending == 0 {
            // Idle: nothing to learn, and an idle interval pooled with the first ones
            // under load would understate their throughput.
            self.window = Window::default();
            return None;
        }
        let (pooled, peak_busy) = self.window.add(s, busy_before, MAX_WINDOW)?;
        let s = &pooled;
        let in_use = s.in_use();
        // How many connections the hold time was measured with. The mean over the window
        // (Little's law) understates it when the load began or ended inside the window:
        // an interval that was idle for its first half and ran 10,000 callers for the
        // second has the throughput of a light load and the hold time of a heavy one, and
        // taking that for the unloaded hold time made the pool grow past the knee for the
        // rest of its life. The connections checked out at the window's edges tell.
        #[allow(clippy::cast_precision_loss)]
        let measured_at = in_use.max(peak_busy as f64);
        if s.returns == 0 {
            // Every connection held for longer than the window: no hold time to reason
            // with, but callers queue behind busy connections.
            return self.grow(s, 0.0, 0.0, ceiling);
        }
        let recent = self.recent_hold.map_or(s.hold_secs, |r| {
            SMOOTHING * s.hold_secs + (1.0 - SMOOTHING) * r
        });
        self.recent_hold = Some(recent);
        let Some(base) = self.base.filter(|b| measured_at > b.at * 1.25) else {
            // As few connections in use as when the unloaded hold time was measured (or
            // none measured yet): this is the unloaded hold time now.
            self.learn(s, measured_at);
            return self.grow(s, 0.0, 0.0, ceiling);
        };
        // The recent hold time under the unloaded one lowers it; one interval well under
        // it only marks it stale (a probe measures it again before pipelines grow).
        if recent < base.hold || s.hold_secs < base.hold * STALE {
            self.learn(s, measured_at);
        }
        let unloaded = self.unloaded_hold().unwrap_or(s.hold_secs);
        if !queued {
            return None;
        }
        // The throughput of a size, where the pool is what limits it: callers queue, the
        // connections are in use, and the size did not change during the interval.
        if self.units == Units::Requests
            && self.tick >= self.changed_tick + 2
            && in_use >= 0.8 * f64::from(self.limit)
        {
            #[allow(clippy::cast_precision_loss)]
            let demand = s.pending as f64 + in_use;
            self.rates
                .record(self.limit, self.loaded, s.throughput(), demand);
        }
        self.rates.expire(self.loaded);
        // Little's law: the server does the work of `parallel` connections at a time; the
        // rest of those in use wait inside it. Smoothed over a few intervals.
        let now = s.throughput() * unloaded;
        let parallel = self
            .parallel
            .map_or(now, |p| SMOOTHING * now + (1.0 - SMOOTHING) * p);
        self.parallel = Some(parallel);
        let server_queue = (in_use - parallel).max(0.0);
        let throughput = parallel / unloaded.max(1e-9);
        // Half the throughput it had when it last grew, for `PROBE_SOON` decisions in a
        // row: the server may have become slower for every size (a heavier statement
        // mix), which only a probe can tell; a stall of the machine is over sooner.
        if !self.slow_start && throughput < 0.5 * self.grown_x {
            self.slow += 1;
            if u64::from(self.slow) >= PROBE_SOON {
                self.slow = 0;
                self.next_probe = self.next_probe.min(self.loaded);
            }
        } else {
            self.slow = 0;
        }
        if !self.slow_start && s.throughput() < COLLAPSE * self.grown_x {
            // Under a third of the throughput it had when it last grew: the whole machine
            // stalls (the client starved of CPU, a network hiccup), which fewer connections
            // would not help; hold the size until it recovers, or until a probe soon
            // after measures the unloaded hold time again (statements that became slower
            // for every size look the same).
            return self.probe_if_due(floor);
        }
        if server_queue > beta(self.units, self.limit, parallel)
            && self.limit > floor
            && !self.kept_for_throughput()
        {
            let mid = (alpha(self.units, self.limit, parallel)
                + beta(self.units, self.limit, parallel))
                / 2.0;
            let mut to = ceil_u32(parallel + mid);
            if self.slow_start {
                // Out of slow start: straight to the size the server can use, and measure
                // the unloaded hold time again soon (see `FIRST_PROBE`).
                self.slow_start = false;
                self.grown_x = s.throughput();
                if self.units == Units::Requests {
                    self.next_probe = self.next_probe.min(self.loaded + FIRST_PROBE);
                }
            } else {
                // Afterwards by a quarter at most per interval: one noisy interval moves
                // the size a little, a real overload within a few intervals.
                to = to.max(ceil_u32(f64::from(self.limit) * 0.75));
            }
            let to = self
                .trying
                .map_or(to, |t| t.from)
                .clamp(floor, self.limit - 1);
            if self.units == Units::Pipelines {
                self.calm_until = self.tick + CALM;
            }
            return self.change(
                to,
                Reason::Congested {
                    unloaded,
                    hold: s.hold_secs,
                    server_queue,
                },
            );
        }
        // In slow start it grows until the server's queue is over `beta`: the back-off that
        // ends slow start goes straight to the middle of the band, where stopping at the
        // first size inside it (its lower edge, the queue just over `alpha`) left a pool
        // of 4 for pgbench's select where 6–10 do more (a size the band holds from then on).
        let grow_below = if self.slow_start && self.units != Units::Pipelines {
            beta(self.units, self.limit, parallel)
        } else {
            alpha(self.units, self.limit, parallel)
        };
        if server_queue < grow_below {
            if self.units == Units::Pipelines
                && (self.stale
                    || (!self.slow_start && self.tick.saturating_sub(self.base_tick) > FRESH))
                && self.wants_to_grow(s, ceiling)
                && self.limit / 2 >= floor
                && self.limit >= 2
            {
                // The band of pipelines is one connection wide: an unloaded head time
                // measured while the machine was slower (other processes took its cores,
                // or the pool had just started) reads as room for another connection.
                // Measure it again first, when it is old or was seen to be wrong.
                return self.probe(floor);
            }
            if let Some(change) = self.grow(s, server_queue, parallel, ceiling) {
                return Some(change);
            }
        }
        if let Some(change) = self.explore(s, parallel, ceiling) {
            return Some(change);
        }
        self.probe_if_due(floor)
    }

    /// With [`Units::Requests`] after slow start, whether the pool stays at its size where
    /// the server's queue says to back off: while a larger size is tried (for
    /// [`RATE_MIN`] intervals), and while this size has recently measured more throughput
    /// than every smaller one (by [`RATE_MARGIN`]).
    ///
    /// The queue estimate counts a request as waiting inside the server whenever the
    /// hold time is over the unloaded one, which on a machine whose cores the client
    /// and the server share is also time the response waits for the client: pgbench's
    /// select at 100 users, on two cores, backed off from 9 to 7 with about 6 requests
    /// "waiting", where 10 connections did 1.5–6.5 % more than 7 (they overlap the
    /// client's work with the server's). Only the throughput tells.
    fn kept_for_throughput(&self) -> bool {
        self.units == Units::Requests
            && !self.slow_start
            && (self.trying.is_some_and(|t| self.tick < t.until)
                || self.rates.faster_than_below(self.limit))
    }

    /// With [`Units::Requests`] after slow start, in the band (neither growing nor backing
    /// off) under load: every [`EXPLORE_EVERY`] intervals under load, tries the size one
    /// step larger, unless it was measured recently and did no more than this one (see
    /// [`Controller::kept_for_throughput`], which keeps it or lets it back off). A larger
    /// size measured recently as faster is returned to without waiting.
    fn explore(&mut self, s: &Sample, parallel: f64, ceiling: u32) -> Option<Change> {
        if self.units != Units::Requests || self.slow_start || !self.wants_to_grow(s, ceiling) {
            return None;
        }
        let here = self.rates.median(self.limit)?;
        let next = self
            .limit
            .saturating_add(step(self.units, self.limit, parallel))
            .min(ceiling);
        match self.rates.median(next) {
            Some(there) if there > here * RATE_MARGIN => {}
            Some(_) => return None,
            None if self.loaded < self.explored + EXPLORE_EVERY => return None,
            None => {}
        }
        self.explored = self.loaded;
        let tried = Try {
            from: self.limit,
            until: self.tick + RATE_MIN as u64 + 2,
        };
        let change = self.change(next, Reason::Explore { throughput: here });
        self.trying = Some(tried);
        change
    }

    /// Under load for a while: step down briefly to measure the unloaded hold time again
    /// (the statements, or the server, may have changed).
    fn probe_if_due(&mut self, floor: u32) -> Option<Change> {
        if self.loaded >= self.next_probe && self.limit / 2 >= floor && self.limit >= 2 {
            return self.probe(floor);
        }
        None
    }

    /// Steps down to half the size, to measure the unloaded hold time; pipelines to the
    /// floor: one backend that runs statements back to back is already at work, and at
    /// half of a size past the knee the head time would be a loaded one.
    fn probe(&mut self, floor: u32) -> Option<Change> {
        self.probe = Some(Probe {
            restore: self.limit,
            warming: true,
            window: Window::default(),
        });
        let to = match self.units {
            Units::Requests | Units::EventLoop => self.limit / 2,
            Units::Pipelines => floor,
        };
        self.change(to, Reason::Probe)
    }

    /// Whether [`Controller::grow`] would grow on `s`.
    fn wants_to_grow(&self, s: &Sample, ceiling: u32) -> bool {
        s.queued()
            && self.limit < ceiling
            && s.in_use() >= 0.8 * f64::from(self.limit)
            && self.tick >= self.calm_until
    }

    /// Grows while callers queue and every connection is in use, never above the ceiling:
    /// in slow start by the callers waiting (at least 1), at most to four times the size,
    /// and once the server shows a queue (`alpha` or more) only to where it would reach
    /// `beta` if the server could do no more at once; after a back-off by `alpha / 2` (at
    /// least 1).
    fn grow(
        &mut self,
        s: &Sample,
        server_queue: f64,
        parallel: f64,
        ceiling: u32,
    ) -> Option<Change> {
        let size = self.limit;
        if !self.wants_to_grow(s, ceiling) {
            return None;
        }
        let room = if self.slow_start {
            let queued = u32::try_from(s.pending)
                .unwrap_or(u32::MAX)
                .clamp(1, size.saturating_mul(3));
            if server_queue >= alpha(self.units, size, parallel) {
                // Near the knee: a step to four times the size overshoots it by as much.
                // `SELECT 1` on two cores, the unloaded hold time measured 1.7 × too high
                // in the pool's first interval: 2 → 8, a queue of 5.2 (just under `beta`,
                // 5.4), then 8 → 30, the ceiling, with 24 requests waiting inside the
                // server and less throughput than at 8. Here the step ends where the
                // queue would reach `beta` with the server's parallel work as it is now
                // (more if that work grows with the size); the back-off that ends slow
                // start still lands in the middle of the band.
                let to_beta = ceil_u32(parallel + beta(self.units, size, parallel));
                queued.min(to_beta.saturating_sub(size).max(1))
            } else {
                queued
            }
        } else {
            step(self.units, size, parallel)
        };
        let to = size.saturating_add(room).min(ceiling);
        self.grown_x = s.throughput();
        self.change(
            to,
            Reason::Queued {
                pending: s.pending,
                server_queue,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server with `cores` that each take `work` seconds per statement, plus `delay`
    /// seconds of waiting that takes no core (a sleep, a network hop), and `demand`
    /// callers in a closed loop. Returns the sample of one interval at `open limit`.
    fn sample(limit: u32, demand: u32, cores: f64, work: f64, delay: f64) -> Sample {
        let busy = f64::from(limit.min(demand));
        let hold = delay + work * (busy / cores).max(1.0);
        let x = if busy > 0.0 { busy / hold } else { 0.0 };
        let every = Duration::from_millis(100);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = (x * every.as_secs_f64()) as u64;
        Sample {
            elapsed: every,
            acquires: n,
            hold_secs: if n > 0 { hold } else { 0.0 },
            returns: n,
            busy: u64::from(limit.min(demand)),
            pending: u64::from(demand.saturating_sub(limit)),
            waited_share: if demand > limit { 1.0 } else { 0.0 },
            ceiling: 30,
        }
    }

    /// The same interval on a machine `by` times slower (another process took it, or the
    /// pool was starting): each checkout held `by` × as long, `by` × fewer of them (`by`
    /// under 1: a faster one).
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    fn slowed(mut s: Sample, by: f64) -> Sample {
        s.acquires = (s.acquires as f64 / by) as u64;
        s.returns = s.acquires;
        s.hold_secs *= by;
        s
    }

    /// The sizes held for longer than a larger size is tried ([`RATE_MIN`] + 2
    /// decisions): neither a probe's two at half nor an exploration one step up.
    fn held(seen: &[u32]) -> Vec<u32> {
        seen.windows(RATE_MIN + 3)
            .filter(|w| w.iter().all(|&t| t == w[0]))
            .map(|w| w[0])
            .collect()
    }

    fn run(
        c: &mut Controller,
        ticks: usize,
        demand: u32,
        cores: f64,
        work: f64,
        delay: f64,
    ) -> Vec<u32> {
        (0..ticks)
            .map(|_| {
                c.decide(&sample(c.open_limit(), demand, cores, work, delay));
                c.open_limit()
            })
            .collect()
    }

    #[test]
    fn grows_to_the_ceiling_in_a_few_intervals_when_the_hold_time_stays_flat() {
        // 10 ms statements that wait rather than work (pg_sleep): more connections help.
        let mut c = Controller::new(1, 50);
        let seen = run(&mut c, 10, 100, 1000.0, 0.0001, 0.01);
        assert_eq!(c.open_limit(), 30, "{seen:?}");
        let reached = seen.iter().position(|&t| t == 30).unwrap_or(usize::MAX);
        assert!(
            reached <= 4,
            "at the ceiling after {reached} intervals: {seen:?}"
        );
        assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
    }

    #[test]
    fn settles_where_the_server_runs_out_of_cores() {
        // A CPU-bound statement on 3 cores: past 3 connections, more only queue inside.
        let mut c = Controller::new(1, 50);
        let seen = run(&mut c, 200, 1000, 3.0, 0.0001, 0.0);
        let tail = &seen[10..];
        assert!(
            tail.iter().all(|&t| (3..=10).contains(&t)),
            "it settles a few connections above the cores: {seen:?}"
        );
        assert!(
            seen.windows(2).any(|w| w[1] < w[0]),
            "it backed off: {seen:?}"
        );
        assert!(matches!(
            c.last_reason(),
            Some(Reason::Congested { .. } | Reason::ProbeDone { .. } | Reason::Probe)
        ));
        // Steady load, steady size: changes come only from the periodic probe and from
        // trying one step larger now and then (here it does no more, and is left).
        let changes = tail.windows(2).filter(|w| w[1] != w[0]).count();
        assert!(
            changes <= 8,
            "{changes} changes under a steady load: {seen:?}"
        );
        assert!(
            held(tail).iter().all(|&t| t == held(tail)[0]),
            "a larger size that does no more is left: {seen:?}"
        );
    }

    #[test]
    fn shrinks_to_the_floor_when_idle_and_respects_the_ceiling() {
        let mut c = Controller::new(2, 3);
        run(&mut c, 10, 100, 1000.0, 0.0001, 0.01);
        assert_eq!(c.open_limit(), 30);
        let seen = run(&mut c, 3, 0, 1000.0, 0.0001, 0.01);
        assert_eq!(seen, vec![30, 30, 2], "one change after 3 idle intervals");
        assert!(matches!(c.last_reason(), Some(Reason::Idle { .. })));
        run(&mut c, 10, 100, 1000.0, 0.0001, 0.01);
        let s = Sample {
            ceiling: 10,
            ..Sample::default()
        };
        let change = c.decide(&s).unwrap();
        assert_eq!((change.to, change.reason), (10, Reason::Ceiling));
    }

    #[test]
    fn backs_off_when_the_server_slows_down() {
        // At the ceiling with 10 ms statements; then the server loses most of its cores
        // (another tenant, a vacuum): statements queue inside it, and the pool backs off.
        let mut c = Controller::new(1, 1000);
        run(&mut c, 10, 1000, 1000.0, 0.002, 0.008);
        assert_eq!(c.open_limit(), 30);
        // Smoothed over a few intervals: one slow interval is not enough, three are.
        let change = (0..3)
            .find_map(|_| c.decide(&sample(30, 1000, 4.0, 0.002, 0.008)))
            .expect("a back-off within three intervals");
        assert!(change.to < 30, "{change:?}");
        assert!(
            matches!(change.reason, Reason::Congested { .. }),
            "{change:?}"
        );
        assert!(change.reason.to_string().contains("wait inside the server"));
        let seen = run(&mut c, 10, 1000, 4.0, 0.002, 0.008);
        assert!(
            seen.iter().all(|&t| t <= 20) && c.open_limit() < 20,
            "{seen:?}"
        );
    }

    #[test]
    fn a_slower_statement_mix_is_learned_by_the_next_probe() {
        // 10 ms sleeps become 30 ms sleeps: the hold time triples at every size. The
        // pool first backs off (it cannot tell that from an overloaded server), then its
        // probe measures the new unloaded hold time and it grows back to the ceiling.
        let mut c = Controller::new(1, 1000);
        run(&mut c, 10, 1000, 1000.0, 0.0001, 0.01);
        assert_eq!(c.open_limit(), 30);
        let seen = run(&mut c, 60, 1000, 1000.0, 0.0001, 0.03);
        assert!(
            seen.iter().any(|&t| t < 30),
            "it backed off first: {seen:?}"
        );
        assert_eq!(c.open_limit(), 30, "and came back: {seen:?}");
        let unloaded = c.unloaded_hold().unwrap();
        assert!((0.029..0.032).contains(&unloaded), "{unloaded}");
    }

    #[test]
    fn probes_down_now_and_then_under_a_steady_load() {
        let mut c = Controller::new(1, 10_000);
        let seen = run(&mut c, 700, 1000, 1000.0, 0.0001, 0.01);
        let dips = seen.windows(2).filter(|w| w[1] < w[0]).count();
        assert_eq!(dips, 2, "one probe every {PROBE_EVERY} intervals");
        assert_eq!(c.open_limit(), 30);
    }

    #[test]
    fn one_noisy_interval_does_not_move_a_settled_size() {
        // A CPU-bound statement on 3 cores, settled; then one interval in which another
        // process took the machine (a third less throughput, 1.5 × the hold time).
        let mut c = Controller::new(1, 10_000);
        run(&mut c, 100, 1000, 3.0, 0.0001, 0.0);
        let settled = c.open_limit();
        let noisy = slowed(sample(settled, 1000, 3.0, 0.0001, 0.0), 1.5);
        assert_eq!(c.decide(&noisy), None, "settled at {settled}");
        let seen = run(&mut c, 5, 1000, 3.0, 0.0001, 0.0);
        assert!(seen.iter().all(|&t| t == settled), "{settled}: {seen:?}");
    }

    #[test]
    fn a_stalled_machine_does_not_shrink_the_pool() {
        // Settled on a CPU-bound server; then the client is starved of CPU for a second: a
        // fifth of the throughput, five times the hold time.
        let mut c = Controller::new(1, 10_000);
        run(&mut c, 100, 1000, 3.0, 0.0001, 0.0);
        let before = c.open_limit();
        let seen: Vec<u32> = (0..10)
            .map(|_| {
                c.decide(&slowed(sample(c.open_limit(), 1000, 3.0, 0.0001, 0.0), 5.0));
                c.open_limit()
            })
            .collect();
        assert!(seen.iter().all(|&t| t == before), "{before}: {seen:?}");
    }

    #[test]
    fn idle_time_does_not_bring_the_next_probe_closer() {
        // Under load for most of a probe period, idle for longer than one, loaded again:
        // the pool takes up its load at its size, no probe on the way (the clock of
        // probes counts intervals under load only).
        let mut c = Controller::new(1, 100_000);
        run(&mut c, 250, 1000, 1000.0, 0.0001, 0.01);
        assert_eq!(c.open_limit(), 30);
        run(&mut c, 400, 0, 1000.0, 0.0001, 0.01);
        let seen = run(&mut c, 40, 1000, 1000.0, 0.0001, 0.01);
        assert!(seen.iter().all(|&t| t == 30), "{seen:?}");
        assert!(!c.probing());
    }

    #[test]
    fn slow_start_ends_in_the_middle_of_the_band() {
        // 2 cores, 0.05 ms of work per statement: at 4 connections about 2 wait inside the
        // server, just over `alpha` (1.8) and under `beta` (3.6), the band's lower edge.
        let mut c = Controller::new(1, 10_000);
        let seen = run(&mut c, 100, 100, 2.0, 0.000_05, 0.0);
        assert!(seen.iter().any(|&t| t > 4), "it grew past 4: {seen:?}");
        assert!(
            held(&seen[20..]).iter().all(|&t| (5..=8).contains(&t)),
            "it settles inside the band, above its lower edge: {seen:?}"
        );
    }

    #[test]
    fn a_quick_first_interval_is_measured_again_once_the_pool_settles() {
        // pgbench's select, run r17 of round nine: the pool's first interval (one
        // connection) measured 0.033 ms where the next run's measured 0.094 ms, and the pool
        // settled at 4 (10 did 1.07 × more). Here: 2 cores, 0.05 ms of work, the first
        // interval twice as quick as the server is.
        let mut c = Controller::new(1, 10_000);
        c.decide(&slowed(sample(1, 100, 2.0, 0.000_05, 0.0), 0.5));
        let seen = run(&mut c, 100, 100, 2.0, 0.000_05, 0.0);
        let unloaded = c.unloaded_hold().unwrap_or(0.0);
        assert!(
            unloaded >= 0.000_045,
            "measured again: {:.3} ms",
            unloaded * 1e3
        );
        assert!(
            held(&seen[50..]).iter().all(|&t| (5..=8).contains(&t)),
            "it settles inside the band, as with a true first interval: {seen:?}"
        );
    }

    #[test]
    fn slow_start_does_not_jump_past_the_knee_on_a_noisy_first_interval() {
        // 2 cores, 0.05 ms of work per statement, 100 callers; the pool's first interval
        // (2 connections) measures the hold time 1.7 × too high, as a pool starting on a
        // busy machine does. At 8 the server's queue then reads 4.6: over `alpha` (2.7),
        // under `beta` (5.4). A step of 4 × went to the ceiling (30).
        let mut c = Controller::new(2, 10_000);
        c.decide(&slowed(sample(2, 100, 2.0, 0.000_05, 0.0), 1.7));
        assert_eq!(c.open_limit(), 8, "slow start from the floor");
        let seen = run(&mut c, 100, 100, 2.0, 0.000_05, 0.0);
        assert!(
            seen.iter().all(|&t| t <= 12),
            "it never went far past the knee (about 8): {seen:?}"
        );
        assert!(
            held(&seen[20..]).iter().all(|&t| (5..=10).contains(&t)),
            "it settles inside the band (a probe's two intervals at half aside): {seen:?}"
        );
    }

    /// One 100 ms interval: `acquires` checkouts held `hold` seconds on average, `busy`
    /// checked out and `pending` waiting at its end.
    fn interval(acquires: u64, hold: f64, busy: u64, pending: u64) -> Sample {
        Sample {
            elapsed: Duration::from_millis(100),
            acquires,
            hold_secs: hold,
            returns: acquires,
            busy,
            pending,
            waited_share: if pending > 0 { 1.0 } else { 0.0 },
            ceiling: 30,
        }
    }

    /// A statement on two cores shared by the server and the client, at 100 users: past
    /// 3 connections the hold time grows as if the rest waited inside the server, yet the
    /// throughput still rises, by 1.3 % a connection up to 14 (the client's work overlaps
    /// the server's; pgbench's select gained 1.5–6.5 % from 7 to 10), and falls after. `noise` scales each interval by a pseudo-random
    /// factor in `1 ± noise` (a busy machine). Returns one interval at `limit`.
    fn overlapped(limit: u32, noise: f64, seed: &mut u64) -> Sample {
        let n = f64::from(limit.min(100));
        let x = if n <= 3.0 {
            12_000.0 * n
        } else {
            36_000.0 + 500.0 * (n.min(14.0) - 4.0) - 500.0 * (n - 14.0).max(0.0)
        };
        *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        #[allow(clippy::cast_precision_loss)]
        let r = (*seed >> 11) as f64 / (1u64 << 53) as f64;
        let x = x * (1.0 + noise * (2.0 * r - 1.0));
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let acquires = (x * 0.1) as u64;
        let mut s = interval(
            acquires,
            n / x,
            u64::from(limit.min(100)),
            u64::from(100u32.saturating_sub(limit)),
        );
        s.ceiling = 20;
        s
    }

    #[test]
    fn sizes_are_compared_only_under_a_like_load() {
        let mut r = Rates::default();
        for i in 0..8 {
            r.record(8, i, 40_000.0, 100.0);
        }
        assert_eq!(r.median(8), Some(40_000.0));
        // 10,000 callers: the client's tasks take more of its cores, every size does
        // less; 12 is not compared with 8's measurements under 100 callers.
        for i in 8..20 {
            r.record(12, i, 30_000.0, 10_000.0);
        }
        assert_eq!(r.median(8), None);
        assert_eq!(r.median(12), Some(30_000.0));
        assert!(!r.faster_than_below(12));
        // Under the same load again, 12 measured faster than 8 is.
        for i in 20..40 {
            r.record(8, i, 40_000.0, 100.0);
            r.record(12, i, 42_000.0, 100.0);
        }
        assert!(r.faster_than_below(12));
        // And what was measured over RATE_MEMORY intervals under load ago is forgotten.
        r.expire(40 + RATE_MEMORY);
        assert_eq!(r.median(8), None);
    }

    #[test]
    fn a_larger_size_that_does_more_is_kept_where_the_queue_says_back_off() {
        for noise in [0.0, 0.04] {
            let mut seed = 7;
            let mut c = Controller::new(1, 10_000);
            let seen: Vec<u32> = (0..1200)
                .map(|_| {
                    c.decide(&overlapped(c.open_limit(), noise, &mut seed));
                    c.open_limit()
                })
                .collect();
            // The queue alone holds it at 8, 7.5 % under 14; trying larger sizes, it keeps
            // the ones that do more (with noise, now and then one step under them).
            let late = held(&seen[600..]);
            assert!(
                !late.is_empty() && late.iter().all(|&t| (11..=16).contains(&t)),
                "noise {noise}: held {late:?}: {seen:?}"
            );
            assert!(
                seen.iter().all(|&t| t <= 18),
                "noise {noise}: never far past the best size: {seen:?}"
            );
        }
    }

    #[test]
    fn a_load_that_starts_inside_an_interval_is_not_taken_for_an_unloaded_one() {
        // Measured at the floor: 0.05 ms with one connection.
        let mut c = Controller::new(1, 10_000);
        c.decide(&interval(2_000, 0.000_05, 1, 99));
        assert_eq!(c.unloaded_hold(), Some(0.000_05));
        let size = u64::from(c.open_limit());
        // Idle, then 10,000 callers arrive 90 ms into an interval: its throughput is a
        // tenth of theirs and its mean connections in use (Little's law) under one,
        // while its hold time is the loaded one, five times the unloaded.
        c.decide(&interval(0, 0.0, 0, 0));
        c.decide(&interval(300, 0.000_25, size, 9_990));
        assert_eq!(
            c.unloaded_hold(),
            Some(0.000_05),
            "the connections checked out at the interval's end say it was loaded"
        );
        // The same at the end of a load: busy at the start, idle at the end.
        c.decide(&interval(30_000, 0.000_25, size, 9_990));
        c.decide(&interval(300, 0.000_25, 0, 0));
        assert_eq!(c.unloaded_hold(), Some(0.000_05));
    }

    #[test]
    fn a_lucky_interval_does_not_set_the_unloaded_hold_time() {
        let mut c = Controller::new(1, 10_000);
        c.decide(&interval(2_000, 0.000_1, 1, 99));
        // With more connections in use, one interval in ten comes out at half the hold
        // time (the client's scheduler, not the server): the estimate moves a little.
        for i in 0..30 {
            let size = u64::from(c.open_limit());
            let hold = if i % 10 == 9 { 0.000_05 } else { 0.000_12 };
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = (size as f64 / hold * 0.1) as u64;
            c.decide(&interval(n, hold, size, 100 - size.min(99)));
        }
        let base = c.unloaded_hold().unwrap_or(0.0);
        assert!(
            base > 0.000_08,
            "three lucky intervals took it from 0.10 ms to {:.3} ms",
            base * 1e3
        );
        // A machine that really got faster: every interval lower. It follows.
        for _ in 0..30 {
            let size = u64::from(c.open_limit());
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = (size as f64 / 0.000_04 * 0.1) as u64;
            c.decide(&interval(n, 0.000_04, size, 100 - size.min(99)));
        }
        let base = c.unloaded_hold().unwrap_or(0.0);
        assert!(base < 0.000_05, "{:.3} ms", base * 1e3);
    }

    /// A server that serves every connection from one event loop, in batches: the hold
    /// time grows with the connections, and the throughput still rises: 20 connections do
    /// 1.33 × what 10 do with twice their hold time (measured on Redis: 1.4 ×). Returns one
    /// interval at `limit`.
    fn batched(limit: u32, demand: u32) -> Sample {
        let n = f64::from(limit.min(demand));
        let hold = 0.000_05 * (1.0 + n / 10.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let acquires = (n / hold * 0.1) as u64;
        let mut s = interval(
            acquires,
            hold,
            u64::from(limit.min(demand)),
            u64::from(demand.saturating_sub(limit)),
        );
        s.ceiling = 20;
        s
    }

    #[test]
    fn an_event_loop_server_grows_while_its_queue_raises_throughput() {
        let mut events = Controller::with_units(Units::EventLoop, 1, 10_000);
        let mut requests = Controller::new(1, 10_000);
        for _ in 0..200 {
            events.decide(&batched(events.open_limit(), 100));
            requests.decide(&batched(requests.open_limit(), 100));
        }
        assert_eq!(
            events.open_limit(),
            20,
            "Redis-like: 20 does 1.33 × what 10 do"
        );
        // The band of one-request connections reads the batches as a server queue and
        // backs off early; trying larger sizes, it measures that they do more, and keeps
        // them, one step at a time.
        assert!(
            requests.open_limit() > 12,
            "one-request connections keep the sizes that did more: {}",
            requests.open_limit()
        );
        // A loop that is out of time (every connection only waits longer): it backs off.
        let mut flat = Controller::with_units(Units::EventLoop, 1, 10_000);
        let seen = run(&mut flat, 200, 100, 1.0, 0.000_05, 0.0);
        assert!(
            seen[100..].iter().all(|&t| t <= 8),
            "a flat throughput keeps it small: {seen:?}"
        );
    }

    /// Redis GETs on the bench machine (two cores shared by Redis, the client and its
    /// tasks), fitted to `poolctl bench redis --op exclusive-get --pool-sizes 10,20,30,50`:
    /// `n` connections do `150k × n / (n + 3.76)` GETs a second (about 109k, 126k, 133k and
    /// 140k at 10, 20, 30 and 50; measured 109k, 128k, 132k and 131k). Its least
    /// hold time, 0.032 ms at the floor, is the quietest the bench's pools measured
    /// (0.031 ms at 4 connections in round eight's r13, 0.038 ms for a fixed pool of 4).
    /// Returns one interval at `limit` with `ceiling`.
    fn redis(limit: u32, demand: u32, ceiling: u32) -> Sample {
        let n = f64::from(limit.min(demand));
        let x = 150_000.0 * n / (n + 3.76);
        let hold = n / x;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let acquires = (x * 0.1) as u64;
        let mut s = interval(
            acquires,
            hold,
            u64::from(limit.min(demand)),
            u64::from(demand.saturating_sub(limit)),
        );
        s.ceiling = ceiling;
        s
    }

    #[test]
    fn an_event_loop_pool_settles_where_redis_stops_gaining_from_a_true_unloaded_hold_time() {
        // Round eight, r13: the unloaded hold time learned from a quiet interval (0.031 ms)
        // read the hold time at 16–18 connections as the band's top, and the pool backed off
        // to 12–16 where 20 did 1.2 × more. With the true unloaded hold time it reaches the
        // sizes where Redis stops gaining (20–30), and stays below a ceiling far above them.
        for (ceiling, lowest, highest) in [(20, 18, 20), (50, 18, 30)] {
            let mut c = Controller::with_units(Units::EventLoop, 1, 10_000);
            let seen: Vec<u32> = (0..300)
                .map(|_| {
                    c.decide(&redis(c.open_limit(), 1000, ceiling));
                    c.open_limit()
                })
                .collect();
            let unloaded = c.unloaded_hold().unwrap_or(0.0);
            assert!(unloaded < 0.000_035, "{:.3} ms", unloaded * 1e3);
            let held = held(&seen[50..]);
            assert!(
                !held.is_empty() && held.iter().all(|&t| (lowest..=highest).contains(&t)),
                "ceiling {ceiling}: held {held:?}, outside {lowest}..={highest}: {seen:?}"
            );
        }
    }

    #[test]
    fn an_event_loop_pool_grows_by_small_steps_after_slow_start() {
        // Settled at about 21 (ceiling 50), then the server does twice as much per
        // connection: the pool has room to about 35. Past slow start it climbs there by
        // `Requests`' steps (3 here), not by half of the event loop's wide band (12 at once,
        // which swung a real pool between 24 and 44).
        let mut c = Controller::with_units(Units::EventLoop, 1, 10_000);
        for _ in 0..100 {
            c.decide(&redis(c.open_limit(), 1000, 50));
        }
        let settled = c.open_limit();
        let seen: Vec<u32> = (0..100)
            .map(|_| {
                c.decide(&slowed(redis(c.open_limit(), 1000, 50), 0.5));
                c.open_limit()
            })
            .collect();
        let steps: Vec<u32> = seen
            .windows(2)
            .filter(|w| w[1] > w[0])
            .map(|w| w[1] - w[0])
            .collect();
        assert!(
            c.open_limit() >= settled + 8,
            "it grew from {settled}: {seen:?}"
        );
        assert!(steps.iter().all(|&d| d <= 4), "{seen:?}");
    }

    #[test]
    fn statements_longer_than_the_interval_still_grow_it() {
        // 2 s statements, 10 callers: no connection comes back within an interval.
        let mut c = Controller::new(1, 10_000);
        let seen = run(&mut c, 100, 10, 1000.0, 0.0001, 2.0);
        assert_eq!(c.open_limit(), 10, "{seen:?}");
        assert!(
            seen.iter().take(MAX_WINDOW as usize - 1).all(|&t| t == 1),
            "one decision per {MAX_WINDOW} intervals at most: {seen:?}"
        );
    }

    /// Pipelined connections with statements always queued behind their heads: each
    /// connection's backend runs `delay + work × max(1, n / cores)` seconds per statement,
    /// and the client sends at most `client` statements a second. Returns one interval's
    /// sample at `limit`, in the units the shared side feeds (busy heads, head time).
    fn piped(limit: u32, cores: f64, work: f64, delay: f64, client: f64, ceiling: u32) -> Sample {
        let n = f64::from(limit);
        let per = delay + work * (n / cores).max(1.0);
        let x = (n / per).min(client);
        let every = Duration::from_millis(100);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let done = (x * every.as_secs_f64()) as u64;
        Sample {
            elapsed: every,
            acquires: done,
            hold_secs: n / x,
            returns: done,
            busy: u64::from(limit),
            pending: 1000,
            waited_share: 1.0,
            ceiling,
        }
    }

    fn run_piped(
        c: &mut Controller,
        ticks: usize,
        shape: (f64, f64, f64, f64),
        ceiling: u32,
    ) -> Vec<u32> {
        let (cores, work, delay, client) = shape;
        (0..ticks)
            .map(|_| {
                c.decide(&piped(c.open_limit(), cores, work, delay, client, ceiling));
                c.open_limit()
            })
            .collect()
    }

    #[test]
    fn pipelines_settle_where_the_client_runs_out_of_speed() {
        // SELECT 1 from many tasks: a backend does 50,000 a second, the client sends
        // 65,000 (1.3 connections' worth) whatever the number of connections.
        let mut c = Controller::pipelined(1, 10_000);
        assert_eq!(c.units(), Units::Pipelines);
        let seen = run_piped(&mut c, 200, (2.0, 20e-6, 0.0, 65_000.0), 5);
        assert!(seen[..5].iter().any(|&t| t > 2), "slow start: {seen:?}");
        assert!(
            seen[10..].iter().all(|&t| (1..=2).contains(&t)),
            "one or two: {seen:?}"
        );
        // The Vegas band of checkouts would have kept more.
        let mut r = Controller::new(1, 10_000);
        let seen = run_piped(&mut r, 200, (2.0, 20e-6, 0.0, 65_000.0), 5);
        assert!(seen[10..].iter().any(|&t| t > 2), "{seen:?}");
    }

    #[test]
    fn pipelines_measure_again_before_growing_when_the_machine_got_faster() {
        // Settled while other processes left the client 30,000 statements a second; then
        // they end and it sends 65,000. The unloaded head time measured on the slower
        // machine would read as room for a third connection, which adds nothing: the
        // pool probes first, and stays at one or two.
        let mut c = Controller::pipelined(1, 10_000);
        let first = run_piped(&mut c, 50, (2.0, 20e-6, 0.0, 30_000.0), 5);
        assert!((1..=2).contains(&c.open_limit()), "{first:?} {c:?}");
        let seen = run_piped(&mut c, 100, (2.0, 20e-6, 0.0, 65_000.0), 5);
        assert!(
            seen.iter().all(|&t| (1..=2).contains(&t)),
            "one or two: {seen:?}"
        );
        assert!(
            seen.windows(2).any(|w| w[1] < w[0]),
            "it measured again: {seen:?}"
        );
    }

    #[test]
    fn pipelines_relearn_a_head_time_measured_while_starting() {
        // The first interval at one connection is six times slower than the steady state
        // (the pool's tasks and the other processes starting up): every later head time
        // is well under it, which would read as room for every connection up to the
        // ceiling. The pool measures again and comes back to one or two.
        let mut c = Controller::pipelined(1, 10_000);
        c.decide(&slowed(piped(1, 2.0, 20e-6, 0.0, 65_000.0, 5), 6.0));
        let seen = run_piped(&mut c, 100, (2.0, 20e-6, 0.0, 65_000.0), 5);
        assert!(
            seen[15..].iter().all(|&t| (1..=2).contains(&t)),
            "one or two: {seen:?}"
        );
    }

    #[test]
    fn pipelines_grow_to_the_ceiling_while_each_one_adds_throughput() {
        // 3 ms statements that wait rather than work: every connection adds a backend's
        // worth of statements.
        let mut c = Controller::pipelined(1, 10_000);
        let seen = run_piped(&mut c, 20, (1000.0, 10e-6, 0.003, f64::INFINITY), 16);
        assert_eq!(c.open_limit(), 16, "{seen:?}");
        let reached = seen.iter().position(|&t| t == 16).unwrap_or(usize::MAX);
        assert!(reached <= 4, "at the ceiling after {reached}: {seen:?}");
    }

    #[test]
    fn pipelines_stop_at_the_servers_cores() {
        // 1 ms of CPU per statement on 3 cores: a fourth backend only waits for one.
        let mut c = Controller::pipelined(1, 10_000);
        let seen = run_piped(&mut c, 200, (3.0, 1e-3, 0.0, f64::INFINITY), 16);
        assert!(
            seen[10..].iter().all(|&t| (3..=4).contains(&t)),
            "three or four: {seen:?}"
        );
    }

    #[test]
    fn no_queue_no_growth() {
        let mut c = Controller::new(3, 1000);
        let seen = run(&mut c, 20, 2, 1000.0, 0.0001, 0.01);
        assert!(seen.iter().all(|&t| t == 3), "{seen:?}");
    }
}
