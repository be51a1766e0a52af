//! The checkout path: a caller takes an idle connection or waits in line, an idle
//! connection is checked before it is handed out, and a returned one goes to the oldest
//! waiter, back to the idle stack, or is closed.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::conn::{Clock, Tracked};
use super::{AcquireError, Conn, Manager, Shared};
use crate::engine_state::{Handed, Put, Surplus, Take};
use crate::metrics::{CloseReason, ErrorKind};
use crate::waiters::Ticket;

/// What an idle connection needs before it is handed out.
pub(super) enum Verdict {
    /// Nothing: hand it out.
    Fresh,
    /// A ping: it has been idle longer than `ping_if_idle`.
    Ping,
    /// To be closed, unasked: retired, expired, of an older generation, or broken.
    Close(CloseReason),
}

impl<M: Manager> Shared<M> {
    /// What an idle connection needs before it is handed out. `has_broken` is asked
    /// once, and a connection it condemns is closed without a ping: a ping on a closed
    /// socket can hang for the whole ping timeout.
    pub(super) fn verdict(&self, conn: &mut Conn<M>, now: Clock) -> Verdict {
        if let Some(reason) = conn.retire {
            return Verdict::Close(reason);
        }
        if conn.generation != self.generation.load(Relaxed) {
            return Verdict::Close(CloseReason::ServerMoved);
        }
        if conn.expired(now) {
            return Verdict::Close(CloseReason::MaxLifetime);
        }
        if self.manager.has_broken(conn.inner_mut()) {
            // Its socket closed while idle: never handed out.
            self.telemetry.error(ErrorKind::Broken);
            tracing::debug!(pool = %self.config.name, "discarding a connection that broke while idle");
            return Verdict::Close(CloseReason::Broken);
        }
        if conn.idle_since(now) >= self.config.ping_if_idle {
            return Verdict::Ping;
        }
        Verdict::Fresh
    }

    pub(super) fn checkout(
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

    pub(super) async fn acquire(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> Result<Checkout<M>, AcquireError<M::Error>> {
        let asked = Clock::now();
        let mut deadline = None;
        let mut fast = true;
        loop {
            // Made before the turn is taken, so an error that retrying cannot fix, met by
            // a connect started for this caller, is not missed.
            let failed = self.fail_fast.failed.notified();
            let taken = self.with(|s| s.take());
            // The clock is read for the deadline only once the fast path is left.
            let mut deadline =
                || *deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
            match taken {
                Take::Closed => return Err(AcquireError::Closed),
                Take::Idle(mut conn) => {
                    let now = Clock::now();
                    match self.verdict(&mut conn, now) {
                        Verdict::Fresh => return Ok(self.checkout(conn, now, asked, fast)),
                        Verdict::Close(reason) => self.discard(conn, reason),
                        Verdict::Ping => {
                            if let Some(conn) = self.validate(conn, deadline()).await {
                                return Ok(self.checkout(conn, Clock::now(), asked, false));
                            }
                        }
                    }
                    fast = false;
                    // Closed; take another (or wait).
                }
                Take::Wait {
                    ticket,
                    connects,
                    wake,
                } => {
                    self.spawn_connects(connects);
                    if wake {
                        // Every connect under way sleeps: an attempt must start within the
                        // first half of this caller's wait.
                        self.retries
                            .wake_unless_due_by(tokio::time::Instant::now() + timeout / 2);
                    }
                    let mut waiting = Waiting {
                        shared: self,
                        ticket: Some(ticket),
                    };
                    let given = match &waiting.ticket {
                        Some(t) => {
                            let wait = tokio::time::timeout_at(deadline(), t.wait());
                            first_of(wait, failed).await.and_then(Result::ok)
                        }
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
                        None => match self.fail_fast.since(asked) {
                            Some(e) => Err(AcquireError::Connect(e)),
                            None => Err(self.timed_out(asked)),
                        },
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

    /// Pings an idle connection that is past `ping_if_idle`. Returns it when good; closes
    /// it (and frees its place) otherwise, also when the caller goes away mid-ping, since
    /// a half-finished ping leaves the connection in an unknown state.
    async fn validate(
        self: &Arc<Self>,
        conn: Conn<M>,
        deadline: tokio::time::Instant,
    ) -> Option<Conn<M>> {
        let mut checking = Checking {
            shared: self,
            conn: Some(conn),
            reason: CloseReason::Aborted,
        };
        let c = checking.conn.as_mut()?;
        // The ping has a bound of its own (`P_PING_TIMEOUT`), well under the acquire
        // timeout: a half-open connection costs the caller that, not its whole wait.
        let bound = self.config.effective_ping_timeout();
        let ping_deadline = deadline.min(tokio::time::Instant::now() + bound);
        match tokio::time::timeout_at(ping_deadline, self.manager.is_valid(c.inner_mut())).await {
            Ok(Ok(())) => checking.conn.take(),
            Ok(Err(e)) => {
                self.telemetry.error(ErrorKind::HealthCheck);
                tracing::warn!(pool = %self.config.name, error = %e, "validation ping failed; closing the connection");
                checking.reason = CloseReason::Invalid;
                None
            }
            Err(_) => {
                self.telemetry.error(ErrorKind::HealthCheck);
                tracing::warn!(pool = %self.config.name, bound = ?bound, "validation ping did not answer in time (a half-open connection?); closing it and serving the caller from another");
                checking.reason = CloseReason::Invalid;
                None
            }
        }
    }

    /// A checked-out connection that will not come back is closed; its place is freed.
    pub(super) fn discard(self: &Arc<Self>, conn: Conn<M>, reason: CloseReason) {
        let connects = self.with(|s| s.discard());
        self.close_conn(conn, reason);
        self.spawn_connects(connects);
    }

    /// A connection comes back (`why`: the reason to close it, if any).
    pub(super) fn put_back(self: &Arc<Self>, conn: Conn<M>, why: Option<CloseReason>) {
        let (put, surplus) = self.with(|s| s.put(conn, why.is_none()));
        self.closed_put(put, why, surplus);
    }

    pub(super) fn closed_put(
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
    pub(super) leak: Option<u64>,
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
    /// [`Engine::retire_all`](super::Engine::retire_all) when the connection shows the server moved).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.conn.as_ref().map_or(0, |c| c.generation)
    }

    /// Takes the connection out of the pool (deadpool's `Object::take`, sqlx's
    /// `detach`): the pool forgets it, frees its place (opening another for a waiting
    /// caller) and counts it as `closed{reason="detached"}`. The caller owns it now.
    #[must_use]
    pub fn detach(mut self) -> M::Connection {
        let conn = self.conn.take().unwrap_or_else(|| unreachable_taken());
        let shared = &self.shared;
        shared.telemetry.record_release(self.since.elapsed());
        if let (Some(leaks), Some(id)) = (&shared.leaks, self.leak) {
            leaks.stop(id);
        }
        let connects = shared.with(|s| s.discard());
        shared.telemetry.record_closed(CloseReason::Detached);
        shared.spawn_connects(connects);
        conn.into_inner()
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

/// Runs `main` until it finishes, or until `stop` does (then `None`).
async fn first_of<T>(main: impl Future<Output = T>, stop: impl Future<Output = ()>) -> Option<T> {
    let mut main = std::pin::pin!(main);
    let mut stop = std::pin::pin!(stop);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(v) = main.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(v));
        }
        stop.as_mut().poll(cx).map(|()| None)
    })
    .await
}
