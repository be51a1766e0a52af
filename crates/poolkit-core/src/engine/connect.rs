//! Connects: each a task of its own (a caller that stops waiting cancels nothing),
//! retried after the shared back-off while someone needs it; the new connection goes to
//! whoever waits longest.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::conn::{Clock, Tracked};
use super::{Conn, Manager, Shared};
use crate::backoff::Backoff;
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
        // Capped at half the acquire timeout, so a caller's wait always spans an attempt.
        let mut backoff = Backoff::capped(self.config.acquire_timeout / 2);
        loop {
            let start = Clock::now();
            let generation = self.generation.load(Relaxed);
            let outcome =
                tokio::time::timeout(self.config.acquire_timeout, self.manager.connect()).await;
            match outcome {
                Ok(Ok(conn)) if generation == self.generation.load(Relaxed) => {
                    self.fail_fast.worked();
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
                    let e = Arc::new(e);
                    *self
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) =
                        Some((Clock::now(), Arc::clone(&e)));
                    let fatal = (self.classify)(&self.manager, &e, self.fail_fast.has_worked());
                    if self.fail_fast.failed(&self.config.name, &e, fatal) {
                        // Retrying cannot fix it: the waiting callers have the error.
                        self.with(|s| s.unreserve(1));
                        return;
                    }
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
            self.retries.sleep(backoff.next_delay()).await;
            self.with(|s| s.retrying());
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
}

/// The connects sleeping out a back-off, and how a waiting caller cuts one short.
///
/// A caller who waits while every connect under way is backing off wakes one only when
/// none would otherwise be tried within the first half of its wait (a per-call timeout
/// shorter than the back-off). Callers with the pool's own acquire timeout never need to:
/// the back-off is capped at half of it. So a busy pool facing a server that refuses
/// connects (a rotated password, `max_connections` reached, a restart) retries at the
/// back-off's pace, not at the pace its callers arrive.
#[derive(Debug, Default)]
pub(crate) struct Retries {
    now: tokio::sync::Notify,
    /// When each sleeping connect's back-off ends.
    sleeping: StdMutex<Vec<Instant>>,
}

impl Retries {
    /// Sleeps `delay`, or less if a caller needs an attempt sooner. (A wake that finds
    /// nobody asleep leaves a permit: some later back-off is skipped once, which costs one
    /// early attempt, nothing more.)
    async fn sleep(&self, delay: Duration) {
        struct Awake<'a>(&'a Retries, Instant);
        impl Drop for Awake<'_> {
            fn drop(&mut self) {
                let mut sleeping = self.0.sleeping();
                if let Some(i) = sleeping.iter().position(|at| *at == self.1) {
                    sleeping.swap_remove(i);
                }
            }
        }
        let until = Instant::now() + delay;
        self.sleeping().push(until);
        let _awake = Awake(self, until);
        let _ = tokio::time::timeout_at(until, self.now.notified()).await;
    }

    /// A caller waits and every connect under way is backing off: wakes one unless one is
    /// due to try by `by`.
    pub(crate) fn wake_unless_due_by(&self, by: Instant) {
        let due = self.sleeping().iter().min().is_some_and(|at| *at <= by);
        if !due {
            self.now.notify_one();
        }
    }

    fn sleeping(&self) -> std::sync::MutexGuard<'_, Vec<Instant>> {
        self.sleeping.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
