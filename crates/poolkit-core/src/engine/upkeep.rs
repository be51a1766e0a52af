//! The upkeep task: one per pool, beside the callers (idle connections whose socket
//! closed, idle timeout, lifetime, min idle, leak reports).

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::conn::Clock;
use super::{Manager, Shared};
use crate::metrics::{CloseReason, ErrorKind};

impl<M: Manager> Shared<M> {
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
                let c = &mut s.idle[i];
                // A socket that closed while idle (the server stopped or ended the session)
                // is counted open no longer than one round.
                let reason = if self.manager.has_broken(c.inner_mut()) {
                    Some(CloseReason::Broken)
                } else if c.expired(now) {
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
            if reason == CloseReason::Broken {
                self.telemetry.error(ErrorKind::Broken);
            }
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
