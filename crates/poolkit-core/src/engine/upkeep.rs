//! What runs beside the callers: connects (each a task of its own, retried with backoff
//! and jitter while someone needs them), and the upkeep task (idle timeout, lifetime,
//! min idle, leak reports).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use super::conn::{Clock, Tracked};
use super::{Conn, Manager, Shared};
use crate::engine_state::{Put, Surplus};
use crate::metrics::{CloseReason, ErrorKind};

impl<M: Manager> Shared<M> {
    /// Starts `n` reserved connects, each as its own task: a caller that stops waiting
    /// cancels nothing, and the new connection goes to whoever waits longest.
    pub(crate) fn spawn_connects(self: &Arc<Self>, n: u32) {
        if n == 0 {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.lock().unreserve(n);
            return;
        };
        for _ in 0..n {
            rt.spawn(Arc::clone(self).connect());
        }
    }

    async fn connect(self: Arc<Self>) {
        let mut backoff = crate::backoff::Backoff::new();
        loop {
            let start = Clock::now();
            let generation = self.generation.load(Relaxed);
            let outcome =
                tokio::time::timeout(self.config.acquire_timeout, self.manager.connect()).await;
            match outcome {
                Ok(Ok(conn)) if generation == self.generation.load(Relaxed) => {
                    self.telemetry.record_created(start.elapsed());
                    self.connected(Tracked::new(conn, self.config.max_lifetime, generation));
                    return;
                }
                Ok(Ok(conn)) => {
                    // The pool retired every connection while this one was opening (the
                    // server moved): it may lead to the old server, so open another.
                    self.telemetry.record_created(start.elapsed());
                    self.telemetry.record_closed(CloseReason::ServerMoved);
                    drop(conn);
                    continue;
                }
                Ok(Err(e)) => {
                    self.telemetry.error(ErrorKind::Connect);
                    tracing::warn!(pool = %self.config.name, error = %e, "connect failed");
                    *self
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) =
                        Some((Clock::now(), Arc::new(e)));
                }
                Err(_) => {
                    self.telemetry.error(ErrorKind::Connect);
                    tracing::warn!(pool = %self.config.name, took = ?start.elapsed(), "connect timed out");
                }
            }
            let retry = self.with(|s| s.connect_failed(self.config.min_idle));
            if !retry {
                return;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    fn connected(self: &Arc<Self>, conn: Conn<M>) {
        let (put, surplus) = self.with(|s| s.connected(conn));
        if let Put::Close { conn, connects } = put {
            let reason = match surplus {
                Some(Surplus::Closed) => CloseReason::PoolClosed,
                _ => CloseReason::Overflow,
            };
            self.close_conn(conn, reason);
            self.spawn_connects(connects);
        }
    }

    /// One round of upkeep. Returns `false` once the pool is closed and empty.
    fn tick(self: &Arc<Self>) -> bool {
        let now = Clock::now();
        let idle_timeout = self.config.idle_timeout;
        let min_idle = self.config.min_idle;
        if self.with(|s| s.closed && s.open == 0 && s.connecting == 0) {
            return false;
        }
        let (retired, connects) = self.with(|s| {
            let mut retired = Vec::new();
            let mut i = 0;
            // Oldest-returned first: the bottom of the idle stack.
            while i < s.idle.len() {
                let open_after = s.open - u32::try_from(retired.len()).unwrap_or(u32::MAX);
                let c = &s.idle[i];
                let reason = if c.expired(now) {
                    Some(CloseReason::MaxLifetime)
                } else if open_after > min_idle
                    && idle_timeout.is_some_and(|it| c.idle_since(now) >= it)
                {
                    Some(CloseReason::IdleTimeout)
                } else {
                    None
                };
                match reason {
                    Some(r) => retired.push((s.idle.remove(i), r)),
                    None => i += 1,
                }
            }
            let mut connects = s.forget_idle(u32::try_from(retired.len()).unwrap_or(u32::MAX));
            let deficit = min_idle.saturating_sub(s.open + s.connecting);
            connects += s.reserve(deficit);
            (retired, connects)
        });
        for (conn, reason) in retired {
            self.close_conn(conn, reason);
        }
        self.spawn_connects(connects);
        if let Some(leaks) = &self.leaks {
            for (caller, held) in leaks.overdue(now) {
                self.telemetry.error(ErrorKind::Leak);
                tracing::warn!(
                    pool = %self.config.name,
                    held_for = ?held,
                    checked_out_at = %caller,
                    "connection held longer than the leak threshold (P_LEAK_THRESHOLD); was it forgotten?"
                );
            }
        }
        true
    }
}

/// Starts the upkeep task of a pool; it ends when the pool is dropped, or closed and empty.
pub(super) fn start<M: Manager>(shared: &Arc<Shared<M>>) {
    let mut every = Duration::from_secs(1);
    if let Some(it) = shared.config.idle_timeout {
        every = every.min(it / 2);
    }
    if let Some(leaks) = &shared.leaks {
        every = every.min(leaks.period());
    }
    let every = every.max(Duration::from_millis(20));
    let weak: Weak<Shared<M>> = Arc::downgrade(shared);
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(pool = %shared.config.name, "no tokio runtime: idle timeout, lifetime and min idle are not kept up");
        return;
    };
    rt.spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            if !shared.tick() {
                return;
            }
        }
    });
}
