//! `P_SHARED_CONNECTIONS=auto`: the task that sizes a pool's shared connections with the
//! pool's own controller (`poolkit_core::autosize::Controller::pipelined`).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use poolkit_core::autosize::{Controller, Sample};

use crate::shared::Shared;

/// What the `auto` task needs from the pool around the shared side.
pub(crate) struct AutoHooks {
    /// The most shared connections allowed now: the range's top
    /// ([`SharedConnections::range`]), under the fleet share.
    pub(crate) ceiling: Box<dyn Fn() -> u32 + Send + Sync>,
    /// Whether callers wait for a checkout now.
    pub(crate) checkouts_waiting: Box<dyn Fn() -> bool + Send + Sync>,
    /// Called with the new count after a resize (the pool caps its checkouts for it).
    pub(crate) on_resize: Box<dyn Fn(usize) + Send + Sync>,
}

/// Polls of the shared connections per interval (how busy their heads are is their
/// mean).
const POLLS: u32 = 20;

/// Low use for this long (or the idle timeout, if shorter) and the shared connections
/// shrink: each one is a checkout the exclusive side goes without.
const SHRINK_AFTER: Duration = Duration::from_secs(5);

/// What one interval's polls of the shared side saw, turned into the controller's
/// [`Sample`] by [`Polls::sample`].
struct Polls {
    at: std::time::Instant,
    statements: u64,
    stalled: u64,
    n: u32,
    /// Sum over the polls of connections with a statement at their head.
    busy: usize,
    /// Sum over the polls of statements queued behind a head or for room.
    queued: usize,
    /// Polls that saw any statement queued.
    queued_polls: u32,
    /// A confirmed-slow statement waited for a checkout at some poll.
    long: bool,
}

impl Polls {
    fn new(shared: &Shared) -> Self {
        Self {
            at: std::time::Instant::now(),
            statements: shared.statements.load(Relaxed),
            stalled: shared.stalled.load(Relaxed),
            n: 0,
            busy: 0,
            queued: 0,
            queued_polls: 0,
            long: false,
        }
    }

    fn poll(&mut self, shared: &Shared) {
        let loads = shared.mux.loads();
        let busy = loads.iter().filter(|&&l| l > 0).count();
        let behind = loads.iter().map(|l| l.saturating_sub(1)).sum::<usize>();
        let queued = behind + shared.mux.pending();
        self.n += 1;
        self.busy += busy;
        self.queued += queued;
        self.queued_polls += u32::from(queued > 0);
        self.long |= shared.queue_long();
    }

    /// The interval's sample, in the units of [`Controller::pipelined`]: a unit is a
    /// shared connection, *busy* while a statement is at its head (its backend at work),
    /// and its hold time the mean time a statement held a head: by Little's law the
    /// connections busy on average over the statements finished per second. Statements
    /// in flight would be the wrong measure: a pipeline carries hundreds whatever the
    /// number of connections, while its backend runs one at a time. Callers *queue* when
    /// statements wait behind a head or for room (another connection would run them in
    /// parallel), or spilled to a checkout because every shared connection stalled.
    ///
    /// What the controller cannot know, and the sample says for it: no queue counts
    /// while a statement confirmed slow waits for a checkout, or while callers wait for
    /// a checkout and no statement spilled for a stall. Another shared connection would
    /// be one checkout fewer, taken from the slow statements, which no number of shared
    /// connections would run (they run alone).
    #[allow(clippy::cast_precision_loss)]
    fn sample(&mut self, shared: &Shared, hooks: &AutoHooks) -> Sample {
        let next = Self::new(shared);
        let elapsed = next.at.saturating_duration_since(self.at);
        let statements = next.statements.saturating_sub(self.statements);
        let stalled = next.stalled.saturating_sub(self.stalled);
        let n = f64::from(self.n.max(1));
        let busy = self.busy as f64 / n;
        let blocked = self.long || (stalled == 0 && (hooks.checkouts_waiting)());
        let (pending, waited_share) = if blocked {
            (0, 0.0)
        } else {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let queued = (self.queued as f64 / n).round() as u64;
            (queued + stalled, f64::from(self.queued_polls) / n)
        };
        let s = Sample {
            elapsed,
            acquires: statements,
            hold_secs: if statements == 0 {
                0.0
            } else {
                busy * elapsed.as_secs_f64() / statements as f64
            },
            returns: statements,
            busy: shared.mux.loads().iter().filter(|&&l| l > 0).count() as u64,
            pending,
            waited_share,
            ceiling: (hooks.ceiling)(),
        };
        *self = next;
        s
    }
}

/// `P_SHARED_CONNECTIONS=auto`: the shared connections are sized by the same controller
/// as `P_POOL_SIZE=auto` ([`Controller::pipelined`]), an instance of their own, fed once
/// per `every` (`P_POOL_AUTO_INTERVAL`) a sample of the shared statements (see
/// [`Polls::sample`]). It starts at 1, grows while statements queue behind busy heads and
/// another connection adds statements per second, backs off when the heads slow down
/// with no more throughput (the server, or the client, is out of cores), and shrinks
/// after [`SHRINK_AFTER`] of low use; within `1..=ceiling` (the range's top, under a
/// fleet share). The pool caps its checkouts for each change (`on_resize`), and a new
/// connection opens only when it fits beside them (see [`PgMux`]).
pub(crate) fn start_auto(
    shared: &Arc<Shared>,
    hooks: AutoHooks,
    every: Duration,
    idle: Option<Duration>,
) {
    let weak = Arc::downgrade(shared);
    let every = every.max(Duration::from_millis(10));
    let shrink = idle.unwrap_or(SHRINK_AFTER).min(SHRINK_AFTER);
    let shrink_after =
        u32::try_from(shrink.as_millis() / every.as_millis().max(1)).unwrap_or(u32::MAX);
    let mut controller = Controller::pipelined(1, shrink_after);
    let mut polls = Polls::new(shared);
    let mut reserved = shared.mux.wanted_sockets();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every / POLLS);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            if shared.mux.is_closed() {
                return;
            }
            polls.poll(&shared);
            // The checkouts get a shared connection's place back only once it closed (a
            // retired one finishes its statements first, and its backend is held until
            // its task ends): the pool never holds more than its ceiling.
            let reserve = shared
                .mux
                .wanted_sockets()
                .max(shared.mux.multiplexer().held());
            if reserve != reserved {
                reserved = reserve;
                (hooks.on_resize)(reserve);
            }
            if polls.n < POLLS {
                continue;
            }
            let sample = polls.sample(&shared, &hooks);
            let Some(change) = controller.decide(&sample) else {
                continue;
            };
            tracing::debug!(
                pool = %shared.mux.config().name,
                from = change.from,
                to = change.to,
                ceiling = sample.ceiling,
                throughput = sample.throughput(),
                head_ms = sample.hold_secs * 1e3,
                reason = %change.reason,
                "shared connections resized"
            );
            shared.mux.set_sockets(change.to as usize);
            if change.to as usize > reserved {
                reserved = change.to as usize;
                (hooks.on_resize)(reserved);
            }
        }
    });
}
