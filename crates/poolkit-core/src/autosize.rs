//! `P_POOL_SIZE=auto`: the controller that sizes a pool from what it measures.
//!
//! It is an adaptive concurrency limit (the idea of Netflix's concurrency-limits Vegas and
//! Gradient2, and Envoy's adaptive concurrency filter) applied to a connection pool. The
//! limit is the pool's *target*: the engine opens at most that many connections, and
//! callers beyond it queue. Once per interval the engine's task hands the controller a
//! [`Sample`] of the last interval (checkouts, mean hold time, callers queued), and the
//! controller decides:
//!
//! - **grow** while callers queue (doubling at first, like TCP's slow start; by a third,
//!   at least one, once a step has failed), then judge the step over the
//!   second interval after it (the first one opens connections): it stays only if
//!   throughput rose with it, against the mean throughput measured at the old target;
//! - **back off** to the previous target when it did not (more connections no longer buy
//!   throughput: on a small server they only add contention), and probe again after a
//!   cool-down that doubles with every failed probe;
//! - **back off** when the hold time (the server's response time as the pool sees it)
//!   doubles at the same target while throughput falls: the server got slower;
//! - **shrink** when the connections in use (Little's law: throughput × hold time) stay
//!   below half the target for the idle timeout, down to what was used (at least the
//!   floor, `P_POOL_MIN_IDLE`, or 1);
//! - never above the ceiling (`P_POOL_MAXSIZE`), and never more than one change per
//!   interval (`P_POOL_AUTO_INTERVAL`).
//!
//! This module is pure logic (no clock, no tasks), unit-tested below; the engine runs it.

use std::fmt;
use std::time::Duration;

/// How a pool's size is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Sizing {
    /// `pool_size` and `max_size` as configured (or as set by a resize).
    #[default]
    Fixed,
    /// A target between the floor (`min_idle`, at least 1) and the ceiling (`max_size`),
    /// moved by the [`Controller`]. Env: `P_POOL_SIZE=auto`.
    Auto,
}

/// The default interval between two decisions. Env: `P_POOL_AUTO_INTERVAL`.
pub const DEFAULT_AUTO_INTERVAL: Duration = Duration::from_secs(1);

/// The smallest throughput gain that justifies a step up (half the ideal gain for a step
/// smaller than twice this, such as the last one to the ceiling).
const MIN_GAIN: f64 = 0.04;
/// The share of the ideal (linear) gain a step up must deliver to be kept.
const GAIN_SHARE: f64 = 0.1;
/// Intervals to wait after a failed probe before the next one (doubled per failure).
const COOL_DOWN: u32 = 4;
/// The most doublings of the cool-down.
const MAX_FAILURES: u32 = 3;

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

    /// Connections in use on average (Little's law: throughput × hold time).
    #[must_use]
    pub fn in_use(&self) -> f64 {
        self.throughput() * self.hold_secs
    }

    /// Whether callers queued for a connection.
    #[must_use]
    pub fn queued(&self) -> bool {
        self.pending > 0 || self.waited_share >= 0.2
    }
}

/// Why the target changed (logged, and kept as [`Controller::last_reason`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reason {
    /// Callers queued: probe one step up.
    Queued {
        /// Callers waiting.
        pending: u64,
        /// Checkouts per second at the old target.
        throughput: f64,
    },
    /// The last step up did not raise throughput enough: back to the previous target.
    Flat {
        /// Checkouts per second before the step.
        before: f64,
        /// Checkouts per second after it.
        after: f64,
    },
    /// The hold time rose at the same target while throughput fell.
    Slower {
        /// Mean hold time (s) when this target was settled.
        before: f64,
        /// Mean hold time (s) now.
        after: f64,
    },
    /// Few connections were used for the idle timeout.
    Idle {
        /// Most connections in use (on average per interval) during that time.
        used: f64,
    },
    /// The ceiling was lowered below the target.
    Ceiling,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Queued {
                pending,
                throughput,
            } => write!(
                f,
                "{pending} callers queued at {throughput:.0} checkouts/s: probing one step up"
            ),
            Self::Flat { before, after } => write!(
                f,
                "throughput flat ({before:.0} -> {after:.0} checkouts/s) after the last step up: more connections do not help"
            ),
            Self::Slower { before, after } => write!(
                f,
                "hold time rose from {:.2} ms to {:.2} ms at the same size while throughput fell: the server is slower",
                before * 1e3,
                after * 1e3
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

/// A change of target.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The target before.
    pub from: u32,
    /// The target after.
    pub to: u32,
    /// Why.
    pub reason: Reason,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    from: u32,
    before: f64,
    hold_before: f64,
    /// The first interval after a change is skipped (new connections are opening).
    warming: bool,
}

/// The sizing controller of one pool. Feed it one [`Sample`] per interval.
#[derive(Debug, Clone)]
pub struct Controller {
    target: u32,
    floor: u32,
    shrink_after: u32,
    tick: u64,
    probe: Option<Probe>,
    resume_at: u64,
    failures: u32,
    settled: Option<(f64, f64)>,
    /// Throughput samples at the current target (sum, count), for a steadier "before".
    at_target: (f64, f64, u32),
    low_ticks: u32,
    low_peak: f64,
    /// Doubling (TCP's slow start) until the first step that does not pay.
    slow_start: bool,
    last: Option<Reason>,
}

impl Controller {
    /// A controller starting at `floor` (at least 1). It shrinks after `shrink_after`
    /// intervals of low use (the idle timeout over the interval, at least 1).
    #[must_use]
    pub fn new(floor: u32, shrink_after: u32) -> Self {
        let floor = floor.max(1);
        Self {
            target: floor,
            floor,
            shrink_after: shrink_after.max(1),
            tick: 0,
            probe: None,
            resume_at: 0,
            failures: 0,
            settled: None,
            at_target: (0.0, 0.0, 0),
            low_ticks: 0,
            low_peak: 0.0,
            slow_start: true,
            last: None,
        }
    }

    /// The target now.
    #[must_use]
    pub fn target(&self) -> u32 {
        self.target
    }

    /// Whether a step up is being judged.
    #[must_use]
    pub fn probing(&self) -> bool {
        self.probe.is_some()
    }

    /// Why the target last changed.
    #[must_use]
    pub fn last_reason(&self) -> Option<&Reason> {
        self.last.as_ref()
    }

    fn change(&mut self, to: u32, reason: Reason) -> Option<Change> {
        let from = self.target;
        if to == from {
            return None;
        }
        self.target = to;
        self.at_target = (0.0, 0.0, 0);
        self.last = Some(reason.clone());
        Some(Change { from, to, reason })
    }

    /// Takes the last interval's sample; returns the change to make, if any.
    pub fn decide(&mut self, s: &Sample) -> Option<Change> {
        self.tick += 1;
        let ceiling = s.ceiling.max(1);
        let floor = self.floor.min(ceiling);
        if self.target > ceiling {
            self.probe = None;
            self.settled = None;
            return self.change(ceiling, Reason::Ceiling);
        }
        let x = s.throughput();
        let queued = s.queued();
        // Low use: count towards a shrink.
        if !queued && s.in_use() < f64::from(self.target) * 0.5 {
            self.low_ticks += 1;
            self.low_peak = self.low_peak.max(s.in_use());
        } else {
            self.low_ticks = 0;
            self.low_peak = 0.0;
        }
        if let Some(p) = self.probe.as_mut().filter(|p| p.warming) {
            p.warming = false;
            return None;
        }
        if let Some(p) = self.probe.take() {
            let ideal = f64::from(self.target) / f64::from(p.from.max(1)) - 1.0;
            let needed = p.before * (1.0 + (GAIN_SHARE * ideal).max(MIN_GAIN.min(ideal * 0.5)));
            // Vegas's view: every connection busy and the hold time (the server's response
            // time) unchanged means the extra connections did work, whatever noise says.
            let busy = s.in_use() >= 0.9 * f64::from(self.target);
            let same_hold = s.hold_secs <= p.hold_before * 1.1;
            if queued && x < needed && !(busy && same_hold) {
                self.slow_start = false;
                self.failures = (self.failures + 1).min(MAX_FAILURES);
                self.resume_at = self.tick + u64::from(COOL_DOWN << (self.failures - 1));
                self.settled = None;
                let to = p.from.clamp(floor, ceiling);
                return self.change(
                    to,
                    Reason::Flat {
                        before: p.before,
                        after: x,
                    },
                );
            }
            if queued {
                self.failures = 0;
                self.settled = Some((x, s.hold_secs));
            }
        }
        if self.low_ticks >= self.shrink_after {
            let peak = self.low_peak;
            self.low_ticks = 0;
            self.low_peak = 0.0;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let used = (peak * 1.5).ceil().min(f64::from(u32::MAX)) as u32;
            let to = used.clamp(floor, self.target);
            self.settled = None;
            self.failures = 0;
            self.slow_start = true;
            return self.change(to, Reason::Idle { used: peak });
        }
        if !queued {
            return None;
        }
        self.at_target.0 += x;
        self.at_target.1 += s.hold_secs;
        self.at_target.2 += 1;
        if let Some((sx, sh)) = self.settled {
            if s.hold_secs > sh * 2.0 && x < sx * 0.9 && self.target > floor {
                let to = (self.target - (self.target / 4).max(1)).max(floor);
                self.settled = None;
                self.resume_at = self.tick + u64::from(COOL_DOWN);
                return self.change(
                    to,
                    Reason::Slower {
                        before: sh,
                        after: s.hold_secs,
                    },
                );
            }
        } else {
            self.settled = Some((x, s.hold_secs));
        }
        if self.tick >= self.resume_at && self.target < ceiling {
            let step = if self.slow_start {
                self.target
            } else {
                (self.target / 3).max(1)
            };
            let to = (self.target + step).min(ceiling);
            let n = f64::from(self.at_target.2.max(1));
            self.probe = Some(Probe {
                from: self.target,
                before: self.at_target.0 / n,
                hold_before: self.at_target.1 / n,
                warming: true,
            });
            return self.change(
                to,
                Reason::Queued {
                    pending: s.pending,
                    throughput: x,
                },
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    /// A server whose throughput rises with connections up to `knee`, then stays flat.
    fn run(c: &mut Controller, knee: u32, ticks: usize, demand: u32) -> Vec<u32> {
        let mut seen = Vec::new();
        for _ in 0..ticks {
            let active = c.target().min(demand);
            let x = 1000.0 * f64::from(active.min(knee));
            let s = Sample {
                elapsed: Duration::from_secs(1),
                acquires: x as u64,
                hold_secs: if x > 0.0 { f64::from(active) / x } else { 0.0 },
                pending: u64::from(demand.saturating_sub(c.target())),
                waited_share: if demand > c.target() { 1.0 } else { 0.0 },
                ceiling: 30,
            };
            c.decide(&s);
            seen.push(c.target());
        }
        seen
    }

    #[test]
    fn grows_while_throughput_rises_to_the_ceiling() {
        let mut c = Controller::new(1, 5);
        let seen = run(&mut c, 1000, 40, 100);
        assert_eq!(c.target(), 30, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
    }

    #[test]
    fn stops_where_throughput_flattens() {
        let mut c = Controller::new(1, 5);
        let seen = run(&mut c, 6, 60, 1000);
        // Slow start doubles 4 -> 8 (throughput +50 %), 8 -> 16 is flat: back to 8. Past
        // the knee (6) the extra connections cost little, and probes up keep failing.
        let tail = &seen[20..];
        assert!(tail.iter().all(|&t| (6..=10).contains(&t)), "{seen:?}");
        assert!(
            tail.iter().filter(|&&t| t == 8).count() > tail.len() * 3 / 4,
            "{seen:?}"
        );
        assert!(
            seen.windows(2).any(|w| w[1] < w[0]),
            "it backed off: {seen:?}"
        );
    }

    #[test]
    fn shrinks_to_the_floor_when_idle_and_respects_the_ceiling() {
        let mut c = Controller::new(2, 3);
        run(&mut c, 1000, 30, 100);
        assert_eq!(c.target(), 30);
        let seen = run(&mut c, 1000, 3, 0);
        assert_eq!(seen, vec![30, 30, 2], "one change after 3 idle intervals");
        assert!(matches!(c.last_reason(), Some(Reason::Idle { .. })));
        run(&mut c, 1000, 30, 100);
        let s = Sample {
            ceiling: 10,
            ..Sample::default()
        };
        let change = c.decide(&s).unwrap();
        assert_eq!((change.to, change.reason), (10, Reason::Ceiling));
    }

    #[test]
    fn backs_off_when_the_server_slows_down() {
        let mut c = Controller::new(1, 100);
        run(&mut c, 8, 30, 1000);
        while c.probing() {
            run(&mut c, 8, 1, 1000);
        }
        run(&mut c, 8, 1, 1000);
        let before = c.target();
        let s = Sample {
            elapsed: Duration::from_secs(1),
            acquires: 2000,
            hold_secs: 0.05,
            pending: 500,
            waited_share: 1.0,
            ceiling: 30,
        };
        let change = c.decide(&s).expect("a back-off");
        assert!(change.to < before, "{change:?}");
        assert!(matches!(change.reason, Reason::Slower { .. }), "{change:?}");
        assert!(change.reason.to_string().contains("server is slower"));
    }

    #[test]
    fn no_queue_no_growth() {
        let mut c = Controller::new(3, 1000);
        let seen = run(&mut c, 1000, 20, 2);
        assert!(seen.iter().all(|&t| t == 3), "{seen:?}");
    }
}
